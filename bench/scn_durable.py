"""The ``durable`` scenario: the Durable Streams surface (``/ds``) of one Tidemark gateway
against the protocol's reference Node server (``@durable-streams/server`` 0.3.7, in memory,
one process), side by side in the same run, on fresh processes.

1. **Appends/s.** W closed-loop writers (``bench/sseclient -post-urls``, Go: one goroutine
   and keep-alive connection each), each on a stream of its own (12 partitions: streams
   share partitions), POST a 100-byte JSON message, the next as soon as the last is
   answered; 2 s warm-up, then the window: appends/s, per-append latency (request to
   answer), failures.
2. **Read fan-out.** R live SSE readers (``bench/sseclient``, ``?offset=now&live=sse``) of
   one stream; the official client's ``IdempotentProducer`` (``@durable-streams/client``
   0.2.7, ``conformance/ds-load.mjs``, linger 0) appends ``{"bench_ns": <unix ns>}`` at a
   steady rate for the window; each reader takes its latency from the append call to the
   ``event: data`` that carries it (same machine clock). Delivered: messages received
   against appends x readers; ``data`` events: how many events carried them (a server
   that falls behind sends several appends in one).

Per case the CPU of every process over the window: the server, the broker (Tidemark),
the Go client and the Node writer. Go keeps the client's cost per request low (the
official client's fetch took ~385 µs of CPU per append here, a core at ~2,600 appends/s:
it would measure itself against the reference server).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from typing import Any

from bench.cluster import Bench, request, start_gateway
from bench.markdown import fmt as _f
from bench.markdown import table as _table
from bench.procs import REPO, Group, Proc, Sample, base_env, free_port, window
from bench.swarm import Swarm

SCRIPT = REPO / "conformance" / "ds-load.mjs"
NODE = shutil.which("node") or "node"


@dataclass(frozen=True, kw_only=True)
class DurableProfile:
    writers: int
    append_s: float
    readers: int
    rate: float
    fanout_s: float


SHORT = DurableProfile(writers=16, append_s=10, readers=1000, rate=10, fanout_s=10)
FULL = DurableProfile(writers=64, append_s=20, readers=1000, rate=50, fanout_s=20)


def _create(url: str) -> None:
    status, body = request(url, method="PUT")
    if status not in (200, 201):
        raise RuntimeError(f"PUT {url}: {status} {body}")


def _appends(b: Bench, prof: DurableProfile, target: str, url: str,
             server: dict[str, Group]) -> dict[str, Any]:
    urls = [f"{url}/a{b.run_id}{target}-{i}" for i in range(prof.writers)]
    for u in urls:
        _create(u)
    swarm = Swarm(b.reg, b.client, f"ds-append-{target}", urls, targets_flag="-post-urls",
                  duration=prof.append_s + 60, args=["-body", json.dumps({"pad": "x" * 88})])
    try:
        swarm.wait_dialed(30)
        time.sleep(2)  # warm-up: connections, the gateway's partition leases
        start = swarm.snapshot()
        before = Sample.take({**server, "client": swarm.procs})
        time.sleep(prof.append_s)
        end = swarm.snapshot()
        after = Sample.take({**server, "client": swarm.procs})
    finally:
        swarm.finish()
    win = window(before, after)
    appends = end["posts"] - start["posts"]
    return {"writers": prof.writers, "window": win, "latency_ms": end.get("post", {}),
            "appends": appends, "failed": end["post_failed"] - start["post_failed"],
            "failures": end.get("connections", {}).get("failures"),
            "appends_per_s": round(appends / win["seconds"], 1)}


def _fanout(b: Bench, prof: DurableProfile, target: str, url: str,
            server: dict[str, Group]) -> dict[str, Any]:
    prefix = f"f{b.run_id}{target}"
    stream_url = f"{url}/{prefix}-0"
    _create(stream_url)
    swarm = Swarm(b.reg, b.client, f"ds-readers-{target}",
                  [f"{stream_url}?offset=now&live=sse"] * prof.readers,
                  duration=prof.fanout_s + 120)
    cfg = b.workdir / f"ds-writer-{target}.json"
    cfg.write_text(json.dumps({"mode": "write", "url": url, "prefix": prefix, "streams": 1,
                               "rate": prof.rate, "seconds": prof.fanout_s}))
    writer: Proc | None = None
    try:
        dialed = swarm.wait_dialed(120)
        writer = b.reg.start(f"ds-writer-{target}", [NODE, str(SCRIPT), str(cfg)], base_env())
        writer.wait_line("READY", 60)
        start = swarm.snapshot()  # after the warm-up appends: the histograms restart
        procs = {**server, "client": swarm.procs, "writer": writer}
        before = Sample.take(procs)
        writer.wait_line("DONE", prof.fanout_s + 60)
        after = Sample.take(procs)
        if writer.wait_exit(30) != 0:
            raise RuntimeError(f"the writer failed:\n{writer.logs()}")
        wrote = json.loads(next(x for x in writer.stdout_lines() if x.startswith("REPORT "))
                           .removeprefix("REPORT "))
        time.sleep(2)  # the last appends reach every reader
        got = swarm.snapshot()
    finally:
        if writer is not None:
            b.reg.stop(writer)
        swarm.finish()
    timed = got.get("timed", 0) - start.get("timed", 0)
    events = ((got.get("events_by_type") or {}).get("data", 0)
              - (start.get("events_by_type") or {}).get("data", 0))
    conns = dialed.get("connections", {})
    return {"readers": prof.readers, "connected": conns.get("established"),
            "dial_failures": conns.get("failures"), "appended": wrote["appended"],
            "writer_errors": wrote["errors"],
            "expected_deliveries": wrote["appended"] * prof.readers, "delivered": timed,
            "data_events": events,
            "latency_ms": got.get("latency", {}), "window": window(before, after)}


def _cases(b: Bench, prof: DurableProfile, target: str, url: str,
           server: dict[str, Group]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, case in (("append", _appends), ("fanout", _fanout)):
        try:
            out[name] = case(b, prof, target, url, server)
        except Exception as exc:  # noqa: BLE001 - one case's failure is recorded
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[-2000:]}
    return out


def durable(b: Bench, prof: DurableProfile) -> dict[str, Any]:
    res: dict[str, Any] = {"setup": {
        **prof.__dict__,
        "client": "bench/sseclient (Go): closed-loop POST writers and SSE readers; fan-out "
                  "writer: @durable-streams/client 0.2.7 IdempotentProducer (Node)",
        "reference": "@durable-streams/server 0.3.7 (in memory, one Node process)",
        "tidemark": "one gateway (TIDEMARK_AUTH=none, 12 partitions) on the run's broker"},
        "targets": {}}
    with b.reg.scope():
        port = free_port()
        ref = b.reg.start("ds-reference", [NODE, str(REPO / "conformance" /
                                                     "reference-server.mjs"), str(port)],
                          base_env())
        ref.wait_line("REFERENCE_URL=", 60)
        res["targets"]["reference"] = _cases(b, prof, "reference",
                                             f"http://127.0.0.1:{port}/v1/stream",
                                             {"server": ref})
    with b.reg.scope():
        gw = start_gateway(b, "ds-gateway", b.namespace("ds"))
        res["targets"]["tidemark"] = _cases(b, prof, "tidemark", f"{gw.url}/ds/v1/stream",
                                            {"server": gw.proc, "kafka": b.broker})
    ref_t, ours = res["targets"]["reference"], res["targets"]["tidemark"]
    res["ratios"] = {
        "appends_per_s": _ratio(ours["append"].get("appends_per_s"),
                                ref_t["append"].get("appends_per_s")),
        "fanout_p99": _ratio((ours["fanout"].get("latency_ms") or {}).get("p99_ms"),
                             (ref_t["fanout"].get("latency_ms") or {}).get("p99_ms"))}
    return res


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _cpu(case: dict[str, Any], name: str) -> str:
    p = case.get("window", {}).get("processes", {}).get(name)
    return "-" if p is None else f"{p['cpu_s']:.1f} s ({p['cpu_pct_of_core']:.0f}%)"


def _other(case: dict[str, Any]) -> str:
    """CPU that processes outside the benchmark used in the window (noise)."""
    other = case.get("window", {}).get("other_processes_cpu_s")
    return "-" if other is None else f"{other:.1f} s"


def render(sc: dict[str, Any]) -> list[str]:
    d = sc.get("durable")
    if not d:
        return []
    st = d.get("setup", {})
    lines = ["### Durable Streams (`/ds`): one Tidemark gateway vs the reference server "
             f"(client: {st.get('client')})", ""]
    if d.get("error"):
        return [*lines, f"**error:** `{d['error'][-300:]}`", ""]
    arows, frows = [], []
    for name, t in d.get("targets", {}).items():
        a, f = t.get("append", {}), t.get("fanout", {})
        if a.get("error"):
            arows.append([name, "error: " + a["error"][-160:].replace("|", "/")] + ["-"] * 8)
        else:
            lat = a.get("latency_ms", {})
            arows.append([name, _f(a.get("writers")), _f(a.get("appends_per_s"), 0),
                          _f(lat.get("p50_ms"), 2), _f(lat.get("p99_ms"), 2),
                          f"{_f(a.get('appends'))} / {_f(a.get('failed'))}",
                          _cpu(a, "server"), _cpu(a, "kafka"), _cpu(a, "client"), _other(a)])
        if f.get("error"):
            frows.append([name, "error: " + f["error"][-160:].replace("|", "/")] + ["-"] * 11)
        else:
            lat = f.get("latency_ms", {})
            frows.append([name, f"{_f(f.get('connected'))} / {_f(f.get('readers'))}",
                          _f(f.get("appended")),
                          f"{_f(f.get('delivered'))} / {_f(f.get('expected_deliveries'))}",
                          _f(f.get("data_events")),
                          _f(lat.get("p50_ms"), 1), _f(lat.get("p99_ms"), 1),
                          _f(lat.get("max_ms"), 1), _cpu(f, "server"), _cpu(f, "kafka"),
                          _cpu(f, "client"), _cpu(f, "writer"), _other(f)])
    lines += [f"Appends: {_f(st.get('writers'))} closed-loop writers (Go), one stream each, "
              f"{_f(st.get('append_s'))} s window:", ""]
    lines += _table(["server", "writers", "appends/s", "p50 ms", "p99 ms", "appends / failed",
                     "server CPU", "broker CPU", "client CPU (Go)", "other procs CPU"], arows)
    lines += ["", f"Fan-out: {_f(st.get('readers'))} SSE readers (Go) of one stream, "
              f"{_f(st.get('rate'))} appends/s (official client) for {_f(st.get('fanout_s'))} "
              "s, latency from the append call to each reader's `data` event:", ""]
    lines += _table(["server", "readers connected", "appends", "delivered / expected",
                     "data events",
                     "p50 ms", "p99 ms", "max ms", "server CPU", "broker CPU",
                     "readers CPU (Go)", "writer CPU (Node)", "other procs CPU"], frows)
    r = d.get("ratios", {})
    lines += ["", f"Tidemark / reference: appends/s **{_f(r.get('appends_per_s'), 3)}**, "
              f"fan-out p99 **{_f(r.get('fanout_p99'), 2)}**.", ""]
    return lines
