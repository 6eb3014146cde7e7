"""The stream-id codec.

A stream id names a stream in URLs, Kafka keys and envelopes. Version 2 ids (the ones
Tidemark makes) also say where the stream lives, so any reader finds its events in the
log without asking a stream index first:

    s2-<partition>-<floor>-<created_ms>-<random>      e.g. s2-7-48213-1796170000123-9f2c…

- ``partition``: the events partition that holds every event of the stream;
- ``floor``: an offset of that partition at or below the stream's first event (the writer
  knew the partition had reached it before writing the first event, so the first record
  with this key at or after ``floor`` is the stream's first event);
- ``created_ms``: when the stream was created (ms since the epoch), which bounds how far
  past ``floor`` the first event can be;
- ``random``: 96 random bits, so ids cannot be guessed.

Version 1 ids (32 lowercase hex characters, made before self-describing ids existed) and
ids a backend service chose itself carry no location: readers resolve those through the
stream index. :func:`parse_stream_id` returns None for them.
"""

from __future__ import annotations

import re
import secrets
from typing import Final, NamedTuple

VERSION: Final = "s2"
_RANDOM_HEX: Final = 24
_ID_RE: Final = re.compile(
    r"s2-(0|[1-9][0-9]{0,4})-(0|[1-9][0-9]{0,18})-(0|[1-9][0-9]{0,15})-([0-9a-f]{24})")
#: Anything that starts like a version 2 id is reserved for them.
_RESERVED_RE: Final = re.compile(r"s[0-9]+-")
_MAX_PARTITION: Final = 99_999
_MAX_OFFSET: Final = 2**63 - 1


class StreamRef(NamedTuple):
    """What a version 2 stream id says about where its stream lives."""

    partition: int
    floor: int
    created_ms: int


def new_stream_id(*, partition: int, floor: int, created_ms: int,
                  random_part: str | None = None) -> str:
    """A version 2 id for a stream about to be written at or after ``floor``."""
    if not (0 <= partition <= _MAX_PARTITION and 0 <= floor <= _MAX_OFFSET
            and 0 <= created_ms < 10**16):
        raise ValueError(f"stream location out of range: partition={partition} "
                         f"floor={floor} created_ms={created_ms}")
    rand = random_part if random_part is not None else secrets.token_hex(_RANDOM_HEX // 2)
    stream_id = f"{VERSION}-{partition}-{floor}-{created_ms}-{rand}"
    if _ID_RE.fullmatch(stream_id) is None:
        raise ValueError(f"random part must be {_RANDOM_HEX} lowercase hex characters")
    return stream_id


def random_part(stream_id: str) -> str:
    """The random suffix of a version 2 id (placement hashes it)."""
    return stream_id.rsplit("-", 1)[1]


def parse_stream_id(stream_id: str) -> StreamRef | None:
    """The location a version 2 id carries; None for ids that carry none."""
    match = _ID_RE.fullmatch(stream_id)
    if match is None:
        return None
    partition, floor, created, _ = match.groups()
    if int(floor) > _MAX_OFFSET:
        return None
    return StreamRef(int(partition), int(floor), int(created))


def is_reserved(stream_id: str) -> bool:
    """True for ids of the self-describing form (which only Tidemark may make)."""
    return _RESERVED_RE.match(stream_id) is not None
