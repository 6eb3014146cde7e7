"""The fan-out hub: one tail consumer per gateway process, routed by stream id.

The hub reads every partition of the namespace's events topic (manual assignment,
read_committed) from the end it finds at start. Each record is framed as SSE once,
kept in a per-partition memory tail bounded by bytes, and pushed to the subscribers
of its stream. A subscriber's buffer is bounded too: past it, the subscriber is
marked overflowed and its response ends, and the client resumes from its last id.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventlog.clients import make_consumer, started, stop_client
from eventlog.records import LogRecord
from eventlog.settings import KafkaSettings
from gateway import sse
from schemas.eventid import encode_event_id
from schemas.events import TERMINAL_TYPES

log = logging.getLogger(__name__)

_ROUTE_SLICE = 256


class Frame(NamedTuple):
    """One event as the gateway serves it: position, routing fields, SSE bytes."""

    offset: int
    key: bytes
    seq: int
    terminal: bool
    data: bytes


def frame_record(epoch: str, rec: LogRecord) -> Frame:
    frame = sse.frame_event(rec.value, event=rec.type,
                            id=encode_event_id(epoch, rec.partition, rec.offset))
    return Frame(rec.offset, rec.key, rec.seq, rec.type in TERMINAL_TYPES, frame)


class PartitionTail:
    """Recent frames of one partition, oldest first, at most ``limit`` bytes."""

    def __init__(self, start: int, limit: int) -> None:
        self._frames: list[Frame] = []
        self._head = 0
        self._bytes = 0
        self._limit = limit
        #: Every offset from here up to ``next_offset`` that holds a visible record is
        #: in the tail.
        self.covered_from = start
        #: The next offset the hub will read.
        self.next_offset = start

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames) - self._head

    def append(self, frame: Frame) -> None:
        self._frames.append(frame)
        self._bytes += len(frame.data)
        while self._bytes > self._limit and self._head < len(self._frames):
            old = self._frames[self._head]
            self._bytes -= len(old.data)
            self._head += 1
            self.covered_from = old.offset + 1
        if self._head > 1024 and self._head * 2 > len(self._frames):
            del self._frames[: self._head]
            self._head = 0

    def covers(self, offset: int) -> bool:
        return offset >= self.covered_from

    def since(self, start: int, key: bytes) -> list[Frame]:
        """This stream's frames from offset ``start`` on (a snapshot)."""
        i = bisect.bisect_left(self._frames, start, lo=self._head, key=lambda f: f.offset)
        return [f for f in self._frames[i:] if f.key == key]


class Subscriber:
    """A client's live feed: a bounded buffer of frames, filled by the hub."""

    def __init__(self, partition: int, key: bytes, limit: int) -> None:
        self.partition = partition
        self.key = key
        self._limit = limit
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self.overflowed = False
        self.wakeup = asyncio.Event()

    def push(self, frame: Frame) -> None:
        if self.overflowed:
            return
        if self._bytes + len(frame.data) > self._limit:
            self.overflowed = True
            self._frames.clear()
            self._bytes = 0
        else:
            self._frames.append(frame)
            self._bytes += len(frame.data)
        self.wakeup.set()

    def drain(self) -> Iterator[Frame]:
        self.wakeup.clear()
        while self._frames:
            frame = self._frames.popleft()
            self._bytes -= len(frame.data)
            yield frame


class Hub:
    """Tails one events topic and routes its records to subscribers by stream id."""

    def __init__(self, kafka: KafkaSettings, *, topic: str, epoch: str, tail_bytes: int,
                 client_buffer_bytes: int) -> None:
        self._kafka = kafka
        self.topic = topic
        self.epoch = epoch
        self._tail_bytes = tail_bytes
        self._client_buffer = client_buffer_bytes
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: dict[int, TopicPartition] = {}
        self.tails: dict[int, PartitionTail] = {}
        self._subs: dict[tuple[int, bytes], set[Subscriber]] = {}
        self._progress = asyncio.Condition()
        self.records_routed = 0

    @property
    def ready(self) -> bool:
        return bool(self.tails)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def start(self) -> None:
        self._consumer = await started(
            lambda: make_consumer(self._kafka, role="hub", fetch_max_wait_ms=50,
                                  max_partition_fetch_bytes=4 * 1024 * 1024),
            self._kafka, "hub start")
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            await self._consumer._client.force_metadata_update()
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
        if not partitions:
            raise RuntimeError(f"topic {self.topic} has no partitions")
        self._tps = {p: TopicPartition(self.topic, p) for p in sorted(partitions)}
        self._consumer.assign(list(self._tps.values()))
        await self._consumer.seek_to_end(*self._tps.values())
        for p, tp in self._tps.items():
            start = await self._consumer.position(tp)
            self.tails[p] = PartitionTail(start, self._tail_bytes)
        log.info("hub tails %s partitions of %s", len(self._tps), self.topic)

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_client(self._consumer)
            self._consumer = None

    def position(self, partition: int) -> int:
        return self.tails[partition].next_offset

    def subscribe(self, partition: int, key: bytes) -> tuple[Subscriber, int]:
        """A new subscriber, and the offset from which it will receive every frame."""
        sub = Subscriber(partition, key, self._client_buffer)
        self._subs.setdefault((partition, key), set()).add(sub)
        return sub, self.tails[partition].next_offset

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get((sub.partition, sub.key))
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[(sub.partition, sub.key)]

    def wake_all(self) -> None:
        """Wake every subscriber (on shutdown, so open responses can end)."""
        for subs in self._subs.values():
            for sub in subs:
                sub.wakeup.set()

    async def wait_position(self, partition: int, offset: int, timeout: float) -> bool:
        """Wait until the hub has read past ``offset`` - 1 in ``partition``."""
        async def reached() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self.position(partition) >= offset)
        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for tp, records in batches.items():
                for i in range(0, len(records), _ROUTE_SLICE):
                    self._route(tp.partition, records[i:i + _ROUTE_SLICE])
                    # Let handlers write out between slices, so a burst from one fetch
                    # does not pile up in every subscriber's buffer at once.
                    await asyncio.sleep(0)
                self.tails[tp.partition].next_offset = max(
                    self.tails[tp.partition].next_offset, await consumer.position(tp))
            if batches:
                async with self._progress:
                    self._progress.notify_all()

    def _route(self, partition: int, records: list[object]) -> None:
        tail = self.tails[partition]
        subs = self._subs
        for raw in records:
            rec = LogRecord.from_consumer(raw)
            offset: int = raw.offset  # type: ignore[attr-defined]
            tail.next_offset = offset + 1
            if rec is None:
                continue
            frame = frame_record(self.epoch, rec)
            tail.append(frame)
            self.records_routed += 1
            for sub in subs.get((partition, rec.key), ()):
                sub.push(frame)
