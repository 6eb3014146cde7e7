"""A test SSE client written against the wire format only (WHATWG event-stream parsing).

It does not import Tidemark: it checks what any EventSource would see.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict

from bench.scn_compression import decoder

TERMINAL = {"result", "error", "cancelled"}
#: A slow reader's pause after reading so many bytes.
Throttle = Callable[[int], Awaitable[None]]


@dataclass
class Event:
    id: str | None
    event: str
    data: str

    @property
    def envelope(self) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(self.data)
        return obj

    @property
    def seq(self) -> int:
        return int(self.envelope["seq"])


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]  # names are case-insensitive (proxies lowercase them)
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    first_field: str | None = None
    body: str = ""
    ended_by_server: bool = False
    #: The event stream as read (decoded when it came compressed), and how many bytes of
    #: body came over the wire for it.
    raw: bytearray = field(default_factory=bytearray)
    wire: int = 0

    @property
    def last_id(self) -> str | None:
        ids = [e.id for e in self.events if e.id]
        return ids[-1] if ids else None

    @property
    def stream_events(self) -> list[Event]:
        """The stream's own events (not in-band notices such as reset)."""
        return [e for e in self.events if e.id is not None]


async def read(session: aiohttp.ClientSession, url: str, *, last_event_id: str | None = None,
               max_events: int | None = None, idle_timeout: float = 20.0,
               stop_after_comments: int | None = None,
               sink: list[Event] | None = None,
               headers: dict[str, str] | None = None,
               encoding: str | None = None, throttle: Throttle | None = None) -> Reply:
    """Read an SSE response until the server ends it, ``max_events`` stream events
    arrived, or nothing came for ``idle_timeout`` seconds (then the read fails).
    Events are also appended to ``sink`` as they arrive (it survives a failed read).
    ``headers`` are sent besides ``Accept`` and ``Last-Event-ID``. With ``encoding``
    the request sends ``Accept-Encoding: <encoding>`` and a 200 answer must come in that
    coding (identity: none), which this client decodes itself, chunk by chunk.
    ``throttle``: a slow reader, awaited with the size of each piece read before the next
    read (with a session whose sockets buffer little, see :func:`slow_session`)."""
    headers = {**(headers or {}), "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    if encoding is not None:
        headers["Accept-Encoding"] = encoding
    async with session.get(url, headers=headers, auto_decompress=encoding is None) as resp:
        decode = None
        if encoding is not None and resp.status == 200:
            coding = resp.headers.get("Content-Encoding", "identity")
            assert coding == encoding, (encoding, resp.headers)
            if coding != "identity":
                assert "accept-encoding" in resp.headers.get("Vary", "").lower()
                decode = decoder(coding)
        return await parse(resp, max_events=max_events, idle_timeout=idle_timeout,
                           stop_after_comments=stop_after_comments, sink=sink,
                           decode=decode, throttle=throttle)


def _small_receive_buffer(addr_info: tuple[Any, ...]) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def slow_session(headers: dict[str, str]) -> aiohttp.ClientSession:
    """A client session that buffers little (4 KiB socket receive buffers, 4 KiB read
    buffer), so a slow reader's slowness reaches the server at once."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, socket_factory=_small_receive_buffer),
        headers=headers, read_bufsize=4096)


async def parse(resp: aiohttp.ClientResponse, *, max_events: int | None = None,
                idle_timeout: float = 20.0, stop_after_comments: int | None = None,
                sink: list[Event] | None = None,
                decode: Callable[[bytes], bytes] | None = None,
                throttle: Throttle | None = None) -> Reply:
    """Read an open response (see :func:`read`); ``decode`` decodes its body's chunks."""
    reply = Reply(resp.status, CIMultiDict(resp.headers))
    if sink is not None:
        reply.events = sink
    if resp.status != 200 or not resp.content_type.startswith("text/event-stream"):
        reply.body = await resp.text()
        return reply
    ev_id: str | None = None
    ev_type = ""
    data: list[str] = []
    pending = b""
    while True:
        try:
            chunk = await asyncio.wait_for(resp.content.readany(), idle_timeout)
        except TimeoutError as exc:
            raise AssertionError(f"no data for {idle_timeout}s; got {reply.events[-3:]}") \
                from exc
        if not chunk:
            reply.ended_by_server = True
            return reply
        reply.wire += len(chunk)
        if throttle is not None:
            await throttle(len(chunk))
        if decode is not None:
            chunk = decode(chunk)
        reply.raw += chunk
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for raw in lines:
            line = raw.decode("utf-8").removesuffix("\r")
            if line == "":
                if data:
                    reply.events.append(Event(ev_id, ev_type or "message", "\n".join(data)))
                    if max_events is not None and len(reply.stream_events) >= max_events:
                        return reply
                ev_id, ev_type, data = None, "", []
                continue
            if line.startswith(":"):
                reply.comments.append(line[1:].strip())
                if stop_after_comments is not None and \
                        len(reply.comments) >= stop_after_comments:
                    return reply
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            reply.first_field = reply.first_field or name
            if name == "data":
                data.append(value)
            elif name == "event":
                ev_type = value
            elif name == "id":
                ev_id = value
            elif name == "retry" and value.isdigit():
                reply.retry = int(value)


async def wait_for(seen: list[Event], count: int, reader: asyncio.Task[Reply], *,
                   timeout: float = 30.0) -> None:
    """Wait until a reader feeding ``seen`` has ``count`` events (fail if it ends first)."""
    for _ in range(int(timeout / 0.02)):
        if len(seen) >= count:
            return
        if reader.done():
            raise AssertionError(f"the read ended after {len(seen)} events: {reader.result()}")
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {len(seen)} of {count} events in {timeout}s")
