"""Factories of the Kafka clients Tidemark uses, and a bounded start with backoff."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from eventlog.errors import KafkaUnavailable
from eventlog.settings import KafkaSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


def _common(kafka: KafkaSettings, role: str) -> dict[str, Any]:
    if not kafka.bootstrap:
        raise KafkaUnavailable("TIDEMARK_KAFKA_BOOTSTRAP is not set")
    return {
        "bootstrap_servers": kafka.bootstrap,
        "client_id": f"{kafka.client_id}-{role}",
        "request_timeout_ms": kafka.request_timeout_ms,
        "metadata_max_age_ms": 30_000,
        "retry_backoff_ms": 100,
    }


def make_producer(kafka: KafkaSettings, *, role: str, transactional_id: str | None = None,
                  linger_ms: int = 2) -> AIOKafkaProducer:
    """An idempotent producer (transactional when ``transactional_id`` is given)."""
    return AIOKafkaProducer(
        **_common(kafka, role),
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
    )


def make_consumer(kafka: KafkaSettings, *, role: str, group_id: str | None = None,
                  **extra: Any) -> AIOKafkaConsumer:
    """A read_committed consumer (unless ``isolation_level`` says otherwise); without
    ``group_id`` it is for manual assignment."""
    return AIOKafkaConsumer(
        **_common(kafka, role),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **{"isolation_level": "read_committed", **extra},
    )


def make_admin(kafka: KafkaSettings, *, role: str) -> AIOKafkaAdminClient:
    common = _common(kafka, role)
    del common["metadata_max_age_ms"], common["retry_backoff_ms"]
    return AIOKafkaAdminClient(**common)


async def retry_until(deadline_s: float, what: str,
                      attempt: Callable[[], Awaitable[T]]) -> T:
    """Call ``attempt`` until it succeeds or ``deadline_s`` passes.

    Backoff is exponential with full jitter, from 0.1 s up to 2 s between tries.
    Only Kafka errors and OS errors are retried; the last one is re-raised wrapped
    in :class:`KafkaUnavailable`.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    delay = 0.1
    while True:
        try:
            return await attempt()
        except (KafkaError, OSError) as exc:
            remaining = end - loop.time()
            if remaining <= 0:
                raise KafkaUnavailable(f"{what}: Kafka unreachable for {deadline_s:.0f}s") from exc
            log.warning("%s failed (%s); retrying", what, exc)
            await asyncio.sleep(min(remaining, random.uniform(0, delay)))  # noqa: S311
            delay = min(delay * 2, 2.0)


C = TypeVar("C", AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient)


async def started(factory: Callable[[], C], kafka: KafkaSettings, what: str) -> C:
    """Create and start an aiokafka client, retrying while Kafka is not reachable yet.

    Each try uses a fresh client; a client whose start failed is closed.
    """

    async def attempt() -> C:
        client = factory()
        try:
            await client.start()
        except BaseException:
            await _close_quietly(client)
            raise
        return client

    return await retry_until(kafka.connect_timeout_s, what, attempt)


async def _close_quietly(client: Any) -> None:
    try:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
    except (KafkaError, OSError) as exc:
        log.debug("closing a client that failed to start: %s", exc)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, *,
                        timeout: float = 5.0) -> list[int]:
    """A topic's partitions, as a (manually assigned) consumer's metadata knows them.

    Such a consumer asks metadata only for the topics it tracks, and a topic just
    created is not in every answer at once: ask, track, and wait, up to ``timeout``.
    """
    client = consumer._client
    for _ in range(max(1, int(timeout / 0.05))):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return sorted(partitions)
        await (client.force_metadata_update() if topic in client._topics
               else client.add_topic(topic))
        await asyncio.sleep(0.05)
    raise KafkaUnavailable(f"no partitions for topic {topic} in the broker's metadata")


async def read_to_end(consumer: AIOKafkaConsumer, topic: str, *,
                      max_records: int = 1000) -> AsyncIterator[Any]:
    """Assign every partition of ``topic`` to ``consumer`` (manual assignment), from its
    beginning, and yield its records up to the end offsets it had when this started
    (a compacted topic read whole: the index, the cache). The consumer is left
    positioned there, to follow the topic on."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    pending = {tp for tp in tps if ends[tp] > 0}
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=500, max_records=max_records)
        for records in batches.values():
            for rec in records:
                yield rec
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


async def stop_client(client: Any) -> None:
    """Stop or close an aiokafka client, logging instead of raising Kafka errors."""
    await _close_quietly(client)
