"""Reconnect storms and ``tidemark gateway --processes N``: the ``storm`` and
``processes`` scenarios of ``bench.run``.

``storm``: when a gateway dies, its clients all come back at once, each with its own
``Last-Event-ID``. K streams with M events each are written through the project's own
write code (``bench.cluster.create_streams`` and ``seed``) while one Tidemark gateway
runs (so its memory tail holds them, as a gateway that was serving would); the event ids
are read back from that gateway's own SSE responses (ids are opaque: nothing here builds
one). Then N clients (several Go client processes, ``-from-start``), each resuming from a
random event of a random stream, are opened all at once against the gateway, and the
same client against the bare aiohttp server (``bench.bare_server``) in the same run.
Figures: time until every connection received its first expected event (its seq is
checked), failed connections, accept rate (connections that got their response headers
per second, from the swarm's start to the last headers), the ratio Tidemark / bare, CPU
and RSS of the server, CPU of the broker and of the clients. Then the older shape: N
connections to one quiet stream opened at a fixed rate. A py-spy profile of the gateway
during the storm says where the time before the response headers goes.

``processes``: ``--processes 1`` vs ``2`` on the same load: deliveries at several rates
(``bench.scenarios._measure_delivery``, the delivery scenario's own measurement) and
then idle connections added up to a hold target.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import profiling, scenarios
from bench.cluster import (
    Bench,
    Gateway,
    create_streams,
    events_url,
    prometheus,
    seed,
    start_gateway,
)
from bench.procs import PYTHON, Proc, Sample, fd_count, free_port, rss_kb, window
from bench.swarm import Swarm, merge

CORES = 2


@dataclass(frozen=True, kw_only=True)
class StormProfile:
    name: str
    clients: int
    streams: int = 300
    events: int = 20
    conns_per_client: int = 5000
    rate_clients: int
    rate: int
    header_timeout_s: float = 60.0
    #: The resume storm also runs against `tidemark gateway --processes storm_processes`.
    storm_processes: int = 2
    profile_s: float = 20.0
    proc_counts: tuple[int, ...] = (1, 2)
    proc_streams: int = 1000
    proc_rates: tuple[int, ...]
    proc_hold: int
    proc_hold_streams: int = 500
    seed: int = 7


#: The short profile keeps the issue's storm whole (15,000 clients at once; 15,000 at
#: 2,000/s): it is the figure users feel when a gateway dies.
SHORT = StormProfile(name="short", clients=15_000, rate_clients=15_000, rate=2000,
                     proc_rates=(5000, 10_000), proc_hold=4000, profile_s=10.0)
FULL = StormProfile(name="full", clients=15_000, rate_clients=15_000, rate=2000,
                    proc_rates=(5000, 10_000, 15_000), proc_hold=21_000)


# Event ids, read from the gateway's own responses ----------------------------------

async def _ids_of(session: aiohttp.ClientSession, url: str, count: int) -> dict[int, str]:
    """seq -> SSE id of the first ``count`` events of one stream, as the gateway sends them."""
    out: dict[int, str] = {}
    ev_id: str | None = None
    seq: int | None = None
    async with session.get(url, headers={"Accept": "text/event-stream"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {await resp.text()}")
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("id:"):
                ev_id = line[3:].strip()
            elif line.startswith("data:"):
                m = re.search(r'"seq":\s*(\d+)', line)
                seq = int(m[1]) if m else None
            elif line == "":
                if ev_id is not None and seq is not None:
                    out[seq] = ev_id
                    if len(out) >= count:
                        break
                ev_id, seq = None, None
    return out


def read_event_ids(gw: Gateway, stream_ids: list[str], count: int) -> dict[str, dict[int, str]]:
    async def main() -> dict[str, dict[int, str]]:
        sem = asyncio.Semaphore(20)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async def one(sid: str) -> tuple[str, dict[int, str]]:
                async with sem:
                    return sid, await _ids_of(session, events_url(gw, sid), count)
            return dict(await asyncio.gather(*(one(s) for s in stream_ids)))
    return asyncio.run(main())


# One storm against one server ----------------------------------------------------------

def _spy_thread(b: Bench, pid: int, name: str, seconds: float) -> tuple[threading.Thread,
                                                                        dict[str, Any]]:
    out: dict[str, Any] = {}
    spy = profiling.find_py_spy()

    def run() -> None:
        if spy is None:
            out["error"] = "py-spy not installed"
            return
        raw = b.workdir / f"{name}-profile.txt"
        out.update(profiling.record(spy, pid, raw, seconds=seconds))
        if raw.exists():
            out["before_headers"] = before_headers(raw.read_text())
    thread = threading.Thread(target=run, name=f"py-spy-{name}", daemon=True)
    thread.start()
    time.sleep(1.0)  # py-spy attaches
    return thread, out


def storm_once(b: Bench, p: StormProfile, name: str, server: Proc, lines: list[str], *,
               rate: float = 0.0, profile_s: float = 0.0) -> dict[str, Any]:
    """Open every target of ``lines`` (``URL\\tLast-Event-ID\\texpected seq``) from
    several client processes, all at once (``rate`` 0) or at ``rate`` connections/s in
    total; hold them until each had its first event; figures as in the module doc."""
    procs = max(1, math.ceil(len(lines) / p.conns_per_client))
    per = math.ceil(len(lines) / procs)
    args = ["-from-start", "-header-timeout", str(p.header_timeout_s),
            "-dial-concurrency", str(per)]
    if rate:
        args += ["-rate", str(rate / procs)]
    spy: tuple[threading.Thread, dict[str, Any]] | None = None
    if profile_s:
        spy = _spy_thread(b, server.pid, name, profile_s)
    a = Sample.take({"server": server, "kafka": b.broker})
    budget = p.header_timeout_s + 30 + (len(lines) / rate if rate else 0)
    sw = Swarm(b.reg, b.client, name, lines, procs=procs, duration=budget + 60, args=args)
    try:
        dialed = sw.wait_kind("dialed", 1, timeout=budget)
    except RuntimeError as exc:
        sw.finish_raw()
        raise RuntimeError(f"{name}: the swarm did not finish dialing: {exc}") from exc
    held_rss, held_fds = server.rss_kb(), server.fds()
    time.sleep(2.0)  # first events right after the last headers
    z = Sample.take({"server": server, "kafka": b.broker})
    finals = sw.finish_raw()
    if spy is not None:
        spy[0].join(profile_s + 90)
    began = [f["unix_ns"] / 1e9 - f["elapsed_s"] for f in finals]
    t0 = min(began)
    last_first = [bg + f["create_to_first_event"]["max_ms"] / 1000
                  for bg, f in zip(began, finals, strict=True)
                  if f["create_to_first_event"].get("count")]
    headers_done = [d["unix_ns"] / 1e9 for d in dialed]  # every connection had headers
    m = merge(finals)
    conns = m["connections"]
    first_events = m["create_to_first_event"].get("count", 0)
    accept_s = max(headers_done) - t0
    client_cpu = sum(f["cpu"]["total_s"] for f in finals)
    wall = max(f["unix_ns"] / 1e9 for f in finals) - t0
    out: dict[str, Any] = {
        "connections": len(lines), "client_processes": procs,
        "rate_per_s": rate or "all at once",
        "established": conns["established"], "failed": conns["failed"],
        "failures": conns["failures"],
        "got_first_event": first_events,
        "without_first_event": conns["established"] - first_events,
        "first_seq_mismatch": m["first_seq_mismatch"],
        "seq_gaps": m["seq_gaps"], "seq_duplicates": m["seq_duplicates"],
        "all_first_events_s": round(max(last_first) - t0, 2) if last_first else None,
        "all_headers_s": round(accept_s, 2),
        "accept_rate_per_s": round(conns["established"] / accept_s, 1) if accept_s else None,
        "request_to_headers_ms": scenarios._lat(m["headers"]),
        "request_to_first_event_ms": scenarios._lat(m["first_event"]),
        "start_to_first_event_ms": scenarios._lat(m["create_to_first_event"]),
        "server_rss_mb_held": round(held_rss / 1024, 1), "server_fds_held": held_fds,
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_pct_of_core": round(100 * client_cpu / wall, 1) if wall else None,
        "client_max_rss_mb_per_process": m["max_rss_mb_per_process"],
        "window": window(a, z),
    }
    # The clients are not in the window's processes (they start after its first sample):
    # take their CPU out of "other processes" (what else ran on the machine meanwhile).
    out["other_processes_cpu_s"] = round(max(
        0.0, out["window"]["other_processes_cpu_s"] - client_cpu), 2)
    if spy is not None:
        out["profile"] = spy[1]
    return out


def start_bare(b: Bench, backlog: int = 4096) -> tuple[Proc, str]:
    port = free_port()
    proc = b.reg.start("bare", [PYTHON, "-m", "bench.bare_server", "--port", str(port),
                                "--backlog", str(backlog)], b.env("unused"))
    proc.wait_line("Bare SSE server listening", 30)
    return proc, f"http://127.0.0.1:{port}"


def resume_targets(b: Bench, p: StormProfile, ns: str, gateways: list[Gateway],
                   bare_url: str, rnd: random.Random) -> list[list[str]]:
    """The resume storm's streams, written while ``gateways`` run (so their memory tails
    hold them), and its client lines (``URL\\tLast-Event-ID\\texpected seq``): one list
    per gateway (the same resumes, in the same order), then the bare server's."""
    path, rows, _ = create_streams(b, ns, p.streams, tag="storm")
    seed(b, ns, path, b.workdir / "seq-storm", count=p.events, payload=200, tag="storm")
    sids = [r["stream_id"] for r in rows]
    ids = read_event_ids(gateways[0], sids, p.events + 1)  # seq 0 (queued) .. events
    short = [s for s in sids if len(ids[s]) < p.events + 1]
    if short:
        raise RuntimeError(f"{len(short)} streams did not show all their events")
    out: list[list[str]] = [[] for _ in range(len(gateways) + 1)]
    for _ in range(p.clients):
        sid = rnd.choice(sids)
        seq = rnd.randrange(0, p.events)  # an event with one after it
        for lines, gw in zip(out, gateways, strict=False):
            lines.append(f"{events_url(gw, sid)}\t{ids[sid][seq]}\t{seq + 1}")
        out[-1].append(f"{bare_url}/v1/streams/{sid}/events\t{ids[sid][seq]}\t0")
    return out


def storm(b: Bench, p: StormProfile, *, profile: bool = True) -> dict[str, Any]:
    ns = b.namespace("st")
    rnd = random.Random(p.seed)
    res: dict[str, Any] = {"setup": {
        "what": f"{p.clients} clients resume at once, each with its own Last-Event-ID (a "
                f"random event of a random stream of {p.streams} streams with {p.events} "
                "events each, written while the gateway ran), against one Tidemark gateway "
                "process and then the bare aiohttp + uvloop server (bench/bare_server.py); "
                f"then {p.rate_clients} connections to one quiet stream at {p.rate}/s",
        "clients": p.clients, "streams": p.streams, "events_per_stream": p.events,
        "rate_clients": p.rate_clients, "rate_per_s": p.rate, "cores": CORES,
        "client": "bench/sseclient (Go), -from-start, one socket per connection, "
                  f"at most {p.conns_per_client} connections per process",
        "short_profile_note": None if p.clients >= 15_000 else
        f"short profile: {p.clients} clients, not 15,000 (--full runs 15,000)",
        "listen_backlog": "4096 on both servers (TIDEMARK_LISTEN_BACKLOG default)"}}
    with b.reg.scope():
        # The gateways first: they tail every event written from here on in memory.
        gw = start_gateway(b, "gateway-storm", ns)
        gw2: Gateway | None = None
        if p.storm_processes > 1:
            gw2 = start_gateway(b, "gateway-storm-procs", ns,
                                args=("--processes", str(p.storm_processes)))
            gw2.proc.wait_line("Gateway ready", 90)
        _, quiet_rows, _ = create_streams(b, ns, 1, tag="stormq")
        bare, bare_url = start_bare(b)
        *tms, bare_lines = resume_targets(
            b, p, ns, [gw, *([gw2] if gw2 is not None else [])], bare_url, rnd)
        tm_lines, tm2_lines = tms[0], tms[1] if gw2 is not None else []
        time.sleep(2)
        res["gateway_idle_rss_mb"] = round(gw.proc.rss_kb() / 1024, 1)
        res["bare_idle_rss_mb"] = round(bare.rss_kb() / 1024, 1)
        m0 = prometheus(gw.url)
        res["resume_storm"] = {
            "bare": storm_once(b, p, "storm-bare", bare, bare_lines),
            "tidemark": storm_once(b, p, "storm-tidemark", gw.proc, tm_lines,
                                   profile_s=p.profile_s if profile else 0.0),
        }
        m1 = prometheus(gw.url)
        res["resume_storm"]["tidemark"]["backlog_events_by_source"] = {
            s: m1.get(f'tidemark_backlog_events_total{{source="{s}"}}', 0)
            - m0.get(f'tidemark_backlog_events_total{{source="{s}"}}', 0)
            for s in ("memory", "kafka")}
        res["resume_storm"]["ratio"] = _ratio(res["resume_storm"])
        if gw2 is not None:
            time.sleep(3)
            # The same storm against `--processes N` on the same streams (another port).
            res["resume_storm"]["tidemark_processes"] = storm_once(
                b, p, "storm-tidemark-procs", gw2.proc, tm2_lines)
            res["resume_storm"]["tidemark_processes"]["processes"] = p.storm_processes
            res["resume_storm"]["ratio_processes"] = _ratio(res["resume_storm"],
                                                            "tidemark_processes")
        time.sleep(3)  # the storm's connections are gone
        quiet = quiet_rows[0]["stream_id"]
        tm_q = [f"{events_url(gw, quiet)}\t\t0"] * p.rate_clients
        bare_q = [f"{bare_url}/v1/streams/{quiet}/events\t\t0"] * p.rate_clients
        res["fixed_rate"] = {
            "bare": storm_once(b, p, "rate-bare", bare, bare_q, rate=p.rate),
            "tidemark": storm_once(b, p, "rate-tidemark", gw.proc, tm_q, rate=p.rate)}
        res["fixed_rate"]["ratio"] = _ratio(res["fixed_rate"])
    return res


def _ratio(pair: dict[str, Any], name: str = "tidemark") -> dict[str, Any]:
    tm, bare = pair[name], pair["bare"]

    def r(key: str) -> float | None:
        x, y = tm.get(key), bare.get(key)
        return round(x / y, 3) if x and y else None
    return {"definition": f"{name} / bare, same client, same run",
            "accept_rate": r("accept_rate_per_s"), "all_first_events_s": r("all_first_events_s"),
            "server_cpu_s": (round(tm["window"]["processes"]["server"]["cpu_s"]
                                   / bare["window"]["processes"]["server"]["cpu_s"], 2)
                             if bare["window"]["processes"]["server"]["cpu_s"] else None)}


# Where the time before the response headers goes -------------------------------------

HANDLER = "stream_events"
#: Where the handler's stacks go once it decides to answer, in the order it gets there.
PHASES = (("sending the headers", ("StreamResponse.prepare",)),
          ("writing retry line and backlog", ("Session.write", "Session.send", "send_reset")),
          ("live", ("_keep_up", "_live")))


def before_headers(raw: str, top: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks (py-spy names functions ``Class.method``): the share
    of all samples spent in the SSE handler before it sends the response headers (stacks
    through ``stream_events`` inside none of ``PHASES``), with the functions on those stacks
    (inclusive); the share of each later phase; and the share outside any handler (accept,
    HTTP parsing, routing, the event loop, the hub), by innermost non-asyncio frame."""
    total = setup = 0
    phases: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        total += count
        frames = [profiling._frame(f) for f in stack.split(";") if f]
        names = [fn for fn, _ in frames]
        if HANDLER not in names:
            leafish = next((f"{fn} ({profiling._short(fp)})" for fn, fp in reversed(frames)
                            if "asyncio" not in fp and "uvloop" not in fp), "?")
            outside[leafish] += count
            continue
        below = {fn for fn, _ in frames[names.index(HANDLER):]}
        phase = next((label for label, fns in PHASES if below & set(fns)), None)
        if phase is not None:
            phases[phase] += count
            continue
        setup += count
        for key in {f"{fn} ({profiling._short(fp)})" for fn, fp in frames[names.index(HANDLER):]}:
            incl[key] += count

    def pct(c: int) -> float:
        return round(100 * c / total, 1) if total else 0.0
    return {"samples": total, "handler_before_headers_pct": pct(setup),
            "handler_later_phases_pct": {label: pct(phases[label]) for label, _ in PHASES},
            "outside_handler_pct": pct(total - setup - sum(phases.values())),
            "before_headers_inclusive": [{"function": k, "pct": pct(v)}
                                         for k, v in incl.most_common(top)],
            "outside_handler_top": [{"function": k, "pct": pct(v)}
                                    for k, v in outside.most_common(12)]}


# --processes 1 vs 2 ------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _per_process(gw: Gateway, n: int) -> list[dict[str, Any]]:
    pids = _children(gw.proc.pid) if n > 1 else [gw.proc.pid]
    return [{"pid": pid, "fds": fd_count(pid), "rss_mb": round(rss_kb(pid) / 1024, 1)}
            for pid in pids]


def processes(b: Bench, p: StormProfile, dp: scenarios.Profile) -> dict[str, Any]:
    res: dict[str, Any] = {"setup": {
        "what": f"tidemark gateway --processes N: {p.proc_streams} streams, one connection "
                "each, steady total rates (the delivery scenario's measurement); then, on a "
                f"fresh gateway, {p.proc_hold} idle connections to {p.proc_hold_streams} quiet "
                "streams",
        "streams": p.proc_streams, "rates": list(p.proc_rates), "payload_bytes": dp.payload,
        "measure_s": dp.measure_s, "hold": p.proc_hold, "cores": CORES,
        "client": "bench/sseclient (Go)"}, "runs": []}
    for n in p.proc_counts:
        run: dict[str, Any] = {"processes": n}
        res["runs"].append(run)
        try:
            _processes_one(b, p, dp, n, run)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            run["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
    return res


def _processes_one(b: Bench, p: StormProfile, dp: scenarios.Profile, n: int,
                   run: dict[str, Any]) -> None:
    ns = b.namespace(f"p{n}")
    with b.reg.scope():
        path, rows, _ = create_streams(b, ns, p.proc_streams, tag=f"proc{n}")
        gw = start_gateway(b, f"gateway-proc{n}", ns, args=("--processes", str(n)),
                           TIDEMARK_HEARTBEAT_SECONDS="5")
        gw.proc.wait_line("Gateway ready", 90)
        time.sleep(1)
        run["idle"] = {"rss_mb": round(gw.proc.rss_kb() / 1024, 1),
                       "per_process": _per_process(gw, n)}
        sw = Swarm(b.reg, b.client, f"proc{n}", [events_url(gw, r["stream_id"]) for r in rows],
                   procs=1, duration=3600)
        sw.wait_dialed(timeout=120)
        time.sleep(1)
        run["connected"] = {"per_process": _per_process(gw, n)}
        state = b.workdir / f"seq-proc{n}"
        run["steps"] = []
        for rate in p.proc_rates:
            step = scenarios._measure_delivery(b, dp, gw, sw, path, state, rate, ns)
            if n > 1:
                step.pop("gateway_delivered_counter", None)  # /metrics of one child only
            run["steps"].append(step)
        run["client_totals"] = scenarios._client_totals(sw.finish())
        b.reg.stop(gw.proc)
        # Connections held, on a fresh gateway (nothing left over from the deliveries):
        # idle connections to quiet streams, heartbeats at the default interval.
        gw = start_gateway(b, f"gateway-proc{n}-hold", ns, args=("--processes", str(n)))
        gw.proc.wait_line("Gateway ready", 90)
        # Created now, so their first event is in this gateway's memory tail (a stream
        # created before the gateway started is replayed through a Kafka catch-up read).
        _, quiet, _ = create_streams(b, ns, p.proc_hold_streams, tag=f"proc{n}q")
        time.sleep(1)
        idle_rss = gw.proc.rss_kb()
        hold_lines = [events_url(gw, quiet[i % len(quiet)]["stream_id"])
                      for i in range(p.proc_hold)]
        procs = max(1, math.ceil(p.proc_hold / p.conns_per_client))
        t0 = time.monotonic()
        hold_sw = Swarm(b.reg, b.client, f"proc{n}-hold", hold_lines, procs=procs,
                        duration=1800, args=["-dial-concurrency", "200",
                                             "-header-timeout", "60"])
        hold: dict[str, Any] = {"target": p.proc_hold, "client_processes": procs,
                                "idle_rss_mb": round(idle_rss / 1024, 1)}
        try:
            hold_sw.wait_dialed(timeout=300)
        except RuntimeError as exc:
            hold["dial_error"] = str(exc)[-400:]
        hold["setup_s"] = round(time.monotonic() - t0, 1)
        time.sleep(3)
        snaps = merge(hold_sw.snapshot_raw())
        rss = gw.proc.rss_kb()
        held = snaps["connections"]["open"]
        hold.update({"held": held, "failed": snaps["connections"]["failed"],
                     "failures": snaps["connections"]["failures"],
                     "rss_mb": round(rss / 1024, 1),
                     "rss_per_connection_kb": round((rss - idle_rss) / held, 1) if held else None,
                     "per_process": _per_process(gw, n)})
        run["hold"] = hold
        hold_sw.finish()


if __name__ == "__main__":
    sys.exit("run through python -m bench.run --only storm,processes")
