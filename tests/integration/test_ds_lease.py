"""The Durable Streams writer (durable.view.DsLog) against the real broker: a committed
write whose catch-up failed is never checked again on a view without it; a transaction
left open in a partition that no coordinator knows (the chaos run's broker restart left
one) neither stops the partition's writes for good nor repeats an idempotent append."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from durable import records
from durable.state import now_ms
from durable.view import DsLog, Write
from eventlog.clients import make_admin, make_consumer, make_producer, started, stop_client
from eventlog.errors import KafkaUnavailable
from eventlog.settings import Settings, load_settings
from tests.conftest import Cluster

pytestmark = pytest.mark.integration


async def test_a_retry_after_a_failed_catch_up_is_a_duplicate_not_a_second_record(
        cluster: Cluster) -> None:
    ds = DsLog(load_settings(cluster.env))
    runner = asyncio.create_task(ds.supervise())
    try:
        await ds.wait_ready()
        key = "t/lease-retry"
        part = ds.partition_of(key)
        created, _ = await ds.write(part, lambda: Write(
            key, {"op": "create", "ct": "application/json", "ts": now_ms()}))
        assert isinstance(created, Write)

        def append() -> Write | str:
            """An idempotent append of producer p seq 0: a duplicate once it is in."""
            stream = ds.registry.get(key)
            assert stream is not None
            if stream.producers.get("p") == (0, 0):
                return "duplicate"
            return Write(key, {"op": "append", "n": 1, "ts": now_ms(), "pid": "p",
                               "ep": 0, "sq": 0}, b'{"i":0}')

        # Only the writer's own catch-up applies records now (the tail reader waits), and
        # that catch-up fails once right after the commit, as a timeout would.
        assert ds._consumer is not None
        ds._consumer.pause(TopicPartition(ds.topic, part))
        fill = ds._fill
        failed: list[int] = []

        async def failing_fill(partition: int, end: int) -> None:
            if not failed:
                failed.append(end)
                raise KafkaUnavailable("the catch-up did not finish in time")
            await fill(partition, end)

        ds._fill = failing_fill  # type: ignore[method-assign]
        with pytest.raises(KafkaUnavailable):
            await ds.write(part, append)
        assert failed, "the append did not reach its catch-up"

        # The client retries the append it got no answer for (same producer and seq).
        answer: Any
        answer, offset = await ds.write(part, append)
        assert (answer, offset) == ("duplicate", None)
        await ds.caught_up(part)
        stream = ds.registry.get(key)
        assert stream is not None and [r.data for r in stream.records] == [b'{"i":0}']
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await ds.close()


APPEND_0 = {"op": "append", "n": 1, "pid": "p", "ep": 0, "sq": 0}


async def _start(settings: Settings) -> tuple[DsLog, asyncio.Task[None]]:
    ds = DsLog(settings)
    runner = asyncio.create_task(ds.supervise())
    await ds.wait_ready()
    return ds, runner


async def _stop(ds: DsLog, runner: asyncio.Task[None]) -> None:
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    await ds.close()


async def _created(ds: DsLog, key: str) -> int:
    part = ds.partition_of(key)
    created, _ = await ds.write(part, lambda: Write(
        key, {"op": "create", "ct": "application/json", "ts": now_ms()}))
    assert isinstance(created, Write)
    return part


def _append(ds: DsLog, key: str) -> Any:
    """The gateway's check of producer p's seq 0: a duplicate once the stream has it."""
    def decide() -> Write | str:
        stream = ds.registry.get(key)
        assert stream is not None
        if stream.producers.get("p") == (0, 0):
            return "duplicate"
        return Write(key, {**APPEND_0, "ts": now_ms()}, b'{"i":0}')
    return decide


async def _hanging_append(settings: Settings, topic: str, part: int, key: str) -> None:
    """Leave producer p's seq 0 in ``part`` in a transaction its coordinator never hears
    of, as the gateway that wrote it when the broker went down did: under the partition's
    transactional id, a record produced without AddPartitionsToTxn (the broker's check of
    that is off meanwhile), then the producer goes without a commit or an abort."""
    kafka = settings.kafka
    admin = await started(lambda: make_admin(kafka, role="test-admin"), kafka, "admin")
    broker = str((await admin.describe_cluster())["brokers"][0]["node_id"])

    async def verification(on: bool) -> None:
        answers = await admin.alter_configs([ConfigResource(
            ConfigResourceType.BROKER, broker,
            configs={"transaction.partition.verification.enable": str(on).lower()})])
        assert all(r[0] == 0 for a in answers for r in a.resources), answers
        await asyncio.sleep(0.5)  # a dynamic broker config takes effect asynchronously

    producer: AIOKafkaProducer | None = None
    try:
        await verification(False)
        producer = await started(lambda: make_producer(
            kafka, role="test-dead-writer", transactional_id=f"{topic}.p{part}",
            linger_ms=0), kafka, "dead writer")
        await producer.begin_transaction()
        producer._txn_manager._txn_partitions.add(TopicPartition(topic, part))
        await (await producer.send(topic, b'{"i":0}', key=key.encode(), partition=part,
                                   headers=records.encode({**APPEND_0, "ts": now_ms()})))
    finally:
        if producer is not None:
            await stop_client(producer)
        await verification(True)
        await stop_client(admin)
    probe = await started(lambda: make_consumer(kafka, role="test-probe"), kafka, "probe")
    hw = await started(lambda: make_consumer(kafka, role="test-hw",
                                             isolation_level="read_uncommitted"), kafka, "hw")
    try:
        tp = TopicPartition(topic, part)
        stable, end = (await probe.end_offsets([tp]))[tp], (await hw.end_offsets([tp]))[tp]
        assert stable < end, "the transaction was not left open"
    finally:
        await stop_client(probe)
        await stop_client(hw)


async def _contents(settings: Settings, key: str) -> list[bytes | None]:
    """The stream as a gateway that reads the whole log afresh folds it."""
    fresh, runner = await _start(settings)
    try:
        await fresh.caught_up(fresh.partition_of(key))
        stream = fresh.registry.get(key)
        assert stream is not None
        return [r.data for r in stream.records]
    finally:
        await _stop(fresh, runner)


async def test_a_transaction_nobody_decides_is_aborted_and_the_retry_lands_once(
        cluster: Cluster) -> None:
    settings = load_settings(cluster.env)
    ds, runner = await _start(settings)
    try:
        key = "t/hanging-abort"
        part = await _created(ds, key)
        await _hanging_append(settings, ds.topic, part, key)

        # The client had no answer and retries through this gateway: its lease was fenced,
        # it takes the lease again and finds the partition stopped at the open transaction.
        answer, offset = await asyncio.wait_for(ds.write(part, _append(ds, key)), 10)
        assert isinstance(answer, Write) and offset is not None
        stream = ds.registry.get(key)
        assert stream is not None and [r.data for r in stream.records] == [b'{"i":0}']
        again, _ = await ds.write(part, _append(ds, key))
        assert again == "duplicate"
        assert await _contents(settings, key) == [b'{"i":0}']
    finally:
        await _stop(ds, runner)


async def test_an_open_transaction_a_later_commit_decides_repeats_no_append(
        cluster: Cluster) -> None:
    settings = load_settings(cluster.env)
    ds, runner = await _start(settings)
    try:
        key = "t/hanging-commit"
        part = await _created(ds, key)
        await _hanging_append(settings, ds.topic, part, key)
        # A writer of the partition that checked the retry on a view without the open
        # record (it read the end before that record landed) commits it again: its
        # COMMIT marker ends the open transaction too, so the log holds seq 0 twice.
        kafka = settings.kafka
        writer = await started(lambda: make_producer(
            kafka, role="test-writer", transactional_id=f"{ds.topic}.p{part}", linger_ms=0),
            kafka, "writer")
        try:
            async with writer.transaction():
                await (await writer.send(
                    ds.topic, b'{"i":0}', key=key.encode(), partition=part,
                    headers=records.encode({**APPEND_0, "ts": now_ms()})))
        finally:
            await stop_client(writer)
        await ds.caught_up(part)
        stream = ds.registry.get(key)
        assert stream is not None and [r.data for r in stream.records] == [b'{"i":0}']
        assert await _contents(settings, key) == [b'{"i":0}']
    finally:
        await _stop(ds, runner)
