"""The limits' and session lists' Lua and Redis logic, against a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventlog.settings import LimitSettings
from gateway.errors import LimitExceeded, LimitsUnavailable
from gateway.limits import Limits
from gateway.sessions import BadCursor, Sessions, decode_cursor
from gateway.store import DOWN_S, Store
from tests.procs import free_port, start_redis

TIERS = ('{"free": {"maxConcurrentStreams": 2, "requestsPerMinute": 5},'
         ' "premium": {"maxConcurrentStreams": 4, "requestsPerMinute": 0}}')


@dataclass(frozen=True)
class User:
    sub: str
    tenant: str = "acme"
    tier: str = "free"
    max_concurrent_streams: int | None = None
    requests_per_minute: int | None = None


def settings(**kw: object) -> LimitSettings:
    return LimitSettings(tiers_json=TIERS, **kw)  # type: ignore[arg-type]


@pytest.fixture
def namespace() -> str:
    return "n" + uuid.uuid4().hex[:10]


async def make(redis_url: str, namespace: str, **kw: object) -> Limits:
    window_ms = int(kw.pop("window_ms", 60_000))  # type: ignore[call-overload]
    return Limits(settings(redis_url=redis_url, **kw), namespace=namespace,
                  store=Store(redis_url), reservation_ttl_s=5.0, window_ms=window_ms)


@pytest.fixture
async def limits(redis_url: str, namespace: str) -> AsyncIterator[Limits]:
    lim = await make(redis_url, namespace)
    yield lim
    await lim.store.close()


async def passes(limits: Limits, user: User, n: int) -> int:
    ok = 0
    for _ in range(n):
        try:
            await limits.request(user)
            ok += 1
        except LimitExceeded:
            pass
    return ok


async def test_requests_per_minute_cut_at_the_tier_limit(limits: Limits) -> None:
    alice = User("alice")
    assert await passes(limits, alice, 12) == 5
    with pytest.raises(LimitExceeded) as cut:
        await limits.request(alice)
    assert cut.value.limit == "requestsPerMinute"
    assert 55 <= cut.value.retry_after <= 60
    assert "5 per minute" in str(cut.value)


async def test_requests_are_counted_per_tenant_user_and_namespace(
        redis_url: str, limits: Limits) -> None:
    assert await passes(limits, User("alice"), 5) == 5
    assert await passes(limits, User("bob"), 6) == 5
    assert await passes(limits, User("alice", tenant="other"), 6) == 5
    elsewhere = await make(redis_url, "x" + uuid.uuid4().hex[:10])
    try:
        assert await passes(elsewhere, User("alice"), 6) == 5
    finally:
        await elsewhere.store.close()


async def test_the_tokens_limits_override_the_tier(limits: Limits) -> None:
    assert await passes(limits, User("a", requests_per_minute=8), 10) == 8
    assert await passes(limits, User("b", requests_per_minute=0), 20) == 20
    assert await passes(limits, User("c", tier="premium"), 20) == 20
    assert limits.user_limits(User("d", max_concurrent_streams=7)) == (7, 5)
    assert limits.user_limits(User("e", tier="premium")) == (4, 0)


async def test_the_window_slides_without_a_double_burst(redis_url: str, namespace: str) -> None:
    limits = await make(redis_url, namespace, window_ms=1000)
    try:
        alice = User("alice")
        start = time.monotonic()
        assert await passes(limits, alice, 5) == 5
        await asyncio.sleep(0.6)
        # A fixed window that turned over meanwhile would admit a second burst here.
        assert await passes(limits, alice, 5) == 0
        await asyncio.sleep(max(0.0, 1.1 - (time.monotonic() - start)))
        assert await passes(limits, alice, 6) == 5
    finally:
        await limits.store.close()


async def start(limits: Limits, user: User) -> str:
    stream_id = "s" + uuid.uuid4().hex
    async with limits.active_stream(user) as slot:
        slot.bind(stream_id)
    return stream_id


async def test_concurrent_streams_per_user(limits: Limits) -> None:
    alice = User("alice")
    first = await start(limits, alice)
    await start(limits, alice)
    with pytest.raises(LimitExceeded) as cut:
        await start(limits, alice)
    assert cut.value.limit == "maxConcurrentStreams" and cut.value.retry_after >= 1
    await start(limits, User("bob"))  # another user has slots of their own
    await limits.end_stream(first)
    await limits.end_stream(first)  # idempotent
    await start(limits, alice)
    with pytest.raises(LimitExceeded):
        await start(limits, alice)
    assert len(await start_all(limits, User("p", tier="premium"), 5)) == 4
    assert len(await start_all(limits, User("q", max_concurrent_streams=1), 3)) == 1


async def start_all(limits: Limits, user: User, n: int) -> list[str]:
    started = []
    for _ in range(n):
        try:
            started.append(await start(limits, user))
        except LimitExceeded:
            pass
    return started


async def test_tenant_and_global_active_streams_all_or_nothing(
        redis_url: str, namespace: str) -> None:
    limits = await make(redis_url, namespace, tenant_max_active_streams=3,
                        global_max_active_streams=4)
    try:
        users = [User(f"u{i}", max_concurrent_streams=1) for i in range(4)]
        ids = [await start(limits, users[i]) for i in range(3)]
        with pytest.raises(LimitExceeded) as cut:
            await start(limits, users[3])
        assert cut.value.limit == "tenantActiveStreams"
        await limits.end_stream(ids[0])
        # The refused create took no slot of u3's own (its limit is 1) either.
        await start(limits, users[3])
        await start(limits, User("z", tenant="other"))
        with pytest.raises(LimitExceeded) as cut:
            await start(limits, User("y", tenant="third"))
        assert cut.value.limit == "globalActiveStreams"
        await limits.end_stream(ids[1])
        await start(limits, User("y", tenant="third"))
    finally:
        await limits.store.close()


async def test_a_failed_create_gives_its_slot_back(limits: Limits) -> None:
    alice = User("alice", max_concurrent_streams=1)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            async with limits.active_stream(alice):
                raise RuntimeError("the create failed")
    await start(limits, alice)


async def test_an_end_seen_before_the_commit_frees_the_slot(limits: Limits) -> None:
    alice = User("alice", max_concurrent_streams=1)
    stream_id = "s" + uuid.uuid4().hex
    async with limits.active_stream(alice) as slot:
        # A fast stream: its terminal event reaches the hub before the create returns.
        await limits.end_stream(stream_id)
        slot.bind(stream_id)
    await start(limits, alice)


async def test_ends_the_hub_saw_are_removed_in_the_background(limits: Limits) -> None:
    alice = User("alice")
    ids = [await start(limits, alice) for _ in range(2)]
    runner = asyncio.create_task(limits.run())
    try:
        for stream_id in ids:
            limits.stream_ended(stream_id)
        for _ in range(100):
            if len(await start_all(limits, alice, 1)) == 1:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("ended streams still count")
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_a_stream_whose_end_is_lost_expires(redis_url: str, namespace: str) -> None:
    limits = await make(redis_url, namespace, active_stream_ttl_s=0.3)
    try:
        alice = User("alice", max_concurrent_streams=1)
        await start(limits, alice)
        with pytest.raises(LimitExceeded):
            await start(limits, alice)
        await asyncio.sleep(0.4)
        await start(limits, alice)
    finally:
        await limits.store.close()


async def test_published_bytes_token_bucket(redis_url: str, namespace: str) -> None:
    limits = await make(redis_url, namespace, tenant_publish_bytes_per_s=1000,
                        global_publish_bytes_per_s=1500)
    try:
        acme, other = User("a"), User("b", tenant="other")
        await limits.publish(acme, 600)
        with pytest.raises(LimitExceeded) as cut:
            await limits.publish(acme, 600)
        assert cut.value.limit == "tenantPublishBytesPerSecond"
        assert cut.value.retry_after == 1
        await limits.publish(other, 800)  # the global bucket has 900 left
        with pytest.raises(LimitExceeded) as cut:
            await limits.publish(other, 200)
        assert cut.value.limit == "globalPublishBytesPerSecond"
        await asyncio.sleep(0.5)  # +500 tenant, +750 global
        await limits.publish(acme, 800)
        # Over a longer run the rate holds: ~1000 B/s for the tenant (burst 1000).
        taken, began = 0, time.monotonic()
        while time.monotonic() - began < 1.5:
            try:
                await limits.publish(acme, 100)
                taken += 100
            except LimitExceeded:
                await asyncio.sleep(0.01)
        assert 1000 <= taken <= 1.05 * (1000 * 1.5 + 1000)
    finally:
        await limits.store.close()


async def test_a_body_bigger_than_the_burst_passes_from_a_full_bucket(
        redis_url: str, namespace: str) -> None:
    limits = await make(redis_url, namespace, tenant_publish_bytes_per_s=1000)
    try:
        await limits.publish(User("a"), 3000)
        with pytest.raises(LimitExceeded) as cut:
            await limits.publish(User("a"), 1)  # owes 2000 bytes: ~2 s
        assert cut.value.retry_after >= 2
    finally:
        await limits.store.close()


async def test_an_unreachable_store_fails_safe(namespace: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    limits = await make(url, namespace)
    try:
        began = time.monotonic()
        with pytest.raises(LimitsUnavailable, match="limits store unavailable"):
            await limits.request(User("a"))
        with pytest.raises(LimitsUnavailable):
            async with limits.active_stream(User("a")):
                pass
        await limits.request(User("a"), fail_open=True)
        assert time.monotonic() - began < 2
    finally:
        await limits.store.close()


async def test_session_lists_newest_first_paginated_and_private(
        redis_url: str, namespace: str) -> None:
    store = Store(redis_url)
    sessions = Sessions(store, namespace=namespace, retention_ms=86_400_000)
    try:
        alice = User("alice")
        now = int(time.time() * 1000)
        # Three share a creation time: pages must neither repeat nor skip them.
        created = {f"s{i}": now + (i if i < 4 else 4) for i in range(8)}
        for stream_id, ms in created.items():
            await sessions.add(alice, "chat-1", stream_id, ms)
        await sessions.add(alice, "chat-2", "elsewhere", now)
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = await sessions.page(alice, "chat-1", limit=2,
                                       cursor=None if cursor is None else decode_cursor(cursor))
            pages += 1
            seen += [e.stream_id for e in page.entries]
            assert all(e.created_at == created[e.stream_id] for e in page.entries)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == 4
        assert sorted(seen) == sorted(created)
        assert [created[s] for s in seen] == sorted(created.values(), reverse=True)
        for stranger in (User("bob"), User("alice", tenant="other")):
            assert (await sessions.page(stranger, "chat-1", limit=50)).entries == []
        elsewhere = Sessions(store, namespace="x" + namespace, retention_ms=86_400_000)
        assert (await elsewhere.page(alice, "chat-1", limit=50)).entries == []
        for bad in ("", "nope", "WzEsMl0x", "eyJhIjoxfQ"):
            with pytest.raises(BadCursor):
                decode_cursor(bad)
    finally:
        await store.close()


async def test_the_store_fails_fast_while_down_and_recovers(
        tmp_path: Path, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.store")
    redis, url = start_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    limits = await make(url, namespace)
    try:
        await limits.request(User("a"))
        redis.stop(signal.SIGKILL)
        with pytest.raises(LimitsUnavailable):
            await limits.request(User("a"))
        began = time.monotonic()
        with pytest.raises(LimitsUnavailable, match="failed less than"):
            await limits.request(User("a"))
        assert time.monotonic() - began < 0.05  # did not wait for Redis again
        redis, _ = start_redis(tmp_path, port)
        await asyncio.sleep(DOWN_S)
        await limits.request(User("a"))  # the scripts load again on a fresh server
        async with limits.active_stream(User("a")) as slot:
            slot.bind("s" + uuid.uuid4().hex)
    finally:
        await limits.store.close()
        redis.stop()
    # Operators see the outage once, and its end.
    said = [r.getMessage() for r in caplog.records if r.name == "gateway.store"]
    assert len(said) == 2, said
    assert "does not answer" in said[0] and "answers again" in said[1]


async def test_without_users_only_tenant_and_global_limits_apply(
        redis_url: str, namespace: str) -> None:
    limits = Limits(settings(redis_url=redis_url, tenant_max_active_streams=3),
                    namespace=namespace, store=Store(redis_url), reservation_ttl_s=5.0,
                    per_user=False)
    try:
        anonymous = User("anonymous")
        assert await passes(limits, anonymous, 20) == 20
        assert len(await start_all(limits, anonymous, 5)) == 3
    finally:
        await limits.store.close()
