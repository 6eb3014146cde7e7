"""One connection attempt over each transport: WebSocket, SSE, long-poll.

A reader is an async generator of raw items ``(id, event, data)`` (``id`` None for the
reset notice; ``data`` the envelope, or the notice) read from one position. It ends
in one of three ways besides yielding a terminal event, which the follower stops at:

- :class:`Refused`: this transport does not get through (an upgrade answered with an
  HTTP status instead of 101, a response that gave no byte within the deadline, an
  answer that is not the gateway's); the follower falls back to the next transport;
- :class:`Dropped`: the connection was lost or the gateway asked to come back later
  (1001, 1011, 1013, 4429, 4503, 429, 503, a network error, an idle connection); the
  follower reconnects from the last id after a backoff;
- :class:`Ended`: nothing more comes (204, close 1000);

or it raises the :mod:`~tidemark.client.errors` problem of a refusal (400, 401, 403,
404, 410).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from tidemark.client.errors import ClientError, ProblemError, problem_error

#: ``(id, event, data)``: ``id`` None for the reset notice.
RawItem = tuple[str | None, str, dict[str, Any]]
Reader = Callable[["Attempt"], AsyncGenerator[RawItem, None]]

#: Statuses (HTTP, or WebSocket close code - 4000) that say "come back later".
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
#: WebSocket close codes after which the follower reconnects from its last id.
RETRY_CLOSE_CODES: Final = frozenset({1001, 1006, 1011, 1012, 1013})
#: The keys of a long-poll answer.
_POLL_KEYS: Final = frozenset({"events", "last_event_id", "ended"})
#: The most of a problem body (or a proxy's error page) that is read.
_MAX_PROBLEM_BYTES: Final = 64 * 1024


class Refused(ClientError):
    """This transport does not get through to the gateway: fall back to the next."""


class Dropped(ClientError):
    """The connection was lost, or the gateway asked to come back later."""

    retriable = True

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Ended(ClientError):
    """Nothing more comes after the position (204, close 1000)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Attempt:
    """One connection attempt: where, from which position, with which limits."""

    session: aiohttp.ClientSession
    base_url: str
    stream_id: str
    position: str | None
    headers: Mapping[str, str]
    #: Delivery preferences (``update_frequency``, ``include_metadata``) as query values.
    query: Mapping[str, str]
    first_byte_timeout: float
    idle_timeout: float
    poll_wait: float
    max_event_bytes: int
    #: Called once the connection is open (an upgrade accepted, an SSE response's first
    #: bytes, a long-poll answer): the follower counts that as progress.
    on_open: Callable[[], None]

    def url(self, route: str) -> str:
        return f"{self.base_url}/v1/streams/{self.stream_id}/{route}"

    def params(self, position: str | None) -> dict[str, str]:
        params = dict(self.query)
        if position is not None:
            params["last_event_id"] = position
        return params


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), None if absent or bad."""
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def refusal(resp: aiohttp.ClientResponse, *, last_resort: bool,
                  retry: bool = True) -> ClientError:
    """The error for a response that is not the stream: a retry for 429/5xx (``retry``),
    the problem for the gateway's own refusals; an answer that is not problem+json came
    from something in the way, so this transport is refused (unless it is the last)."""
    if retry and resp.status in RETRY_STATUSES:
        return Dropped(f"HTTP {resp.status}", retry_after(resp.headers))
    body = await read_bounded(resp, _MAX_PROBLEM_BYTES, cut=True)
    if resp.content_type == "application/problem+json":
        try:
            problem = orjson.loads(body)
        except orjson.JSONDecodeError:
            problem = {}
        if isinstance(problem, dict):
            return problem_error(resp.status, str(problem.get("detail", "")), problem)
    if not last_resort:
        return Refused(f"HTTP {resp.status} ({resp.content_type}) not from a gateway")
    return problem_error(resp.status, body.decode("utf-8", "replace")[:500])


def _network(exc: BaseException) -> Dropped:
    return Dropped(f"{type(exc).__name__}: {exc}")


# --- WebSocket ---------------------------------------------------------------------


async def read_ws(a: Attempt) -> AsyncGenerator[RawItem, None]:
    """``GET /v1/streams/{id}/ws``: one text frame per event."""
    url = "ws" + a.url("ws").removeprefix("http")
    try:
        async with asyncio.timeout(a.first_byte_timeout):
            ws = await a.session.ws_connect(url, params=a.params(a.position),
                                            headers=dict(a.headers), autoping=True,
                                            max_msg_size=a.max_event_bytes)
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in RETRY_STATUSES:
            raise Dropped(f"upgrade answered {exc.status}",
                          retry_after(exc.headers or {})) from exc
        raise Refused(f"upgrade answered HTTP {exc.status} instead of 101") from exc
    except TimeoutError as exc:
        raise Refused(f"no upgrade within {a.first_byte_timeout} s") from exc
    except aiohttp.ClientError as exc:
        raise _network(exc) from exc
    async with ws:
        a.on_open()
        while True:
            try:
                msg = await ws.receive(timeout=a.idle_timeout)
            except TimeoutError as exc:
                raise Dropped(f"nothing for {a.idle_timeout} s") from exc
            if msg.type is aiohttp.WSMsgType.TEXT:
                obj = orjson.loads(msg.data)
                if "op" in obj:  # an answer to an op of ours: none are sent
                    continue
                yield obj["id"], obj["event"], obj["data"]
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED):
                code = ws.close_code if msg.type is not aiohttp.WSMsgType.CLOSE else msg.data
                raise _closed(code, str(msg.extra or "") if msg.extra else "")
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise _network(msg.data)
            else:
                raise ClientError(f"unexpected WebSocket message {msg.type!r}")


def _closed(code: int | None, reason: str) -> ClientError:
    if code == 1000:
        return Ended(reason)
    if code is None or code in RETRY_CLOSE_CODES:
        return Dropped(f"closed {code}: {reason}")
    if 4000 <= code < 5000:
        status = code - 4000
        if status in RETRY_STATUSES:
            return Dropped(f"closed {code}: {reason}")
        return problem_error(status, reason)
    return ProblemError(code, reason)


# --- Server-Sent Events ------------------------------------------------------------


async def read_sse(a: Attempt) -> AsyncGenerator[RawItem, None]:
    """``GET /v1/streams/{id}/events``: the gateway writes its ``retry:`` line at once,
    so a response that gives no byte within the deadline is held by something on the
    way (a buffering proxy)."""
    headers = {**a.headers, "Accept": "text/event-stream"}
    try:
        async with asyncio.timeout(a.first_byte_timeout):
            resp = await a.session.get(a.url("events"), params=a.params(a.position),
                                       headers=headers)
            try:
                if resp.status == 204:
                    raise Ended("204")
                if resp.status != 200:
                    raise await refusal(resp, last_resort=False)
                if resp.content_type != "text/event-stream":
                    raise Refused(f"200 with {resp.content_type}, not an event stream")
                first = await resp.content.readany()
            except BaseException:
                resp.close()
                raise
    except TimeoutError as exc:
        raise Refused(f"no byte within {a.first_byte_timeout} s") from exc
    except aiohttp.ClientError as exc:
        raise _network(exc) from exc
    try:
        a.on_open()
        parser = SseParser(a.max_event_bytes)
        chunk = first
        while True:
            if not chunk:
                raise Dropped("the response ended before the stream did")
            for item in parser.feed(chunk):
                yield item
            try:
                async with asyncio.timeout(a.idle_timeout):
                    chunk = await resp.content.readany()
            except TimeoutError as exc:
                raise Dropped(f"nothing for {a.idle_timeout} s") from exc
            except aiohttp.ClientError as exc:
                raise _network(exc) from exc
    finally:
        resp.close()  # also when the follower stops reading: the connection goes


class SseParser:
    """The text/event-stream format, incrementally: bytes in, events out (``id`` and
    ``event`` lines, ``data`` lines joined by newlines; comments and ``retry`` skipped).
    No event, and no line, may be longer than ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._buffer = b""
        self._id: str | None = None
        self._event = ""
        self._data: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[RawItem]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self._max:
            raise ClientError(f"an SSE line longer than {self._max} bytes")
        out: list[RawItem] = []
        for raw in lines:
            line = raw.removesuffix(b"\r")
            if not line:
                if self._data:
                    data = orjson.loads(b"\n".join(self._data))
                    out.append((self._id, self._event or "message", data))
                self._id, self._event, self._data, self._size = None, "", [], 0
                continue
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"data":
                self._size += len(value)
                if self._size > self._max:
                    raise ClientError(f"an SSE event larger than {self._max} bytes")
                self._data.append(value)
            elif name == b"id":
                self._id = value.decode()
            elif name == b"event":
                self._event = value.decode()
        return out


# --- Long-poll ---------------------------------------------------------------------


async def read_poll(a: Attempt) -> AsyncGenerator[RawItem, None]:
    """``GET /v1/streams/{id}/poll``, answer after answer until the stream ends."""
    position = a.position
    while True:
        params = {**a.params(position), "wait": str(a.poll_wait)}
        try:
            async with asyncio.timeout(a.poll_wait + a.first_byte_timeout):
                async with a.session.get(a.url("poll"), params=params,
                                         headers=dict(a.headers)) as resp:
                    if resp.status == 204:
                        raise Ended("204")
                    if resp.status != 200:
                        raise await refusal(resp, last_resort=True)
                    body = orjson.loads(await read_bounded(resp, a.max_event_bytes))
            if not isinstance(body, dict) or not _POLL_KEYS <= body.keys():
                raise ClientError("a long-poll answer that is not the gateway's")
        except TimeoutError as exc:
            raise Dropped(f"no answer within {a.poll_wait + a.first_byte_timeout} s") from exc
        except aiohttp.ClientError as exc:
            raise _network(exc) from exc
        a.on_open()
        for item in body["events"]:
            yield item["id"], item["event"], item["data"]
        if body["ended"]:
            raise Ended("ended")
        # None after an answer that held only a reset notice: from the earliest held.
        position = body["last_event_id"] if body["events"] else position


async def read_bounded(resp: aiohttp.ClientResponse, limit: int, *, cut: bool = False) -> bytes:
    """The body, at most ``limit`` bytes: cut there (``cut``), else an error past it."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await resp.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            if cut:
                chunks.append(chunk[:limit - size])
                break
            raise ClientError(f"an answer larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


READERS: Final[dict[str, Reader]] = {"ws": read_ws, "sse": read_sse, "poll": read_poll}
