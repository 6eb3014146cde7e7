"""The worker group's assignment against a real broker: partition p of both jobs topics
always goes to the same worker (its claim fences the jobs partition as a pair; split,
two workers would fence each other's claims), whatever the number of workers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from eventlog.clients import make_admin, make_consumer, started, stop_client
from eventlog.settings import load_settings
from eventlog.topics import ensure_topics, jobs_topics, wait_for_topics
from workers.runner import ASSIGNORS

pytestmark = pytest.mark.integration

PARTITIONS = 12


async def _assignments(consumers: list[AIOKafkaConsumer]) -> list[set[TopicPartition]]:
    """Poll every member until their assignments cover both topics once, all members
    have a share, and it holds for a second (the group has settled)."""

    async def poll(consumer: AIOKafkaConsumer) -> None:
        while True:
            await consumer.getmany(timeout_ms=100)

    pollers = [asyncio.create_task(poll(c)) for c in consumers]
    try:
        settled_since: float | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:
            got = [set(c.assignment()) for c in consumers]
            whole = sum(map(len, got)) == 2 * PARTITIONS == len(set().union(*got))
            if whole and all(got):
                settled_since = settled_since or loop.time()
                if loop.time() - settled_since >= 1.0:
                    return got
            else:
                settled_since = None
            await asyncio.sleep(0.05)
        raise AssertionError(f"the group did not settle: {got}")
    finally:
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)


@pytest.mark.parametrize("members", [2, 3, 5, 7])
async def test_co_numbered_jobs_partitions_go_to_the_same_worker(
        kafka_bootstrap: str, members: int) -> None:
    ns = "asg" + uuid.uuid4().hex[:10]
    settings = load_settings({"TIDEMARK_KAFKA_BOOTSTRAP": kafka_bootstrap,
                              "TIDEMARK_NAMESPACE": ns,
                              "TIDEMARK_PARTITIONS": str(PARTITIONS)})
    admin = await started(lambda: make_admin(settings.kafka, role="test-admin"),
                          settings.kafka, "admin start")
    try:
        await ensure_topics(admin, settings.log)
        await wait_for_topics(admin._client, list(jobs_topics(ns)))
    finally:
        await stop_client(admin)
    group = f"tidemark.{ns}.workers"
    consumers: list[AIOKafkaConsumer] = []
    try:
        for i in range(members):
            consumer = await started(
                lambda i=i: make_consumer(settings.kafka, role=f"test-worker{i}",
                                          group_id=group, session_timeout_ms=10_000,
                                          heartbeat_interval_ms=1_000,
                                          partition_assignment_strategy=ASSIGNORS),
                settings.kafka, "consumer start")
            consumer.subscribe(list(jobs_topics(ns)))
            consumers.append(consumer)
        got = await _assignments(consumers)
    finally:
        for consumer in consumers:
            with contextlib.suppress(Exception):
                await stop_client(consumer)

    priority, other = jobs_topics(ns)
    for member in got:
        numbers = {t: sorted(tp.partition for tp in member if tp.topic == t)
                   for t in (priority, other)}
        assert numbers[priority] == numbers[other], numbers
