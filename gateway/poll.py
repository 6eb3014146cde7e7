"""``GET /v1/streams/{id}/poll?last_event_id=<id>&wait=<s>``: a stream's events by
long-poll, by the SSE route's resume rules (``gateway.streaming`` serves it; this
module is its transport).

The answer comes as soon as the pipeline has written events: the first batch that is
due (from the memory tail, from Kafka, or live), at most ``TIDEMARK_POLL_MAX_EVENTS``
events and ``TIDEMARK_POLL_MAX_BYTES`` envelope bytes (one larger event still goes
alone). With nothing due it waits up to ``wait`` seconds (default and bound:
``TIDEMARK_POLL_MAX_WAIT``) after the backlog for the next live event, then answers
``events: []`` with the same ``last_event_id``. Body::

    {"events": [{"id", "event", "data"}...], "last_event_id": <id or null>, "ended": bool}

``data`` is the envelope object (byte for byte the SSE ``data:`` line); a ``reset``
notice is an item with ``"id": null``. ``ended`` is true once the answer holds the
terminal event; a position at or after it answers 204, as on SSE. Errors are the SSE
route's problem answers.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from aiohttp import web

from gateway import items, routes, streaming
from gateway.problems import Problem
from gateway.services import SERVICES

CONTENT_TYPE: Final = "application/json"


class Answered(Exception):
    """Raised by :class:`PollTransport` to end the pipeline: the answer is ready."""


class PollTransport:
    """Collects the pipeline's first written events into one answer."""

    name = "long-poll"

    def __init__(self, *, wait_s: float, max_events: int, max_bytes: int) -> None:
        self.wait_s = wait_s
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.items: list[items.Item] = []
        self.events = 0
        self.nbytes = 0
        self.ended = False
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def open(self, session: streaming.Session) -> web.StreamResponse:
        """Nothing is sent before the answer: this placeholder is never written."""
        return web.StreamResponse()

    async def write(self, session: streaming.Session, data: bytes) -> None:
        for item in items.decode(data):
            if isinstance(item, items.Comment):
                if item.closing:  # shutdown, lifetime, cut-off: answer what there is
                    raise Answered
                continue
            if item.id is not None:
                if self.events >= self.max_events or (
                        self.events and self.nbytes + len(item.data) > self.max_bytes):
                    raise Answered
                self.events += 1
                self.nbytes += len(item.data)
                self.ended = item.terminal
            self.items.append(item)
        if self.events:
            raise Answered

    def idle(self, session: streaming.Session) -> None:
        """The backlog is out and nothing was due: wait (up to ``wait_s`` from the
        first call) for the next live event."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._deadline is None:
            self._deadline = now + self.wait_s
            if self.wait_s > 0:
                self._timer = loop.call_at(self._deadline, self._wake, session)
        if now >= self._deadline:
            raise Answered

    @staticmethod
    def _wake(session: streaming.Session) -> None:
        if session.sub is not None:  # the current one (a catch-up subscribes anew)
            session.sub.wakeup.set()

    def drop_stuck(self, session: streaming.Session, grace_s: float) -> None:
        """A long-poll answer is written once, after the pipeline: nothing to drop."""

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def body(self, given: str | None) -> bytes:
        """The answer's JSON: every item rendered as on the WebSocket."""
        last = next((i.id for i in reversed(self.items) if i.id is not None), None)
        if last is None and not self.items:
            last = given
        head = b'{"events":[' + b",".join(items.render(i) for i in self.items) + b"]"
        last_json = b"null" if last is None else b'"' + last.encode() + b'"'
        return (head + b',"last_event_id":' + last_json + b',"ended":'
                + (b"true" if self.ended else b"false") + b"}")


def wait_of(request: web.Request, max_wait_s: float) -> float:
    """``?wait=`` in seconds (default and bound: ``max_wait_s``); else a 400 problem."""
    raw = request.query.get("wait")
    if raw is None:
        return max_wait_s
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise Problem(400, f"wait must be a number of seconds >= 0, not {raw[:32]!r}",
                      parameter="wait")
    return min(wait, max_wait_s)


async def stream_poll(request: web.Request) -> web.StreamResponse:
    """The long-poll route (see the module docstring)."""
    gw = request.app[SERVICES].settings.gateway
    wait = wait_of(request, gw.poll_max_wait_s)
    transport = PollTransport(wait_s=wait, max_events=gw.poll_max_events,
                              max_bytes=gw.poll_max_bytes)
    # No idle limit but the wait, no pings (the pipeline's comments are dropped).
    session, position = await routes.session_for(request, transport, idle_timeout_s=0)
    given = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    try:
        answer = await streaming.serve(session, position)
    except Answered:
        pass
    else:
        if answer.status == 204:
            return answer
    finally:
        transport.close()
    body = transport.body(given.strip() if given and position else None)
    codings = request.app[SERVICES].codings
    headers = {"Cache-Control": "no-store"}
    if codings.enabled:
        body, coding = codings.compress(request.headers.get("Accept-Encoding"), body)
        headers.update(streaming.VARY)
        if coding is not None:
            headers["Content-Encoding"] = coding
    return web.Response(body=body, content_type=CONTENT_TYPE, headers=headers)
