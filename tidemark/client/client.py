"""The Python client of a Tidemark gateway: create streams, follow them exactly once.

    async with Client("https://tidemark.example", token=get_token) as client:
        created = await client.create("what is a tidemark?")
        async for event in client.follow(created.stream_id):
            print(event.type, event.data)

:meth:`Client.follow` resumes by itself: when a connection drops (a gateway killed, a
1001/1013 close, a network error, 429/503) it reconnects from the last id it yielded,
after an exponential backoff with full jitter (:class:`~tidemark.client.backoff.Backoff`),
possibly to another gateway behind the balancer. It never yields an event twice (by
position, and by seq should a transport repeat one) and never skips one: each
connection starts right after the last event yielded.

Transports are tried in order (WebSocket, SSE, long-poll by default): one whose upgrade
is refused, or whose response gives no byte within ``first_byte_timeout`` (a buffering
proxy; the gateway writes an SSE response's ``retry:`` line at once), is given up for
the client's lifetime, and the next one resumes from the last id. The transport that
delivered is remembered and used first by the next follower.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson

from tidemark.client.backoff import Attempts, Backoff
from tidemark.client.errors import NoTransport, RetriesExhausted
from tidemark.client.events import Item, Reset, StreamEvent
from tidemark.client.transports import READERS, Attempt, Dropped, Ended, Refused, refusal

log = logging.getLogger(__name__)

#: A bearer token, or something that gives a fresh one (asked again on each reconnect).
TokenSource = str | Callable[[], str | Awaitable[str]] | None
#: A callback of :class:`EventSource`.
Handler = Callable[[Item], Awaitable[None] | None]
TRANSPORTS = ("ws", "sse", "poll")


@dataclass(frozen=True, slots=True)
class Created:
    """The answer to ``POST /v1/streams`` (docs/transports.md): ``stream_id``, its
    ``read_token`` (when the gateway issues one) and the whole answer in ``raw``."""

    stream_id: str
    read_token: str | None
    raw: dict[str, Any]


class Client:
    """One gateway (or balancer) URL, a token, and the transports allowed.

    ``token`` is a string or a callable (plain or async) returning a fresh one; it is
    sent as ``Authorization: Bearer`` on every request and WebSocket upgrade.
    ``first_byte_timeout`` is how long a connection may take to give its first byte
    before its transport is given up (a WebSocket upgrade, an SSE response);
    ``idle_timeout`` how long an open connection may stay silent (the gateway sends a
    heartbeat every ``TIDEMARK_HEARTBEAT_SECONDS``) before it counts as dropped;
    ``poll_wait`` the ``wait`` of each long-poll; ``max_event_bytes`` bounds one SSE
    event, one WebSocket message and one long-poll answer. Pass ``session`` to share an
    ``aiohttp.ClientSession`` (the client then does not close it).
    """

    def __init__(self, base_url: str, *, token: TokenSource = None,
                 transports: Sequence[str] = TRANSPORTS, backoff: Backoff | None = None,
                 first_byte_timeout: float = 5.0, idle_timeout: float = 45.0,
                 poll_wait: float = 20.0, request_timeout: float = 30.0,
                 max_event_bytes: int = 8 * 1024 * 1024,
                 session: aiohttp.ClientSession | None = None) -> None:
        unknown = [t for t in transports if t not in READERS]
        if unknown or not transports:
            raise ValueError(f"transports must be some of {TRANSPORTS}, not {list(transports)}")
        self.base_url = base_url.rstrip("/")
        self.transports = tuple(transports)
        self.backoff = backoff or Backoff()
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.poll_wait = poll_wait
        self.request_timeout = request_timeout
        self.max_event_bytes = max_event_bytes
        self._token = token
        self._session = session
        self._owns_session = session is None
        #: Transports that did not get through, for the client's lifetime.
        self.refused: dict[str, str] = {}
        #: The transport that last delivered an event.
        self.working: str | None = None
        #: Connections of this client's followers that dropped and were made again.
        self.reconnects = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's own HTTP session (not one that was passed in)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.first_byte_timeout))
        return self._session

    async def headers(self) -> dict[str, str]:
        """The auth header, with a token asked for now when ``token`` is a callable."""
        token = self._token
        if callable(token):
            got = token()
            token = await got if inspect.isawaitable(got) else got
        return {"Authorization": f"Bearer {token}"} if token else {}

    # --- requests ------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any) -> Any:
        async with self.session.request(
                method, self.base_url + path, data=orjson.dumps(body),
                headers={**await self.headers(), "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.request_timeout)) as resp:
            if resp.status >= 300:
                raise await refusal(resp, last_resort=True, retry=False)
            return await resp.json(loads=orjson.loads, content_type=None)

    async def create(self, query: str, generator: str = "demo", *,
                     options: dict[str, Any] | None = None,
                     context: dict[str, Any] | None = None) -> Created:
        """``POST /v1/streams``: a new stream written by ``generator`` (``demo``, or
        ``external`` for one the caller publishes to)."""
        body: dict[str, Any] = {"query": query, "generator": generator}
        if options is not None:
            body["options"] = options
        if context is not None:
            body["context"] = context
        raw = await self._request("POST", "/v1/streams", body)
        return Created(str(raw["stream_id"]), raw.get("read_token"), raw)

    async def cancel(self, stream_id: str) -> dict[str, Any]:
        """``POST /v1/streams/{id}/cancel``: the stream then ends with ``cancelled``."""
        answer: dict[str, Any] = await self._request(
            "POST", f"/v1/streams/{stream_id}/cancel", {})
        return answer

    async def send_input(self, stream_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/streams/{id}/input``: appends an ``input`` event; answers its
        ``seq`` and ``id``. (Over HTTP on every transport, the WebSocket's ``input`` op
        is not used: one path, and an answer that does not depend on the follower.)"""
        answer: dict[str, Any] = await self._request(
            "POST", f"/v1/streams/{stream_id}/input", {"data": data})
        return answer

    # --- following -----------------------------------------------------------------

    def _transport(self) -> str:
        if self.working is not None and self.working not in self.refused:
            return self.working
        for name in self.transports:
            if name not in self.refused:
                return name
        raise NoTransport("every transport was refused: " + "; ".join(
            f"{name}: {why}" for name, why in self.refused.items()))

    async def follow(self, stream_id: str, *, last_event_id: str | None = None,
                     update_frequency: str | None = None,
                     include_metadata: bool | None = None) -> AsyncIterator[Item]:
        """The stream's events after ``last_event_id`` (None: from the start), then
        live, until its terminal event (the last one yielded) or, resuming at or after
        the end, nothing. A :class:`Reset` is yielded when the position could not be
        honoured, and the events from the earliest held follow.

        Raises the :mod:`~tidemark.client.errors` problem of a refusal (400, 401, 403,
        404, 410: no retry), :class:`RetriesExhausted` when the reconnect policy gives
        up, :class:`NoTransport` when no transport gets through.
        """
        query: dict[str, str] = {}
        if update_frequency is not None:
            query["update_frequency"] = update_frequency
        if include_metadata is not None:
            query["include_metadata"] = "true" if include_metadata else "false"
        position, last_seq = last_event_id, -1
        attempts = Attempts(self.backoff)
        while True:
            transport = self._transport()
            attempt = Attempt(
                session=self.session, base_url=self.base_url, stream_id=stream_id,
                position=position, headers=await self.headers(), query=query,
                first_byte_timeout=self.first_byte_timeout, idle_timeout=self.idle_timeout,
                poll_wait=self.poll_wait, max_event_bytes=self.max_event_bytes,
                on_open=attempts.progress)
            try:
                async with aclosing(READERS[transport](attempt)) as items:
                    async for ident, name, data in items:
                        attempts.progress()
                        if ident is None:
                            # From the earliest event held: no position, no seq baseline.
                            position, last_seq = None, -1
                            yield Reset(str(data.get("reason", "")), data.get("earliest"))
                            continue
                        event = StreamEvent(ident, name, int(data["seq"]), int(data["ts"]),
                                            data.get("data"), data)
                        if event.seq <= last_seq:
                            continue  # already yielded
                        position, last_seq = ident, event.seq
                        self.working = transport
                        yield event
                        if event.terminal:
                            return
            except Refused as exc:
                log.info("Transport %s refused for %s (%s); falling back",
                         transport, self.base_url, exc)
                self.refused[transport] = str(exc)
            except Ended:
                return
            except Dropped as exc:
                delay = attempts.next_delay(exc.retry_after)
                if delay is None:
                    raise RetriesExhausted(
                        f"stream {stream_id}: gave up after {attempts.count - 1} "
                        f"reconnects: {exc}") from exc
                self.reconnects += 1
                log.debug("Stream %s over %s dropped (%s); reconnecting in %.2f s",
                          stream_id, transport, exc, delay)
                await asyncio.sleep(delay)

    def event_source(self, stream_id: str, **follow: Any) -> EventSource:
        """An EventSource-like follower: register callbacks with :meth:`EventSource.on`,
        then ``await source.run()``."""
        return EventSource(self, stream_id, **follow)


class EventSource:
    """Callbacks per event type over :meth:`Client.follow` (``"reset"`` for the reset
    notice, ``"*"`` for every item). Callbacks may be plain or async functions."""

    def __init__(self, client: Client, stream_id: str, **follow: Any) -> None:
        self._client = client
        self._stream_id = stream_id
        self._follow = follow
        self._handlers: dict[str, list[Handler]] = {}

    def on(self, event_type: str, handler: Handler) -> Self:
        self._handlers.setdefault(event_type, []).append(handler)
        return self

    async def run(self) -> StreamEvent | None:
        """Follow the stream to its end; return the terminal event (None if it had
        ended before the position)."""
        last: StreamEvent | None = None
        async for item in self._client.follow(self._stream_id, **self._follow):
            for handler in (*self._handlers.get(item.type, ()), *self._handlers.get("*", ())):
                done = handler(item)
                if inspect.isawaitable(done):
                    await done
            if isinstance(item, StreamEvent):
                last = item
        return last if last is not None and last.terminal else None
