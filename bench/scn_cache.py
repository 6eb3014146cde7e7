"""Scenario ``cache``: repeated and paraphrased queries against the similar-query cache.

Real processes: the broker, one gateway (no auth) and one worker with ``TIDEMARK_CACHE=on``
at the default threshold (``TIDEMARK_CACHE_THRESHOLD``, 0.85). The queries are the pairs
of ``bench/data/paraphrases.json`` (written for Tidemark, named as such there): for each
pair, in turn, the original (a miss: generated, then cached), its paraphrase (should hit
the original's stream), the original again (an exact hit), then every near miss (a
different question on an original's topic: a hit there is a false hit). Each stream is a
demo answer of ``TOKENS`` tokens at ``RATE``/s, read to its end over SSE by this process
(asyncio + aiohttp, one stream at a time). Before a paraphrase, the bench waits until the
worker's index holds the original (``tidemark_worker_cache_entries``).

Reported: hit rate over the requests that have a cached counterpart (paraphrases and
repeats) and over paraphrases alone; false-hit rate (near misses answered from the cache,
and paraphrases answered from another stream); first-event and first-token latency of
hits and misses (from just before the create POST to the arrival of seq 1, of the
first ``partial_result`` and of the terminal event); the worker's embedding time per
query (its histogram) and the model's cost measured in this process; and an offline
sweep of the threshold over the same pairs (embeddings only, no processes).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.cluster import Bench, prometheus, start_gateway, wait_until
from bench.markdown import fmt, table
from bench.procs import PYTHON, REPO, Sample, window

DATA = REPO / "bench" / "data" / "paraphrases.json"
TOKENS = 20
RATE = 50.0
SWEEP = (0.75, 0.8, 0.85, 0.9)


def load_pairs(path: Path = DATA) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def _summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": _pct(values, 0.5), "p95_ms": _pct(values, 0.95),
            "max_ms": round(max(values), 1) if values else None}


async def ask(http: Any, base: str, query: str, *, options: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None, use_cache: bool = True,
              ) -> dict[str, Any]:
    """Create a stream for ``query``, read it to its end; its cache marker and timings
    (first event, first token, answer: ms from before the POST)."""
    start = time.perf_counter()
    body: dict[str, Any] = {"query": query, "options": options or {
        "tokens": TOKENS, "tokens_per_second": RATE}}
    if not use_cache:
        body["cache"] = {"use": False}
    async with http.post(f"{base}/v1/streams", json=body, headers=headers or {}) as r:
        sid = (await r.json())["stream_id"]
    out: dict[str, Any] = {"stream": sid, "cache": None}
    async with http.get(f"{base}/v1/streams/{sid}/events",
                        headers={**(headers or {}), "Accept": "text/event-stream"}) as resp:
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                env = json.loads(line[6:])
                now = (time.perf_counter() - start) * 1000
                if env["seq"] == 1:
                    out["first_event_ms"] = now
                    out["cache"] = env["data"].get("cache")
                if event == "partial_result" and "first_token_ms" not in out:
                    out["first_token_ms"] = now
                if event in ("result", "error", "cancelled"):
                    out["answer_ms"] = now
                    break
    return out


def _entries(metrics_url: str) -> float:
    return prometheus(metrics_url).get("tidemark_worker_cache_entries", 0.0)


async def workload(base: str, metrics_url: str, data: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        for original, paraphrase in data["pairs"]:
            before = _entries(metrics_url)
            first = await ask(http, base, original)
            rows.append({"kind": "original", **first})
            await asyncio.to_thread(wait_until, lambda b=before: _entries(metrics_url) > b, 30)
            for kind, query in (("paraphrase", paraphrase), ("repeat", original)):
                got = await ask(http, base, query)
                got["expected"] = first["stream"]
                rows.append({"kind": kind, **got})
        for _, near in data["near_misses"]:
            rows.append({"kind": "near_miss", **await ask(http, base, near)})
    return _tally(rows)


def _tally(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def hit(r: dict[str, Any]) -> bool:
        return bool(r.get("cache"))

    by = {k: [r for r in rows if r["kind"] == k]
          for k in ("original", "paraphrase", "repeat", "near_miss")}
    wrong = [r for r in by["paraphrase"] + by["repeat"]
             if hit(r) and r["cache"]["sourceStream"] != r["expected"]]
    cacheable = by["paraphrase"] + by["repeat"]
    false_hits = [r for r in by["near_miss"] if hit(r)] + wrong
    hits = [r for r in rows if hit(r)]
    misses = [r for r in rows if not hit(r)]
    return {
        "requests": len(rows), "counts": {k: len(v) for k, v in by.items()},
        "hit_rate": round(sum(map(hit, cacheable)) / len(cacheable), 4),
        "hit_rate_all_requests": round(len(hits) / len(rows), 4),
        "paraphrase_hit_rate": round(sum(map(hit, by["paraphrase"])) / len(by["paraphrase"]),
                                     4),
        "repeat_hit_rate": round(sum(map(hit, by["repeat"])) / len(by["repeat"]), 4),
        "false_hit_rate": round(len(false_hits) / (len(by["near_miss"]) + len(cacheable)), 4),
        "near_miss_false_hits": sum(map(hit, by["near_miss"])),
        "near_miss_false_hit_rate": round(sum(map(hit, by["near_miss"]))
                                          / len(by["near_miss"]), 4),
        "wrong_source_hits": len(wrong),
        "false_hit_queries": [r.get("cache", {}).get("sourceStream") for r in false_hits],
        "first_event": {"hit": _summary([r["first_event_ms"] for r in hits]),
                        "miss": _summary([r["first_event_ms"] for r in misses])},
        "first_token": {"hit": _summary([r["first_token_ms"] for r in hits]),
                        "miss": _summary([r["first_token_ms"] for r in misses])},
        "answer": {"hit": _summary([r["answer_ms"] for r in hits]),
                   "miss": _summary([r["answer_ms"] for r in misses])},
        "matches": {m: sum(1 for r in hits if r["cache"]["match"] == m)
                    for m in ("exact", "similar")},
    }


def sweep(data: dict[str, Any]) -> dict[str, Any]:
    """The threshold against the same pairs, embeddings only; and the model's cost."""
    from eventlog.embeddings import shared_embedder

    start = time.perf_counter()
    emb = shared_embedder()
    load_s = time.perf_counter() - start

    def sims(pairs: list[list[str]]) -> list[float]:
        a, b = emb.embed([p[0] for p in pairs]), emb.embed([p[1] for p in pairs])
        return [float(x) for x in (a * b).sum(axis=1)]

    para, near = sims(data["pairs"]), sims(data["near_misses"])
    queries = [q for pair in data["pairs"] for q in pair]
    start = time.perf_counter()
    for q in queries:
        emb.embed([q])
    per_query_ms = (time.perf_counter() - start) * 1000 / len(queries)
    return {
        "model_load_s": round(load_s, 2), "embed_ms_per_query": round(per_query_ms, 2),
        "thresholds": [{"threshold": t,
                        "paraphrases_over": round(sum(s >= t for s in para) / len(para), 4),
                        "near_misses_over": round(sum(s >= t for s in near) / len(near), 4)}
                       for t in SWEEP]}


def cache(b: Bench) -> dict[str, Any]:
    data = load_pairs()
    res: dict[str, Any] = {"setup": {
        "data": str(DATA.relative_to(REPO)), "source": data["source"],
        "pairs": len(data["pairs"]), "near_misses": len(data["near_misses"]),
        "tokens": TOKENS, "tokens_per_second": RATE,
        "client": "this process (asyncio + aiohttp), one stream at a time",
        "processes": "broker, 1 gateway, 1 worker (TIDEMARK_CACHE=on, default threshold)"}}
    ns = b.namespace("cache")
    with b.reg.scope():
        gw = start_gateway(b, "gateway-cache", ns)
        worker = b.reg.start("worker-cache", [PYTHON, "-m", "bench.serve", "worker"],
                             b.env(ns, TIDEMARK_CACHE="on"))
        line = worker.wait_line("Worker started", 90)
        metrics_url = line.rsplit(" ", 1)[1].removesuffix("/metrics")
        procs = {"gateway": gw.proc, "worker": worker, "kafka": b.broker}
        a = Sample.take(procs)
        res["workload"] = asyncio.run(workload(gw.url, metrics_url, data))
        res["window"] = window(a, Sample.take(procs))
        m = prometheus(metrics_url)
        count = m.get("tidemark_worker_embedding_seconds_count", 0)
        total = m.get("tidemark_worker_embedding_seconds_sum", 0)
        res["worker_embeddings"] = {"count": count, "mean_ms": round(
            1000 * total / count, 2) if count else None}
        res["worker_rss_mb"] = round(worker.rss_kb() / 1024, 1)
        res["lookups"] = {k.split('"')[1]: v for k, v in m.items()
                          if k.startswith("tidemark_worker_cache_lookups_total{")}
    res["offline"] = sweep(data)
    return res


def render(res: dict[str, Any]) -> list[str]:
    setup, wl = res.get("setup", {}), res.get("workload") or {}
    lines = ["### Similar-query cache: repeated and paraphrased queries", "",
             f"Data: `{setup.get('data')}`, {setup.get('pairs')} pairs and "
             f"{setup.get('near_misses')} near misses (written for Tidemark). Processes: "
             f"{setup.get('processes')}; client: {setup.get('client')}; demo answers of "
             f"{setup.get('tokens')} tokens at {setup.get('tokens_per_second')}/s.", ""]
    if res.get("error"):
        return [*lines, f"**error:** `{res['error'][-300:]}`", ""]
    lines += table(["requests", "hit rate (paraphrases + repeats)", "paraphrase hits",
                    "repeat hits", "false-hit rate", "near misses hit (rate)", "wrong source",
                    "matches exact / similar"],
                   [[fmt(wl.get("requests")), fmt(wl.get("hit_rate"), 4),
                     fmt(wl.get("paraphrase_hit_rate"), 4), fmt(wl.get("repeat_hit_rate"), 4),
                     fmt(wl.get("false_hit_rate"), 4),
                     f"{fmt(wl.get('near_miss_false_hits'))} "
                     f"({fmt(wl.get('near_miss_false_hit_rate'), 4)})",
                     fmt(wl.get("wrong_source_hits")),
                     f"{fmt((wl.get('matches') or {}).get('exact'))} / "
                     f"{fmt((wl.get('matches') or {}).get('similar'))}"]])
    rows = []
    for what in ("first_event", "first_token", "answer"):
        for kind in ("hit", "miss"):
            s = (wl.get(what) or {}).get(kind) or {}
            rows.append([what.replace("_", " "), kind, fmt(s.get("n")), fmt(s.get("p50_ms")),
                         fmt(s.get("p95_ms")), fmt(s.get("max_ms"))])
    lines += ["", "Latency from just before the create POST: to seq 1 (first event), to the first "
              "partial_result (first token), to the terminal event (answer).", "",
              *table(["latency", "", "n", "p50 ms", "p95 ms", "max ms"], rows)]
    off, we = res.get("offline") or {}, res.get("worker_embeddings") or {}
    procs = (res.get("window") or {}).get("processes", {})
    cpu = ", ".join(f"{k} {v['cpu_s']:.1f} s" for k, v in procs.items())
    lines += ["", f"Embedding cost: {fmt(we.get('mean_ms'))} ms per query in the worker "
              f"(mean of {fmt(we.get('count'))}, off the event loop, the first one loading "
              f"the model); {fmt(off.get('embed_ms_per_query'))} ms per query in the bench "
              f"process (model load {fmt(off.get('model_load_s'))} s). Worker RSS at the end: "
              f"{fmt(res.get('worker_rss_mb'))} MB. CPU over the workload: {cpu}.", ""]
    lines += table(["threshold", "paraphrases at or over", "near misses at or over"],
                   [[fmt(t["threshold"], 2), fmt(t["paraphrases_over"], 4),
                     fmt(t["near_misses_over"], 4)] for t in off.get("thresholds", [])])
    return [*lines, ""]
