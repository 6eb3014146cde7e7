"""How a stream's events leave the gateway: the one seam between the resume pipeline
(``gateway.streaming``) and the SSE, WebSocket and long-poll routes.

The pipeline resolves the stream and the position, serves the backlog and then live
events, and hands every write to its session's transport: the SSE encoding of events
(``id``/``event``/``data`` frames, made once per event by the hub), an in-band
``reset`` notice, ``: ping`` comments and ``: closing: ...`` comments. A transport
sends that as it is (SSE), or decodes it into items (``gateway.items``) and sends
those its own way (WebSocket text frames, a long-poll JSON body). So there is one copy
of the resume rules, and every transport sees the same events in the same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from gateway.streaming import Session


class Transport(Protocol):
    """What :func:`gateway.streaming.serve` needs of a transport."""

    #: The ``transport`` label of ``tidemark_open_responses``.
    name: str

    async def open(self, session: Session) -> web.StreamResponse:
        """Start the answer (called once, before the first write); return the response
        the handler returns."""

    async def write(self, session: Session, data: bytes) -> None:
        """Send ``data``: whole SSE frames and comments, in order. May raise
        ``ConnectionError`` (the client went away)."""

    def idle(self, session: Session) -> None:
        """Everything due has been written; the pipeline now waits for the next live
        event (or its next wake-up). A transport that answers once (long-poll) may end
        the pipeline from here by raising."""

    def drop_stuck(self, session: Session, grace_s: float) -> None:
        """The client's socket has taken nothing for the write timeout: end the
        connection with a reason, and abort it after ``grace_s`` at the latest."""
