"""``GET /v1/streams/{id}/ws``: a stream's events over a WebSocket, by the SSE route's
resume rules (``gateway.streaming`` serves it; this module is its transport).

An upgrade request is accepted before anything is checked, so that every refusal
reaches the client as a close code with a reason (a browser sees nothing of a refused
upgrade but 1006). A request that is not an upgrade gets HTTP answers: the token's
problems (401, 403, 404 for an id that is not the caller's), else 426.

Frames and codes (docs/transports.md):

- server -> client: one text frame per event, ``{"id", "event", "data"}``, ``data``
  the envelope object (byte for byte the SSE ``data:`` line); a ``reset`` notice has
  ``"id": null``. Keepalives are WebSocket pings, on the SSE heartbeat's schedule.
  Frames are compressed (permessage-deflate, flushed per frame) for clients that offer
  it, within ``TIDEMARK_COMPRESSION_WINDOW_BITS`` (see :class:`_WebSocketResponse`).
- 1000 after the terminal event, or at once (with a reason) for a position at or
  after it; 4000 + the HTTP status of the problem the SSE route would answer (4400,
  4401, 4403, 4404, 4410, 4429, 4503...), the problem's detail as the reason; 1013
  for a client cut off for falling behind, and 1001 when the gateway shuts down or the
  response reached its lifetime or idle limit: resume from the last id. 1003 for a
  binary message, 1009 (aiohttp's) for one over ``TIDEMARK_INPUT_MAX_BYTES`` + 1 KiB.
- client -> server: ``{"op": "input", "data": {...}}`` and ``{"op": "cancel"}``
  (``gateway.talkback``); a refused op is answered with
  ``{"op": "error", "status", "detail"}`` and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

import orjson
from aiohttp import WSMsgType, hdrs, web
from aiohttp.http import ws_ext_gen
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from gateway import auth, items, routes, streaming, talkback
from gateway.problems import Problem, problem_middleware
from gateway.routes import _caller
from gateway.services import SERVICES

log = logging.getLogger(__name__)

#: RFC 6455 close codes used here (4000-4999 are the application's).
NORMAL: Final = 1000
GOING_AWAY: Final = 1001
UNSUPPORTED: Final = 1003
INTERNAL: Final = 1011
TRY_AGAIN_LATER: Final = 1013
PROBLEM_BASE: Final = 4000
#: A close frame's reason is at most 123 bytes (125 less the code).
MAX_REASON: Final = 123


def reason_bytes(text: str) -> bytes:
    """``text`` as a close reason: UTF-8, cut to 123 bytes on a character boundary."""
    raw = text.encode()
    if len(raw) <= MAX_REASON:
        return raw
    return raw[:MAX_REASON].decode("utf-8", "ignore").encode()


def problem_close(problem: Problem) -> tuple[int, bytes]:
    """The close code and reason standing for a problem answer."""
    detail = ""
    if isinstance(problem.body, bytes):
        with contextlib.suppress(orjson.JSONDecodeError):
            detail = str(orjson.loads(problem.body).get("detail", ""))
    return PROBLEM_BASE + problem.status, reason_bytes(detail or problem.reason)


class WsTransport:
    """The pipeline's writes as WebSocket frames (see the module docstring)."""

    name = "websocket"

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        #: Set once this side has begun to close the connection.
        self.closing = False

    async def open(self, session: streaming.Session) -> web.StreamResponse:
        return self.ws

    async def write(self, session: streaming.Session, data: bytes) -> None:
        ws = self.ws
        for item in items.decode(data):
            if self.closing:
                # Closed by this side (the stream ended, the client was cut off): the
                # pipeline ends here as it does for a client that went away.
                raise ConnectionResetError("the WebSocket is closing")
            if isinstance(item, items.Item):
                await ws.send_frame(items.render(item), WSMsgType.TEXT)
                if item.terminal:
                    await self.close(NORMAL, "the stream has ended")
            elif item.closing:
                code = TRY_AGAIN_LATER if data.endswith(streaming.CUT_OFF_REASON) else GOING_AWAY
                await self.close(code, item.text)
            elif item.text == items.PING_TEXT:
                await ws.ping()

    def idle(self, session: streaming.Session) -> None:
        """Nothing to do while a WebSocket waits (pings come from the pipeline)."""

    def drop_stuck(self, session: streaming.Session, grace_s: float) -> None:
        """Queue a close frame (1013) behind what the socket holds, then close; abort
        after ``grace_s``."""
        transport = session.request.transport
        if transport is None or transport.is_closing():
            return
        self.closing = True
        payload = TRY_AGAIN_LATER.to_bytes(2, "big") + reason_bytes(
            "closing: this client fell behind; reconnect with last_event_id to resume")
        transport.write(bytes((0x88, len(payload))) + payload)
        transport.close()
        asyncio.get_running_loop().call_later(grace_s, transport.abort)

    async def close(self, code: int, reason: str | bytes) -> None:
        if self.closing:
            return
        self.closing = True
        message = reason if isinstance(reason, bytes) else reason_bytes(reason)
        await self.ws.close(code=code, message=message)


class Connection:
    """One WebSocket client: the stream's events out, the client's ops in."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.request = request
        self.ws = ws
        self.transport = WsTransport(ws)

    async def run(self) -> None:
        """Follow the stream and read the client's messages until either ends."""
        out = asyncio.create_task(self._follow(), name="ws-follow")
        into = asyncio.create_task(self._read(), name="ws-read")
        try:
            await asyncio.wait({out, into}, return_when=asyncio.FIRST_COMPLETED)
            if into.done() and not out.done() and not self.transport.closing:
                out.cancel()  # the client closed or went away
            await asyncio.wait({out})
            if not into.done():
                into.cancel()
            await asyncio.wait({into})
        finally:
            for task in (out, into):
                task.cancel()
        for task in (out, into):
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error

    async def _follow(self) -> None:
        try:
            answer = await problem_middleware(self.request, self._serve)
        except Problem as problem:
            code, reason = problem_close(problem)
            await self.transport.close(INTERNAL if problem.status == 500 else code, reason)
            return
        except ConnectionError:
            return
        if answer.status == 204:
            await self.transport.close(
                NORMAL, "the stream has ended: nothing comes after this position")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        session, position = await routes.session_for(request, self.transport)
        return await streaming.serve(session, position)

    async def _read(self) -> None:
        ws = self.ws
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await self._op(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await self.transport.close(UNSUPPORTED, "send ops as text frames of JSON")
                return
            elif msg.type is WSMsgType.ERROR:
                log.debug("WebSocket read error: %s", ws.exception())
                return

    async def _op(self, text: str) -> None:
        """One client message; a refused one is answered in a frame of its own."""
        try:
            answer = await problem_middleware(self.request, talkback.op_handler(text))
            payload = answer.body if isinstance(answer, web.Response) else None
        except Problem as problem:
            payload = orjson.dumps({"op": "error", "status": problem.status,
                                    "detail": problem_close(problem)[1].decode()})
        if isinstance(payload, bytes) and not self.transport.closing:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_frame(payload, WSMsgType.TEXT)


class _WebSocketResponse(web.WebSocketResponse):
    """permessage-deflate (RFC 7692) within this gateway's window.

    aiohttp accepts a client's offer with the window the client asks for, 15 bits when it
    names none (what browsers and aiohttp's client send), i.e. a 32 KiB window per
    connection and some 260 KiB of zlib state once a frame is compressed. RFC 7692
    section 7.1.2.1 lets the server answer any offer with a smaller
    ``server_max_window_bits``: this caps it at ``TIDEMARK_COMPRESSION_WINDOW_BITS``.
    aiohttp's writer then compresses with that window, flushing (Z_SYNC_FLUSH) after
    every frame. ``_handshake`` is aiohttp's (3.x); were its shape to change, the
    WebSocket tests of the negotiated header fail.
    """

    def __init__(self, *, window_bits: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._window_bits = window_bits

    def _handshake(self, request: BaseRequest) -> tuple[CIMultiDict[str], str | None, int, bool]:
        headers, protocol, compress, notakeover = super()._handshake(request)
        if compress > self._window_bits:
            compress = self._window_bits
            headers[hdrs.SEC_WEBSOCKET_EXTENSIONS] = ws_ext_gen(
                compress=compress, isserver=True, server_notakeover=notakeover)
        return headers, protocol, compress, notakeover


async def stream_ws(request: web.Request) -> web.StreamResponse:
    """The WebSocket route (see the module docstring)."""
    gw = request.app[SERVICES].settings.gateway
    # The writer waits for a full socket after every WRITE_BYTES sent, as the SSE
    # response's does (aiohttp's default: 256 KiB queued above what the kernel holds).
    ws = _WebSocketResponse(max_msg_size=gw.input_max_bytes + 1024,
                            writer_limit=streaming.WRITE_BYTES,
                            compress=gw.ws_compression,
                            window_bits=gw.compression_window_bits)
    if not ws.can_prepare(request).ok:
        # Not an upgrade: an HTTP answer, as any route would give (auth first).
        await _caller(request, auth.READ)
        raise Problem(426, "this route speaks WebSocket: send an Upgrade: websocket request "
                      "(or read the stream from /events or /poll)",
                      headers={"Upgrade": "websocket"})
    ws.headers["Tidemark-Gateway"] = request.app[SERVICES].instance
    await ws.prepare(request)
    await Connection(request, ws).run()
    return ws
