"""From a stream id to what the gateway needs to serve the stream, read from the log.

A self-describing id (``schemas.streamid``) names the stream's partition and a floor
offset below its first event, so a stream is found in the log itself: in the hub's
memory tail when the floor is recent (a dictionary lookup), else by a bounded read from
Kafka. Nothing here holds state per stream beyond bounded caches, so a gateway's memory
and start-up do not grow with the number of streams ever made, and a stream whose
create returned 201 is found through every gateway at once (its first event is in the
log before the 201; a first event not visible yet is waited for, never a 404).

Ids that carry no location (version 1 ids, made before self-describing ids, and ids a
backend service chose) are resolved through the stream index as before; that index is
read only once such an id is asked for, and holds only such streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, TypeVar

import orjson
from aiokafka import TopicPartition

from eventlog import index
from eventlog.errors import KafkaUnavailable, StreamGone, StreamNotFound
from eventlog.experiments import variants_of_envelope
from eventlog.index import StreamIndex, StreamInfo
from eventlog.locate import CREATE_WINDOW_MS, first_record
from eventlog.reader import LogReader
from eventlog.settings import KafkaSettings, LogSettings
from eventlog.streams import terminal_status
from eventlog.topics import events_topic, stream_topic
from gateway.hub import Frame, Hub
from schemas.context import StreamContext, context_of_envelope
from schemas.events import TERMINAL_TYPES
from schemas.streamid import StreamRef, parse_stream_id

log = logging.getLogger(__name__)

_UNKNOWN: Final = ""
#: On a mirror, how long before its creation time a stream's first record may be
#: stamped (its creator stamps it after taking the time: a margin, not a skew bound).
MIRROR_SLACK_MS: Final = 5_000
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class Found:
    """A stream as found in the log (or, for ids without a location, in the index)."""

    #: ``first_offset`` is the first event's offset; when retention has deleted the
    #: stream's first events it is an offset below the log start (the resume rules then
    #: announce a reset). ``generator`` is "" until read. ``status`` is not kept current
    #: here: :meth:`StreamLookup.current` reads it.
    info: StreamInfo
    #: The stream's first offset still held in the log.
    earliest: int
    ref: StreamRef | None
    #: Made a moment ago but not readable yet (another producer's open transaction
    #: holds the partition's last stable offset back): followed from the hub's
    #: position, where its first event will come; never cached.
    pending: bool = False
    #: The per-user context of its first event (``schemas.context``), if it has one.
    context: StreamContext | None = None


class StreamLookup:
    """Finds streams by id; bounded caches of what it found (facts that never change)."""

    def __init__(self, *, kafka: KafkaSettings, log_settings: LogSettings, hub: Hub,
                 reader: LogReader, wait_s: float, max_streams: int = 10_000) -> None:
        self._settings = log_settings
        self._hub = hub
        self._reader = reader
        self._wait_s = wait_s
        self._max = max_streams
        self._found: OrderedDict[str, Found] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._kafka = kafka
        self._legacy: StreamIndex | None = None
        self._legacy_task: asyncio.Task[None] | None = None
        self._legacy_lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._found)

    @property
    def legacy_streams(self) -> int:
        return 0 if self._legacy is None else len(self._legacy)

    def topic(self, stream_id: str) -> str:
        ns = self._settings.namespace
        if self._settings.placement == "topic-per-stream":
            return stream_topic(ns, stream_id)
        return events_topic(ns)

    async def find(self, stream_id: str, *, allow_pending: bool = False) -> Found:
        """The stream; :class:`StreamNotFound` or :class:`StreamGone` otherwise.

        A stream made a moment ago that this gateway cannot read yet (another producer's
        open transaction holds the partition's last stable offset back for longer than
        ``wait_s``) is returned as ``pending`` with ``allow_pending`` (an SSE client then
        follows it from the hub's position), else :class:`KafkaUnavailable` (503, retry).
        """
        ref = parse_stream_id(stream_id)
        if ref is None:
            return await self._find_in_index(stream_id)
        if stream_id in self._gone:
            raise StreamGone(f"stream {stream_id} has been deleted by retention")
        topic = self.topic(stream_id)
        if self._settings.placement == "partitioned" and ref.partition >= self._settings.partitions:
            raise StreamNotFound(f"no stream {stream_id!r}")
        await self._hub.attach(topic)
        tp = TopicPartition(topic, ref.partition)
        log_start = await self._reader.log_start(topic, ref.partition)
        cached = self._found.get(stream_id)
        if cached is not None and cached.earliest >= log_start:
            self._found.move_to_end(stream_id)
            return cached
        if self._settings.mirror_of:
            ref = await self._mirror_ref(ref, topic)
        found = await self._locate(stream_id, ref, tp, log_start)
        if found is None:
            # Not read by this gateway (yet?): wait, bounded, until its hub has read
            # everything acknowledged to writers so far, the first event of a stream
            # whose create answered 201 included; then the answer is exact.
            end = await self._reader.high_watermark(topic, ref.partition)
            if await self._hub.wait_position(tp, end, timeout=self._wait_s):
                found = await self._locate(stream_id, ref, tp, log_start)
                if found is None:
                    raise StreamNotFound(f"no stream {stream_id!r}")
            elif allow_pending:
                # Another producer's open transaction holds the last stable offset
                # back (a worker died mid-transaction): follow from the hub's position.
                position = self._hub.position(tp)
                info = _info(self._settings.namespace, topic, stream_id, ref,
                             first_offset=position, generator=_UNKNOWN)
                return Found(info, position, ref, pending=True)
            else:
                raise KafkaUnavailable(f"stream {stream_id} is not readable in the log yet")
        self._remember(self._found, stream_id, found)
        return found

    async def _mirror_ref(self, ref: StreamRef, topic: str) -> StreamRef:
        """On a MirrorMaker 2 copy of the log (``TIDEMARK_MIRROR_OF``) the id's floor is an
        offset of the home cluster, not of this copy, which keeps partitions, order and
        record timestamps but not offsets. The floor here: the first record written
        ``MIRROR_SLACK_MS`` before the stream was made, or later."""
        floor = await self._reader.offset_at_time(topic, ref.partition,
                                                  ref.created_ms - MIRROR_SLACK_MS)
        return ref._replace(floor=floor)

    def placed(self, stream_id: str) -> StreamInfo | None:
        """Without reading anything: the stream's partition and floor, from its id alone
        (enough to resume from a position of the stream that the log still holds). None
        on a mirror, whose offsets are not the id's."""
        ref = parse_stream_id(stream_id)
        if ref is None or self._settings.mirror_of or (
                self._settings.placement == "partitioned"
                and ref.partition >= self._settings.partitions):
            return None
        return _info(self._settings.namespace, self.topic(stream_id), stream_id, ref,
                     first_offset=ref.floor, generator=_UNKNOWN)

    async def _locate(self, stream_id: str, ref: StreamRef, tp: TopicPartition,
                      log_start: int) -> Found | None:
        """The stream as this gateway can see it now; None for a stream made a moment ago
        that it has not read (yet)."""
        key = stream_id.encode()
        ns = self._settings.namespace
        tail = self._hub.tails[tp]
        start = max(ref.floor, log_start)
        # (offset, seq, generator, envelope) of the stream's first record at or after
        # ``start``.
        first: tuple[int, int, str, bytes] | None = None
        if tail.covers(start):
            frame = tail.first(key, start)
            if frame is not None:
                first = (frame.offset, frame.seq, _UNKNOWN, _frame_envelope(frame))
        else:
            rec = await first_record(
                self._reader, tp.topic, tp.partition, key, start=start,
                until=self._hub.position(tp),
                not_after_ms=ref.created_ms + CREATE_WINDOW_MS if start == ref.floor else None)
            if rec is not None:
                first = (rec.offset, rec.seq, rec.generator or _UNKNOWN, rec.value)
        if first is not None:
            rec_offset, rec_seq, generator, envelope = first
            complete = start == ref.floor or rec_seq == 0
            info = _info(ns, tp.topic, stream_id, ref,
                         first_offset=rec_offset if complete else min(ref.floor, log_start - 1),
                         generator=generator)
            if rec_seq == 0:
                # Its A/B variants (``info.experiments``), as the first event records them.
                info = info.evolve(experiments=variants_of_envelope(envelope))
            return Found(info, rec_offset, ref,
                         context=context_of_envelope(envelope) if rec_seq == 0 else None)
        if ref.floor < log_start:
            self._remember(self._gone, stream_id, None)
            raise StreamGone(f"stream {stream_id} has been deleted by retention")
        if time.time() * 1000 - ref.created_ms < CREATE_WINDOW_MS:
            return None  # made a moment ago: perhaps not read here yet
        raise StreamNotFound(f"no stream {stream_id!r}")

    async def generator(self, found: Found) -> str:
        """Who writes the stream (from the ``tm-generator`` header of its first event)."""
        if found.info.generator != _UNKNOWN or found.ref is None:
            return found.info.generator
        info = found.info
        rec = await first_record(self._reader, info.topic, info.partition,
                                 info.stream_id.encode(), start=found.earliest,
                                 until=found.earliest + 1)
        if rec is None or rec.seq != 0:
            return "unknown"
        known = Found(info.evolve(generator=rec.generator or "unknown"), found.earliest,
                      found.ref, context=found.context)
        if info.stream_id in self._found:
            self._found[info.stream_id] = known
        return known.info.generator

    async def current(self, found: Found) -> StreamInfo:
        """The stream's status as of now (read-your-writes: everything written before this
        call is counted)."""
        if found.ref is None:
            assert self._legacy is not None
            info = await self._legacy.refresh(found.info.stream_id, timeout=self._wait_s)
            if info is None:
                raise StreamNotFound(f"no stream {found.info.stream_id!r}")
            return info
        info = found.info.evolve(generator=await self.generator(found))
        tp = TopicPartition(info.topic, info.partition)
        key = info.stream_id.encode()
        _, end = await self._reader.bounds(info.topic, info.partition)
        tail = self._hub.tails[tp]
        last: tuple[int, int, str, bytes] | None = None  # offset, seq, type, envelope
        if tail.covers(found.earliest) and await self._hub.wait_position(
                tp, end, timeout=self._wait_s):
            frame = tail.last(key)
            if frame is not None:
                last = (frame.offset, frame.seq, _frame_type(frame), _frame_envelope(frame))
        else:
            async with self._reader.open(info.topic, info.partition, found.earliest) as cursor:
                async for rec in cursor.records(until=end, key=key):
                    last = (rec.offset, rec.seq, rec.type, rec.value)
                    if rec.type in TERMINAL_TYPES:
                        break
        if last is None:
            return info.evolve(status=index.QUEUED, last_seq=0)
        offset, seq, kind, envelope = last
        updated = _envelope_ts(envelope) or info.created_at
        if kind in TERMINAL_TYPES:
            return info.evolve(status=terminal_status(kind), last_seq=seq,
                               terminal_offset=offset, updated_at=updated)
        return info.evolve(status=index.RUNNING if seq > 0 else index.QUEUED, last_seq=seq,
                           updated_at=updated)

    # --- ids without a location: the stream index ------------------------------------

    async def _find_in_index(self, stream_id: str) -> Found:
        legacy = await self._legacy_index()
        info = await legacy.lookup(stream_id, timeout=self._wait_s)
        if info is None:
            raise StreamNotFound(f"no stream {stream_id!r}")
        await self._hub.attach(info.topic)
        return Found(info, info.first_offset, None)

    async def alias(self, key: str) -> StreamInfo | None:
        """The record written under an alias key (``eventlog.index.put_alias``); on a miss
        it first waits (bounded) for the index to catch up with every write made before
        the call, so an alias written through another gateway is found. None when there
        is none; :class:`KafkaUnavailable` (503, retry) when the index is behind."""
        legacy = await self._legacy_index()
        info = legacy.get(key)
        if info is None:
            if not await legacy.sync(timeout=self._wait_s):
                raise KafkaUnavailable("the stream index is not read up to its end yet")
            info = legacy.get(key)
        return info

    async def _legacy_index(self) -> StreamIndex:
        async with self._legacy_lock:
            if self._legacy is None:
                legacy = StreamIndex(self._kafka, namespace=self._settings.namespace,
                                     keep=lambda key: parse_stream_id(key) is None)
                await legacy.start()
                self._legacy = legacy
                self._legacy_task = asyncio.create_task(legacy.run(), name="legacy-index")
                log.info("reading the stream index for stream ids without a location")
            return self._legacy

    async def stop(self) -> None:
        if self._legacy_task is not None:
            self._legacy_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._legacy_task
        if self._legacy is not None:
            await self._legacy.stop()
        self._legacy = self._legacy_task = None

    def _remember(self, cache: OrderedDict[str, _V], key: str, value: _V) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self._max:
            cache.popitem(last=False)


def _info(namespace: str, topic: str, stream_id: str, ref: StreamRef, *, first_offset: int,
          generator: str) -> StreamInfo:
    return StreamInfo(stream_id=stream_id, namespace=namespace, topic=topic,
                      partition=ref.partition, first_offset=first_offset, generator=generator,
                      status=index.RUNNING, created_at=ref.created_ms,
                      updated_at=ref.created_ms)


def _frame_type(frame: Frame) -> str:
    """The ``event:`` field of a framed event."""
    start = frame.data.index(b"\nevent: ") + 8
    return frame.data[start:frame.data.index(b"\n", start)].decode()


def _frame_envelope(frame: Frame) -> bytes:
    """The envelope (the ``data:`` line) of a framed event."""
    start = frame.data.index(b"\ndata: ") + 7
    return frame.data[start:frame.data.index(b"\n", start)]


def _envelope_ts(envelope: bytes) -> int | None:
    try:
        ts = orjson.loads(envelope).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return ts if isinstance(ts, int) else None
