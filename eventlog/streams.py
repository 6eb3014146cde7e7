"""Protocol-neutral operations on streams: create, scan, and append with a sequence.

A stream is a key in a partitioned events topic. Its events carry a per-stream
``seq`` from 0 with no gaps; writers take the next seq from what the log holds
(read_committed), so retries and takeovers never write a seq twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from eventlog import index, tracing
from eventlog.cache import CachePrefs
from eventlog.errors import KafkaUnavailable, SeqConflict, StreamEnded
from eventlog.index import StreamInfo
from eventlog.jobs import Job, send_job
from eventlog.placement import partition_for
from eventlog.reader import LogReader
from eventlog.settings import LogSettings
from eventlog.topics import events_topic, stream_topic_spec, wait_for_topics
from schemas import events, streamid
from schemas.context import StreamContext
from schemas.events import Event

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


async def send_event(producer: AIOKafkaProducer, topic: str, partition: int,
                     event: Event, *, generator: str | None = None,
                     tenant: str | None = None, owner: str | None = None,
                     trace: Sequence[tuple[str, bytes]] = tracing.NO_HEADERS,
                     ) -> asyncio.Future[Any]:
    """Queue one event on the producer; the returned future resolves to its metadata.

    ``generator``, ``tenant`` and ``owner`` go into the ``tm-generator``, ``tm-tenant``
    and ``tm-owner`` headers (a stream's first event only); ``trace`` are W3C trace
    context headers (``eventlog.tracing.headers``)."""
    headers = event.headers()
    headers.extend(trace)
    for name, value in ((events.HEADER_GENERATOR, generator),
                        (events.HEADER_TENANT, tenant), (events.HEADER_OWNER, owner)):
        if value is not None:
            headers.append((name, value.encode()))
    fut: asyncio.Future[Any] = await producer.send(
        topic, event.to_json(), key=event.stream.encode(), partition=partition,
        headers=headers)
    return fut


class LoggedInput(NamedTuple):
    """An ``input`` event a scan found: its seq, its input id (the ``tm-input`` header;
    None on an external stream's input) and its data."""

    seq: int
    input_id: str | None
    data: dict[str, Any]


@dataclass(slots=True)
class StreamState:
    """What a scan of the log found for one stream."""

    last_seq: int = -1
    terminal: str | None = None
    terminal_offset: int | None = None
    scanned_until: int = 0
    #: The stream's ``input`` events in seq order, when the scan was asked to collect
    #: them (None: not collected).
    inputs: list[LoggedInput] | None = None
    #: Collected with the inputs: whether the stream has an event after seq 0 that is
    #: not an input (its writer decided how to answer), and that event's
    #: ``tm-cache-source`` header (set: it replays that cached stream).
    answered: bool = False
    cache_source: bytes | None = None
    #: The ``tm-proc`` header of the last event content processors wrote (None: none).
    position: bytes | None = None

    def apply(self, rec_offset: int, rec_type: str, rec_seq: int) -> None:
        if rec_seq <= self.last_seq or self.terminal is not None:
            return
        self.last_seq = rec_seq
        if events.is_terminal(rec_type):
            self.terminal = rec_type
            self.terminal_offset = rec_offset


def _data_of(value: bytes) -> dict[str, Any]:
    """An envelope's ``data`` ({} for a record whose value is not one)."""
    try:
        data = orjson.loads(value).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


async def scan(reader: LogReader, info: StreamInfo, state: StreamState | None = None,
               *, inputs: bool = False) -> StreamState:
    """Bring ``state`` (or a new one) up to the partition's last stable offset;
    ``inputs``: a new state collects the stream's ``input`` events too."""
    state = state or StreamState(scanned_until=info.first_offset,
                                 inputs=[] if inputs else None)
    log_start, end = await reader.bounds(info.topic, info.partition)
    start = max(state.scanned_until, log_start)
    if start < end:
        async with reader.open(info.topic, info.partition, start) as cursor:
            async for rec in cursor.records(until=end, key=info.stream_id.encode()):
                if (state.inputs is not None and rec.seq > state.last_seq
                        and state.terminal is None):
                    if rec.type == events.INPUT:
                        state.inputs.append(
                            LoggedInput(rec.seq, rec.input_id, _data_of(rec.value)))
                    elif rec.seq > 0 and not state.answered:
                        state.answered = True
                        state.cache_source = rec.cache_source
                if rec.proc is not None and rec.seq > state.last_seq and state.terminal is None:
                    state.position = rec.proc
                state.apply(rec.offset, rec.type, rec.seq)
    state.scanned_until = max(state.scanned_until, end)
    return state


async def scan_from_start(reader: LogReader, info: StreamInfo, *, timeout_s: float = 30.0,
                          inputs: bool = False) -> StreamState:
    """:func:`scan` once the partition's readable end has passed the stream's first event.

    The first event was acknowledged before the stream's job was written, yet a reader can
    briefly see an end below it: a partition leader elected a moment ago reports its high
    watermark before its followers have caught up with it. A scan that stops there would
    take the stream for one without events and write its seq 0 again. Waits, bounded, then
    fails as :class:`KafkaUnavailable` (retriable). ``inputs``: as for :func:`scan`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    state = await scan(reader, info, inputs=inputs)
    while state.last_seq < 0 and state.scanned_until <= info.first_offset:
        if loop.time() > deadline:
            raise KafkaUnavailable(
                f"partition {info.topic}/{info.partition} does not show offset "
                f"{info.first_offset} (stream {info.stream_id}'s first event) after "
                f"{timeout_s:g}s")
        await asyncio.sleep(0.2)
        state = await scan(reader, info, state)
    return state


#: A lower bound of a partition's end offset (the offset the next record will get, or
#: less): ``await floor(topic, partition)``.
Floor = Callable[[str, int], Awaitable[int]]


class StreamCreator:
    """Creates streams: the first event, then the index record, then the job.

    The first event and the job record carry the current span's W3C trace context
    (``traceparent``) when there is one, so the stream's trace starts at its creator.

    Streams get self-describing ids (``schemas.streamid``): the id names the partition
    and a floor offset at or below the first event, taken before the first event is
    written, from ``floor`` and from this creator's own last write to the partition
    (whichever is higher; both only grow). A reader finds the stream from its id alone.
    An id the caller chooses (``stream_id=``) carries no location; readers resolve it
    through the stream index.
    """

    def __init__(self, settings: LogSettings, producer: AIOKafkaProducer, *,
                 floor: Floor, admin: AIOKafkaAdminClient | None = None) -> None:
        self._settings = settings
        self._producer = producer
        self._admin = admin
        self._floor = floor
        self._written: dict[tuple[str, int], int] = {}
        if settings.placement == "topic-per-stream" and admin is None:
            raise ValueError("topic-per-stream placement creates topics: pass an admin client")

    async def create(self, stream_id: str | None = None, *, generator: str,
                     query: str | None, options: dict[str, Any] | None,
                     with_job: bool, tenant: str, owner: str = "",
                     priority: bool = False,
                     context: StreamContext | None = None,
                     experiments: dict[str, str] | None = None,
                     cache: CachePrefs | None = None) -> StreamInfo:
        """A new stream of ``tenant``, owned by ``owner`` ("" : by the whole tenant).

        ``priority``: the job goes to the priority jobs topic (the caller's tier has
        ``priority``), whose jobs workers start before the others. ``context``: the
        creator's per-user context (kept in the first event, passed to the generator).
        ``experiments``: the A/B variants assigned to it (experiment -> variant), kept in
        the first event (``data.experiments``) and in the index record. ``cache``: the
        creator's similar-query cache preferences, for the worker."""
        ns = self._settings.namespace
        ts = now_ms()
        if self._settings.placement == "topic-per-stream":
            assert self._admin is not None
            stream_id = stream_id or streamid.new_stream_id(
                partition=0, floor=0, created_ms=ts, tenant=tenant, owner=owner)
            spec = stream_topic_spec(self._settings, stream_id)
            await self._admin.create_topics([spec])
            await wait_for_topics(self._admin._client, [spec.name])
            topic, partition = spec.name, 0
        else:
            topic = events_topic(ns)
            if stream_id is None:
                rand = secrets.token_hex(12)
                partition = partition_for(rand, self._settings.partitions)
                floor = max(await self._floor(topic, partition),
                            self._written.get((topic, partition), 0))
                stream_id = streamid.new_stream_id(
                    partition=partition, floor=floor, created_ms=ts, tenant=tenant,
                    owner=owner, random_part=rand)
            else:
                partition = partition_for(stream_id, self._settings.partitions)
        first_data: dict[str, Any] = {"state": index.QUEUED}
        if context is not None:
            first_data["context"] = context.to_json()
        if experiments:
            first_data["experiments"] = dict(experiments)
        first = Event(stream=stream_id, seq=0, type=events.STATUS, ts=ts, data=first_data)
        # The current trace (the create request's span), on the first event and the job.
        trace = tracing.headers()
        meta = await (await send_event(self._producer, topic, partition, first,
                                       generator=generator, tenant=tenant, owner=owner,
                                       trace=trace))
        key = (topic, partition)
        self._written[key] = max(self._written.get(key, 0), meta.offset + 1)
        info = StreamInfo(stream_id=stream_id, namespace=ns, topic=topic, partition=partition,
                          first_offset=meta.offset, generator=generator, status=index.QUEUED,
                          created_at=ts, updated_at=ts, last_seq=0, tenant=tenant,
                          owner=owner, experiments=dict(experiments or {}))
        # The index record is written before the job so that a worker's "running"
        # snapshot can never be overtaken by "queued".
        await index.put(self._producer, info)
        if with_job:
            job = Job(stream=info, query=query or "", options=options or {},
                      priority=priority, context=context, cache=cache or CachePrefs())
            await send_job(self._producer, job, partitions=self._settings.partitions,
                           trace=trace)
        return info


class Draft(NamedTuple):
    """An event to append: its type, data and (optional) the writer's seq."""

    type: str
    data: dict[str, Any]
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    written: list[tuple[int, int]]  # (seq, offset)
    duplicates: int
    last_seq: int
    terminal: str | None


class Appender:
    """Appends events to streams with per-stream sequence numbers.

    Keeps, for a bounded number of recently used streams, what the log holds (last
    seq, terminal event, how far it has been read); before each append it reads only
    what other writers have added since. A seq at or below the last one is a retry
    and is acknowledged without writing; a seq that leaves a gap is refused. One
    append per stream runs at a time in this process. The records carry the current
    span's W3C trace context (``traceparent``) when there is one.
    """

    def __init__(self, producer: AIOKafkaProducer, reader: LogReader, *,
                 max_streams: int = 10_000) -> None:
        self._producer = producer
        self._reader = reader
        self._states: OrderedDict[str, StreamState] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._max = max_streams

    @contextlib.asynccontextmanager
    async def _exclusive(self, stream_id: str) -> AsyncIterator[None]:
        """One operation per stream at a time; the lock is dropped when nobody waits."""
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(stream_id) is lock:
                del self._locks[stream_id]

    async def append(self, info: StreamInfo, drafts: Sequence[Draft]) -> AppendResult:
        async with self._exclusive(info.stream_id):
            return await self._append_locked(info, drafts)

    async def last_seq(self, info: StreamInfo) -> int:
        """The stream's last seq in the log (-1 for none)."""
        async with self._exclusive(info.stream_id):
            state = await scan(self._reader, info, self._states.pop(info.stream_id, None))
            self._remember(info.stream_id, state)
            return state.last_seq

    async def _append_locked(self, info: StreamInfo, drafts: Sequence[Draft]) -> AppendResult:
        state = self._states.pop(info.stream_id, None)
        state = await scan(self._reader, info, state)
        plan = self._plan(info, state, drafts)
        written: list[tuple[int, int]] = []
        trace = tracing.headers()  # the caller's current span, if any
        futures = [await send_event(self._producer, info.topic, info.partition, ev,
                                    trace=trace) for ev in plan]
        for ev, fut in zip(plan, futures, strict=True):
            meta = await fut
            written.append((ev.seq, meta.offset))
            state.apply(meta.offset, ev.type, ev.seq)
        if state.terminal is not None and plan and plan[-1].terminal:
            await index.put(self._producer, info.evolve(
                status=terminal_status(state.terminal), last_seq=state.last_seq,
                terminal_offset=state.terminal_offset, updated_at=now_ms()))
        self._remember(info.stream_id, state)
        return AppendResult(written=written, duplicates=len(drafts) - len(plan),
                            last_seq=state.last_seq, terminal=state.terminal)

    @staticmethod
    def _plan(info: StreamInfo, state: StreamState, drafts: Sequence[Draft]) -> list[Event]:
        last = state.last_seq
        ended = state.terminal is not None
        plan: list[Event] = []
        ts = now_ms()
        for draft in drafts:
            seq = last + 1 if draft.seq is None else draft.seq
            if seq <= last:
                continue  # a retry of something already written
            if ended:
                raise StreamEnded(f"stream {info.stream_id} has ended; nothing more is accepted")
            if seq != last + 1:
                raise SeqConflict(f"seq {seq} leaves a gap: the next seq is {last + 1}",
                                  expected=last + 1)
            ev = Event(stream=info.stream_id, seq=seq, type=draft.type, ts=ts, data=draft.data)
            plan.append(ev)
            last = seq
            ended = ev.terminal
        return plan

    def _remember(self, stream_id: str, state: StreamState) -> None:
        if state.terminal is not None:
            return
        self._states[stream_id] = state
        while len(self._states) > self._max:
            self._states.popitem(last=False)


def terminal_status(event_type: str) -> str:
    return {events.RESULT: index.COMPLETED, events.ERROR: index.FAILED,
            events.CANCELLED: index.CANCELLED}[event_type]
