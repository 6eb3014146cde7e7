"""Latency histograms with fixed log-scale buckets, so that histograms from any number
of processes and intervals merge by adding counts, and percentiles come from the sum.

Bucket ``i`` (``i >= 1``) holds values in ``(MIN_MS * BASE**(i-1), MIN_MS * BASE**i]``;
bucket 0 holds everything at or below ``MIN_MS``. ``BASE`` is ``2 ** (1/8)`` (eight
buckets per doubling), so a bucket's geometric middle, which is what a percentile
reports, is within ``sqrt(BASE) - 1`` (4.43 %) of any value in it. Percentiles are
nearest-rank: the ``p`` percentile of ``n`` values is the value of rank ``ceil(p * n)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

#: Eight buckets per doubling.
BASE: Final = 2 ** (1 / 8)
#: Values at or below this (in ms) share bucket 0.
MIN_MS: Final = 0.01
#: The last bucket (0.01 ms * 2**40: about 127 days); larger values are counted in it.
MAX_INDEX: Final = 320
#: The largest relative error of a reported percentile against the true nearest-rank one.
RELATIVE_ERROR: Final = math.sqrt(BASE) - 1
_LOG_BASE: Final = math.log(BASE)
PERCENTILES: Final = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def bucket_of(ms: float) -> int:
    """The bucket index of a value in milliseconds."""
    if ms <= MIN_MS:
        return 0
    # The small epsilon keeps exact bucket bounds in their own bucket despite rounding.
    return min(MAX_INDEX, math.ceil(math.log(ms / MIN_MS) / _LOG_BASE - 1e-9))


def bucket_value(index: int) -> float:
    """What a bucket reports: its geometric middle (bucket 0: ``MIN_MS``)."""
    if index <= 0:
        return MIN_MS
    return float(MIN_MS * BASE ** (index - 0.5))


class Histogram:
    """Counts per bucket index."""

    __slots__ = ("count", "counts")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0

    def add(self, ms: float) -> None:
        i = bucket_of(ms)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.count += 1

    def merge(self, other: Histogram) -> None:
        for i, n in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + n
        self.count += other.count

    def merge_json(self, raw: Mapping[str, Any]) -> None:
        """Add counts in the wire form of :meth:`to_json` (bad entries are skipped)."""
        if not isinstance(raw, Mapping):
            return
        for key, n in raw.items():
            if not (isinstance(key, str) and key.isdigit() and isinstance(n, int) and n > 0):
                continue
            i = min(int(key), MAX_INDEX)
            self.counts[i] = self.counts.get(i, 0) + n
            self.count += n

    def to_json(self) -> dict[str, int]:
        return {str(i): n for i, n in self.counts.items()}

    def percentile(self, p: float) -> float | None:
        """The nearest-rank ``p`` percentile (``0 < p <= 1``), None when empty."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(p * self.count - 1e-9))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return round(bucket_value(i), 3)
        raise AssertionError("counts do not add up to count")  # pragma: no cover

    def summary(self) -> dict[str, Any]:
        """``{"count", "p50", "p90", "p99"}`` (percentiles None when the count is 0)."""
        out: dict[str, Any] = {"count": self.count}
        for name, p in PERCENTILES:
            out[name] = self.percentile(p)
        return out
