"""``GET /v1/streams/{id}/events``: one client's SSE response, by the resume rules.

Order of work: resolve the stream (from its id; see ``gateway.lookup``) and the
position, subscribe to the hub (from offset H on, every frame of the stream reaches the
subscriber), serve the backlog [start, H) from the memory tail or Kafka, then live
frames. A frame is written only if its offset and
seq are above the last written ones, which removes any overlap between backlog and
live delivery.

A subscriber whose delivery preferences (``gateway.delivery``: its stream's context,
overridden by the request's query) are not the default gets a :class:`ShapedCursor`,
which filters and coalesces what it writes; the default path is unchanged. The stream's
A/B variants (recorded in its first event) change its delivery as their definitions
say (``eventlog.experiments``): its default ``updateFrequency``, the batch interval, and
the ``: ping`` interval (``heartbeatSeconds``; a subscriber whose interval is shorter
than the pace's wakes itself, see :func:`_wake`). A subscriber that falls behind (its
live buffer overflows, so it is caught up from the memory tail or Kafka) gets its
partial results coalesced by the same batched rule from then on, for the rest of its
response (:func:`_coalesce_from_now`; ``TIDEMARK_LAG_COALESCE``).

The same pipeline serves every transport (``gateway.transport``): what it writes is
always the SSE encoding of the events (made once per event by the hub), and the
session's :class:`~gateway.transport.Transport` decides how that goes out. The SSE
route's transport is :data:`SSE` (bytes to the response as they are); the WebSocket
and long-poll routes decode the frames into ``(id, event, envelope)`` items
(``gateway.items``), so every transport gets the same events from the same resume
logic.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson
from aiohttp import web
from aiokafka import TopicPartition

from eventlog.experiments import NONE as NO_EXPERIMENTS
from eventlog.experiments import Experiments, variants_of_envelope
from eventlog.index import StreamInfo
from eventlog.logcontext import bind as bind_log_context
from eventlog.reader import LogReader
from gateway import resume, sse
from gateway.analytics_recorder import Recorder
from gateway.catchup import backlog, from_memory
from gateway.compression import Codings
from gateway.delivery import Delivery, Shaper
from gateway.hub import Frame, Hub, Row, Subscriber
from gateway.lookup import StreamLookup
from gateway.metrics import Metrics
from gateway.transport import Transport
from schemas import events
from schemas.context import StreamContext, context_of_envelope
from schemas.eventid import EventId, InvalidEventId, encode_event_id

log = logging.getLogger(__name__)

SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
#: On every answer whose body depends on the client's ``Accept-Encoding`` while
#: compression is on (identity ones too, RFC 9110 section 12.5.5).
VARY: Final = {"Vary": "Accept-Encoding"}
CUT_OFF_REASON: Final = sse.frame_comment(
    "closing: this client fell behind; reconnect with Last-Event-ID to resume")
#: How often a subscriber that overflowed may catch up again before it is cut off.
_MAX_CATCHUP_ROUNDS: Final = 8
#: A stream created longer ago than this is not a user waiting on a new answer: its
#: first event is not counted in ``tidemark_first_event_seconds``.
FIRST_EVENT_WINDOW_MS: Final = 60_000
#: At most about this many bytes of frames per write (aiohttp's writer waits for the
#: socket after every 64 KiB): what a slow socket does not take yet stays in the
#: subscriber's bounded live buffer, where it can overflow and be coalesced, rather than
#: in a write that the watchdog sees stuck for as long as the reader needs to read it.
WRITE_BYTES: Final = 64 * 1024


class _EventStreamResponse(web.StreamResponse):
    """An SSE response whose headers go out with its first write (the retry line and
    the backlog), one send instead of two per connection. ``_send_headers_immediately``
    is aiohttp's own switch (``web.Response`` turns it off the same way); were it gone,
    headers would simply be sent at once again."""

    _send_headers_immediately = False


class SseTransport:
    """The SSE route's transport: the pipeline's bytes go to the response as they are."""

    name = "sse"

    def __init__(self, *, vary: bool = False) -> None:
        #: Whether answers say ``Vary: Accept-Encoding`` (compression is on: this
        #: client's answer is identity because of what it accepts).
        self.headers = {**SSE_HEADERS, **VARY} if vary else SSE_HEADERS

    async def open(self, session: Session) -> web.StreamResponse:
        response = _EventStreamResponse(
            status=200, headers={**self.headers, "Tidemark-Gateway": session.gateway_id})
        await response.prepare(session.request)
        return response

    async def write(self, session: Session, data: bytes) -> None:
        assert session.response is not None
        await session.response.write(data)

    def idle(self, session: Session) -> None:
        """Nothing to do while an SSE response waits."""

    def last_words(self, data: bytes) -> bytes:
        """``data`` as the last bytes of the body."""
        return data

    def drop_stuck(self, session: Session, grace_s: float) -> None:
        """The writer is parked on a full socket with every chunk handed over, so one
        more whole chunk (the reason) and the last chunk can follow what is queued. The
        connection then closes once the client reads it all, or is aborted after
        ``grace_s``, so its buffers are freed either way."""
        transport = session.request.transport
        if transport is None or transport.is_closing():
            return
        reason = self.last_words(CUT_OFF_REASON)
        transport.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(reason), reason))
        transport.close()
        asyncio.get_running_loop().call_later(grace_s, transport.abort)


#: The transport of every SSE response (it holds no state) while compression is off...
SSE: Final = SseTransport()
#: ... and of identity answers while it is on.
SSE_VARY: Final = SseTransport(vary=True)


class CompressedSseTransport(SseTransport):
    """An SSE response compressed for its client: every write is compressed and flushed
    (``gateway.compression``), so the client decodes each event as it comes; the
    compressed stream is finished with the response."""

    def __init__(self, codings: Codings, coding: str) -> None:
        super().__init__(vary=True)
        self.headers = {**self.headers, "Content-Encoding": coding}
        self.encoder = codings.encoder(coding)
        self.finished = False

    async def open(self, session: Session) -> web.StreamResponse:
        response = _CompressedEventStreamResponse(
            self, status=200, headers={**self.headers, "Tidemark-Gateway": session.gateway_id})
        await response.prepare(session.request)
        return response

    async def write(self, session: Session, data: bytes) -> None:
        assert session.response is not None
        if self.finished:  # cut off (see drop_stuck): the stream is over
            raise ConnectionResetError("the compressed stream has ended")
        await session.response.write(self.encoder.compress(data))

    def last_words(self, data: bytes) -> bytes:
        if self.finished:
            return b""
        self.finished = True
        return self.encoder.compress(data) + self.encoder.finish()


class _CompressedEventStreamResponse(_EventStreamResponse):
    """Ends the compressed stream before the response (gzip's trailer, brotli's last
    block)."""

    def __init__(self, sse: CompressedSseTransport, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._sse = sse

    async def write_eof(self, data: bytes = b"") -> None:
        if self.prepared:
            data = self._sse.last_words(data)
        await super().write_eof(data)


def sse_transport(codings: Codings, accept_encoding: str | None) -> SseTransport:
    """The transport of an SSE response to a client that sent ``accept_encoding``."""
    if not codings.enabled:
        return SSE
    coding = codings.choose(accept_encoding)
    return SSE_VARY if coding is None else CompressedSseTransport(codings, coding)


@dataclass(slots=True)
class Cursor:
    """What this response has written so far."""

    offset: int
    seq: int = -1
    written: int = 0
    ended: bool = False
    #: The last take stopped at its budget: ``frames`` may hold more (what it did not
    #: pull from them is left there).
    more: bool = False

    def had(self, offset: int, seq: int, terminal: bool) -> bool:
        """Whether the client has the frame already (at or below this offset or seq). A
        terminal one it has (a resume by seq on another cluster's copy of the log, whose
        offsets differ) ends the response: nothing comes after it."""
        if offset <= self.offset:
            return True
        if seq <= self.seq:
            self.ended = self.ended or terminal
            return True
        return False

    def take(self, frames: Iterable[Row], budget: int = 0) -> tuple[bytes, int]:
        """The bytes of the frames not written yet (above this offset and seq; nothing
        after a terminal event) joined for one write, and how many; advances over them.
        With a ``budget`` it stops once it took that many bytes (see :attr:`more`)."""
        out: list[bytes] = []
        size = 0
        self.more = False
        for offset, _, seq, terminal, data in frames:
            if self.ended:
                break
            if self.had(offset, seq, terminal):
                continue
            out.append(data)
            self.offset, self.seq = offset, seq
            self.ended = terminal
            size += len(data)
            if budget and size >= budget:
                self.more = True
                break
        self.written += len(out)
        return (out[0] if len(out) == 1 else b"".join(out)), len(out)


@dataclass(slots=True)
class ShapedCursor(Cursor):
    """A cursor whose frames pass through a :class:`gateway.delivery.Shaper` (a
    subscriber that filters metadata or batches partial results). Frames the shaper
    holds count as taken (the position moves over them) and are written by a later
    take: ``wake`` is called at the shaper's deadline so that one comes."""

    shaper: Shaper = field(default_factory=lambda: Shaper(Delivery()))
    wake: Callable[[], None] = lambda: None
    #: The wake-up and the loop time it is for. A deadline already past gets a plain
    #: ``Handle`` from uvloop's ``call_at`` (it calls soon), which has no ``when()``.
    _timer: asyncio.Handle | None = None
    _timer_at: float | None = None

    def take(self, frames: Iterable[Row], budget: int = 0) -> tuple[bytes, int]:
        rows: list[Row] = []
        size = 0
        self.more = False
        for row in frames:
            if self.ended:
                break
            offset, _, seq, terminal, data = row
            if self.had(offset, seq, terminal):
                continue
            rows.append(row)
            self.offset, self.seq = offset, seq
            self.ended = terminal
            size += len(data)
            if budget and size >= budget:
                self.more = True
                break
        loop = asyncio.get_running_loop()
        data, count = self.shaper.shape(rows, loop.time())
        self.written += count
        deadline = self.shaper.deadline
        if deadline is not None and (self._timer is None or self._timer_at != deadline):
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._fire)
            self._timer_at = deadline
        return data, count

    def _fire(self) -> None:
        # Fired: the next take re-arms it if the shaper still holds frames (uvloop's
        # clock is read once per loop iteration, so a wake-up may come a moment early).
        self._timer = self._timer_at = None
        self.wake()

    @classmethod
    def continuing(cls, cursor: Cursor, shaper: Shaper,
                   wake: Callable[[], None]) -> ShapedCursor:
        """A cursor that goes on where ``cursor`` is (its position and count) with
        ``shaper``; ``cursor`` must hold nothing (a shaped one that does not batch), and
        is closed."""
        if isinstance(cursor, ShapedCursor):
            assert not cursor.shaper.held, "a batching cursor is not replaced"
            cursor.close()
        return cls(cursor.offset, cursor.seq, cursor.written, cursor.ended, shaper=shaper,
                   wake=wake)

    def flush(self) -> tuple[bytes, int]:
        """What the shaper holds, now."""
        data, count = self.shaper.flush()
        self.written += count
        return data, count

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None


@dataclass(slots=True)
class Session:
    """Everything one response needs (on any transport: see ``transport``)."""

    request: web.Request
    stream_id: str
    lookup: StreamLookup
    hub: Hub
    reader: LogReader
    metrics: Metrics
    heartbeat_s: float
    retry_ms: int
    max_response_s: float
    idle_timeout_s: float
    gateway_id: str
    closing: asyncio.Event
    registry: set[Session]
    #: How this subscriber wants the events (see ``gateway.delivery``); resolved against
    #: the stream's context by :func:`serve`, and batched from the moment the subscriber
    #: falls behind (see :func:`_coalesce_from_now`).
    prefs: Delivery = field(default_factory=Delivery)
    #: ``TIDEMARK_LAG_COALESCE``: a subscriber that falls behind is batched from then on.
    lag_coalesce: bool = True
    #: ``TIDEMARK_SLOW_SOCKET_SECONDS``: a subscriber whose socket has held unsent data
    #: this long (see :meth:`_watch_socket`) counts as fallen behind (0: only overflows).
    slow_socket_s: float = 0.0
    #: ``TIDEMARK_CLIENT_SEND_BUFFER_BYTES``: the client socket's ``SO_SNDBUF`` (0: the
    #: kernel's own; see :func:`_bound_send_buffer`).
    send_buffer_bytes: int = 0
    #: The listening socket has ``send_buffer_bytes`` already, and Linux gives an
    #: accepted socket its listener's buffer sizes: nothing to set per connection.
    listener_bounded: bool = False
    #: The A/B experiments' definitions (a stream's variants may change its delivery).
    experiments: Experiments = NO_EXPERIMENTS
    #: This subscriber's ``: ping`` interval is shorter than the one every subscriber
    #: is woken for (``Services.pace``): it wakes itself too.
    own_pace: bool = False
    #: The stream, once resolved (see :func:`serve`).
    info: StreamInfo | None = None
    response: web.StreamResponse | None = None
    cursor: Cursor = field(default_factory=lambda: Cursor(-1))
    #: When the handler began (``time.monotonic``), for ``tidemark_resume_seconds``.
    arrived: float = field(default_factory=time.monotonic)
    #: Set while this response is to count the stream's first generated event (seq 1)
    #: in ``tidemark_first_event_seconds`` once it writes it.
    first_pending: bool = False
    #: When the write in progress began (loop time), or None: the watchdog cuts off a
    #: client whose socket has not accepted a write for too long.
    write_started: float | None = None
    #: Set once this client is counted as cut off (:meth:`count_cut_off`), and once the
    #: watchdog has dropped it: its handler may take up to the grace period to finish,
    #: and neither is done again on every tick of that.
    cut_off: bool = False
    dropped: bool = False
    sub: Subscriber | None = None
    last_write: float = 0.0
    #: Since when (loop time) the socket has held data it could not send, as the writes
    #: saw it; None while it sends everything it is given.
    backed_up_since: float | None = None
    #: Analytics observations of this process (first-event and resume latency, cut-offs).
    recorder: Recorder | None = None
    #: How what the pipeline writes goes out (see ``gateway.transport``); SSE unless
    #: the WebSocket or long-poll route says otherwise.
    transport: Transport = field(default_factory=lambda: SSE)
    #: The stream's partition, once resolved (see :attr:`tp`).
    _tp: TopicPartition | None = None

    def __hash__(self) -> int:
        return id(self)

    @property
    def needs_first_event(self) -> bool:
        """Whether serving needs the stream's first event (its context, its variants)."""
        return self.prefs.needs_context or self.experiments.change_delivery

    @property
    def key(self) -> bytes:
        return self.stream_id.encode()

    @property
    def tp(self) -> TopicPartition:
        tp = self._tp
        if tp is None:
            assert self.info is not None, "serve() resolves the stream first"
            tp = self._tp = TopicPartition(self.info.topic, self.info.partition)
        return tp

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        now = asyncio.get_running_loop().time()
        self.write_started = now
        await self.transport.write(self, data)
        self.write_started = None
        self.last_write = now

    def check_socket(self, now: float) -> None:
        """Called by the write watchdog every tick (``Services.pace``): a socket that has
        held what it was given for :attr:`slow_socket_s` in a row (a write of the
        pipeline waiting for it at each tick, or more than ``send_buffer_bytes``
        unsent, that is half its send buffer, in the kernel and the transport) belongs
        to a reader slower than the stream: it falls behind from now on
        (:func:`_coalesce_from_now`), long before its live buffer can overflow or a
        write waits ``TIDEMARK_CLIENT_WRITE_TIMEOUT``."""
        if not self.slow_socket_s or not self.lag_coalesce or self.prefs.batched:
            return
        if self.write_started is None and now - self.last_write >= self.slow_socket_s:
            self.backed_up_since = None  # not streaming: nothing to look at
            return
        if self.write_started is not None or self._unsent() > self.send_buffer_bytes:
            if self.backed_up_since is None:
                self.backed_up_since = self.write_started or now
            if now - self.backed_up_since >= self.slow_socket_s:
                log.debug("stream %s: a slow socket; coalescing", self.stream_id)
                _coalesce_from_now(self)
        else:
            self.backed_up_since = None

    def buffered(self) -> int:
        """Bytes this process holds for the client: its live feed in the hub and what its
        transport has not handed to the kernel (``tidemark_client_buffered_bytes``)."""
        transport = self.request.transport
        unsent = 0 if transport is None else transport.get_write_buffer_size()
        return unsent + (0 if self.sub is None else self.sub.buffered)

    def _unsent(self) -> int:
        """Bytes this client's socket holds that the client has not acknowledged: the
        transport's write buffer and, with a bounded send buffer, the kernel's queue
        (``TIOCOUTQ``, Linux's ``SIOCOUTQ``)."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            return 0
        unsent = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        if self.send_buffer_bytes and sock is not None:
            try:
                out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            except OSError:  # not a TCP socket
                return unsent
            unsent += int.from_bytes(out, sys.byteorder)
        return unsent

    def subscribe(self) -> int:
        """(Re)subscribe to the hub; return the offset from which the feed is complete."""
        self.unsubscribe()
        self.sub, until = self.hub.subscribe(self.tp, self.key)
        return until

    def unsubscribe(self) -> None:
        if self.sub is not None:
            self.hub.unsubscribe(self.sub)
            self.sub = None

    def drop_stuck(self, grace_s: float) -> bool:
        """End the response of a client whose socket stopped taking data (how: the
        transport's :meth:`~gateway.transport.Transport.drop_stuck`); False if it was
        already."""
        if self.dropped:
            return False
        self.dropped = True
        self.transport.drop_stuck(self, grace_s)
        return True

    def count_cut_off(self) -> None:
        """Count this client in ``tidemark_slow_client_cutoffs_total`` and the analytics,
        once whichever path cuts it off."""
        if not self.cut_off:
            self.cut_off = True
            self.metrics.cutoffs.inc()
            if self.recorder is not None:
                self.recorder.cutoff(self)

    def take(self, frames: Iterable[Row]) -> bytes:
        """The bytes of the frames not written yet, at most about :data:`WRITE_BYTES`
        (see :meth:`Cursor.take`), counted as delivered."""
        data, count = self.cursor.take(frames, WRITE_BYTES)
        if count:
            self.metrics.delivered.inc(count)
            if self.first_pending and self.cursor.seq >= 1:
                self.first_pending = False
                assert self.info is not None
                self.metrics.first_event.observe(
                    max(0.0, time.time() - self.info.created_at / 1000))
        return data

    async def send(self, frames: Iterable[Row], *, whole: bool = True) -> bool:
        """Write the frames not written yet, in writes of about :data:`WRITE_BYTES` (one
        ``send()`` to the socket each); with ``whole=False`` only the first such write,
        and return whether ``frames`` may hold more (what was not taken is left there)."""
        rows = iter(frames)
        while True:
            data = self.take(rows)
            more = self.cursor.more  # (a write may give the session a new cursor)
            if data:
                await self.write(data)
            if not more or not whole:
                return more


async def serve(session: Session, position: EventId | None) -> web.StreamResponse:
    began = asyncio.get_running_loop().time()
    info, context = await _resolve(session, position)
    session.info = info
    changes = session.experiments.changes(info.experiments)
    session.prefs = session.prefs.resolve(context, changes)
    if changes.heartbeat_s is not None:
        session.own_pace = changes.heartbeat_s < session.heartbeat_s
        session.heartbeat_s = changes.heartbeat_s
    hub, tp = session.hub, session.tp
    # (The stream is bound already: by the route, before the stream was resolved.)
    bind_log_context(partition=info.partition,
                     offset=position.offset if position is not None else None)
    epoch = await hub.epoch(info.topic)
    if position is not None and position.epoch == epoch and (
            position.partition == tp.partition and position.offset >= hub.position(tp)):
        # The client read this position through a gateway that is ahead of this one.
        await hub.wait_position(tp, position.offset + 1, timeout=3.0)
    log_start, log_end = await _bounds(session, info, position, epoch)
    plan = resume.plan(info, position, epoch=epoch, log_start=log_start, log_end=log_end)
    log.debug("stream %s: serving from offset %s (status %s, reset %s)", info.stream_id,
              plan.start, plan.status, plan.reset)
    if plan.status == 204:
        session.metrics.request_outcome["ended"].inc()
        return web.Response(status=204)
    session.cursor = Cursor(plan.after) if session.prefs.plain else _shaped(session, plan.after)
    session.cursor.seq = plan.seq
    until = session.subscribe()
    session.metrics.connections.inc()
    session.metrics.open_responses[session.transport.name].inc()
    session.registry.add(session)
    # The memory tail serves most resumes at once; only an older position needs the
    # Kafka reader (an async generator, read batch by batch).
    rows = from_memory(hub, tp, session.key, plan.start, until)
    items = None if rows is not None else backlog(hub, session.reader, tp, session.key,
                                                  plan.start, until)
    try:
        if items is not None:
            first = await anext(items, None)
        else:
            first = (rows, "memory") if rows else None
        if plan.seq >= 0:
            first, had_end = await _past_seq(first, items, plan.seq)
            if had_end:
                # Resumed by seq on a copy of the log: the client has the terminal event.
                session.metrics.request_outcome["ended"].inc()
                return web.Response(status=204)
        if plan.after >= 0 and plan.start == plan.after:
            # The client's position lies within the stream: the record there must be the
            # stream's own. It sets the seq baseline, and if it ends the stream the client
            # has everything.
            at = Frame._make(first[0][0]) if first is not None else None
            if at is None or at.offset != plan.after:
                if position is not None and position.offset < until:
                    raise InvalidEventId("Last-Event-ID is not a position of this stream")
            else:
                if at.terminal:
                    session.metrics.request_outcome["ended"].inc()
                    return web.Response(status=204)
                session.cursor.seq = at.seq
        _bound_send_buffer(session)
        session.response = await session.transport.open(session)
        session.metrics.request_outcome["resumed" if position is not None else "new"].inc()
        # The first generated event (seq 1) is counted by the response that writes it to
        # a client who asked from the start, while the stream is new.
        session.first_pending = session.cursor.seq < 1 and info.created_at > 0 and (
            time.time() * 1000 - info.created_at < FIRST_EVENT_WINDOW_MS)
        # The retry line, a reset notice and the first backlog batch in one write.
        head = [sse.frame_retry(session.retry_ms)]
        if plan.reset is not None:
            # The id of the earliest event served (a position with no seq if none is).
            row = first[0][0] if first is not None else None
            head.append(reset_frame(plan.reset, encode_event_id(
                epoch, tp.partition, plan.start if row is None else row[0],
                None if row is None else row[2])))
        head_rows = iter(first[0] if first is not None else ())
        if first is not None:
            session.metrics.backlog_source[first[1]].inc(len(first[0]))
            head.append(session.take(head_rows))
        more = session.cursor.more
        if session.recorder is not None:
            session.recorder.served(session, resumed=position is not None,
                                    source=None if first is None else first[1], began=began)
        await session.write(b"".join(head))
        if position is not None and first is not None:
            session.metrics.resume_source[first[1]].observe(
                time.monotonic() - session.arrived)
        if more:
            await session.send(head_rows)
        if items is not None:
            async for frames, source in items:
                if session.cursor.ended:
                    break
                session.metrics.backlog_source[source].inc(len(frames))
                await session.send(frames)
            await items.aclose()
        if await _keep_up(session, until):
            await _live(session)
        await session.response.write_eof()
        return session.response
    except ConnectionError:
        log.debug("client of stream %s went away", info.stream_id)
        return session.response or web.Response(status=204)
    finally:
        if items is not None:
            await items.aclose()
        if isinstance(session.cursor, ShapedCursor):
            session.cursor.close()
        session.unsubscribe()
        session.registry.discard(session)
        session.metrics.connections.dec()
        session.metrics.open_responses[session.transport.name].dec()


def _coalesce_from_now(session: Session) -> None:
    """The subscriber fell behind (its live buffer overflowed and :func:`_keep_up` is
    about to catch it up, or its socket is slow: see :meth:`Session._watch_socket`):
    from now on, for the rest of this response, its partial results are
    coalesced by the batched rule (``gateway.delivery``: the same events as
    ``update_frequency=batched``, each with the id of the last chunk it carries), so the
    catch-up and what follows need fewer, smaller writes. A metadata filter it asked for
    stays; a subscriber batched already is left as it is. The cursor's position carries
    over, so nothing is written twice or skipped."""
    if not session.lag_coalesce or session.prefs.batched:
        return
    session.prefs = replace(session.prefs, batched=True)
    session.cursor = ShapedCursor.continuing(session.cursor, Shaper(session.prefs),
                                             _waker(session))
    session.metrics.lag_coalesced.inc()


def _bound_send_buffer(session: Session) -> None:
    """Set the client socket's ``SO_SNDBUF`` to ``send_buffer_bytes`` (Linux doubles
    it, and stops autotuning it): left alone, the kernel lets a slow reader's send
    buffer grow to ``net.ipv4.tcp_wmem``'s maximum (4 MB here), which hides its lag
    from :meth:`Session._watch_socket` for as long as that takes to fill, and after
    which the socket is writable again only once about a third of it drained (over
    10 s for a 100 KB/s reader: the watchdog's cut-off). Nothing to do when the
    listening socket has it already (:func:`bound_listeners`, the usual case)."""
    if not session.send_buffer_bytes or session.listener_bounded:
        return
    transport = session.request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, session.send_buffer_bytes)
        except OSError as exc:  # not a TCP socket (a test's pipe): nothing to bound
            log.debug("SO_SNDBUF not set: %s", exc)


def bound_listeners(sockets: Iterable[Any], send_buffer_bytes: int) -> bool:
    """Give the listening ``sockets`` the clients' ``SO_SNDBUF`` (see
    :func:`_bound_send_buffer`), so that every accepted socket has it from the start
    (Linux copies a listener's buffer sizes, and their lock against autotuning, to the
    sockets it accepts): one system call per listener instead of one per connection.
    True when every listener took it."""
    done = False
    for sock in sockets:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
        except OSError as exc:
            log.warning("SO_SNDBUF not set on the listener (set per connection): %s", exc)
            return False
        done = True
    return done


def _waker(session: Session) -> Callable[[], None]:
    """What wakes the session's current subscriber (a catch-up subscribes anew)."""
    def wake() -> None:
        if session.sub is not None:
            session.sub.wakeup.set()
    return wake


async def _past_seq(first: tuple[list[Row], str] | None,
                    items: AsyncIterator[tuple[list[Row], str]] | None, seq: int,
                    ) -> tuple[tuple[list[Row], str] | None, bool]:
    """The backlog's first batch with events above ``seq`` (what a client resuming by seq
    lacks), reading on past the batches it has; and whether it has the stream's terminal
    event already (then nothing is left to send: 204, as on the home cluster)."""
    while first is not None:
        rows, source = first
        if any(row[3] and row[2] <= seq for row in rows):
            return None, True
        keep = [row for row in rows if row[2] > seq]
        if keep:
            return (keep, source), False
        first = await anext(items, None) if items is not None else None
    return None, False


def _shaped(session: Session, after: int) -> ShapedCursor:
    return ShapedCursor(after, shaper=Shaper(session.prefs), wake=_waker(session))


async def _resolve(session: Session, position: EventId | None,
                   ) -> tuple[StreamInfo, StreamContext | None]:
    """The stream as far as this request needs it, and its context when the request's
    preferences depend on it (then ``info.experiments`` holds its variants too).

    A client that resumes from a position the log still holds needs nothing but the
    id's partition (the record at the position is checked to be the stream's) and, if
    its query does not set every preference, the stream's first event: from the memory
    tail, else found by the lookup (a read from Kafka, cached; read before the backlog,
    not beside it: two reads of one partition at once on two pooled consumers were
    measured to stall for the fetch wait, 500 ms, on a quarter of such resumes). Other
    requests find the stream in the log (``gateway.lookup``), first event included.
    """
    lookup = session.lookup
    placed = lookup.placed(session.stream_id)
    if placed is not None and position is not None:
        await session.hub.attach(placed.topic)
        epoch = await session.hub.epoch(placed.topic)
        if position.epoch == epoch and position.partition == placed.partition and (
                position.offset >= placed.first_offset and position.offset >= await
                session.reader.log_start(placed.topic, placed.partition)):
            if not session.needs_first_event:
                return placed, None
            tail = session.hub.tails.get(TopicPartition(placed.topic, placed.partition))
            if tail is not None and tail.covers(placed.first_offset):
                # The memory tail holds everything from the id's floor on: the first
                # frame there is the stream's first event (a dictionary lookup).
                first = tail.first(session.key, placed.first_offset)
                if first is not None and first.seq == 0:
                    data = first.data
                    start = data.index(b"\ndata: ") + 7
                    envelope = data[start:data.index(b"\n", start)]
                    variants = variants_of_envelope(envelope)
                    return (placed.evolve(experiments=variants) if variants else placed,
                            context_of_envelope(envelope))
            found = await lookup.find(session.stream_id, allow_pending=True)
            return placed.evolve(experiments=found.info.experiments), found.context
    found = await lookup.find(session.stream_id, allow_pending=True)
    return found.info, found.context


async def _bounds(session: Session, info: StreamInfo, position: EventId | None,
                  epoch: str) -> tuple[int, int]:
    """The partition's (log start, log end) as far as the resume rules need them.

    The log start comes from a per-partition cache (at most a second old); when the
    read starts before what the hub has read, the hub's position stands for the log
    end. So a burst of reconnects costs Kafka one lookup per partition, not two per
    connection.
    """
    hub, tp = session.hub, session.tp
    start = info.first_offset
    if position is not None and position.epoch == epoch and position.partition == tp.partition:
        start = position.offset
    tail = hub.tails[tp]
    if start < tail.next_offset:
        return await session.reader.log_start(tp.topic, tp.partition), tail.next_offset
    log_start, log_end = await session.reader.bounds(tp.topic, tp.partition)
    return log_start, max(log_end, tail.next_offset)


def reset_frame(reason: str, earliest: str) -> bytes:
    """The in-band notice that the client's position could not be honoured."""
    return sse.frame_event(orjson.dumps({"reason": reason, "earliest": earliest}),
                           event=events.RESET)


async def _keep_up(session: Session, start: int) -> bool:
    """Make sure the live feed holds everything after what was written.

    If the subscriber's buffer overflowed (the client, or a burst, outran it), serve
    the gap again from the memory tail or Kafka and subscribe anew, a bounded number
    of times; a client still behind after that is cut off (and False returned). From
    the first overflow on, its partial results are coalesced (:func:`_coalesce_from_now`).
    """
    for _ in range(_MAX_CATCHUP_ROUNDS):
        sub = session.sub
        if session.cursor.ended or (sub is not None and not sub.overflowed):
            return True
        _coalesce_from_now(session)
        until = session.subscribe()
        async for frames, source in backlog(session.hub, session.reader, session.tp,
                                            session.key, start, until):
            session.metrics.backlog_source[source].inc(len(frames))
            await session.send(frames)
        start = until
    if session.cursor.ended:
        return True
    await _cut_off(session)
    return False


async def _cut_off(session: Session) -> None:
    session.count_cut_off()
    await session.write(CUT_OFF_REASON)


async def _close(session: Session, reason: str) -> None:
    """End a response that the client is to resume: what a shaped cursor holds first,
    so the client need not read it again."""
    data = sse.frame_comment(reason)
    if isinstance(session.cursor, ShapedCursor):
        held, count = session.cursor.flush()
        session.metrics.delivered.inc(count)
        data = held + data
    await session.write(data)


async def _live(session: Session) -> None:
    """Live frames until the stream ends. Every subscriber is woken twice per heartbeat
    interval (see ``Services.pace``), so idle connections need no timer of their own
    and none stays silent for a whole interval."""
    loop = asyncio.get_running_loop()
    began = last_event = loop.time()
    delivered = session.cursor.written
    while not session.cursor.ended:
        sub = session.sub
        assert sub is not None
        if session.closing.is_set():
            await _close(session, "closing: gateway shutting down; reconnect")
            return
        now = loop.time()
        if session.cursor.written != delivered:
            delivered, last_event = session.cursor.written, now
        if session.max_response_s and now - began >= session.max_response_s:
            # So that load balancers can move long streams: the client resumes at once.
            await _close(session, "closing: response lifetime reached; reconnect")
            return
        if session.idle_timeout_s and now - last_event >= session.idle_timeout_s:
            await session.write(sse.frame_comment("closing: no event for a while; reconnect"))
            return
        # What was queued since the last wake-up goes out in one write (of at most about
        # WRITE_BYTES: the rest waits in the live buffer for the next turn).
        more = await session.send(sub.drain(), whole=False)
        if session.cursor.ended:
            return
        if sub.overflowed:
            if not await _keep_up(session, session.cursor.offset + 1):
                return
            continue
        if more:
            continue
        if loop.time() - session.last_write >= session.heartbeat_s / 2:
            await session.write(sse.PING)
        session.transport.idle(session)
        if session.own_pace:
            await _wake(session, sub)
        else:
            await sub.wakeup.wait()  # no coroutine of ours on the idle stack


async def _wake(session: Session, sub: Subscriber) -> None:
    """Until the subscriber with a shorter ``: ping`` interval of its own (an A/B
    variant's ``heartbeatSeconds``) is woken: by the hub (an event), by the pace (twice
    per ``TIDEMARK_HEARTBEAT_SECONDS``), or by its own timer when its next ping is due
    (half that interval after its last write, as :func:`_live` decides). Every other
    subscriber just waits for its wake-up."""
    # A hair late: a timer may run up to the clock's resolution early.
    due = session.last_write + session.heartbeat_s / 2 + 0.005
    timer = asyncio.get_running_loop().call_at(due, sub.wakeup.set)
    try:
        await sub.wakeup.wait()
    finally:
        timer.cancel()
