"""The publisher SDK: backend services write a stream's events straight to Kafka.

    async with Publisher(settings) as pub:
        stream = await pub.create_stream()
        await stream.status("running")
        await stream.partial("Hello, ", 0)
        await stream.result({"text": "Hello, world"})

The same rules as the HTTP publish API apply: seqs from 1 (seq 0 is the ``queued``
status written at creation), a retried seq is acknowledged without being written
twice, a gap is refused, and nothing follows a terminal event.
"""

from __future__ import annotations

import asyncio
import logging
import random
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from eventlog.clients import make_admin, make_producer, started, stop_client
from eventlog.errors import KafkaUnavailable, StreamNotFound
from eventlog.index import StreamIndex, StreamInfo
from eventlog.locate import CREATE_WINDOW_MS, first_record, found
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.streams import Appender, AppendResult, Draft, StreamCreator
from eventlog.topics import events_topic, stream_topic
from schemas import events, streamid
from schemas.validation import Validators

log = logging.getLogger(__name__)


class StreamWriter:
    """Appends to one stream; each call validates its data against schemas/json."""

    def __init__(self, publisher: Publisher, info: StreamInfo, next_seq: int) -> None:
        self._publisher = publisher
        self.info = info
        #: Seqs are given here, before the first try, so a retried append after an
        #: unclear failure (written, but the answer was lost) is recognised as a retry.
        self.next_seq = next_seq

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    async def publish(self, event_type: str, data: dict[str, Any],
                      seq: int | None = None) -> AppendResult:
        result = await self._publisher.publish(
            self.info, [Draft(event_type, data, self.next_seq if seq is None else seq)])
        self.next_seq = result.last_seq + 1
        return result

    async def status(self, state: str, message: str | None = None) -> AppendResult:
        data = {"state": state} if message is None else {"state": state, "message": message}
        return await self.publish(events.STATUS, data)

    async def progress(self, percentage: float, *, eta: float | None = None,
                       step: str = "", completed_steps: int = 0) -> AppendResult:
        return await self.publish(events.PROGRESS, {
            "percentage": percentage, "estimatedTimeRemaining": eta, "currentStep": step,
            "completedSteps": completed_steps})

    async def partial(self, chunk: str, index: int, *, last: bool = False) -> AppendResult:
        return await self.publish(events.PARTIAL_RESULT,
                                  {"chunk": chunk, "chunkIndex": index, "isComplete": last})

    async def metadata(self, **fields: Any) -> AppendResult:
        return await self.publish(events.METADATA, fields)

    async def result(self, data: dict[str, Any]) -> AppendResult:
        return await self.publish(events.RESULT, data)

    async def error(self, code: str, message: str, *, retryable: bool = False) -> AppendResult:
        return await self.publish(events.ERROR,
                                  {"code": code, "message": message, "retryable": retryable})


class Publisher:
    """A Kafka producer, a small reader pool and the append rules, for one namespace."""

    def __init__(self, settings: Settings, *, attempts: int = 6) -> None:
        self._settings = settings
        #: Tries per append (exponential backoff with jitter between them, up to 5 s).
        self.attempts = attempts
        self._validators = Validators()
        self._producer: AIOKafkaProducer | None = None
        self._reader: LogReader | None = None
        self._appender: Appender | None = None
        self._index: StreamIndex | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._stream_creator: StreamCreator | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        kafka = self._settings.kafka
        self._producer = await started(lambda: make_producer(kafka, role="publisher"), kafka,
                                       "publisher start")
        if self._settings.log.placement == "topic-per-stream":
            self._admin = await started(lambda: make_admin(kafka, role="publisher-admin"),
                                        kafka, "publisher admin start")
        self._reader = LogReader(kafka, size=2, role="publisher-reader")
        self._appender = Appender(self._producer, self._reader)
        self._stream_creator = StreamCreator(self._settings.log, self._producer,
                                             floor=self._reader.floor, admin=self._admin)

    async def close(self) -> None:
        if self._index is not None:
            await self._index.stop()
        if self._reader is not None:
            await self._reader.close()
        for client in (self._producer, self._admin):
            if client is not None:
                await stop_client(client)

    async def create_stream(self, stream_id: str | None = None, *, tenant: str | None = None,
                            owner: str = "") -> StreamWriter:
        """Create an ``external`` stream (its ``queued`` status is seq 0) of ``tenant``
        (default: ``TIDEMARK_DEFAULT_TENANT``), owned by ``owner`` (the ``sub`` of the user
        who may read it with their token; "": every user of the tenant)."""
        assert self._producer is not None, "start() first"
        if stream_id is not None and (not events.is_valid_stream_id(stream_id)
                                      or streamid.is_reserved(stream_id)):
            raise ValueError(f"invalid stream id {stream_id!r} (ids of the form s<n>-... "
                             "are Tidemark's own)")
        assert self._stream_creator is not None, "start() first"
        info = await self._stream_creator.create(
            stream_id, generator="external", query=None, options=None, with_job=False,
            tenant=tenant or self._settings.auth.default_tenant, owner=owner)
        return StreamWriter(self, info, next_seq=1)

    async def open_stream(self, stream_id: str) -> StreamWriter:
        """A writer for a stream created elsewhere: found in the log from its id, or, for
        ids that carry no location, looked up in the stream index."""
        assert self._appender is not None and self._reader is not None, "start() first"
        ref = streamid.parse_stream_id(stream_id)
        if ref is not None:
            log_settings = self._settings.log
            topic = (stream_topic(log_settings.namespace, stream_id)
                     if log_settings.placement == "topic-per-stream"
                     else events_topic(log_settings.namespace))
            log_start, end = await self._reader.bounds(topic, ref.partition)
            rec = await first_record(
                self._reader, topic, ref.partition, stream_id.encode(),
                start=max(ref.floor, log_start), until=end,
                not_after_ms=ref.created_ms + CREATE_WINDOW_MS)
            if rec is None:
                raise StreamNotFound(f"no stream {stream_id!r}")
            placed = found(stream_id, log_settings.namespace, topic, ref, rec)
            return StreamWriter(self, placed,
                                next_seq=await self._appender.last_seq(placed) + 1)
        if self._index is None:
            self._index = StreamIndex(self._settings.kafka,
                                      namespace=self._settings.log.namespace)
            await self._index.start()
        info = self._index.get(stream_id)
        if info is None and await self._index.load(timeout=30.0):
            info = self._index.get(stream_id)
        if info is None:
            raise StreamNotFound(f"no stream {stream_id!r}")
        assert self._appender is not None
        return StreamWriter(self, info, next_seq=await self._appender.last_seq(info) + 1)

    async def publish(self, info: StreamInfo, drafts: list[Draft]) -> AppendResult:
        assert self._appender is not None, "start() first"
        self._validators.publish_request(
            [{"type": d.type, "data": d.data, **({"seq": d.seq} if d.seq is not None else {})}
             for d in drafts])
        delay = 0.2
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._appender.append(info, drafts)
            except (KafkaError, KafkaUnavailable) as exc:
                if attempt == self.attempts:
                    raise KafkaUnavailable(f"append failed {attempt} times: {exc}") from exc
                log.warning("append to %s failed (%s); retrying", info.stream_id, exc)
                await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")
