"""The stream-id codec: self-describing ids (version 3, and version 2 still read) and the
ids that carry no location."""

from __future__ import annotations

import uuid

import pytest

from schemas import events
from schemas.streamid import (
    StreamRef,
    belongs_to,
    is_reserved,
    new_stream_id,
    owner_of,
    parse_stream_id,
    random_part,
)

V2_ID = "s2-7-48213-1796170000123-0123456789abcdef01234567"


def _new(**kwargs: object) -> str:
    return new_stream_id(**{"tenant": "acme", **kwargs})  # type: ignore[arg-type]


def test_a_new_id_says_where_its_stream_lives() -> None:
    sid = _new(partition=7, floor=48213, created_ms=1796170000123)
    assert sid.startswith("s3-7-48213-1796170000123-")
    assert parse_stream_id(sid) == StreamRef(7, 48213, 1796170000123, 3)
    assert len(random_part(sid)) == 24


def test_version_2_ids_handed_out_before_still_parse() -> None:
    assert parse_stream_id(V2_ID) == StreamRef(7, 48213, 1796170000123, 2)
    assert random_part(V2_ID) == "0123456789abcdef01234567"
    assert belongs_to(V2_ID, "default", None) is None  # no tags: the index/default decides


def test_ids_are_valid_stream_ids_urls_and_kafka_keys() -> None:
    for partition, floor in [(0, 0), (99_999, 2**63 - 1), (11, 10**12)]:
        sid = _new(partition=partition, floor=floor, created_ms=9_999_999_999_999_999,
                   owner="u" * 200)
        assert events.is_valid_stream_id(sid), sid
        assert sid.isascii() and len(sid) <= 128
        assert all(c.isalnum() or c == "-" for c in sid)


def test_ids_are_not_guessable() -> None:
    ids = {_new(partition=0, floor=0, created_ms=0) for _ in range(1000)}
    assert len(ids) == 1000


def test_given_random_part_is_used_exactly() -> None:
    rand = "0123456789abcdef01234567"
    assert random_part(_new(partition=1, floor=2, created_ms=3, random_part=rand)) == rand


def test_an_id_says_whose_stream_it_is() -> None:
    sid = _new(partition=1, floor=2, created_ms=3, owner="alice")
    assert belongs_to(sid, "acme", "alice") is True
    assert belongs_to(sid, "acme", None) is True       # any owner (a tenant admin)
    assert belongs_to(sid, "acme", "bob") is False     # another user of the tenant
    assert belongs_to(sid, "other", "alice") is False  # another tenant, same user name
    assert belongs_to(sid, "other", None) is False


def test_a_tenant_wide_stream_belongs_to_every_user_of_its_tenant() -> None:
    sid = _new(partition=1, floor=2, created_ms=3)
    assert belongs_to(sid, "acme", "anyone") is True
    assert belongs_to(sid, "evil", "anyone") is False


def test_the_tags_tell_whom_a_stream_was_made_for() -> None:
    alices = _new(partition=1, floor=2, created_ms=3, owner="alice")
    everyones = _new(partition=1, floor=2, created_ms=3)
    assert owner_of(alices, "acme", "alice") == "alice"
    assert owner_of(alices, "acme", "bob") is None      # an admin's: it cannot tell
    assert owner_of(everyones, "acme", "bob") == ""     # the whole tenant's
    assert owner_of(alices, "other", "alice") is None
    assert owner_of("s2-1-2-3-0123456789abcdef01234567", "acme", "alice") is None
    assert owner_of("my-own-id", "acme", "alice") is None


def test_retagging_an_id_makes_another_stream_id() -> None:
    """Tags are not secret: anyone can compute the tags of their own tenant for a copied
    random part, but the result is another string, so another Kafka key: another stream."""
    theirs = _new(partition=1, floor=2, created_ms=3, tenant="victim", owner="v")
    mine = _new(partition=1, floor=2, created_ms=3, tenant="acme", owner="alice",
                random_part=random_part(theirs))
    assert mine != theirs and belongs_to(mine, "acme", "alice")
    assert belongs_to(theirs, "acme", "alice") is False


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
        _new(**kwargs)


@pytest.mark.parametrize("text", [
    "0f1e2d3c4b5a69788796a5b4c3d2e1f0",       # version 1: made before ids described themselves
    "my-own-id",                             # chosen by a backend service
    "s2-1-2-3",                              # too few parts
    "s2-01-2-3-0123456789abcdef01234567",    # leading zero
    "s2-1-2-3-0123456789ABCDEF01234567",     # uppercase random part
    "s2-1-2-3-0123456789abcdef0123456",      # short random part
    "s2-1-99999999999999999999-3-0123456789abcdef01234567",  # offset out of range
    "s3-1-2-3-0123456789abcdef01234567",     # version 3 without its tags
    "s2-1-2-3-0123456789abcdef01234567-0123456789abcdef",  # version 2 with tags
    "s3-1-2-3-0123456789abcdef01234567-0123456789ABCDEF",  # uppercase tags
    "s4-1-2-3-0123456789abcdef01234567-0123456789abcdef",  # another version
    "s2-1-2-3-0123456789abcdef01234567\n",
])
def test_ids_without_a_location_parse_to_none(text: str) -> None:
    assert parse_stream_id(text) is None


def test_the_self_describing_form_is_reserved() -> None:
    assert is_reserved(_new(partition=0, floor=0, created_ms=0))
    assert is_reserved("s9-anything")
    assert not is_reserved(uuid.uuid4().hex)
    assert not is_reserved("session-42")
