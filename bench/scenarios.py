"""The five measurements of issue 3, each on fresh processes in a namespace of its own.

Every figure is stored with its setup: connections, events/s, payload, the processes
involved and their CPU seconds and RSS over the measured window.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import profiling
from bench.cluster import (
    Bench,
    Gateway,
    Publisher,
    create_streams,
    events_url,
    prometheus,
    publishers,
    request,
    seed,
    start_gateway,
    unknown_settings,
)
from bench.procs import Proc, Sample, window
from bench.swarm import Swarm, merge


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str
    conn_steps: tuple[int, ...]
    conns_per_client: int = 5000
    heartbeat_s: float = 5.0
    hold_s: float = 11.0
    delivery_streams: int = 1000
    rates: tuple[int, ...]
    rate_per_publisher: int = 12_000
    warmup_s: float = 2.0
    measure_s: float
    payload: int = 200
    first_event_n: int
    first_event_concurrency: tuple[int, ...] = (1, 10)
    resume_streams: int
    resume_events: int = 20
    resume_after: int = 10
    resume_concurrency: tuple[int, ...] = (1, 50)
    sbs_streams: int = 200
    sbs_rate: int = 1000
    sbs_hold: int
    sbs_hold_timeout_s: float = 90.0
    profile_rate: int = 5000
    profile_s: float = 10.0


SHORT = Profile(name="short", conn_steps=(1000, 2000), rates=(2000, 5000, 7500, 10_000),
                measure_s=8.0, first_event_n=200, resume_streams=200, sbs_hold=1000,
                sbs_hold_timeout_s=60.0)
FULL = Profile(name="full", conn_steps=(5000, 10_000, 15_000),
               rates=(2000, 5000, 10_000, 15_000, 20_000, 25_000, 30_000), measure_s=15.0,
               first_event_n=500, resume_streams=500, sbs_hold=3000,
               sbs_hold_timeout_s=180.0, profile_s=15.0)

CORES = 2


def _lat(h: dict[str, Any]) -> dict[str, Any]:
    return {k: h.get(k) for k in ("count", "p50_ms", "p95_ms", "p99_ms", "max_ms")}


def _client_procs(n: int, per: int) -> int:
    return max(1, min(4, math.ceil(n / per)))


# 1. Concurrent connections ---------------------------------------------------------

def connections(b: Bench, p: Profile) -> dict[str, Any]:
    """Idle SSE connections on distinct external streams, heartbeats flowing."""
    ns = b.namespace("c")
    total = max(p.conn_steps)
    res: dict[str, Any] = {"setup": {
        "what": "N SSE connections, each on its own idle external stream, one gateway "
                "process; heartbeats every TIDEMARK_HEARTBEAT_SECONDS",
        "heartbeat_s": p.heartbeat_s, "hold_s": p.hold_s, "cores": CORES,
        "client": "bench/sseclient (Go)"}, "steps": []}
    with b.reg.scope():
        _, rows, created = create_streams(b, ns, total, tag="conn")
        res["streams_created"] = created
        gw = start_gateway(b, "gateway-conn", ns,
                           TIDEMARK_HEARTBEAT_SECONDS=str(p.heartbeat_s))
        time.sleep(2)
        idle_rss = gw.proc.rss_kb()
        idle_fds = gw.proc.fds()
        res["gateway_idle"] = {"rss_mb": round(idle_rss / 1024, 1), "fds": idle_fds,
                               "index_streams": total}
        swarms: list[Swarm] = []
        opened = 0
        for n in p.conn_steps:
            add = rows[opened:n]
            urls = [events_url(gw, r["stream_id"]) for r in add]
            sw = Swarm(b.reg, b.client, f"conn-{n}", urls,
                       procs=_client_procs(len(add), p.conns_per_client), duration=1800,
                       args=["-dial-concurrency", "100"])
            swarms.append(sw)
            t0 = time.monotonic()
            step: dict[str, Any] = {"connections_attempted": n}
            try:
                dialed = sw.wait_dialed(timeout=60 + len(add) / 50)
                step["connect_to_first_event_ms"] = _lat(dialed["first_event"])
            except RuntimeError as exc:
                step["error"] = str(exc)[-600:]
            step["setup_s"] = round(time.monotonic() - t0, 2)
            opened = n
            snaps0 = [x for s in swarms for x in s.snapshot_raw()]
            procs: dict[str, Proc | list[Proc]] = {
                "gateway": gw.proc, "kafka": b.broker,
                "clients": [c for s in swarms for c in s.procs]}
            a = Sample.take(procs)
            time.sleep(p.hold_s)
            snaps1 = [x for s in swarms for x in s.snapshot_raw()]
            z = Sample.take(procs)
            s0, s1 = merge(snaps0), merge(snaps1)
            held = s1["connections"]["open"]
            rss = gw.proc.rss_kb()
            ready = gw.ready()
            step.update({
                "connections_held": held,
                "connections_failed": s1["connections"]["failed"],
                "failures": s1["connections"]["failures"],
                "server_subscribers": ready.get("subscribers"),
                "gateway_rss_mb": round(rss / 1024, 1),
                "gateway_fds": gw.proc.fds(),
                "rss_per_connection_kb": round((rss - idle_rss) / held, 1) if held else None,
                "heartbeats_in_hold": s1["heartbeats"] - s0["heartbeats"],
                "heartbeats_min_expected": int(held * (p.hold_s // p.heartbeat_s)),
                "mean_ping_interval_s": round(held * p.hold_s / max(
                    1, s1["heartbeats"] - s0["heartbeats"]), 2),
                "client_processes": sum(len(s.procs) for s in swarms),
                "window": window(a, z),
            })
            res["steps"].append(step)
            if held < 0.99 * n:
                break
        finals = [x for s in swarms for x in s.finish_raw()]
        res["client_totals"] = _client_totals(merge(finals))
    best = max((s for s in res["steps"] if s["connections_held"] >= 0.99 *
                s["connections_attempted"]), key=lambda s: s["connections_held"], default=None)
    res["highest_held"] = best["connections_held"] if best else 0
    return res


def _client_totals(final: dict[str, Any]) -> dict[str, Any]:
    if not final:
        return {}
    return {k: final.get(k) for k in ("events", "heartbeats", "seq_gaps", "seq_duplicates",
                                      "first_seq_mismatch", "closing_comments", "cpu",
                                      "max_rss_mb_per_process", "processes")} | {
        "connections": final.get("connections")}


# 2. Delivery latency ---------------------------------------------------------------

def _read_gc(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    with contextlib.suppress(ValueError, OSError):
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return None


def _gc_window(a: dict[str, Any] | None, z: dict[str, Any] | None, t0: float, t1: float,
               ) -> dict[str, Any] | None:
    """The gateway's garbage collections between unix times t0 and t1 (bench.serve)."""
    if not a or not z:
        return None
    long = [x for x in z["pauses_over_5ms"] if t0 <= x[0] <= t1]
    return {"collections_by_generation": [y - x for x, y in
                                          zip(a["collections"], z["collections"], strict=True)],
            "pause_s_by_generation": [round(y - x, 4) for x, y in
                                      zip(a["total_s"], z["total_s"], strict=True)],
            "pauses_over_5ms": len(long),
            "longest_pause_ms": round(1000 * max((x[2] for x in long), default=0), 1),
            "longest_pause_generation": max(long, key=lambda x: x[2])[1] if long else None}


def _measure_delivery(b: Bench, p: Profile, gw: Gateway, sw: Swarm, stream_file: Path,
                      state: Path, rate: int, ns: str, gc_file: Path | None = None,
                      ) -> dict[str, Any]:
    shards = max(1, math.ceil(rate / p.rate_per_publisher))
    pubs = publishers(b, ns, stream_file, state, rate=rate,
                      duration=p.warmup_s + p.measure_s + 1, payload=p.payload, shards=shards)
    try:
        for pub in pubs:
            pub.wait_started()
        time.sleep(p.warmup_s)
        snap0 = sw.snapshot()
        procs: dict[str, Proc | list[Proc]] = {
            "gateway": gw.proc, "kafka": b.broker, "publisher": [x.proc for x in pubs],
            "clients": list(sw.procs)}
        a = Sample.take(procs)
        m0 = prometheus(gw.url) if gw.kind == "tidemark" else {}
        t0 = time.time()
        gc_a = _read_gc(gc_file)
        time.sleep(p.measure_s)
        snap1 = sw.snapshot()
        t1 = time.time()
        z = Sample.take(procs)
        m1 = prometheus(gw.url) if gw.kind == "tidemark" else {}
        time.sleep(1.1 if gc_file else 0)  # the GC stats file is rewritten every second
        gc_stats = _gc_window(gc_a, _read_gc(gc_file), t0, t1)
        results = [pub.result(timeout=p.measure_s + 60) for pub in pubs]
    finally:
        for pub in pubs:
            b.reg.stop(pub.proc)
    win = window(a, z)
    delivered = snap1["events"] - snap0["events"]
    secs = win["seconds"]
    published = sum(r["acked"] for r in results)
    pub_secs = max(r["elapsed_s"] for r in results)
    out = {
        "setup": {"streams": len(sw_targets(sw)), "connections": snap1["connections"]["open"],
                  "target_events_per_s": rate, "payload_bytes": results[0]["payload_bytes"],
                  "publisher_processes": len(pubs), "client_processes": len(sw.procs),
                  "cores": CORES},
        "published_events_per_s": round(published / pub_secs, 1) if pub_secs else 0,
        "delivered_events": delivered,
        "delivered_events_per_s": round(delivered / secs, 1) if secs else 0,
        "latency_ms": _lat(snap1["latency"]),
        "p999_ms": snap1["latency"].get("p999_ms"),
        "publisher": results,
        "window": win,
        "cutoffs_total": snap1["closing_comments"],
        "connections_open": snap1["connections"]["open"],
        "gateway_gc": gc_stats,
    }
    if m0 and m1:
        key = "tidemark_events_delivered_total"
        out["gateway_delivered_counter"] = m1.get(key, 0) - m0.get(key, 0)
    g = win["processes"]["gateway"]["cpu_s"]
    k = win["processes"]["kafka"]["cpu_s"]
    out["gateway_cpu_us_per_event"] = round(1e6 * g / delivered, 1) if delivered else None
    out["broker_cpu_us_per_event"] = round(1e6 * k / delivered, 1) if delivered else None
    c = win["processes"]["clients"]["cpu_s"]
    out["client_cpu_us_per_event"] = round(1e6 * c / delivered, 1) if delivered else None
    return out


def sw_targets(sw: Swarm) -> list[str]:
    lines: list[str] = []
    for i in range(len(sw.procs)):
        path = sw.reg.logdir / f"{sw.name}.{i}.urls"
        lines += [x for x in path.read_text().splitlines() if x]
    return lines


def delivery(b: Bench, p: Profile) -> dict[str, Any]:
    """Publish-to-client latency at several steady total rates over 1,000 streams."""
    ns = b.namespace("d")
    res: dict[str, Any] = {"setup": {
        "what": "one SSE connection per stream, each stream receiving an equal share of a "
                "steady total rate of partial_result events published straight to Kafka",
        "streams": p.delivery_streams, "payload_bytes": p.payload, "warmup_s": p.warmup_s,
        "measure_s": p.measure_s, "cores": CORES, "client": "bench/sseclient (Go)"},
        "steps": []}
    with b.reg.scope():
        path, rows, _ = create_streams(b, ns, p.delivery_streams, tag="dlv")
        gc_file = b.workdir / "gc-dlv.json"
        gw = start_gateway(b, "gateway-dlv", ns, TIDEMARK_HEARTBEAT_SECONDS="5",
                           BENCH_GC_STATS=str(gc_file))
        urls = [events_url(gw, r["stream_id"]) for r in rows]
        sw = Swarm(b.reg, b.client, "dlv", urls, procs=1, duration=3600)
        sw.wait_dialed(timeout=120)
        time.sleep(1)
        state = b.workdir / "seq-dlv"
        for rate in p.rates:
            step = _measure_delivery(b, p, gw, sw, path, state, rate, ns, gc_file)
            res["steps"].append(step)
            lat = step["latency_ms"]
            if (lat.get("p99_ms") or 0) > 2000 or \
                    step["delivered_events_per_s"] < 0.5 * rate:
                break  # saturated: higher rates only queue up
        ok = [s for s in res["steps"] if (s["latency_ms"].get("p99_ms") or 1e9) < 100
              and s["delivered_events_per_s"] >= 0.97 * s["setup"]["target_events_per_s"]]
        best = max(ok, key=lambda s: s["delivered_events_per_s"], default=None)
        res["highest_events_per_s_p99_under_100ms"] = (
            best["delivered_events_per_s"] if best else None)
        res["highest_step_target"] = best["setup"]["target_events_per_s"] if best else None
        if p.profile_s > 0:
            res["profile"] = _profile_gateway(b, p, gw, path, state, ns)
        res["client_totals"] = _client_totals(sw.finish())
    return res


def _profile_gateway(b: Bench, p: Profile, gw: Gateway, stream_file: Path, state: Path,
                     ns: str) -> dict[str, Any]:
    """py-spy samples of the gateway while it delivers ``profile_rate`` events/s."""
    spy = profiling.find_py_spy()
    if spy is None:
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    pub = Publisher(b, ns, stream_file, state, rate=p.profile_rate,
                    duration=p.profile_s + 4, payload=p.payload, name="publisher-profile")
    try:
        pub.wait_started()
        time.sleep(1.5)
        raw = b.workdir / "gateway-profile.txt"
        prof = profiling.record(spy, gw.proc.pid, raw, seconds=p.profile_s)
        pub.result(timeout=p.profile_s + 60)
    finally:
        b.reg.stop(pub.proc)
    prof["setup"] = {"events_per_s": p.profile_rate, "streams": p.delivery_streams,
                     "connections": p.delivery_streams, "payload_bytes": p.payload,
                     "seconds": p.profile_s, "sampler": "py-spy record --nonblocking, 100 Hz"}
    return prof


# 3 and 4. First-event and resume latency --------------------------------------------

def _run_client(b: Bench, name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    proc = b.reg.start(name, [str(b.client), *argv], b.env("unused"))
    try:
        proc.wait_exit(timeout)
        finals = [x for x in proc.json_lines() if x.get("kind") == "final"]
        if not finals:
            proc.signal(signal.SIGTERM)
            proc.wait_exit(10)
            finals = [x for x in proc.json_lines() if x.get("kind") == "final"]
        if not finals:
            raise RuntimeError(f"{name}: no report:\n{proc.logs()}")
        return merge(finals)
    finally:
        b.reg.stop(proc)


def first_and_resume(b: Bench, p: Profile) -> dict[str, dict[str, Any]]:
    ns = b.namespace("r")
    first: dict[str, Any] = {"setup": {
        "what": "POST /v1/streams {generator: external}, then GET its events at once; "
                "time from the POST to the first event (status queued) at the client",
        "streams": p.first_event_n, "cores": CORES, "client": "bench/sseclient (Go)"},
        "runs": []}
    resume: dict[str, Any] = {"setup": {
        "what": f"{p.resume_streams} streams with {p.resume_events} events each; reconnect "
                f"with Last-Event-ID = event seq {p.resume_after}, time from the request to "
                f"the first missed event (seq {p.resume_after + 1})",
        "streams": p.resume_streams, "payload_bytes": p.payload, "cores": CORES,
        "client": "bench/sseclient (Go)"}, "runs": []}
    with b.reg.scope():
        mem = start_gateway(b, "gateway-tail", ns, TIDEMARK_HEARTBEAT_SECONDS="5")
        kaf = start_gateway(b, "gateway-catchup", ns, TIDEMARK_HEARTBEAT_SECONDS="5",
                            TIDEMARK_TAIL_BYTES="1")
        for conc in p.first_event_concurrency:
            a = Sample.take({"gateway": mem.proc, "kafka": b.broker})
            rep = _run_client(b, f"first-c{conc}", [
                "-create", f"{mem.url}/v1/streams", "-n", str(p.first_event_n),
                "-concurrency", str(conc), "-duration", "300"], timeout=320)
            z = Sample.take({"gateway": mem.proc, "kafka": b.broker})
            first["runs"].append({
                "concurrency": conc, "streams": p.first_event_n,
                "ok": rep["connections"]["established"], "failed": rep["connections"]["failed"],
                "failures": rep["connections"]["failures"],
                "first_seq_mismatch": rep["first_seq_mismatch"],
                "post_to_first_event_ms": _lat(rep["create_to_first_event"]),
                "post_ms": _lat(rep["post"]), "get_to_first_event_ms": _lat(rep["first_event"]),
                "window": window(a, z)})
        try:
            _resume(b, p, ns, mem, kaf, resume)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            resume["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
    return {"first_event": first, "resume": resume}


def _resume(b: Bench, p: Profile, ns: str, mem: Gateway, kaf: Gateway,
            out: dict[str, Any]) -> None:
    path, rows, _ = create_streams(b, ns, p.resume_streams, tag="res")
    offsets = seed(b, ns, path, b.workdir / "seq-res", count=p.resume_events,
                   payload=p.payload, tag="res")
    status, body = request(f"{mem.url}/v1/streams/{rows[0]['stream_id']}")
    if status != 200:
        raise RuntimeError(f"status of a seeded stream: {status} {body}")
    epoch = body["first_event_id"].split("-")[1]
    targets = []
    after = str(p.resume_after)
    for r in rows:
        o = offsets[r["stream_id"]]
        eid = f"1-{epoch}-{o['partition']}-{o['seqs'][after]}"
        targets.append((r["stream_id"], eid))
    for gw, source in ((mem, "memory"), (kaf, "kafka")):
        lines = [f"{events_url(gw, sid)}\t{eid}\t{p.resume_after + 1}" for sid, eid in targets]
        for conc in p.resume_concurrency:
            m0 = prometheus(gw.url)
            a = Sample.take({"gateway": gw.proc, "kafka": b.broker})
            sw = Swarm(b.reg, b.client, f"resume-{source}-c{conc}", lines, procs=1,
                       duration=120, args=["-max-events", "1", "-dial-concurrency", str(conc)])
            rep = sw.wait_finished(timeout=130)
            z = Sample.take({"gateway": gw.proc, "kafka": b.broker})
            m1 = prometheus(gw.url)
            served = {s: m1.get(f'tidemark_backlog_events_total{{source="{s}"}}', 0)
                      - m0.get(f'tidemark_backlog_events_total{{source="{s}"}}', 0)
                      for s in ("memory", "kafka")}
            out["runs"].append({
                "source": source, "concurrency": conc, "resumes": len(lines),
                "ok": rep["connections"]["established"], "failed": rep["connections"]["failed"],
                "failures": rep["connections"]["failures"],
                "first_seq_mismatch": rep["first_seq_mismatch"],
                "reconnect_to_first_missed_event_ms": _lat(rep["first_event"]),
                "reconnect_to_headers_ms": _lat(rep["headers"]),
                "backlog_events_served_by_source": served,
                "gateway_settings": ({"TIDEMARK_TAIL_BYTES": "1"} if source == "kafka"
                                     else {"TIDEMARK_TAIL_BYTES": "default (16 MiB)"}),
                "window": window(a, z)})


# 5. Side by side ---------------------------------------------------------------------

TARGETS = (
    ("tidemark", "tidemark", {}, "kafka"),
    ("baseline", "baseline", {}, "kafka"),
    ("topic-per-stream", "tidemark", {"TIDEMARK_PLACEMENT": "topic-per-stream"}, "http"),
)


def side_by_side(b: Bench, p: Profile) -> dict[str, Any]:
    res: dict[str, Any] = {"setup": {
        "what": "the same delivery load against Tidemark (shared partitioned topic), the "
                "baseline gateway (one aiokafka consumer per client, bench/baseline_gateway.py)"
                " and Tidemark with TIDEMARK_PLACEMENT=topic-per-stream; then idle "
                "connections are added up to the hold target",
        "streams": p.sbs_streams, "events_per_s": p.sbs_rate, "payload_bytes": p.payload,
        "hold_target": p.sbs_hold, "hold_timeout_s": p.sbs_hold_timeout_s,
        "measure_s": p.measure_s, "cores": CORES, "client": "bench/sseclient (Go)"},
        "targets": {}}
    for i, (name, kind, settings, via) in enumerate(TARGETS):
        out: dict[str, Any] = {"kind": kind, "settings": settings, "streams_created_via": via}
        res["targets"][name] = out
        try:
            _sbs_one(b, p, f"s{i}", kind, settings, via, out)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            out["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
    res["ratios"] = _ratios(res["targets"])
    return res


def _sbs_one(b: Bench, p: Profile, tag: str, kind: str, settings: dict[str, str], via: str,
             out: dict[str, Any]) -> None:
    ns = b.namespace(tag)
    env = {"TIDEMARK_HEARTBEAT_SECONDS": "5", **settings}
    with b.reg.scope():
        if via == "kafka":
            path, rows, _ = create_streams(b, ns, p.sbs_streams, tag=tag)
            gw = start_gateway(b, f"gateway-{tag}", ns, kind=kind, **env)
        else:
            gw = start_gateway(b, f"gateway-{tag}", ns, kind=kind, **env)
            ignored = unknown_settings(gw)
            if ignored:
                raise RuntimeError("the gateway ignores the setting: " + "; ".join(ignored))
            path, rows, created = create_streams(b, ns, p.sbs_streams, tag=tag, via="http",
                                                 gateway=gw)
            out["topics"] = created.get("topics")
        time.sleep(1)
        idle_rss, idle_fds = gw.proc.rss_kb(), gw.proc.fds()
        urls = [events_url(gw, r["stream_id"]) for r in rows]
        sw = Swarm(b.reg, b.client, f"sbs-{tag}", urls, procs=1, duration=1800)
        t0 = time.monotonic()
        sw.wait_dialed(timeout=120)
        out["setup_s"] = round(time.monotonic() - t0, 2)
        time.sleep(1)
        loaded_rss, loaded_fds = gw.proc.rss_kb(), gw.proc.fds()
        step = _measure_delivery(b, p, gw, sw, path, b.workdir / f"seq-{tag}", p.sbs_rate, ns)
        n = step["connections_open"]
        if kind == "tidemark":
            # Streams this gateway's index holds (its namespace has len(rows)).
            out["index_streams"] = prometheus(gw.url).get("tidemark_index_streams")
        out.update({
            "connections": n,
            "gateway_idle_rss_mb": round(idle_rss / 1024, 1),
            "gateway_rss_mb": round(loaded_rss / 1024, 1),
            "rss_per_connection_kb": round((loaded_rss - idle_rss) / n, 1) if n else None,
            "fds_per_connection": round((loaded_fds - idle_fds) / n, 2) if n else None,
            "broker_fds": b.broker.fds(),
            "delivery": step})
        swarms = [sw]
        hold: dict[str, Any] = {"target": p.sbs_hold}
        out["hold"] = hold
        extra = p.sbs_hold - len(rows)
        try:
            if extra > 0:
                if via == "kafka":
                    _, more, _ = create_streams(b, ns, extra, tag=f"{tag}h")
                else:
                    _, more, _ = create_streams(b, ns, extra, tag=f"{tag}h", via="http",
                                                gateway=gw, timeout=p.sbs_hold_timeout_s)
                sw2 = Swarm(b.reg, b.client, f"sbs-{tag}-hold",
                            [events_url(gw, r["stream_id"]) for r in more],
                            procs=_client_procs(extra, p.conns_per_client), duration=1800)
                swarms.append(sw2)
                t0 = time.monotonic()
                try:
                    sw2.wait_dialed(timeout=p.sbs_hold_timeout_s)
                except RuntimeError as exc:
                    hold["dial_error"] = str(exc)[-400:]
                hold["setup_s"] = round(time.monotonic() - t0, 2)
            time.sleep(5)
            snaps = merge([x for s in swarms for x in s.snapshot_raw()])
            held = snaps["connections"]["open"]
            rss = gw.proc.rss_kb()
            hold.update({
                "held": held, "failed": snaps["connections"]["failed"],
                "failures": snaps["connections"]["failures"],
                "gateway_rss_mb": round(rss / 1024, 1),
                "rss_per_connection_kb": round((rss - idle_rss) / held, 1) if held else None,
                "gateway_fds": gw.proc.fds(),
                "fds_per_connection": round((gw.proc.fds() - idle_fds) / held, 2)
                if held else None,
                "gateway_cpu_pct_idle": _cpu_pct(gw.proc, 3.0),
                "broker_cpu_pct_idle": _cpu_pct(b.broker, 3.0)})
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            hold["error"] = f"{type(exc).__name__}: {exc}"[-1000:]
        for s in swarms:
            s.finish()


def _cpu_pct(proc: Proc, seconds: float) -> float:
    a = proc.cpu()
    time.sleep(seconds)
    return round(100 * (proc.cpu() - a) / seconds, 1)


def _ratios(targets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    base = targets.get("tidemark", {})
    if "delivery" not in base:
        return {}

    def figures(t: dict[str, Any]) -> dict[str, Any]:
        d = t.get("delivery", {})
        h = t.get("hold", {})
        return {"held": h.get("held"),
                "rss_per_connection_kb": h.get("rss_per_connection_kb")
                or t.get("rss_per_connection_kb"),
                "gateway_cpu_us_per_event": d.get("gateway_cpu_us_per_event"),
                "broker_cpu_us_per_event": d.get("broker_cpu_us_per_event"),
                "p99_ms": d.get("latency_ms", {}).get("p99_ms")}

    ref = figures(base)
    out: dict[str, Any] = {"definition": "other / tidemark (shared topic); above 1 means "
                           "the other one needs more (held: holds more)"}
    for name, t in targets.items():
        if name == "tidemark" or "delivery" not in t:
            continue
        f = figures(t)
        out[name] = {k: (round(f[k] / ref[k], 2) if f.get(k) and ref.get(k) else None)
                     for k in ref}
    return out


def cleanup_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
