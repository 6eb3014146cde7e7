"""The Durable Streams writer (durable.view.DsLog) against the real broker: a committed
write whose catch-up failed is never checked again on a view without it."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from aiokafka import TopicPartition

from durable.state import now_ms
from durable.view import DsLog, Write
from eventlog.errors import KafkaUnavailable
from eventlog.settings import load_settings
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
