"""The Kafka topic layout, and idempotent creation of the topics a process needs."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from eventlog.errors import KafkaUnavailable
from eventlog.settings import LogSettings
from eventlog.topicids import fetch_topic_ids

log = logging.getLogger(__name__)

#: Compacted stream index, key = stream id.
STREAMS_TOPIC: Final = "tidemark.streams"


def events_topic(namespace: str) -> str:
    """Every event of every stream of a namespace; key = stream id."""
    return f"tidemark.{namespace}.events"


def jobs_topic(namespace: str, *, priority: bool = False) -> str:
    """Generation requests and control records (cancel) of a namespace; key = stream id.

    ``priority``: the jobs of users whose tier has ``priority`` (``tidemark.<ns>.jobs.priority``).
    It has the jobs topic's partition count and keys, so partition p of both topics holds
    the jobs of the same streams, and the worker that owns one owns the other.
    """
    return f"tidemark.{namespace}.jobs.priority" if priority else f"tidemark.{namespace}.jobs"


def jobs_topics(namespace: str) -> tuple[str, str]:
    """Both jobs topics of a namespace: the priority one first."""
    return jobs_topic(namespace, priority=True), jobs_topic(namespace)


def analytics_topic(namespace: str) -> str:
    """Each gateway's periodic analytics report (``gateway.analytics_feed``); key = the
    reporting process. Kept a little longer than the longest analytics window."""
    return f"tidemark.{namespace}.analytics"


def cache_topic(namespace: str) -> str:
    """The similar-query cache's entries of a namespace (``eventlog.cache``); compacted,
    key = a hash of the entry's scope and normalised query."""
    return f"tidemark.{namespace}.cache"


def webhooks_topic(namespace: str) -> str:
    """Compacted webhook registrations of a namespace; key = ``<tenant>/<webhook id>``
    (``eventlog.webhooks``)."""
    return f"tidemark.{namespace}.webhooks"


def webhooks_dlq_topic(namespace: str) -> str:
    """Dead letters: deliveries whose attempts ran out; key = the dead letter's id, a
    tombstone once a replay delivered it. Compacted, and deleted after its retention."""
    return f"tidemark.{namespace}.webhooks.dlq"


def webhooks_replay_topic(namespace: str) -> str:
    """Replay requests of dead letters, read by the webhooks processes' consumer group;
    key = the dead letter's id."""
    return f"tidemark.{namespace}.webhooks.replay"


#: Retention of the dead-letter and replay topics.
WEBHOOK_DLQ_RETENTION_MS: Final = 7 * 86_400_000

#: Retention of the analytics topic: the longest analytics window (24 h) and one hour.
ANALYTICS_RETENTION_MS: Final = 25 * 3_600_000


def stream_topic(namespace: str, stream_id: str) -> str:
    """The topic of one stream under ``topic-per-stream`` placement (benchmark mode)."""
    return f"tidemark.{namespace}.stream.{stream_id}"


def stream_topic_spec(settings: LogSettings, stream_id: str, *, brokers: int = 1) -> NewTopic:
    rf, min_isr = settings.replication(brokers)
    return NewTopic(stream_topic(settings.namespace, stream_id), 1, rf, topic_configs={
        "cleanup.policy": "delete", "retention.ms": str(settings.retention_ms),
        **_min_isr(min_isr)})


def _min_isr(value: int | None) -> dict[str, str]:
    return {} if value is None else {"min.insync.replicas": str(value)}


def segment_ms(retention_ms: int) -> int:
    """A segment roll time that lets retention act within ~25 % of its time (<= 1 h)."""
    return max(1000, min(retention_ms // 4, 3_600_000))


def namespace_topics(settings: LogSettings, *, brokers: int = 1) -> list[NewTopic]:
    """The namespace's topics, replicated as ``settings`` say for ``brokers`` brokers."""
    partitions = settings.partitions
    rf, min_isr = settings.replication(brokers)
    isr = _min_isr(min_isr)
    return [
        NewTopic(events_topic(settings.namespace), partitions, rf, topic_configs={
            "cleanup.policy": "delete",
            "retention.ms": str(settings.retention_ms),
            # Retention deletes whole segments: roll them well within the retention time.
            "segment.ms": str(segment_ms(settings.retention_ms)),
            **isr,
        }),
        *(NewTopic(topic, partitions, rf, topic_configs={
            "cleanup.policy": "delete",
            "retention.ms": str(max(settings.retention_ms, 7 * 86_400_000)),
            **isr,
        }) for topic in jobs_topics(settings.namespace)),
        NewTopic(analytics_topic(settings.namespace), partitions, rf, topic_configs={
            "cleanup.policy": "delete",
            "retention.ms": str(ANALYTICS_RETENTION_MS),
            "segment.ms": str(segment_ms(ANALYTICS_RETENTION_MS)),
            **isr,
        }),
        # The similar-query cache's entries (eventlog.cache): every worker rebuilds its
        # index from it; compaction keeps the newest answer per scope and query.
        NewTopic(cache_topic(settings.namespace), partitions, rf, topic_configs={
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "60000",
            **isr,
        }),
        NewTopic(STREAMS_TOPIC, partitions, rf, topic_configs={
            "cleanup.policy": "compact",
            "min.compaction.lag.ms": "60000",
            **isr,
        }),
        NewTopic(webhooks_topic(settings.namespace), partitions, rf, topic_configs={
            "cleanup.policy": "compact", **isr}),
        NewTopic(webhooks_dlq_topic(settings.namespace), partitions, rf, topic_configs={
            "cleanup.policy": "compact,delete",
            "retention.ms": str(WEBHOOK_DLQ_RETENTION_MS), **isr}),
        NewTopic(webhooks_replay_topic(settings.namespace), partitions, rf, topic_configs={
            "cleanup.policy": "delete",
            "retention.ms": str(WEBHOOK_DLQ_RETENTION_MS), **isr}),
    ]


async def ensure_topics(admin: AIOKafkaAdminClient, settings: LogSettings) -> None:
    """Create the namespace's topics that are missing; existing ones are left as they are.

    New topics get ``TIDEMARK_REPLICATION_FACTOR`` and ``TIDEMARK_MIN_INSYNC_REPLICAS``
    (by default, on a cluster of three or more brokers: 3 replicas, 2 in sync; on one: 1).
    Partition counts are never changed later: that would move keys to other partitions.
    """
    existing = set(await admin.list_topics())
    names = [t.name for t in namespace_topics(settings)]
    if all(name in existing for name in names):
        return
    brokers = len((await admin.describe_cluster())["brokers"])
    missing = [t for t in namespace_topics(settings, brokers=brokers) if t.name not in existing]
    response = await admin.create_topics(missing)
    for topic, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise RuntimeError(f"could not create topic {topic}: error code {code}")
        if code == 0:
            log.info("created topic %s", topic)


async def wait_for_topics(client: Any, topics: list[str], *,
                          timeout: float = 30.0) -> dict[str, uuid.UUID]:
    """Wait until the broker's metadata shows every topic; return their topic ids.

    ``client`` is an aiokafka client (``admin._client``, ``consumer._client``). A topic
    just created is not in every metadata answer at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ids = await fetch_topic_ids(client, topics)
        if all(t in ids for t in topics):
            return ids
        if loop.time() > deadline:
            missing = sorted(set(topics) - set(ids))
            raise KafkaUnavailable(f"topics {missing} not in the broker's metadata")
        await asyncio.sleep(0.1)
