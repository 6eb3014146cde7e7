"""Prometheus metrics of one gateway process (a registry per app, no globals)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from eventlog.index import TERMINAL_STATUSES
from eventlog.streams import terminal_status

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Seconds from a stream's creation to its first generated event at a client: a worker
#: picks the job up and starts generating (tens of ms idle, seconds when saturated).
FIRST_EVENT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds from a resume's arrival to its first backlog event written: about a
#: millisecond from the memory tail, a catch-up read (tens of ms) from Kafka.
RESUME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Breaker states as ``tidemark_breaker_state`` reports them.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("tidemark_sse_connections", "Open SSE responses", registry=r)
        responses = Gauge("tidemark_open_responses", "Open streaming responses by transport "
                          "(sse, websocket, long-poll; tidemark_sse_connections is their sum)",
                          ["transport"], registry=r)
        self.open_responses = {k: responses.labels(k) for k in ("sse", "websocket",
                                                                "long-poll")}
        self.buffered = Gauge(
            "tidemark_client_buffered_bytes", "Bytes held for the clients of open "
            "responses: their live feeds in the hub (each at most "
            "TIDEMARK_CLIENT_BUFFER_BYTES) and what their transports have not sent yet",
            registry=r)
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
        self.lag_coalesced = Counter(
            "tidemark_lag_coalesced_total", "Responses that fell behind (their buffer "
            "overflowed) and were caught up with their partial results coalesced from then "
            "on; subscribers batched already are not counted", registry=r)
        self.created = Counter("tidemark_streams_created_total", "Streams created",
                               ["generator"], registry=r)
        self.published = Counter("tidemark_events_published_total",
                                 "Events appended through the publish API", registry=r)
        self.limits_fail_open = Counter(
            "tidemark_limits_fail_open_total", "Requests let through unchecked by the "
            "per-user request limit because the limits store (Redis) did not answer in time "
            "(reads and cancels fail open; creates and publishes answer 503)", registry=r)
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

        self.first_event = Histogram(
            "tidemark_first_event_seconds",
            "From a stream's creation (the create's ts) to its first generated event (seq "
            "1) written to a client that asked from the start; streams created over 60 s "
            "before are not counted", buckets=FIRST_EVENT_BUCKETS, registry=r)
        self.resume = Histogram(
            "tidemark_resume_seconds", "From a resume's arrival (a request with a "
            "position) to its first backlog event written, by the backlog's source",
            ["source"], buckets=RESUME_BUCKETS, registry=r)
        self.resume_source = {k: self.resume.labels(k) for k in ("memory", "kafka")}
        self.tail_lag = Gauge(
            "tidemark_tail_lag_records", "Records of the events partition the hub has not "
            "read yet (last stable offset minus position), sampled every "
            "TIDEMARK_LAG_SAMPLE_SECONDS", ["partition"], registry=r)
        self.breaker_state = Gauge(
            "tidemark_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["name"], registry=r)
        self.breaker_transitions = Counter(
            "tidemark_breaker_transitions_total", "Circuit breaker state changes, by the "
            "state entered", ["name", "to"], registry=r)
        for state in BREAKER_STATES:
            self.breaker_transitions.labels("kafka", state)

    def count_terminal(self, event_type: str) -> None:
        self.outcomes.labels(terminal_status(event_type)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


#: The process's metrics, for code outside the services (the problem middleware).
METRICS = web.AppKey("metrics", Metrics)
