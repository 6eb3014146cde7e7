"""The stream-id codec.

A stream id names a stream in URLs, Kafka keys and envelopes. Tidemark's ids also say
where the stream lives, so any reader finds its events in the log without asking a
stream index first, and (version 3) whom it belongs to, so a gateway can refuse another
tenant's or user's stream from the id alone, before it reads anything:

    s3-<partition>-<floor>-<created_ms>-<random>-<tags>    (version 3, made since 0.3)
    s2-<partition>-<floor>-<created_ms>-<random>           (version 2, still read)

- ``partition``: the events partition that holds every event of the stream;
- ``floor``: an offset of that partition at or below the stream's first event (the writer
  knew the partition had reached it before writing the first event, so the first record
  with this key at or after ``floor`` is the stream's first event);
- ``created_ms``: when the stream was created (ms since the epoch), which bounds how far
  past ``floor`` the first event can be;
- ``random``: 96 random bits, so ids cannot be guessed;
- ``tags`` (version 3): 16 hex characters, a 32-bit hash of (tenant, random) and a 32-bit
  hash of (tenant, owner, random). They are not secret and need no key: the id is the
  stream's Kafka key, so an id with other tags names another (non-existent) stream, and
  nobody can make an id of someone else's stream say it is theirs. A stream made for the
  whole tenant (no owner) has the owner tag of the empty owner.

Version 2 ids were made before tenants existed: their streams belong to the default
tenant. Version 1 ids (32 lowercase hex characters) and ids a backend service chose
itself carry no location: readers resolve those through the stream index, which also
records their tenant and owner. :func:`parse_stream_id` returns None for them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final, NamedTuple

VERSION: Final = "s3"
_RANDOM_HEX: Final = 24
_ID_RE: Final = re.compile(
    r"s([23])-(0|[1-9][0-9]{0,4})-(0|[1-9][0-9]{0,18})-(0|[1-9][0-9]{0,15})-([0-9a-f]{24})"
    r"(?:-([0-9a-f]{16}))?")
#: Anything that starts like a self-describing id is reserved for them.
_RESERVED_RE: Final = re.compile(r"s[0-9]+-")
_MAX_PARTITION: Final = 99_999
_MAX_OFFSET: Final = 2**63 - 1


class StreamRef(NamedTuple):
    """What a self-describing stream id says about where its stream lives."""

    partition: int
    floor: int
    created_ms: int
    #: 2 or 3.
    version: int = 3


def _tag(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=4,
                           person=b"tidemark-sid").hexdigest()


def _tags(tenant: str, owner: str, rand: str) -> str:
    return _tag("tenant", tenant, rand) + _tag("owner", tenant, owner, rand)


def new_stream_id(*, partition: int, floor: int, created_ms: int, tenant: str,
                  owner: str = "", random_part: str | None = None) -> str:
    """A version 3 id for a stream of ``tenant`` (and ``owner``; "" for the whole
    tenant) about to be written at or after ``floor``."""
    if not (0 <= partition <= _MAX_PARTITION and 0 <= floor <= _MAX_OFFSET
            and 0 <= created_ms < 10**16):
        raise ValueError(f"stream location out of range: partition={partition} "
                         f"floor={floor} created_ms={created_ms}")
    rand = random_part if random_part is not None else secrets.token_hex(_RANDOM_HEX // 2)
    stream_id = (f"{VERSION}-{partition}-{floor}-{created_ms}-{rand}-"
                 f"{_tags(tenant, owner, rand)}")
    if _ID_RE.fullmatch(stream_id) is None:
        raise ValueError(f"random part must be {_RANDOM_HEX} lowercase hex characters")
    return stream_id


def random_part(stream_id: str) -> str:
    """The random part of a self-describing id (placement hashes it)."""
    match = _ID_RE.fullmatch(stream_id)
    if match is None:
        raise ValueError(f"{stream_id!r} is not a self-describing stream id")
    return match.group(5)


def parse_stream_id(stream_id: str) -> StreamRef | None:
    """The location a self-describing id carries; None for ids that carry none."""
    match = _ID_RE.fullmatch(stream_id)
    if match is None:
        return None
    version, partition, floor, created, _, tags = match.groups()
    if (version == "3") != (tags is not None) or int(floor) > _MAX_OFFSET:
        return None
    return StreamRef(int(partition), int(floor), int(created), int(version))


def belongs_to(stream_id: str, tenant: str, owner: str | None) -> bool | None:
    """Whether a version 3 id was made for ``tenant`` and (unless ``owner`` is None: any
    owner) for ``owner`` or the whole tenant; None for ids without tags."""
    match = _ID_RE.fullmatch(stream_id)
    if match is None or match.group(6) is None:
        return None
    rand, tags = match.group(5), match.group(6)
    if tags[:8] != _tag("tenant", tenant, rand):
        return False
    if owner is None:
        return True
    return tags[8:] in (_tag("owner", tenant, owner, rand), _tag("owner", tenant, "", rand))


def owner_of(stream_id: str, tenant: str, sub: str) -> str | None:
    """Whom a version 3 id of ``tenant`` was made for: "" (the whole tenant) or ``sub``;
    None when it is neither (another user's stream, another tenant's, or no tags)."""
    if belongs_to(stream_id, tenant, None) is not True:
        return None
    tags = _ID_RE.fullmatch(stream_id).group(6)  # type: ignore[union-attr]
    rand = random_part(stream_id)
    for owner in ("", sub):
        if tags[8:] == _tag("owner", tenant, owner, rand):
            return owner
    return None


def is_reserved(stream_id: str) -> bool:
    """True for ids of the self-describing form (which only Tidemark may make)."""
    return _RESERVED_RE.match(stream_id) is not None
