"""Test clients for the three transports of a stream, written against the wire only
(they do not import Tidemark), with one outcome shape so that tests can compare them.

An item is ``(id, event, data)``: ``data`` is the envelope's JSON text exactly as it
came (the SSE ``data:`` line; on the WebSocket the bytes after ``"data":`` in the text
frame; for long-poll each item's ``data`` re-encoded compactly, which is the same text
for an envelope written as compact JSON).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.scn_compression import decoder
from tests import sse_client

TRANSPORTS = ("sse", "ws", "poll")
Item = tuple[str | None, str, str]


@dataclass
class Outcome:
    """What one transport gave for one read."""

    transport: str
    #: HTTP status (SSE, poll: the first answer that was not 200; 200 if all were), or
    #: the WebSocket's close code.
    code: int
    items: list[Item] = field(default_factory=list)
    #: The problem's detail, or the close reason.
    reason: str = ""
    #: Whether the read ended because the stream did (terminal event seen).
    ended: bool = False
    #: Long-poll: how many answers it took.
    answers: int = 0
    #: Body bytes that came over the wire (SSE, poll).
    wire: int = 0
    #: The SSE body as decoded.
    raw: bytes = b""

    @property
    def stream_items(self) -> list[Item]:
        return [i for i in self.items if i[0] is not None]

    @property
    def last_id(self) -> str | None:
        ids = [i[0] for i in self.items if i[0] is not None]
        return ids[-1] if ids else None


def url_of(base: str, stream_id: str, transport: str, query: str = "") -> str:
    path = {"sse": "events", "ws": "ws", "poll": "poll"}[transport]
    url = f"{base}/v1/streams/{stream_id}/{path}"
    if transport == "ws":
        url = "ws" + url.removeprefix("http")
    return f"{url}?{query}" if query else url


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


async def read(http: aiohttp.ClientSession, base: str, stream_id: str, transport: str, *,
               position: str | None = None, query: str = "", max_events: int | None = None,
               headers: dict[str, str] | None = None, wait: float = 10.0,
               timeout: float = 30.0, encoding: str = "identity",
               throttle: sse_client.Throttle | None = None) -> Outcome:
    """Read the stream over ``transport`` from ``position`` (sent as ``?last_event_id=``)
    until it ends, ``max_events`` stream events came, or the server ends the read.

    ``encoding``: SSE and long-poll send it as ``Accept-Encoding``, check that the
    answers came in that coding and decode them here; the WebSocket offers
    permessage-deflate unless it is ``identity`` (and then checks it was agreed).
    ``throttle``: a slow reader (see ``sse_client.read``; on the WebSocket it is awaited
    after each message, in long-poll after each answer)."""
    if position is not None:
        query = f"{query}&last_event_id={position}" if query else f"last_event_id={position}"
    url = url_of(base, stream_id, transport, query)
    reader = {"sse": _read_sse, "ws": _read_ws, "poll": _read_poll}[transport]
    return await asyncio.wait_for(
        reader(http, url, max_events=max_events, headers=headers or {}, wait=wait,
               encoding=encoding, throttle=throttle), timeout)


async def _read_sse(http: aiohttp.ClientSession, url: str, *, max_events: int | None,
                    headers: dict[str, str], wait: float, encoding: str,
                    throttle: sse_client.Throttle | None) -> Outcome:
    reply = await sse_client.read(http, url, max_events=max_events, headers=headers,
                                  encoding=encoding, throttle=throttle)
    out = Outcome("sse", reply.status, wire=reply.wire, raw=bytes(reply.raw))
    if reply.status != 200:
        out.reason = _detail(reply.body)
        return out
    out.items = [(e.id, e.event, e.data) for e in reply.events]
    out.ended = bool(out.items) and out.items[-1][1] in sse_client.TERMINAL
    return out


async def _read_ws(http: aiohttp.ClientSession, url: str, *, max_events: int | None,
                   headers: dict[str, str], wait: float, encoding: str,
                   throttle: sse_client.Throttle | None) -> Outcome:
    out = Outcome("ws", 0)
    deflate = encoding != "identity"
    async with http.ws_connect(url, headers=headers, autoclose=True,
                               compress=15 if deflate else 0) as ws:
        assert bool(ws.compress) == deflate, (encoding, ws.compress)
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.CLOSE:
                out.code, out.reason = int(msg.data), str(msg.extra or "")
                break
            if msg.type is not aiohttp.WSMsgType.TEXT:
                out.code = ws.close_code or 0
                break
            text = msg.data
            if throttle is not None:
                await throttle(len(text))
            obj = json.loads(text)
            if "op" in obj:
                continue
            assert list(obj) == ["id", "event", "data"], text
            raw = text[text.index(',"data":') + len(',"data":'):-1]
            assert json.loads(raw) == obj["data"]
            out.items.append((obj["id"], obj["event"], raw))
            if max_events is not None and len(out.stream_items) >= max_events:
                await ws.close()
                out.code = ws.close_code or 0
                break
    out.ended = bool(out.items) and out.items[-1][1] in sse_client.TERMINAL
    return out


async def _read_poll(http: aiohttp.ClientSession, url: str, *, max_events: int | None,
                     headers: dict[str, str], wait: float, encoding: str,
                     throttle: sse_client.Throttle | None) -> Outcome:
    """Page through the long-poll route until ``ended`` (or 204, or an error)."""
    out = Outcome("poll", 200)
    base, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    params["wait"] = str(wait)
    while True:
        async with http.get(base, params=params, auto_decompress=False,
                            headers={**headers, "Accept-Encoding": encoding}) as resp:
            out.answers += 1
            if resp.status != 200:
                out.code = resp.status
                out.reason = _detail(await resp.text())
                return out
            assert resp.content_type == "application/json"
            assert resp.headers.get("Content-Encoding", "identity") == encoding, resp.headers
            wire = await resp.read()
            out.wire += len(wire)
            if throttle is not None:
                await throttle(len(wire))
            body = json.loads(decoder(encoding)(wire))
        assert set(body) == {"events", "last_event_id", "ended"}, body
        for item in body["events"]:
            assert list(item) == ["id", "event", "data"], item
            out.items.append((item["id"], item["event"], compact(item["data"])))
        if body["ended"] or (max_events is not None and
                             len(out.stream_items) >= max_events):
            out.ended = body["ended"]
            return out
        # The next position goes in the query (a header, which would win, is dropped).
        headers = {k: v for k, v in headers.items() if k.lower() != "last-event-id"}
        if body["last_event_id"] is not None:
            params["last_event_id"] = body["last_event_id"]
        else:  # only a reset notice: read from the earliest event held
            params.pop("last_event_id", None)


def _detail(body: str) -> str:
    try:
        return str(json.loads(body).get("detail", ""))
    except ValueError:
        return body


async def read_all(http: aiohttp.ClientSession, base: str, stream_id: str,
                   **kwargs: Any) -> dict[str, Outcome]:
    """:func:`read` over every transport, one after the other."""
    return {t: await read(http, base, stream_id, t, **kwargs) for t in TRANSPORTS}
