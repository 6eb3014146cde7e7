"""The event-id codec: what a client sends back as Last-Event-ID must parse to the
position (and seq) it was encoded from, and nothing else may parse. Version 2 ids carry
the event's seq; version 1 ids (handed out before it) still parse, to the same position."""

from __future__ import annotations

import re

import pytest

from schemas.errors import TidemarkError
from schemas.eventid import (
    EventId,
    ForeignEpoch,
    InvalidEventId,
    encode_event_id,
    parse_event_id,
)

MAX_OFFSET = 2**63 - 1
MAX_PARTITION = 99_999

MAX_SEQ = 2**31 - 1
POSITIONS = [
    ("5f3a9c21", 7, 48213, 12),
    ("00000000", 0, 0, 0),
    ("ffffffff", 0, 1, None),
    ("0123abcd", 11, MAX_OFFSET, MAX_SEQ),
    ("deadbeef", MAX_PARTITION, MAX_OFFSET, MAX_SEQ),
    ("a0b1c2d3", 10, 10, None),
]

#: RFC 3986 unreserved characters: no escaping in a URL query, a header or an SSE line.
UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")


Position = tuple[str, int, int, int | None]


@pytest.mark.parametrize("pos", POSITIONS)
def test_round_trip(pos: Position) -> None:
    text = encode_event_id(*pos)
    parsed = parse_event_id(text)
    assert parsed == EventId(*pos)
    assert (parsed.epoch, parsed.partition, parsed.offset, parsed.seq) == pos
    assert text.startswith("1-" if pos[3] is None else "2-")


@pytest.mark.parametrize("pos", POSITIONS)
def test_str_of_event_id_is_the_encoded_id(pos: Position) -> None:
    assert str(EventId(*pos)) == encode_event_id(*pos)
    assert str(parse_event_id(encode_event_id(*pos))) == encode_event_id(*pos)


@pytest.mark.parametrize("pos", POSITIONS)
def test_ids_are_short_ascii_and_need_no_escaping(pos: Position) -> None:
    text = encode_event_id(*pos)
    raw = text.encode("ascii")  # raises if not ASCII
    assert len(raw) < 64
    assert UNRESERVED.fullmatch(text), text


def test_distinct_positions_give_distinct_ids() -> None:
    ids = {encode_event_id(*p) for p in POSITIONS}
    assert len(ids) == len(POSITIONS)
    # Partition, offset and seq are not confused with each other.
    assert encode_event_id("5f3a9c21", 1, 23, 4) != encode_event_id("5f3a9c21", 12, 3, 4)
    assert encode_event_id("5f3a9c21", 1, 23, 4) != encode_event_id("5f3a9c21", 1, 2, 34)


def test_a_version_1_id_handed_out_before_the_upgrade_parses_to_its_position() -> None:
    assert parse_event_id("1-5f3a9c21-7-48213") == EventId("5f3a9c21", 7, 48213, None)
    assert parse_event_id("2-5f3a9c21-7-48213-3") == EventId("5f3a9c21", 7, 48213, 3)


GOOD = "2-5f3a9c21-7-48213-12"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "1",
        "1-5f3a9c21-7",
        "1-5f3a9c21-7-48213-1",
        "0-5f3a9c21-7-48213",
        "2-5f3a9c21-7-48213",
        "3-5f3a9c21-7-48213-1",
        "2-5f3a9c21-7-48213-01",
        "2-5f3a9c21-7-48213-",
        "2-5f3a9c21-7-48213--1",
        f"2-5f3a9c21-7-48213-{2**31}",
        "2-5f3a9c21-7-48213-12345678901",
        "2-5f3a9c21-7-48213-1-2",
        "v1-5f3a9c21-7-48213",
        "1-5F3A9C21-7-48213",
        "1-5f3a9C21-7-48213",
        "1-5f3a9c2-7-48213",
        "1-5f3a9c211-7-48213",
        "1-5f3a9g21-7-48213",
        "1-5f3a9c21-07-48213",
        "1-5f3a9c21-00-48213",
        "1-5f3a9c21-7-048213",
        "1-5f3a9c21-7-00",
        "1-5f3a9c21--7-48213",
        "1-5f3a9c21-7--48213",
        "1-5f3a9c21-+7-48213",
        "1-5f3a9c21-7-+48213",
        " " + GOOD,
        GOOD + " ",
        GOOD + "\n",
        GOOD + "\r\n",
        "\t" + GOOD,
        "1-5f3a9c21- 7-48213",
        "1_5f3a9c21_7_48213",
        "1-5f3a9c21-7-4.8",
        "1-5f3a9c21-\u0667-48213",  # ARABIC-INDIC DIGIT SEVEN
        "1-5f3a9c21-7-" + "9" * 60,
        "x" * 64,
        GOOD + "-" + "0" * 64,
        f"1-5f3a9c21-7-{2**63}",
        f"1-5f3a9c21-7-{10**19 - 1}",
        "1-5f3a9c21-100000-0",
        "1-5f3a9c21-999999-0",
    ],
)
def test_malformed_ids_are_rejected(text: str) -> None:
    with pytest.raises(InvalidEventId):
        parse_event_id(text)


def test_invalid_event_id_is_a_tidemark_error() -> None:
    assert issubclass(InvalidEventId, TidemarkError)
    assert issubclass(ForeignEpoch, TidemarkError)


def test_bounds_are_inclusive() -> None:
    assert parse_event_id(f"1-5f3a9c21-{MAX_PARTITION}-{MAX_OFFSET}") == EventId(
        "5f3a9c21", MAX_PARTITION, MAX_OFFSET
    )


def test_check_epoch_same_epoch_returns_the_id() -> None:
    event_id = parse_event_id(GOOD)
    assert event_id.check_epoch("5f3a9c21") == event_id


def test_check_epoch_other_epoch_raises_foreign_epoch() -> None:
    event_id = parse_event_id(GOOD)
    with pytest.raises(ForeignEpoch):
        event_id.check_epoch("5f3a9c22")


@pytest.mark.parametrize(
    ("partition", "offset"),
    [(-1, 0), (0, -1), (MAX_PARTITION + 1, 0), (0, MAX_OFFSET + 1), (-5, -5)],
)
def test_encode_rejects_out_of_range_positions(partition: int, offset: int) -> None:
    with pytest.raises(ValueError):
        encode_event_id("5f3a9c21", partition, offset, 1)
    with pytest.raises(ValueError):
        encode_event_id("5f3a9c21", partition, offset, None)


@pytest.mark.parametrize("seq", [-1, MAX_SEQ + 1])
def test_encode_rejects_an_out_of_range_seq(seq: int) -> None:
    with pytest.raises(ValueError):
        encode_event_id("5f3a9c21", 0, 0, seq)


@pytest.mark.parametrize(
    "epoch",
    [
        "",
        "5f3a9c2",
        "5f3a9c211",
        # Eight characters, but not eight lowercase hex digits: the codec would write an
        # id that its own parser rejects (or, for "\n", one that breaks the SSE id line).
        "5F3A9C21",
        "zzzzzzzz",
        "ab-cd-ef",
        "5f3a9c2\n",
        "5f3a 9c2",
    ],
)
def test_encode_rejects_a_bad_epoch(epoch: str) -> None:
    with pytest.raises(ValueError):
        encode_event_id(epoch, 0, 0, 0)
