"""Prometheus metrics of one gateway process (a registry per app, no globals)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from eventlog.index import TERMINAL_STATUSES
from eventlog.streams import terminal_status

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("tidemark_sse_connections", "Open SSE responses", registry=r)
        self.delivered = Counter("tidemark_events_delivered_total",
                                 "Events written to SSE clients", registry=r)
        self.requests = Counter("tidemark_sse_requests_total", "SSE requests by outcome",
                                ["outcome"], registry=r)
        self.backlog = Counter("tidemark_backlog_events_total",
                               "Events served before live delivery, by source", ["source"],
                               registry=r)
        # Label children bound once: SSE requests are the hot path of a reconnect storm.
        self.request_outcome = {k: self.requests.labels(k) for k in ("new", "resumed", "ended")}
        self.backlog_source = {k: self.backlog.labels(k) for k in ("memory", "kafka")}
        self.cutoffs = Counter("tidemark_slow_client_cutoffs_total",
                               "Responses ended because the client fell behind", registry=r)
        self.created = Counter("tidemark_streams_created_total", "Streams created",
                               ["generator"], registry=r)
        self.published = Counter("tidemark_events_published_total",
                                 "Events appended through the publish API", registry=r)
        self.problems = Counter("tidemark_http_problems_total", "Error responses by status",
                                ["status"], registry=r)
        self.subscribers = Gauge("tidemark_hub_subscribers", "Live subscribers in the hub",
                                 registry=r)
        self.outcomes = Counter("tidemark_stream_outcomes_total",
                                "Streams that ended, by outcome, as this gateway saw them",
                                ["outcome"], registry=r)
        for outcome in TERMINAL_STATUSES:
            self.outcomes.labels(outcome)
        self.index_streams = Gauge(
            "tidemark_index_streams",
            "Streams held from the stream index (only ids that carry no location)",
            registry=r)
        self.known_streams = Gauge(
            "tidemark_lookup_cached_streams",
            "Streams whose place in the log this gateway remembers (a bounded cache)",
            registry=r)

    def count_terminal(self, event_type: str) -> None:
        self.outcomes.labels(terminal_status(event_type)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


#: The process's metrics, for code outside the services (the problem middleware).
METRICS = web.AppKey("metrics", Metrics)
