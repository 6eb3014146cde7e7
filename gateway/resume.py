"""The resume rules: from a stream's index record, the client's position and the
partition's bounds, decide how a request for the stream's events is answered."""

from __future__ import annotations

from dataclasses import dataclass

from eventlog.errors import StreamGone
from eventlog.index import StreamInfo
from schemas.eventid import EventId, InvalidEventId


@dataclass(frozen=True, slots=True)
class Plan:
    """How to serve one request."""

    #: 200 (stream events), or 204 (nothing more will come).
    status: int
    #: The first offset to read.
    start: int
    #: Deliver only records after this offset (the client's position), -1 for all.
    after: int = -1
    #: Why the client's position could not be honoured ("retention", "epoch"), if so.
    reset: str | None = None
    #: Deliver only events above this seq, -1 for all (a position of another cluster's
    #: copy of the log: its offsets are not this log's, its seq is the stream's).
    seq: int = -1


def plan(info: StreamInfo, position: EventId | None, *, epoch: str, log_start: int,
         log_end: int) -> Plan:
    """Apply the resume contract of ARCHITECTURE.md.

    Raises :class:`StreamGone` when retention has deleted every event of the stream,
    :class:`InvalidEventId` for a position that cannot be this stream's.
    """
    earliest = max(info.first_offset, log_start)
    if info.finished and info.terminal_offset is not None and info.terminal_offset < log_start:
        raise StreamGone(f"stream {info.stream_id} has been deleted by retention")
    if position is None:
        reset = "retention" if info.first_offset < log_start else None
        return Plan(200, earliest, reset=reset)
    if position.epoch != epoch:
        if position.seq is not None:
            # Another cluster's copy of the log, or a recreated topic: the offsets are
            # not this log's, the seq is still the stream's. From the stream's first
            # event still held, after the client's seq (a reset if retention took some).
            reset = "retention" if info.first_offset < log_start else None
            return Plan(200, earliest, reset=reset, seq=position.seq)
        return Plan(200, earliest, reset="epoch")
    if position.partition != info.partition:
        raise InvalidEventId("Last-Event-ID is a position of another stream")
    if info.finished and info.terminal_offset is not None and (
            position.offset >= info.terminal_offset):
        return Plan(204, position.offset, after=position.offset)
    if position.offset >= log_end:
        raise InvalidEventId("Last-Event-ID is ahead of the log")
    if position.offset < log_start:
        return Plan(200, earliest, reset="retention")
    if position.offset < info.first_offset:
        return Plan(200, info.first_offset, after=position.offset)
    return Plan(200, position.offset, after=position.offset)
