"""The shared objects of one gateway process: Kafka clients, the hub, the stream lookup,
and (with ``TIDEMARK_REDIS_URL``) the shared limits and session lists."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from eventlog.clients import make_admin, make_producer, started, stop_client
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.streams import Appender, StreamCreator
from eventlog.topics import STREAMS_TOPIC, ensure_topics, events_topic, wait_for_topics
from gateway.analytics_feed import AnalyticsFeed
from gateway.analytics_recorder import Recorder, tenant_of
from gateway.breaker import CircuitBreaker
from gateway.compression import Codings
from gateway.hub import Hub
from gateway.inputs import InputWaiters
from gateway.limits import Limits
from gateway.lookup import StreamLookup
from gateway.metrics import Metrics
from gateway.sessions import Sessions
from gateway.store import Store
from gateway.streaming import Session
from schemas.errors import TidemarkError

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The shared objects of one gateway process; set once Kafka is reachable."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    admin: AIOKafkaAdminClient | None = None
    producer: AIOKafkaProducer | None = None
    reader: LogReader | None = None
    hub: Hub | None = None
    lookup: StreamLookup | None = None
    creator: StreamCreator | None = None
    appender: Appender | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Open responses of every transport: SSE, WebSocket, long-poll (for the write
    #: watchdog).
    sessions: set[Session] = field(default_factory=set)
    failure: BaseException | None = None
    #: This process, in the ``Tidemark-Gateway`` header of SSE responses (for operators:
    #: which gateway served a client; clients need not care).
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    #: Whether the broker answered the watcher's last probe.
    kafka_ok: bool = True
    #: The listening sockets carry ``TIDEMARK_CLIENT_SEND_BUFFER_BYTES`` (set by the
    #: process that opened them: ``gateway.streaming.bound_listeners``).
    listener_send_buffer: bool = False
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    #: Limits shared by every gateway, and the users' session lists (both in Redis);
    #: None without TIDEMARK_REDIS_URL (limits off).
    store: Store | None = None
    limits: Limits | None = None
    user_sessions: Sessions | None = None
    #: Analytics: what this process observes (hot paths), and the fold of every
    #: process's reports and the stream index (``gateway.analytics_feed``).
    recorder: Recorder = field(default_factory=Recorder)
    analytics: AnalyticsFeed | None = None
    #: How SSE and long-poll answers are compressed (``gateway.compression``).
    codings: Codings = field(init=False)
    #: Inputs sent to generated streams' workers, waiting for their events.
    inputs: InputWaiters = field(init=False)

    def __post_init__(self) -> None:
        self.codings = Codings.of(self.settings.gateway)
        self.inputs = InputWaiters(self.settings.gateway.input_pending)

    async def connect(self) -> None:
        s = self.settings
        self.admin = admin = await started(
            lambda: make_admin(s.kafka, role="gateway-admin"), s.kafka, "admin start")
        await ensure_topics(admin, s.log)
        topic = events_topic(s.log.namespace)
        await wait_for_topics(admin._client, [topic, STREAMS_TOPIC])
        self.producer = await started(lambda: make_producer(s.kafka, role="gateway"),
                                      s.kafka, "producer start")
        self.reader = LogReader(s.kafka, size=s.gateway.catchup_readers, role="catchup")
        self.hub = Hub(s.kafka, tail_bytes=s.gateway.tail_bytes,
                       client_buffer_bytes=s.gateway.client_buffer_bytes,
                       on_terminal=self._on_terminal, on_input=self.inputs.seen)
        await self.hub.start([topic])
        self.lookup = StreamLookup(kafka=s.kafka, log_settings=s.log, hub=self.hub,
                                   reader=self.reader, wait_s=s.gateway.index_wait_s,
                                   max_streams=s.gateway.lookup_cache_streams)
        # Ids name a floor below their first event: how far this gateway's hub has read.
        self.creator = StreamCreator(s.log, self.producer, floor=self.hub.floor, admin=admin)
        self.appender = Appender(self.producer, self.reader)
        self.analytics = AnalyticsFeed(
            s, producer=self.producer, reader=self.reader, recorder=self.recorder,
            process=self.instance, connections=lambda: map(tenant_of, self.sessions))
        await self.analytics.start()

    def _open_limits(self) -> None:
        """Limits and session lists need no Kafka: they are there from the start (the
        Redis client connects on its first call)."""
        s = self.settings
        if not s.limits.redis_url:
            log.warning("TIDEMARK_REDIS_URL is unset: limits are off and session lists "
                        "answer 503")
            return
        self.store = store = Store(s.limits.redis_url)
        self.limits = Limits(s.limits, namespace=s.log.namespace, store=store,
                             reservation_ttl_s=s.gateway.request_timeout_s + 5,
                             per_user=s.auth.mode != "none",
                             on_fail_open=self.metrics.limits_fail_open.inc)
        self.user_sessions = Sessions(store, namespace=s.log.namespace,
                                      retention_ms=s.log.retention_ms)

    def _on_terminal(self, stream_id: str, event_type: str) -> None:
        self.metrics.count_terminal(event_type)
        self.inputs.ended(stream_id)
        if self.limits is not None:
            self.limits.stream_ended(stream_id)

    async def run(self) -> None:
        """Connect (retrying with backoff), then keep the hub current.

        This is the outermost edge of the services task: anything unexpected is logged
        and recorded (``/readyz`` reports it) before the task ends.
        """
        self._open_limits()
        try:
            await self._connect()
            assert self.hub is not None
            # Nothing to load first: streams are found in the log when asked for.
            self.ready.set()
            log.info("gateway ready")
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.hub.run(), name="hub")
                tg.create_task(self.pace(), name="pace")
                tg.create_task(self.watch_kafka(), name="watch-kafka")
                assert self.analytics is not None
                tg.create_task(self.analytics.run(), name="analytics")
                if self.limits is not None:
                    tg.create_task(self.limits.run(), name="limits-ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            log.exception("gateway services failed")
            raise

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.connect()
                self.failure = None
                return
            except (TidemarkError, KafkaError, OSError) as exc:
                self.failure = exc
                log.warning("gateway could not connect (%s); retrying in %.1fs", exc, delay)
                await self._close_clients()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def watch_kafka(self, every_s: float = 2.0) -> None:
        """Probe the broker; while it does not answer, /readyz is 503 and the circuit
        breaker fails requests fast. Open SSE responses stay up (heartbeats go on)."""
        while True:
            await asyncio.sleep(every_s)
            assert self.admin is not None
            try:
                await asyncio.wait_for(self.admin.describe_cluster(), every_s)
            except (TimeoutError, KafkaError, OSError) as exc:
                if self.kafka_ok:
                    log.warning("Kafka stopped answering (%s)", exc or type(exc).__name__)
                self.kafka_ok = False
                self.breaker.trip()
            else:
                if not self.kafka_ok:
                    log.info("Kafka answers again")
                    self.breaker.success()
                self.kafka_ok = True

    async def pace(self) -> None:
        """Wake every subscriber twice per heartbeat interval (they ping if idle), drop
        clients whose sockets have accepted nothing for the write timeout, and have the
        others look at their sockets (``Session.check_socket``: a slow one is coalesced)."""
        gw = self.settings.gateway
        loop = asyncio.get_running_loop()
        tick = min(gw.heartbeat_s / 2, 1.0)
        next_wake = loop.time()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            if now >= next_wake and self.hub is not None:
                self.hub.wake_all()
                next_wake = now + gw.heartbeat_s / 2
                await self.hub.detach_idle()
            for session in list(self.sessions):
                started = session.write_started
                if started is not None and now - started > gw.client_write_timeout_s:
                    if session.drop_stuck(gw.client_write_timeout_s):
                        log.info("dropping a client of stream %s: no write accepted for "
                                 "%.0fs", session.stream_id, now - started)
                        session.count_cut_off()
                else:
                    session.check_socket(now)

    async def close(self) -> None:
        self.closing.set()
        if self.hub is not None:
            self.hub.wake_all()
        await self._close_clients()
        if self.store is not None:
            await self.store.close()
        self.store = self.limits = self.user_sessions = None

    async def _close_clients(self) -> None:
        for closer in (self.analytics, self.lookup, self.hub):
            if closer is not None:
                await closer.stop()
        if self.reader is not None:
            await self.reader.close()
        for client in (self.producer, self.admin):
            if client is not None:
                await stop_client(client)
        self.hub = self.lookup = self.reader = self.producer = self.admin = None
        self.analytics = None


SERVICES = web.AppKey("services", Services)
#: More reasons for ``/readyz`` to answer 503: each returns why the gateway cannot serve
#: now, or None (parts mounted by the composition root, e.g. Durable Streams).
READY_CHECKS = web.AppKey("ready_checks", list[Callable[[], str | None]])
