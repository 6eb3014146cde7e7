"""Per-subscriber delivery preferences: batched partial results, metadata filtered out.

A subscriber's preferences are its stream's (the ``context`` given at create, read from
the stream's first event) unless the request overrides them with the query parameters
``update_frequency=realtime|batched`` and ``include_metadata=true|false``. The stream's
A/B variants (``eventlog.experiments``) may set its default ``updateFrequency`` (below
both of those) and the batch interval (``coalesceMs``, instead of
``TIDEMARK_BATCH_INTERVAL_MS``). A subscriber
that wants every event as it comes (``realtime`` with metadata, the default) is served
exactly as before; the others get a :class:`Shaper`, which works on the frames the
hub gives (they are never changed, so every other subscriber and the log are
unaffected):

- ``include_metadata=false``: ``metadata`` events are not written.
- ``batched``: consecutive ``partial_result`` events are held and written as one SSE
  event once the first of them has waited the batch interval, or at once when any other
  event comes (that event then follows it, in order), when a held chunk says
  ``isComplete``, or when the batch reaches :data:`MAX_CHUNKS` chunks or
  :data:`MAX_BYTES` bytes. A coalesced event's ``id`` is the id of the last chunk it
  carries, so a resume from it continues right after that chunk; its envelope is a
  ``partial_result`` whose ``seq`` and ``ts`` are the last chunk's and whose ``data``
  is ``{"chunk": <the chunks joined>, "chunkIndex": <the first's>, "isComplete": <the
  last's, if it has one>, "chunkCount": n, "lastChunkIndex": <the last's>,
  "firstSeq": <the first's seq>}``. One chunk alone goes out as it is (byte for
  byte). Only chunks that are exactly ``{"chunk", "chunkIndex"[, "isComplete"]}`` with
  consecutive indexes are merged: any other ``partial_result`` (one that a publisher
  gave more fields) ends the batch and goes out as it is, so nothing a writer put in an
  event is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from eventlog.experiments import Changes
from gateway import sse
from gateway.hub import Row
from gateway.problems import Problem
from schemas import events
from schemas.context import BATCHED, REALTIME, StreamContext

#: A coalesced event carries at most this many chunks ...
MAX_CHUNKS: Final = 1000
#: ... and at most about this many bytes of held frames.
MAX_BYTES: Final = 256 * 1024

_PARTIAL: Final = b"event: " + events.PARTIAL_RESULT.encode() + b"\n"
_METADATA: Final = b"event: " + events.METADATA.encode() + b"\n"
_MERGEABLE: Final = frozenset({"chunk", "chunkIndex", "isComplete"})
_BOOLS: Final = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one subscriber gets its stream's events. ``None``: as the stream's context
    says (see :meth:`resolve`)."""

    batched: bool | None = None
    include_metadata: bool | None = None
    #: How long a partial result may be held for batching.
    interval_s: float = 0.25

    @classmethod
    def requested(cls, query: Mapping[str, str], *, interval_s: float) -> Delivery:
        """The overrides of a request's query (``update_frequency``, ``include_metadata``);
        a value other than the documented ones is a 400 problem."""
        batched = include = None
        freq = query.get("update_frequency")
        if freq is not None:
            if freq not in (REALTIME, BATCHED):
                raise Problem(400, f"update_frequency must be {REALTIME!r} or {BATCHED!r}, "
                              f"not {freq[:64]!r}", parameter="update_frequency")
            batched = freq == BATCHED
        meta = query.get("include_metadata")
        if meta is not None:
            if meta not in _BOOLS:
                raise Problem(400, f"include_metadata must be 'true' or 'false', "
                              f"not {meta[:64]!r}", parameter="include_metadata")
            include = _BOOLS[meta]
        return cls(batched, include, interval_s)

    @property
    def needs_context(self) -> bool:
        """Whether the stream's context decides part of it."""
        return self.batched is None or self.include_metadata is None

    def resolve(self, context: StreamContext | None,
                changes: Changes | None = None) -> Delivery:
        """Every part decided: this request's, else the stream's context, else (for
        ``updateFrequency``) its variants' ``changes``, else the default (``realtime``,
        metadata included). A variant's ``coalesceMs`` sets the batch interval."""
        interval = self.interval_s
        if changes is not None and changes.coalesce_ms is not None:
            interval = changes.coalesce_ms / 1000
        batched, include = self.batched, self.include_metadata
        if batched is None:
            freq = context.update_frequency if context is not None else None
            if freq is None and changes is not None:
                freq = changes.update_frequency
            batched = freq == BATCHED
        if include is None:
            include = context is None or context.include_metadata is not False
        return Delivery(batched, include, interval)  # not replace(): once per request

    @property
    def plain(self) -> bool:
        """Every event as it comes: the subscriber needs no :class:`Shaper`."""
        return not self.batched and self.include_metadata is not False


class _Held(NamedTuple):
    """A held partial result: its frame and what merging needs of its envelope."""

    row: Row
    envelope: dict[str, Any]
    chunk_index: int


def _event_line_at(data: bytes) -> int:
    """Where the ``event:`` line of a framed event starts (after its ``id:`` line)."""
    return data.index(b"\n") + 1


def _envelope_bytes(data: bytes) -> bytes:
    start = data.index(b"\ndata: ") + 7
    return data[start:data.index(b"\n", start)]


def _frame_id(data: bytes) -> str:
    return data[4:data.index(b"\n")].decode()


def _mergeable(envelope: Any) -> int | None:
    """The chunk index of a partial result that may be merged, else None."""
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, dict) or not _MERGEABLE.issuperset(data):
        return None
    index = data.get("chunkIndex")
    if not isinstance(data.get("chunk"), str) or not isinstance(index, int) or (
            isinstance(index, bool)):
        return None
    return index


class Shaper:
    """One subscriber's filter and coalescer (see the module docstring).

    :meth:`shape` gets the frames the response's cursor accepted, in order, and returns
    the bytes to write now and how many SSE events they are; partial results it holds
    are written by a later call once :attr:`deadline` (loop time) has passed, or by
    :meth:`flush`.
    """

    __slots__ = ("_batched", "_held", "_held_bytes", "_include_metadata", "_interval",
                 "deadline")

    def __init__(self, prefs: Delivery) -> None:
        self._batched = bool(prefs.batched)
        self._include_metadata = prefs.include_metadata is not False
        self._interval = prefs.interval_s
        self._held: list[_Held] = []
        self._held_bytes = 0
        #: When the held partial results are due (None: nothing held).
        self.deadline: float | None = None

    @property
    def held(self) -> int:
        """How many partial results are held."""
        return len(self._held)

    def shape(self, rows: Iterable[Row], now: float) -> tuple[bytes, int]:
        out: list[bytes] = []
        for row in rows:
            data = row[4]
            at = _event_line_at(data)
            if not self._include_metadata and data.startswith(_METADATA, at):
                continue
            if self._batched and data.startswith(_PARTIAL, at) and self._hold(row, now, out):
                continue
            self._flush_into(out)
            out.append(data)
        if self._held and self.deadline is not None and now >= self.deadline:
            self._flush_into(out)
        return b"".join(out), len(out)

    def flush(self) -> tuple[bytes, int]:
        """The held partial results as one event now (b"" when none are held)."""
        out: list[bytes] = []
        self._flush_into(out)
        return b"".join(out), len(out)

    def _hold(self, row: Row, now: float, out: list[bytes]) -> bool:
        """Hold a partial result (flushing the held ones into ``out`` first when it does
        not continue them); False for one that must go out as it is."""
        try:
            envelope = orjson.loads(_envelope_bytes(row[4]))
        except (orjson.JSONDecodeError, ValueError):
            return False
        index = _mergeable(envelope)
        if index is None:
            return False
        held = self._held
        if held and (index != held[-1].chunk_index + 1 or envelope.get("stream") != held[0]
                     .envelope.get("stream")):
            self._flush_into(out)
        if not held:
            self.deadline = now + self._interval
        held.append(_Held(row, envelope, index))
        self._held_bytes += len(row[4])
        if envelope["data"].get("isComplete") is True or len(held) >= MAX_CHUNKS or (
                self._held_bytes >= MAX_BYTES):
            self._flush_into(out)
        return True

    def _flush_into(self, out: list[bytes]) -> None:
        held = self._held
        if not held:
            return
        if len(held) == 1:
            out.append(held[0].row[4])
        else:
            out.append(coalesce(held))
        held.clear()
        self._held_bytes = 0
        self.deadline = None


def coalesce(held: list[_Held]) -> bytes:
    """The one SSE event that stands for consecutive partial results."""
    first, last = held[0], held[-1]
    last_data = last.envelope["data"]
    data: dict[str, Any] = {"chunk": "".join(h.envelope["data"]["chunk"] for h in held),
                            "chunkIndex": first.chunk_index}
    if "isComplete" in last_data:
        data["isComplete"] = last_data["isComplete"]
    data["chunkCount"] = len(held)
    data["lastChunkIndex"] = last.chunk_index
    data["firstSeq"] = first.row[2]
    envelope = {"stream": last.envelope.get("stream"), "seq": last.row[2],
                "type": events.PARTIAL_RESULT, "ts": last.envelope.get("ts"), "data": data}
    return sse.frame_event(orjson.dumps(envelope), event=events.PARTIAL_RESULT,
                           id=_frame_id(last.row[4]))
