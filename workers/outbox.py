"""The transactional stream writer of one jobs partition.

Every event a job yields goes into the outbox; a flusher writes what has gathered
(up to ``batch_events``, after at most ``linger_ms``) in one Kafka transaction. The
transaction that carries a stream's terminal event also carries the stream's final
index record and commits the jobs partition's offset (``send_offsets_to_transaction``),
so a job is either finished and committed or will be redone, never both. A worker
that dies mid-transaction leaves it to abort; readers use read_committed and never
see it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from eventlog import index
from eventlog.index import StreamInfo
from eventlog.streams import now_ms, send_event, terminal_status
from schemas.events import Event
from workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Entry:
    """One thing to write in the next transaction."""

    event: Event | None = None
    #: The stream's index record. Written after a terminal event (completed with its
    #: offset), or as it is when ``snapshot`` is set; otherwise it only locates the stream.
    info: StreamInfo | None = None
    snapshot: bool = False
    done_offset: int | None = None  # a jobs-partition offset this transaction completes
    written: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class OffsetTracker:
    """Which consumed jobs-partition records are still in progress.

    The offset to commit is the lowest one still in progress, or, when none is, the
    offset after the last record consumed: below it, every record is done.
    """

    def __init__(self, start: int) -> None:
        self._pending: set[int] = set()
        self.start = start
        self.consumed_until = start  # the partition's committed offset when assigned

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
    """Batches entries into transactions on one transactional producer."""

    def __init__(self, producer: AIOKafkaProducer, *, jobs_tp: TopicPartition, group_id: str,
                 tracker: OffsetTracker, linger_ms: int, batch_events: int) -> None:
        self._producer = producer
        self._jobs_tp = jobs_tp
        self._group_id = group_id
        self._tracker = tracker
        self._linger = linger_ms / 1000
        self._batch = batch_events
        self._entries: list[Entry] = []
        self._wakeup = asyncio.Event()
        self._room = asyncio.Condition()
        self._committed = tracker.consumed_until
        self.metrics: WorkerMetrics | None = None

    async def put(self, entry: Entry) -> asyncio.Future[None]:
        """Queue an entry (waiting while the outbox is full); returns its commit future."""
        async with self._room:
            await self._room.wait_for(lambda: len(self._entries) < 4 * self._batch)
            self._entries.append(entry)
        self._wakeup.set()
        return entry.written

    def commit_offsets_soon(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Flush forever; a failed transaction raises (the partition is then reset)."""
        try:
            while True:
                await self._wakeup.wait()
                await asyncio.sleep(self._linger)
                self._wakeup.clear()
                batch, self._entries = self._entries[: self._batch], self._entries[self._batch:]
                if self._entries:
                    self._wakeup.set()
                async with self._room:
                    self._room.notify_all()
                try:
                    await self._flush(batch)
                except BaseException as exc:
                    for entry in batch:
                        if not entry.written.done():
                            entry.written.set_exception(exc if isinstance(exc, Exception)
                                                        else asyncio.CancelledError())
                    raise
        finally:
            for entry in self._entries:
                if not entry.written.done():
                    entry.written.cancel()

    async def _flush(self, batch: list[Entry]) -> None:
        watermark = self._tracker.watermark()
        if not batch and watermark <= self._committed:
            return
        async with self._producer.transaction():
            for entry in batch:
                await self._write(entry)
            watermark = self._tracker.watermark()
            if watermark > self._committed:
                await self._producer.send_offsets_to_transaction(
                    {self._jobs_tp: OffsetAndMetadata(watermark, "")}, self._group_id)
        self._committed = max(self._committed, watermark)
        if self.metrics is not None:
            self.metrics.transactions.inc()
            self.metrics.events.inc(sum(e.event is not None for e in batch))
        for entry in batch:
            if not entry.written.done():
                entry.written.set_result(None)

    async def _write(self, entry: Entry) -> None:
        info = entry.info
        if entry.event is not None:
            assert info is not None, "an event is written with its stream's index record"
            fut = await send_event(self._producer, info.topic, info.partition, entry.event)
            if entry.event.terminal:
                meta: Any = await fut
                info = info.evolve(status=terminal_status(entry.event.type),
                                   last_seq=entry.event.seq, terminal_offset=meta.offset,
                                   updated_at=now_ms())
            elif not entry.snapshot:
                info = None
        if info is not None:
            await index.enqueue(self._producer, info)
        if entry.done_offset is not None:
            self._tracker.done(entry.done_offset)
