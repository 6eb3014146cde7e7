"""The Go SSE client (bench/sseclient): build it, run it as a swarm of processes, and
merge what the processes report (counters summed, histograms merged bucket by bucket).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.procs import REPO, Proc, Registry, base_env

SOURCE = REPO / "bench" / "sseclient"
HISTOGRAMS = ("latency", "first_event", "headers", "create_to_first_event", "post")


def build(cache: Path) -> Path:
    """``go build`` the client into ``cache`` (offline: local toolchain, no proxy)."""
    cache.mkdir(parents=True, exist_ok=True)
    binary = cache / "sseclient"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off",
           "GOFLAGS": "-buildvcs=false"}
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=SOURCE, env=env, check=True,
                   timeout=300, capture_output=True)
    return binary


def _merge_hists(parts: list[dict[str, Any]]) -> dict[str, Any]:
    buckets: dict[tuple[int, int], int] = {}
    mins, maxs = [], []
    total_us = 0.0
    for h in parts:
        if not h or not h.get("count"):
            continue
        for lo, hi, c in h["buckets"]:
            buckets[(lo, hi)] = buckets.get((lo, hi), 0) + c
        mins.append(h["min_ms"])
        maxs.append(h["max_ms"])
        total_us += h["mean_ms"] * h["count"]
    count = sum(buckets.values())
    if not count:
        return {"count": 0}
    lo_ms, hi_ms = min(mins), max(maxs)
    ordered = sorted(buckets.items())

    def pct(q: float) -> float:
        rank = max(1, math.ceil(q * count))
        seen = 0
        for (lo, hi), c in ordered:
            seen += c
            if seen >= rank:
                mid = (lo + (hi - lo - 1) / 2) / 1000
                return round(min(max(mid, lo_ms), hi_ms), 3)
        return hi_ms

    return {"count": count, "min_ms": round(lo_ms, 3), "mean_ms": round(total_us / count, 3),
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "p999_ms": pct(0.999), "max_ms": round(hi_ms, 3)}


def _sum(values: list[Any]) -> Any:
    if all(isinstance(v, dict) for v in values):
        keys = {k for v in values for k in v}
        return {k: _sum([v[k] for v in values if k in v]) for k in sorted(keys)}
    if all(isinstance(v, int | float) for v in values):
        return sum(values)
    return values[0] if values else None


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several client processes' reports."""
    if not reports:
        return {}
    out: dict[str, Any] = {"processes": len(reports)}
    skip = {"kind", "label", "pid", "unix_ns", "elapsed_s", *HISTOGRAMS}
    for key in {k for r in reports for k in r} - skip:
        out[key] = _sum([r[key] for r in reports if key in r])
    out["elapsed_s"] = max(r.get("elapsed_s", 0) for r in reports)
    out["max_rss_mb_per_process"] = round(max(r.get("max_rss_kb", 0) for r in reports) / 1024, 1)
    out.pop("max_rss_kb", None)
    for name in HISTOGRAMS:
        out[name] = _merge_hists([r.get(name, {}) for r in reports])
    return out


class Swarm:
    """``procs`` client processes sharing ``targets`` (lines of the -urls file, or of the
    ``-post-urls`` file of closed-loop writers with ``targets_flag="-post-urls"``)."""

    def __init__(self, reg: Registry, binary: Path, name: str, targets: list[str], *,
                 procs: int = 1, duration: float = 600, args: list[str] | None = None,
                 targets_flag: str = "-urls") -> None:
        self.reg = reg
        self.name = name
        self.procs: list[Proc] = []
        procs = max(1, min(procs, len(targets) or 1))
        for i in range(procs):
            share = targets[i::procs]
            path = reg.logdir / f"{name}.{i}.urls"
            path.write_text("\n".join(share) + "\n")
            self.procs.append(reg.start(
                f"{name}.{i}", [str(binary), targets_flag, str(path), "-duration", str(duration),
                                "-label", name, *(args or [])], base_env()))

    def _kind(self, proc: Proc, kind: str) -> list[dict[str, Any]]:
        return [x for x in proc.json_lines() if x.get("kind") == kind]

    def wait_kind(self, kind: str, count: int, timeout: float) -> list[dict[str, Any]]:
        """The ``count``-th report of ``kind`` from every process."""
        deadline = time.monotonic() + timeout
        got = []
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())

            def test(p: Proc = proc) -> list[dict[str, Any]] | None:
                lines = self._kind(p, kind)
                return lines if len(lines) >= count else None
            lines = proc.wait_for(f"{kind} report #{count}", test, remaining)
            got.append(lines[count - 1])
        return got

    def wait_dialed(self, timeout: float) -> dict[str, Any]:
        return merge(self.wait_kind("dialed", 1, timeout))

    def snapshot(self, timeout: float = 15) -> dict[str, Any]:
        """Ask every process for a report (their histograms restart); merged."""
        return merge(self.snapshot_raw(timeout))

    def snapshot_raw(self, timeout: float = 15) -> list[dict[str, Any]]:
        """Ask every process for a report (their histograms restart); one per process."""
        counts = [len(self._kind(p, "snapshot")) for p in self.procs]
        for p in self.procs:
            p.signal(signal.SIGUSR1)
        got = []
        for p, n in zip(self.procs, counts, strict=True):
            def test(p: Proc = p, n: int = n) -> dict[str, Any] | None:
                lines = self._kind(p, "snapshot")
                return lines[n] if len(lines) > n else None
            got.append(p.wait_for("snapshot", test, timeout))
        return got

    def finish(self, timeout: float = 30) -> dict[str, Any]:
        """End every process (if still running) and merge their final reports."""
        return merge(self.finish_raw(timeout))

    def finish_raw(self, timeout: float = 30) -> list[dict[str, Any]]:
        """End every process (if still running); their final reports."""
        for p in self.procs:
            p.signal(signal.SIGTERM)
        finals = []
        for p in self.procs:
            p.wait_exit(timeout)
            lines = self._kind(p, "final")
            if lines:
                finals.append(lines[-1])
            self.reg.stop(p)
        return finals

    def wait_finished(self, timeout: float) -> dict[str, Any]:
        """Wait for every process to end by itself (all connections done), then merge."""
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.wait_exit(max(0.1, deadline - time.monotonic()))
        return self.finish()

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.procs)
