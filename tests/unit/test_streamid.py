"""The stream-id codec: self-describing (version 2) ids and the ids that carry no location."""

from __future__ import annotations

import uuid

import pytest

from schemas import events
from schemas.streamid import (
    StreamRef,
    is_reserved,
    new_stream_id,
    parse_stream_id,
    random_part,
)


def test_a_new_id_says_where_its_stream_lives() -> None:
    sid = new_stream_id(partition=7, floor=48213, created_ms=1796170000123)
    assert sid.startswith("s2-7-48213-1796170000123-")
    assert parse_stream_id(sid) == StreamRef(7, 48213, 1796170000123)
    assert len(random_part(sid)) == 24


def test_ids_are_valid_stream_ids_urls_and_kafka_keys() -> None:
    for partition, floor in [(0, 0), (99_999, 2**63 - 1), (11, 10**12)]:
        sid = new_stream_id(partition=partition, floor=floor, created_ms=1)
        assert events.is_valid_stream_id(sid), sid
        assert sid.isascii() and len(sid) <= 128
        assert all(c.isalnum() or c == "-" for c in sid)


def test_ids_are_not_guessable() -> None:
    ids = {new_stream_id(partition=0, floor=0, created_ms=0) for _ in range(1000)}
    assert len(ids) == 1000


def test_given_random_part_is_used_exactly() -> None:
    rand = "0123456789abcdef01234567"
    assert random_part(new_stream_id(partition=1, floor=2, created_ms=3,
                                     random_part=rand)) == rand


@pytest.mark.parametrize("kwargs", [
    {"partition": -1, "floor": 0, "created_ms": 0},
    {"partition": 100_000, "floor": 0, "created_ms": 0},
    {"partition": 0, "floor": -1, "created_ms": 0},
    {"partition": 0, "floor": 2**63, "created_ms": 0},
    {"partition": 0, "floor": 0, "created_ms": 10**16},
    {"partition": 0, "floor": 0, "created_ms": 0, "random_part": "XYZ"},
])
def test_out_of_range_parts_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        new_stream_id(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    uuid.uuid4().hex,                        # version 1: made before ids described themselves
    "my-own-id",                             # chosen by a backend service
    "s2-1-2-3",                              # too few parts
    "s2-01-2-3-0123456789abcdef01234567",    # leading zero
    "s2-1-2-3-0123456789ABCDEF01234567",     # uppercase random part
    "s2-1-2-3-0123456789abcdef0123456",      # short random part
    "s2-1-99999999999999999999-3-0123456789abcdef01234567",  # offset out of range
    "s3-1-2-3-0123456789abcdef01234567",     # another version
    "s2-1-2-3-0123456789abcdef01234567\n",
])
def test_ids_without_a_location_parse_to_none(text: str) -> None:
    assert parse_stream_id(text) is None


def test_the_self_describing_form_is_reserved() -> None:
    assert is_reserved(new_stream_id(partition=0, floor=0, created_ms=0))
    assert is_reserved("s9-anything")
    assert not is_reserved(uuid.uuid4().hex)
    assert not is_reserved("session-42")
