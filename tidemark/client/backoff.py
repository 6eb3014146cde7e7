"""The reconnect policy: exponential backoff with full jitter, bounded three ways."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True, slots=True)
class Backoff:
    """How a follower waits between attempts.

    The n-th wait (from 0) is uniform in ``[0, min(max_delay, initial * factor**n)]``
    ("full jitter", so that clients cut off together do not come back together), or the
    server's ``Retry-After`` when that is longer. A follower gives up after
    ``max_attempts`` failed attempts in a row or ``max_elapsed`` seconds without
    progress (``None``: no such bound; at least one of the two must be set).
    """

    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0
    max_attempts: int | None = 12
    max_elapsed: float | None = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts is None and self.max_elapsed is None:
            raise ValueError("Backoff needs max_attempts or max_elapsed")
        if self.initial < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("Backoff delays must be >= 0 and factor >= 1")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        cap = min(self.max_delay, self.initial * self.factor ** min(attempt, 64))
        jittered = random.uniform(0, cap)  # noqa: S311 (jitter, not a secret)
        return max(jittered, retry_after or 0.0)


@dataclass(slots=True)
class Attempts:
    """The failures of one follower since it last made progress."""

    policy: Backoff
    count: int = 0
    since: float = field(default_factory=time.monotonic)

    def progress(self) -> None:
        """An event arrived, or a connection opened: start counting again."""
        self.count = 0
        self.since = time.monotonic()

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Count a failure; the wait before the next attempt, or None to give up."""
        policy = self.policy
        self.count += 1
        if policy.max_attempts is not None and self.count > policy.max_attempts:
            return None
        wait = policy.delay(self.count - 1, retry_after)
        if policy.max_elapsed is not None and (
                time.monotonic() - self.since + wait > policy.max_elapsed):
            return None
        return wait
