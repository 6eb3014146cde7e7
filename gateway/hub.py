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
from collections.abc import Callable, Iterator
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from eventlog.clients import make_consumer, partitions_of, started, stop_client
from eventlog.records import LogRecord
from eventlog.settings import KafkaSettings
from eventlog.topicids import topic_epoch
from eventlog.topics import wait_for_topics
from gateway import sse
from schemas.eventid import encode_event_id
from schemas.events import TERMINAL_TYPES

log = logging.getLogger(__name__)

_ROUTE_SLICE = 256


#: A frame as the tail keeps it: ``(offset, key, seq, terminal, data)``, like
#: :class:`Frame` (which is a tuple of the same layout) but a plain tuple.
Row = tuple[int, bytes, int, bool, bytes]


class Frame(NamedTuple):
    """One event as the gateway serves it: position, routing fields, SSE bytes."""

    offset: int
    key: bytes
    seq: int
    terminal: bool
    data: bytes


def frame_record(epoch: str, rec: LogRecord) -> Frame:
    frame = sse.frame_event(rec.value, event=rec.type,
                            id=encode_event_id(epoch, rec.partition, rec.offset, rec.seq))
    return Frame(rec.offset, rec.key, rec.seq, rec.type in TERMINAL_TYPES, frame)


#: What a frame costs the tail beyond its bytes (its tuple, list and index slots, its
#: offset and seq), and what a stream costs the index (its key, entry and list), as
#: measured with tracemalloc on CPython 3.11: counted against the tail's limit, so that
#: the limit bounds memory, not just the frames' bytes (small frames are mostly overhead).
FRAME_OVERHEAD = 200
STREAM_OVERHEAD = 280


class _KeyRows:
    """One stream's frames in a tail, oldest first (``rows[head:]``); ``key`` is the one
    bytes object every frame of the stream shares."""

    __slots__ = ("head", "key", "rows")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.rows: list[Row] = []
        self.head = 0

    def drop_oldest(self) -> bool:
        """Forget the oldest frame; True when none is left."""
        self.head += 1
        if self.head == len(self.rows):
            return True
        if self.head > 32 and self.head * 2 > len(self.rows):
            del self.rows[: self.head]
            self.head = 0
        return False


class PartitionTail:
    """Recent frames of one partition, oldest first, within ``limit`` bytes (their bytes
    plus ``FRAME_OVERHEAD`` each and ``STREAM_OVERHEAD`` per stream), with an index by
    stream key (a resume or a lookup reads only its own stream's frames).

    Frames are kept as plain tuples: a tuple of ints and bytes is untracked by Python's
    garbage collector after its first collection, so a full tail (hundreds of thousands
    of frames) adds nothing to the pauses of full collections; a NamedTuple would.
    """

    def __init__(self, start: int, limit: int, *, frame_overhead: int = FRAME_OVERHEAD,
                 stream_overhead: int = STREAM_OVERHEAD) -> None:
        self._frames: list[Row] = []
        self._head = 0
        self._bytes = 0
        self._limit = limit
        self._frame_overhead = frame_overhead
        self._stream_overhead = stream_overhead
        #: Key -> that stream's frames in the tail.
        self._by_key: dict[bytes, _KeyRows] = {}
        #: Every offset from here up to ``next_offset`` that holds a visible record is
        #: in the tail.
        self.covered_from = start
        #: The next offset the hub will read.
        self.next_offset = start

    @property
    def nbytes(self) -> int:
        """What the tail counts against its limit."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames) - self._head

    def append(self, frame: Frame) -> None:
        own = self._by_key.get(frame.key)
        if own is None:
            own = self._by_key[frame.key] = _KeyRows(frame.key)
            self._bytes += self._stream_overhead
        row: Row = (frame.offset, own.key, frame.seq, frame.terminal, frame.data)
        self._frames.append(row)
        own.rows.append(row)
        self._bytes += len(frame.data) + self._frame_overhead
        while self._bytes > self._limit and self._head < len(self._frames):
            offset, key, _, _, data = self._frames[self._head]
            self._bytes -= len(data) + self._frame_overhead
            self._head += 1
            self.covered_from = offset + 1
            if self._by_key[key].drop_oldest():
                del self._by_key[key]
                self._bytes -= self._stream_overhead
        if self._head > 1024 and self._head * 2 > len(self._frames):
            del self._frames[: self._head]
            self._head = 0

    def covers(self, offset: int) -> bool:
        return offset >= self.covered_from

    def since(self, start: int, key: bytes) -> list[Row]:
        """This stream's frames from offset ``start`` on (a snapshot), as rows: plain
        tuples laid out like :class:`Frame` (a resume makes no object per frame)."""
        own = self._by_key.get(key)
        if own is None:
            return []
        rows, head = own.rows, own.head
        i = len(rows)
        while i > head and rows[i - 1][0] >= start:  # resumes are near the end
            i -= 1
        return rows[i:]

    def first(self, key: bytes, start: int) -> Frame | None:
        """The stream's first frame at or after ``start`` in the tail, if any."""
        own = self._by_key.get(key)
        if own is not None:
            for row in own.rows[own.head:]:
                if row[0] >= start:
                    return Frame._make(row)
        return None

    def last(self, key: bytes) -> Frame | None:
        """The stream's newest frame in the tail, if any."""
        own = self._by_key.get(key)
        return Frame._make(own.rows[-1]) if own is not None else None

    def at(self, offset: int) -> Frame | None:
        """The frame at ``offset``, if the tail holds one there."""
        i = bisect.bisect_left(self._frames, offset, lo=self._head, key=lambda f: f[0])
        if i < len(self._frames) and self._frames[i][0] == offset:
            return Frame._make(self._frames[i])
        return None

    @property
    def streams(self) -> int:
        """How many streams have frames in the tail."""
        return len(self._by_key)


class Subscriber:
    """A client's live feed: a bounded buffer of frames, filled by the hub."""

    def __init__(self, tp: TopicPartition, key: bytes, limit: int) -> None:
        self.tp = tp
        self.key = key
        self._limit = limit
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self.overflowed = False
        self.wakeup = asyncio.Event()

    @property
    def buffered(self) -> int:
        """Bytes of frames waiting in this feed (at most its limit)."""
        return self._bytes

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
    """Tails events topics and routes their records to subscribers by stream id.

    The namespace's partitioned events topic is tracked from start to stop. Under
    ``topic-per-stream`` placement each stream's topic is attached when a client asks
    for it and detached once nobody has followed it for a while; every attach or detach
    re-assigns the consumer (and re-seeks every partition it keeps), which is the cost
    that placement pays per stream.
    """

    def __init__(self, kafka: KafkaSettings, *, tail_bytes: int,
                 client_buffer_bytes: int, idle_detach_s: float = 30.0,
                 on_terminal: Callable[[str, str], None] | None = None,
                 on_input: Callable[[str, int, str], None] | None = None) -> None:
        self._kafka = kafka
        self._on_terminal = on_terminal
        #: Called with (input id, seq, event id) for an input event a worker wrote.
        self._on_input = on_input
        self._tail_bytes = tail_bytes
        self._client_buffer = client_buffer_bytes
        self._idle_detach_s = idle_detach_s
        self._consumer: AIOKafkaConsumer | None = None
        #: Topic -> epoch (short hash of its topic id), for every topic ever looked up.
        self.epochs: dict[str, str] = {}
        self.tails: dict[TopicPartition, PartitionTail] = {}
        self._static: set[str] = set()
        self._idle_since: dict[str, float] = {}
        self._assign_lock = asyncio.Lock()
        self._subs: dict[tuple[TopicPartition, bytes], set[Subscriber]] = {}
        self._progress = asyncio.Condition()
        #: How many callers wait for a position (the loop then tracks every partition's).
        self._waiters = 0

    @property
    def ready(self) -> bool:
        return bool(self.tails)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())

    async def start(self, topics: list[str]) -> None:
        """Track ``topics`` (all partitions, from their ends) for the hub's lifetime."""
        self._consumer = await started(
            lambda: make_consumer(self._kafka, role="hub", fetch_max_wait_ms=50,
                                  max_partition_fetch_bytes=4 * 1024 * 1024),
            self._kafka, "hub start")
        self._static.update(topics)
        await self._attach(topics)

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_client(self._consumer)
            self._consumer = None

    async def epoch(self, topic: str) -> str:
        """The topic's epoch (looked up once)."""
        epoch = self.epochs.get(topic)
        if epoch is None:
            assert self._consumer is not None, "start() first"
            ids = await wait_for_topics(self._consumer._client, [topic])
            epoch = self.epochs[topic] = topic_epoch(ids[topic])
        return epoch

    async def attach(self, topic: str) -> None:
        """Make sure ``topic`` is tailed (a no-op for the namespace's topic)."""
        self._idle_since.pop(topic, None)
        if topic in self._static or any(tp.topic == topic for tp in self.tails):
            return
        await self._attach([topic])

    async def _attach(self, topics: list[str]) -> None:
        consumer = self._consumer
        assert consumer is not None
        async with self._assign_lock:
            topics = [t for t in topics if not any(tp.topic == t for tp in self.tails)]
            if not topics:
                return
            for topic in topics:
                await self.epoch(topic)
            new = [TopicPartition(t, p) for t in topics for p in await partitions_of(consumer, t)]
            self._reassign([*self.tails, *new])
            await consumer.seek_to_end(*new)
            for tp in new:
                self.tails[tp] = PartitionTail(await consumer.position(tp), self._tail_bytes)
        log.info("hub tails %s partitions (%s)", len(self.tails), ", ".join(topics))

    def _reassign(self, tps: list[TopicPartition]) -> None:
        """Assign exactly ``tps``; partitions kept go on from where the hub was."""
        consumer = self._consumer
        assert consumer is not None
        consumer.assign(tps)
        for tp in tps:
            tail = self.tails.get(tp)
            if tail is not None:
                consumer.seek(tp, tail.next_offset)

    async def detach_idle(self) -> None:
        """Stop tailing per-stream topics nobody has followed for ``idle_detach_s``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        busy = {tp.topic for tp, _ in self._subs}
        for topic in {tp.topic for tp in self.tails} - self._static:
            if topic in busy:
                self._idle_since.pop(topic, None)
            else:
                self._idle_since.setdefault(topic, now)
        idle = [t for t, since in self._idle_since.items() if now - since >= self._idle_detach_s]
        if not idle:
            return
        async with self._assign_lock:
            for topic in idle:
                del self._idle_since[topic]
                for tp in [tp for tp in self.tails if tp.topic == topic]:
                    del self.tails[tp]
            self._reassign(list(self.tails))

    def position(self, tp: TopicPartition) -> int:
        return self.tails[tp].next_offset

    async def lag(self) -> dict[int, int]:
        """Per partition of the namespace's events topic: records the hub has not read
        yet (the last stable offset of its last fetch minus the consumer's position; a
        partition not fetched yet is left out). No request to Kafka: both numbers are
        the consumer's own."""
        consumer = self._consumer
        out: dict[int, int] = {}
        if consumer is None:
            return out
        assigned = consumer.assignment()
        for tp in list(self.tails):
            if tp.topic not in self._static or tp not in assigned:
                continue
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is None or end < 0:
                continue
            try:
                out[tp.partition] = max(0, end - await consumer.position(tp))
            except IllegalStateError:  # re-assigned meanwhile
                continue
        return out

    async def floor(self, topic: str, partition: int) -> int:
        """An offset at or below the partition's end: how far the hub has read (0 for a
        partition it does not tail, such as a new per-stream topic)."""
        tail = self.tails.get(TopicPartition(topic, partition))
        return 0 if tail is None else tail.next_offset

    def subscribe(self, tp: TopicPartition, key: bytes) -> tuple[Subscriber, int]:
        """A new subscriber, and the offset from which it will receive every frame."""
        sub = Subscriber(tp, key, self._client_buffer)
        self._subs.setdefault((tp, key), set()).add(sub)
        return sub, self.tails[tp].next_offset

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subs.get((sub.tp, sub.key))
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[(sub.tp, sub.key)]

    def wake_all(self) -> None:
        """Wake every subscriber (heartbeats; shutdown, so open responses can end)."""
        for subs in self._subs.values():
            for sub in subs:
                sub.wakeup.set()

    async def wait_position(self, tp: TopicPartition, offset: int, timeout: float) -> bool:
        """Wait until the hub has read past ``offset`` - 1 in ``tp``."""
        async def reached() -> None:
            async with self._progress:
                await self._progress.wait_for(
                    lambda: tp not in self.tails or self.position(tp) >= offset)
        if tp in self.tails and self.position(tp) >= offset:
            return True
        self._waiters += 1
        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        return tp in self.tails

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while True:
            # A short timeout: waiters for a position (see wait_position) hear within it.
            batches = await consumer.getmany(timeout_ms=250, max_records=5000)
            for tp, records in batches.items():
                for i in range(0, len(records), _ROUTE_SLICE):
                    if tp not in self.tails:
                        break  # detached meanwhile
                    self._route(tp, records[i:i + _ROUTE_SLICE])
                    # Let handlers write out between slices, so a burst from one fetch
                    # does not pile up in every subscriber's buffer at once.
                    await asyncio.sleep(0)
            # While someone waits for a position, every partition's (also of those whose
            # fetch held only commit markers or aborted records); else those just read.
            moved = bool(batches)
            assigned = consumer.assignment()
            for tp in list(self.tails if self._waiters else batches):
                tail = self.tails.get(tp)
                if tail is not None and tp in assigned:
                    position = await consumer.position(tp)
                    if position > tail.next_offset:
                        tail.next_offset = position
                        moved = True
            if moved:
                async with self._progress:
                    self._progress.notify_all()

    def _route(self, tp: TopicPartition, records: list[object]) -> None:
        tail = self.tails[tp]
        epoch = self.epochs[tp.topic]
        subs = self._subs
        for raw in records:
            rec = LogRecord.from_consumer(raw)
            offset: int = raw.offset  # type: ignore[attr-defined]
            tail.next_offset = offset + 1
            if rec is None:
                continue
            frame = frame_record(epoch, rec)
            tail.append(frame)
            if frame.terminal and self._on_terminal is not None:
                self._on_terminal(rec.key.decode(errors="replace"), rec.type)
            elif rec.input_id is not None and self._on_input is not None:
                self._on_input(rec.input_id, rec.seq,
                               encode_event_id(epoch, rec.partition, offset, rec.seq))
            for sub in subs.get((tp, rec.key), ()):
                sub.push(frame)
