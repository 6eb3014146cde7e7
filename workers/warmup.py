"""Predictive warm-up: pre-generate the queries a tenant's users are likely to ask next
into the similar-query cache (``TIDEMARK_WARMUP=on``; docs/cache.md).

Every worker with the warm-up on reads both jobs topics from their start (the log of
past queries: each job names its tenant, its user, its query and when it was made) and
feeds :class:`eventlog.predict.QueryPredictor` in the order the queries were made: the
history (everything up to the topics' ends when it starts) is sorted by time once it is
read, and later jobs go through a short reorder window (``_REORDER_MS``), since the
partitions of one user's session are read in no particular order.

The worker that starts generating a new job (the owner of its jobs partition, one at a
time) calls :meth:`WarmUp.trigger`: after its query it predicts at most
``TIDEMARK_WARMUP_TOP`` next queries (the query's frequent follow-ups in its users'
sessions, then the hour's hottest), each at least ``TIDEMARK_WARMUP_MIN_SHARE`` of what
it was counted against, and creates a stream for each one that is not cached yet, in the
trigger's scope (generator, options, response format), within ``TIDEMARK_WARMUP_BUDGET``
streams per tenant per minute (each worker takes its share, by the jobs partitions it
owns). The stream is generated like any (by whichever worker owns its partition) and,
once complete, is a cache entry: the user who then asks gets a replay, with the first
event at once.

Warm-up streams belong to the tenant, owned by the user ``tidemark-warmup`` (no other
user reads them directly), and are neither learnt from nor trigger predictions. A
prediction made again while its stream is still being generated is skipped (``recent``,
for the cache TTL); a trigger taken over before its first event may predict twice
(harmless: the newer cache entry wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventlog.clients import make_consumer, make_producer, started, stop_client
from eventlog.jobs import Job, parse_job_record
from eventlog.predict import Prediction, PredictorLimits, QueryPredictor
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.streams import StreamCreator, now_ms
from eventlog.topics import jobs_topics
from schemas import batch
from workers.cache import QueryCache, fresh
from workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)

#: The owner (``sub``) of the streams the warm-up makes.
WARMUP_OWNER: Final = "tidemark-warmup"
#: Jobs read after the history wait this long to be learnt in time order with jobs of
#: other partitions; at most ``_PENDING`` wait.
_REORDER_MS: Final = 2_000
_PENDING: Final = 10_000
#: Triggers waiting for their predictions.
_TRIGGERS: Final = 256
#: Tenants with a budget bucket, and predictions remembered as made (both bounded).
_TENANTS: Final = 1_000
_RECENT: Final = 10_000


class Budget:
    """A token bucket per tenant: ``per_minute`` streams a minute, at most that many at
    once, times ``share()`` (this worker's part of the cluster's budget; its bucket
    holds at least one stream)."""

    def __init__(self, per_minute: int, *, share: Callable[[], float] = lambda: 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._share = share
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, tenant: str) -> bool:
        now = self._clock()
        per_minute = self._per_minute * max(0.0, min(1.0, self._share()))
        if per_minute <= 0:
            return False
        cap = max(1.0, per_minute)
        tokens, at = self._buckets.pop(tenant, (cap, now))
        tokens = min(cap, tokens + (now - at) * per_minute / 60.0)
        ok = tokens >= 1.0
        self._buckets[tenant] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > _TENANTS:
            self._buckets.popitem(last=False)
        return ok


class WarmUp:
    def __init__(self, settings: Settings, cache: QueryCache, metrics: WorkerMetrics, *,
                 versions: dict[str, str], share: Callable[[], float]) -> None:
        """``share``: the part of the jobs partitions this worker owns (its part of
        each tenant's budget)."""
        self._settings = settings
        self._cs = settings.cache
        self._cache = cache
        self._metrics = metrics
        self._versions = versions
        self.predictor = QueryPredictor(PredictorLimits(
            session_gap_ms=int(self._cs.warmup_session_gap_s * 1000)))
        self._budget = Budget(self._cs.warmup_budget, share=share)
        #: (scope, normalised query) -> when it was pre-generated (ms).
        self._recent: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._triggers: asyncio.Queue[Job] = asyncio.Queue(_TRIGGERS)
        #: Jobs read but not learnt yet: (created_at, arrival, job).
        self._pending: list[tuple[int, int, Job]] = []
        self._arrivals = 0
        #: Set once the history (the jobs topics up to their ends at start) is learnt.
        self.learnt = asyncio.Event()

    def trigger(self, job: Job) -> None:
        """``job`` starts generating on this worker: predict after it (in the background;
        at most ``_TRIGGERS`` waiting, the rest skipped as ``busy``)."""
        if not self._counts(job):
            return
        try:
            self._triggers.put_nowait(job)
        except asyncio.QueueFull:
            self._skip("busy")

    async def run(self) -> None:
        kafka = self._settings.kafka
        consumer = await started(lambda: make_consumer(kafka, role="warmup"), kafka,
                                 "warm-up start")
        producer = await started(lambda: make_producer(kafka, role="warmup"), kafka,
                                 "warm-up producer start")
        reader = LogReader(kafka, size=1, role="warmup-reader")
        creator = StreamCreator(self._settings.log, producer, floor=reader.floor)
        acting = asyncio.create_task(self._act(creator), name="warmup-act")
        try:
            await self._learn(consumer)
        finally:
            acting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acting
            await reader.close()
            await stop_client(producer)
            await stop_client(consumer)

    async def _learn(self, consumer: AIOKafkaConsumer) -> None:
        """Read the jobs topics from their start and learn every job, in time order."""
        tps = [TopicPartition(topic, p) for topic in jobs_topics(self._settings.log.namespace)
               for p in range(self._settings.log.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        behind = {tp for tp in tps if ends.get(tp, 0) > 0}
        self.learnt.clear()
        if not behind:
            self.learnt.set()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=1000)
            for records in batches.values():
                for rec in records:
                    job = parse_job_record(rec.value or b"", rec.headers or ())
                    if isinstance(job, Job) and self._counts(job):
                        self._arrivals += 1
                        heapq.heappush(self._pending,
                                       (job.stream.created_at, self._arrivals, job))
            if behind:
                self._release(0)  # nothing but the oldest past _PENDING: memory stays bounded
                for tp in list(behind):
                    if await consumer.position(tp) >= ends[tp]:
                        behind.discard(tp)
                if not behind:
                    n = self._release(None)
                    log.info("warm-up: learnt %d past queries", n)
                    self.learnt.set()
            if not behind:
                self._release(now_ms() - _REORDER_MS)

    def _release(self, before_ms: int | None) -> int:
        """Learn the pending jobs made before ``before_ms`` (None: all), oldest first;
        past ``_PENDING`` the oldest go whatever their time."""
        n = 0
        pending = self._pending
        while pending and (before_ms is None or pending[0][0] < before_ms
                           or len(pending) > _PENDING):
            _, _, job = heapq.heappop(pending)
            info = job.stream
            self.predictor.observe(self._tenant(job), info.owner, job.query, info.created_at)
            n += 1
        return n

    async def _act(self, creator: StreamCreator) -> None:
        await self.learnt.wait()
        while True:
            job = await self._triggers.get()
            at = now_ms()
            try:
                for prediction in self.predictor.predict(
                        self._tenant(job), job.query, at, self._cs.warmup_top,
                        min_share=self._cs.warmup_min_share):
                    await self._pregenerate(creator, job, prediction, at)
            except asyncio.CancelledError:
                raise
            except Exception:  # an optimisation: the next trigger tries again
                log.exception("warm-up after stream %s failed", job.stream_id)

    def _counts(self, job: Job) -> bool:
        """Whether ``job`` is a user's query (not the warm-up's own nor a batch's)."""
        return job.stream.owner != WARMUP_OWNER and job.generator != batch.GENERATOR

    def _tenant(self, job: Job) -> str:
        return job.stream.tenant or self._settings.auth.default_tenant

    async def _pregenerate(self, creator: StreamCreator, trigger: Job,
                           prediction: Prediction, at: int) -> None:
        job = Job(stream=trigger.stream, query=prediction.query, options=trigger.options,
                  context=trigger.context)
        tenant = self._tenant(trigger)
        scope = self._cache.scope(job, self._versions.get(job.generator, "")).key
        key = (scope, prediction.norm)
        made = self._recent.get(key)
        if made is not None and at - made < self._cs.ttl_s * 1000:
            return self._skip("recent")
        index = self._cache.index
        entry = None if index is None else index.exact(scope, prediction.norm)
        if entry is not None and fresh(entry, at, self._cs.ttl_s):
            return self._skip("cached")
        if not self._budget.take(tenant):
            return self._skip("budget")
        info = await creator.create(
            generator=job.generator, query=prediction.query, options=job.options,
            with_job=True, tenant=tenant, owner=WARMUP_OWNER, context=job.context)
        self._recent[key] = at
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        self._metrics.warmups.labels(prediction.why).inc()
        log.info("warm-up: stream %s pre-generates %r for tenant %s after stream %s "
                 "(%s, share %.2f)", info.stream_id, prediction.query, tenant,
                 trigger.stream_id, prediction.why, prediction.share)
        return None

    def _skip(self, reason: str) -> None:
        self._metrics.warmup_skipped.labels(reason).inc()
