"""Scenario ``worker_path``: the generated-token path users of generated streams feel.

generator (worker) -> transactional outbox -> Kafka commit -> the gateway's
read_committed tail -> hub -> socket. Real processes: the broker, one gateway, two
workers (``bench.serve worker``, i.e. ``tidemark worker``) and the Go client, which
creates each stream through the gateway's ``POST /v1/streams`` (generator ``demo``, so
the generator, the outbox and the transactions are the real ones), follows it until the
server ends the response after the terminal event, and takes each event's latency from
the envelope's ``ts`` (set by the worker just before the event enters its outbox; same
machine clock; ``ts`` is whole milliseconds, so a figure reads up to 1 ms high).

Per step (N concurrent streams x ``RATE`` tokens/s, 2 followers per stream up to 100
streams, 1 above): the streams are made long enough that a ``warmup_s`` + ``measure_s``
window after the last stream was created lies inside steady generation (checked: no
stream may end inside the window). Over the window: latency ts -> receipt, tokens
delivered per second against N x RATE, CPU of every process, the workers' events and
transactions (their ``/metrics``). After it: whether every stream was delivered whole
(every follower saw seq 0 to its ``result`` with no gap or duplicate).

The reference, in the same run and before it on fresh processes: the hub only (not the
user path): ``bench.publisher`` writes ``partial_result`` events non-transactionally
at the same total rate to the same number of streams (external ones, created through
``POST /v1/streams``), with the same followers; latency again from ``ts`` (which the
publisher sets just before its send).
"""

from __future__ import annotations

import json
import math
import signal
import time
from typing import Any

from bench import profiling
from bench.cluster import (
    Bench,
    Gateway,
    create_streams,
    events_url,
    prometheus,
    publishers,
    start_gateway,
)
from bench.procs import PYTHON, Proc, Sample, base_env, window
from bench.scenarios import Profile
from bench.swarm import Swarm, merge

STEPS = {"short": (1, 100, 300, 1000), "full": (1, 100, 300, 1000, 2000)}
RATE = 10.0  # tokens per second per stream
WARMUP_S = 3.0
CREATE_CONCURRENCY = 20
#: The reference's record size: about what the demo generator's partial_result
#: envelopes weigh (a 32-character stream id, a word, the chunk index).
REF_PAYLOAD = 150
WORKERS = 2
#: py-spy samples of worker0 at the largest step, after its window (streams still run).
PROFILE_S = 5.0


def followers_for(streams: int) -> int:
    return 2 if streams <= 100 else 1


def tokens_for(streams: int, rate: float, measure_s: float) -> int:
    """Long enough that creating ``streams`` (estimated generously at 60 a second on
    these 2 shared cores), the warm-up and the window all fit before the first one ends."""
    create_s = 2 + streams / 60
    return math.ceil(rate * (create_s + WARMUP_S + measure_s + PROFILE_S + 8))


def demo_events(tokens: int) -> int:
    """Events of a demo stream with ``tokens`` tokens, seq 0 (queued) included: status,
    metadata, progress, one partial_result per token, a progress every tenth of them,
    the last progress, the result (the plan of ``workers.demo``)."""
    step_every = max(1, tokens // 10)
    mid = sum(1 for done in range(1, tokens + 1) if done % step_every == 0 and done < tokens)
    return 1 + 3 + tokens + mid + 1 + 1


class CreatingClient:
    """One ``sseclient -create ... -followers K`` process: creates the streams itself and
    follows each until the server ends it."""

    def __init__(self, b: Bench, name: str, gw: Gateway, *, n: int, followers: int,
                 body: dict[str, Any], duration: float) -> None:
        self.proc = b.reg.start(name, [
            str(b.client), "-create", f"{gw.url}/v1/streams", "-n", str(n),
            "-concurrency", str(CREATE_CONCURRENCY), "-body", json.dumps(body),
            "-followers", str(followers), "-latency-from", "ts",
            "-dial-concurrency", "200", "-duration", str(duration), "-label", name],
            base_env())
        self.b = b

    def _kind(self, kind: str) -> list[dict[str, Any]]:
        return [x for x in self.proc.json_lines() if x.get("kind") == kind]

    def wait_kind(self, kind: str, timeout: float) -> dict[str, Any]:
        got: list[dict[str, Any]] = self.proc.wait_for(
            f"{kind} report", lambda: self._kind(kind), timeout)
        return got[-1]

    def snapshot(self, timeout: float = 15) -> dict[str, Any]:
        n = len(self._kind("snapshot"))
        self.proc.signal(signal.SIGUSR1)

        def test() -> dict[str, Any] | None:
            later = self._kind("snapshot")[n:]
            return later[0] if later else None
        got: dict[str, Any] = self.proc.wait_for("snapshot", test, timeout)
        return merge([got])

    def final(self, timeout: float) -> dict[str, Any]:
        """Wait for the process to end by itself (every follower ended), or end it."""
        try:
            code = self.proc.wait_exit(timeout)
            if code is None:
                self.proc.signal(signal.SIGTERM)
                self.proc.wait_exit(15)
            finals = self._kind("final")
            if not finals:
                raise RuntimeError(f"{self.proc.name}: no final report:\n{self.proc.logs()}")
            return {**merge(finals[-1:]), "ended_by_itself": code is not None}
        finally:
            self.b.reg.stop(self.proc)


def _start_worker(b: Bench, name: str, ns: str, settings: dict[str, str],
                  ) -> tuple[Proc, str]:
    proc = b.reg.start(name, [PYTHON, "-m", "bench.serve", "worker"], b.env(ns, **settings))
    line = proc.wait_line("Worker started", 90)
    return proc, line.rsplit(" ", 1)[1].removesuffix("/metrics")


def _lat(h: dict[str, Any]) -> dict[str, Any]:
    return {k: h.get(k) for k in ("count", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")}


def _tokens(snap: dict[str, Any]) -> int:
    return int((snap.get("events_by_type") or {}).get("partial_result", 0))


def _cpu_per_event(win: dict[str, Any], events: float) -> dict[str, float | None]:
    return {name: (round(1e6 * p["cpu_s"] / events, 1) if events else None)
            for name, p in win["processes"].items()}


def _delivery(s0: dict[str, Any], s1: dict[str, Any], secs: float, n: int,
              followers: int) -> dict[str, Any]:
    receipts = s1["events"] - s0["events"]
    tokens = _tokens(s1) - _tokens(s0)
    return {"expected_tokens_per_s": n * RATE,
            "delivered_tokens_per_s": round(tokens / followers / secs, 1) if secs else 0,
            "delivered_share": round(tokens / followers / secs / (n * RATE), 3) if secs else 0,
            "receipts_per_s": round(receipts / secs, 1) if secs else 0,
            "latency_ms": _lat(s1["latency"]),
            "seq_gaps_in_window": s1["seq_gaps"] - s0["seq_gaps"],
            "seq_duplicates_in_window": s1["seq_duplicates"] - s0["seq_duplicates"],
            "cutoffs": s1["closing_comments"] - s0["closing_comments"]}


def _profile(b: Bench, proc: Proc, tag: str, seconds: float) -> dict[str, Any]:
    spy = profiling.find_py_spy()
    if spy is None:
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    prof = profiling.record(spy, proc.pid, b.workdir / f"{tag}-profile.txt", seconds=seconds)
    prof["setup"] = {"seconds": seconds, "sampler": "py-spy record --nonblocking, 100 Hz"}
    return prof


def _generated_step(b: Bench, p: Profile, gw: Gateway, workers: list[tuple[Proc, str]],
                    n: int, profile_s: float = 0.0) -> dict[str, Any]:
    followers = followers_for(n)
    tokens = tokens_for(n, RATE, p.measure_s)
    per_stream = demo_events(tokens)
    body = {"query": f"bench worker path {n}", "generator": "demo",
            "options": {"tokens": tokens, "tokens_per_second": RATE}}
    length_s = tokens / RATE
    step: dict[str, Any] = {"path": "worker", "setup": {
        "streams": n, "followers_per_stream": followers, "connections": n * followers,
        "tokens_per_stream": tokens, "tokens_per_second_per_stream": RATE,
        "events_per_stream": per_stream, "stream_length_s": length_s,
        "warmup_s": WARMUP_S, "measure_s": p.measure_s, "workers": len(workers),
        "create_concurrency": CREATE_CONCURRENCY, "cores": 2}}
    t0 = time.monotonic()
    client = CreatingClient(b, f"wp-gen-{n}", gw, n=n, followers=followers, body=body,
                            duration=3 * length_s + 120)
    try:
        dialed = client.wait_kind("dialed", timeout=60 + n / 10)
        step["create_s"] = round(time.monotonic() - t0, 2)
        step["created"] = {"failed": dialed["connections"]["failed"],
                           "failures": dialed["connections"]["failures"],
                           "post_ms": _lat(dialed["post"]),
                           "post_to_first_event_ms": _lat(dialed["create_to_first_event"])}
        time.sleep(WARMUP_S)
        procs: dict[str, Proc | list[Proc]] = {
            "gateway": gw.proc, "kafka": b.broker, "clients": client.proc,
            **{f"worker{i}": w for i, (w, _) in enumerate(workers)}}
        s0 = client.snapshot()
        a = Sample.take(procs)
        m0 = [prometheus(url) for _, url in workers]
        time.sleep(p.measure_s)
        s1 = client.snapshot()
        z = Sample.take(procs)
        m1 = [prometheus(url) for _, url in workers]
        if profile_s > 0:
            # After the window, while the streams still generate (the margin of tokens_for).
            step["worker0_profile"] = _profile(b, workers[0][0], f"worker0-{n}", profile_s)
        final = client.final(timeout=3 * length_s + 60)
    finally:
        b.reg.stop(client.proc)
    win = window(a, z)
    secs = win["seconds"]
    per_worker = []
    for i, (x, y) in enumerate(zip(m0, m1, strict=True)):
        ev = y.get("tidemark_worker_events_total", 0) - x.get("tidemark_worker_events_total", 0)
        tx = (y.get("tidemark_worker_transactions_total", 0)
              - x.get("tidemark_worker_transactions_total", 0))
        cpu = win["processes"][f"worker{i}"]["cpu_s"]
        per_worker.append({
            "events_per_s": round(ev / secs, 1), "transactions_per_s": round(tx / secs, 1),
            "events_per_transaction": round(ev / tx, 1) if tx else None,
            "cpu_pct_of_core": win["processes"][f"worker{i}"]["cpu_pct_of_core"],
            "cpu_us_per_event": round(1e6 * cpu / ev, 1) if ev else None,
            "streams_running": y.get("tidemark_worker_streams_running"),
            "partitions": y.get("tidemark_worker_partitions")})
    written = sum(w["events_per_s"] for w in per_worker) * secs
    conns = n * followers
    results = int((final.get("events_by_type") or {}).get("result", 0))
    step.update(_delivery(s0, s1, secs, n, followers))
    step.update({
        "window_inside_generation": _tokens(s0) > 0 and int(
            (s1.get("events_by_type") or {}).get("result", 0)) == 0,
        "workers": per_worker,
        "transactions_per_s": round(sum(w["transactions_per_s"] for w in per_worker), 1),
        "events_written_per_s": round(written / secs, 1) if secs else 0,
        "cpu_us_per_event_written": _cpu_per_event(win, written),
        "window": win,
        "completion": {
            "connections": conns, "results_received": results,
            "ended_by_server": final["connections"]["ended_by_server"],
            "events_received": final["events"], "events_expected": conns * per_stream,
            "seq_gaps": final["seq_gaps"], "seq_duplicates": final["seq_duplicates"],
            "first_seq_mismatch": final["first_seq_mismatch"],
            "failed_connections": final["connections"]["failed"],
            "client_ended_by_itself": final.get("ended_by_itself"),
            "all_delivered": (results == conns and final["events"] == conns * per_stream
                              and final["seq_gaps"] == 0 and final["seq_duplicates"] == 0
                              and final["first_seq_mismatch"] == 0),
        },
    })
    return step


def _reference_step(b: Bench, p: Profile, gw: Gateway, ns: str, n: int) -> dict[str, Any]:
    followers = followers_for(n)
    rate = n * RATE
    step: dict[str, Any] = {"path": "hub only: not the user path", "setup": {
        "streams": n, "followers_per_stream": followers, "connections": n * followers,
        "events_per_s": rate, "payload_bytes": REF_PAYLOAD, "warmup_s": WARMUP_S,
        "measure_s": p.measure_s, "publisher": "bench.publisher (non-transactional, "
        "idempotent producer, linger 2 ms)", "cores": 2}}
    path, rows, _ = create_streams(b, ns, n, tag=f"wpref{n}", via="http", gateway=gw)
    urls = [events_url(gw, r["stream_id"]) for r in rows for _ in range(followers)]
    sw = Swarm(b.reg, b.client, f"wp-ref-{n}", urls, procs=1, duration=600,
               args=["-latency-from", "ts", "-dial-concurrency", "200"])
    try:
        sw.wait_dialed(timeout=120)
        shards = max(1, math.ceil(rate / p.rate_per_publisher))
        pubs = publishers(b, ns, path, b.workdir / f"seq-wpref{n}", rate=rate,
                          duration=WARMUP_S + p.measure_s + 1, payload=REF_PAYLOAD,
                          shards=shards)
        try:
            for pub in pubs:
                pub.wait_started()
            time.sleep(WARMUP_S)
            procs: dict[str, Proc | list[Proc]] = {
                "gateway": gw.proc, "kafka": b.broker, "clients": list(sw.procs),
                "publisher": [x.proc for x in pubs]}
            s0 = sw.snapshot()
            a = Sample.take(procs)
            time.sleep(p.measure_s)
            s1 = sw.snapshot()
            z = Sample.take(procs)
            pub_results = [pub.result(timeout=p.measure_s + 60) for pub in pubs]
        finally:
            for pub in pubs:
                b.reg.stop(pub.proc)
    finally:
        final = sw.finish()
    win = window(a, z)
    step.update(_delivery(s0, s1, win["seconds"], n, followers))
    written = rate * win["seconds"]
    step.update({"publisher": pub_results, "window": win,
                 "cpu_us_per_event_written": _cpu_per_event(win, written),
                 "client_totals": {k: final.get(k) for k in (
                     "events", "seq_gaps", "seq_duplicates", "first_seq_mismatch")}})
    return step


def worker_path(b: Bench, p: Profile) -> dict[str, Any]:
    steps = STEPS["full" if p.name == "full" else "short"]
    max_jobs = 2 * max(steps)
    worker_settings = {"TIDEMARK_WORKER_MAX_JOBS": str(max_jobs)}
    res: dict[str, Any] = {"setup": {
        "what": "generated demo streams created through POST /v1/streams, N concurrent x "
                f"{RATE:g} tokens/s, latency from the envelope's ts (set by the worker) to "
                "receipt; reference: the hub only, fed by the non-transactional bench "
                "publisher at the same total rate to the same number of streams",
        "steps": list(steps), "tokens_per_second_per_stream": RATE, "workers": WORKERS,
        "gateways": 1, "worker_settings": worker_settings, "warmup_s": WARMUP_S,
        "measure_s": p.measure_s, "cores": 2,
        "client": "bench/sseclient (Go), -latency-from ts"}, "reference": [], "steps": []}
    ref_ns = b.namespace("wr")
    with b.reg.scope():
        gw = start_gateway(b, "gateway-wpref", ref_ns, TIDEMARK_HEARTBEAT_SECONDS="5")
        for n in steps:
            try:
                res["reference"].append(_reference_step(b, p, gw, ref_ns, n))
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                res["reference"].append({"path": "hub only: not the user path",
                                         "setup": {"streams": n},
                                         "error": f"{type(exc).__name__}: {exc}"[-1500:]})
    ns = b.namespace("w")
    with b.reg.scope():
        gw = start_gateway(b, "gateway-wp", ns, TIDEMARK_HEARTBEAT_SECONDS="5")
        workers = [_start_worker(b, f"worker{i}", ns, worker_settings) for i in range(WORKERS)]

        def balanced() -> bool:
            got = [prometheus(url).get("tidemark_worker_partitions", 0) for _, url in workers]
            return all(got) and sum(got) >= 12
        workers[0][0].wait_for("jobs partitions shared by both workers", balanced, 90)
        for n in steps:
            try:
                step = _generated_step(b, p, gw, workers, n, PROFILE_S if (
                    p.profile_s > 0 and n == max(steps)) else 0.0)
            except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                step = {"path": "worker", "setup": {"streams": n},
                        "error": f"{type(exc).__name__}: {exc}"[-1500:]}
            res["steps"].append(step)
            if step.get("error") or step.get("delivered_share", 0) < 0.5:
                break  # saturated: larger steps only queue up
    ok = [s for s in res["steps"] if not s.get("error")
          and (s["latency_ms"].get("p99_ms") or 1e9) < 100
          and s.get("delivered_share", 0) >= 0.97 and s["completion"]["all_delivered"]]
    res["most_streams_p99_under_100ms_all_delivered"] = max(
        (s["setup"]["streams"] for s in ok), default=None)
    return res
