"""The resume rules of ARCHITECTURE.md, applied by gateway.resume.plan."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from eventlog.errors import StreamGone
from eventlog.index import StreamInfo
from gateway.resume import Plan, plan
from schemas.eventid import EventId, InvalidEventId

EPOCH = "0123abcd"
OTHER_EPOCH = "fedc9876"
PARTITION = 3


def stream(**changes: Any) -> StreamInfo:
    values: dict[str, Any] = {
        "stream_id": "s1", "namespace": "default", "topic": "tidemark.default.events",
        "partition": PARTITION, "first_offset": 100, "generator": "demo",
        "status": "running", "created_at": 1, "updated_at": 1,
    }
    values.update(changes)
    return StreamInfo(**values)


def finished(terminal_offset: int, **changes: Any) -> StreamInfo:
    return stream(status="completed", terminal_offset=terminal_offset, last_seq=9, **changes)


def at(offset: int, *, partition: int = PARTITION, epoch: str = EPOCH) -> EventId:
    return EventId(epoch, partition, offset)


def test_no_position_starts_at_the_first_event() -> None:
    assert plan(stream(), None, epoch=EPOCH, log_start=0, log_end=500) == Plan(
        status=200, start=100, after=-1, reset=None)


def test_no_position_when_the_first_event_is_the_log_start() -> None:
    assert plan(stream(), None, epoch=EPOCH, log_start=100, log_end=101) == Plan(
        status=200, start=100, after=-1, reset=None)


def test_no_position_and_first_events_deleted_resets_from_log_start() -> None:
    assert plan(stream(), None, epoch=EPOCH, log_start=150, log_end=500) == Plan(
        status=200, start=150, after=-1, reset="retention")


def test_no_position_on_a_finished_stream_replays_it() -> None:
    assert plan(finished(180), None, epoch=EPOCH, log_start=0, log_end=500) == Plan(
        status=200, start=100, after=-1, reset=None)


def test_a_version_2_id_of_another_clusters_copy_resumes_after_its_seq() -> None:
    # MirrorMaker 2 keeps partitions and order, not offsets: the seq says where.
    elsewhere = EventId(OTHER_EPOCH, PARTITION, 987_654, 7)
    assert plan(stream(), elsewhere, epoch=EPOCH, log_start=0, log_end=500) == Plan(
        status=200, start=100, after=-1, reset=None, seq=7)
    # Its offset may lie anywhere, even past this log's end: it is not this log's.
    assert plan(stream(), elsewhere._replace(offset=5), epoch=EPOCH, log_start=0,
                log_end=500).seq == 7
    # Retention took the stream's first events here: said, and the rest after the seq.
    assert plan(stream(), elsewhere, epoch=EPOCH, log_start=150, log_end=500) == Plan(
        status=200, start=150, after=-1, reset="retention", seq=7)


def test_a_version_2_id_of_this_log_resumes_by_its_offset_as_before() -> None:
    assert plan(stream(), EventId(EPOCH, PARTITION, 120, 7), epoch=EPOCH, log_start=0,
                log_end=500) == Plan(status=200, start=120, after=120, reset=None)


@pytest.mark.parametrize(("log_start", "start"), [(0, 100), (150, 150)])
def test_foreign_epoch_resets_from_the_earliest_event(log_start: int, start: int) -> None:
    result = plan(stream(), at(120, epoch=OTHER_EPOCH), epoch=EPOCH,
                  log_start=log_start, log_end=500)
    assert result == Plan(status=200, start=start, after=-1, reset="epoch")


def test_foreign_epoch_ignores_the_old_partition_and_offset() -> None:
    # The topic was recreated: the old id's partition and offset mean nothing now.
    result = plan(stream(), at(10**9, partition=PARTITION + 1, epoch=OTHER_EPOCH),
                  epoch=EPOCH, log_start=0, log_end=500)
    assert result == Plan(status=200, start=100, after=-1, reset="epoch")


def test_position_from_another_partition_is_invalid() -> None:
    with pytest.raises(InvalidEventId):
        plan(stream(), at(120, partition=PARTITION + 1), epoch=EPOCH, log_start=0, log_end=500)


@pytest.mark.parametrize("position", [180, 181, 499])
def test_finished_stream_at_or_after_terminal_is_204(position: int) -> None:
    result = plan(finished(180), at(position), epoch=EPOCH, log_start=0, log_end=500)
    assert result.status == 204


def test_finished_stream_before_terminal_resumes_after_position() -> None:
    assert plan(finished(180), at(179), epoch=EPOCH, log_start=0, log_end=500) == Plan(
        status=200, start=179, after=179, reset=None)


@pytest.mark.parametrize("position", [None, at(120), at(180)])
def test_finished_stream_deleted_by_retention_is_gone(position: EventId | None) -> None:
    with pytest.raises(StreamGone):
        plan(finished(180), position, epoch=EPOCH, log_start=181, log_end=500)


def test_finished_stream_whose_terminal_event_is_still_held_is_not_gone() -> None:
    result = plan(finished(180), None, epoch=EPOCH, log_start=180, log_end=500)
    assert result == Plan(status=200, start=180, after=-1, reset="retention")


@pytest.mark.parametrize("position", [100, 120, 149])
def test_position_older_than_log_start_resets_from_log_start(position: int) -> None:
    assert plan(stream(), at(position), epoch=EPOCH, log_start=150, log_end=500) == Plan(
        status=200, start=150, after=-1, reset="retention")


@pytest.mark.parametrize("position", [500, 501, 2**63 - 1])
def test_position_ahead_of_the_log_is_invalid(position: int) -> None:
    with pytest.raises(InvalidEventId):
        plan(stream(), at(position), epoch=EPOCH, log_start=0, log_end=500)


def test_position_at_the_last_record_is_valid() -> None:
    assert plan(stream(), at(499), epoch=EPOCH, log_start=0, log_end=500) == Plan(
        status=200, start=499, after=499, reset=None)


@pytest.mark.parametrize("position", [100, 120, 150])
def test_ordinary_position_resumes_strictly_after_it(position: int) -> None:
    assert plan(stream(), at(position), epoch=EPOCH, log_start=0, log_end=500) == Plan(
        status=200, start=position, after=position, reset=None)


def test_position_before_the_stream_started_replays_the_stream_without_reset() -> None:
    result = plan(stream(), at(60), epoch=EPOCH, log_start=50, log_end=500)
    assert result.status == 200
    assert result.reset is None
    assert result.start == 100


def test_no_silent_jump_over_a_grid_of_positions() -> None:
    """For every same-epoch position of this stream: either the plan reads every event
    after the position, or it says why not (reset), or it says nothing is left (204)."""
    first = 10
    for log_start, log_end, terminal in itertools.product(
            range(0, 25, 3), range(11, 40, 4), [None, 15, 30]):
        if log_end <= first or (terminal is not None and terminal >= log_end):
            continue
        info = stream(first_offset=first) if terminal is None else finished(
            terminal, first_offset=first)
        for position in range(first, log_end):
            if terminal is not None and terminal < log_start:
                with pytest.raises(StreamGone):
                    plan(info, at(position), epoch=EPOCH, log_start=log_start,
                         log_end=log_end)
                continue
            result = plan(info, at(position), epoch=EPOCH, log_start=log_start,
                          log_end=log_end)
            context = (log_start, log_end, terminal, position, result)
            if terminal is not None and position >= terminal:
                assert result.status == 204, context
                continue
            assert result.status == 200, context
            assert result.start >= max(first, log_start), context
            if result.reset is None:
                assert result.after == position, context
                assert result.start <= position + 1, context
            else:
                assert result.reset == "retention", context
                assert result.after == -1, context
                assert result.start == max(first, log_start), context
                assert position < log_start, context
