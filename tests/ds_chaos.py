"""Chaos run of the Durable Streams surface with the official client: writers and live
followers (``@durable-streams/client``, ``conformance/ds-load.mjs``) on streams behind
HAProxy and two gateways while a gateway is SIGKILLed and restarted and the broker is
restarted (SIGTERM and SIGKILL in turns); then an independent check.

    python -m tests.ds_chaos --seconds 120 --streams 4   # what `make chaos` runs

Writers are ``IdempotentProducer``s (one ``Producer-Id`` each) appending JSON messages
``{"w": <writer>, "i": <n>}``, n = 0, 1, ... at a steady rate; their fetch retries network
errors and 5xx answers (the producer does not), so every retry of an append that did land
must be answered as a duplicate. Followers read each stream from its start with
``stream()`` (``live: "sse"`` and ``"long-poll"`` in turns) and resume from their last
batch's offset whenever a session ends.

The checker reads each stream's final contents itself (plain HTTP catch-up reads through
the balancer, not the client under test) and requires: for every writer, exactly the
messages 0..n-1 it appended, each once, in order; nothing else; and every follower saw
exactly those final contents, in the same order (nothing lost, repeated or reordered).
Prints a JSON report (``violations`` must be empty).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.conformance import npm_install
from tests.procs import REPO, Gateways, Proc, auth_headers, base_env, run_dir, start_broker, token

SCRIPT = REPO / "conformance" / "ds-load.mjs"
GATEWAY_SETTINGS = {
    "TIDEMARK_PARTITIONS": "4",
    "TIDEMARK_REQUEST_TIMEOUT": "5",
    "TIDEMARK_SHUTDOWN_GRACE": "2",
    "TIDEMARK_DS_LONG_POLL_TIMEOUT": "5",
}


@dataclass
class Report:
    seed: int
    seconds: float
    streams: int = 0
    writers: int = 0
    followers: int = 0
    appends: int = 0
    items_checked: int = 0
    follower_sessions: int = 0
    client_retries: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def read_all(http: aiohttp.ClientSession, url: str) -> list[Any]:
    """A stream's whole contents by catch-up reads (``offset=-1``, then each
    ``Stream-Next-Offset`` until ``Stream-Up-To-Date``), as a list of JSON messages."""
    items: list[Any] = []
    offset = "-1"
    for _ in range(100_000):
        async with http.get(url, params={"offset": offset}) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            items += await resp.json(content_type=None)
            offset = resp.headers["Stream-Next-Offset"]
            if "Stream-Up-To-Date" in resp.headers:
                return items
    raise AssertionError(f"{url}: never up to date")


def check(report: Report, client: dict[str, Any], contents: dict[str, list[Any]]) -> None:
    """The verdict, from the writers' own counts, the streams' final contents and what
    every follower received."""
    report.client_retries = client["retries"]
    for st in client["streams"]:
        where = f"stream {st['path']}"
        report.streams += 1
        final = [(x["w"], x["i"]) for x in contents[st["path"]]]
        report.items_checked += len(final)
        for w in st["writers"]:
            report.writers += 1
            report.appends += w["appended"]
            if w["errors"]:
                report.violations.append(f"{where} writer {w['id']}: errors {w['errors'][:3]}")
            mine = [i for wid, i in final if wid == w["id"]]
            if mine != list(range(w["appended"])):
                dupes = sorted({i for i in mine if mine.count(i) > 1})
                missing = sorted(set(range(w["appended"])) - set(mine))
                report.violations.append(
                    f"{where} writer {w['id']}: appended {w['appended']}, the stream holds "
                    f"{len(mine)} ({len(dupes)} repeated {dupes[:5]}, {len(missing)} missing "
                    f"{missing[:5]}, in order: {mine == sorted(mine)})")
        ids = {w["id"] for w in st["writers"]}
        if strays := [x for x in final if x[0] not in ids]:
            report.violations.append(f"{where}: messages of no writer {strays[:3]}")
        for n, f in enumerate(st["followers"]):
            report.followers += 1
            report.follower_sessions += f["sessions"]
            seen = [tuple(x) for x in f["items"]]
            if seen != final:
                first = next((k for k, (a, b) in enumerate(zip(seen, final, strict=False))
                              if a != b), min(len(seen), len(final)))
                report.violations.append(
                    f"{where} follower {n} ({f['live']}): saw {len(seen)} items, the stream "
                    f"holds {len(final)}; first difference at {first} "
                    f"({seen[first:first + 2]} vs {final[first:first + 2]}); "
                    f"errors {f['errors'][:2]}")


async def dump_records(bootstrap: str, namespace: str, out: Path) -> None:
    """Every committed record of the run's Durable Streams topic, one JSON line each
    (partition, offset, key, the ``ds`` header, the value), for the diagnosis of a
    violation: which records hold a repeated message, with which Producer-Id/-Seq."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from durable import records

    topic = records.ds_topic(namespace)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        with out.open("w") as f:
            for tp in tps:
                consumer.seek(tp, 0)
                while await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=500)
                    for msg in batch.get(tp, []):
                        f.write(json.dumps({
                            "p": tp.partition, "o": msg.offset, "ts": msg.timestamp,
                            "key": (msg.key or b"").decode(errors="replace"),
                            "meta": records.decode(msg.headers),
                            "value": (msg.value or b"")[:200].decode(errors="replace")}) + "\n")
    finally:
        await consumer.stop()


class Run:
    def __init__(self, workdir: Path, *, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.broker: Proc | None = None
        self.gateways: Gateways | None = None
        self.kills: dict[str, int] = {}
        self.restarts = 0
        self.bootstrap = ""
        self.namespace = "dsc" + uuid.uuid4().hex[:10]

    def _count(self, kind: str) -> None:
        self.kills[kind] = self.kills.get(kind, 0) + 1

    async def start(self) -> None:
        self.broker, self.bootstrap = start_broker(self.workdir)
        env = base_env(TIDEMARK_KAFKA_BOOTSTRAP=self.bootstrap,
                       TIDEMARK_NAMESPACE=self.namespace, **GATEWAY_SETTINGS)
        self.gateways = Gateways(env, self.workdir)
        await self.gateways.start_all()

    def stop(self) -> None:
        if self.gateways is not None:
            self.gateways.stop()
        if self.broker is not None:
            self.broker.stop()

    async def restart_broker(self, sig: int) -> None:
        assert self.broker is not None
        self.broker.stop(sig)
        await asyncio.sleep(self.rng.uniform(0.5, 2))
        self.restarts += 1
        self.broker, _ = await asyncio.to_thread(
            start_broker, self.workdir, f"kafka-{self.restarts}")

    async def kill_gateway(self) -> None:
        assert self.gateways is not None
        i = self.rng.randrange(len(self.gateways.procs))
        self.gateways.procs[i].stop(signal.SIGKILL)
        await asyncio.sleep(self.rng.uniform(0.5, 2))
        await self.gateways.restart(i)

    async def chaos(self, seconds: float) -> None:
        """A gateway SIGKILL, then a broker restart, then at random, a few seconds apart,
        until ``seconds`` have passed; each victim comes back before the next."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        plan = ["gateway", "broker-term"]
        while loop.time() < end - 3:
            await asyncio.sleep(self.rng.uniform(2, 4))
            kind = plan.pop(0) if plan else self.rng.choice(
                ["gateway", "gateway", "broker-term", "broker-kill"])
            self._count(kind)
            if kind == "gateway":
                await self.kill_gateway()
            else:
                await self.restart_broker(
                    signal.SIGTERM if kind == "broker-term" else signal.SIGKILL)


async def _lines(proc: asyncio.subprocess.Process, want: str, timeout: float) -> list[str]:
    """stdout lines of ``proc`` up to and including one starting with ``want``."""
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"the client exited before {want!r}: {seen[-5:]}")
            seen.append(line)
            if line.startswith(want):
                return seen


async def run(*, seconds: float, streams: int, seed: int, workdir: Path, writers: int = 2,
              followers: int = 2, rate: float = 20.0) -> Report:
    report = Report(seed=seed, seconds=seconds)
    r = Run(workdir, seed=seed)
    client: asyncio.subprocess.Process | None = None
    npm_install()  # the official client (conformance/package.json), as the suite's run has it
    try:
        await r.start()
        assert r.gateways is not None
        prefix = "chaos-" + uuid.uuid4().hex[:8]
        config = workdir / "ds-load.json"
        config.write_text(json.dumps({
            "mode": "chaos", "url": f"{r.gateways.balancer}/ds/v1/stream", "prefix": prefix,
            "streams": streams, "writers": writers, "followers": followers,
            "live": ["sse", "long-poll"], "rate": rate, "seconds": seconds,
            "drain_seconds": 60, "retry_seconds": 90, "token": token()}))
        with (workdir / "ds-load.err").open("wb") as err:
            client = await asyncio.create_subprocess_exec(
                shutil.which("node") or "node", str(SCRIPT), str(config),
                cwd=REPO / "conformance", stdout=subprocess.PIPE, stderr=err,
                limit=2**30)
        await _lines(client, "READY", 60)
        await r.chaos(seconds)
        out = await _lines(client, "REPORT ", seconds + 300)
        await client.wait()
        result = json.loads(out[-1].removeprefix("REPORT "))
        report.kills = r.kills
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            contents = {st["path"]: await read_all(
                http, f"{r.gateways.balancer}/ds/v1/stream/{st['path']}")
                for st in result["streams"]}
        check(report, result, contents)
        report.violations += r.gateways.exited()
        if report.violations:
            await dump_records(r.bootstrap, r.namespace, workdir / "records.jsonl")
        return report
    finally:
        if client is not None and client.returncode is None:
            client.kill()
            await client.wait()
        r.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--writers", type=int, default=2, help="per stream")
    parser.add_argument("--followers", type=int, default=2, help="per stream")
    parser.add_argument("--rate", type=float, default=20.0, help="appends/s per writer")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="run in DIR and keep every process's logs there")
    args = parser.parse_args()
    with run_dir(args.keep, "tidemark-ds-chaos-") as tmp:
        report = asyncio.run(run(seconds=args.seconds, streams=args.streams, seed=args.seed,
                                 workdir=tmp, writers=args.writers,
                                 followers=args.followers, rate=args.rate))
    sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
