"""Scenario ``warmup``: predictive warm-up, its accuracy and the first-event latency it saves.

**Accuracy (offline, no processes).** The workload ``bench/data/warmup_sessions.jsonl``
(``bench/warmup_workload.py``: 3 tenants, 14 days of sessions, 6 % off-script detours)
is fed in time order to the predictor the worker runs (``eventlog.predict``, the
worker's defaults: 30 min sessions, ``TIDEMARK_WARMUP_MIN_SHARE`` 0.2). The first 10
days train it; over the last 4 it keeps learning, and each follow-up (a query with an
earlier one of its user's session) counts as predicted when it is among the top-k
predictions made right after that earlier query: what the warm-up would have had
pre-generated. Reported for k = 1, 2 (``TIDEMARK_WARMUP_TOP``'s default) and 3, overall,
per tenant, and for the scripted follow-ups alone.

**Latency (real path).** Broker, one gateway (JWT auth, a token per user), one worker
with ``TIDEMARK_CACHE=on``; the same sessions twice, in fresh namespaces: with
``TIDEMARK_WARMUP=on`` and without. History: the training days' sessions of one tenant
as jobs (created through the gateway with ``cache.use: false``, so nothing of theirs is
cached; the worker is started after them, so it learns them from the jobs topics).
Then ``LIVE_SESSIONS`` test-day sessions of that tenant, one at a time: each query is
created and read to its end (demo answers of ``TOKENS`` tokens at ``RATE``/s, the first
after ``FIRST_TOKEN_MS``), with
``THINK_S`` after each of a session's queries (a user reading). Reported: first-event and
first-token latency of the follow-ups (from before the create POST to seq 1 and the
first ``partial_result``), cache hits among them, and the warm-up's streams.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from bench.cluster import Bench, prometheus, start_gateway
from bench.procs import PYTHON, Sample, window
from bench.scn_cache import ask
from bench.warmup_workload import DAY_MS, OUT, load
from eventlog.cache import normalise
from eventlog.predict import PredictorLimits, QueryPredictor

TRAIN_DAYS = 10
MIN_SHARE = 0.2
KS = (1, 2, 3)
TENANT = "acme"
LIVE_SESSIONS = 20
TOKENS = 20
RATE = 50.0
#: The demo's time to first token: what a model takes before it answers (a hosted chat
#: model's is often 0.5 to 1 s), and what a cache hit does not wait for.
FIRST_TOKEN_MS = 800
THINK_S = 1.0
SECRET = "tidemark-bench-warmup-secret-0123456789abcdef"


def accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    gap = PredictorLimits().session_gap_ms
    out: dict[str, Any] = {}
    for k in KS:
        p = QueryPredictor()
        last: dict[tuple[str, str], tuple[int, set[str], bool]] = {}
        hits: dict[str, list[bool]] = defaultdict(list)
        scripted: list[bool] = []
        for row in rows:
            key = (row["tenant"], row["user"])
            norm = normalise(row["query"])
            test = row["ts"] >= TRAIN_DAYS * DAY_MS
            prev = last.get(key)
            if test and prev is not None and 0 <= row["ts"] - prev[0] <= gap:
                hit = norm in prev[1]
                hits[row["tenant"]].append(hit)
                if row["flow"] >= 0 and prev[2]:
                    scripted.append(hit)
            p.observe(row["tenant"], row["user"], row["query"], row["ts"])
            made = {x.norm for x in p.predict(row["tenant"], row["query"], row["ts"], k,
                                              min_share=MIN_SHARE)}
            last[key] = (row["ts"], made, row["flow"] >= 0)
        every = [h for v in hits.values() for h in v]
        out[f"k{k}"] = {
            "follow_ups": len(every), "accuracy": round(sum(every) / len(every), 4),
            "per_tenant": {t: round(sum(v) / len(v), 4) for t, v in sorted(hits.items())},
            "scripted_accuracy": round(sum(scripted) / len(scripted), 4)}
    return out


def _sessions(rows: list[dict[str, Any]], *, test: bool) -> list[list[dict[str, Any]]]:
    """The tenant's sessions (a user's queries within the session gap), in time order."""
    gap = PredictorLimits().session_gap_ms
    open_: dict[str, list[dict[str, Any]]] = {}
    out: list[list[dict[str, Any]]] = []
    for row in rows:
        if row["tenant"] != TENANT or (row["ts"] >= TRAIN_DAYS * DAY_MS) != test:
            continue
        current = open_.get(row["user"])
        if current is None or row["ts"] - current[-1]["ts"] > gap:
            current = open_[row["user"]] = []
            out.append(current)
        current.append(row)
    return out


async def _ask(http: Any, base: str, token: str, query: str, *, cache: bool = True
               ) -> dict[str, Any]:
    return await ask(http, base, query, headers={"Authorization": f"Bearer {token}"},
                     use_cache=cache, options={"tokens": TOKENS, "tokens_per_second": RATE,
                                               "first_token_ms": FIRST_TOKEN_MS})


def _pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None


def _token(user: str) -> str:
    from gateway.auth import mint_token

    return mint_token(SECRET, sub=user, tenant=TENANT, scope="streams:create streams:read",
                      ttl_s=7200)


async def _history(base: str, history: list[list[dict[str, Any]]]) -> None:
    """The training sessions as jobs, generated, the cache opted out."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for session in history:
            for row in session:
                await _ask(http, base, _token(row["user"]), row["query"], cache=False)


async def _live(base: str, live: list[list[dict[str, Any]]], worker_metrics: str
                ) -> dict[str, Any]:
    import aiohttp

    follow: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        for session in live:
            for i, row in enumerate(session):
                got = await _ask(http, base, _token(row["user"] + "-live"), row["query"])
                if i:
                    follow.append(got)
                await asyncio.sleep(THINK_S)
    hits = [f for f in follow if f["cache"]]
    m = prometheus(worker_metrics)
    return {
        "follow_ups": len(follow), "cache_hits": len(hits),
        "hit_rate": round(len(hits) / len(follow), 4) if follow else None,
        "first_event_ms": {"p50": _pct([f["first_event_ms"] for f in follow], 0.5),
                           "p95": _pct([f["first_event_ms"] for f in follow], 0.95)},
        "first_token_ms": {"p50": _pct([f["first_token_ms"] for f in follow], 0.5),
                           "p95": _pct([f["first_token_ms"] for f in follow], 0.95),
                           "mean": round(sum(f["first_token_ms"] for f in follow)
                                         / len(follow), 1) if follow else None},
        "warmup_streams": {k.split('"')[1]: v for k, v in m.items()
                           if k.startswith("tidemark_worker_warmup_streams_total{")},
        "warmup_skipped": {k.split('"')[1]: v for k, v in m.items()
                           if k.startswith("tidemark_worker_warmup_skipped_total{")},
    }


def warmup(b: Bench) -> dict[str, Any]:
    rows = load()
    history = _sessions(rows, test=False)[-30:]  # the last training sessions
    live = [s for s in _sessions(rows, test=True) if len(s) > 1][:LIVE_SESSIONS]
    res: dict[str, Any] = {"setup": {
        "data": str(OUT.name), "queries": len(rows), "train_days": TRAIN_DAYS,
        "min_share": MIN_SHARE, "live_tenant": TENANT, "history_sessions": len(history),
        "live_sessions": len(live), "tokens": TOKENS, "tokens_per_second": RATE,
        "think_s": THINK_S, "first_token_ms": FIRST_TOKEN_MS,
        "client": "this process (asyncio + aiohttp), one stream at a time",
        "processes": "broker, 1 gateway (JWT), 1 worker (TIDEMARK_CACHE=on; "
                     "TIDEMARK_WARMUP on or off)"}}
    res["offline"] = accuracy(rows)
    for mode in ("off", "on"):
        ns = b.namespace(f"warmup-{mode}")
        with b.reg.scope():
            gw = start_gateway(b, f"gateway-warmup-{mode}", ns, TIDEMARK_AUTH="jwt",
                               TIDEMARK_JWT_SECRET=SECRET)
            first = b.reg.start(f"worker-history-{mode}",
                                [PYTHON, "-m", "bench.serve", "worker"],
                                b.env(ns, TIDEMARK_CACHE="on"))
            first.wait_line("Worker started", 90)
            asyncio.run(_history(gw.url, history))
            first.stop()
            worker = b.reg.start(f"worker-warmup-{mode}",
                                 [PYTHON, "-m", "bench.serve", "worker"],
                                 b.env(ns, TIDEMARK_CACHE="on",
                                       TIDEMARK_WARMUP="on" if mode == "on" else "off"))
            line = worker.wait_line("Worker started", 90)
            metrics_url = line.rsplit(" ", 1)[1].removesuffix("/metrics")
            procs = {"gateway": gw.proc, "worker": worker, "kafka": b.broker}
            a = Sample.take(procs)
            res[f"warmup_{mode}"] = asyncio.run(_live(gw.url, live, metrics_url))
            res[f"window_{mode}"] = window(a, Sample.take(procs))
    on = res["warmup_on"]["first_token_ms"]["mean"]
    off = res["warmup_off"]["first_token_ms"]["mean"]
    if on is not None and off is not None:
        res["first_token_mean_saved_ms"] = round(off - on, 1)
    return res


def render(res: dict[str, Any]) -> list[str]:
    from bench.markdown import cpu_cell, fmt, table

    setup = res.get("setup", {})
    lines = ["### Predictive warm-up", "",
             f"Workload: `bench/data/{setup.get('data')}` ({fmt(setup.get('queries'))} "
             f"queries, written for Tidemark: `bench/warmup_workload.py`), "
             f"{setup.get('train_days')} days to learn, the rest to test.", ""]
    if res.get("error"):
        return [*lines, f"**error:** `{res['error'][-300:]}`", ""]
    off = res.get("offline") or {}
    lines += table(["top k", "follow-ups", "predicted", "acme", "globex", "initech",
                    "scripted follow-ups"],
                   [[k.removeprefix("k"), fmt(v.get("follow_ups")), fmt(v.get("accuracy"), 4),
                     *(fmt((v.get("per_tenant") or {}).get(t), 4)
                       for t in ("acme", "globex", "initech")),
                     fmt(v.get("scripted_accuracy"), 4)] for k, v in sorted(off.items())])
    rows = []
    for mode in ("off", "on"):
        r, win = res.get(f"warmup_{mode}") or {}, res.get(f"window_{mode}") or {}
        rows.append([mode, fmt(r.get("follow_ups")), fmt(r.get("hit_rate"), 4),
                     fmt((r.get("first_event_ms") or {}).get("p50")),
                     fmt((r.get("first_event_ms") or {}).get("p95")),
                     fmt((r.get("first_token_ms") or {}).get("p50")),
                     fmt((r.get("first_token_ms") or {}).get("p95")),
                     fmt((r.get("first_token_ms") or {}).get("mean")),
                     fmt(sum((r.get("warmup_streams") or {}).values())),
                     cpu_cell(win, "worker"), cpu_cell(win, "gateway"), cpu_cell(win, "kafka")])
    lines += ["", f"Real path, tenant {setup.get('live_tenant')}: {setup.get('live_sessions')} "
              f"sessions after {setup.get('history_sessions')} of history; "
              f"{setup.get('processes')}; client: {setup.get('client')}; demo answers of "
              f"{setup.get('tokens')} tokens at {setup.get('tokens_per_second')}/s "
              f"after {setup.get('first_token_ms')} ms to the first, "
              f"{setup.get('think_s')} s between a session's queries.", "",
              *table(["warm-up", "follow-ups", "hit rate", "first event p50 ms", "p95 ms",
                      "first token p50 ms", "p95 ms", "mean ms", "warm-up streams",
                      "worker CPU", "gateway CPU", "broker CPU"], rows), "",
              f"First token of a follow-up, mean saved by the warm-up: "
              f"{fmt(res.get('first_token_mean_saved_ms'))} ms.", ""]
    return lines
