"""What one gateway process observes for analytics, and the report it publishes of it.

The hot paths (``gateway.streaming``, the write watchdog in ``gateway.services``) call
:meth:`Recorder.served` and :meth:`Recorder.cutoff`: each appends one tuple to a bounded
list, no I/O. Every ``TIDEMARK_ANALYTICS_INTERVAL`` the feed (``gateway.analytics_feed``)
takes the list and turns it into one report with :func:`build_report`, grouping the
observations by (tenant, the stream's A/B variants) as the stream index says them.

A fact is observed by exactly one process (the gateway that served the response), so
the reports of all gateways add up without counting anything twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from gateway.analytics_hist import Histogram
from gateway.auth import IDENTITY

FIRST_EVENT: Final = "first_event"
RESUME_MEMORY: Final = "resume_memory"
RESUME_KAFKA: Final = "resume_kafka"
CUTOFF: Final = "cutoff"
#: Observations kept per interval; past this they are counted in ``dropped`` only.
MAX_OBSERVATIONS: Final = 50_000
REPORT_VERSION: Final = 1

#: (kind, stream id, tenant, milliseconds)
Observation = tuple[str, str, str, float]


class _Served(Protocol):
    """What the recorder reads of an SSE response (``gateway.streaming.Session``)."""

    @property
    def stream_id(self) -> str: ...
    @property
    def request(self) -> Any: ...


def tenant_of(session: _Served) -> str:
    identity = session.request.get(IDENTITY)
    return "" if identity is None else str(identity.tenant)


class Recorder:
    """The observations of one interval."""

    __slots__ = ("dropped", "observations")

    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.dropped = 0

    def _add(self, item: Observation) -> None:
        if len(self.observations) < MAX_OBSERVATIONS:
            self.observations.append(item)
        else:
            self.dropped += 1

    def served(self, session: _Served, *, resumed: bool, source: str | None,
               began: float) -> None:
        """An SSE response is about to write its first bytes (its headers, retry line
        and first backlog batch, in one write).

        A new subscription (no position) whose first event was in the log counts as a
        first-event latency; a resume counts by where its backlog came from (none: from
        memory, it was live at once). Latency: loop time since ``began``."""
        ms = (asyncio.get_running_loop().time() - began) * 1000
        if not resumed:
            if source is not None:
                self._add((FIRST_EVENT, session.stream_id, tenant_of(session), ms))
            return
        kind = RESUME_KAFKA if source == "kafka" else RESUME_MEMORY
        self._add((kind, session.stream_id, tenant_of(session), ms))

    def cutoff(self, session: _Served) -> None:
        """A response was ended because its client fell behind or stopped reading."""
        self._add((CUTOFF, session.stream_id, tenant_of(session), 0.0))

    def take(self) -> tuple[list[Observation], int]:
        """The interval's observations and how many were dropped; starts the next one."""
        out, dropped = self.observations, self.dropped
        self.observations, self.dropped = [], 0
        return out, dropped


#: stream id -> (tenant, experiments) as the stream index says, or None if unknown.
Resolve = Callable[[str], "tuple[str, dict[str, str]] | None"]


def build_report(observations: Iterable[Observation], *, process: str, ts: int,
                 interval_ms: int, connections: Iterable[str], resolve: Resolve,
                 dropped: int = 0) -> dict[str, Any]:
    """One interval's report. ``connections``: the tenant of each open SSE response."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    hists: dict[tuple[tuple[str, tuple[tuple[str, str], ...]], str], Histogram] = {}
    for kind, stream_id, tenant, ms in observations:
        known = resolve(stream_id)
        experiments: dict[str, str] = {}
        if known is not None:
            tenant, experiments = known[0] or tenant, known[1]
        key = (tenant, tuple(sorted(experiments.items())))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"tenant": tenant, "experiments": dict(experiments),
                                   "cutoffs": 0}
        if kind == CUTOFF:
            group["cutoffs"] += 1
            continue
        hist = hists.get((key, kind))
        if hist is None:
            hist = hists[(key, kind)] = Histogram()
        hist.add(ms)
    for (key, kind), hist in hists.items():
        groups[key][kind] = hist.to_json()
    return {"v": REPORT_VERSION, "process": process, "ts": ts, "interval_ms": interval_ms,
            "connections": dict(Counter(connections)), "groups": list(groups.values()),
            "dropped": dropped}
