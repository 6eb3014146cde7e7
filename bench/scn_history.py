"""The ``history`` scenario: gateway memory and start-up against the number of finished
streams in the namespace.

1. Gateway A starts on a fresh namespace; its time from process start to ``/readyz`` 200
   and its RSS are the reference.
2. Streams are created and finished (``bench.history_load write``) in cumulative steps
   (short: 25k, 50k, 100k; ``--full``: 250k, 500k, 1M). The first ``sdk_streams`` go
   through the publisher SDK alone, to measure its rate; the rest through the fast path
   (see ``bench.history_load``), in ``writers`` processes.
3. After each step: A's RSS growth once it has caught up; then a NEW gateway B, timed
   from process start to ``/readyz`` 200, its RSS once ready.
4. Exactness spot checks through A and B on a random sample of all streams written so
   far (``bench.history_load check``).
5. A linear fit over the steps of A's growth, B's ready time and B's RSS, extrapolated
   to 1,000,000 streams.

Only the HTTP API, the publisher SDK and the eventlog write functions named in
``bench.history_load`` are used, so the same scenario measures any gateway revision
(``python -m bench.run --at REV --only history``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cluster import Bench, Gateway, request, start_gateway
from bench.procs import PYTHON, Proc, Sample, window

#: The goal the scenario measures against.
TARGET_STREAMS = 1_000_000
TARGET_READY_S = 5.0
TARGET_GROWTH_MB = 50.0


@dataclass(frozen=True, kw_only=True)
class HistoryProfile:
    sizes: tuple[int, ...]
    sdk_streams: int
    #: Fast-path writer processes and streams in flight in all of them. Measured here
    #: (fast path, 30,000 streams): 1 process x 2,000 in flight 2,761 streams/s; 2 x 1,000
    #: 1,460 streams/s in total; 1 x 500 2,144 streams/s. The 2 cores are the limit.
    writers: int = 1
    concurrency: int = 2000
    #: Streams in flight through the SDK: more only queue (its finish is the limit).
    sdk_concurrency: int = 100
    sample: int = 200
    ready_timeout_s: float = 900.0
    write_timeout_s: float = 3600.0


SHORT = HistoryProfile(sizes=(25_000, 50_000, 100_000), sdk_streams=3_000)
FULL = HistoryProfile(sizes=(250_000, 500_000, 1_000_000), sdk_streams=20_000)


def profile_for(name: str, sizes: tuple[int, ...] = ()) -> HistoryProfile:
    """The profile's sizes, or ``sizes`` (``bench.run --history-sizes``) when given."""
    hp = FULL if name == "full" else SHORT
    if sizes:
        hp = dataclasses.replace(hp, sizes=tuple(sorted(sizes)),
                                 sdk_streams=min(hp.sdk_streams, min(sizes)))
    return hp


def _load(b: Bench, name: str, ns: str, args: list[str]) -> Proc:
    return b.reg.start(name, [PYTHON, "-m", "bench.history_load", *args], b.env(ns))


def _start_timed(b: Bench, name: str, ns: str, timeout: float, **settings: str,
                 ) -> tuple[Gateway, float]:
    """A Tidemark gateway and the seconds from its process start to ``/readyz`` 200."""
    gw = start_gateway(b, name, ns, timeout=timeout, **settings)
    return gw, time.monotonic() - gw.proc.started


def _settled_rss_kb(proc: Proc, *, settle_s: float = 1.0, timeout: float = 60.0) -> int:
    """RSS once it has stopped changing by more than 1 % over ``settle_s``."""
    deadline = time.monotonic() + timeout
    last = proc.rss_kb()
    while True:
        time.sleep(settle_s)
        now = proc.rss_kb()
        if abs(now - last) <= 0.01 * max(last, 1) or time.monotonic() > deadline:
            return now
        last = now


def _caught_up(gw: Gateway, ids: list[str], timeout: float) -> float:
    """Wait until the gateway reports the last streams written as completed (so what
    it keeps of them is loaded); seconds waited."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        try:
            status, body = request(f"{gw.url}/v1/streams/{pending[-1]}", timeout=30)
        except OSError:
            status, body = 0, None
        if status == 200 and isinstance(body, dict) and body.get("status") == "completed":
            pending.pop()
        else:
            time.sleep(0.2)
    if pending:
        raise RuntimeError(f"{gw.proc.name} did not see stream {pending[-1]} completed "
                           f"within {timeout:.0f}s")
    return round(time.monotonic() - t0, 2)


def _write(b: Bench, hp: HistoryProfile, ns: str, n: int, *, path: str, writers: int,
           tag: str, gateways: list[Proc], concurrency: int,
           ) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """``n`` streams created and finished by ``writers`` processes; (ids, summary, window)
    with the window's CPU of every process."""
    writers = max(1, min(writers, n))
    files = [b.workdir / f"history-{tag}-{i}.txt" for i in range(writers)]
    shares = [n // writers + (i < n % writers) for i in range(writers)]
    procs = [_load(b, f"history-write-{tag}-{i}", ns,
                   ["write", "--n", str(k), "--out", str(f), "--path", path,
                    "--concurrency", str(max(1, concurrency // writers))])
             for i, (k, f) in enumerate(zip(shares, files, strict=True))]
    group: dict[str, Proc | list[Proc]] = {"writers": procs, "kafka": b.broker}
    group.update({f"gateway_{g.name.rsplit('-', 1)[-1]}": g for g in gateways})
    t0 = time.monotonic()
    a = Sample.take(group)
    sums = []
    try:
        deadline = t0 + hp.write_timeout_s
        while any(p.alive for p in procs) and time.monotonic() < deadline:
            for proc in procs:
                proc.cpu()  # the last value seen alive is what Proc.cpu() keeps
            time.sleep(0.5)
        for proc in procs:
            code = proc.wait_exit(max(1.0, deadline - time.monotonic()))
            found = [x for x in proc.json_lines() if x.get("kind") == "written"]
            if code != 0 or not found:
                raise RuntimeError(f"{proc.name} failed ({code}):\n{proc.logs()}")
            sums.append(found[-1])
        z = Sample.take(group)
        wall = time.monotonic() - t0
    finally:
        for proc in procs:
            b.reg.stop(proc)
    ids = [x for f in files for x in f.read_text().split() if x]
    total = sum(s["streams"] for s in sums)
    win = window(a, z)
    # The writers' own CPU (getrusage, all threads, to their last instruction).
    win["processes"]["writers"].update(
        cpu_s=round(sum(s["cpu_s"] for s in sums), 3),
        cpu_pct_of_core=round(100 * sum(s["cpu_s"] for s in sums) / win["seconds"], 1))
    win["other_processes_cpu_s"] = round(max(0.0, win["machine_busy_cpu_s"] - sum(
        x["cpu_s"] for x in win["processes"].values())), 3)
    summary = {"path": path, "streams": total, "writer_processes": writers,
               "concurrency_per_process": max(1, concurrency // writers),
               "wall_s": round(wall, 2),
               "streams_per_s": round(total / wall, 1) if wall else None,
               "writer_cpu_s": [s["cpu_s"] for s in sums],
               "create_stream_ms": [s.get("create_stream_ms") for s in sums],
               "finish_ms": [s.get("finish_ms") for s in sums]}
    return ids, summary, win


def _check(b: Bench, hp: HistoryProfile, ns: str, gw: Gateway, ids_file: Path, seed: int,
           tag: str) -> dict[str, Any]:
    proc = _load(b, f"history-check-{tag}", ns,
                 ["check", "--gateway", gw.url, "--ids", str(ids_file),
                  "--sample", str(hp.sample), "--seed", str(seed)])
    code = proc.wait_exit(600)
    try:
        found = [x for x in proc.json_lines() if x.get("kind") == "checked"]
        if code != 0 or not found:
            raise RuntimeError(f"{proc.name} failed ({code}):\n{proc.logs()}")
        return found[-1]
    finally:
        b.reg.stop(proc)


def _open(b: Bench, ns: str, ids_file: Path) -> dict[str, Any]:
    proc = _load(b, "history-open", ns, ["open", "--ids", str(ids_file)])
    code = proc.wait_exit(600)
    try:
        found = [x for x in proc.json_lines() if x.get("kind") == "opened"]
        return found[-1] if code == 0 and found else {"error": proc.logs(10)[-500:]}
    finally:
        b.reg.stop(proc)


def _topics(b: Bench, ns: str) -> dict[str, int]:
    proc = _load(b, "history-topics", ns, ["topics"])
    code = proc.wait_exit(120)
    try:
        found = [x for x in proc.json_lines() if x.get("kind") == "topics"]
        return found[-1]["records"] if code == 0 and found else {}
    finally:
        b.reg.stop(proc)


def _fit(points: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Least-squares line y = a + b·n, and its value at TARGET_STREAMS."""
    pts = [(x, y) for x, y in points if y is not None]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if not sxx:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    icpt = my - slope * mx
    return {"intercept": round(icpt, 3), "per_million": round(slope * 1e6, 3),
            "at_target": round(icpt + slope * TARGET_STREAMS, 2), "points": len(pts)}


def fits(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Lines over the steps with streams (the 0-stream reference left out: a one-time
    start-up cost, such as a cache filling at the first streams, is not per stream)."""
    steps = [s for s in steps if s["streams"] > 0]
    return {
        "how": "least-squares line over the steps with streams (streams -> figure), "
               f"evaluated at {TARGET_STREAMS:,} streams",
        "gateway_a_growth_mb": _fit([(s["streams"], s["gateway_a"]["growth_mb"])
                                     for s in steps]),
        "gateway_a_notail_growth_mb": _fit([(s["streams"], s["gateway_a_notail"]["growth_mb"])
                                            for s in steps]),
        "gateway_b_ready_s": _fit([(s["streams"], s["gateway_b"]["ready_s"]) for s in steps]),
        "gateway_b_rss_mb": _fit([(s["streams"], s["gateway_b"]["rss_mb_settled"])
                                  for s in steps])}


def _gateway_figures(proc: Proc, rss0_kb: int, streams: int) -> dict[str, Any]:
    rss = _settled_rss_kb(proc)
    growth = rss - rss0_kb
    return {"rss_mb": round(rss / 1024, 1), "growth_mb": round(growth / 1024, 1),
            "growth_bytes_per_stream": round(1024 * growth / streams, 1) if streams else None,
            "cpu_s_total": round(proc.cpu(), 2)}


def history(b: Bench, profile_name: str, sizes: tuple[int, ...] = ()) -> dict[str, Any]:
    hp = profile_for(profile_name, sizes)
    ns = b.namespace("h")
    res: dict[str, Any] = {"setup": {
        "what": "finished streams (created, then one result event each) accumulate in one "
                "namespace; gateways A (default settings) and A-notail (TIDEMARK_TAIL_BYTES=1: "
                "no memory tail, so its growth is what it keeps per stream) run throughout; "
                "a new gateway B (default settings) is started after each step, the first at "
                "0 streams (the reference)",
        "sizes": [0, *hp.sizes], "sdk_streams": hp.sdk_streams,
        "sdk_concurrency": hp.sdk_concurrency, "writers": hp.writers,
        "concurrency": hp.concurrency, "sample": hp.sample,
        "targets": {"streams": TARGET_STREAMS, "ready_s": TARGET_READY_S,
                    "growth_mb": TARGET_GROWTH_MB},
        "client": "bench.history_load check (Python aiohttp, 10 streams at a time)",
        "cores": 2}, "steps": []}
    with b.reg.scope():
        gw_a, ready_a = _start_timed(b, "gateway-history-a", ns, hp.ready_timeout_s)
        gw_n, ready_n = _start_timed(b, "gateway-history-anotail", ns, hp.ready_timeout_s,
                                     TIDEMARK_TAIL_BYTES="1")
        rss_a0, rss_n0 = _settled_rss_kb(gw_a.proc), _settled_rss_kb(gw_n.proc)
        res["gateway_a"] = {"ready_s": round(ready_a, 3), "rss_mb": round(rss_a0 / 1024, 1),
                            "note": "first start on the namespace: creates its topics"}
        res["gateway_a_notail"] = {"ready_s": round(ready_n, 3),
                                   "rss_mb": round(rss_n0 / 1024, 1)}
        running = [gw_a.proc, gw_n.proc]
        all_ids: list[str] = []
        ids_file = b.workdir / "history-ids.txt"
        ref: dict[str, Any] = {}
        for k, size in enumerate((0, *hp.sizes)):
            step: dict[str, Any] = {"streams": size, "writes": []}
            if k == 1 and hp.sdk_streams:
                ids, summ, win = _write(b, hp, ns, min(hp.sdk_streams, size), path="sdk",
                                        writers=1, tag="sdk", gateways=running,
                                        concurrency=hp.sdk_concurrency)
                all_ids += ids
                step["writes"].append({**summ, "window": win})
            more = size - len(all_ids)
            if more > 0:
                ids, summ, win = _write(b, hp, ns, more, path="fast", writers=hp.writers,
                                        tag=f"fast{k}", gateways=running,
                                        concurrency=hp.concurrency)
                all_ids += ids
                step["writes"].append({**summ, "window": win})
            step["streams"] = len(all_ids)
            if all_ids:
                ids_file.write_text("".join(f"{i}\n" for i in all_ids))
                step["gateway_a_catch_up_s"] = _caught_up(gw_a, all_ids[-3:], 600)
                _caught_up(gw_n, all_ids[-3:], 600)
            step["gateway_a"] = _gateway_figures(gw_a.proc, rss_a0, len(all_ids))
            step["gateway_a_notail"] = _gateway_figures(gw_n.proc, rss_n0, len(all_ids))
            step["topic_records"] = _topics(b, ns)
            gw_b, ready_b = _start_timed(b, f"gateway-history-b{k}", ns, hp.ready_timeout_s)
            rss_b_ready, cpu_b_ready = gw_b.proc.rss_kb(), gw_b.proc.cpu()
            rss_b = _settled_rss_kb(gw_b.proc)
            if k == 0:
                ref = {"ready_s": ready_b, "rss_kb": rss_b}
            step["gateway_b"] = {
                "ready_s": round(ready_b, 3), "rss_mb_at_ready": round(rss_b_ready / 1024, 1),
                "rss_mb_settled": round(rss_b / 1024, 1),
                "cpu_s_to_ready": round(cpu_b_ready, 2),
                "ready_ratio_to_ref": round(ready_b / ref["ready_s"], 2),
                "rss_growth_mb_over_ref": round((rss_b - ref["rss_kb"]) / 1024, 1)}
            if all_ids:
                step["sdk_open_stream"] = _open(b, ns, ids_file)
                step["checks"] = {
                    "a": _check(b, hp, ns, gw_a, ids_file, seed=k, tag=f"a{k}"),
                    "b": _check(b, hp, ns, gw_b, ids_file, seed=k, tag=f"b{k}")}
            b.reg.stop(gw_b.proc)
            res["steps"].append(step)
            # What is measured so far survives a run cut short.
            (b.workdir / "history-partial.json").write_text(json.dumps(res, indent=1))
    res["fit"] = fits(res["steps"])
    return res
