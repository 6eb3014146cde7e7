"""The jobs consumer's lag per owned partition, sampled on a timer (not per record)."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from workers.metrics import WorkerMetrics


class JobsLag:
    """Sets ``tidemark_worker_jobs_lag_records{topic,partition}``: the partition's log
    end as of the consumer's last fetch (the last stable offset, else the high
    watermark) minus the consumer's position, i.e. jobs and cancels not read yet. Jobs
    read and waiting for a slot are ``tidemark_worker_jobs_waiting``; a partition this
    worker no longer owns loses its series."""

    def __init__(self, metrics: WorkerMetrics, every_s: float) -> None:
        self._metrics = metrics
        self._every = every_s
        self._next = time.monotonic() + every_s
        self._shown: set[TopicPartition] = set()

    async def maybe_sample(self, consumer: AIOKafkaConsumer) -> None:
        """Sample if the interval has passed (cheap to call on every poll)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._every
        gauge = self._metrics.jobs_lag
        owned = set(consumer.assignment())
        for tp in self._shown - owned:
            gauge.remove(tp.topic, str(tp.partition))
        self._shown &= owned
        for tp in owned:
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            if end is None or end < 0:
                continue
            try:
                position = await consumer.position(tp)
            except IllegalStateError:  # revoked meanwhile (a rebalance)
                continue
            gauge.labels(tp.topic, str(tp.partition)).set(max(0, end - position))
            self._shown.add(tp)
