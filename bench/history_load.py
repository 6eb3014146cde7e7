"""Processes of the ``history`` scenario: write many finished streams, check a sample.

    python -m bench.history_load write --n N --out ids.txt [--path sdk|fast] [--concurrency C]
    python -m bench.history_load check --gateway URL --ids ids.txt --sample 200 [--seed S]
    python -m bench.history_load open --ids ids.txt
    python -m bench.history_load topics

``write`` creates ``N`` streams and finishes each one with a ``result`` event, as
fast as the write path allows, ``--concurrency`` streams in flight. Stream ids are
opaque: each comes from ``workers.publisher.Publisher.create_stream()``.

- ``--path sdk``: only the publisher SDK (``create_stream()``, then ``result({...})``):
  how backend services write streams.
- ``--path fast``: ``create_stream()`` for the stream and its first event, then the
  terminal event and the stream's final index record written the way
  ``eventlog.streams.Appender`` writes them (``send_event`` of the ``result`` at seq 1,
  then the index snapshot with status completed, ``last_seq`` 1 and the terminal
  offset), without the Appender's read of the stream's partition before the append
  (which is what bounds the SDK path; see bench/README.md).

It prints a JSON progress line every ``--progress-s`` and a summary line at the end
(streams, seconds, streams/s, this process's CPU seconds); the ids go to ``--out``,
one a line.

``check`` asks a gateway about a random sample of those streams, as a user would:
:func:`check_stream`. ``open`` times ``Publisher.open_stream`` of the oldest stream.
``topics`` prints the number of records held in each topic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

#: Per-stream latencies kept for the summary's quantiles (the first ones of the run).
_TIMING_SAMPLES = 200_000
RESULT_DATA: dict[str, Any] = {"text": "done", "tokens": 1, "model": "bench-history"}


def out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# write ------------------------------------------------------------------------------

async def _finish_fast(producer: Any, info: Any) -> None:
    """The terminal event and the final index record, as ``Appender`` writes them."""
    from eventlog import index
    from eventlog.streams import now_ms, send_event, terminal_status
    from schemas.events import RESULT, Event

    ev = Event(stream=info.stream_id, seq=1, type=RESULT, ts=now_ms(), data=RESULT_DATA)
    meta = await (await send_event(producer, info.topic, info.partition, ev))
    await (await index.enqueue(producer, info.evolve(
        status=terminal_status(RESULT), last_seq=1, terminal_offset=meta.offset,
        updated_at=now_ms())))


async def write(args: argparse.Namespace) -> dict[str, Any]:
    from eventlog.clients import make_producer, started, stop_client
    from eventlog.settings import load_settings
    from workers.publisher import Publisher

    settings = load_settings(os.environ)
    cpu0 = cpu_seconds()
    done = 0
    ids: list[str] = []
    producer = None
    create_ms: list[float] = []
    finish_ms: list[float] = []
    async with Publisher(settings) as pub:
        if args.path == "fast":
            producer = await started(
                lambda: make_producer(settings.kafka, role="bench-history"), settings.kafka,
                "producer start")
        claim = iter(range(args.n))

        async def worker() -> None:
            nonlocal done
            for _ in claim:
                t_a = time.perf_counter()
                stream = await pub.create_stream()
                t_b = time.perf_counter()
                if producer is None:
                    await stream.result(RESULT_DATA)
                else:
                    await _finish_fast(producer, stream.info)
                t_c = time.perf_counter()
                if len(create_ms) < _TIMING_SAMPLES:
                    create_ms.append(1000 * (t_b - t_a))
                    finish_ms.append(1000 * (t_c - t_b))
                ids.append(stream.stream_id)
                done += 1

        async def progress(t0: float) -> None:
            while True:
                await asyncio.sleep(args.progress_s)
                el = time.monotonic() - t0
                out({"kind": "progress", "streams": done, "seconds": round(el, 1),
                     "streams_per_s": round(done / el, 1), "cpu_s": round(cpu_seconds() - cpu0, 2)})

        t0 = time.monotonic()
        reporter = asyncio.create_task(progress(t0))
        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(args.concurrency, args.n)):
                    tg.create_task(worker())
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            if producer is not None:
                await stop_client(producer)
            args.out.write_text("".join(f"{i}\n" for i in ids))
        elapsed = time.monotonic() - t0
    return {"kind": "written", "path": args.path, "streams": done,
            "concurrency": args.concurrency, "seconds": round(elapsed, 3),
            "streams_per_s": round(done / elapsed, 1) if elapsed else 0.0,
            "cpu_s": round(cpu_seconds() - cpu0, 3),
            "create_stream_ms": _quantiles(create_ms), "finish_ms": _quantiles(finish_ms)}


def _quantiles(xs: list[float]) -> dict[str, float | None]:
    """p50 and p99 of per-stream latencies (the first samples of the run)."""
    if not xs:
        return {"p50": None, "p99": None}
    ys = sorted(xs)
    return {"p50": round(ys[len(ys) // 2], 2), "p99": round(ys[int(len(ys) * 0.99)], 2)}


# check ------------------------------------------------------------------------------

@dataclass
class StreamCheck:
    """What a user would check of one finished stream through one gateway."""

    stream_id: str
    status_ok: bool = False
    ended_204: bool = False
    replay_ok: bool = False
    problems: list[str] = field(default_factory=list)
    #: Milliseconds of each request: status, resume at the terminal id, whole replay.
    ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status_ok and self.ended_204 and self.replay_ok


def parse_sse(text: str) -> list[dict[str, str]]:
    """The events of an SSE body (``id``, ``event``, ``data``), comments skipped."""
    events: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line:
            if "data" in cur:
                events.append(cur)
            cur = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            cur["data"] = cur["data"] + "\n" + value if "data" in cur else value
        elif name in ("id", "event"):
            cur[name] = value
    return events


async def check_stream(http: aiohttp.ClientSession, base: str, stream_id: str, *,
                       timeout: float = 20.0) -> StreamCheck:
    """``GET /v1/streams/{id}`` says completed with a ``terminal_event_id``; the events
    with ``Last-Event-ID`` = that id answer 204; without it, the whole stream replays:
    seq 0 up to the terminal event, once each, in order, and the response ends."""
    res = StreamCheck(stream_id)
    to = aiohttp.ClientTimeout(total=timeout)
    t0 = time.perf_counter()
    async with http.get(f"{base}/v1/streams/{stream_id}", timeout=to) as resp:
        body = await resp.text()
    res.ms["status"] = 1000 * (time.perf_counter() - t0)
    terminal_id = None
    if resp.status != 200:
        res.problems.append(f"status: HTTP {resp.status} {body[:200]}")
    else:
        st = json.loads(body)
        terminal_id = st.get("terminal_event_id")
        res.status_ok = st.get("status") == "completed" and bool(terminal_id)
        if not res.status_ok:
            res.problems.append(f"status: {st.get('status')!r}, terminal {terminal_id!r}")
    url = f"{base}/v1/streams/{stream_id}/events"
    if terminal_id:
        t0 = time.perf_counter()
        async with http.get(url, headers={"Last-Event-ID": terminal_id}, timeout=to) as resp:
            body = await resp.text()
        res.ms["resume_204"] = 1000 * (time.perf_counter() - t0)
        res.ended_204 = resp.status == 204
        if not res.ended_204:
            res.problems.append(f"resume at terminal: HTTP {resp.status} {body[:200]}")
    t0 = time.perf_counter()
    async with http.get(url, timeout=to) as resp:
        body = await resp.text()  # the response ends after the terminal event
    res.ms["replay"] = 1000 * (time.perf_counter() - t0)
    if resp.status != 200:
        res.problems.append(f"replay: HTTP {resp.status} {body[:200]}")
        return res
    evs = parse_sse(body)
    seqs, types = [], []
    for ev in evs:
        env = orjson.loads(ev["data"])
        seqs.append(env.get("seq"))
        types.append(ev.get("event", "message"))
        if env.get("stream") != stream_id:
            res.problems.append(f"replay: an event of stream {env.get('stream')!r}")
    res.replay_ok = (bool(evs) and seqs == list(range(len(seqs))) and types[-1] == "result"
                     and all(t != "result" for t in types[:-1])
                     and (terminal_id is None or evs[-1].get("id") == terminal_id))
    if not res.replay_ok:
        res.problems.append(f"replay: seqs {seqs[:10]}, types {types[:10]}, last id "
                            f"{evs[-1].get('id') if evs else None!r} vs {terminal_id!r}")
    return res


async def check(args: argparse.Namespace) -> dict[str, Any]:
    ids = [x for x in args.ids.read_text().split() if x]
    sample = random.Random(args.seed).sample(ids, min(args.sample, len(ids)))
    sem = asyncio.Semaphore(args.concurrency)
    t0 = time.monotonic()
    async with aiohttp.ClientSession() as http:
        async def one(sid: str) -> StreamCheck:
            async with sem:
                try:
                    return await check_stream(http, args.gateway, sid)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    return StreamCheck(sid, problems=[f"{type(exc).__name__}: {exc}"])
        results = await asyncio.gather(*(one(s) for s in sample))
    bad = [asdict(r) for r in results if not r.ok]
    return {"kind": "checked", "gateway": args.gateway, "sample": len(sample),
            "passed": sum(r.ok for r in results),
            "status_completed": sum(r.status_ok for r in results),
            "resume_at_terminal_204": sum(r.ended_204 for r in results),
            "full_replay_exact": sum(r.replay_ok for r in results),
            "seconds": round(time.monotonic() - t0, 2),
            "request_ms": {k: _quantiles([r.ms[k] for r in results if k in r.ms])
                           for k in ("status", "resume_204", "replay")},
            "failures": bad[:5]}


# open -------------------------------------------------------------------------------

async def open_first(args: argparse.Namespace) -> dict[str, Any]:
    """``Publisher.open_stream`` of the oldest stream written (a backend service that
    picks up a stream created elsewhere): how long it takes, and what it found."""
    from eventlog.settings import load_settings
    from workers.publisher import Publisher

    stream_id = next(x for x in args.ids.read_text().split() if x)
    cpu0 = cpu_seconds()
    async with Publisher(load_settings(os.environ)) as pub:
        t0 = time.monotonic()
        writer = await pub.open_stream(stream_id)
        took = time.monotonic() - t0
    return {"kind": "opened", "open_stream_s": round(took, 3), "next_seq": writer.next_seq,
            "cpu_s": round(cpu_seconds() - cpu0, 3)}


# topics -----------------------------------------------------------------------------

async def topics() -> dict[str, Any]:
    """Records held (end minus start offset, summed over partitions) in every topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from eventlog.settings import load_settings

    bootstrap = load_settings(os.environ).kafka.bootstrap
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-history-topics")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="bench-history-topics")
    await admin.start()
    await consumer.start()
    try:
        names = sorted(t for t in await admin.list_topics() if not t.startswith("__"))
        tps = [TopicPartition(d["topic"], p["partition"])
               for d in await admin.describe_topics(names) for p in d["partitions"]]
        first = await consumer.beginning_offsets(tps)
        last = await consumer.end_offsets(tps)
        held = {t: 0 for t in names}
        for tp in tps:
            held[tp.topic] += last[tp] - first[tp]
    finally:
        await consumer.stop()
        await admin.close()
    return {"kind": "topics", "records": held}


# main -------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.history_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="create and finish streams")
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--out", type=Path, required=True, help="stream ids, one a line")
    w.add_argument("--path", choices=("sdk", "fast"), default="fast")
    w.add_argument("--concurrency", type=int, default=500)
    w.add_argument("--progress-s", type=float, default=5.0)
    c = sub.add_parser("check", help="exactness spot checks through a gateway")
    c.add_argument("--gateway", required=True)
    c.add_argument("--ids", type=Path, required=True)
    c.add_argument("--sample", type=int, default=200)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--concurrency", type=int, default=10)
    o = sub.add_parser("open", help="time Publisher.open_stream of the oldest stream")
    o.add_argument("--ids", type=Path, required=True)
    sub.add_parser("topics", help="records held per topic")
    return p


async def main_async(args: argparse.Namespace) -> int:
    if args.command == "write":
        out(await write(args))
    elif args.command == "check":
        out(await check(args))
    elif args.command == "open":
        out(await open_first(args))
    else:
        out(await topics())
    return 0


def main() -> int:
    args = parser().parse_args()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_async(args))
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
