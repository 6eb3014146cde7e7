"""The stream index: a compacted topic, key = stream id, value = the stream's record.

Writers put whole snapshots (last writer wins, per key, in partition order): the
creator when a stream is made, the worker when it starts and ends it, the appender at a
terminal event. Streams whose events retention has deleted get tombstones
(``eventlog.janitor``), so the compacted topic holds only streams still in the log.

Gateways do not need the index for streams with self-describing ids (they find those
in the events log; see ``gateway.lookup``). :class:`StreamIndex` tails the topic into
memory for the other ids (``keep`` selects which): a lookup that misses first waits for
the reader to catch up with the topic's end, so a stream created through one gateway
is found through any other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from eventlog.clients import make_consumer, partitions_of, started, stop_client
from eventlog.settings import KafkaSettings
from eventlog.topics import STREAMS_TOPIC

log = logging.getLogger(__name__)

QUEUED: Final = "queued"
RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
TERMINAL_STATUSES: Final = frozenset({COMPLETED, FAILED, CANCELLED})


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamInfo:
    """What the index knows of one stream."""

    stream_id: str
    namespace: str
    topic: str
    partition: int
    first_offset: int
    generator: str
    status: str
    created_at: int
    updated_at: int
    last_seq: int = 0
    terminal_offset: int | None = None
    #: Whose stream it is: its tenant ("" in records written before tenants existed: the
    #: default tenant's) and owner (the creator's ``sub``; "": every user of the tenant).
    tenant: str = ""
    owner: str = ""
    #: The A/B variants this stream was assigned at create: experiment name -> variant
    #: name (empty: in no experiment). Every analytics figure is split by them.
    experiments: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def evolve(self, **changes: Any) -> StreamInfo:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> StreamInfo:
        obj = orjson.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


async def put(producer: AIOKafkaProducer, info: StreamInfo) -> None:
    """Write a snapshot and wait for it to be acknowledged (or, in a transaction, sent)."""
    await (await producer.send(STREAMS_TOPIC, info.to_json(), key=info.stream_id.encode()))


async def enqueue(producer: AIOKafkaProducer, info: StreamInfo) -> asyncio.Future[Any]:
    """Queue a snapshot on the producer (in its open transaction, if any)."""
    fut: asyncio.Future[Any] = await producer.send(
        STREAMS_TOPIC, info.to_json(), key=info.stream_id.encode())
    return fut


async def put_alias(producer: AIOKafkaProducer, key: str, info: StreamInfo) -> None:
    """Write ``info`` under another ``key`` too (an alias, e.g. an AI SDK chat's latest
    answer: ``gateway.ai_chat``), and wait for the ack. Alias keys are not stream ids
    (they hold a character no stream id has), so no stream lookup meets one; the
    janitor tombstones an alias with its stream, since the value is the stream's record."""
    await (await producer.send(STREAMS_TOPIC, info.to_json(), key=key.encode()))


class StreamIndex:
    """An in-memory view of the index topic, kept current by :meth:`run`."""

    def __init__(self, kafka: KafkaSettings, *, namespace: str | None = None,
                 keep: Callable[[str], bool] | None = None) -> None:
        self._kafka = kafka
        #: Keep only this namespace's streams (the topic holds every namespace's).
        self._namespace = namespace
        #: Keep only the streams whose ids pass this test (checked before decoding).
        self._keep = keep
        self._streams: dict[str, StreamInfo] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._progress = asyncio.Condition()
        self._loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def loaded(self) -> bool:
        """True once everything the topic held at start has been read."""
        return self._loaded.is_set()

    async def start(self) -> None:
        self._consumer = await started(
            lambda: make_consumer(self._kafka, role="index"), self._kafka, "index start")
        self._tps = [TopicPartition(STREAMS_TOPIC, p)
                     for p in await partitions_of(self._consumer, STREAMS_TOPIC)]
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_client(self._consumer)
            self._consumer = None

    async def run(self) -> None:
        """Apply index records as they arrive; runs until cancelled."""
        initial = asyncio.create_task(self._mark_loaded())
        try:
            while True:
                await self._poll()
        finally:
            initial.cancel()

    async def _poll(self, timeout_ms: int = 100) -> None:
        assert self._consumer is not None, "start() first"
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=2000)
        for records in batches.values():
            for rec in records:
                self._apply(rec.key, rec.value)
        async with self._progress:
            self._progress.notify_all()

    async def load(self, *, timeout: float) -> bool:
        """Without :meth:`run`: read until everything written before this call is applied."""
        assert self._consumer is not None, "start() first"
        consumer = self._consumer
        ends = await consumer.end_offsets(self._tps)

        async def read() -> None:
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                await self._poll(timeout_ms=20)

        try:
            await asyncio.wait_for(read(), timeout)
        except TimeoutError:
            return False
        return True

    async def _mark_loaded(self) -> None:
        await self.sync(timeout=None)
        self._loaded.set()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        stream_id = key.decode("utf-8", "replace")
        if self._keep is not None and not self._keep(stream_id):
            return
        if value is None:
            self._streams.pop(stream_id, None)
            return
        try:
            info = StreamInfo.from_json(value)
        except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
            log.warning("unreadable index record for stream %s: %s", stream_id, exc)
            return
        if self._namespace is None or info.namespace == self._namespace:
            self._streams[stream_id] = info

    def get(self, stream_id: str) -> StreamInfo | None:
        return self._streams.get(stream_id)

    async def sync(self, *, timeout: float | None) -> bool:
        """Wait until every index record written before this call has been applied."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        ends = await consumer.end_offsets(self._tps)

        async def caught_up() -> bool:
            for tp, end in ends.items():
                if await consumer.position(tp) < end:
                    return False
            return True

        async def wait() -> None:
            async with self._progress:
                while not await caught_up():
                    await self._progress.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def lookup(self, stream_id: str, *, timeout: float) -> StreamInfo | None:
        """The stream's record; on a miss, wait (up to ``timeout``) for the index to catch up."""
        info = self._streams.get(stream_id)
        if info is None and await self.sync(timeout=timeout):
            info = self._streams.get(stream_id)
        return info

    async def refresh(self, stream_id: str, *, timeout: float) -> StreamInfo | None:
        """The stream's record after catching up with every write made before this call."""
        await self.sync(timeout=timeout)
        return self._streams.get(stream_id)
