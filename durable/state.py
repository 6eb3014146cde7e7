"""What every gateway knows of every stream: the fold of the ``tidemark.<ns>.ds`` records.

:class:`Registry` applies records (:mod:`durable.records`) one at a time, in each
partition's order, and holds the resulting :class:`Stream` objects; it does no I/O. Two
gateways that have applied the same records hold the same state. Stream bytes are kept
in memory up to a budget; a record whose bytes were dropped keeps its place and size
and is read again from Kafka (:mod:`durable.view`).

A fork holds a reference to its source's :class:`Stream` (found by the position of the
source's create record, so the order in which partitions are read does not matter).
A deleted stream that forks still read is soft-deleted: it answers 410 and keeps its
records until its last fork is deleted, then it goes (and so on up the chain).

A fork is made in two steps, so that its source's partition orders it against the
source's deletion: its ``create`` record (``pend``) in its own partition, then a ``fork``
record in the source's partition, written only while the source lives, which confirms
it. A fork counts for its source (and answers) once both are applied, whatever order the
partitions are read in; a create whose ``fork`` record never came (its source was
deleted first, its gateway died) stays pending: absent, and its path free.

Memory is bounded for streams that went: a deleted stream (once its forks are gone) and
an expired one are dropped, with the records that listed their bytes. Expiry is decided
by each partition's clock, the newest ``ts`` of its records applied so far, not by the
wall clock: a stream is dropped once its partition's clock is :data:`EXPIRED_GRACE_MS`
past its expiry, so every gateway drops it after the same record, and a touch or append
a gateway accepted just before the expiry (its ``ts`` is before it) is never lost to a
gateway that applied it late. Until then it answers as absent (``durable.routes``), as
after. An expired stream that forks still read waits for its last fork to go.
"""

from __future__ import annotations

import bisect
import heapq
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from durable.offsets import ORIGIN, Position

#: How far past a stream's expiry its partition's clock must be before its state is
#: dropped: more than the clocks of two gateways may disagree, and than a write takes
#: from its check to its commit.
EXPIRED_GRACE_MS = 10 * 60 * 1000
#: Entries of records of dropped streams the memory budget's queue may hold before it is
#: compacted (and at most as many as the live ones).
_DEAD_ENTRIES = 1024


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class Rec:
    """One append (or a create's initial bytes) of a stream."""

    start: Position
    size: int
    #: None once the memory budget dropped them (read again from Kafka).
    data: bytes | None
    #: JSON messages in ``data`` (application/json streams), else 0.
    messages: int
    #: Bytes of the Kafka record's value before ``data`` (a fork's inherited prefix).
    skip: int = 0
    #: Bytes held outside the memory budget (never dropped).
    pinned: bool = False

    @property
    def end(self) -> Position:
        return Position(self.start.depth, self.start.partition, self.start.offset + 1)


@dataclass(eq=False, slots=True)
class Stream:
    key: str
    #: (partition, offset) of the create record: this incarnation of the key.
    gen: tuple[int, int]
    depth: int = 0
    content_type: str = "application/octet-stream"
    ttl_s: int | None = None
    expires_at_ms: int | None = None
    closed: bool = False
    closed_by: tuple[str, int, int] | None = None
    source: Stream | None = None
    fork_offset: Position | None = None
    #: Stream-Fork-Sub-Offset: how much of the record at the fork offset is inherited
    #: (its bytes are the first record of the fork's own, at the fork offset).
    fork_sub: int = 0
    records: list[Rec] = field(default_factory=list)
    starts: list[Position] = field(default_factory=list)
    tail: Position = ORIGIN
    producers: dict[str, tuple[int, int]] = field(default_factory=dict)
    stream_seq: str | None = None
    last_access_ms: int = 0
    created: bool = False
    soft_deleted: bool = False
    gone: bool = False
    forks: int = 0
    #: A fork whose source has not confirmed it (yet): absent.
    pending: bool = False
    #: A fork whose source's ``fork`` record is applied.
    confirmed: bool = False
    #: This fork is counted in its source's ``forks``.
    counted: bool = False
    #: Bumped by every change; live readers wait for it to move.
    version: int = 0
    #: Expired past the grace period while forks still read it: dropped with its last.
    lapsed: bool = False

    @property
    def partition(self) -> int:
        return self.gen[0]

    @property
    def is_json(self) -> bool:
        return is_json(self.content_type)

    def expired(self, at_ms: int) -> bool:
        deadline = self.deadline_ms()
        return deadline is not None and at_ms >= deadline

    def deadline_ms(self) -> int | None:
        """When it expires (its Expires-At, or its last access plus its TTL, the sooner);
        None: never."""
        ends = [] if self.expires_at_ms is None else [self.expires_at_ms]
        if self.ttl_s is not None:
            ends.append(self.last_access_ms + self.ttl_s * 1000)
        return min(ends) if ends else None

    def own_from(self, frm: Position) -> list[Rec]:
        """This stream's own records that start at or after ``frm``."""
        return self.records[bisect.bisect_left(self.starts, frm):]

    def segments(self, frm: Position) -> list[Rec]:
        """Every record a read from ``frm`` returns, inherited ones first."""
        out: list[Rec] = []
        if self.source is not None and self.fork_offset is not None and frm < self.fork_offset:
            out = [r for r in self.source.segments(frm) if r.start < self.fork_offset]
        return out + self.own_from(frm)


def refused(stream: Stream, meta: dict[str, Any]) -> bool:
    """An append record the check of its write (``durable.routes.append``) refuses on
    this very state: a producer's repeated or stale ``Producer-Seq``/``-Epoch``, a
    ``Stream-Seq`` that does not grow, an append to a closed stream. A checked write never
    is one; it reaches the log only through a hole in the lease (a transaction Kafka left
    undecided that a later one's marker committed, :mod:`durable.view`), and every
    gateway skips it alike, so a stream holds each producer's append once."""
    if stream.closed:
        return True
    pid = meta.get("pid")
    state = stream.producers.get(pid) if isinstance(pid, str) else None
    if state is not None:
        epoch, last = state
        ep, sq = int(meta["ep"]), int(meta["sq"])
        if ep < epoch or (ep == epoch and sq <= last):
            return True
    sseq = meta.get("sseq")
    return sseq is not None and stream.stream_seq is not None and str(sseq) <= stream.stream_seq


def is_json(content_type: str) -> bool:
    return media_type(content_type) == "application/json"


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class Registry:
    """Streams by key and by incarnation, and the bytes they hold in memory."""

    def __init__(self, *, cache_bytes: int) -> None:
        self.streams: dict[str, Stream] = {}
        self._by_gen: dict[tuple[int, int], Stream] = {}
        self._cache_bytes = cache_bytes
        self._held = 0
        self._held_recs: deque[Rec] = deque()
        #: The last offset applied per partition (to tell a stream that went from one
        #: whose create record is still to come).
        self._seen: dict[int, int] = {}
        #: Per partition: the newest record ts applied (its clock), and (deadline, gen)
        #: of the streams that may expire, soonest first (a deadline may have moved on).
        self._clock: dict[int, int] = {}
        self._expiring: dict[int, list[tuple[int, tuple[int, int]]]] = {}
        #: Entries of ``_held_recs`` and of ``_expiring`` whose stream was dropped.
        self._dead = 0
        self._dead_deadlines = 0
        #: Streams dropped because they expired.
        self.swept = 0

    def get(self, key: str) -> Stream | None:
        return self.streams.get(key)

    def unconfirmed(self, *keys: str) -> tuple[int, ...]:
        """The partitions whose ``fork`` records would confirm a pending fork among these
        streams and their sources (read them, and a fork is known as it is)."""
        out: set[int] = set()
        for key in keys:
            stream = self.streams.get(key)
            while stream is not None:
                if stream.pending and stream.source is not None:
                    out.add(stream.source.partition)
                stream = stream.source
        return tuple(sorted(out))

    def _incarnation(self, gen: tuple[int, int], key: str) -> Stream:
        stream = self._by_gen.get(gen)
        if stream is None:
            stream = self._by_gen[gen] = Stream(key=key, gen=gen)
        return stream

    def _other(self, gen: tuple[int, int], key: str) -> Stream:
        """The incarnation at ``gen`` named by a record of another stream: kept (a
        placeholder until its create record is applied), or, when that record was applied
        and the stream went since, a gone one that nothing keeps."""
        stream = self._by_gen.get(gen)
        if stream is None and self._seen.get(gen[0], -1) >= gen[1]:
            stream = Stream(key=key, gen=gen, gone=True)
        return stream if stream is not None else self._incarnation(gen, key)

    def apply(self, partition: int, offset: int, key: str, meta: dict[str, Any],
              value: bytes) -> Stream | None:
        """Fold one record; returns the stream it changed (None: nothing changed)."""
        self._seen[partition] = offset
        op = meta.get("op")
        ts = int(meta.get("ts", 0))
        if ts > self._clock.get(partition, 0):
            self._clock[partition] = ts
            self._sweep(partition)
        if op == "create":
            return self._create(partition, offset, key, meta, value, ts)
        stream = self.streams.get(key)
        if stream is None or stream.gone or stream.partition != partition:
            return None
        if op == "append":
            if refused(stream, meta):
                return None
            if value:
                self._add(stream, Position(stream.depth, partition, offset), value,
                          int(meta.get("n", 0)))
            stream.tail = Position(stream.depth, partition, offset + 1) if value \
                else stream.tail
            pid = meta.get("pid")
            if isinstance(pid, str):
                stream.producers[pid] = (int(meta["ep"]), int(meta["sq"]))
            if meta.get("sseq") is not None:
                stream.stream_seq = str(meta["sseq"])
            if meta.get("close"):
                stream.closed = True
                if isinstance(pid, str):
                    stream.closed_by = (pid, int(meta["ep"]), int(meta["sq"]))
            stream.last_access_ms = max(stream.last_access_ms, ts)
        elif op == "touch":
            stream.last_access_ms = max(stream.last_access_ms, ts)
        elif op == "fork":
            fgen = meta["fgen"]
            fork = self._other((int(fgen[0]), int(fgen[1])), str(meta["fork"]))
            if fork.gone or fork.confirmed:
                return None
            fork.confirmed = True
            fork.pending = False
            fork.counted = True
            stream.forks += 1
            fork.version += 1
        elif op == "delete":
            self._delete(stream)
        else:
            return None
        stream.version += 1
        return stream

    def _create(self, partition: int, offset: int, key: str, meta: dict[str, Any],
                value: bytes, ts: int) -> Stream:
        old = self.streams.get(key)
        if old is not None and not old.gone:
            # A create over a live stream happens only after it expired: drop it.
            self._delete(old)
            old.version += 1
        stream = self._incarnation((partition, offset), key)
        stream.created = True
        stream.content_type = str(meta.get("ct") or "application/octet-stream")
        stream.ttl_s = meta.get("ttl")
        stream.expires_at_ms = meta.get("exp")
        stream.last_access_ms = ts
        src = meta.get("srcgen")
        if src is not None:
            source = self._other((int(src[0]), int(src[1])), str(meta.get("src")))
            stream.source = source
            stream.depth = int(meta.get("depth", 0))
            stream.fork_offset = Position(*meta["fo"])
            stream.tail = stream.fork_offset
            stream.fork_sub = int(meta.get("sub", 0))
            if meta.get("pend"):
                stream.pending = not stream.confirmed
                if source.gone:  # deleted before this record: it never confirms the fork
                    stream.pending = True
            else:  # a fork made in one step (records of an earlier version)
                stream.counted = True
                source.forks += 1
        else:
            stream.tail = Position(0, partition, offset + 1)
        pre = int(meta.get("pre", 0))
        if stream.fork_sub and stream.fork_offset is not None:
            part = self._add(stream, stream.fork_offset, value[:pre], int(meta.get("pren", 0)),
                             pinned=True)
            stream.tail = part.end
            value = value[pre:]
        if value:
            self._add(stream, Position(stream.depth, partition, offset), value,
                      int(meta.get("n", 0))).skip = pre
            stream.tail = Position(stream.depth, partition, offset + 1)
        stream.closed = bool(meta.get("closed"))
        self.streams[key] = stream
        stream.version += 1
        deadline = stream.deadline_ms()
        if deadline is not None:
            heapq.heappush(self._expiring.setdefault(partition, []), (deadline, stream.gen))
        return stream

    def _sweep(self, partition: int) -> None:
        """Drop the partition's streams that expired :data:`EXPIRED_GRACE_MS` before its
        clock (a stream whose deadline moved on goes back in the queue)."""
        queue = self._expiring.get(partition)
        clock = self._clock[partition]
        while queue and queue[0][0] + EXPIRED_GRACE_MS <= clock:
            _, gen = heapq.heappop(queue)
            stream = self._by_gen.get(gen)
            if stream is None or stream.gone or stream.soft_deleted or stream.lapsed:
                continue
            deadline = stream.deadline_ms()
            if deadline is None:
                continue
            if deadline + EXPIRED_GRACE_MS > clock:
                heapq.heappush(queue, (deadline, gen))
            elif stream.forks > 0:
                stream.lapsed = True
            else:
                self.swept += 1
                self._drop(stream)
                stream.version += 1

    def _delete(self, stream: Stream) -> None:
        if stream.forks > 0:
            stream.soft_deleted = True
            return
        self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        """Forget a stream whose forks are all gone; then its source may go too."""
        stream.gone = True
        if self.streams.get(stream.key) is stream:
            del self.streams[stream.key]
        self._by_gen.pop(stream.gen, None)
        for rec in stream.records:
            if rec.data is not None and not rec.pinned:
                self._held -= rec.size
                rec.data = None
                self._dead += 1
        if self._dead > _DEAD_ENTRIES and 2 * self._dead > len(self._held_recs):
            self._held_recs = deque(r for r in self._held_recs if r.data is not None)
            self._dead = 0
        if stream.deadline_ms() is not None:
            self._dead_deadlines += 1
            if self._dead_deadlines > _DEAD_ENTRIES and 2 * self._dead_deadlines > sum(
                    len(q) for q in self._expiring.values()):
                self._requeue()
        source = stream.source
        if source is not None and stream.counted:
            source.forks -= 1
            if (source.soft_deleted or source.lapsed) and source.forks <= 0:
                self._drop(source)

    def _requeue(self) -> None:
        """The expiry queues again, from the streams held (a dropped stream's entry
        would otherwise wait for its deadline, which may be years away)."""
        self._expiring = {}
        for stream in self._by_gen.values():
            deadline = stream.deadline_ms()
            if deadline is not None and not stream.gone:
                self._expiring.setdefault(stream.partition, []).append((deadline, stream.gen))
        for queue in self._expiring.values():
            heapq.heapify(queue)
        self._dead_deadlines = 0

    def _add(self, stream: Stream, start: Position, data: bytes, messages: int, *,
             pinned: bool = False) -> Rec:
        """Add a record; ``pinned``: its bytes are not at its position in Kafka (a fork's
        inherited prefix), so they are never dropped from memory."""
        rec = Rec(start=start, size=len(data), data=data, messages=messages)
        stream.records.append(rec)
        stream.starts.append(start)
        if pinned:
            rec.pinned = True
            return rec
        self._held += rec.size
        self._held_recs.append(rec)
        while self._held > self._cache_bytes and self._held_recs:
            old = self._held_recs.popleft()
            if old.data is None:  # its stream was dropped
                self._dead -= 1
            else:
                old.data = None
                self._held -= old.size
        return rec
