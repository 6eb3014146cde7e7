"""The Durable Streams pieces free of I/O: offset tokens, the protocol's header rules, and
the fold of records into stream state (durable/offsets.py, protocol.py, state.py)."""

from __future__ import annotations

import itertools

import pytest

from durable import protocol as p
from durable.offsets import ORIGIN, Position, parse
from durable.state import EXPIRED_GRACE_MS, Registry


def test_offset_tokens_sort_as_their_positions_and_round_trip() -> None:
    positions = [Position(d, part, o) for d, part, o in itertools.product(
        (0, 1, 12), (0, 3, 11, 99999), (0, 1, 9, 10, 123456789012))]
    for a, b in itertools.combinations(positions, 2):
        assert (a.token() < b.token()) == (a < b)
    for pos in positions:
        assert parse(pos.token()) == pos
        assert not set(",&=?/") & set(pos.token())
    assert parse("now") is None and parse("-1") is None and parse("12_x") is None
    assert parse("0000000000000000_0000000000000000") == ORIGIN


def test_header_rules() -> None:
    assert p.flag("true") and p.flag("TRUE") and not p.flag("yes") and not p.flag(None)
    assert p.ttl_of("3600") == 3600
    for bad in ("+3600", "03600", "3600.0", "3.6e3", "-1", ""):
        with pytest.raises(p.BadRequest):
            p.ttl_of(bad)
    assert p.expires_of("2030-01-01T00:00:00Z") == 1893456000000
    with pytest.raises(p.BadRequest):
        p.expires_of("tomorrow")
    assert p.producer_of({}) is None
    assert p.producer_of({"Producer-Id": "a", "Producer-Epoch": "1", "Producer-Seq": "2"}) \
        == p.Producer("a", 1, 2)
    for headers in ({"Producer-Id": "a"}, {"Producer-Id": "", "Producer-Epoch": "0",
                                           "Producer-Seq": "0"},
                    {"Producer-Id": "a", "Producer-Epoch": str(2**53), "Producer-Seq": "0"}):
        with pytest.raises(p.BadRequest):
            p.producer_of(headers)


def test_json_mode_flattens_one_level_and_refuses_empty_appends() -> None:
    assert p.json_messages(b'{"a": 1}', allow_empty=False) == [b'{"a":1}']
    assert p.json_messages(b"[[1,2],[3]]", allow_empty=False) == [b"[1,2]", b"[3]"]
    assert p.json_messages(b"[]", allow_empty=True) == []
    for bad in (b"[]", b"{", b"NaN"):
        with pytest.raises(p.BadRequest):
            p.json_messages(bad, allow_empty=False)


def test_a_cursor_the_client_echoes_moves_forward() -> None:
    now = int(p.cursor(None))
    assert int(p.cursor(str(now))) > now
    assert int(p.cursor(str(now + 500))) > now + 500
    assert p.cursor("1") == str(now)


def _create(reg: Registry, part: int, off: int, key: str, **meta: object) -> None:
    reg.apply(part, off, key, {"op": "create", "ct": "text/plain", "ts": 1, **meta}, b"")


def test_fold_of_appends_forks_and_a_soft_deleted_source() -> None:
    reg = Registry(cache_bytes=1 << 20)
    _create(reg, 2, 10, "t/src")
    reg.apply(2, 11, "t/src", {"op": "append", "ts": 2}, b"A")
    reg.apply(2, 12, "t/src", {"op": "append", "ts": 3, "pid": "p", "ep": 0, "sq": 0}, b"B")
    src = reg.get("t/src")
    assert src is not None and src.tail == Position(0, 2, 13)
    assert src.producers == {"p": (0, 0)}
    after_a = Position(0, 2, 12)
    # A fork in another partition, read before its source's records: still stitched.
    _create(reg, 0, 5, "t/fork", src="t/src", srcgen=[2, 10], fo=list(after_a), depth=1)
    reg.apply(0, 6, "t/fork", {"op": "append", "ts": 4}, b"F")
    fork = reg.get("t/fork")
    assert fork is not None
    assert [r.data for r in fork.segments(ORIGIN)] == [b"A", b"F"]
    assert fork.tail == Position(1, 0, 7) and fork.tail > src.tail
    assert fork.producers == {}
    reg.apply(2, 13, "t/src", {"op": "delete", "ts": 5}, b"")
    assert src.soft_deleted and reg.get("t/src") is src
    assert [r.data for r in fork.segments(ORIGIN)] == [b"A", b"F"]
    reg.apply(0, 7, "t/fork", {"op": "delete", "ts": 6}, b"")
    assert reg.get("t/fork") is None and reg.get("t/src") is None


Rec = tuple[int, int, str, dict[str, object], bytes]


def _interleavings(a: list[Rec], b: list[Rec]) -> list[list[Rec]]:
    """Every order a gateway may apply two partitions' records in (each in its order)."""
    out = []
    for picks in itertools.combinations(range(len(a) + len(b)), len(a)):
        ia, ib = iter(a), iter(b)
        out.append([next(ia) if i in picks else next(ib) for i in range(len(a) + len(b))])
    return out


def _fold(records: list[Rec]) -> Registry:
    reg = Registry(cache_bytes=1 << 20)
    for part, off, key, meta, value in records:
        reg.apply(part, off, key, {"ts": 1, **meta}, value)
    return reg


_SRC: list[Rec] = [(2, 10, "t/src", {"op": "create", "ct": "text/plain"}, b""),
                   (2, 11, "t/src", {"op": "append"}, b"A")]
_FORK: Rec = (0, 5, "t/fork", {"op": "create", "ct": "text/plain", "src": "t/src",
                               "srcgen": [2, 10], "fo": [0, 2, 12], "depth": 1,
                               "pend": True}, b"")
_PIN: Rec = (2, 12, "t/src", {"op": "fork", "fork": "t/fork", "fgen": [0, 5]}, b"")


def test_a_fork_confirmed_before_its_source_is_deleted_keeps_it_in_any_read_order() -> None:
    source = [*_SRC, _PIN, (2, 13, "t/src", {"op": "delete"}, b"")]
    fork = [_FORK, (0, 6, "t/fork", {"op": "append"}, b"F")]
    for order in _interleavings(source, fork):
        reg = _fold(order)
        src, f = reg.get("t/src"), reg.get("t/fork")
        assert src is not None and src.soft_deleted and src.forks == 1, order
        assert f is not None and not f.pending and f.source is src, order
        assert [r.data for r in f.segments(ORIGIN)] == [b"A", b"F"], order
        reg.apply(0, 7, "t/fork", {"op": "delete", "ts": 2}, b"")
        assert reg.get("t/fork") is None and reg.get("t/src") is None, order


def test_a_fork_its_source_never_confirmed_is_absent_and_its_path_free() -> None:
    # The source was deleted before the fork's second step: no fork record.
    source = [*_SRC, (2, 12, "t/src", {"op": "delete"}, b"")]
    fork = [_FORK, (0, 6, "t/fork", {"op": "create", "ct": "text/plain"}, b"new")]
    for order in _interleavings(source, fork):
        reg = _fold(order)
        assert reg.get("t/src") is None, order
        f = reg.get("t/fork")
        assert f is not None and not f.pending and f.source is None, order
        assert [r.data for r in f.segments(ORIGIN)] == [b"new"], order
    pending = _fold([*_SRC, _FORK]).get("t/fork")
    assert pending is not None and pending.pending


def test_a_fork_replaced_before_its_confirmation_is_read_does_not_pin_its_source() -> None:
    # The fork's path was created again (its first create was still pending) before a
    # gateway read the source's fork record.
    source = [*_SRC, _PIN]
    fork = [_FORK, (0, 6, "t/fork", {"op": "create", "ct": "text/plain"}, b"new")]
    for order in _interleavings(source, fork):
        reg = _fold(order)
        src = reg.get("t/src")
        assert src is not None and src.forks == 0, order
        reg.apply(2, 13, "t/src", {"op": "delete", "ts": 2}, b"")
        assert reg.get("t/src") is None, order
        f = reg.get("t/fork")
        assert f is not None and f.source is None and not f.pending, order


def test_the_memory_budget_drops_the_oldest_bytes_but_keeps_their_place() -> None:
    reg = Registry(cache_bytes=10)
    _create(reg, 0, 0, "t/s")
    for i in range(1, 6):
        reg.apply(0, i, "t/s", {"op": "append", "ts": i}, b"1234")
    stream = reg.get("t/s")
    assert stream is not None
    assert [r.data for r in stream.records] == [None, None, None, b"1234", b"1234"]
    assert [r.size for r in stream.records] == [4] * 5


def test_ttl_expiry_slides_with_touches() -> None:
    reg = Registry(cache_bytes=100)
    _create(reg, 0, 0, "t/s", ttl=2)
    stream = reg.get("t/s")
    assert stream is not None
    assert not stream.expired(1500) and stream.expired(2001)
    reg.apply(0, 1, "t/s", {"op": "touch", "ts": 1900}, b"")
    assert not stream.expired(3000) and stream.expired(3900)


def test_sse_frames_are_shared_and_bounded() -> None:
    frames = p.SseFrames(max_bytes=10, max_frame=6)
    frames.put(("s", 1), b"aaaa")
    frames.put(("s", 2), b"bbbb")
    assert frames.get(("s", 1)) == b"aaaa" and frames.get(("s", 2)) == b"bbbb"
    frames.put(("s", 3), b"cccc")  # 12 bytes: the oldest goes
    assert frames.get(("s", 1)) is None and frames.get(("s", 3)) == b"cccc"
    frames.put(("s", 4), b"too large")  # above max_frame: not kept
    assert frames.get(("s", 4)) is None and frames.get(("s", 2)) == b"bbbb"


def test_an_expired_stream_goes_once_its_partitions_clock_is_past_the_grace() -> None:
    reg = Registry(cache_bytes=1 << 20)
    _create(reg, 1, 0, "t/ttl", ttl=60, ts=1_000)  # expires at 61,000
    reg.apply(1, 1, "t/ttl", {"op": "append", "ts": 2_000}, b"x" * 100)
    _create(reg, 1, 2, "t/at", exp=30_000, ts=1_000)
    _create(reg, 1, 3, "t/slide", ttl=60, ts=1_000)
    reg.apply(1, 4, "t/slide", {"op": "touch", "ts": 50_000}, b"")  # now 110,000
    held = reg._held
    # Another partition's clock does not count; this one's just before the grace ends.
    _create(reg, 0, 0, "t/other", ts=10**9)
    _create(reg, 1, 5, "t/tick", ts=61_999 + EXPIRED_GRACE_MS)
    assert reg.get("t/ttl") is not None and reg.get("t/at") is None
    _create(reg, 1, 6, "t/tick2", ts=62_000 + EXPIRED_GRACE_MS)
    assert reg.get("t/ttl") is None and reg._held == held - 100
    assert reg.get("t/slide") is not None and reg.swept == 2
    _create(reg, 1, 7, "t/tick3", ts=110_000 + EXPIRED_GRACE_MS)
    assert reg.get("t/slide") is None and reg.swept == 3
    assert {s.key for s in reg._by_gen.values()} == {"t/other", "t/tick", "t/tick2", "t/tick3"}


def test_an_expired_source_stays_while_a_fork_reads_it() -> None:
    reg = Registry(cache_bytes=1 << 20)
    _create(reg, 2, 10, "t/src", ttl=1, ts=1_000)
    reg.apply(2, 11, "t/src", {"op": "append", "ts": 1_500}, b"A")
    _create(reg, 0, 5, "t/fork", src="t/src", srcgen=[2, 10], fo=[0, 2, 12], depth=1)
    _create(reg, 2, 12, "t/late", ts=10**9)  # the source's partition, long after
    fork = reg.get("t/fork")
    assert fork is not None and [r.data for r in fork.segments(ORIGIN)] == [b"A"]
    source = fork.source
    assert source is not None and source.lapsed and not source.gone
    reg.apply(0, 6, "t/fork", {"op": "delete", "ts": 10**9}, b"")
    assert source.gone and reg.get("t/src") is None


def test_memory_of_streams_that_went_stays_bounded() -> None:
    """Thousands of streams made and deleted (or expired) leave no trace in the budget's
    queue or the expiry queues."""
    reg = Registry(cache_bytes=1 << 30)
    offset = 0
    for i in range(10_000):
        key = f"t/s{i}"
        _create(reg, 0, offset, key, exp=10**12)  # an Expires-At years away
        reg.apply(0, offset + 1, key, {"op": "append", "ts": 1}, b"data")
        reg.apply(0, offset + 2, key, {"op": "delete", "ts": 1}, b"")
        offset += 3
    assert not reg.streams and not reg._by_gen and reg._held == 0
    assert len(reg._held_recs) <= 2 * 1024 + 2
    assert sum(len(q) for q in reg._expiring.values()) <= 2 * 1024 + 2
