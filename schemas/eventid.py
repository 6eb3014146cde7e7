"""The SSE event-id codec.

An event id is a position in the Kafka log: ``1-<epoch>-<partition>-<offset>``, e.g.
``1-5f3a9c21-7-48213``. ``1`` is the codec version; ``epoch`` is a short hash of the
Kafka topic id (so a deleted and recreated topic, whose offsets restart at 0, is
detected); ``partition`` and ``offset`` locate the record. Ids are ASCII, under 64
bytes, and need no escaping in a header, a query string or an SSE ``id:`` line.
Clients treat them as opaque.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from schemas.errors import TidemarkError

VERSION: Final = "1"
MAX_LENGTH: Final = 63
_MAX_PARTITION: Final = 99_999
_MAX_OFFSET: Final = 2**63 - 1
_EPOCH_RE: Final = re.compile(r"[0-9a-f]{8}")
_ID_RE: Final = re.compile(r"1-([0-9a-f]{8})-(0|[1-9][0-9]{0,4})-(0|[1-9][0-9]{0,18})")
#: The form of an id as a JSON Schema ``pattern`` (the API document's resume parameters).
PATTERN: Final = f"^{_ID_RE.pattern}$"


class InvalidEventId(TidemarkError):
    """The text is not an event id this codec wrote."""


class ForeignEpoch(TidemarkError):
    """The id is well formed but names another incarnation of the topic."""


class EventId(NamedTuple):
    epoch: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{VERSION}-{self.epoch}-{self.partition}-{self.offset}"

    def check_epoch(self, epoch: str) -> EventId:
        """Return self if it belongs to the topic incarnation ``epoch``."""
        if self.epoch != epoch:
            raise ForeignEpoch(f"event id is from topic epoch {self.epoch}, not {epoch}")
        return self


def encode_event_id(epoch: str, partition: int, offset: int) -> str:
    if not (0 <= partition <= _MAX_PARTITION and 0 <= offset <= _MAX_OFFSET):
        raise ValueError(f"position out of range: partition={partition} offset={offset}")
    if _EPOCH_RE.fullmatch(epoch) is None:
        raise ValueError(f"epoch must be 8 lowercase hex characters, got {epoch!r}")
    return f"{VERSION}-{epoch}-{partition}-{offset}"


def parse_event_id(text: str) -> EventId:
    """Parse an event id; raise :class:`InvalidEventId` with a reason otherwise."""
    if len(text) > MAX_LENGTH:
        raise InvalidEventId(f"event id is longer than {MAX_LENGTH} characters")
    match = _ID_RE.fullmatch(text)
    if match is None:
        raise InvalidEventId("event id is not of the form 1-<epoch>-<partition>-<offset>")
    epoch, partition, offset = match.groups()
    if int(offset) > _MAX_OFFSET:
        raise InvalidEventId("event id offset is out of range")
    return EventId(epoch, int(partition), int(offset))
