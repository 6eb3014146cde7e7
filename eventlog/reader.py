"""A pool of read_committed consumers for reads from a position (catch-up, scans).

Readers are assigned manually, one partition per read, and returned to the pool when
the read ends; the pool size bounds how many reads hit Kafka at once. Nothing here
joins a consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventlog.clients import make_consumer, started, stop_client
from eventlog.records import LogRecord
from eventlog.settings import KafkaSettings

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_MS = 500


class Cursor:
    """A read of one partition from a position, on a pooled consumer."""

    def __init__(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        self._consumer = consumer
        self._tp = tp

    async def position(self) -> int:
        pos: int = await self._consumer.position(self._tp)
        return pos

    async def batch(self, *, max_records: int = 500) -> list[LogRecord]:
        """The next records (possibly none, after a short wait)."""
        got = await self._consumer.getmany(self._tp, timeout_ms=_FETCH_TIMEOUT_MS,
                                           max_records=max_records)
        out = []
        for raw in got.get(self._tp, ()):
            rec = LogRecord.from_consumer(raw)
            if rec is not None:
                out.append(rec)
        return out

    async def batches(self, *, until: int, key: bytes | None = None,
                      timeout_s: float = 30.0) -> AsyncIterator[list[LogRecord]]:
        """Records before offset ``until`` (with ``key``, when given), in order, as they
        are fetched (no batch is empty).

        Ends when the position reaches ``until``; raises TimeoutError if the log
        does not get there within ``timeout_s`` of no progress.
        """
        loop = asyncio.get_running_loop()
        stalled_since = loop.time()
        while await self.position() < until:
            batch = await self.batch()
            if batch:
                stalled_since = loop.time()
            elif loop.time() - stalled_since > timeout_s:
                raise TimeoutError(f"no progress reading {self._tp} towards offset {until}")
            out = [rec for rec in batch
                   if rec.offset < until and (key is None or rec.key == key)]
            if out:
                yield out
            if batch and batch[-1].offset >= until:
                return

    async def records(self, *, until: int, key: bytes | None = None,
                      timeout_s: float = 30.0) -> AsyncIterator[LogRecord]:
        """Like :meth:`batches`, one record at a time."""
        async for batch in self.batches(until=until, key=key, timeout_s=timeout_s):
            for rec in batch:
                yield rec


class LogReader:
    """The pool. ``size`` consumers at most, created on first use."""

    def __init__(self, kafka: KafkaSettings, *, size: int, role: str = "reader") -> None:
        self._kafka = kafka
        self._role = role
        self._slots = asyncio.Semaphore(size)
        self._idle: list[AIOKafkaConsumer] = []
        self._all: list[AIOKafkaConsumer] = []
        self._closed = False
        #: (topic, partition) -> (log start, end, when): shared by a burst of lookups.
        self._bounds: dict[tuple[str, int], tuple[int, int, float]] = {}
        self._bounds_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._hw_consumer: AIOKafkaConsumer | None = None
        self._hw_lock = asyncio.Lock()

    async def _acquire(self) -> AIOKafkaConsumer:
        await self._slots.acquire()
        try:
            if self._idle:
                return self._idle.pop()
            consumer = await started(
                lambda: make_consumer(self._kafka, role=self._role), self._kafka, "reader start")
            self._all.append(consumer)
            return consumer
        except BaseException:
            self._slots.release()
            raise

    def _release(self, consumer: AIOKafkaConsumer) -> None:
        if not self._closed:
            # Paused, not unsubscribed: unsubscribing empties the topics the client
            # tracks, which makes aiokafka refresh the metadata of every topic of the
            # cluster, and the next assign refresh it again (with thousands of topics,
            # milliseconds each, on every read). Reads of the same topic then cost none.
            assigned = consumer.assignment()
            if assigned:
                consumer.pause(*assigned)
            self._idle.append(consumer)
        self._slots.release()

    @contextlib.asynccontextmanager
    async def open(self, topic: str, partition: int, start: int) -> AsyncIterator[Cursor]:
        """A cursor on ``topic``/``partition`` positioned at offset ``start``."""
        consumer = await self._acquire()
        tp = TopicPartition(topic, partition)
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            yield Cursor(consumer, tp)
        finally:
            self._release(consumer)

    async def bounds(self, topic: str, partition: int) -> tuple[int, int]:
        """(log start offset, last stable offset) of a partition."""
        tp = TopicPartition(topic, partition)
        consumer = await self._acquire()
        try:
            first = await consumer.beginning_offsets([tp])
            end = await consumer.end_offsets([tp])
            return int(first[tp]), int(end[tp])
        finally:
            self._release(consumer)

    async def log_start(self, topic: str, partition: int, *, max_age_s: float = 1.0) -> int:
        """The partition's log start offset, at most ``max_age_s`` old.

        Retention moves it rarely and by whole segments; a burst of requests shares one
        lookup per partition.
        """
        return (await self._recent_bounds(topic, partition, max_age_s))[0]

    async def floor(self, topic: str, partition: int, *, max_age_s: float = 1.0) -> int:
        """An offset at or below the partition's end (its last stable offset, at most
        ``max_age_s`` old): offsets only grow, so an older answer is still a lower bound."""
        return (await self._recent_bounds(topic, partition, max_age_s))[1]

    async def _recent_bounds(self, topic: str, partition: int,
                             max_age_s: float) -> tuple[int, int]:
        key = (topic, partition)
        loop = asyncio.get_running_loop()
        cached = self._bounds.get(key)
        if cached is not None and loop.time() - cached[2] < max_age_s:
            return cached[0], cached[1]  # the common case: no lock to enter
        lock = self._bounds_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._bounds.get(key)
            if cached is not None and loop.time() - cached[2] < max_age_s:
                return cached[0], cached[1]
            start, end = await self.bounds(topic, partition)
            self._bounds[key] = (start, end, loop.time())
            return start, end

    async def offset_at_time(self, topic: str, partition: int, ts_ms: int) -> int:
        """The first offset whose record's timestamp is ``ts_ms`` or later (the log end
        when there is none)."""
        tp = TopicPartition(topic, partition)
        consumer = await self._acquire()
        try:
            found = await consumer.offsets_for_times({tp: max(0, ts_ms)})
            at = found.get(tp)
            if at is not None:
                return int(at.offset)
            return int((await consumer.end_offsets([tp]))[tp])
        finally:
            self._release(consumer)

    async def high_watermark(self, topic: str, partition: int) -> int:
        """The partition's end including records of open transactions: everything
        acknowledged to a producer so far is below it."""
        tp = TopicPartition(topic, partition)
        async with self._hw_lock:
            if self._hw_consumer is None:
                self._hw_consumer = await started(
                    lambda: make_consumer(self._kafka, role=f"{self._role}-hw",
                                          isolation_level="read_uncommitted"),
                    self._kafka, "reader start")
            end = await self._hw_consumer.end_offsets([tp])
            return int(end[tp])

    async def close(self) -> None:
        self._closed = True
        if self._hw_consumer is not None:
            await stop_client(self._hw_consumer)
            self._hw_consumer = None
        consumers, self._all, self._idle = self._all, [], []
        for consumer in consumers:
            await stop_client(consumer)
