"""The webhooks process (``tidemark webhooks``): delivers events from the log to the
webhooks tenants registered, at least once.

A consumer group (``tidemark.<ns>.webhooks``) reads the events topic and the replay
topic. Each event record is matched against the registrations (``eventlog.webhooks``,
read up to their topic's end after every fetch, so a webhook registered before an event
was written is known when the event is matched): the stream's tenant (from the id's
tenant tag, hashed with each tenant that has webhooks; the ``tm-tenant`` header of a
stream's first event; the stream index for ids without tags), the event type, and that
the event was written at or after the registration.

Every matching webhook gets a delivery, queued on that webhook's lanes: a stream's
events always take the same lane, so they arrive in order; a lane retries its head
(:func:`workers.webhook_http.backoff`) until it succeeds or its attempts run out, then
writes a dead letter and goes on. An event's offset is committed only once each of its
deliveries succeeded or is in the dead-letter topic (or its webhook was deleted): a
process that dies (SIGKILL) loses nothing, its successor delivers again from the last
commit, with the same ``webhook-id``.

Bounds: ``TIDEMARK_WEBHOOK_QUEUE`` deliveries wait per webhook (a webhook whose queue is
full gets the next ones as dead letters at once: a slow or failing endpoint never stalls
another tenant's deliveries, and what it missed can be replayed), and
``TIDEMARK_WEBHOOK_IN_FLIGHT`` in the whole process (past it, fetching pauses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from eventlog.clients import make_admin, make_consumer, make_producer, started, stop_client
from eventlog.errors import KafkaUnavailable
from eventlog.index import StreamIndex
from eventlog.settings import Settings
from eventlog.topicids import topic_epoch
from eventlog.topics import (
    ensure_topics,
    events_topic,
    wait_for_topics,
    webhooks_dlq_topic,
    webhooks_replay_topic,
    webhooks_topic,
)
from eventlog.webhooks import DeadLetter, TopicView, Webhook, dead_letter_id, put, webhook_key
from schemas import events
from schemas.eventid import encode_event_id
from schemas.streamid import belongs_to, parse_stream_id
from workers.metrics import WebhookMetrics
from workers.signing import WebhookSigner
from workers.webhook_http import Sender, backoff

log = logging.getLogger(__name__)

#: What the process prints once it delivers (the tests wait for it).
STARTED: Final = "Webhooks started"
_COMMIT_EVERY_S: Final = 1.0
#: A lane idle this long ends if its webhook is gone.
_LANE_IDLE_S: Final = 30.0
_TENANT_CACHE: Final = 100_000
_REGISTRY_MAX: Final = 1_000_000


def group_id(namespace: str) -> str:
    return f"tidemark.{namespace}.webhooks"


class Progress:
    """One partition's records in flight: an offset is committed once every delivery of
    it and of every record before it is finished."""

    def __init__(self) -> None:
        self.pending: dict[int, int] = {}
        self.next: int | None = None
        self.committed: int | None = None
        self.revoked = False

    def add(self, offset: int, deliveries: int) -> None:
        self.next = offset + 1
        if deliveries:
            self.pending[offset] = deliveries

    def finish(self, offset: int) -> None:
        left = self.pending.get(offset, 0) - 1
        if left > 0:
            self.pending[offset] = left
        else:
            self.pending.pop(offset, None)

    def commit_point(self) -> int | None:
        return min(self.pending) if self.pending else self.next


@dataclass(slots=True)
class Delivery:
    webhook: str
    #: The event id: the ``webhook-id`` of every attempt and replay.
    msg_id: str
    stream: str
    type: str
    body: bytes
    progress: Progress
    offset: int
    replay_of: DeadLetter | None = None


@dataclass(slots=True)
class Endpoint:
    """One webhook's lanes (``TIDEMARK_WEBHOOK_CONCURRENCY``), each a bounded queue."""

    lanes: list[asyncio.Queue[Delivery]]
    running: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def offer(self, delivery: Delivery) -> bool:
        lane = self.lanes[zlib.crc32(delivery.stream.encode()) % len(self.lanes)]
        try:
            lane.put_nowait(delivery)
        except asyncio.QueueFull:
            return False
        return True


def payload(*, event_id: str, envelope: dict[str, Any]) -> bytes:
    """The body of a delivery (``schemas/json/webhook_payload.json``): the Standard
    Webhooks shape (``type``, ``timestamp``, ``data``) with the event's place."""
    stamp = datetime.fromtimestamp(int(envelope["ts"]) / 1000, UTC)
    return orjson.dumps({
        "type": envelope["type"],
        "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "eventId": event_id, "stream": envelope["stream"], "seq": envelope["seq"],
        "data": envelope["data"]})


class Deliverer:
    """Supervises the consumer, the lanes and the commits; :meth:`run` until cancelled."""

    def __init__(self, settings: Settings, signers: dict[str, WebhookSigner]) -> None:
        self.settings = settings
        self.signers = signers
        ns = settings.log.namespace
        self._events_topic = events_topic(ns)
        self._replay_topic = webhooks_replay_topic(ns)
        self._dlq_topic = webhooks_dlq_topic(ns)
        self._wh = settings.webhooks
        self.sender = Sender(self._wh)
        self.registry = TopicView(settings.kafka, webhooks_topic(ns), Webhook.from_json,
                                  role="webhooks-registry", max_entries=_REGISTRY_MAX)
        self.index = StreamIndex(settings.kafka, namespace=ns,
                                 keep=lambda sid: parse_stream_id(sid) is None)
        self._by_tenant: dict[str, list[Webhook]] = {}
        self._registry_version = -1
        self._tenants: OrderedDict[str, str] = OrderedDict()
        self._progress: dict[TopicPartition, Progress] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._epoch = ""
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.started = asyncio.Event()
        self.metrics = WebhookMetrics()
        self.metrics.in_flight.set_function(lambda: self._in_flight)

    # --- start and stop ---------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        admin = await started(lambda: make_admin(s.kafka, role="webhooks-admin"), s.kafka,
                              "admin start")
        try:
            await ensure_topics(admin, s.log)
            ids = await wait_for_topics(admin._client, [
                self._events_topic, self._replay_topic, self._dlq_topic,
                webhooks_topic(s.log.namespace)])
        finally:
            await stop_client(admin)
        self._epoch = topic_epoch(ids[self._events_topic])
        self._producer = await started(lambda: make_producer(s.kafka, role="webhooks"),
                                       s.kafka, "producer start")
        try:
            await self.registry.start()
            await self._catch_up_registry()
            await self.index.start()
            await self.sender.start()
            self._consumer = consumer = await started(
                lambda: make_consumer(s.kafka, role="webhooks",
                                      group_id=group_id(s.log.namespace),
                                      max_poll_interval_ms=300_000, session_timeout_ms=10_000,
                                      heartbeat_interval_ms=2_000),
                s.kafka, "webhooks consumer start")
            consumer.subscribe([self._events_topic, self._replay_topic],
                               listener=_Rebalance(self))
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    tg.create_task(self.index.run(), name="webhooks-index")
                    tg.create_task(self._commits(), name="webhooks-commits")
                    tg.create_task(self._consume(consumer), name="webhooks-consume")
                    self.started.set()
            finally:
                await self._commit(final=True)
                await stop_client(consumer)
        finally:
            await self.sender.close()
            await self.index.stop()
            await self.registry.stop()
            await stop_client(self._producer)

    # --- matching ---------------------------------------------------------------------

    async def _catch_up_registry(self) -> None:
        while not await self.registry.catch_up(timeout=self.settings.kafka.connect_timeout_s):
            log.warning("the webhook registrations did not load in time; trying again")
        if self.registry.version != self._registry_version:
            self._registry_version = self.registry.version
            by_tenant: dict[str, list[Webhook]] = {}
            for webhook in self.registry:
                by_tenant.setdefault(webhook.tenant, []).append(webhook)
            self._by_tenant = by_tenant

    def _tenant_of(self, stream: str, headers: Sequence[tuple[str, bytes]]) -> str | None:
        known = self._tenants.get(stream)
        if known is not None:
            return known
        tenant: str | None = None
        header = next((v for k, v in headers if k == events.HEADER_TENANT), None)
        default = self.settings.auth.default_tenant
        if header is not None:
            tenant = header.decode("utf-8", "replace") or default
        else:
            ref = parse_stream_id(stream)
            if ref is not None and ref.version == 2:
                tenant = default
            elif ref is not None:
                tenant = next((t for t in self._by_tenant if belongs_to(stream, t, None)),
                              None)
            else:
                info = self.index.get(stream)
                tenant = None if info is None else (info.tenant or default)
        if tenant is not None:
            self._tenants[stream] = tenant
            while len(self._tenants) > _TENANT_CACHE:
                self._tenants.popitem(last=False)
        return tenant

    # --- the consumer loop ------------------------------------------------------------

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            await self._room.wait()
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            if not batches:
                continue
            await self._catch_up_registry()
            for tp, records in batches.items():
                progress = self._progress.get(tp)
                if progress is None:  # revoked meanwhile: its new owner reads it
                    continue
                for rec in records:
                    if tp.topic == self._replay_topic:
                        await self._dispatch_replay(progress, rec.offset, rec.value)
                    else:
                        await self._dispatch_event(tp, progress, rec)

    async def _dispatch_event(self, tp: TopicPartition, progress: Progress, rec: Any) -> None:
        headers = rec.headers or ()
        kind = next((v.decode("utf-8", "replace") for k, v in headers
                     if k == events.HEADER_TYPE), None)
        stream = rec.key.decode("utf-8", "replace") if rec.key is not None else None
        targets: list[Webhook] = []
        if kind is not None and stream is not None and rec.value is not None:
            tenant = self._tenant_of(stream, headers)
            if tenant is not None:
                targets = [w for w in self._by_tenant.get(tenant, ())
                           if w.wants(kind, rec.timestamp)]
        progress.add(rec.offset, len(targets))
        if not targets:
            return
        # Version 1 (no seq): the id is the deliveries' idempotency key, and a delivery
        # retried after an upgrade must keep the key it had.
        event_id = encode_event_id(self._epoch, tp.partition, rec.offset, None)
        try:
            body = payload(event_id=event_id, envelope=orjson.loads(rec.value))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("an unreadable event at %s: %s", event_id, exc,
                        extra={"stream": stream, "partition": tp.partition,
                               "offset": rec.offset})
            progress.pending.pop(rec.offset, None)
            return
        for webhook in targets:
            assert stream is not None and kind is not None
            await self._queue(Delivery(webhook=webhook.key, msg_id=event_id, stream=stream,
                                       type=kind, body=body, progress=progress,
                                       offset=rec.offset))

    async def _dispatch_replay(self, progress: Progress, offset: int,
                               value: bytes | None) -> None:
        try:
            letter = DeadLetter.from_json(value) if value is not None else None
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("an unreadable replay request at offset %s: %s", offset, exc)
            letter = None
        key = None if letter is None else webhook_key(letter.tenant, letter.webhook)
        if letter is None or key is None or self.registry.get(key) is None:
            progress.add(offset, 0)
            return
        progress.add(offset, 1)
        await self._queue(Delivery(webhook=key, msg_id=letter.event_id, stream=letter.stream,
                                   type=letter.type, body=letter.payload.encode(),
                                   progress=progress, offset=offset, replay_of=letter))

    async def _queue(self, delivery: Delivery) -> None:
        endpoint = self._endpoints.get(delivery.webhook)
        if endpoint is None:
            endpoint = self._endpoint(delivery.webhook)
        if not endpoint.offer(delivery):
            await self._dead_letter(delivery, f"the webhook's queue was full "
                                    f"(TIDEMARK_WEBHOOK_QUEUE={self._wh.queue})", 0)
            delivery.progress.finish(delivery.offset)
            return
        self._in_flight += 1
        if self._in_flight >= self._wh.in_flight:
            self._room.clear()

    def _endpoint(self, key: str) -> Endpoint:
        per_lane = max(1, self._wh.queue // self._wh.concurrency)
        endpoint = self._endpoints[key] = Endpoint(
            lanes=[asyncio.Queue(per_lane) for _ in range(self._wh.concurrency)])
        assert self._tg is not None
        for i, lane in enumerate(endpoint.lanes):
            endpoint.tasks.append(self._tg.create_task(
                self._lane(key, endpoint, lane), name=f"webhook-{key}-{i}"))
        endpoint.running = len(endpoint.lanes)
        return endpoint

    # --- the lanes --------------------------------------------------------------------

    async def _lane(self, key: str, endpoint: Endpoint, lane: asyncio.Queue[Delivery]) -> None:
        while True:
            try:
                delivery = await asyncio.wait_for(lane.get(), _LANE_IDLE_S)
            except TimeoutError:
                if self.registry.get(key) is None and lane.empty():
                    endpoint.running -= 1
                    if endpoint.running == 0 and self._endpoints.get(key) is endpoint:
                        del self._endpoints[key]
                    return
                continue
            # Cancelled in here (shutdown), the delivery stays unfinished: not committed.
            await self._deliver(delivery)
            delivery.progress.finish(delivery.offset)
            self._in_flight -= 1
            if self._in_flight < self._wh.in_flight:
                self._room.set()

    async def _deliver(self, d: Delivery) -> None:
        attempts, reason = 0, ""
        while not d.progress.revoked:
            webhook = self.registry.get(d.webhook)
            if webhook is None:
                log.info("webhook %s was deleted: delivery of %s dropped", d.webhook, d.msg_id)
                self.metrics.deliveries.labels("dropped").inc()
                return
            signer = self.signers.get(webhook.signer)
            if signer is None:
                reason = f"no webhook signer {webhook.signer!r} is loaded (tidemark plugins)"
                break
            attempts += 1
            began = time.monotonic()
            outcome = await self.sender.attempt(webhook, signer, msg_id=d.msg_id, body=d.body)
            self.metrics.attempt_seconds.observe(time.monotonic() - began)
            self.metrics.attempts.labels("ok" if outcome.ok else "failed").inc()
            if outcome.ok:
                log.debug("delivered %s to webhook %s (attempt %d)", d.msg_id, d.webhook,
                          attempts, extra={"stream": d.stream})
                if d.replay_of is not None:
                    await self._write(self._dlq_topic, d.replay_of.id, None)
                self.metrics.deliveries.labels("delivered").inc()
                return
            reason = outcome.reason
            log.info("webhook %s: attempt %d of %s failed: %s", d.webhook, attempts,
                     d.msg_id, reason, extra={"stream": d.stream})
            if attempts >= self._wh.max_attempts:
                break
            await asyncio.sleep(backoff(attempts, base_s=self._wh.retry_base_s,
                                        max_s=self._wh.retry_max_s,
                                        retry_after_s=outcome.retry_after_s))
        if not d.progress.revoked and self.registry.get(d.webhook) is not None:
            await self._dead_letter(d, reason, attempts)

    async def _dead_letter(self, d: Delivery, reason: str, attempts: int) -> None:
        tenant, webhook_id = d.webhook.split("/", 1)
        replays = 0 if d.replay_of is None else d.replay_of.replays + 1
        letter = DeadLetter(id=dead_letter_id(tenant, webhook_id, d.msg_id), tenant=tenant,
                            webhook=webhook_id, event_id=d.msg_id, stream=d.stream,
                            type=d.type, payload=d.body.decode(), reason=reason,
                            attempts=attempts, failed_ms=int(time.time() * 1000),
                            replays=replays)
        log.warning("webhook %s: delivery of %s is a dead letter (%s) after %d attempts: %s",
                    d.webhook, d.msg_id, letter.id, attempts, reason,
                    extra={"stream": d.stream})
        await self._write(self._dlq_topic, letter.id, letter.to_json())
        self.metrics.deliveries.labels("dead_letter").inc()

    async def _write(self, topic: str, key: str, value: bytes | None) -> None:
        """Until the broker has it: a delivery is not finished before."""
        assert self._producer is not None
        delay = 0.1
        while True:
            try:
                await put(self._producer, topic, key, value)
                return
            except (KafkaError, KafkaUnavailable, OSError) as exc:
                log.warning("could not write to %s (%s); retrying", topic, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- commits ----------------------------------------------------------------------

    async def _commits(self) -> None:
        """Commit what finished; and read the registrations while no event comes (a
        webhook deleted meanwhile stops its retries)."""
        while True:
            await asyncio.sleep(_COMMIT_EVERY_S)
            await self._commit()
            await self._catch_up_registry()

    async def _commit(self, *, final: bool = False,
                      only: Sequence[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets: dict[TopicPartition, int] = {}
        for tp, progress in self._progress.items():
            if only is not None and tp not in only:
                continue
            point = progress.commit_point()
            if point is not None and point != progress.committed:
                offsets[tp] = point
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            (log.info if final else log.warning)("commit failed (%s): those deliveries "
                                                 "may be sent again", exc)
            return
        for tp, point in offsets.items():
            self._progress[tp].committed = point

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        await self._commit(only=partitions)
        for tp in partitions:
            progress = self._progress.pop(tp, None)
            if progress is not None:
                progress.revoked = True

    def assigned(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._progress.setdefault(tp, Progress())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, deliverer: Deliverer) -> None:
        self._deliverer = deliverer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        with contextlib.suppress(KafkaError):
            await self._deliverer.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._deliverer.assigned(list(assigned))
