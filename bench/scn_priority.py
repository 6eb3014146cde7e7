"""Scenario ``priority``: premium users' first events while free users saturate the workers.

Real processes: the broker, two workers (``tidemark worker``, ``MAX_JOBS`` slots each, the
default priority reserve of 10 %), and one gateway with ``TIDEMARK_AUTH=jwt`` (a secret made
for the run; no Redis, so no per-user limits). Free users' tokens carry no ``tier`` (the
default tier, ``free``); premium users' say ``tier: premium`` (``priority: true`` in the
default tier table). The reference run, on fresh processes in a new namespace, is the same
with priority off: the premium users' tokens carry no tier either (every user is free).

The client (this module run as ``python -m bench.scn_priority``: asyncio + aiohttp, one
process) first fills every worker slot that free jobs may take and queues a backlog of
free jobs behind them; then, for ``WINDOW_S``, creates free streams at ``FREE_RATE``/s
(more than the workers finish, so the backlog grows) and premium streams at
``PREMIUM_RATE``/s, both on a fixed schedule. Each stream created in the window is
followed until its first event after ``queued`` (the first the worker wrote), then the
connection is closed. Per tier: *first event* = from just before the create POST to that
event's arrival at the client; *enqueue → worker* = that event's envelope ``ts`` (the
worker's clock) minus the ``queued`` event's ``ts`` (the gateway's clock, just before it
wrote the stream's first event and its job; same machine). Streams whose first generated
event has not come ``DRAIN_S`` after the window count as not started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import sys
import time
from typing import Any

from bench.cluster import Bench, prometheus, start_gateway
from bench.markdown import fmt, table
from bench.procs import PYTHON, Proc, Sample, base_env, window

WORKERS = 2
MAX_JOBS = 30
#: Free streams hold their slot about 10 s: 50 tokens at 5 tokens/s.
FREE_OPTIONS = {"tokens": 50, "tokens_per_second": 5}
#: Premium streams are short answers: 10 tokens at 20 tokens/s.
PREMIUM_OPTIONS = {"tokens": 10, "tokens_per_second": 20}
#: Free jobs queued (beyond the slots free jobs may take) before the window.
BACKLOG = 60
FREE_RATE = 6.0
PREMIUM_RATE = 2.0
WINDOW_S = 60.0
DRAIN_S = 90.0
TARGET_P99_MS = 200.0


def _free_slots(max_jobs: int, share: float) -> int:
    """Slots a worker lets free jobs take (``workers.runner.reserved_slots``; the bench
    does not import the servers' packages)."""
    reserved = 0 if share <= 0 or max_jobs <= 1 else min(max_jobs - 1,
                                                           math.ceil(share * max_jobs - 1e-9))
    return max_jobs - reserved


# The client ---------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))], 1)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50_ms": _pct(values, 0.5), "p95_ms": _pct(values, 0.95),
            "p99_ms": _pct(values, 0.99), "max_ms": _pct(values, 1.0)}


async def _create(http: Any, base: str, options: dict[str, Any], tag: str) -> str:
    body = {"query": f"bench priority {tag}", "generator": "demo", "options": options}
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        if resp.status != 201:
            raise RuntimeError(f"create answered {resp.status}: {await resp.text()}")
        reply = await resp.json()
    return str(reply["stream_id"])


async def _first_generated(http: Any, base: str, sid: str) -> tuple[float, int, int]:
    """Follow ``sid`` to its first event after seq 0; (arrival, ts of seq 0, ts of it)."""
    ts0 = -1
    async with http.get(f"{base}/v1/streams/{sid}/events",
                        headers={"Accept": "text/event-stream"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"events answered {resp.status}")
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line.startswith("data:"):
                continue
            env = json.loads(line[5:])
            if env["seq"] == 0:
                ts0 = int(env["ts"])
                continue
            return time.monotonic(), ts0, int(env["ts"])
    raise RuntimeError("the response ended before a generated event")


async def _timed(http: Any, base: str, options: dict[str, Any], tag: str,
                 out: dict[str, list[float]]) -> None:
    t0 = time.monotonic()
    try:
        sid = await _create(http, base, options, tag)
        arrived, ts0, ts1 = await _first_generated(http, base, sid)
    except (OSError, RuntimeError, ValueError) as exc:
        out.setdefault("errors", []).append(0.0)
        sys.stderr.write(f"{tag}: {exc}\n")
        return
    out["first_event_ms"].append(1000 * (arrived - t0))
    out["enqueue_to_worker_ms"].append(float(ts1 - ts0))


async def client(base: str, tokens: dict[str, str], *, saturate: int, window_s: float,
                 free_rate: float, premium_rate: float, drain_s: float) -> dict[str, Any]:
    import aiohttp

    tiers: dict[str, dict[str, list[float]]] = {
        t: {"first_event_ms": [], "enqueue_to_worker_ms": []} for t in ("free", "premium")}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {tier: await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None),
            headers={"Authorization": f"Bearer {tokens[tier]}"})) for tier in tokens}
        sem = asyncio.Semaphore(10)

        async def fill(i: int) -> None:
            async with sem:
                await _create(sessions["free"], base, FREE_OPTIONS, f"fill {i}")
        # The go (SIGUSR1) comes once the bench has seen that the workers are full.
        go = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
        await asyncio.gather(*(fill(i) for i in range(saturate)))
        print(json.dumps({"kind": "saturated", "created": saturate}), flush=True)
        await go.wait()
        print(json.dumps({"kind": "window_started"}), flush=True)
        tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        plan = sorted([(i / free_rate, "free") for i in range(int(window_s * free_rate))]
                      + [(i / premium_rate + 0.25, "premium")
                         for i in range(int(window_s * premium_rate))])
        for i, (at, tier) in enumerate(plan):
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            options = PREMIUM_OPTIONS if tier == "premium" else FREE_OPTIONS
            tasks.append(asyncio.create_task(_timed(sessions[tier], base, options,
                                                    f"{tier} {i}", tiers[tier])))
        print(json.dumps({"kind": "window_ended", "created": len(plan)}), flush=True)
        _, pending = await asyncio.wait(tasks, timeout=drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    counts = {"free": int(window_s * free_rate), "premium": int(window_s * premium_rate)}
    return {t: {"created": counts[t],
                "started": len(v["first_event_ms"]),
                "errors": len(v.get("errors", [])),
                "first_event_ms": _summary(v["first_event_ms"]),
                "enqueue_to_worker_ms": _summary(v["enqueue_to_worker_ms"])}
            for t, v in tiers.items()}


# The scenario -------------------------------------------------------------------------


def _worker(b: Bench, name: str, ns: str) -> tuple[Proc, str]:
    proc = b.reg.start(name, [PYTHON, "-m", "bench.serve", "worker"],
                       b.env(ns, TIDEMARK_WORKER_MAX_JOBS=str(MAX_JOBS)))
    line = proc.wait_line("Worker started", 90)
    return proc, line.rsplit(" ", 1)[1].removesuffix("/metrics")


def _token(secret: str, sub: str, tier: str | None) -> str:
    from gateway.auth import mint_token

    return mint_token(secret, sub=sub, tenant="bench", scope="streams:create streams:read",
                      ttl_s=3600, tier=tier)


def _metric(url: str, name: str) -> float:
    return prometheus(url).get(name, 0.0)


def _run(b: Bench, tag: str, *, priority: bool) -> dict[str, Any]:
    ns = b.namespace(tag)
    free_slots = _free_slots(MAX_JOBS, 0.1)
    saturate = WORKERS * free_slots + BACKLOG
    res: dict[str, Any] = {"priority": priority}
    secret = secrets.token_hex(32)
    tokens = {"BENCH_FREE_TOKEN": _token(secret, "free-user", None),
              "BENCH_PREMIUM_TOKEN": _token(secret, "premium-user",
                                            "premium" if priority else None)}
    with b.reg.scope():
        gw = start_gateway(b, f"gateway-{tag}", ns, TIDEMARK_AUTH="jwt",
                           TIDEMARK_JWT_SECRET=secret, TIDEMARK_HEARTBEAT_SECONDS="5")
        workers = [_worker(b, f"worker{i}-{tag}", ns) for i in range(WORKERS)]
        workers[0][0].wait_for("jobs partitions shared by both workers", lambda: all(
            _metric(url, "tidemark_worker_partitions") for _, url in workers), 90)
        cl = b.reg.start(f"priority-client-{tag}", [
            PYTHON, "-m", "bench.scn_priority", "--gateway", gw.url,
            "--saturate", str(saturate), "--window", str(WINDOW_S),
            "--free-rate", str(FREE_RATE), "--premium-rate", str(PREMIUM_RATE),
            "--drain", str(DRAIN_S)], base_env(**tokens))
        cl.wait_for("the saturating free streams created",
                    lambda: any(x.get("kind") == "saturated" for x in cl.json_lines()), 120)

        def full() -> bool:
            m = [prometheus(url) for _, url in workers]
            return (sum(x.get("tidemark_worker_streams_running", 0) for x in m)
                    >= WORKERS * free_slots
                    and sum(x.get('tidemark_worker_jobs_waiting{class="other"}', 0)
                            for x in m) > 0)
        cl.wait_for("every free slot busy and free jobs waiting", full, 60)
        procs: dict[str, Proc | list[Proc]] = {
            "gateway": gw.proc,
            "kafka": b.broker, "client": cl,
            **{f"worker{i}": w for i, (w, _) in enumerate(workers)}}
        m0 = [prometheus(url) for _, url in workers]
        a = Sample.take(procs)
        cl.signal(signal.SIGUSR1)
        cl.wait_for("the window's end", lambda: any(
            x.get("kind") == "window_ended" for x in cl.json_lines()), WINDOW_S + 60)
        z = Sample.take(procs)
        m1 = [prometheus(url) for _, url in workers]
        cl.wait_exit(DRAIN_S + 60)
        finals = [x for x in cl.json_lines() if x.get("kind") == "final"]
        if not finals:
            raise RuntimeError(f"the priority client gave no result:\n{cl.logs()}")
        res.update(finals[-1]["tiers"])
    win = window(a, z)
    secs = win["seconds"]

    def rate(name: str) -> float:
        return round(sum(y.get(name, 0) - x.get(name, 0)
                         for x, y in zip(m0, m1, strict=True)) / secs, 2) if secs else 0.0
    started = "tidemark_worker_jobs_started_total"
    res["throughput"] = {
        "jobs_started_per_s": {
            "priority topic": rate(started + '{class="priority"}'),
            "jobs topic": rate(started + '{class="other"}')},
        "events_written_per_s": rate("tidemark_worker_events_total"),
        "free_jobs_waiting_at_end": sum(
            y.get('tidemark_worker_jobs_waiting{class="other"}', 0) for y in m1)}
    res["window"] = win
    return res


def priority(b: Bench) -> dict[str, Any]:
    res: dict[str, Any] = {"setup": {
        "what": "free users keep every worker slot free jobs may take busy, with a growing "
                "backlog of queued free jobs; premium users create short streams at a steady "
                "rate; first event = create POST -> first event the worker wrote, at the "
                "client; enqueue -> worker = that event's ts - the queued event's ts",
        "workers": WORKERS, "max_jobs_per_worker": MAX_JOBS, "priority_reserve": 0.1,
        "free_slots_per_worker": _free_slots(MAX_JOBS, 0.1),
        "saturating_free_streams": WORKERS * _free_slots(MAX_JOBS, 0.1) + BACKLOG,
        "free_stream": FREE_OPTIONS, "premium_stream": PREMIUM_OPTIONS,
        "free_rate_per_s": FREE_RATE, "premium_rate_per_s": PREMIUM_RATE,
        "window_s": WINDOW_S, "drain_s": DRAIN_S,
        "gateways": "1 (TIDEMARK_AUTH=jwt; free users' tokens carry no tier, premium "
                    "users' tier premium; no Redis: no per-user limits)",
        "client": "python -m bench.scn_priority (asyncio + aiohttp, 1 process; follows each "
                  "stream to its first generated event only)",
        "reference": "the same on fresh processes with priority off (the premium users' "
                     "tokens carry no tier: every user is free)", "cores": 2,
        "target_premium_p99_ms": TARGET_P99_MS}}
    for key, tag, on in (("reference", "pr0", False), ("priority", "pr1", True)):
        try:
            res[key] = _run(b, tag, priority=on)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            res[key] = {"priority": on, "error": f"{type(exc).__name__}: {exc}"[-1500:]}
    p99 = res["priority"].get("premium", {}).get("first_event_ms", {}).get("p99_ms")
    ref = res["reference"].get("premium", {}).get("first_event_ms", {}).get("p99_ms")
    res["premium_p99_ms"] = p99
    on = res["priority"].get("premium", {})
    res["premium_p99_under_target"] = (p99 is not None and p99 < TARGET_P99_MS
                                       and on.get("started") == on.get("created"))
    res["premium_p99_ratio_to_reference"] = round(p99 / ref, 4) if p99 and ref else None
    return res


def render(res: dict[str, Any]) -> list[str]:
    """The scenario's Markdown table."""
    setup = res.get("setup", {})
    lines = [f"### Priority: premium first events on workers saturated by free users "
             f"({setup.get('workers')} workers x {setup.get('max_jobs_per_worker')} slots, "
             f"reserve {setup.get('priority_reserve')}; free {setup.get('free_rate_per_s')}/s, "
             f"premium {setup.get('premium_rate_per_s')}/s for {setup.get('window_s')} s)", "",
             f"Client: {setup.get('client')}. Gateways: {setup.get('gateways')}. "
             "CPU over the window.", ""]
    if res.get("error"):
        lines += [f"**error:** `{res['error'][-300:]}`", ""]
    rows = []
    for run in ("reference", "priority"):
        r = res.get(run) or {}
        if r.get("error"):
            rows.append([run, "error", "-", "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        w = r.get("window", {}).get("processes", {})
        cpu = ", ".join(f"{k} {v['cpu_pct_of_core']:.0f}%" for k, v in w.items())
        thr = r.get("throughput", {})
        jobs = thr.get("jobs_started_per_s", {})
        for tier in ("premium", "free"):
            t = r.get(tier) or {}
            fe, ew = t.get("first_event_ms") or {}, t.get("enqueue_to_worker_ms") or {}
            rows.append([
                "priority off (all free)" if run == "reference" else "priority on", tier,
                f"{fmt(t.get('started'))}/{fmt(t.get('created'))}",
                fmt(fe.get("p50_ms")), fmt(fe.get("p95_ms")), fmt(fe.get("p99_ms")),
                fmt(fe.get("max_ms")), fmt(ew.get("p50_ms")), fmt(ew.get("p99_ms")),
                (f"{fmt(jobs.get('priority topic'), 2)} / {fmt(jobs.get('jobs topic'), 2)}; "
                 f"{fmt(thr.get('events_written_per_s'))} events/s") if tier == "premium"
                else "", cpu if tier == "premium" else ""])
    lines += table(["run", "tier", "started/created", "first event p50 ms", "p95", "p99",
                    "max", "enqueue→worker p50 ms", "p99",
                    "jobs started/s (priority / jobs topic); events written", "CPU (% of a core)"],
                   rows)
    lines += ["", f"Premium first-event p99: **{fmt(res.get('premium_p99_ms'))} ms** "
              f"(target < {fmt(TARGET_P99_MS, 0)} ms: "
              f"{'met' if res.get('premium_p99_under_target') else 'not met'}); ratio to the "
              f"reference's premium p99: {fmt(res.get('premium_p99_ratio_to_reference'), 4)}.",
              ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scn_priority",
                                 description="the priority scenario's client")
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--saturate", type=int, required=True)
    ap.add_argument("--window", type=float, default=WINDOW_S)
    ap.add_argument("--free-rate", type=float, default=FREE_RATE)
    ap.add_argument("--premium-rate", type=float, default=PREMIUM_RATE)
    ap.add_argument("--drain", type=float, default=DRAIN_S)
    args = ap.parse_args(argv)
    # The tokens come in the environment (not on the command line, which ps shows).
    tokens = {"free": os.environ["BENCH_FREE_TOKEN"],
              "premium": os.environ["BENCH_PREMIUM_TOKEN"]}
    tiers = asyncio.run(client(args.gateway, tokens, saturate=args.saturate,
                               window_s=args.window, free_rate=args.free_rate,
                               premium_rate=args.premium_rate, drain_s=args.drain))
    print(json.dumps({"kind": "final", "tiers": tiers}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
