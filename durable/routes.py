"""The Durable Streams HTTP operations: ``<base>/v1/stream/<path>`` with PUT (create or
fork), POST (append, close), GET (catch-up, ``live=long-poll``, ``live=sse``), HEAD and
DELETE.

A stream path belongs to the tenant of the token that names it: the Kafka key is
``<tenant>/<path>``, so another tenant's path is simply another (absent) stream. Every
check of a write runs under the partition's lease (:meth:`DsLog.write`), on state read
up to the partition's end; every read first catches this gateway up with the partition.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import hdrs, web

from durable import protocol as p
from durable.offsets import Position, parse
from durable.records import stream_key
from durable.state import Rec, Stream, now_ms
from durable.view import Claim, DsLog, Write

log = logging.getLogger(__name__)

#: ``(request, scope) -> tenant``: the caller's tenant if they hold the scope; raises
#: the host application's 401/403 errors otherwise.
Authorize = Callable[[web.Request, str], str]

DS_LOG: Final = web.AppKey("ds_log", DsLog)
DS_AUTHORIZE: Final[web.AppKey[Authorize]] = web.AppKey("ds_authorize")
DS_PREFIX: Final = web.AppKey("ds_prefix", str)
DS_FRAMES: Final = web.AppKey("ds_frames", p.SseFrames)

READ: Final = "streams:read"
CREATE: Final = "streams:create"
PUBLISH: Final = "streams:publish"
MAX_PATH: Final = 1024


def _answer(status: int, headers: dict[str, str] | None = None, text: str = "") -> web.Response:
    """An answer; ``text``: an error, as RFC 9457 problem details like the typed API's."""
    out = {"Cross-Origin-Resource-Policy": "cross-origin", **(headers or {})}
    if text:
        out[hdrs.CONTENT_TYPE] = "application/problem+json"
        body = json.dumps({"type": "about:blank", "title": HTTPStatus(status).phrase,
                           "status": status, "detail": text})
        return web.Response(status=status, text=body, headers=out)
    return web.Response(status=status, headers=out)


def _not_found() -> web.Response:
    return _answer(404, text="no such stream")


def _gone() -> web.Response:
    return _answer(410, text="this stream was deleted")


class _Ctx:
    """What every operation on one stream needs."""

    def __init__(self, request: web.Request, scope: str) -> None:
        app = request.app
        self.request = request
        self.ds = app[DS_LOG]
        self.tenant = app[DS_AUTHORIZE](request, scope)
        self.path = request.match_info["path"]
        if not self.path or len(self.path) > MAX_PATH or ".." in self.path.split("/"):
            raise p.BadRequest("bad stream path")
        self.key = stream_key(self.tenant, self.path)
        self.partition = self.ds.partition_of(self.key)

    def live(self, key: str | None = None) -> Stream | None:
        """The stream at ``key`` (default: this one) unless absent (a fork its source has
        not confirmed is) or expired."""
        stream = self.ds.registry.get(key or self.key)
        if stream is None or stream.gone or not stream.created or stream.pending:
            return None
        if not stream.soft_deleted and stream.expired(now_ms()):
            return None
        return stream


def _wrap(handler: Callable[[_Ctx], Any], scope: str) -> Any:
    async def route(request: web.Request) -> web.StreamResponse:
        await request.app[DS_LOG].wait_ready()
        try:
            ctx = _Ctx(request, scope)
            response: web.StreamResponse = await handler(ctx)
        except p.BadRequest as exc:
            return _answer(400, text=str(exc))
        except _TooLarge:
            return _answer(413, text="the body is larger than TIDEMARK_DS_MAX_APPEND_BYTES")
        return response

    return route


class _TooLarge(Exception):
    """The body is larger than one record may be: 413."""


async def _body_of(ctx: _Ctx) -> bytes:
    body = await ctx.request.read()
    if len(body) > ctx.ds.settings.durable.max_append_bytes:
        raise _TooLarge
    return body


# -- PUT: create or fork -------------------------------------------------------------


def _fork_source(prefix: str, raw: str) -> str:
    path = raw.strip()
    for head in (prefix + "/v1/stream/", "/v1/stream/"):
        if path.startswith(head):
            return path[len(head):]
    return path.lstrip("/")


async def create(ctx: _Ctx) -> web.StreamResponse:
    headers = ctx.request.headers
    raw_type = headers.get(hdrs.CONTENT_TYPE)
    ttl = p.ttl_of(headers.get(p.STREAM_TTL))
    expires = p.expires_of(headers.get(p.STREAM_EXPIRES_AT))
    if ttl is not None and expires is not None:
        raise p.BadRequest("Stream-TTL and Stream-Expires-At exclude each other")
    closed = p.flag(headers.get(p.STREAM_CLOSED))
    source_raw = headers.get(p.FORKED_FROM)
    fork_raw = headers.get(p.FORK_OFFSET)
    sub_raw = headers.get(p.FORK_SUB_OFFSET)
    if source_raw is None and (fork_raw is not None or sub_raw is not None):
        raise p.BadRequest("Stream-Fork-Offset needs Stream-Forked-From")
    sub = p.uint(sub_raw.strip(), p.FORK_SUB_OFFSET) if sub_raw is not None else 0
    fork_at: Position | None = None
    if fork_raw is not None:
        fork_at = parse(fork_raw.strip())
        if fork_at is None:
            raise p.BadRequest("malformed Stream-Fork-Offset")
    body = await _body_of(ctx)
    source_key = None if source_raw is None else stream_key(
        ctx.tenant, _fork_source(ctx.request.app[DS_PREFIX], source_raw))
    if source_key == ctx.key:
        raise p.BadRequest("a stream cannot fork itself")
    also = () if source_key is None else (ctx.ds.partition_of(source_key),)

    def decide() -> Write | web.Response:
        existing = ctx.ds.registry.get(ctx.key)
        if existing is not None and existing.soft_deleted and not existing.gone:
            return _answer(409, text="a deleted stream that forks still read has this path")
        source = None
        if source_key is not None:
            source = ctx.live(source_key)
            if source is None:
                return _answer(404, text="no such source stream")
            if source.soft_deleted:
                return _answer(409, text="the source stream was deleted")
        content_type = raw_type or (source.content_type if source is not None
                                    else "application/octet-stream")
        f_ttl, f_exp = ttl, expires
        if source is not None and ttl is None and expires is None:
            f_ttl, f_exp = source.ttl_s, source.expires_at_ms
        current = ctx.live()
        if current is not None:
            return _recreate(current, content_type, f_ttl, f_exp, closed, source, fork_at, sub)
        meta: dict[str, Any] = {"op": "create", "ct": content_type, "ttl": f_ttl,
                                "exp": f_exp, "closed": closed, "ts": now_ms()}
        if source is not None:
            if raw_type is not None and p.media_type(raw_type) != p.media_type(
                    source.content_type):
                return _answer(409, text="a fork has its source's content type")
            at = fork_at or source.tail
            if at > source.tail:
                return _answer(400, text="Stream-Fork-Offset is past the source's tail")
            # Pending until the source's partition confirms it (fork(), below).
            meta.update(src=source.key, srcgen=list(source.gen), fo=list(at),
                        depth=source.depth + 1, sub=sub, pend=True)
            prefixes.clear()
            if sub:
                anchor = source.segments(at)
                if not anchor:
                    return _answer(400, text="Stream-Fork-Sub-Offset is past the source's tail")
                prefixes.append((source, anchor[0]))
        value, count = _initial(content_type, body)
        meta["n"] = count
        return Write(ctx.key, meta, value)

    prefixes: list[tuple[Stream, Rec]] = []
    if source_key is not None and sub:
        # The inherited part of the anchor record goes into the fork's create record;
        # its bytes may have to be read from Kafka, which decide() cannot do.
        await ctx.ds.settle(source_key)
        decide()
        if prefixes:
            await ctx.ds.load([prefixes[0][1]])

    def decide_with_prefix() -> Write | web.Response:
        plan = decide()
        if not isinstance(plan, Write) or not sub:
            return plan
        source, rec = prefixes[0]
        data = rec.data
        if data is None:
            return _answer(503, {hdrs.RETRY_AFTER: "1"}, text="try again")
        prefix, count = _prefix(source, data, rec.messages, sub)
        if prefix is None:
            return _answer(400, text="Stream-Fork-Sub-Offset is past the next data boundary")
        plan.meta.update(pre=len(prefix), pren=count)
        return Write(plan.key, plan.meta, prefix + plan.value)

    keys = (ctx.key,) if source_key is None else (ctx.key, source_key)
    plan, offset = await ctx.ds.write(
        ctx.partition, decide_with_prefix, also=also,
        also_of=lambda: ctx.ds.registry.unconfirmed(*keys),
        claims=tuple(Claim(k, exclusive=True) for k in keys))
    if isinstance(plan, web.StreamResponse):
        return plan
    if source_key is not None:
        assert offset is not None
        refusal = await _confirm_fork(ctx, source_key, plan, (ctx.partition, offset))
        if refusal is not None:
            return refusal
    stream = ctx.ds.registry.get(ctx.key)
    assert stream is not None
    out = _meta_headers(stream)
    out[hdrs.LOCATION] = str(ctx.request.url.with_query(None))
    return _answer(201, out)


async def _confirm_fork(ctx: _Ctx, source_key: str, plan: Write,
                        gen: tuple[int, int]) -> web.Response | None:
    """The second step of a fork: under the source's partition's lease, while the source
    still lives, a ``fork`` record there confirms the fork's create record ``gen`` (so a
    delete of the source is ordered before it, and refused the fork, or after it, and
    keeps the source for it). None: confirmed; else the answer."""
    srcgen = tuple(plan.meta["srcgen"])

    def decide() -> Write | web.Response:
        source = ctx.live(source_key)
        if source is None or source.gen != srcgen:
            return _answer(404, text="no such source stream")
        if source.soft_deleted:
            return _answer(409, text="the source stream was deleted")
        return Write(source_key, {"op": "fork", "fork": ctx.key, "fgen": list(gen),
                                  "ts": now_ms()})

    answer, _ = await ctx.ds.write(
        ctx.ds.partition_of(source_key), decide,
        also_of=lambda: ctx.ds.registry.unconfirmed(source_key),
        claims=(Claim(source_key, exclusive=True),))
    if isinstance(answer, web.Response):
        return answer  # the fork stays pending: absent, its path free
    stream = ctx.ds.registry.get(ctx.key)
    if stream is None or stream.gen != gen or stream.pending:
        return _answer(409, text="the path was created again meanwhile")
    return None


def _initial(content_type: str, body: bytes) -> tuple[bytes, int]:
    if not p.is_text(content_type) or p.media_type(content_type) != "application/json":
        return body, 0
    if not body:
        return b"", 0
    messages = p.json_messages(body, allow_empty=True)
    return b",".join(messages), len(messages)


def _prefix(source: Stream, data: bytes, messages: int, sub: int) -> tuple[bytes | None, int]:
    """The first ``sub`` bytes (JSON: messages) of a record, or None if it is shorter."""
    if not source.is_json:
        return (data[:sub], 0) if sub <= len(data) else (None, 0)
    if sub > messages:
        return None, 0
    items = json.loads(b"[" + data + b"]")[:sub]
    return b",".join(json.dumps(i, ensure_ascii=False, separators=(",", ":")).encode()
                     for i in items), sub


def _recreate(current: Stream, content_type: str, ttl: int | None, expires: int | None,
              closed: bool, source: Stream | None, fork_at: Position | None,
              sub: int) -> web.Response:
    same = (p.media_type(content_type) == p.media_type(current.content_type)
            and ttl == current.ttl_s and expires == current.expires_at_ms
            and closed == current.closed
            and (current.source is source or (source is None and current.source is None))
            and (fork_at is None or fork_at == current.fork_offset)
            and sub == current.fork_sub)
    if not same:
        return _answer(409, text="the stream exists with another configuration")
    return _answer(200, _meta_headers(current))


def _meta_headers(stream: Stream) -> dict[str, str]:
    out = {hdrs.CONTENT_TYPE: stream.content_type, p.STREAM_NEXT_OFFSET: stream.tail.token()}
    if stream.closed:
        out[p.STREAM_CLOSED] = "true"
    return out


# -- POST: append, close -------------------------------------------------------------


async def append(ctx: _Ctx) -> web.StreamResponse:
    headers = ctx.request.headers
    close = p.flag(headers.get(p.STREAM_CLOSED))
    producer = p.producer_of(headers)
    seq = headers.get(p.STREAM_SEQ)
    body = await _body_of(ctx)
    raw_type = headers.get(hdrs.CONTENT_TYPE)
    if not body and not close:
        raise p.BadRequest("an append needs a body (or Stream-Closed: true)")
    if body and raw_type is None:
        raise p.BadRequest("an append needs a Content-Type")

    def decide() -> Write | web.Response:
        stream = ctx.live()
        if stream is None:
            return _not_found()
        if stream.soft_deleted:
            return _gone()
        if stream.closed:
            return _append_closed(stream, close, body, producer)
        if body and not p.content_type_matches(stream, raw_type):
            return _answer(409, text="the stream has another content type")
        value, count = body, 0
        if body and stream.is_json:
            messages = p.json_messages(body, allow_empty=False)
            value, count = b",".join(messages), len(messages)
        if producer is not None:
            refusal = _producer_check(stream, producer)
            if refusal is not None:
                return refusal
        if seq is not None and stream.stream_seq is not None and seq <= stream.stream_seq:
            return _answer(409, text="Stream-Seq must grow")
        meta: dict[str, Any] = {"op": "append", "close": close, "sseq": seq, "n": count,
                                "ts": now_ms()}
        if producer is not None:
            meta.update(pid=producer.id, ep=producer.epoch, sq=producer.seq)
        return Write(ctx.key, meta, value)

    # Appends that cannot change each other's answer share a transaction: plain ones,
    # other producers'; a close, or another append with this producer or a Stream-Seq,
    # waits for the next (view.Claim).
    parts = frozenset(() if producer is None else (f"producer:{producer.id}",)) | (
        frozenset(("seq",)) if seq is not None else frozenset())
    plan, offset = await ctx.ds.write(
        ctx.partition, decide, also_of=lambda: ctx.ds.registry.unconfirmed(ctx.key),
        claims=(Claim(ctx.key, parts, exclusive=close),))
    if isinstance(plan, web.StreamResponse):
        return plan
    stream = ctx.ds.registry.get(ctx.key)
    assert stream is not None and offset is not None
    # This append's own end (appends after it in the same batch moved the tail on).
    own_end = Position(stream.depth, ctx.partition, offset + 1) if plan.value else stream.tail
    out = {p.STREAM_NEXT_OFFSET: own_end.token()}
    if close:
        out[p.STREAM_CLOSED] = "true"
    if producer is not None:
        out[p.PRODUCER_EPOCH] = str(producer.epoch)
        out[p.PRODUCER_SEQ] = str(producer.seq)
        # A close-only request appends nothing: 204 even with producer headers.
        return _answer(200 if body else 204, out)
    return _answer(204, out)


def _append_closed(stream: Stream, close: bool, body: bytes,
                   producer: p.Producer | None) -> web.Response:
    out = {p.STREAM_NEXT_OFFSET: stream.tail.token(), p.STREAM_CLOSED: "true"}
    if producer is not None and stream.closed_by == (producer.id, producer.epoch, producer.seq):
        out.update({p.PRODUCER_EPOCH: str(producer.epoch), p.PRODUCER_SEQ: str(producer.seq)})
        return _answer(204, out)
    if close and not body:
        return _answer(204, out)
    return _answer(409, out, text="the stream is closed")


def _producer_check(stream: Stream, producer: p.Producer) -> web.Response | None:
    """None: a new append; else the answer (duplicate 204, 403 stale epoch, 400, 409)."""
    state = stream.producers.get(producer.id)
    if state is None:
        if producer.seq != 0:
            return _answer(409, {p.PRODUCER_EXPECTED_SEQ: "0",
                                 p.PRODUCER_RECEIVED_SEQ: str(producer.seq)},
                           text="a new producer starts at Producer-Seq 0")
        return None
    epoch, last = state
    if producer.epoch < epoch:
        return _answer(403, {p.PRODUCER_EPOCH: str(epoch)}, text="stale producer epoch")
    if producer.epoch > epoch:
        if producer.seq != 0:
            return _answer(400, text="a new producer epoch starts at Producer-Seq 0")
        return None
    if producer.seq <= last:
        return _answer(204, {p.PRODUCER_EPOCH: str(epoch), p.PRODUCER_SEQ: str(last),
                             p.STREAM_NEXT_OFFSET: stream.tail.token()})
    if producer.seq > last + 1:
        return _answer(409, {p.PRODUCER_EXPECTED_SEQ: str(last + 1),
                             p.PRODUCER_RECEIVED_SEQ: str(producer.seq)},
                       text="a gap in Producer-Seq")
    return None


# -- DELETE, HEAD --------------------------------------------------------------------


async def delete(ctx: _Ctx) -> web.StreamResponse:
    def decide() -> Write | web.Response:
        stream = ctx.live()
        if stream is None:
            return _not_found()
        if stream.soft_deleted:
            return _gone()
        return Write(ctx.key, {"op": "delete", "ts": now_ms()})

    # Whether forks still read it is decided where the records are applied: every fork is
    # confirmed by a record in this stream's own partition, so its order against this
    # delete is the partition's (state.py).
    plan, _ = await ctx.ds.write(ctx.partition, decide,
                                 also_of=lambda: ctx.ds.registry.unconfirmed(ctx.key),
                                 claims=(Claim(ctx.key, exclusive=True),))
    if isinstance(plan, web.StreamResponse):
        return plan
    return _answer(204)


async def head(ctx: _Ctx) -> web.StreamResponse:
    await ctx.ds.settle(ctx.key)
    stream = ctx.live()
    if stream is None:
        return _answer(404, {hdrs.CACHE_CONTROL: "no-store"})
    if stream.soft_deleted:
        return _answer(410, {hdrs.CACHE_CONTROL: "no-store"})
    out = _meta_headers(stream)
    out[hdrs.CACHE_CONTROL] = "no-store"
    if stream.ttl_s is not None:
        out[p.STREAM_TTL] = str(stream.ttl_s)
    if stream.expires_at_ms is not None:
        out[p.STREAM_EXPIRES_AT] = p.rfc3339(stream.expires_at_ms)
    return _answer(200, out)


# -- GET: catch-up, long-poll, SSE ---------------------------------------------------


def _chunk(stream: Stream, frm: Position, limit: int) -> tuple[list[Rec], Position, bool]:
    """The records of one response from ``frm``: (records, next offset, up to date)."""
    recs = stream.segments(frm)
    taken: list[Rec] = []
    size = 0
    for rec in recs:
        if taken and size + rec.size > limit:
            return taken, taken[-1].end, False
        taken.append(rec)
        size += rec.size
    return taken, stream.tail if frm <= stream.tail else frm, True


def _body(stream: Stream, chunks: list[bytes]) -> bytes:
    if stream.is_json:
        return b"[" + b",".join(c for c in chunks if c) + b"]"
    return b"".join(chunks)


async def read(ctx: _Ctx) -> web.StreamResponse:
    query = ctx.request.query
    if len(query.getall("offset", [])) > 1 or len(query.getall("live", [])) > 1:
        raise p.BadRequest("offset and live may be given once")
    live = query.get("live")
    if live not in (None, "long-poll", "sse"):
        raise p.BadRequest("live must be long-poll or sse")
    raw = query.get("offset")
    if live is not None and raw is None:
        raise p.BadRequest("a live read needs an offset")
    await ctx.ds.settle(ctx.key)
    stream = ctx.live()
    if stream is None:
        return _not_found()
    if stream.soft_deleted:
        return _gone()
    frm, now = p.read_offset(raw, stream)
    ctx.ds.touch(stream)
    if live == "sse":
        return await _sse(ctx, stream, frm)
    limit = ctx.ds.settings.durable.max_chunk_bytes
    recs, nxt, up_to_date = _chunk(stream, frm, limit)
    if live == "long-poll" and not recs:
        return await _long_poll(ctx, stream, frm)
    closed = stream.closed and up_to_date
    out = {hdrs.CONTENT_TYPE: stream.content_type, p.STREAM_NEXT_OFFSET: nxt.token()}
    if up_to_date:
        out[p.STREAM_UP_TO_DATE] = "true"
    if closed:
        out[p.STREAM_CLOSED] = "true"
    if live == "long-poll":
        out[p.STREAM_CURSOR] = p.cursor(query.get("cursor"))
    if now:
        out[hdrs.CACHE_CONTROL] = "no-store"
    else:
        etag = f'"{stream.gen[0]}-{stream.gen[1]}:{frm.token()}:{nxt.token()}' \
               f'{":c" if closed else ""}"'
        out[hdrs.ETAG] = etag
        out[hdrs.CACHE_CONTROL] = "private, max-age=60, stale-while-revalidate=300"
        if ctx.request.headers.get(hdrs.IF_NONE_MATCH) == etag:
            return _answer(304, out)
    body = _body(stream, await ctx.ds.load(recs))
    response = _answer(200, out)
    response.body = body
    return response


async def _long_poll(ctx: _Ctx, stream: Stream, frm: Position) -> web.StreamResponse:
    settings = ctx.ds.settings.durable
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.long_poll_timeout_s
    while True:
        if stream.gone or ctx.live() is not stream:
            return _not_found()
        recs, nxt, up_to_date = _chunk(stream, frm, settings.max_chunk_bytes)
        if recs:
            out = {hdrs.CONTENT_TYPE: stream.content_type, p.STREAM_NEXT_OFFSET: nxt.token(),
                   p.STREAM_CURSOR: p.cursor(ctx.request.query.get("cursor")),
                   hdrs.CACHE_CONTROL: "private, max-age=60, stale-while-revalidate=300"}
            if up_to_date:
                out[p.STREAM_UP_TO_DATE] = "true"
                if stream.closed:
                    out[p.STREAM_CLOSED] = "true"
            response = _answer(200, out)
            response.body = _body(stream, await ctx.ds.load(recs))
            return response
        out = {p.STREAM_NEXT_OFFSET: (stream.tail if frm <= stream.tail else frm).token(),
               p.STREAM_UP_TO_DATE: "true", hdrs.CACHE_CONTROL: "no-store"}
        if stream.closed:
            out[p.STREAM_CLOSED] = "true"
            return _answer(204, out)
        remaining = deadline - loop.time()
        if remaining <= 0 or ctx.ds.closing:
            out[p.STREAM_CURSOR] = p.cursor(ctx.request.query.get("cursor"))
            return _answer(204, out)
        await ctx.ds.changed(stream, stream.version, remaining)


async def _sse(ctx: _Ctx, stream: Stream, frm: Position) -> web.StreamResponse:
    headers = {hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-cache",
               "Cross-Origin-Resource-Policy": "cross-origin", "X-Accel-Buffering": "no"}
    if not p.is_text(stream.content_type):
        headers[p.SSE_ENCODING] = "base64"
    if hdrs.ORIGIN in ctx.request.headers:
        headers["Access-Control-Allow-Origin"] = "*"
        headers["Access-Control-Expose-Headers"] = ", ".join(p.RESPONSE_HEADERS)
    response = web.StreamResponse(status=200, headers=headers)
    await response.prepare(ctx.request)
    try:
        await _sse_events(ctx, stream, frm, response)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away; it resumes from its last offset
    return response


async def _sse_events(ctx: _Ctx, stream: Stream, frm: Position,
                      response: web.StreamResponse) -> None:
    """The events of one SSE response, until the stream closes, the response has lasted
    ``TIDEMARK_DS_SSE_MAX_SECONDS`` or the gateway shuts down."""
    settings = ctx.ds.settings.durable
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.sse_max_s
    client_cursor = ctx.request.query.get("cursor")
    frames = ctx.request.app[DS_FRAMES]
    first = True
    while True:
        if stream.gone or ctx.live() is not stream:
            break
        version = stream.version
        recs, nxt, up_to_date = _chunk(stream, frm, settings.max_chunk_bytes)
        if recs or first:
            data = b""
            if recs:
                # Framed once per chunk for every reader that sends it (p.SseFrames).
                key = (stream.gen, frm, nxt)
                cached = frames.get(key)
                if cached is None:
                    cached = p.sse_data(stream, await ctx.ds.load(recs))
                    frames.put(key, cached)
                data = cached
            control: dict[str, Any] = {"streamNextOffset": nxt.token()}
            closed = stream.closed and up_to_date
            if closed:
                control["streamClosed"] = True
                control["upToDate"] = True
            else:
                control["streamCursor"] = p.cursor(client_cursor)
                if up_to_date:
                    control["upToDate"] = True
            # One write per chunk: its data event and its control event.
            await response.write(data + p.sse_event("control", [_json(control)]))
            frm, first = nxt, False
            if closed:
                break
            if not up_to_date:
                continue
        elif stream.closed:
            await response.write(p.sse_event("control", [_json(
                {"streamNextOffset": frm.token(), "streamClosed": True, "upToDate": True})]))
            break
        remaining = deadline - loop.time()
        if remaining <= 0 or ctx.ds.closing:
            break
        await ctx.ds.changed(stream, version, min(remaining, 15.0))
        if stream.version == version and not stream.gone:
            await response.write(b": ping\n\n")


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def add_routes(app: web.Application, prefix: str) -> None:
    """The stream routes under ``prefix`` (the base path)."""
    app[DS_FRAMES] = p.SseFrames()
    route = prefix + "/v1/stream/{path:.+}"
    resource = app.router.add_resource(route, name="ds_stream")
    resource.add_route("PUT", _wrap(create, CREATE))
    resource.add_route("POST", _wrap(append, PUBLISH))
    resource.add_route("GET", _wrap(read, READ))
    resource.add_route("DELETE", _wrap(delete, CREATE))
    resource.add_route("HEAD", _wrap(head, READ))
