"""The SSE event-id codec.

An event id is a position in the Kafka log: ``2-<epoch>-<partition>-<offset>-<seq>``,
e.g. ``2-5f3a9c21-7-48213-12``. ``2`` is the codec version; ``epoch`` is a short hash of
the Kafka topic id (so a deleted and recreated topic, whose offsets restart at 0, is
detected); ``partition`` and ``offset`` locate the record; ``seq`` is the event's seq in
its stream. The position is exact on the cluster that wrote it; the seq is what a reader
of another cluster's copy of the log needs (MirrorMaker 2 keeps partitions and order, not
offsets: docs/federation.md), and what it resumes from there.

Version 1 ids (``1-<epoch>-<partition>-<offset>``, before federation) are still read:
they resume exactly on their own cluster. Ids are ASCII, under 64 bytes, and need no
escaping in a header, a query string or an SSE ``id:`` line. Clients treat them as
opaque.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from schemas.errors import TidemarkError

VERSION: Final = "2"
MAX_LENGTH: Final = 63
_MAX_PARTITION: Final = 99_999
_MAX_OFFSET: Final = 2**63 - 1
_MAX_SEQ: Final = 2**31 - 1
_EPOCH_RE: Final = re.compile(r"[0-9a-f]{8}")
_V1: Final = r"1-([0-9a-f]{8})-(0|[1-9][0-9]{0,4})-(0|[1-9][0-9]{0,18})"
_V2: Final = r"2-([0-9a-f]{8})-(0|[1-9][0-9]{0,4})-(0|[1-9][0-9]{0,18})-(0|[1-9][0-9]{0,9})"
_ID_RE: Final = re.compile(f"{_V2}|{_V1}")
#: The form of an id as a JSON Schema ``pattern`` (the API document's resume parameters).
PATTERN: Final = f"^(?:{_V2}|{_V1})$"


class InvalidEventId(TidemarkError):
    """The text is not an event id this codec wrote."""


class ForeignEpoch(TidemarkError):
    """The id is well formed but names another incarnation of the topic."""


class EventId(NamedTuple):
    epoch: str
    partition: int
    offset: int
    #: The event's seq in its stream; None for a version 1 id (which has none).
    seq: int | None = None

    def __str__(self) -> str:
        if self.seq is None:
            return f"1-{self.epoch}-{self.partition}-{self.offset}"
        return f"{VERSION}-{self.epoch}-{self.partition}-{self.offset}-{self.seq}"

    def check_epoch(self, epoch: str) -> EventId:
        """Return self if it belongs to the topic incarnation ``epoch``."""
        if self.epoch != epoch:
            raise ForeignEpoch(f"event id is from topic epoch {self.epoch}, not {epoch}")
        return self


def encode_event_id(epoch: str, partition: int, offset: int, seq: int | None) -> str:
    """The id of the event at ``offset`` whose seq in its stream is ``seq``; None: a
    position that is no event's (version 1, e.g. a reset notice's earliest position)."""
    if not (0 <= partition <= _MAX_PARTITION and 0 <= offset <= _MAX_OFFSET):
        raise ValueError(f"position out of range: partition={partition} offset={offset}")
    if _EPOCH_RE.fullmatch(epoch) is None:
        raise ValueError(f"epoch must be 8 lowercase hex characters, got {epoch!r}")
    if seq is None:
        return f"1-{epoch}-{partition}-{offset}"
    if not 0 <= seq <= _MAX_SEQ:
        raise ValueError(f"seq out of range: {seq}")
    return f"{VERSION}-{epoch}-{partition}-{offset}-{seq}"


def parse_event_id(text: str) -> EventId:
    """Parse an event id; raise :class:`InvalidEventId` with a reason otherwise."""
    if len(text) > MAX_LENGTH:
        raise InvalidEventId(f"event id is longer than {MAX_LENGTH} characters")
    match = _ID_RE.fullmatch(text)
    if match is None:
        raise InvalidEventId("event id is not of the form 2-<epoch>-<partition>-<offset>-<seq> "
                             "(or version 1, 1-<epoch>-<partition>-<offset>)")
    groups = match.groups()
    if groups[0] is not None:
        epoch, partition, offset, seq = groups[:4]
        if int(seq) > _MAX_SEQ:
            raise InvalidEventId("event id seq is out of range")
    else:
        epoch, partition, offset = groups[4:]
        seq = None
    if int(offset) > _MAX_OFFSET:
        raise InvalidEventId("event id offset is out of range")
    return EventId(epoch, int(partition), int(offset), None if seq is None else int(seq))
