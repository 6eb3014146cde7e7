"""A real OpenAI-compatible chat-completions endpoint on loopback (aiohttp), speaking the
streaming format: ``text/event-stream`` with chunked ``data: {chat.completion.chunk}``
lines, a last chunk with ``finish_reason``, a usage chunk (``stream_options.include_usage``)
and ``data: [DONE]``.

What it does is told by ``key=value`` words in the request's last user message:
``chunks=N`` (default 8) words ``w0 w1 ...``, ``delay=S`` between chunks, ``disconnect=N``
(the connection is cut after N content chunks, mid-body), ``busy=N`` (the first N
requests with this message get 429 with ``Retry-After: <retry_after>``, default 1),
``status=C`` (every request gets C with an OpenAI error body).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, Final

import orjson
from aiohttp import web

MODEL: Final = "upstream-test-model"
KEY: Final = "sk-test-upstream-key-do-not-log"


def words(message: str) -> dict[str, str]:
    return dict(w.split("=", 1) for w in message.split() if "=" in w)


def answer_chunks(message: str) -> list[str]:
    """The content deltas the endpoint streams for ``message``."""
    n = int(words(message).get("chunks", 8))
    return [f"w{i} " for i in range(n)]


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({
        "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"


class Upstream:
    """The endpoint; ``requests``: every request body it took, ``auth``: their
    Authorization headers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.seen: Counter[str] = Counter()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization"))
        message = body["messages"][-1]["content"]
        opts = words(message)
        self.seen[message] += 1
        if "status" in opts:
            return web.json_response({"error": {"message": f"refused with {opts['status']}",
                                                "type": "invalid_request_error"}},
                                     status=int(opts["status"]))
        if self.seen[message] <= int(opts.get("busy", 0)):
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit_exceeded"}},
                status=429, headers={"Retry-After": opts.get("retry_after", "1")})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(chunk({"role": "assistant", "content": ""}))
        delay = float(opts.get("delay", 0))
        cut = int(opts["disconnect"]) if "disconnect" in opts else None
        chunks = answer_chunks(message)
        for i, text in enumerate(chunks):
            if i == cut:
                assert request.transport is not None
                request.transport.abort()  # mid-body: the chunked encoding never ends
                return resp
            if delay:
                await asyncio.sleep(delay)
            await resp.write(chunk({"content": text}))
        await resp.write(chunk({}, "stop"))
        usage = {"prompt_tokens": len(message.split()), "completion_tokens": len(chunks),
                 "total_tokens": len(message.split()) + len(chunks)}
        await resp.write(b"data: " + orjson.dumps({
            "id": "chatcmpl-test", "object": "chat.completion.chunk", "model": MODEL,
            "created": int(time.time()), "choices": [], "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Upstream]:
    """An :class:`Upstream` listening on loopback for the ``with`` block."""
    server = Upstream()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
