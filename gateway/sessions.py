"""Session lists: the streams a user created in one ``context.sessionId``, in Redis.

One sorted set per (namespace, tenant, sub, session): member = stream id, score = its
creation time in ms. The set expires with the events' retention (each create renews
it) and drops members older than the retention, so it never names streams the log no
longer has; it keeps at most ``MAX_PER_SESSION`` newest. Pages are newest first; the
cursor is opaque to clients (the score of the page's last stream and how many streams
of that score were already given, so equal creation times never repeat or skip).
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from typing import Final, cast

import orjson

from gateway.errors import LimitsUnavailable
from gateway.limits import UserIdentity, key_part
from gateway.store import Store

log = logging.getLogger(__name__)

MAX_PER_SESSION: Final = 10_000
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200


class BadCursor(ValueError):
    """A cursor this module did not make."""


@dataclass(frozen=True, slots=True)
class Entry:
    stream_id: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    #: None on the last page.
    next_cursor: str | None


def _encode_cursor(score: int, skip: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([score, skip])).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[int, int]:
    """(score, skip) of a cursor; BadCursor if it is not one of ours."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
        raise BadCursor(raw) from exc
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in value)):
        raise BadCursor(raw)
    return value[0], value[1]


class Sessions:
    """Adds streams to session lists and reads them back a page at a time."""

    def __init__(self, store: Store, *, namespace: str, retention_ms: int) -> None:
        self._store = store
        self._redis = store.client
        self._prefix = f"tm:{{{key_part(namespace)}}}:session"
        self._retention_ms = retention_ms

    def _key(self, identity: UserIdentity, session_id: str) -> str:
        return (f"{self._prefix}:{key_part(identity.tenant)}:{key_part(identity.sub)}:"
                f"{key_part(session_id)}")

    async def add(self, identity: UserIdentity, session_id: str, stream_id: str,
                  created_ms: int) -> None:
        """Record that the user created ``stream_id`` in ``session_id``."""
        key = self._key(identity, session_id)

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {stream_id: created_ms})
                pipe.zremrangebyscore(key, "-inf", f"({created_ms - self._retention_ms}")
                pipe.zremrangebyrank(key, 0, -MAX_PER_SESSION - 1)
                pipe.pexpire(key, self._retention_ms)
                await pipe.execute()
        await self._store.call("sessions", write)

    async def remember(self, identity: UserIdentity, session_id: str, stream_id: str,
                       created_ms: int) -> None:
        """:meth:`add` for a stream that exists already: a store that fails only logs
        (the stream is made; it is missing from the list)."""
        try:
            await self.add(identity, session_id, stream_id, created_ms)
        except LimitsUnavailable as exc:
            log.warning("stream %s is not in the list of session %s: %s", stream_id,
                        session_id, exc)

    async def page(self, identity: UserIdentity, session_id: str, *, limit: int,
                   cursor: tuple[int, int] | None = None) -> Page:
        """Up to ``limit`` of the user's streams of the session, newest first, from
        ``cursor`` (a :func:`decode_cursor` value) on."""
        key = self._key(identity, session_id)
        top: float | str = "+inf"
        skip = 0
        if cursor is not None:
            top, skip = cursor
        rows = cast("list[tuple[bytes, float]]", await self._store.call(
            "sessions", lambda: self._redis.zrevrangebyscore(
                key, top, "-inf", start=skip, num=limit + 1, withscores=True)))
        entries = [Entry(stream_id=m.decode(), created_at=int(s)) for m, s in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and entries:
            last = entries[-1].created_at
            same = sum(1 for e in entries if e.created_at == last)
            # A page all of one score continues after the ones this cursor skipped.
            carried = skip if cursor is not None and last == cursor[0] else 0
            next_cursor = _encode_cursor(last, carried + same)
        return Page(entries=entries, next_cursor=next_cursor)
