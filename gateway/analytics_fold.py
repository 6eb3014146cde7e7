"""The analytics fold: facts read from the log, in fixed time buckets per window, and the
``GET /v1/analytics`` document built from them.

Two kinds of input, both read from Kafka by every gateway (``gateway.analytics_feed``),
so that every gateway that has read the same records holds the same fold:

* stream-index records (``tidemark.streams``): a stream is *created* at its record's
  ``created_at`` and *ends* (completed, failed, cancelled) at its terminal record's
  ``updated_at``, with ``last_seq + 1`` events. Each stream is counted once however many
  of its snapshots are read (a bounded memory of recent stream ids, :data:`MAX_STREAMS`).
* reports (``tidemark.<ns>.analytics``): what one gateway process saw in one interval,
  at the report's ``ts``: first-event and resume latencies (histograms, see
  ``gateway.analytics_hist``), cut-offs, and its open connections per tenant.

Every figure is kept per tenant and per (tenant, experiment, variant); usage also per
(tenant, user). Memory is bounded: each window has a fixed number of buckets
(:data:`WINDOWS`), and a bucket holds at most :data:`MAX_TENANTS` tenants,
:data:`MAX_VARIANTS` variant keys and :data:`MAX_USERS` users; overflow is folded into
the tenant or user ``other`` (variants past the bound count in the totals only).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from eventlog.index import CANCELLED, COMPLETED, FAILED, StreamInfo
from gateway.analytics_hist import Histogram

#: Window name -> (span, bucket width), in ms. Every window has at most 72 buckets.
WINDOWS: Final[Mapping[str, tuple[int, int]]] = {
    "1m": (60_000, 5_000),
    "5m": (300_000, 10_000),
    "15m": (900_000, 30_000),
    "1h": (3_600_000, 60_000),
    "6h": (21_600_000, 300_000),
    "24h": (86_400_000, 1_200_000),
}
DEFAULT_WINDOWS: Final = ("5m", "1h")
LONGEST_MS: Final = max(span for span, _ in WINDOWS.values())
#: The window whose buckets carry the active-stream ledger (the longest).
_LEDGER: Final = "24h"

OTHER: Final = "other"
MAX_TENANTS: Final = 200
MAX_VARIANTS: Final = 100
MAX_USERS: Final = 1000
#: Streams whose counting this fold remembers (to count each one once).
MAX_STREAMS: Final = 100_000
#: A process that has not reported for this many of its intervals counts 0 connections.
STALE_INTERVALS: Final = 3

#: A figures key: (tenant, experiment, variant); ("t", "", "") is the whole tenant.
Key = tuple[str, str, str]
ALL: Final = "*"


@dataclass(slots=True)
class Figures:
    """What one bucket holds for one key."""

    created: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    events: int = 0
    cutoffs: int = 0
    #: Streams created in this bucket and not ended yet (the active-stream ledger).
    open: int = 0
    first_event: Histogram = field(default_factory=Histogram)
    resume_memory: Histogram = field(default_factory=Histogram)
    resume_kafka: Histogram = field(default_factory=Histogram)

    def merge(self, other: Figures) -> None:
        self.created += other.created
        self.completed += other.completed
        self.failed += other.failed
        self.cancelled += other.cancelled
        self.events += other.events
        self.cutoffs += other.cutoffs
        self.open += other.open
        self.first_event.merge(other.first_event)
        self.resume_memory.merge(other.resume_memory)
        self.resume_kafka.merge(other.resume_kafka)

    def streams_json(self) -> dict[str, Any]:
        ended = self.completed + self.failed + self.cancelled
        return {"created": self.created, "completed": self.completed, "failed": self.failed,
                "cancelled": self.cancelled,
                "success_rate": round(self.completed / ended, 3) if ended else None,
                "failure_rate": round(self.failed / ended, 3) if ended else None}


@dataclass(slots=True)
class Gauge:
    """One process's newest report: when, its interval, its connections per tenant."""

    ts: int
    interval_ms: int
    connections: dict[str, int]

    def live_at(self, now: int) -> bool:
        return now - self.ts <= STALE_INTERVALS * self.interval_ms


@dataclass(slots=True)
class Bucket:
    figures: dict[Key, Figures] = field(default_factory=dict)
    #: (tenant, user, experiment, variant) -> [streams created, events of streams ended];
    #: experiment and variant "" for the user's whole usage.
    users: dict[tuple[str, str, str, str], list[int]] = field(default_factory=dict)
    #: process -> its newest report in this bucket.
    gauges: dict[str, Gauge] = field(default_factory=dict)
    _tenants: set[str] = field(default_factory=set)
    _variants: int = 0

    def tenant(self, tenant: str) -> str:
        if tenant in self._tenants:
            return tenant
        if len(self._tenants) >= MAX_TENANTS:
            return OTHER
        self._tenants.add(tenant)
        return tenant

    def keys(self, tenant: str, experiments: Mapping[str, str]) -> list[Figures]:
        """The figures a fact about a stream of ``tenant`` in ``experiments`` goes to."""
        tenant = self.tenant(tenant)
        out = [self._get((tenant, "", ""))]
        for experiment, variant in experiments.items():
            key = (tenant, experiment, variant)
            fig = self.figures.get(key)
            if fig is None:
                if self._variants >= MAX_VARIANTS:
                    continue
                self._variants += 1
                fig = self.figures[key] = Figures()
            out.append(fig)
        return out

    def _get(self, key: Key) -> Figures:
        fig = self.figures.get(key)
        if fig is None:
            fig = self.figures[key] = Figures()
        return fig

    def user_rows(self, tenant: str, user: str,
                  experiments: Mapping[str, str]) -> list[list[int]]:
        """The usage rows of a stream of ``user``: theirs, and theirs in each variant."""
        tenant = self.tenant(tenant)
        return [self._user((tenant, user, "", "")),
                *(self._user((tenant, user, e, v)) for e, v in experiments.items())]

    def _user(self, key: tuple[str, str, str, str]) -> list[int]:
        row = self.users.get(key)
        if row is None:
            if len(self.users) >= MAX_USERS:
                key = (key[0], OTHER, key[2], key[3])
                row = self.users.get(key)
            if row is None:
                row = self.users[key] = [0, 0]
        return row


class Ring:
    """The buckets of one window: bucket ``i`` covers ``[i * width, (i + 1) * width)``;
    at time ``now`` the window is the ``span // width`` buckets ending with ``now``'s."""

    def __init__(self, span: int, width: int) -> None:
        self.span = span
        self.width = width
        self.count = span // width
        self.buckets: dict[int, Bucket] = {}
        self._newest = 0

    def oldest_index(self, now: int) -> int:
        return now // self.width - self.count + 1

    def at(self, ts: int, now: int) -> Bucket | None:
        """The bucket of time ``ts`` (None when it has left the window as of ``now``, or
        is in the future by more than one bucket)."""
        i = ts // self.width
        if i < self.oldest_index(max(now, ts)) or i > now // self.width + 1:
            return None
        bucket = self.buckets.get(i)
        if bucket is None:
            bucket = self.buckets[i] = Bucket()
            if i > self._newest:
                self._newest = i
                self._prune(i)
        return bucket

    def _prune(self, newest: int) -> None:
        low = newest - self.count
        for i in [i for i in self.buckets if i <= low]:
            del self.buckets[i]

    def window(self, now: int) -> list[tuple[int, Bucket | None]]:
        """``(bucket start ms, bucket or None)`` of the window as of ``now``, oldest first."""
        first = self.oldest_index(now)
        return [(i * self.width, self.buckets.get(i))
                for i in range(first, first + self.count)]


@dataclass(slots=True)
class _Seen:
    tenant: str
    owner: str
    experiments: dict[str, str]
    created_at: int
    created: bool = False
    ended: bool = False


def _matches(tenant: str, selected: str) -> bool:
    return selected == ALL or tenant == selected


class Fold:
    """Everything the analytics document is built from (see the module docstring)."""

    def __init__(self, *, default_tenant: str, recent: int, top_users: int) -> None:
        self.default_tenant = default_tenant
        self.recent_size = recent
        self.top_users = top_users
        self.rings = {name: Ring(span, width) for name, (span, width) in WINDOWS.items()}
        self._streams: OrderedDict[str, _Seen] = OrderedDict()
        #: tenant -> newest streams by created_at; tenant -> newest failed streams.
        self._recent: dict[str, OrderedDict[str, StreamInfo]] = {}
        self._failed: dict[str, OrderedDict[str, StreamInfo]] = {}
        #: process -> its newest report's gauges.
        self._gauges: dict[str, Gauge] = {}
        #: The newest record time folded (ms).
        self.as_of = 0

    # --- input ------------------------------------------------------------------------

    def _buckets(self, ts: int, now: int) -> Iterable[tuple[str, Bucket]]:
        for name, ring in self.rings.items():
            bucket = ring.at(ts, now)
            if bucket is not None:
                yield name, bucket

    def stream(self, stream_id: str) -> tuple[str, dict[str, str]] | None:
        """``(tenant, experiments)`` of a stream this fold has seen recently."""
        seen = self._streams.get(stream_id)
        return None if seen is None else (seen.tenant, seen.experiments)

    def apply_index(self, info: StreamInfo, *, now: int, record_ts: int = 0) -> None:
        """Fold one stream-index record (any snapshot: queued, running or terminal)."""
        self.as_of = max(self.as_of, record_ts, info.updated_at)
        tenant = info.tenant or self.default_tenant
        seen = self._streams.get(info.stream_id)
        if seen is None:
            seen = self._streams[info.stream_id] = _Seen(
                tenant=tenant, owner=info.owner, experiments=dict(info.experiments),
                created_at=info.created_at)
            if len(self._streams) > MAX_STREAMS:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(info.stream_id)
        if not seen.created:
            # Any snapshot carries created_at: a stream whose first record compaction
            # removed is still counted, from its later one.
            seen.created = True
            for name, bucket in self._buckets(info.created_at, now):
                for fig in bucket.keys(tenant, seen.experiments):
                    fig.created += 1
                    if name == _LEDGER:
                        fig.open += 1
                for row in bucket.user_rows(tenant, info.owner, seen.experiments):
                    row[0] += 1
        if info.finished and not seen.ended:
            seen.ended = True
            events = info.last_seq + 1
            for _, bucket in self._buckets(info.updated_at, now):
                for fig in bucket.keys(tenant, seen.experiments):
                    if info.status == COMPLETED:
                        fig.completed += 1
                    elif info.status == FAILED:
                        fig.failed += 1
                    elif info.status == CANCELLED:
                        fig.cancelled += 1
                    fig.events += events
                for row in bucket.user_rows(tenant, info.owner, seen.experiments):
                    row[1] += events
            ledger = self.rings[_LEDGER].at(seen.created_at, now)
            if ledger is not None:
                for fig in ledger.keys(tenant, seen.experiments):
                    fig.open -= 1
        self._keep_recent(tenant, info)

    def _keep_recent(self, tenant: str, info: StreamInfo) -> None:
        for table, wanted, by_end in ((self._recent, True, False),
                                      (self._failed, info.status == FAILED, True)):
            if not wanted:
                continue
            rows = table.get(tenant)
            if rows is None:
                if len(table) >= MAX_TENANTS:
                    continue
                rows = table[tenant] = OrderedDict()
            rows[info.stream_id] = info
            if len(rows) > self.recent_size:
                # Keep the newest by creation (failed: by when they failed).
                oldest = min(rows.values(),
                             key=lambda i: i.updated_at if by_end else i.created_at)
                del rows[oldest.stream_id]

    def apply_report(self, report: Mapping[str, Any], *, now: int) -> None:
        """Fold one process's report (see ``gateway.analytics_recorder.build_report``)."""
        try:
            process = str(report["process"])
            ts = int(report["ts"])
            interval = max(1, int(report["interval_ms"]))
            connections = {str(t): int(n) for t, n in report.get("connections", {}).items()}
            groups = list(report.get("groups", []))
        except (KeyError, TypeError, ValueError, AttributeError):
            return
        self.as_of = max(self.as_of, ts)
        gauge = Gauge(ts=ts, interval_ms=interval, connections=connections)
        old = self._gauges.get(process)
        if old is None or old.ts <= ts:
            self._gauges[process] = gauge
        buckets = [b for _, b in self._buckets(ts, now)]
        for bucket in buckets:
            prev = bucket.gauges.get(process)
            if prev is None or prev.ts <= ts:
                bucket.gauges[process] = gauge
        for group in groups:
            if not isinstance(group, dict):
                continue
            tenant = str(group.get("tenant", ""))
            experiments = group.get("experiments") or {}
            if not isinstance(experiments, dict):
                experiments = {}
            experiments = {str(k): str(v) for k, v in experiments.items()}
            for bucket in buckets:
                for fig in bucket.keys(tenant, experiments):
                    fig.first_event.merge_json(group.get("first_event") or {})
                    fig.resume_memory.merge_json(group.get("resume_memory") or {})
                    fig.resume_kafka.merge_json(group.get("resume_kafka") or {})
                    cutoffs = group.get("cutoffs", 0)
                    if isinstance(cutoffs, int) and cutoffs > 0:
                        fig.cutoffs += cutoffs

    # --- output -----------------------------------------------------------------------

    def connections(self, selected: str, now: int) -> int:
        return sum(n for g in self._gauges.values() if g.live_at(now)
                   for t, n in g.connections.items() if _matches(t, selected))

    def active_streams(self, selected: str, now: int) -> int:
        total = 0
        for _, bucket in self.rings[_LEDGER].window(now):
            if bucket is None:
                continue
            for (tenant, experiment, _), fig in bucket.figures.items():
                if not experiment and _matches(tenant, selected):
                    total += fig.open
        return max(0, total)

    def failed_streams(self, selected: str) -> list[StreamInfo]:
        """The newest failed streams of the selection (for ``recent.errors``)."""
        rows = [i for t, r in self._failed.items() if _matches(t, selected)
                for i in r.values()]
        rows.sort(key=lambda i: (i.updated_at, i.stream_id), reverse=True)
        return rows[:self.recent_size]

    def recent_streams(self, selected: str) -> list[dict[str, Any]]:
        rows = [i for t, r in self._recent.items() if _matches(t, selected)
                for i in r.values()]
        rows.sort(key=lambda i: (i.created_at, i.stream_id), reverse=True)
        return [{"stream": i.stream_id, "tenant": i.tenant or self.default_tenant,
                 "owner": i.owner, "generator": i.generator, "status": i.status,
                 "created_at": i.created_at, "updated_at": i.updated_at,
                 "experiments": dict(i.experiments)}
                for i in rows[:self.recent_size]]

    def window(self, name: str, selected: str, now: int) -> dict[str, Any]:
        ring = self.rings[name]
        #: (experiment, variant) -> tenant -> figures; ("", "") is the whole window.
        figures: dict[tuple[str, str], dict[str, Figures]] = {}
        users: dict[tuple[str, str], dict[tuple[str, str], list[int]]] = {}
        series: list[dict[str, Any]] = []
        buckets = ring.window(now)
        for idx, (_, bucket) in enumerate(buckets):
            point = Figures()
            if bucket is not None:
                for (tenant, experiment, variant), fig in bucket.figures.items():
                    if not _matches(tenant, selected):
                        continue
                    per_tenant = figures.setdefault((experiment, variant), {})
                    per_tenant.setdefault(tenant, Figures()).merge(fig)
                    if not experiment:
                        point.merge(fig)
                for (tenant, user, experiment, variant), (streams, events) in \
                        bucket.users.items():
                    if _matches(tenant, selected):
                        rows = users.setdefault((experiment, variant), {})
                        row = rows.setdefault((tenant, user), [0, 0])
                        row[0] += streams
                        row[1] += events
            series.append(self._point(idx, point, buckets, ring.width, selected))
        self._active_series(series, selected, now)
        out = self._figures_json(figures.pop(("", ""), {}), users.pop(("", ""), {}))
        nested: dict[str, dict[str, Any]] = {}
        for (experiment, variant), per_tenant in sorted(figures.items()):
            nested.setdefault(experiment, {})[variant] = self._figures_json(
                per_tenant, users.get((experiment, variant), {}))
        return {"from": buckets[0][0], "to": now, **out, "variants": nested,
                "series": series}

    def _figures_json(self, tenants: dict[str, Figures],
                      users: dict[tuple[str, str], list[int]]) -> dict[str, Any]:
        fig = Figures()
        for f in tenants.values():
            fig.merge(f)
        top = sorted(users.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        return {
            "streams": fig.streams_json(),
            "first_event_ms": fig.first_event.summary(),
            "resume_ms": {"memory": fig.resume_memory.summary(),
                          "kafka": fig.resume_kafka.summary()},
            "cutoffs": fig.cutoffs,
            "usage": {
                "tenants": [{"tenant": t, "streams": f.created, "events": f.events}
                            for t, f in sorted(tenants.items(),
                                               key=lambda kv: (-kv[1].created, kv[0]))],
                "users": [{"tenant": t, "user": u, "streams": s, "events": e}
                          for (t, u), (s, e) in top[:self.top_users]],
            },
        }

    @staticmethod
    def _point(idx: int, fig: Figures, buckets: list[tuple[int, Bucket | None]],
               width: int, selected: str) -> dict[str, Any]:
        start = buckets[idx][0]
        end = start + width
        # Each process's newest report in this bucket, else in the one before, unless it
        # is stale at the bucket's end.
        connections = 0
        seen: set[str] = set()
        for _, b in buckets[max(0, idx - 1):idx + 1][::-1]:
            if b is None:
                continue
            for process, gauge in b.gauges.items():
                if process in seen or not gauge.live_at(end):
                    continue
                seen.add(process)
                connections += sum(n for t, n in gauge.connections.items()
                                   if _matches(t, selected))
        return {"t": start, "created": fig.created, "completed": fig.completed,
                "failed": fig.failed, "cancelled": fig.cancelled,
                "first_event_p50": fig.first_event.percentile(0.5),
                "first_event_p99": fig.first_event.percentile(0.99),
                "active_streams": 0, "connections": connections}

    def _active_series(self, series: list[dict[str, Any]], selected: str, now: int) -> None:
        """Active streams at each bucket's end: today's figure, less what was created
        and plus what ended in the buckets after it."""
        active = self.active_streams(selected, now)
        for point in reversed(series):
            point["active_streams"] = max(0, active)
            active -= point["created"] - (point["completed"] + point["failed"]
                                          + point["cancelled"])

    def document(self, *, selected: str, windows: Iterable[str], now: int) -> dict[str, Any]:
        """The document for tenant ``selected`` (``*``: every tenant), without
        ``recent.errors`` (the feed reads those from the log)."""
        return {
            "tenant": selected,
            "generated_at": now,
            "as_of": self.as_of,
            "active": {"streams": self.active_streams(selected, now),
                       "connections": self.connections(selected, now)},
            "windows": {name: self.window(name, selected, now) for name in windows},
            "recent": {"streams": self.recent_streams(selected), "errors": []},
        }


def parse_windows(values: list[str]) -> list[str]:
    """The requested windows, in order, without repeats; ValueError names a bad one."""
    out: list[str] = []
    for value in values or list(DEFAULT_WINDOWS):
        if value not in WINDOWS:
            raise ValueError(value)
        if value not in out:
            out.append(value)
    return out

