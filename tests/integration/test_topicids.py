"""Topic ids and topic epochs against a real Kafka broker (Metadata v12)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventlog.errors import TidemarkError
from eventlog.topicids import TopicIdUnavailable, fetch_topic_ids, topic_epoch

pytestmark = pytest.mark.integration

T = TypeVar("T")


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def _unique(prefix: str) -> str:
    return f"tidemark-test-{prefix}-{uuid.uuid4().hex[:12]}"


async def _eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str) -> T:
    """Poll ``probe`` until ``done`` holds: metadata propagates asynchronously."""
    for _ in range(150):
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value {value!r}")


async def _create(admin: AIOKafkaAdminClient, *names: str) -> None:
    await admin.create_topics([NewTopic(name, 1, 1) for name in names])


async def test_ids_for_existing_topics_and_none_for_missing(
    admin: AIOKafkaAdminClient,
) -> None:
    first, second, missing = _unique("a"), _unique("b"), _unique("missing")
    await _create(admin, first, second)
    try:
        ids = await _eventually(
            lambda: fetch_topic_ids(admin._client, [first, second, missing]),
            lambda got: {first, second} <= got.keys(),
            "both topic ids",
        )
        assert set(ids) == {first, second}
        assert all(isinstance(topic_id, uuid.UUID) for topic_id in ids.values())
        assert ids[first] != ids[second]
        assert uuid.UUID(int=0) not in ids.values()
        assert await fetch_topic_ids(admin._client, [missing]) == {}
        assert await fetch_topic_ids(admin._client, []) == {}
        # Asking never auto-creates the missing topic.
        assert missing not in await admin.list_topics()
    finally:
        await admin.delete_topics([first, second])


async def test_recreated_topic_gets_new_id_and_epoch(admin: AIOKafkaAdminClient) -> None:
    name = _unique("recreate")
    await _create(admin, name)
    try:
        old = (
            await _eventually(
                lambda: fetch_topic_ids(admin._client, [name]),
                lambda got: name in got,
                "the first topic id",
            )
        )[name]

        await admin.delete_topics([name])
        await _eventually(
            lambda: fetch_topic_ids(admin._client, [name]),
            lambda got: name not in got,
            "the topic to disappear",
        )

        async def recreate() -> dict[str, uuid.UUID]:
            # Creation fails with TopicAlreadyExists until the deletion completes.
            if name not in await admin.list_topics():
                await _create(admin, name)
            return await fetch_topic_ids(admin._client, [name])

        new = (await _eventually(recreate, lambda got: name in got, "the new topic id"))[name]
    finally:
        await admin.delete_topics([name])

    assert new != old
    assert topic_epoch(new) != topic_epoch(old)


async def test_broker_without_metadata_v12_raises_topic_id_unavailable(
    admin: AIOKafkaAdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = admin._client
    await fetch_topic_ids(client, [_unique("warmup")])  # opens the node connection
    # Pretend every open connection negotiated a broker that stops at Metadata v11.
    for conn in client._conns.values():
        monkeypatch.setitem(conn._versions, 3, (0, 11))
    with pytest.raises(TopicIdUnavailable) as excinfo:
        await fetch_topic_ids(client, [_unique("any")])
    assert isinstance(excinfo.value, TidemarkError)
    assert not excinfo.value.retriable


def test_topic_epoch_is_short_stable_hex() -> None:
    topic_id = uuid.uuid4()
    epoch = topic_epoch(topic_id)
    assert len(epoch) == 8
    assert all(c in "0123456789abcdef" for c in epoch)
    assert topic_epoch(uuid.UUID(bytes=topic_id.bytes)) == epoch
    # Pinned value: the first 4 bytes of sha256 of sixteen zero bytes.
    assert topic_epoch(uuid.UUID(int=0)) == "374708ff"
