"""Durable Streams appends with many concurrent writers through one gateway: what
batching the appends of a partition into one Kafka transaction (group commit) buys.

    python -m bench.ds_writers --writers 64 --seconds 10 [--bootstrap host:port]

Setup as ``bench.ds_alternate`` (a gateway with ``TIDEMARK_AUTH=none`` and 4 partitions on
one local KRaft broker). Cases: ``writers`` clients each appending 100 bytes to its own
stream (the streams spread over the partitions), and ``writers`` clients appending to one
stream; each client sends one request at a time, all at once for ``seconds``. Prints
JSON: per case the appends/s, p50 and p99 latency in ms, and the CPU seconds of the
gateway and the broker over the case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.ds_alternate import gateway_env, tree_cpu_s
from tests.procs import Proc, free_port, wait_ready

_HEADERS = {"Content-Type": "text/plain"}


async def _writer(http: aiohttp.ClientSession, url: str, until: float,
                  took: list[float]) -> None:
    while time.perf_counter() < until:
        start = time.perf_counter()
        async with http.post(url, data=b"0123456789" * 10, headers=_HEADERS) as r:
            assert r.status == 204, (r.status, await r.text())
        took.append(time.perf_counter() - start)


async def case(name: str, base: str, *, writers: int, streams: int, seconds: float,
               pids: dict[str, int]) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=writers + 4)
    async with aiohttp.ClientSession(connector=connector) as http:
        urls = [f"{base}/v1/stream/w-{uuid.uuid4().hex}" for _ in range(streams)]
        for url in urls:
            async with http.put(url, headers=_HEADERS) as r:
                assert r.status == 201, r.status
        warm: list[float] = []
        await asyncio.gather(*(_writer(http, urls[i % streams], time.perf_counter() + 1, warm)
                               for i in range(writers)))
        took: list[float] = []
        before = {k: tree_cpu_s(p) for k, p in pids.items()}
        started = time.perf_counter()
        await asyncio.gather(*(_writer(http, urls[i % streams], started + seconds, took)
                               for i in range(writers)))
        wall = time.perf_counter() - started
    took.sort()
    return {"case": name, "writers": writers, "streams": streams, "appends": len(took),
            "appends_per_s": round(len(took) / wall, 1),
            "p50_ms": round(1000 * statistics.median(took), 2),
            "p99_ms": round(1000 * took[int(0.99 * (len(took) - 1))], 2),
            "cpu_s": {k: round(tree_cpu_s(p) - before[k], 2) for k, p in pids.items()}}


async def run(*, writers: int, seconds: float, workdir: Path,
              bootstrap: str | None) -> dict[str, Any]:
    procs: list[Proc] = []
    out: dict[str, Any] = {"setup": "1 gateway (TIDEMARK_AUTH=none, 4 partitions) on one "
                                    "local KRaft broker; client: Python aiohttp, one "
                                    "request at a time per writer"}
    try:
        pids: dict[str, int] = {}
        env = gateway_env(workdir, bootstrap, procs, pids)
        port = free_port()
        proc = Proc("gateway", ["gateway", "--port", str(port)], env, workdir)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, proc)
        pids["gateway"] = proc.popen.pid
        ds = base + "/ds"
        out["cases"] = [
            await case("one writer", ds, writers=1, streams=1, seconds=seconds, pids=pids),
            await case(f"{writers} writers, a stream each", ds, writers=writers,
                       streams=writers, seconds=seconds, pids=pids),
            await case(f"{writers} writers, one stream", ds, writers=writers, streams=1,
                       seconds=seconds, pids=pids),
        ]
    finally:
        for proc in reversed(procs):
            proc.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bootstrap", default="")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidemark-ds-writers-"))
    out = asyncio.run(run(writers=args.writers, seconds=args.seconds, workdir=workdir,
                          bootstrap=args.bootstrap or None))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
