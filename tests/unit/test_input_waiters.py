"""The gateway's waiters for inputs handed to workers: resolved by the input's event,
failed by the stream's end, bounded per stream, forgotten after use; and the log record
that carries an input id."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord

from eventlog.errors import StreamEnded
from eventlog.records import LogRecord
from gateway.errors import LimitExceeded
from gateway.inputs import InputWaiters, Written


async def test_an_input_event_resolves_its_waiter_only() -> None:
    waiters = InputWaiters(per_stream=4)
    with waiters.expect("s1", "a") as a, waiters.expect("s1", "b") as b:
        waiters.seen("a", 7, "1-x-0-42")
        waiters.seen("nobody", 8, "1-x-0-43")
        assert await a == Written(7, "1-x-0-42")
        assert not b.done()
    assert len(waiters) == 0


async def test_the_streams_end_fails_its_waiters() -> None:
    waiters = InputWaiters(per_stream=4)
    with waiters.expect("s1", "a") as a, waiters.expect("s2", "b") as b:
        waiters.ended("s1")
        with pytest.raises(StreamEnded):
            await a
        assert not b.done()


async def test_waiters_per_stream_are_bounded() -> None:
    waiters = InputWaiters(per_stream=2)
    with waiters.expect("s1", "a"), waiters.expect("s1", "b"):
        with pytest.raises(LimitExceeded), waiters.expect("s1", "c"):
            pass
        with waiters.expect("s2", "d"):
            pass
    with waiters.expect("s1", "e"):  # room again
        assert len(waiters) == 1


def _rec(headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic="t", partition=0, offset=9, timestamp=0, timestamp_type=0,
                          key=b"s1", value=b"{}", checksum=None, serialized_key_size=2,
                          serialized_value_size=2, headers=headers)


def test_a_log_record_carries_its_input_id() -> None:
    headers = [("tm-type", b"input"), ("tm-seq", b"4"), ("tm-input", b"ab" * 16)]
    rec = LogRecord.from_consumer(_rec(headers))
    assert rec is not None and rec.input_id == "ab" * 16
    plain = LogRecord.from_consumer(_rec(headers[:2]))
    assert plain is not None and plain.input_id is None
