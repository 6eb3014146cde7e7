"""Chaos run: many demo streams while a driver kills and restarts workers, gateways and
the broker at random moments; clients follow every stream through a load balancer and
reconnect with Last-Event-ID after every drop. An independent checker then verifies
every stream from what the clients received on the wire.

    python -m tests.chaos --seconds 300 --streams 60   # what `make chaos` runs
    python -m tests.chaos --cluster 3 --seconds 120 --streams 60   # and on a 3-node cluster

With ``--cluster N`` the run is on an N-node KRaft cluster (eventlog/cluster.py) and the
chaos is aimed at Kafka: SIGKILL the node leading the most partitions of the events topic
(found with the admin client's describe_topics), start it again, wait until every partition
is back in sync, then SIGKILL another leader the same way. Besides the checker's verdict it
reports the stall of each kill: per stream that was mid-answer, the longest gap between two
events' arrival from just before the kill until the cluster was in sync again.

The checker trusts nothing in the code under test: it parses SSE itself (tests/sse_client
is written against the wire format), and computes the text the demo generator must
produce from the generator's specification, not by calling it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from eventlog.cluster import ClusterConfig, LocalCluster
from eventlog.topics import events_topic
from tests import sse_client
from tests.procs import (
    REPO,
    Proc,
    auth_headers,
    base_env,
    free_port,
    run_dir,
    start_haproxy,
    wait_ready,
)

# --- the oracle: the demo generator's specified output ------------------------------

_SPEC_WORDS = (
    "the stream of events flows through kafka and every gateway serves it to readers who "
    "resume exactly where they stopped offsets are positions in an ordered log partitions "
    "keep each answer in order while workers write tokens progress and results durable "
    "transactions make every step atomic so nothing is lost or repeated on reconnect"
).split()


def expected_text(query: str, tokens: int) -> str:
    """Token i is the word at blake2b-32(query NUL i) mod the word count, space-joined."""
    words = []
    for i in range(tokens):
        digest = hashlib.blake2b(f"{query}\x00{i}".encode(), digest_size=4).digest()
        words.append(_SPEC_WORDS[int.from_bytes(digest, "big") % len(_SPEC_WORDS)])
    return " ".join(words)


# --- what the clients saw --------------------------------------------------------------

class TimedEvents(list[sse_client.Event]):
    """The events of one stream as they arrived, with ``times``: each one's arrival
    (``time.monotonic()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, event: sse_client.Event) -> None:
        self.times.append(time.monotonic())
        super().append(event)


@dataclass
class Followed:
    stream_id: str
    query: str
    tokens: int
    events: TimedEvents = field(default_factory=TimedEvents)
    answers: list[int] = field(default_factory=list)  # HTTP status of each finished read
    attempts: int = 0  # connections opened
    drops: int = 0  # connections that broke
    done: bool = False


@dataclass
class Report:
    streams: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    drops: int = 0
    events_checked: int = 0
    violations: list[str] = field(default_factory=list)
    #: ``--cluster``: one entry per broker kill (see :func:`stall`).
    broker_kills: list[dict[str, Any]] = field(default_factory=list)
    #: ``--cluster``: the longest gap between two events of a stream before the first kill.
    quiet_max_gap_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"streams": self.streams, "kills": self.kills, "reconnects": self.reconnects,
               "drops": self.drops,
               "events_checked": self.events_checked, "violations": self.violations}
        if self.broker_kills:
            out["broker_kills"] = self.broker_kills
            out["quiet_max_gap_s"] = self.quiet_max_gap_s
        return out

    @property
    def max_stall_s(self) -> float:
        return max((k["stall_max_s"] or 0.0 for k in self.broker_kills), default=0.0)


def stall(streams: list[Followed], start: float, end: float) -> list[float]:
    """Per stream that was mid-answer at ``start`` (an event before it, its last event after
    it): the longest gap between consecutive arrivals that ends after ``start`` and begins
    before ``end``, the gap across ``start`` included."""
    gaps = []
    for s in streams:
        times = s.events.times
        if not times or times[0] >= start or times[-1] <= start:
            continue
        longest = max((b - a for a, b in itertools.pairwise(times)
                       if b > start and a < end), default=0.0)
        gaps.append(longest)
    return gaps


def quiet_gap(streams: list[Followed], end: float) -> float:
    """The longest gap between two events of any stream, both before ``end``."""
    return max((b - a for s in streams
                for a, b in itertools.pairwise(s.events.times) if b < end),
               default=0.0)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def check(streams: list[Followed], report: Report) -> None:
    """The independent checker, over what arrived on the wire."""
    for s in streams:
        report.streams += 1
        report.reconnects += max(0, s.attempts - 1)
        report.drops += s.drops
        where = f"stream {s.stream_id}"
        if not s.done:
            report.violations.append(f"{where}: never reached a terminal event")
        seqs, ids = [], []
        for ev in s.events:
            if ev.event == "reset":
                report.violations.append(f"{where}: unexpected reset {ev.data}")
                continue
            env = json.loads(ev.data)
            if env["stream"] != s.stream_id:
                report.violations.append(f"{where}: event of stream {env['stream']}")
            seqs.append(env["seq"])
            ids.append(ev.id)
        report.events_checked += len(seqs)
        if seqs != list(range(len(seqs))):
            dupes = len(seqs) - len(set(seqs))
            report.violations.append(
                f"{where}: seqs not contiguous from 0 ({dupes} repeated; got {seqs[:5]}...)")
        if len(set(ids)) != len(ids):
            report.violations.append(f"{where}: an event id was delivered twice")
        terminal = [e for e in s.events if e.event in sse_client.TERMINAL]
        if len(terminal) != 1 or (s.events and s.events[-1] is not terminal[-1]):
            report.violations.append(f"{where}: {len(terminal)} terminal events, or not last")
        elif terminal[0].event != "result":
            report.violations.append(f"{where}: ended with {terminal[0].event}")
        else:
            text = json.loads(terminal[0].data)["data"]["text"]
            if text != expected_text(s.query, s.tokens):
                report.violations.append(f"{where}: result text differs from the spec")
        bad = [a for a in s.answers if a not in (200, 204, 502, 503, 504)]
        if bad:
            report.violations.append(f"{where}: reconnects answered {bad}")
        if 204 in s.answers and not s.done:
            report.violations.append(f"{where}: 204 before the terminal event")


# --- the run -------------------------------------------------------------------------

class Run:
    def __init__(self, workdir: Path, *, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.broker: Proc | None = None
        self.bootstrap = ""
        self.env: dict[str, str] = {}
        self.gateway_ports = [free_port(), free_port()]
        self.gateways: dict[int, Proc] = {}
        self.workers: list[Proc] = []
        self.lb = ""
        self.procs: list[Proc] = []
        self.report = Report()
        self.generation = 0

    def _name(self, kind: str) -> str:
        self.generation += 1
        return f"{kind}-{self.generation}"

    def start_broker(self) -> None:
        self.broker = Proc(self._name("kafka"), ["kafka", "--data-dir",
                                                  str(self.workdir / "kafka")],
                           base_env(), self.workdir)
        self.procs.append(self.broker)
        line = self.broker.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", timeout=120)
        self.bootstrap = line.split("=", 1)[1]

    def start_gateway(self, i: int) -> Proc:
        proc = Proc(self._name(f"gateway{i}"), ["gateway", "--port", str(self.gateway_ports[i])],
                    self.env, self.workdir)
        self.procs.append(proc)
        self.gateways[i] = proc
        return proc

    def start_worker(self) -> Proc:
        proc = Proc(self._name("worker"), ["worker"], self.env, self.workdir)
        self.procs.append(proc)
        self.workers.append(proc)
        return proc

    async def start(self) -> None:
        self.start_broker()
        self.env = base_env(TIDEMARK_KAFKA_BOOTSTRAP=self.bootstrap, TIDEMARK_PARTITIONS="6",
                            TIDEMARK_HEARTBEAT_SECONDS="1", TIDEMARK_SSE_RETRY_MS="200",
                            TIDEMARK_REQUEST_TIMEOUT="5", TIDEMARK_SHUTDOWN_GRACE="2")
        for _ in range(2):
            self.start_worker()
        for i in range(2):
            self.start_gateway(i)
        for i, proc in self.gateways.items():
            await wait_ready(f"http://127.0.0.1:{self.gateway_ports[i]}", proc)
        haproxy, self.lb = start_haproxy(
            [f"http://127.0.0.1:{p}" for p in self.gateway_ports], self.workdir)
        self.procs.append(haproxy)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=10)

    def _count(self, kind: str) -> None:
        self.report.kills[kind] = self.report.kills.get(kind, 0) + 1

    async def chaos(self, seconds: float) -> None:
        """Kill something every few seconds; bring it back shortly after. The first kills
        are one of each kind, in order, and every kind is killed once however short the
        run."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        kinds = ["worker", "gateway", "broker-term", "broker-kill"]
        while loop.time() < end or len(self.report.kills) < len(kinds):
            await asyncio.sleep(self.rng.uniform(3, 7))
            kind = kinds[len(self.report.kills) % len(kinds)] if len(self.report.kills) < 4 \
                else self.rng.choice(kinds)
            self._count(kind)
            if kind == "worker":
                victim = self.rng.choice([w for w in self.workers if w.alive])
                victim.stop(signal.SIGKILL)
                self.workers.remove(victim)
                await asyncio.sleep(self.rng.uniform(0.5, 2))
                self.start_worker()
            elif kind == "gateway":
                i = await self.busiest_gateway()
                self.gateways[i].stop(signal.SIGKILL)
                await asyncio.sleep(self.rng.uniform(0.5, 2))
                self.start_gateway(i)
            else:
                assert self.broker is not None
                self.broker.stop(signal.SIGTERM if kind == "broker-term" else signal.SIGKILL)
                await asyncio.sleep(self.rng.uniform(1, 3))
                self.start_broker()

    async def busiest_gateway(self) -> int:
        """The gateway with the most open SSE responses (its own gauge): the load balancer
        may have sent every follower to one gateway (round robin over creates and follows
        alternates), and killing the other would drop nobody. A coin on a tie."""
        open_: dict[int, float] = {}
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            for i, port in enumerate(self.gateway_ports):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics",
                                        timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        text = await resp.text()
                    open_[i] = next(float(line.split()[-1]) for line in text.splitlines()
                                    if line.startswith("tidemark_sse_connections "))
                except (aiohttp.ClientError, TimeoutError, StopIteration, ValueError):
                    open_[i] = -1.0
        top = max(open_.values())
        return self.rng.choice([i for i, n in open_.items() if n == top])

    async def create(self, http: aiohttp.ClientSession, i: int, *,
                     token_range: tuple[int, int] = (100, 250)) -> Followed:
        query = f"chaos stream {i}: what survives a crash?"
        tokens = self.rng.randint(*token_range)
        body = {"query": query, "options": {"tokens": tokens, "tokens_per_second": 10}}
        for _ in range(120):
            try:
                async with http.post(f"{self.lb}/v1/streams", json=body) as resp:
                    if resp.status == 201:
                        sid = (await resp.json())["stream_id"]
                        return Followed(sid, query, tokens)
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
        raise AssertionError("could not create a stream for a minute")


class ClusterRun(Run):
    """A run on an N-node KRaft cluster whose chaos kills the leaders of the events topic."""

    def __init__(self, workdir: Path, *, seed: int, nodes: int) -> None:
        super().__init__(workdir, seed=seed)
        self.cluster = LocalCluster(ClusterConfig(
            jars_dir=REPO / ".cache" / "kafka" / "libs", nodes=nodes,
            data_dir=workdir / "kafka-cluster"))
        self.topic = events_topic("default")
        self.kill_times: list[tuple[float, float]] = []  # (kill, back in sync)

    def start_broker(self) -> None:
        raise NotImplementedError("the cluster is started by start()")

    async def start(self) -> None:
        await self.cluster.start()
        self.bootstrap = self.cluster.bootstrap
        self.env = base_env(TIDEMARK_KAFKA_BOOTSTRAP=self.bootstrap, TIDEMARK_PARTITIONS="6",
                            TIDEMARK_HEARTBEAT_SECONDS="1", TIDEMARK_SSE_RETRY_MS="200",
                            TIDEMARK_REQUEST_TIMEOUT="5", TIDEMARK_SHUTDOWN_GRACE="2")
        for _ in range(2):
            self.start_worker()
        for i in range(2):
            self.start_gateway(i)
        for i, proc in self.gateways.items():
            await wait_ready(f"http://127.0.0.1:{self.gateway_ports[i]}", proc)
        haproxy, self.lb = start_haproxy(
            [f"http://127.0.0.1:{p}" for p in self.gateway_ports], self.workdir)
        self.procs.append(haproxy)
        await self.cluster.wait_in_sync()

    async def stop_all(self) -> None:
        self.stop()
        await self.cluster.stop()

    async def leader(self, exclude: set[int]) -> tuple[int, list[int]]:
        """The node leading the most events partitions (not one of ``exclude``), and those
        partitions."""
        leaders = await self.cluster.leaders(self.topic)
        led: dict[int, list[int]] = {}
        for partition, node in sorted(leaders.items()):
            if node >= 0 and node not in exclude:
                led.setdefault(node, []).append(partition)
        node = max(led, key=lambda n: (len(led[n]), -n))
        return node, led[node]

    async def chaos(self, seconds: float) -> None:
        """Two leader kills: the first after a fifth of the run, the second once the first
        node is back and every partition is in sync again."""
        await asyncio.sleep(max(5.0, seconds / 5))
        victims: set[int] = set()
        for _ in range(2):
            node, partitions = await self.leader(victims)
            victims.add(node)
            self._count("broker-kill")
            killed = time.monotonic()
            await self.cluster.kill(node)
            await asyncio.sleep(self.rng.uniform(2, 4))
            await self.cluster.restart(node)
            back = time.monotonic()
            await self.cluster.wait_in_sync()
            in_sync = time.monotonic()
            self.kill_times.append((killed, in_sync))
            self.report.broker_kills.append({
                "node": node, "led_partitions": partitions,
                "restarted_after_s": round(back - killed, 3),
                "in_sync_after_s": round(in_sync - killed, 3)})
            await asyncio.sleep(2)

    def measure(self, streams: list[Followed]) -> None:
        for (killed, in_sync), entry in zip(self.kill_times, self.report.broker_kills,
                                            strict=True):
            gaps = stall(streams, killed, in_sync)
            entry.update({"streams_mid_answer": len(gaps),
                          "stall_max_s": round(max(gaps), 3) if gaps else None,
                          "stall_p50_s": _percentile(gaps, 0.5),
                          "stall_p95_s": _percentile(gaps, 0.95)})
        if self.kill_times:
            self.report.quiet_max_gap_s = round(quiet_gap(streams, self.kill_times[0][0]), 3)


async def run_cluster(seconds: float, streams: int, seed: int, workdir: Path, *,
                      nodes: int = 3) -> Report:
    """The ``--cluster`` run: ``streams`` demo streams created over ``seconds`` (each 15 to
    30 s long, so streams are mid-answer at both kills) on an ``nodes``-node cluster."""
    r = ClusterRun(workdir, seed=seed, nodes=nodes)
    try:
        await r.start()
        followed: list[Followed] = []
        tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds + 180
        chaos = asyncio.create_task(r.chaos(seconds))
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            for i in range(streams):
                stream = await r.create(http, i, token_range=(150, 300))
                followed.append(stream)
                tasks.append(asyncio.create_task(follow(r.lb, stream, deadline)))
                await asyncio.sleep(seconds / streams * 0.6)
        await chaos
        await asyncio.gather(*tasks)
        check(followed, r.report)
        r.measure(followed)
        return r.report
    finally:
        await r.stop_all()


async def follow(lb: str, stream: Followed, deadline: float) -> None:
    """A client: reconnect with Last-Event-ID after every drop, until the end."""
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        last = next((e.id for e in reversed(stream.events) if e.id), None)
        stream.attempts += 1
        try:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True),
                    headers=auth_headers()) as http:
                reply = await sse_client.read(http, f"{lb}/v1/streams/{stream.stream_id}/events",
                                              last_event_id=last, sink=stream.events,
                                              idle_timeout=15)
            stream.answers.append(reply.status)
            if reply.status == 204 or (stream.events and
                                       stream.events[-1].event in sse_client.TERMINAL):
                stream.done = any(e.event in sse_client.TERMINAL for e in stream.events)
                return
        except (aiohttp.ClientError, AssertionError, ConnectionError, TimeoutError):
            stream.drops += 1
        await asyncio.sleep(0.2)


async def run(seconds: float, streams: int, seed: int, workdir: Path) -> Report:
    r = Run(workdir, seed=seed)
    try:
        await r.start()
        followed: list[Followed] = []
        tasks: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds + 180
        chaos = asyncio.create_task(r.chaos(seconds))
        async with aiohttp.ClientSession(headers=auth_headers()) as http:
            for i in range(streams):
                stream = await r.create(http, i)
                followed.append(stream)
                tasks.append(asyncio.create_task(follow(r.lb, stream, deadline)))
                await asyncio.sleep(seconds / streams / 2)
        await chaos
        await asyncio.gather(*tasks)
        check(followed, r.report)
        return r.report
    finally:
        r.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--streams", type=int, default=60)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--cluster", type=int, metavar="N", default=0,
                        help="run on an N-node KRaft cluster and kill the events topic's "
                        "leaders (N >= 3 keeps a quorum and two in-sync replicas)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="run in DIR and keep every process's logs there")
    args = parser.parse_args()
    with run_dir(args.keep, "tidemark-chaos-") as tmp:
        if args.cluster:
            report = asyncio.run(run_cluster(args.seconds, args.streams, args.seed, tmp,
                                             nodes=args.cluster))
        else:
            report = asyncio.run(run(args.seconds, args.streams, args.seed, tmp))
    sys.stdout.write(json.dumps({"seed": args.seed, **report.as_dict()}, indent=2) + "\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
