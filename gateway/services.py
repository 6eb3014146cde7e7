"""The shared objects of one gateway process: Kafka clients, the stream index, the hub."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web
from aiokafka import AIOKafkaProducer

from eventlog.clients import make_admin, make_producer, started, stop_client
from eventlog.index import StreamIndex
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.streams import Appender, StreamCreator
from eventlog.topicids import fetch_topic_ids, topic_epoch
from eventlog.topics import ensure_topics, events_topic
from gateway.hub import Hub
from gateway.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The shared objects of one gateway process; set once Kafka is reachable."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    producer: AIOKafkaProducer | None = None
    reader: LogReader | None = None
    index: StreamIndex | None = None
    hub: Hub | None = None
    creator: StreamCreator | None = None
    appender: Appender | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failure: BaseException | None = None

    async def connect(self) -> None:
        s = self.settings
        admin = await started(lambda: make_admin(s.kafka, role="gateway-admin"), s.kafka,
                              "admin start")
        try:
            await ensure_topics(admin, s.log)
            topic = events_topic(s.log.namespace)
            ids = await fetch_topic_ids(admin._client, [topic])
        finally:
            await stop_client(admin)
        self.producer = await started(lambda: make_producer(s.kafka, role="gateway"),
                                      s.kafka, "producer start")
        self.reader = LogReader(s.kafka, size=s.gateway.catchup_readers, role="catchup")
        self.index = StreamIndex(s.kafka)
        await self.index.start()
        self.hub = Hub(s.kafka, topic=topic, epoch=topic_epoch(ids[topic]),
                       tail_bytes=s.gateway.tail_bytes,
                       client_buffer_bytes=s.gateway.client_buffer_bytes)
        await self.hub.start()
        self.creator = StreamCreator(s.log, self.producer)
        self.appender = Appender(self.producer, self.reader)

    async def run(self) -> None:
        """Connect, then keep the index and the hub current until cancelled."""
        try:
            await self.connect()
            assert self.index is not None and self.hub is not None
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.index.run(), name="index")
                tg.create_task(self.hub.run(), name="hub")
                tg.create_task(self._mark_ready(), name="ready")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            log.exception("gateway services failed")
            raise

    async def _mark_ready(self) -> None:
        assert self.index is not None
        await self.index.sync(timeout=None)
        self.ready.set()
        log.info("gateway ready: %s streams in the index", len(self.index))

    async def close(self) -> None:
        self.closing.set()
        if self.hub is not None:
            self.hub.wake_all()
        for closer in (self.hub, self.index):
            if closer is not None:
                await closer.stop()
        if self.reader is not None:
            await self.reader.close()
        if self.producer is not None:
            await stop_client(self.producer)


SERVICES = web.AppKey("services", Services)
