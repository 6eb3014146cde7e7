"""Prometheus metrics of one worker process, served on a small HTTP endpoint (with the
admin endpoints of ``workers.admin`` beside ``/metrics``)."""

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
from eventlog.settings import AuthSettings
from workers import admin

#: Seconds from an event's ``ts`` (when the worker made it) to the commit of the
#: transaction that wrote it: the linger (10 ms by default) plus one or two transaction
#: round trips; hundreds of ms when the worker is saturated.
TOKEN_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds from a transaction's begin to its commit acknowledged: a few ms on an idle
#: local broker, longer with full batches, replication or a broker failing over.
TRANSACTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                       5.0)
OTHER_TENANTS = "other"


class TenantLabels:
    """Bounded tenant label values: the first ``limit`` tenants seen keep their name,
    every later one is ``other`` (so a metric has at most ``limit`` + 1 tenants)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._named: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        if len(self._named) < self._limit and tenant != OTHER_TENANTS:
            self._named.add(tenant)
            return tenant
        return OTHER_TENANTS


class WorkerMetrics:
    def __init__(self, *, tenants: int = 20, default_tenant: str = "default") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.default_tenant = default_tenant
        self.tenant_label = TenantLabels(tenants)
        self.streams = Counter("tidemark_worker_streams_total",
                               "Streams this worker ended, by outcome and tenant; 'resumed' "
                               "counts streams taken over mid-way", ["outcome", "tenant"],
                               registry=r)
        self.events = Counter("tidemark_worker_events_total", "Events written", registry=r)
        self.transactions = Counter("tidemark_worker_transactions_total",
                                    "Kafka transactions committed", registry=r)
        self.running = Gauge("tidemark_worker_streams_running", "Streams being generated",
                             registry=r)
        self.partitions = Gauge("tidemark_worker_partitions", "Jobs partitions owned "
                                "(a partition number of both jobs topics)", registry=r)
        self.started = Counter("tidemark_worker_jobs_started_total",
                               "Jobs started, by class: priority (the priority jobs topic) "
                               "or other", ["class"], registry=r)
        self.waiting = Gauge("tidemark_worker_jobs_waiting",
                             "Jobs-topic records read and waiting for a free slot, by class",
                             ["class"], registry=r)
        self.token_latency = Histogram(
            "tidemark_worker_token_latency_seconds", "From an event's ts to the commit of "
            "the transaction that wrote it", buckets=TOKEN_LATENCY_BUCKETS, registry=r)
        self.transaction_seconds = Histogram(
            "tidemark_worker_transaction_seconds", "From a transaction's begin to its "
            "commit acknowledged", buckets=TRANSACTION_BUCKETS, registry=r)
        self.jobs_lag = Gauge(
            "tidemark_worker_jobs_lag_records", "Records of an owned jobs partition this "
            "worker has not read yet (log end minus position), sampled every "
            "TIDEMARK_LAG_SAMPLE_SECONDS", ["topic", "partition"], registry=r)
        self.takeovers = Counter(
            "tidemark_worker_takeovers_total", "Streams this worker took over mid-way "
            "(another worker had written part of them)", registry=r)
        self.rebalanced = Counter(
            "tidemark_worker_rebalance_partitions_total", "Jobs-topic partitions gained "
            "or lost in the group's rebalances", ["change"], registry=r)
        self.cache_lookups = Counter(
            "tidemark_worker_cache_lookups_total", "Similar-query cache lookups at job "
            "start, by outcome: hit_exact (same normalised query), hit_similar, miss",
            ["outcome"], registry=r)
        self.embed_seconds = Histogram(
            "tidemark_worker_embedding_seconds", "Time to embed one query (off the event "
            "loop; the first includes loading the model)", buckets=TRANSACTION_BUCKETS,
            registry=r)
        self.cache_entries = Gauge(
            "tidemark_worker_cache_entries", "Cached answers in this worker's index (the "
            "cache topic as read so far)", registry=r)
        self.warmups = Counter(
            "tidemark_worker_warmup_streams_total", "Streams the predictive warm-up "
            "created, by why the query was predicted: follow-up or hot", ["why"],
            registry=r)
        self.warmup_skipped = Counter(
            "tidemark_worker_warmup_skipped_total", "Predictions the warm-up did not "
            "pre-generate, by reason: cached, recent (pre-generated already), budget",
            ["reason"], registry=r)
        for why in ("follow-up", "hot"):
            self.warmups.labels(why)
        for reason in ("cached", "recent", "budget"):
            self.warmup_skipped.labels(reason)
        for outcome in ("hit_exact", "hit_similar", "miss"):
            self.cache_lookups.labels(outcome)
        for outcome in (*TERMINAL_STATUSES, "resumed"):
            self.streams.labels(outcome, self.tenant_label(default_tenant))
        for kind in ("priority", "other"):
            self.started.labels(kind)
            self.waiting.labels(kind)
        self.gained = self.rebalanced.labels("gained")
        self.lost = self.rebalanced.labels("lost")

    def count_stream(self, outcome: str, tenant: str) -> None:
        """One stream ended (or, ``resumed``, taken over) here; ``tenant`` "" is the
        default tenant's (streams made before tenants existed)."""
        self.streams.labels(outcome, self.tenant_label(tenant or self.default_tenant)).inc()

    def count_cache_lookup(self, outcome: str) -> None:
        self.cache_lookups.labels(outcome).inc()

    async def serve(self, host: str, port: int, *, auth: AuthSettings | None = None,
                    operators: str = "", instance: str = "") -> tuple[web.AppRunner, int]:
        """:func:`serve_metrics` of this worker's registry."""
        return await serve_metrics(self.registry, host, port, auth=auth,
                                   operators=operators, instance=instance)


async def serve_metrics(registry: CollectorRegistry, host: str, port: int, *,
                        auth: AuthSettings | None = None, operators: str = "",
                        instance: str = "") -> tuple[web.AppRunner, int]:
    """Serve ``GET /metrics`` of ``registry`` (and, given ``auth``, the admin endpoints of
    ``workers.admin``, for admins of tenant ``operators``, by default the default
    tenant); return the runner and the bound port."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    if auth is not None:
        admin.add_routes(app, auth, operators=operators or auth.default_tenant,
                         instance=instance)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


#: Seconds of one webhook delivery attempt (connect, send, answer): bounded by
#: ``TIDEMARK_WEBHOOK_TIMEOUT`` (15 s by default).
WEBHOOK_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                           15.0, 30.0)


class WebhookMetrics:
    """Prometheus metrics of one webhooks process (``tidemark webhooks``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.attempts = Counter(
            "tidemark_webhook_attempts_total", "Delivery attempts, by outcome: ok (a 2xx "
            "answer) or failed (another answer, a timeout, a refused or failed connection)",
            ["outcome"], registry=r)
        self.deliveries = Counter(
            "tidemark_webhook_deliveries_total", "Deliveries finished, by outcome: "
            "delivered, dead_letter (attempts ran out, no signer, or the webhook's queue "
            "was full) or dropped (the webhook was deleted)", ["outcome"], registry=r)
        self.attempt_seconds = Histogram(
            "tidemark_webhook_attempt_seconds", "Seconds of one delivery attempt",
            buckets=WEBHOOK_ATTEMPT_BUCKETS, registry=r)
        self.in_flight = Gauge("tidemark_webhook_deliveries_in_flight",
                               "Deliveries queued or being attempted in this process",
                               registry=r)
        # Every outcome from the start: a rate over a series that appears late is wrong.
        for outcome in ("ok", "failed"):
            self.attempts.labels(outcome)
        for outcome in ("delivered", "dead_letter", "dropped"):
            self.deliveries.labels(outcome)
