"""The circuit breaker's states, driven by a clock the test owns."""

from __future__ import annotations

import pytest

from gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_and_fails_fast_with_retry_after() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, reset_s=5.0, clock=clock)
    for _ in range(2):
        breaker.check()
        breaker.failure()
    assert breaker.state == CLOSED
    breaker.check()
    breaker.failure()
    assert breaker.state == OPEN
    clock.now += 1.2
    with pytest.raises(CircuitOpen) as raised:
        breaker.check()
    assert raised.value.retry_after == 4
    assert raised.value.retriable


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(failures=2, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == CLOSED


def test_half_open_lets_one_request_try_then_closes_or_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset_s=5.0, clock=clock)
    breaker.failure()
    clock.now += 5.0
    assert breaker.state == HALF_OPEN
    breaker.check()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.check()  # everyone else still fails fast
    breaker.failure()  # the trial failed: open again, for a full period
    assert breaker.state == OPEN
    clock.now += 5.0
    breaker.check()
    breaker.success()
    assert breaker.state == CLOSED
    breaker.check()


def test_trip_opens_at_once() -> None:
    breaker = CircuitBreaker(clock=Clock())
    breaker.trip()
    with pytest.raises(CircuitOpen):
        breaker.check()
