"""Which queries a tenant's users will ask next, learnt from the queries they asked.

Two signals, per tenant (a tenant never sees another's), both counted over normalised
queries (:func:`eventlog.cache.normalise`):

- **Follow-ups.** A user's queries within ``session_gap_ms`` of each other are one
  session; each query followed by another in a session counts that pair. After a query,
  its most frequent follow-ups are the likely next ones (a first-order Markov chain).
- **The hour's hottest.** Queries are counted per hour of the day (UTC); the most
  asked at this hour are likely soon, whoever asks.

:meth:`QueryPredictor.predict` ranks follow-ups by their share of what followed the
query, then fills up with the hour's hottest by their share of the hour. Everything is
bounded: tenants, users' last queries, queries remembered per tenant (least recently
seen go first), follow-ups per query and hot queries per hour (the least counted go).

Nothing here does I/O; the worker's warm-up (``workers.warmup``) feeds it from the jobs
topics and pre-generates what it predicts into the similar-query cache.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from eventlog.cache import normalise

HOUR_MS: Final = 3_600_000
DAY_HOURS: Final = 24

K = TypeVar("K")
V = TypeVar("V")


class _Lru(OrderedDict[K, V], Generic[K, V]):
    """An ordered dict that forgets its least recently touched keys past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: K, default: V) -> V:
        value = self.get(key)
        if value is None:
            value = self[key] = default
            while len(self) > self.limit:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


def _trim(counts: Counter[str], keep: int) -> None:
    """Keep the ``keep`` most counted (called when it holds twice as many)."""
    if len(counts) > 2 * keep:
        kept = counts.most_common(keep)
        counts.clear()
        counts.update(dict(kept))


@dataclass(frozen=True, slots=True)
class Prediction:
    """A likely next query: its text (as last asked), its normalised form, its share of
    what it was counted against, and why (``follow-up`` or ``hot``)."""

    query: str
    norm: str
    share: float
    why: str


@dataclass(slots=True)
class _Tenant:
    followups: _Lru[str, Counter[str]]
    hours: list[Counter[str]]
    #: The last text each normalised query was asked as.
    texts: _Lru[str, str]
    users: _Lru[str, tuple[str, int]] = field(default_factory=lambda: _Lru(0))


@dataclass(frozen=True, slots=True)
class PredictorLimits:
    session_gap_ms: int = 30 * 60 * 1000
    tenants: int = 1_000
    users: int = 10_000
    queries: int = 10_000
    followups: int = 8
    hot: int = 50


class QueryPredictor:
    def __init__(self, limits: PredictorLimits = PredictorLimits()) -> None:
        self.limits = limits
        self._tenants: _Lru[str, _Tenant] = _Lru(limits.tenants)

    def _tenant(self, tenant: str) -> _Tenant:
        got = self._tenants.get(tenant)
        if got is None:
            lim = self.limits
            got = _Tenant(followups=_Lru(lim.queries), hours=[Counter() for _ in range(DAY_HOURS)],
                          texts=_Lru(lim.queries), users=_Lru(lim.users))
        return self._tenants.touch(tenant, got)

    def observe(self, tenant: str, user: str, query: str, at_ms: int) -> str | None:
        """Count ``query`` asked by ``user`` of ``tenant`` at ``at_ms``; returns the
        normalised query it followed in the user's session (None: a session's first)."""
        norm = normalise(query)
        if not norm:
            return None
        t = self._tenant(tenant)
        t.texts.touch(norm, query)
        t.texts[norm] = query
        hot = t.hours[(at_ms // HOUR_MS) % DAY_HOURS]
        hot[norm] += 1
        _trim(hot, self.limits.hot)
        previous = None
        if user:
            last = t.users.get(user)
            if last is not None and 0 <= at_ms - last[1] <= self.limits.session_gap_ms \
                    and last[0] != norm:
                previous = last[0]
                after = t.followups.touch(previous, Counter())
                after[norm] += 1
                _trim(after, self.limits.followups)
            if last is None or at_ms >= last[1]:  # a late record does not rewind it
                t.users.touch(user, (norm, at_ms))
                t.users[user] = (norm, at_ms)
        return previous

    def predict(self, tenant: str, after: str | None, at_ms: int, k: int, *,
                min_share: float = 0.0) -> list[Prediction]:
        """At most ``k`` likely next queries of ``tenant`` after the query ``after``
        (any form; None: no query), best first, each at least ``min_share`` of what it
        was counted against."""
        t = self._tenants.get(tenant)
        if t is None or k <= 0:
            return []
        out: list[Prediction] = []
        seen = set()
        if after is not None:
            norm = normalise(after)
            seen.add(norm)
            counts = t.followups.get(norm)
            if counts:
                total = sum(counts.values())
                for nxt, n in counts.most_common(k):
                    if n / total >= min_share:
                        out.append(Prediction(t.texts.get(nxt, nxt), nxt, n / total,
                                              "follow-up"))
                        seen.add(nxt)
        hot = t.hours[(at_ms // HOUR_MS) % DAY_HOURS]
        total = sum(hot.values())
        for nxt, n in hot.most_common(k + len(seen)):
            if len(out) >= k:
                break
            if nxt not in seen and n / total >= min_share:
                out.append(Prediction(t.texts.get(nxt, nxt), nxt, n / total, "hot"))
                seen.add(nxt)
        return out[:k]
