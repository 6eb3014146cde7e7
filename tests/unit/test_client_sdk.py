"""The client SDK's pure parts: its SSE parser reads what the gateway's framing writes
(gateway/sse.py), cut anywhere, and bounds what it holds; the reconnect policy's waits
are full jitter under the cap, honour Retry-After, and give up at its bounds."""

from __future__ import annotations

import email.utils
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from gateway import sse
from tidemark.client import Backoff, ClientError
from tidemark.client.backoff import Attempts
from tidemark.client.transports import SseParser, retry_after


def gateway_bytes() -> tuple[bytes, list[tuple[str | None, str, dict[str, object]]]]:
    envelope = {"stream": "s", "seq": 1, "type": "partial_result", "ts": 1,
                "data": {"chunk": "é\nline", "chunkIndex": 0}}
    notice = {"reason": "retention", "earliest": "1-a-0-5"}
    wire = (sse.frame_retry(500) + sse.frame_comment("hello")
            + sse.frame_event(orjson.dumps(notice), event="reset")
            + sse.frame_event(orjson.dumps(envelope), event="partial_result", id="1-a-0-7")
            + sse.PING)
    return wire, [(None, "reset", notice), ("1-a-0-7", "partial_result", envelope)]


def test_the_parser_reads_the_gateways_frames_cut_anywhere() -> None:
    wire, expected = gateway_bytes()
    for cut in range(1, len(wire)):
        parser = SseParser(1024)
        assert parser.feed(wire[:cut]) + parser.feed(wire[cut:]) == expected, cut
    one_by_one = SseParser(1024)
    assert [i for b in range(len(wire)) for i in one_by_one.feed(wire[b:b + 1])] == expected


def test_the_parser_bounds_an_event_and_a_line() -> None:
    with pytest.raises(ClientError, match="larger than 64"):
        SseParser(64).feed(b"data: " + b"x" * 40 + b"\ndata: " + b"y" * 40 + b"\n")
    with pytest.raises(ClientError, match="longer than 64"):
        SseParser(64).feed(b"data: " + b"x" * 100)


def test_waits_are_full_jitter_under_the_cap_and_honour_retry_after() -> None:
    policy = Backoff(initial=0.1, factor=2, max_delay=1.0)
    for attempt in range(10):
        cap = min(1.0, 0.1 * 2 ** attempt)
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > cap / 2 and min(waits) < cap / 2  # spread over [0, cap]
    assert all(policy.delay(0, retry_after=3.0) == 3.0 for _ in range(20))


def test_attempts_give_up_at_either_bound_and_start_again_on_progress() -> None:
    by_count = Attempts(Backoff(max_attempts=3, max_elapsed=None, max_delay=0))
    assert [by_count.next_delay() for _ in range(4)] == [0, 0, 0, None]
    by_count.progress()
    assert by_count.next_delay() == 0
    by_time = Attempts(Backoff(max_attempts=None, max_elapsed=10.0))
    assert by_time.next_delay(retry_after=4.0) == 4.0
    assert by_time.next_delay(retry_after=11.0) is None  # past the total time
    with pytest.raises(ValueError, match="max_attempts or max_elapsed"):
        Backoff(max_attempts=None, max_elapsed=None)


def test_retry_after_takes_seconds_or_a_date() -> None:
    assert retry_after({"Retry-After": "7"}) == 7.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (retry_after({"Retry-After": when}) or 0) <= 30
    assert retry_after({}) is None and retry_after({"Retry-After": "soon"}) is None


def test_the_sdk_talks_to_gateways_over_the_wire_only() -> None:
    """Importing it loads nothing of gateway/, workers/ or eventlog/ (nor Kafka)."""
    code = ("import sys, tidemark.client; print(sorted({m.split('.')[0] for m in sys.modules"
            " if m.split('.')[0] in {'gateway', 'workers', 'eventlog', 'aiokafka'}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
