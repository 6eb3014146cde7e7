"""The hub's in-memory buffers are bounded by bytes: the per-partition tail and the
per-client subscriber buffer."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from aiokafka import TopicPartition

from eventlog.settings import KafkaSettings
from gateway.catchup import from_memory
from gateway.hub import (
    FRAME_OVERHEAD,
    STREAM_OVERHEAD,
    Frame,
    Hub,
    PartitionTail,
    Subscriber,
)

A, B = b"stream-a", b"stream-b"
#: Most tests check the eviction logic on the frames' bytes alone.
BYTES_ONLY = {"frame_overhead": 0, "stream_overhead": 0}


def frame(offset: int, key: bytes = A, size: int = 10, *, terminal: bool = False) -> Frame:
    data = f"{offset}:".encode().ljust(size, b"x")[:size]
    return Frame(offset, key, offset, terminal, data)


class TailModel:
    """What a tail of ``limit`` bytes should hold: the newest frames that fit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.frames: deque[Frame] = deque()

    def append(self, f: Frame) -> None:
        self.frames.append(f)
        while sum(len(x.data) for x in self.frames) > self.limit:
            self.frames.popleft()

    def since(self, start: int, key: bytes) -> list[Frame]:
        return [f for f in self.frames if f.offset >= start and f.key == key]


# --- PartitionTail ------------------------------------------------------------------


def since(tail: PartitionTail, start: int, key: bytes) -> list[Frame]:
    """The tail's rows for a stream, as frames (rows are plain tuples of their layout)."""
    return [Frame._make(row) for row in tail.since(start, key)]


def test_new_tail_is_empty_and_covers_from_its_start() -> None:
    tail = PartitionTail(start=50, limit=100, **BYTES_ONLY)
    assert len(tail) == 0 and tail.nbytes == 0
    assert tail.covers(50) and tail.covers(1000)
    assert not tail.covers(49)
    assert since(tail, 0, A) == []


def test_tail_never_holds_more_than_its_limit() -> None:
    tail = PartitionTail(start=0, limit=100, **BYTES_ONLY)
    for offset in range(200):
        tail.append(frame(offset, A if offset % 3 else B, size=7 + offset % 11))
        held = since(tail, 0, A) + since(tail, 0, B)
        assert tail.nbytes <= 100
        assert sum(len(f.data) for f in held) == tail.nbytes
        assert len(held) == len(tail)


def test_covers_moves_forward_as_old_frames_are_evicted() -> None:
    tail = PartitionTail(start=0, limit=30, **BYTES_ONLY)
    for offset in range(3):
        tail.append(frame(offset))
    assert tail.covers(0)
    tail.append(frame(3))  # 40 bytes > 30: offset 0 goes
    assert not tail.covers(0)
    assert tail.covers(1)
    previous = 1
    for offset in range(4, 50):
        tail.append(frame(offset))
        oldest = min(f.offset for f in since(tail, 0, A))
        assert tail.covers(oldest)
        assert not tail.covers(oldest - 1)
        assert oldest >= previous
        previous = oldest


def test_since_returns_only_that_streams_frames_in_order() -> None:
    tail = PartitionTail(start=0, limit=10_000, **BYTES_ONLY)
    frames = [frame(o, A if o % 2 else B) for o in range(20)]
    for f in frames:
        tail.append(f)
    assert since(tail, 0, A) == [f for f in frames if f.key == A]
    assert since(tail, 7, A) == [f for f in frames if f.key == A and f.offset >= 7]
    assert since(tail, 8, B) == [f for f in frames if f.key == B and f.offset >= 8]
    assert since(tail, 20, A) == []
    assert since(tail, 0, b"no-such-stream") == []


def test_since_matches_a_model_with_gaps_in_offsets_and_eviction() -> None:
    # Offsets skip numbers, as transaction markers and aborted records do.
    tail = PartitionTail(start=3, limit=64, **BYTES_ONLY)
    model = TailModel(64)
    offset = 3
    for i in range(300):
        offset += 1 + i % 4
        f = frame(offset, (A, B, b"c")[i % 3], size=5 + i % 9)
        tail.append(f)
        model.append(f)
        for start in (0, offset - 20, offset - 7, offset, offset + 1):
            for key in (A, B, b"c"):
                assert since(tail, start, key) == model.since(start, key), (i, start, key)


def test_first_last_and_at_match_a_model_through_eviction() -> None:
    tail = PartitionTail(start=0, limit=80, **BYTES_ONLY)
    model = TailModel(80)
    keys = (A, B, b"c", b"d")
    offset = 0
    for i in range(400):
        offset += 1 + i % 3
        f = frame(offset, keys[(i * 7) % 4], size=6 + i % 5)
        tail.append(f)
        model.append(f)
        held = list(model.frames)
        for key in (*keys, b"none"):
            own = [x for x in held if x.key == key]
            assert tail.last(key) == (own[-1] if own else None), (i, key)
            for start in (0, offset - 9, offset, offset + 1):
                after = [x for x in own if x.offset >= start]
                assert tail.first(key, start) == (after[0] if after else None), (i, key, start)
        for probe in (offset, offset - 1, offset - 5, held[0].offset, held[0].offset - 1):
            match = [x for x in held if x.offset == probe]
            assert tail.at(probe) == (match[0] if match else None), (i, probe)
        assert tail.streams == len({x.key for x in held})


def test_the_key_index_forgets_streams_whose_frames_were_all_evicted() -> None:
    tail = PartitionTail(start=0, limit=100, **BYTES_ONLY)
    for offset in range(1000):
        tail.append(frame(offset, f"stream-{offset}".encode()))
    # 10 frames of 10 bytes fit: only the newest ten streams are indexed.
    assert tail.streams == 10
    assert tail.first(b"stream-0", 0) is None and tail.last(b"stream-0") is None
    assert tail.last(b"stream-999") == frame(999, b"stream-999")


def test_tail_stays_correct_across_many_evictions() -> None:
    # Thousands of evictions: the tail's storage is compacted along the way.
    tail = PartitionTail(start=0, limit=50, **BYTES_ONLY)
    model = TailModel(50)
    for offset in range(5000):
        f = frame(offset)
        tail.append(f)
        model.append(f)
    assert since(tail, 0, A) == list(model.frames)
    assert len(tail) == 5
    assert tail.covers(4995) and not tail.covers(4994)


def test_a_frame_larger_than_the_limit_is_not_held() -> None:
    tail = PartitionTail(start=0, limit=20, **BYTES_ONLY)
    tail.append(frame(0))
    tail.append(frame(1, size=21))
    assert tail.nbytes == 0 and len(tail) == 0
    assert not tail.covers(1)
    assert tail.covers(2)
    tail.append(frame(2))
    assert since(tail, 0, A) == [frame(2)]


def test_since_is_a_snapshot() -> None:
    tail = PartitionTail(start=0, limit=1000, **BYTES_ONLY)
    tail.append(frame(0))
    snapshot = since(tail, 0, A)
    tail.append(frame(1))
    assert snapshot == [frame(0)]


# --- Subscriber -------------------------------------------------------------------


def test_subscriber_buffers_up_to_its_limit_and_drains_fifo() -> None:
    sub = Subscriber(tp=TopicPartition("t", 2), key=A, limit=30)
    assert not sub.wakeup.is_set()
    frames = [frame(o) for o in range(3)]  # exactly 30 bytes
    for f in frames:
        sub.push(f)
    assert not sub.overflowed
    assert sub.wakeup.is_set()
    assert list(sub.drain()) == frames
    assert not sub.wakeup.is_set()
    assert list(sub.drain()) == []


def test_draining_frees_the_buffer() -> None:
    sub = Subscriber(tp=TopicPartition("t", 0), key=A, limit=30)
    for round_ in range(10):
        batch = [frame(round_ * 3 + i) for i in range(3)]
        for f in batch:
            sub.push(f)
        assert list(sub.drain()) == batch
    assert not sub.overflowed


def test_subscriber_overflow_drops_its_frames_and_wakes_the_reader() -> None:
    sub = Subscriber(tp=TopicPartition("t", 0), key=A, limit=30)
    for o in range(3):
        sub.push(frame(o))
    sub.wakeup.clear()
    sub.push(frame(3))  # 40 bytes > 30
    assert sub.overflowed
    assert sub.wakeup.is_set()
    assert list(sub.drain()) == []
    # Once cut off it stays cut off: the client resumes from its last id elsewhere.
    sub.push(frame(4, size=1))
    assert sub.overflowed
    assert list(sub.drain()) == []


def test_a_single_frame_over_the_limit_overflows() -> None:
    sub = Subscriber(tp=TopicPartition("t", 0), key=A, limit=10)
    sub.push(frame(0, size=11))
    assert sub.overflowed
    assert list(sub.drain()) == []


def test_frames_pushed_while_draining_come_out_in_order() -> None:
    sub = Subscriber(tp=TopicPartition("t", 0), key=A, limit=1000)
    sub.push(frame(0))
    sub.push(frame(1))
    out = []
    for f in sub.drain():
        out.append(f)
        if f.offset == 0:
            sub.push(frame(2))
    assert [f.offset for f in out] == [0, 1, 2]


@pytest.mark.parametrize("overflow", [False, True])
async def test_push_wakes_a_waiting_reader(overflow: bool) -> None:
    sub = Subscriber(tp=TopicPartition("t", 0), key=A, limit=10)
    waiter = asyncio.create_task(sub.wakeup.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    sub.push(frame(0, size=50 if overflow else 10))
    await asyncio.wait_for(waiter, timeout=1)
    assert sub.overflowed is overflow


def test_by_default_the_limit_counts_what_frames_and_streams_cost_in_memory() -> None:
    limit = 10 * (50 + FRAME_OVERHEAD) + 2 * STREAM_OVERHEAD
    tail = PartitionTail(start=0, limit=limit)
    for offset in range(40):
        tail.append(frame(offset, A if offset % 2 else B, size=50))
        held = since(tail, 0, A) + since(tail, 0, B)
        keys = len({f.key for f in held})
        assert tail.nbytes == sum(len(f.data) + FRAME_OVERHEAD for f in held) + (
            keys * STREAM_OVERHEAD)
        assert tail.nbytes <= limit
    assert len(tail) == 10


def test_frames_of_a_stream_share_one_key_object() -> None:
    tail = PartitionTail(start=0, limit=10_000)
    for offset in range(5):
        tail.append(frame(offset, bytes(bytearray(b"same-stream"))))
    keys = {id(f.key) for f in since(tail, 0, b"same-stream")}
    assert len(keys) == 1


# --- what one response writes -------------------------------------------------------


def test_a_wake_up_writes_every_new_frame_in_one_write_and_stops_at_the_end() -> None:
    from gateway.streaming import Cursor

    cursor = Cursor(offset=4, seq=2)
    frames = [Frame(3, A, 1, False, b"old "), Frame(5, A, 2, False, b"dup "),
              Frame(6, A, 3, False, b"a "), Frame(8, A, 4, False, b"b "),
              Frame(9, A, 5, True, b"end "), Frame(10, A, 6, False, b"after ")]
    data, count = cursor.take(frames)
    assert (data, count) == (b"a b end ", 3)
    assert (cursor.offset, cursor.seq, cursor.ended, cursor.written) == (9, 5, True, 3)
    assert cursor.take([Frame(11, A, 7, False, b"x")]) == (b"", 0)


def test_nothing_new_is_no_write() -> None:
    from gateway.streaming import Cursor

    cursor = Cursor(offset=10, seq=4)
    assert cursor.take([Frame(9, A, 3, False, b"x"), Frame(10, A, 4, False, b"y")]) == (b"", 0)
    assert cursor.written == 0


# --- The backlog of a resume from the memory tail (gateway.catchup.from_memory) ------

def _hub_with(tail: PartitionTail, tp: TopicPartition) -> Hub:
    hub = Hub(KafkaSettings(), tail_bytes=1 << 20, client_buffer_bytes=1 << 20)
    hub.tails[tp] = tail
    return hub


def test_a_resume_within_the_tail_gets_its_streams_frames_up_to_the_live_feed() -> None:
    tp = TopicPartition("t", 0)
    tail = PartitionTail(0, 10_000, **BYTES_ONLY)
    for off in range(10):
        tail.append(frame(off, A if off % 2 == 0 else B))
    hub = _hub_with(tail, tp)
    rows = from_memory(hub, tp, A, 3, 8)
    assert rows is not None
    assert [r[0] for r in rows] == [4, 6]  # A's frames in [3, 8), in order
    assert from_memory(hub, tp, A, 8, 8) == []  # nothing between position and live feed


def test_a_resume_older_than_the_tail_is_left_to_the_kafka_reader() -> None:
    tp = TopicPartition("t", 0)
    tail = PartitionTail(0, 30, **BYTES_ONLY)  # holds the newest 3 frames of 10 bytes
    for off in range(10):
        tail.append(frame(off))
    hub = _hub_with(tail, tp)
    assert not tail.covers(5)
    assert from_memory(hub, tp, A, 5, 10) is None
    rows = from_memory(hub, tp, A, 7, 10)
    assert rows is not None and [r[0] for r in rows] == [7, 8, 9]
