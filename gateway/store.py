"""The Redis connection that limits and session lists share: bounded and fail-fast.

Every call waits at most ``CALL_TIMEOUT_S`` for Redis (connect, or command and answer)
and raises :class:`~gateway.errors.LimitsUnavailable` when Redis does not answer; for
``DOWN_S`` after such a failure calls fail at once instead of each waiting again. At
most ``POOL_SIZE`` calls are in flight per process; a call that waits longer than
``CALL_TIMEOUT_S`` for its turn fails the same way (without marking Redis down: the
gateway is busy, Redis is not).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.errors import LimitsUnavailable

log = logging.getLogger(__name__)

CALL_TIMEOUT_S: Final = 0.25
DOWN_S: Final = 1.0
POOL_SIZE: Final = 64

_T = TypeVar("_T")


class Store:
    """One Redis client (``client``) and the rules every call to it follows."""

    def __init__(self, url: str) -> None:
        # The semaphore keeps calls within the pool, so the pool itself never waits.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=CALL_TIMEOUT_S,
            socket_timeout=CALL_TIMEOUT_S, socket_connect_timeout=CALL_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0))
        self.client = aioredis.Redis.from_pool(pool)  # it owns the pool and closes it
        self._turns = asyncio.Semaphore(POOL_SIZE)
        self._down_until = 0.0
        self._failing = False

    async def call(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """``await call()`` under the rules above; ``what`` names it in errors."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            raise LimitsUnavailable(
                f"limits store unavailable ({what}: it failed less than {DOWN_S:g}s ago)")
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                await self._turns.acquire()
        except TimeoutError:
            raise LimitsUnavailable(
                f"limits store unavailable ({what}: {POOL_SIZE} calls already waiting)",
            ) from None
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S * 2):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = loop.time() + DOWN_S
            reason = f"{what}: {exc or type(exc).__name__}"
            if not self._failing:
                log.warning("the limits store (Redis) does not answer (%s): creates and "
                            "publishes answer 503, reads and cancels go on", reason)
            self._failing = True
            raise LimitsUnavailable(f"limits store unavailable ({reason})") from exc
        finally:
            self._turns.release()
        if self._failing:
            log.info("the limits store (Redis) answers again")
            self._failing = False
        return result

    async def close(self) -> None:
        await self.client.aclose()
