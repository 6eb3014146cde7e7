"""The Kafka side of analytics in one gateway process: read the stream index and the
analytics topic into a :class:`gateway.analytics_fold.Fold`, and publish this process's
report every ``TIDEMARK_ANALYTICS_INTERVAL``.

At start one consumer (manual assignment, read_committed, no group) is placed on both
topics at the offsets of (now - longest window) found with ``offsets_for_times``; it
then reads on for as long as the process runs. :attr:`AnalyticsFeed.loaded` is set once
it has read what the topics held at start. ``recent.errors`` are read from the events
log (the ``error`` event at each failed stream's terminal offset) when a document is
built, through the gateway's pooled reader, and remembered (a bounded cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from eventlog.clients import make_consumer, partitions_of, started, stop_client
from eventlog.index import StreamInfo
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.topics import STREAMS_TOPIC, analytics_topic
from gateway.analytics_fold import LONGEST_MS, Fold
from gateway.analytics_recorder import Recorder, build_report
from schemas import events

log = logging.getLogger(__name__)

#: Error details remembered (stream id -> the ``recent.errors`` entry).
_ERROR_CACHE: Final = 2000
#: How long a document waits for error events to be read (entries not read by then
#: are given without their code and message).
_ERROR_READ_S: Final = 2.0


def now_ms() -> int:
    return int(time.time() * 1000)


class AnalyticsFeed:
    """Keeps this gateway's :class:`Fold` current and publishes its reports."""

    def __init__(self, settings: Settings, *, producer: AIOKafkaProducer, reader: LogReader,
                 recorder: Recorder, process: str,
                 connections: Callable[[], Iterable[str]]) -> None:
        self._settings = settings
        self._producer = producer
        self._reader = reader
        self._recorder = recorder
        self._process = process
        self._connections = connections
        self.fold = Fold(default_tenant=settings.auth.default_tenant,
                         recent=settings.analytics.recent,
                         top_users=settings.analytics.top_users)
        self._topic = analytics_topic(settings.log.namespace)
        self._consumer: AIOKafkaConsumer | None = None
        self._ends: dict[TopicPartition, int] = {}
        self.loaded = asyncio.Event()
        self._errors: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def start(self) -> None:
        kafka = self._settings.kafka
        self._consumer = consumer = await started(
            lambda: make_consumer(kafka, role="analytics"), kafka, "analytics start")
        tps = [TopicPartition(topic, p) for topic in (STREAMS_TOPIC, self._topic)
               for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        since = now_ms() - LONGEST_MS - 60_000
        found = await consumer.offsets_for_times({tp: since for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])
        self._ends = {tp: end for tp, end in ends.items() if end > 0}

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_client(self._consumer)
            self._consumer = None

    async def run(self) -> None:
        """Fold records and publish reports; runs until cancelled. Kafka errors are
        logged and retried: analytics never stops the gateway's streaming."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._retrying(self._consume, "read"), name="analytics-consume")
            tg.create_task(self._retrying(self._publish, "publish"), name="analytics-publish")

    @staticmethod
    async def _retrying(loop: Callable[[], Awaitable[None]], what: str) -> None:
        delay = 0.5
        while True:
            try:
                await loop()
            except (KafkaError, OSError) as exc:
                log.warning("analytics could not %s (%s); again in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        namespace = self._settings.log.namespace
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = now_ms()
            for tp, records in batches.items():
                for rec in records:
                    if rec.value is None:
                        continue  # an index tombstone: its stream has left the log
                    try:
                        if tp.topic == STREAMS_TOPIC:
                            info = StreamInfo.from_json(rec.value)
                            if info.namespace == namespace:
                                self.fold.apply_index(info, now=now, record_ts=rec.timestamp)
                        else:
                            report = orjson.loads(rec.value)
                            if isinstance(report, dict):
                                self.fold.apply_report(report, now=now)
                    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError,
                            AttributeError) as exc:
                        log.warning("unreadable record %s/%s@%s for analytics: %s",
                                    tp.topic, tp.partition, rec.offset, exc)
            if not self.loaded.is_set():
                await self._check_loaded(consumer)

    async def _check_loaded(self, consumer: AIOKafkaConsumer) -> None:
        for tp, end in list(self._ends.items()):
            if await consumer.position(tp) >= end:
                del self._ends[tp]
        if not self._ends:
            self.loaded.set()
            log.info("analytics loaded")

    async def _publish(self) -> None:
        interval = self._settings.analytics.interval_s
        while True:
            await asyncio.sleep(interval)
            observations, dropped = self._recorder.take()
            report = build_report(
                observations, process=self._process, ts=now_ms(),
                interval_ms=int(interval * 1000), connections=self._connections(),
                resolve=self.fold.stream, dropped=dropped)
            # A report that cannot be written is lost (its interval's latencies and
            # cut-offs); the next one carries the next interval.
            await (await self._producer.send(self._topic, orjson.dumps(report),
                                             key=self._process.encode()))

    async def document(self, *, selected: str, windows: list[str]) -> dict[str, Any]:
        """The analytics document of tenant ``selected`` (``*``: all) as of now."""
        doc = self.fold.document(selected=selected, windows=windows, now=now_ms())
        failed = self.fold.failed_streams(selected)
        missing = [i for i in failed if i.stream_id not in self._errors]
        if missing:
            # Read the error events not seen yet, all at once (the reader pool bounds
            # how many reach Kafka together), within one deadline.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(self._fill(i) for i in missing)),
                                       _ERROR_READ_S)
        doc["recent"]["errors"] = [self._errors.get(i.stream_id) or self._entry(i)
                                   for i in failed]
        while len(self._errors) > _ERROR_CACHE:
            self._errors.popitem(last=False)
        return doc

    def _entry(self, info: StreamInfo) -> dict[str, Any]:
        return {"stream": info.stream_id, "tenant": info.tenant or self.fold.default_tenant,
                "ts": info.updated_at, "code": None, "message": None, "retryable": None}

    async def _fill(self, info: StreamInfo) -> None:
        """Remember the ``recent.errors`` entry of a failed stream, read from its error
        event (not remembered if Kafka does not answer: the next document tries again)."""
        entry = self._entry(info)
        try:
            data = await self._read_error(info)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.info("could not read the error event of stream %s: %s", info.stream_id,
                     exc or type(exc).__name__)
            return
        if data is not None:
            entry["ts"] = data.get("ts", info.updated_at)
            body = data.get("data")
            if isinstance(body, dict):
                entry.update(code=body.get("code"), message=body.get("message"),
                             retryable=body.get("retryable"))
        self._errors[info.stream_id] = entry

    async def _read_error(self, info: StreamInfo) -> dict[str, Any] | None:
        """The error event at the stream's terminal offset (None: gone or not one)."""
        if info.terminal_offset is None:
            return None
        offset = info.terminal_offset
        log_start, _ = await self._reader.bounds(info.topic, info.partition)
        if offset < log_start:
            return None  # retention deleted it
        async with self._reader.open(info.topic, info.partition, offset) as cursor:
            async for rec in cursor.records(until=offset + 1, key=info.stream_id.encode()):
                if rec.offset == offset and rec.type == events.ERROR:
                    envelope = orjson.loads(rec.value)
                    return envelope if isinstance(envelope, dict) else None
        return None
