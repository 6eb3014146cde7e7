"""Limits shared by every gateway: counters in Redis, each check one atomic Lua script.

What is limited (0 = no limit everywhere):

- requests per minute per user (tenant, sub): a sliding-window log, a sorted set of the
  last minute's admitted requests; a request passes while fewer than the limit were
  admitted in the 60 s before it (exact, no double burst at a minute's edge);
- active streams per user, per tenant and in all (the namespace): a sorted set per
  scope whose members are stream ids scored by a safety expiry; one script drops expired
  members, counts and adds to all three at once, or to none;
- published bytes per second per tenant and in all: a token bucket per scope holding
  one second's worth (the burst); the size of a publish is its body's length.

Every script reads the clock of the Redis server (``TIME``), so gateways whose clocks
differ still share one window. Keys live under ``tm:{<namespace>}:`` (the braces are
a Redis Cluster hash tag: a namespace's keys share a slot, so multi-key scripts work
there too), and user and tenant keys carry the tenant, so neither namespaces nor
tenants share counters.

A stream stops being active when its terminal event is in the log: every gateway's hub
sees it and hands the id to :meth:`Limits.stream_ended`; the removal is idempotent. A
stream whose end was never seen stops counting after ``TIDEMARK_ACTIVE_STREAM_TTL``.

When Redis does not answer (see ``gateway.store``) a check raises
:class:`~gateway.errors.LimitsUnavailable` (503 with ``Retry-After``), unless the caller
asked to fail open (reads and cancels: a resume must not break because the limiter's
store is down).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote

from eventlog.settings import LimitSettings
from gateway.errors import LimitExceeded, LimitsUnavailable
from gateway.store import CALL_TIMEOUT_S, Store

log = logging.getLogger(__name__)

WINDOW_MS: Final = 60_000
#: Requests of these scopes go on, uncounted, while the store is unreachable: reads of
#: existing streams (a resume must never break because the limiter is down) and cancels.
FAIL_OPEN_SCOPES: Final = frozenset({"streams:read", "streams:cancel"})
#: Stream ids whose end waits to be removed from the active sets (oldest dropped first
#: when full: their safety expiry removes them).
ENDED_QUEUE: Final = 10_000
_ENDED_BATCH: Final = 200


class UserIdentity(Protocol):
    """What limits need of a request's identity (``gateway.auth.Identity`` has it)."""

    @property
    def sub(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def max_concurrent_streams(self) -> int | None: ...
    @property
    def requests_per_minute(self) -> int | None: ...


_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

#: KEYS[1] the user's request log. ARGV: limit, window ms, a unique member.
#: Returns {1, 0} when admitted, else {0, ms until the oldest request leaves the window}.
_REQUEST_LUA: Final = _NOW + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = window
  if oldest[2] then wait = tonumber(oldest[2]) + window - now end
  return {0, math.ceil(wait)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return {1, 0}
"""

#: Bumps a sorted set's TTL to cover a member that expires in ``ttl`` ms.
_KEEP: Final = """
local function keep(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
"""

#: KEYS: the user's, the tenant's and the global active set. ARGV: member, its lifetime
#: ms, the three limits. Returns 0 when added to all three, else the index of the
#: first full scope (added to none).
_RESERVE_LUA: Final = _NOW + _KEEP + """
local ttl = tonumber(ARGV[2])
for i = 1, 3 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now) end
for i = 1, 3 do
  local limit = tonumber(ARGV[2 + i])
  if limit > 0 and redis.call('ZCARD', KEYS[i]) >= limit then return i end
end
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[1])
  keep(KEYS[i], ttl)
end
return 0
"""

#: KEYS: the three active sets, the stream's reverse key, its ended marker. ARGV:
#: reservation, stream id, the stream's lifetime ms. Swaps the reservation for the
#: stream (or just drops it when the stream already ended). Returns 1 if swapped.
_COMMIT_LUA: Final = _NOW + _KEEP + """
local ttl = tonumber(ARGV[3])
for i = 1, 3 do redis.call('ZREM', KEYS[i], ARGV[1]) end
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
for i = 1, 3 do
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[2])
  keep(KEYS[i], ttl)
end
redis.call('SET', KEYS[4], KEYS[1] .. '\\n' .. KEYS[2] .. '\\n' .. KEYS[3], 'PX', ttl)
return 1
"""

#: KEYS: the stream's reverse key, its ended marker. ARGV: stream id, marker lifetime
#: ms. Removes the stream from the sets the reverse key names; when there is no
#: reverse key (yet), leaves the marker so that a commit still on its way drops it.
_END_LUA: Final = """
local sets = redis.call('GET', KEYS[1])
if not sets then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 0
end
for key in string.gmatch(sets, '[^\\n]+') do redis.call('ZREM', key, ARGV[1]) end
redis.call('DEL', KEYS[1])
return 1
"""

#: KEYS: the tenant's and the global byte bucket. ARGV: bytes, the two rates per
#: second. A bucket holds at most one second's worth; a body bigger than that passes
#: only from a full bucket (which then owes the rest). Returns {1, 0, 0} when taken
#: from both, else {0, ms to wait, index of the bucket that is short} (taken from none).
_PUBLISH_LUA: Final = _NOW + """
local n = tonumber(ARGV[1])
local level = {}
local wait, short = 0, 0
for i = 1, 2 do
  local rate = tonumber(ARGV[1 + i])
  if rate > 0 then
    local b = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local tokens = tonumber(b[1]) or rate
    local ts = tonumber(b[2]) or now
    tokens = math.min(rate, tokens + math.max(0, now - ts) * rate / 1000)
    level[i] = tokens
    local need = math.min(n, rate)
    if tokens < need then
      local w = (need - tokens) * 1000 / rate
      if w > wait then wait, short = w, i end
    end
  end
end
if short > 0 then return {0, math.ceil(wait), short} end
for i = 1, 2 do
  local rate = tonumber(ARGV[1 + i])
  if rate > 0 then
    local left = level[i] - n
    redis.call('HSET', KEYS[i], 'tokens', tostring(left), 'ts', tostring(now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((rate - left) * 1000 / rate) + 1000)
  end
end
return {1, 0, 0}
"""

_SCOPES: Final = {1: "maxConcurrentStreams", 2: "tenantActiveStreams",
                  3: "globalActiveStreams"}
_BUCKETS: Final = {1: "tenantPublishBytesPerSecond", 2: "globalPublishBytesPerSecond"}


def key_part(value: str) -> str:
    """A key component that cannot contain the ``:`` separator (percent-encoded)."""
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot taken in the active sets before a stream exists (see ``active_stream``)."""

    member: str
    keys: tuple[str, str, str]


@dataclass(slots=True)
class _Slot:
    """The handle of :meth:`Limits.active_stream`: name the stream once it is made."""

    stream_id: str | None = None

    def bind(self, stream_id: str) -> None:
        self.stream_id = stream_id


class Limits:
    """The limits of one gateway process, on the store it shares with session lists."""

    def __init__(self, settings: LimitSettings, *, namespace: str,
                 store: Store, reservation_ttl_s: float,
                 window_ms: int = WINDOW_MS, per_user: bool = True,
                 on_fail_open: Callable[[], None] = lambda: None) -> None:
        self._settings = settings
        #: Called for each request let through unchecked (``fail_open``).
        self._on_fail_open = on_fail_open
        self.store = store
        client = store.client
        self._redis = client
        #: The requests-per-minute window (shorter only in tests).
        self._window_ms = window_ms
        #: False under TIDEMARK_AUTH=none: every request is the same anonymous user, so
        #: per-user limits would be one counter for everybody; tenant and global apply.
        self._per_user = per_user
        self._prefix = f"tm:{{{key_part(namespace)}}}"
        self._stream_ttl_ms = max(1, round(settings.active_stream_ttl_s * 1000))
        #: A reservation outlives the create request that holds it (then it expires).
        self._reservation_ttl_ms = max(1, round(reservation_ttl_s * 1000))
        self._request = client.register_script(_REQUEST_LUA)
        self._reserve = client.register_script(_RESERVE_LUA)
        self._commit = client.register_script(_COMMIT_LUA)
        self._end = client.register_script(_END_LUA)
        self._publish = client.register_script(_PUBLISH_LUA)
        self._members = itertools.count()
        self._member_prefix = f"{os.getpid()}.{secrets.token_hex(4)}"
        self._ended: collections.deque[str] = collections.deque(maxlen=ENDED_QUEUE)
        self._ended_ready = asyncio.Event()

    # -- keys ------------------------------------------------------------------------

    def _user(self, identity: UserIdentity, kind: str) -> str:
        return (f"{self._prefix}:{kind}:u:{key_part(identity.tenant)}:"
                f"{key_part(identity.sub)}")

    def _active_keys(self, identity: UserIdentity) -> tuple[str, str, str]:
        return (self._user(identity, "active"),
                f"{self._prefix}:active:t:{key_part(identity.tenant)}",
                f"{self._prefix}:active:g")

    def _stream_keys(self, stream_id: str) -> tuple[str, str]:
        part = key_part(stream_id)
        return f"{self._prefix}:stream:{part}", f"{self._prefix}:ended:{part}"

    def _member(self) -> str:
        return f"{self._member_prefix}.{next(self._members)}"

    # -- the user's limits --------------------------------------------------------

    def user_limits(self, identity: UserIdentity) -> tuple[int, int]:
        """(max concurrent streams, requests per minute): the token's, else its tier's
        (0, 0 without per-user limits)."""
        if not self._per_user:
            return 0, 0
        tiers = self._settings.tiers
        tier = tiers.get(identity.tier) or tiers[self._settings.default_tier]
        streams = identity.max_concurrent_streams
        rpm = identity.requests_per_minute
        return (tier.max_concurrent_streams if streams is None else streams,
                tier.requests_per_minute if rpm is None else rpm)

    # -- checks -------------------------------------------------------------------

    async def request(self, identity: UserIdentity, *, fail_open: bool = False) -> None:
        """Count one API request of the user; past the per-minute limit raise
        LimitExceeded. With ``fail_open`` an unreachable store lets the request pass."""
        limit = self.user_limits(identity)[1]
        if limit <= 0:
            return
        try:
            admitted, wait_ms = await self.store.call("requestsPerMinute", lambda: self._request(
                keys=[self._user(identity, "rpm")], args=[limit, self._window_ms, self._member()]))
        except LimitsUnavailable:
            if fail_open:
                log.debug("limits store unavailable: request of %s passes unthrottled",
                          identity.sub)
                self._on_fail_open()
                return
            raise
        if not int(admitted):
            retry = _seconds(int(wait_ms))
            raise LimitExceeded(
                f"requests per minute: at most {limit} per minute for this user; "
                f"retry in {retry}s", limit="requestsPerMinute", retry_after=retry)

    async def start_stream(self, identity: UserIdentity) -> Reservation:
        """Take a slot in the user's, the tenant's and the global active streams, or
        raise LimitExceeded (naming the first full one) and take none."""
        user_limit = self.user_limits(identity)[0]
        keys = self._active_keys(identity)
        member = "r:" + self._member()
        s = self._settings
        limits = (user_limit, s.tenant_max_active_streams, s.global_max_active_streams)
        full = await self.store.call("activeStreams", lambda: self._reserve(
            keys=list(keys), args=[member, self._reservation_ttl_ms, *limits]))
        if int(full):
            name = _SCOPES[int(full)]
            scope = {1: "for this user", 2: "for this tenant", 3: "in all"}[int(full)]
            raise LimitExceeded(
                f"active streams: at most {limits[int(full) - 1]} {scope}; retry once one "
                "of them ends", limit=name, retry_after=1)
        return Reservation(member=member, keys=keys)

    async def commit(self, reservation: Reservation, stream_id: str) -> None:
        """Turn a reservation into the stream's place in the active sets."""
        reverse, ended = self._stream_keys(stream_id)
        await self.store.call("activeStreams", lambda: self._commit(
            keys=[*reservation.keys, reverse, ended],
            args=[reservation.member, stream_id, self._stream_ttl_ms]))

    async def release(self, reservation: Reservation) -> None:
        """Give a reservation back (the create it was for failed)."""
        async def zrem() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in reservation.keys:
                    pipe.zrem(key, reservation.member)
                await pipe.execute()
        await self.store.call("activeStreams", zrem)

    @contextlib.asynccontextmanager
    async def active_stream(self, identity: UserIdentity) -> AsyncIterator[_Slot]:
        """Hold a slot while a stream is created: ``slot.bind(stream_id)`` once it is
        made. On an error the slot is released; on success it becomes the stream's.
        A store that fails after the stream was made only logs (the stream exists; its
        reservation expires on its own)."""
        reservation = await self.start_stream(identity)
        slot = _Slot()
        try:
            yield slot
        except BaseException:
            with contextlib.suppress(LimitsUnavailable):
                await asyncio.shield(self.release(reservation))
            raise
        if slot.stream_id is None:
            with contextlib.suppress(LimitsUnavailable):
                await self.release(reservation)
            return
        try:
            await self.commit(reservation, slot.stream_id)
        except LimitsUnavailable as exc:
            log.warning("stream %s is not counted as active: %s", slot.stream_id, exc)

    async def end_stream(self, stream_id: str) -> None:
        """The stream ended: remove it from the active sets (idempotent)."""
        reverse, ended = self._stream_keys(stream_id)
        await self.store.call("activeStreams", lambda: self._end(
            keys=[reverse, ended], args=[stream_id, self._reservation_ttl_ms]))

    async def publish(self, identity: UserIdentity, nbytes: int) -> None:
        """Take ``nbytes`` from the tenant's and the global byte buckets, or raise
        LimitExceeded (naming the bucket that is short) and take none."""
        s = self._settings
        rates = (s.tenant_publish_bytes_per_s, s.global_publish_bytes_per_s)
        if max(rates) <= 0:
            return
        keys = [f"{self._prefix}:bytes:t:{key_part(identity.tenant)}",
                f"{self._prefix}:bytes:g"]
        ok, wait_ms, short = await self.store.call("publishBytes", lambda: self._publish(
            keys=keys, args=[nbytes, *rates]))
        if not int(ok):
            retry = _seconds(int(wait_ms))
            scope = "for this tenant" if int(short) == 1 else "in all"
            raise LimitExceeded(
                f"published bytes: at most {rates[int(short) - 1]} bytes per second "
                f"{scope}; retry in {retry}s", limit=_BUCKETS[int(short)],
                retry_after=retry)

    # -- ends seen by the hub -----------------------------------------------------

    def stream_ended(self, stream_id: str) -> None:
        """Queue a stream whose terminal event the hub saw (never blocks; when the
        queue is full the oldest entry is dropped and expires on its own)."""
        self._ended.append(stream_id)
        self._ended_ready.set()

    async def run(self) -> None:
        """Remove queued ended streams from the active sets, in batches."""
        failing = False
        while True:
            await self._ended_ready.wait()
            self._ended_ready.clear()
            while self._ended:
                batch = [self._ended.popleft()
                         for _ in range(min(_ENDED_BATCH, len(self._ended)))]
                try:
                    await self._end_all(batch)
                except LimitsUnavailable as exc:
                    if not failing:
                        log.warning("could not remove %d ended streams from the active "
                                    "sets (%s); they expire on their own", len(batch), exc)
                    failing = True
                    await asyncio.sleep(CALL_TIMEOUT_S)
                else:
                    failing = False

    async def _end_all(self, stream_ids: list[str]) -> None:
        async def run() -> Any:
            async with self._redis.pipeline(transaction=False) as pipe:
                for stream_id in stream_ids:
                    reverse, ended = self._stream_keys(stream_id)
                    await self._end(keys=[reverse, ended],
                                    args=[stream_id, self._reservation_ttl_ms],
                                    client=pipe)
                return await pipe.execute()
        await self.store.call("activeStreams", run)



@contextlib.asynccontextmanager
async def active_stream(limits: Limits | None, identity: UserIdentity,
                        ) -> AsyncIterator[_Slot]:
    """:meth:`Limits.active_stream`, or a slot that counts nothing when limits are off."""
    if limits is None:
        yield _Slot()
        return
    async with limits.active_stream(identity) as slot:
        yield slot


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))
