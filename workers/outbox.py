"""The transactional stream writer of one worker: one producer, one flusher.

Every event a job yields goes into the outbox; the flusher writes what has gathered
(up to ``batch_events``) in one Kafka transaction, at most ``linger_ms`` after the
oldest waiting entry arrived. While a transaction is in flight, entries gather for the
next one, so under load transactions get fuller rather than more frequent (one
producer per worker process, not one per jobs partition). Events go out as one record
batch per events partition (``send_batch``), not one ``send`` per event.

The transaction that carries a stream's terminal event also carries the stream's final
index record and commits its jobs partition's offset (``send_offsets_to_transaction``,
with this writer's ``transactional.id`` as the offset's metadata: the next owner of the
partition reads it and fences this writer), so a job is either finished and committed
or will be redone, never both. A worker that dies mid-transaction leaves it to abort;
readers use read_committed and never see it.

Traced streams (``workers.tracing``) get a ``tidemark.transaction`` span per stream and
transaction; their records carry its ``traceparent``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from opentelemetry.trace import Span

from eventlog import index
from eventlog.index import StreamInfo
from eventlog.streams import now_ms, terminal_status
from schemas.events import Event
from workers.metrics import WorkerMetrics
from workers.tracing import TransactionSpans, transaction_spans

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    """One thing to write in the next transaction."""

    event: Event | None = None
    #: The stream's index record. Written after a terminal event (completed with its
    #: offset), or as it is when ``snapshot`` is set; otherwise it only locates the stream.
    info: StreamInfo | None = None
    snapshot: bool = False
    #: A jobs-partition record this transaction completes.
    jobs_tp: TopicPartition | None = None
    done_offset: int | None = None
    #: Set once the transaction that carries the entry committed (only when asked for).
    written: asyncio.Future[None] | None = None
    #: The stream's generation span (tracing on): the event's record carries the trace
    #: context of a ``tidemark.transaction`` span under it (``workers.tracing``).
    span: Span | None = None
    #: Headers the event's record carries beyond its own (an input's ``tm-input``).
    headers: tuple[tuple[str, bytes], ...] = ()
    #: Set by the writer on a terminal event's entry: the stream's final index record
    #: (with its terminal offset), as the transaction wrote it.
    final: StreamInfo | None = None


class OffsetTracker:
    """Which consumed jobs-partition records are still in progress.

    The offset to commit is the lowest one still in progress, or, when none is, the
    offset after the last record consumed: below it, every record is done.
    """

    def __init__(self, start: int) -> None:
        self._pending: set[int] = set()
        self.start = start
        self.consumed_until = start  # the partition's committed offset when assigned
        self.committed = start

    def begin(self, offset: int) -> None:
        self._pending.add(offset)
        self.consumed_until = max(self.consumed_until, offset + 1)

    def skip(self, offset: int) -> None:
        """A record that needs no work (a cancel, a duplicate, an unreadable record)."""
        self.consumed_until = max(self.consumed_until, offset + 1)

    def done(self, offset: int) -> None:
        self._pending.discard(offset)

    def watermark(self) -> int:
        return min(self._pending, default=self.consumed_until)


class Outbox:
    """Batches entries into transactions on one transactional producer.

    ``trackers`` (jobs partition -> its tracker) is shared with the worker, which adds
    and removes partitions as the group assigns them.
    """

    def __init__(self, producer: AIOKafkaProducer, *, group_id: str, writer_id: str,
                 trackers: dict[TopicPartition, OffsetTracker], linger_ms: int,
                 batch_events: int, metrics: WorkerMetrics | None = None) -> None:
        self._producer = producer
        self._group_id = group_id
        self._writer_id = writer_id
        self._trackers = trackers
        self._linger = linger_ms / 1000
        self._batch = batch_events
        self._cap = 4 * batch_events
        self._entries: list[Entry] = []
        self._since = 0.0  # when the oldest waiting entry arrived (loop time)
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()

    async def put(self, entry: Entry) -> None:
        """Queue an entry, waiting only while the outbox is full (bounded)."""
        while len(self._entries) >= self._cap:
            self._room.clear()
            await self._room.wait()
        self.put_nowait(entry)

    def put_nowait(self, entry: Entry) -> None:
        """Queue an entry now, even past the cap (a stream's inputs, which must take
        their seq at once; bounded by ``TIDEMARK_WORKER_STREAM_INPUTS`` per stream)."""
        if not self._entries:
            self._since = self._loop.time()
        self._entries.append(entry)
        self._wakeup.set()

    async def put_and_wait(self, entry: Entry) -> None:
        """Queue an entry and wait until the transaction that carries it committed."""
        entry.written = self._loop.create_future()
        await self.put(entry)
        await entry.written

    def commit_offsets_soon(self) -> None:
        if not self._entries:
            self._since = self._loop.time()
        self._wakeup.set()

    async def run(self) -> None:
        """Flush forever; a failed transaction raises (the worker then resets)."""
        batch: list[Entry] = []
        try:
            while True:
                await self._wakeup.wait()
                delay = self._since + self._linger - self._loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._wakeup.clear()
                batch, self._entries = self._entries[: self._batch], self._entries[self._batch:]
                if self._entries:
                    self._since = 0.0  # already waited: straight into the next one
                    self._wakeup.set()
                if len(self._entries) < self._cap:
                    self._room.set()
                await self._flush(batch)
                batch = []
        except BaseException as exc:
            for entry in (*batch, *self._entries):
                if entry.written is not None and not entry.written.done():
                    if isinstance(exc, Exception):
                        entry.written.set_exception(exc)
                        # Marked as seen: its stream may be gone (cancelled with the
                        # worker's reset); a waiter still gets the exception.
                        entry.written.exception()
                    else:
                        entry.written.cancel()
            raise

    async def _flush(self, batch: list[Entry]) -> None:
        changed = {tp: t for tp, t in self._trackers.items() if t.watermark() > t.committed}
        if not batch and not changed:
            return
        began = self._loop.time()
        producer = self._producer
        with transaction_spans(batch) as spans:
            async with producer.transaction():
                await self._write(batch, spans)
                offsets = {tp: OffsetAndMetadata(t.watermark(), self._writer_id)
                           for tp, t in self._trackers.items() if t.watermark() > t.committed}
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, self._group_id)
        for tp, om in offsets.items():
            tracker = self._trackers.get(tp)
            if tracker is not None:
                tracker.committed = max(tracker.committed, om.offset)
        if self._metrics is not None:
            m = self._metrics
            m.transaction_seconds.observe(self._loop.time() - began)
            m.transactions.inc()
            m.events.inc(sum(e.event is not None for e in batch))
            committed_ms = time.time() * 1000
            observe = m.token_latency.observe
            for entry in batch:
                if entry.event is not None:
                    observe(max(0.0, committed_ms - entry.event.ts) / 1000)
        for entry in batch:
            if entry.written is not None and not entry.written.done():
                entry.written.set_result(None)

    async def _write(self, batch: list[Entry], spans: TransactionSpans | None = None,
                     ) -> None:
        """The batch's events as one record batch per partition, then index records;
        with ``spans``, traced events carry their transaction span's context."""
        producer = self._producer
        builders: dict[tuple[str, int], Any] = {}
        acks: dict[int, asyncio.Future[Any]] = {}  # id(builder) -> its batch's metadata
        terminals: list[tuple[Entry, Any, int]] = []
        for entry in batch:
            ev = entry.event
            if ev is None:
                continue
            info = entry.info
            assert info is not None, "an event is written with its stream's index record"
            key = (info.topic, info.partition)
            builder = builders.get(key)
            if builder is None:
                builder = builders[key] = producer.create_batch()
            value, stream_key, headers = ev.to_json(), ev.stream.encode(), ev.headers()
            if entry.headers:
                headers.extend(entry.headers)
            if spans is not None:
                headers.extend(spans.headers(entry))
            meta = builder.append(timestamp=None, key=stream_key, value=value, headers=headers)
            if meta is None:  # full: send it and start the partition's next batch
                builder.close()
                acks[id(builder)] = await producer.send_batch(builder, info.topic,
                                                              partition=info.partition)
                builder = builders[key] = producer.create_batch()
                meta = builder.append(timestamp=None, key=stream_key, value=value,
                                      headers=headers)
                assert meta is not None, "one event is larger than a whole record batch"
            if ev.terminal:
                terminals.append((entry, builder, meta.offset))
        for (topic, partition), builder in builders.items():
            builder.close()  # closed: the producer sends it at once (no linger)
            acks[id(builder)] = await producer.send_batch(builder, topic, partition=partition)
        for entry in batch:
            if entry.event is None:
                if entry.info is not None:
                    await index.enqueue(producer, entry.info)
            elif entry.snapshot and not entry.event.terminal:
                assert entry.info is not None
                await index.enqueue(producer, entry.info)
        for entry, builder, relative in terminals:
            # The index record of a finished stream names its terminal event's offset.
            batch_meta = await acks[id(builder)]
            ev, info = entry.event, entry.info
            assert ev is not None and info is not None
            entry.final = info.evolve(
                status=terminal_status(ev.type), last_seq=ev.seq,
                terminal_offset=batch_meta.offset + relative, updated_at=now_ms())
            await index.enqueue(producer, entry.final)
        for entry in batch:
            if entry.done_offset is not None and entry.jobs_tp is not None:
                tracker = self._trackers.get(entry.jobs_tp)
                if tracker is not None:
                    tracker.done(entry.done_offset)
