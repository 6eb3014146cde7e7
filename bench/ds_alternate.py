"""What the per-partition lease costs: sequential Durable Streams appends to one stream
through one gateway, and alternating between two gateways (each append then fences the
other gateway's transactional producer and catches up), with the reference Node server
(``@durable-streams/server``, in memory, single node) measured in the same run.

    python -m bench.ds_alternate --appends 300 [--bootstrap host:port]

Client: Python aiohttp, one connection per server, one request at a time. Prints JSON:
per case the appends/s, p50 and p99 latency in ms, and the CPU seconds of every process
(gateways, broker, reference server) over the case, read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.procs import Gateways, Proc, base_env, start_broker, start_reference

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _TICK


def _tree(pid: int) -> list[int]:
    """A process and its descendants (a broker's JVM runs under its launcher)."""
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += _tree(int(child))
    return out


def tree_cpu_s(pid: int) -> float:
    return sum(cpu_s(p) for p in _tree(pid))


async def appends(http: aiohttp.ClientSession, urls: list[str], n: int) -> list[float]:
    """``n`` appends to one stream, the i-th through ``urls[i % len(urls)]``."""
    path = f"/v1/stream/bench-{uuid.uuid4().hex}"
    async with http.put(urls[0] + path, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201, r.status
    took = []
    for i in range(n):
        url = urls[i % len(urls)] + path
        start = time.perf_counter()
        async with http.post(url, data=b"0123456789" * 10,
                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204, r.status
        took.append(time.perf_counter() - start)
    return took


async def case(name: str, urls: list[str], n: int, pids: dict[str, int]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        await appends(http, urls, 20)  # warm up: connections, leases
        before = {k: tree_cpu_s(p) for k, p in pids.items()}
        started = time.perf_counter()
        took = await appends(http, urls, n)
        wall = time.perf_counter() - started
    took.sort()
    return {"case": name, "appends": n, "appends_per_s": round(n / wall, 1),
            "p50_ms": round(1000 * statistics.median(took), 2),
            "p99_ms": round(1000 * took[int(0.99 * (n - 1))], 2),
            "cpu_s": {k: round(tree_cpu_s(p) - before[k], 2) for k, p in pids.items()}}


def gateway_env(workdir: Path, bootstrap: str | None, procs: list[Proc],
                pids: dict[str, int]) -> dict[str, str]:
    """The environment of a bench's gateways (no auth, 4 partitions, a new namespace) on
    ``bootstrap``, else on a new broker (added to ``procs`` and ``pids``)."""
    if not bootstrap:
        broker, bootstrap = start_broker(workdir)
        procs.append(broker)
        pids["broker"] = broker.popen.pid
    return base_env(TIDEMARK_KAFKA_BOOTSTRAP=bootstrap, TIDEMARK_AUTH="none",
                    TIDEMARK_PARTITIONS="4", TIDEMARK_NAMESPACE="b" + uuid.uuid4().hex[:8])


async def run(*, n: int, workdir: Path, bootstrap: str | None) -> dict[str, Any]:
    procs: list[Proc] = []
    out: dict[str, Any] = {"setup": "2 gateways (TIDEMARK_AUTH=none, 4 partitions) on one "
                                    "local KRaft broker; reference: @durable-streams/server "
                                    "0.3.7 in memory; client: Python aiohttp, sequential"}
    gateways: Gateways | None = None
    try:
        pids: dict[str, int] = {}
        env = gateway_env(workdir, bootstrap, procs, pids)
        gateways = Gateways(env, workdir)
        await gateways.start_all(haproxy=False)
        pids.update({p.name: p.popen.pid for p in gateways.procs})
        ref, ref_url = start_reference(workdir)
        procs.append(ref)
        ds = [g + "/ds" for g in gateways.urls]
        out["cases"] = [
            await case("reference server", [ref_url], n, {"reference": ref.popen.pid}),
            await case("one gateway", ds[:1], n, pids),
            await case("alternating two gateways", ds, n, pids),
        ]
        base = out["cases"][0]["appends_per_s"]
        for c in out["cases"]:
            c["ratio_to_reference"] = round(c["appends_per_s"] / base, 3)
    finally:
        if gateways is not None:
            gateways.stop()
        for proc in reversed(procs):
            proc.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--bootstrap", default="")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidemark-ds-bench-"))
    out = asyncio.run(run(n=args.appends, workdir=workdir, bootstrap=args.bootstrap or None))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
