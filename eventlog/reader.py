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

    async def records(self, *, until: int, key: bytes | None = None,
                      timeout_s: float = 30.0) -> AsyncIterator[LogRecord]:
        """Records before offset ``until`` (with ``key``, when given), in order.

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
            for rec in batch:
                if rec.offset >= until:
                    return
                if key is None or rec.key == key:
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
        self._starts: dict[tuple[str, int], tuple[int, float]] = {}
        self._start_locks: dict[tuple[str, int], asyncio.Lock] = {}

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
            consumer.unsubscribe()
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
        key = (topic, partition)
        loop = asyncio.get_running_loop()
        lock = self._start_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._starts.get(key)
            if cached is not None and loop.time() - cached[1] < max_age_s:
                return cached[0]
            start, _ = await self.bounds(topic, partition)
            self._starts[key] = (start, loop.time())
            return start

    async def close(self) -> None:
        self._closed = True
        consumers, self._all, self._idle = self._all, [], []
        for consumer in consumers:
            await stop_client(consumer)
