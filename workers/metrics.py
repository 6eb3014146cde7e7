"""Prometheus metrics of one worker process, served on a small HTTP endpoint."""

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


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.streams = Counter("tidemark_worker_streams_total",
                               "Streams this worker ended, by outcome; 'resumed' counts "
                               "streams taken over mid-way", ["outcome"], registry=r)
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
        for outcome in (*TERMINAL_STATUSES, "resumed"):
            self.streams.labels(outcome)
        for kind in ("priority", "other"):
            self.started.labels(kind)
            self.waiting.labels(kind)

    async def serve(self, host: str, port: int) -> tuple[web.AppRunner, int]:
        """Serve ``GET /metrics``; return the runner and the bound port."""

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner, runner.addresses[0][1]
