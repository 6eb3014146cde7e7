"""Scenario ``batch``: 100 queries as one batch against 100 separate requests.

Real processes on fresh namespaces per run: the broker, one worker (``tidemark worker``),
one gateway (``TIDEMARK_AUTH=none``, no Redis: no limits; ``TIDEMARK_BATCH_MAX_CONCURRENCY``
= the query count, so a batch runs all its children at once, as the separate requests
do). Every query is a demo answer of ``TOKENS`` tokens at ``RATE`` tokens/s.

Runs (each the client, this module run as ``python -m bench.scn_batch``: asyncio +
aiohttp, one process):

- ``separate``: ``QUERIES`` ``POST /v1/streams`` at once, each followed over SSE to its
  terminal event;
- ``batch``: one ``POST /v1/batches`` with the same ``QUERIES`` distinct queries
  (parallel), its batch stream followed to its ``result``;
- ``batch_duplicates``: one batch of ``QUERIES`` queries of which only ``DISTINCT`` are
  distinct (each asked ``QUERIES / DISTINCT`` times, in different case and spacing), which
  the batch generates once each;
- ``separate_duplicates``: the same ``QUERIES`` queries as separate requests (each is
  generated: separate requests share nothing);
- ``batch_similar`` and ``separate_similar``: with the similar-query cache on
  (``TIDEMARK_CACHE=on`` for worker and gateway), ``QUERIES`` / 2 questions of
  ``bench/data/paraphrases.json`` and their paraphrases (other words, same meaning),
  originals first. The batch waits for an original and replays its answer from the log to
  each paraphrase within the cache's threshold; separate requests all sent at once find
  nothing completed in the cache, so each is generated. Answers replayed are counted at
  the client (``"hit": true`` in a stream's metadata).

Total time: from just before the first POST to the last terminal event at the client.
CPU: seconds of each server process from the client's start to its exit (worker,
gateway, broker); the client reports its own (``getrusage``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.cluster import Bench, start_gateway
from bench.markdown import fmt, table
from bench.procs import PYTHON, Proc, Sample, base_env, window
from bench.profiling import find_py_spy, record

QUERIES = 100
DISTINCT = 20
#: A real answer is hundreds of tokens; 120 at 60/s keeps each answer 2 s long.
TOKENS = 120
RATE = 60.0
OPTIONS = {"tokens": TOKENS, "tokens_per_second": RATE}
#: The roadmap's target: the batch at least this much better (total time, worker CPU).
TARGET_GAIN = 0.8
#: Seconds the worker and gateway are sampled idle before each run (their fixed cost).
IDLE_S = 2.0
RUNS = ("separate", "batch", "separate_duplicates", "batch_duplicates", "separate_similar",
        "batch_similar")
PARAPHRASES = Path(__file__).resolve().parent / "data" / "paraphrases.json"


def queries_for(run: str, n: int = QUERIES, distinct: int = DISTINCT) -> list[str]:
    """The run's queries: ``n`` distinct ones, or ``n`` with ``distinct`` different ones
    (a repeat differs in case and spacing only: an exact duplicate once normalised); for
    the ``similar`` runs, ``n / 2`` questions and then their paraphrases."""
    if run.endswith("similar"):
        pairs = json.loads(PARAPHRASES.read_text())["pairs"][:n // 2]
        return [a for a, _ in pairs] + [b for _, b in pairs]
    if not run.endswith("duplicates"):
        return [f"bench batch question number {i}" for i in range(n)]
    out = []
    for i in range(n):
        q = f"bench batch question number {i % distinct}"
        out.append(q.upper() if (i // distinct) % 2 else q.replace(" ", "  "))
    return out


# The client ---------------------------------------------------------------------------


async def _follow(http: Any, url: str) -> tuple[str, int]:
    """Read an SSE stream to its terminal event: its type, and how many answers in it
    were replays of the cache (``"hit": true`` in a metadata event; a batch stream
    forwards its children's)."""
    hits = 0
    async with http.get(url, headers={"Accept": "text/event-stream"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"events answered {resp.status}")
        async for raw in resp.content:
            line = str(raw.decode()).rstrip("\r\n")
            if line.startswith("data:") and '"hit":true' in line:
                hits += 1
            if line.startswith("event:") and line[6:].strip() in (
                    "result", "error", "cancelled"):
                return line[6:].strip(), hits
    raise RuntimeError("the response ended before a terminal event")


async def client(base: str, run: str, n: int, distinct: int) -> dict[str, Any]:
    import aiohttp

    queries = queries_for(run, n, distinct)
    ends: list[str] = []
    hits = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=600)) as http:
        t0 = time.monotonic()
        if run.startswith("batch"):
            body = {"queries": queries, "options": OPTIONS, "strategy": {"type": "parallel"},
                    "aggregation": {"combineResults": True, "summaryType": "highlights"}}
            async with http.post(f"{base}/v1/batches", json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"batch answered {resp.status}: {await resp.text()}")
                reply = await resp.json()
            created = time.monotonic()
            end, hits = await _follow(http, base + reply["events_url"])
            ends.append(end)
            streams = 1 + int(reply["generated"])
        else:
            async def one(query: str) -> tuple[float, tuple[str, int]]:
                body = {"query": query, "generator": "demo", "options": OPTIONS}
                async with http.post(f"{base}/v1/streams", json=body) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"create answered {resp.status}")
                    reply = await resp.json()
                made = time.monotonic()
                return made, await _follow(http, base + reply["events_url"])
            got = await asyncio.gather(*(one(q) for q in queries))
            created = max(m for m, _ in got)
            ends.extend(e for _, (e, _) in got)
            hits = sum(h for _, (_, h) in got)
            streams = len(queries)
        total = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"run": run, "queries": len(queries), "streams_made": streams,
            "answers_replayed": hits,
            "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "creates_s": round(created - t0, 3), "total_s": round(total, 3),
            "ends": {e: ends.count(e) for e in sorted(set(ends))}}


# The scenario -------------------------------------------------------------------------


def _run(b: Bench, run: str) -> dict[str, Any]:
    ns = b.namespace(f"ba{RUNS.index(run)}")
    cache = {"TIDEMARK_CACHE": "on"} if run.endswith("similar") else {}
    with b.reg.scope():
        gw = start_gateway(b, f"gateway-{run}", ns,
                           TIDEMARK_BATCH_MAX_CONCURRENCY=str(QUERIES), **cache)
        worker = b.reg.start(f"worker-{run}", [PYTHON, "-m", "bench.serve", "worker"],
                             b.env(ns, **cache))
        worker.wait_line("Worker started", 90)
        time.sleep(3)  # the worker's group join and claims settle before the clock starts
        procs_idle: dict[str, Proc | list[Proc]] = {"worker": worker, "gateway": gw.proc}
        i0 = Sample.take(procs_idle)
        time.sleep(IDLE_S)  # what the worker and gateway cost with nothing to do
        idle = window(i0, Sample.take(procs_idle))
        cl = b.reg.start(f"batch-client-{run}", [
            PYTHON, "-m", "bench.scn_batch", "--gateway", gw.url, "--run", run,
            "--queries", str(QUERIES), "--distinct", str(DISTINCT)], base_env())
        procs: dict[str, Proc | list[Proc]] = {"worker": worker, "gateway": gw.proc,
                                               "kafka": b.broker}
        a = Sample.take(procs)
        spy = _spy(worker, run)
        cl.wait_exit(300)
        z = Sample.take(procs)
        profile = spy.result() if spy is not None else None
        finals = [x for x in cl.json_lines() if x.get("kind") == "final"]
        if not finals:
            raise RuntimeError(f"the batch client gave no result:\n{cl.logs()}")
    out = {**finals[-1]["result"], "window": window(a, z),
           "idle_cpu_per_s": {k: round(v["cpu_s"] / idle["seconds"], 4)
                              for k, v in idle["processes"].items()}}
    if profile is not None:
        out["worker_profile"] = profile
    return out


def _spy(worker: Proc, run: str) -> Future[dict[str, Any]] | None:
    """With ``BENCH_BATCH_PROFILE=<s>``: py-spy samples of the worker for its first ``s``
    seconds of the run (``bench.profiling``), in a thread beside the client."""
    seconds = float(os.environ.get("BENCH_BATCH_PROFILE") or 0)
    spy = find_py_spy() if seconds > 0 else None
    if spy is None:
        return None
    out = Path(tempfile.gettempdir()) / f"tidemark-batch-{run}-{worker.pid}.spy"
    return ThreadPoolExecutor(1).submit(record, spy, worker.pid, out, seconds=seconds)


def _gain(res: dict[str, Any], ref: str, run: str) -> dict[str, Any]:
    r, x = res.get(ref) or {}, res.get(run) or {}
    if r.get("error") or x.get("error") or not r or not x:
        return {}

    def cpu(d: dict[str, Any]) -> float:
        return float(d["window"]["processes"]["worker"]["cpu_s"])
    # The batch generates streams_made - 1 answers (its own stream is the one more), the
    # separate requests one per query: what generating fewer can save at most.
    generated = int(x["streams_made"]) - 1 - int(x.get("answers_replayed") or 0)
    return {"total_time": round(1 - x["total_s"] / r["total_s"], 4),
            "worker_cpu": round(1 - cpu(x) / cpu(r), 4) if cpu(r) else None,
            "generated": generated, "queries": int(x["queries"]),
            "ceiling": round(1 - generated / int(x["queries"]), 4)}


def batch(b: Bench) -> dict[str, Any]:
    res: dict[str, Any] = {"setup": {
        "what": f"{QUERIES} queries as one POST /v1/batches (followed on the batch stream "
                f"to its result) against {QUERIES} POST /v1/streams followed to their ends; "
                f"then {QUERIES} queries of which {DISTINCT} distinct, both ways; then "
                f"{QUERIES // 2} questions and their paraphrases with the cache on, both ways",
        "queries": QUERIES, "distinct_in_duplicates_runs": DISTINCT, "stream": OPTIONS,
        "workers": 1, "gateways": "1 (TIDEMARK_AUTH=none, no Redis)",
        "batch_concurrency": QUERIES,
        "client": "python -m bench.scn_batch (asyncio + aiohttp, 1 process)",
        "cores": 2, "target_gain": TARGET_GAIN}}
    # ``BENCH_BATCH_RUNS=batch,batch_similar``: only those (a profile of one, say).
    chosen = [r for r in os.environ.get("BENCH_BATCH_RUNS", "").split(",") if r] or RUNS
    for run in RUNS:
        if run not in chosen:
            continue
        try:
            res[run] = _run(b, run)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            res[run] = {"error": f"{type(exc).__name__}: {exc}"[-1500:]}
    res["gain_distinct"] = _gain(res, "separate", "batch")
    res["gain_duplicates"] = _gain(res, "separate_duplicates", "batch_duplicates")
    res["gain_similar"] = _gain(res, "separate_similar", "batch_similar")
    return res


def _idle_share(r: dict[str, Any]) -> float | None:
    """What the worker would have used idle over the run's window: its fixed cost."""
    rate = (r.get("idle_cpu_per_s") or {}).get("worker")
    secs = (r.get("window") or {}).get("seconds")
    return None if rate is None or secs is None else rate * secs


def render(res: dict[str, Any]) -> list[str]:
    setup = res.get("setup", {})
    lines = [f"### Batch: {setup.get('queries')} queries as one batch vs separate requests "
             f"(demo answers of {TOKENS} tokens at {RATE:g}/s; 1 worker, 1 gateway)", "",
             f"Client: {setup.get('client')}. CPU over the client's whole run.", ""]
    rows = []
    for run in RUNS:
        r = res.get(run) or {}
        if r.get("error"):
            rows.append([run, "error", "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        p = r.get("window", {}).get("processes", {})
        rows.append([run, fmt(r.get("queries")), fmt(r.get("streams_made")),
                     fmt(r.get("answers_replayed")),
                     fmt(r.get("total_s"), 2), fmt(p.get("worker", {}).get("cpu_s"), 2),
                     fmt(p.get("gateway", {}).get("cpu_s"), 2),
                     fmt(p.get("kafka", {}).get("cpu_s"), 2),
                     fmt(r.get("client_cpu_s"), 2), fmt(_idle_share(r), 2)])
    lines += table(["run", "queries", "streams made", "answers replayed", "total s", "worker CPU s",
                    "gateway CPU s", "kafka CPU s", "client CPU s",
                    "worker idle CPU s (same window)"], rows)
    for key, label in (("gain_distinct", "distinct queries"),
                       ("gain_duplicates", "with duplicates"),
                       ("gain_similar", "with paraphrases (cache on)")):
        g = res.get(key) or {}
        lines += ["", f"Batch against separate, {label}: total time "
                  f"{fmt(100 * g['total_time'], 1) if g else '-'} % better, worker CPU "
                  f"{fmt(100 * g['worker_cpu'], 1) if g.get('worker_cpu') is not None else '-'}"
                  f" % better (target {TARGET_GAIN:.0%}"
                  + (f"; generating {g['generated']} of {g['queries']} answers, it can save "
                     f"at most {fmt(100 * g['ceiling'], 1)} % of the generation work)."
                     if g.get("queries") else ").")]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scn_batch",
                                 description="the batch scenario's client")
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--run", choices=RUNS, required=True)
    ap.add_argument("--queries", type=int, default=QUERIES)
    ap.add_argument("--distinct", type=int, default=DISTINCT)
    args = ap.parse_args(argv)
    result = asyncio.run(client(args.gateway, args.run, args.queries, args.distinct))
    print(json.dumps({"kind": "final", "result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
