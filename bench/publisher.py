"""The benchmark's publisher: creates external streams and writes their events to Kafka.

Records are written exactly as Tidemark writes them (``eventlog.streams.send_event``:
key = stream id, orjson envelope, ``tm-type``/``tm-seq`` headers) with the producer
Tidemark uses (``eventlog.clients.make_producer``: idempotent, acks=all, linger 2 ms).
Each ``partial_result`` carries ``bench_ns`` (unix ns at send time) in its data, so a
client measures publish-to-receive latency on the same machine clock.

Subcommands (settings from the usual ``TIDEMARK_*`` variables)::

    python -m bench.publisher create  --n N --out streams.jsonl [--via kafka|http --gateway URL]
    python -m bench.publisher publish --streams streams.jsonl --state seqs.json \
        --rate 5000 --duration 12 [--payload 200 | --tokens]
    python -m bench.publisher seed    --streams streams.jsonl --state seqs.json \
        --count 20 --out offsets.json

``create --via kafka`` uses ``eventlog.streams.StreamCreator`` directly (what the
gateway's ``POST /v1/streams`` runs for an external stream: first event, then the
index record), in concurrent batches: thousands of streams in seconds, without
spending the measured gateway's CPU or memory on the set-up. ``--via http`` goes
through a gateway (used for placements only the gateway knows, e.g.
topic-per-stream) and then reads each stream's topic and partition from the index.

``publish`` spreads a steady total rate over the streams round-robin, in ticks of
``--tick-ms``: each tick queues what is due (at most ``--max-batch`` events) without
awaiting each send, then gathers the tick's futures. It prints ``PUBLISHING`` when it
starts and one JSON summary line when it ends (after ``--duration`` or on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from eventlog.clients import make_admin, make_producer, started, stop_client
from eventlog.index import StreamIndex, StreamInfo
from eventlog.reader import LogReader
from eventlog.settings import Settings, load_settings
from eventlog.streams import StreamCreator, send_event
from eventlog.topicids import fetch_topic_ids
from eventlog.topics import STREAMS_TOPIC, ensure_topics, events_topic
from schemas.events import PARTIAL_RESULT, Event
from workers.demo import demo_tokens


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def load_streams(path: Path) -> list[StreamInfo]:
    return [StreamInfo.from_json(line.encode()) for line in path.read_text().splitlines()
            if line.strip()]


def shard(streams: list[StreamInfo], spec: str) -> list[StreamInfo]:
    """``i/n``: every n-th stream from the i-th (so n publishers split the streams)."""
    i, n = (int(x) for x in spec.split("/"))
    return streams[i::n]


async def ensure_namespace(settings: Settings) -> None:
    admin = await started(lambda: make_admin(settings.kafka, role="bench-admin"),
                          settings.kafka, "admin start")
    try:
        await ensure_topics(admin, settings.log)
        topics = [events_topic(settings.log.namespace), STREAMS_TOPIC]
        for _ in range(300):
            ids = await fetch_topic_ids(admin._client, topics)
            if all(t in ids for t in topics):
                break
            await asyncio.sleep(0.1)
    finally:
        await stop_client(admin)


async def start_producer(settings: Settings) -> AIOKafkaProducer:
    return await started(lambda: make_producer(settings.kafka, role="bench-publisher"),
                         settings.kafka, "producer start")


async def create_kafka(settings: Settings, n: int, prefix: str, concurrency: int,
                       ) -> list[StreamInfo]:
    await ensure_namespace(settings)
    producer = await start_producer(settings)
    reader = LogReader(settings.kafka, size=2, role="bench-floor")
    try:
        # Self-describing ids, as the gateway makes them (``prefix`` is not needed).
        creator = StreamCreator(settings.log, producer, floor=reader.floor)
        infos: list[StreamInfo] = []
        for lo in range(0, n, concurrency):
            batch = [creator.create(generator="external", query="bench", options=None,
                                    with_job=False,
                                    tenant="default")
                     for _ in range(lo, min(n, lo + concurrency))]
            infos.extend(await asyncio.wait_for(asyncio.gather(*batch), 60))
        return infos
    finally:
        await reader.close()
        await stop_client(producer)


async def create_http(settings: Settings, n: int, gateway: str, concurrency: int,
                      ) -> list[StreamInfo]:
    ids: list[str] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async def one() -> str:
            async with http.post(f"{gateway}/v1/streams",
                                 json={"query": "bench", "generator": "external"}) as resp:
                body = await resp.text()
                if resp.status != 201:
                    raise RuntimeError(f"POST /v1/streams -> {resp.status}: {body[:300]}")
                stream_id: str = json.loads(body)["stream_id"]
                return stream_id

        for lo in range(0, n, concurrency):
            ids.extend(await asyncio.gather(*(one() for _ in range(lo, min(n, lo + concurrency)))))
    index = StreamIndex(settings.kafka)
    await index.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            await index.load(timeout=10)
            infos = [index.get(i) for i in ids]
            if all(infos) or time.monotonic() > deadline:
                break
        missing = [i for i, info in zip(ids, infos, strict=True) if info is None]
        if missing:
            raise RuntimeError(f"{len(missing)} created streams not in the index, "
                               f"e.g. {missing[0]}")
        return [i for i in infos if i is not None]
    finally:
        await index.stop()


def make_event(info: StreamInfo, seq: int, chunk: str) -> Event:
    return Event(stream=info.stream_id, seq=seq, type=PARTIAL_RESULT, ts=int(time.time() * 1000),
                 data={"chunk": chunk, "chunkIndex": seq - 1, "isComplete": False,
                       "bench_ns": time.time_ns()})


def token_event(info: StreamInfo, seq: int, tokens: list[str]) -> Event:
    """A token as ``workers.demo`` writes it (``publish --tokens``): the demo's words in
    order, no padding and no ``bench_ns`` (what a compressor meets on a real answer)."""
    return Event(stream=info.stream_id, seq=seq, type=PARTIAL_RESULT, ts=int(time.time() * 1000),
                 data={"chunk": tokens[(seq - 1) % len(tokens)], "chunkIndex": seq - 1,
                       "isComplete": False})


def chunk_for(payload: int, sample: StreamInfo) -> str:
    """A chunk that makes the record value (the envelope) about ``payload`` bytes."""
    base = len(make_event(sample, 1_000_000, "").to_json())
    return "x" * max(1, payload - base)


class Stop:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.event.set)


def read_state(state_dir: Path | None, streams: list[StreamInfo]) -> dict[str, int]:
    """The next seq of each stream, from every state file in ``state_dir`` (the highest
    wins, so publishers that split the streams differently agree)."""
    state = {s.stream_id: 1 for s in streams}
    if state_dir is not None and state_dir.is_dir():
        for path in sorted(state_dir.glob("seq-*.json")):
            for k, v in json.loads(path.read_text()).items():
                if k in state and v > state[k]:
                    state[k] = v
    return state


def write_state(state_dir: Path | None, state: dict[str, int], name: str) -> None:
    if state_dir is None:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / f"seq-{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)


async def publish(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    streams = shard(load_streams(args.streams), args.shard)
    if not streams:
        raise SystemExit("no streams")
    state = read_state(args.state, streams)
    chunk = chunk_for(args.payload, streams[0])
    tokens = demo_tokens("bench tokens", 400) if args.tokens else None
    producer = await start_producer(settings)
    stop = Stop()
    sent = acked = errors = 0
    behind_ticks = 0
    max_behind = 0
    tick = args.tick_ms / 1000
    cpu0 = cpu_seconds()
    try:
        out("PUBLISHING")
        t0 = time.monotonic()
        end = t0 + args.duration
        rr = 0
        nxt = t0
        while not stop.event.is_set():
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - t0) * args.rate) - sent
            behind = max(0, due - args.max_batch)
            max_behind = max(max_behind, behind)
            behind_ticks += behind > 0
            batch = min(due, args.max_batch)
            futures = []
            for _ in range(batch):
                info = streams[rr]
                rr = (rr + 1) % len(streams)
                seq = state[info.stream_id]
                state[info.stream_id] = seq + 1
                event = make_event(info, seq, chunk) if tokens is None else \
                    token_event(info, seq, tokens)
                futures.append(await send_event(producer, info.topic, info.partition, event))
            sent += batch
            if futures:
                for res in await asyncio.gather(*futures, return_exceptions=True):
                    if isinstance(res, BaseException):
                        errors += 1
                    else:
                        acked += 1
            nxt += tick
            delay = nxt - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.event.wait(), delay)
                except TimeoutError:
                    pass
            else:
                nxt = time.monotonic()
        elapsed = time.monotonic() - t0
    finally:
        await stop_client(producer)
        write_state(args.state, state, args.shard.replace("/", "of"))
    return {"kind": "publisher", "target_rate": args.rate, "streams": len(streams),
            "payload_bytes": len(make_event(streams[0], 1000, chunk).to_json()),
            "sent": sent, "acked": acked, "errors": errors, "elapsed_s": round(elapsed, 3),
            "achieved_rate": round(acked / elapsed, 1) if elapsed else 0.0,
            "ticks_behind": behind_ticks, "max_events_behind": max_behind,
            "cpu_s": round(cpu_seconds() - cpu0, 3)}


async def seed(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """``--count`` events per stream, as fast as bounded batches go; records offsets."""
    streams = load_streams(args.streams)
    state = read_state(args.state, streams)
    chunk = chunk_for(args.payload, streams[0])
    producer = await start_producer(settings)
    offsets: dict[str, dict[str, Any]] = {
        s.stream_id: {"topic": s.topic, "partition": s.partition, "seqs": {}} for s in streams}
    try:
        for _ in range(args.count):
            futures = []
            for info in streams:
                seq = state[info.stream_id]
                state[info.stream_id] = seq + 1
                fut = await send_event(producer, info.topic, info.partition,
                                       make_event(info, seq, chunk))
                futures.append((info.stream_id, seq, fut))
            for stream_id, seq, fut in futures:
                meta = await asyncio.wait_for(fut, 30)
                offsets[stream_id]["seqs"][str(seq)] = meta.offset
    finally:
        await stop_client(producer)
        write_state(args.state, state, "seed")
    args.out.write_text(json.dumps(offsets))
    return {"kind": "seed", "streams": len(streams), "count": args.count}


async def main_async(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ)
    if args.command == "create":
        t0 = time.monotonic()
        if args.via == "kafka":
            infos = await create_kafka(settings, args.n, args.prefix, args.concurrency)
        else:
            infos = await create_http(settings, args.n, args.gateway, args.concurrency)
        args.out.write_bytes(b"".join(i.to_json() + b"\n" for i in infos))
        out(json.dumps({"kind": "created", "streams": len(infos), "via": args.via,
                        "seconds": round(time.monotonic() - t0, 3),
                        "topics": len({i.topic for i in infos})}))
    elif args.command == "publish":
        out(json.dumps(await publish(settings, args)))
    elif args.command == "seed":
        out(json.dumps(await seed(settings, args)))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.publisher", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create external streams")
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--via", choices=("kafka", "http"), default="kafka")
    c.add_argument("--gateway", help="gateway base URL for --via http")
    c.add_argument("--prefix", default="b" + os.urandom(4).hex())
    c.add_argument("--concurrency", type=int, default=250)
    for name in ("publish", "seed"):
        s = sub.add_parser(name)
        s.add_argument("--streams", type=Path, required=True)
        s.add_argument("--state", type=Path,
                       help="directory of next-seq files (read, and written at the end)")
        s.add_argument("--payload", type=int, default=200, help="record value bytes")
    pub = sub.choices["publish"]
    pub.add_argument("--rate", type=float, required=True, help="total events/s")
    pub.add_argument("--duration", type=float, required=True)
    pub.add_argument("--tick-ms", type=float, default=10.0)
    pub.add_argument("--max-batch", type=int, default=2000, help="most events in one tick")
    pub.add_argument("--shard", default="0/1", help="i/n: this publisher's share of streams")
    pub.add_argument("--tokens", action="store_true", help="demo-like tokens (no padding, "
                     "no bench_ns) instead of --payload events")
    sd = sub.choices["seed"]
    sd.add_argument("--count", type=int, required=True, help="events per stream")
    sd.add_argument("--out", type=Path, required=True, help="offsets file")
    return p


def main() -> int:
    args = parser().parse_args()
    if args.command == "create" and args.via == "http" and not args.gateway:
        raise SystemExit("--via http needs --gateway")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
