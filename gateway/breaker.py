"""A circuit breaker around Kafka on the request paths (create, publish, cancel).

Closed: requests go through; ``failures`` failures in a row open it. Open: requests
fail at once with 503 and ``Retry-After`` instead of piling up behind a dead broker.
After ``reset_s`` one request is let through (half-open): success closes the breaker,
failure opens it again. The Kafka watcher opens it too when the broker stops answering.

``on_change`` (if given) hears each state change as it is noticed: closed -> open at a
trip, open -> half-open when a request (or a look at :attr:`state_code`) finds the
reset time passed, half-open -> closed or open after the trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

from eventlog.errors import KafkaUnavailable

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"


class CircuitOpen(KafkaUnavailable):
    """Kafka is known to be unreachable: fail fast."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitBreaker:
    def __init__(self, *, failures: int = 3, reset_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str], None] | None = None) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self._seen = CLOSED
        self.on_change = on_change

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        return HALF_OPEN if self._clock() - self._opened_at >= self._reset_s else OPEN

    @property
    def state_code(self) -> int:
        """0 closed, 1 half-open, 2 open (what ``tidemark_breaker_state`` exports)."""
        return {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}[self._note()]

    def _note(self) -> str:
        state = self.state
        if state != self._seen:
            self._seen = state
            if self.on_change is not None:
                self.on_change(state)
        return state

    def check(self) -> None:
        """Raise :class:`CircuitOpen` unless a request may try Kafka now."""
        state = self._note()
        if state == CLOSED:
            return
        if state == HALF_OPEN and not self._trial:
            self._trial = True
            return
        assert self._opened_at is not None
        wait = max(1, math.ceil(self._reset_s - (self._clock() - self._opened_at)))
        raise CircuitOpen("Kafka is unreachable; not trying for now", retry_after=wait)

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False
        self._note()

    def failure(self) -> None:
        self._failures += 1
        if self._trial or self._failures >= self._threshold:
            self.trip()

    def trip(self) -> None:
        """Open now (the Kafka watcher saw the broker stop answering)."""
        self._opened_at = self._clock()
        self._trial = False
        self._note()
