"""The worker: a consumer group over the two jobs topics, one transactional writer per
assignment (one producer for all the jobs partitions the group gave this process),
and one task per stream being generated.

Priority. Jobs of users whose tier has ``priority`` are on ``tidemark.<ns>.jobs.priority``,
the others on ``tidemark.<ns>.jobs``. Both topics have the same partition count and keys,
and the group uses the range assignor, which gives partition p of both topics to the same
worker: a *jobs partition* below is the pair, claimed and fenced as one. Records are read
into a backlog per topic-partition; whenever a slot is free, the worker starts jobs from
the priority backlogs first, then from the others (one record per partition in turn). A
partition with a backlog is paused, so a backlog holds at most one fetch. Jobs of other
tiers never take the last ``TIDEMARK_WORKER_PRIORITY_RESERVE`` share of the
``TIDEMARK_WORKER_MAX_JOBS`` slots, so a worker full of them still starts a priority job
at once. A cancel goes to both topics; the worker obeys it whichever topic brought it.

Fencing a zombie. aiokafka 0.14 commits offsets in a transaction with TxnOffsetCommit
v0, which carries no group generation, so the broker cannot tell a stale owner by its
offset commits. Instead, every writer's ``transactional.id`` is recorded where the
next owner of a jobs partition finds it, and that owner fences it before it writes:

1. *Claim*: for each jobs partition (number) it is assigned, a worker starts a
   short-lived producer with the partition's own ``transactional.id`` (``claim_id``). Its
   ``init_transactions`` fences whoever was claiming that partition before (an open
   claim is aborted).
2. It reads the committed offsets of the partition of both jobs topics and their
   metadata, the ``transactional.id`` of their last writer, and fences that writer
   (``init_transactions`` with its id aborts its open transaction and makes its every
   later call fail with ``ProducerFenced``).
3. It commits, in the claim producer's transaction, the same offsets with its own
   writer's id as metadata, and only then consumes and generates the partition's jobs.

A writer's id is new for every assignment (eager rebalancing revokes everything first,
so a worker never reuses a writer across assignments), and every offset its
transactions commit carries it too.

Traces (when on): each job's generation is a span continuing the trace of the job
record's ``traceparent``, with a span per transaction under it (``workers.tracing``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import ProducerFenced
from aiokafka.structs import OffsetAndMetadata
from opentelemetry.trace import Span

from eventlog import index, logcontext
from eventlog.cache import SIMILAR
from eventlog.clients import (
    make_admin,
    make_consumer,
    make_producer,
    retry_until,
    started,
    stop_client,
)
from eventlog.errors import KafkaUnavailable
from eventlog.index import StreamInfo
from eventlog.jobs import InputRecord, Job, parse_job_record
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.streams import StreamState, now_ms, scan_from_start, terminal_status
from eventlog.topics import ensure_topics, jobs_topic, jobs_topics
from schemas import batch, events
from schemas.events import HEADER_INPUT, HEADER_PROC, Event
from workers.batch import BatchGenerator, KafkaAccess
from workers.cache import Hit, QueryCache
from workers.experiments import announced
from workers.generators import Draft, Generator, Inputs, InteractiveGenerator, takes_input
from workers.lag import JobsLag
from workers.metrics import WorkerMetrics
from workers.outbox import Entry, OffsetTracker, Outbox
from workers.processors import (
    Output,
    Pipeline,
    Position,
    Processor,
    ProcessorUnavailable,
)
from workers.tracing import generation_span, note_end, note_start
from workers.warmup import WarmUp

log = logging.getLogger(__name__)


def group_id(namespace: str) -> str:
    return f"tidemark.{namespace}.workers"


def claim_id(namespace: str, partition: int) -> str:
    """One per jobs partition: the next claimer of the partition fences the last one."""
    return f"tidemark.{namespace}.worker.{partition}"


def writer_prefix(namespace: str) -> str:
    return f"tidemark.{namespace}.writer."


def new_writer_id(namespace: str) -> str:
    return writer_prefix(namespace) + uuid.uuid4().hex


#: The group's assignor. Range assigns each topic's partitions alone, in the same ranges
#: of the same sorted members, so co-numbered partitions of the two jobs topics (same
#: partition count) go to the same worker. Round robin (aiokafka's default) does not.
ASSIGNORS: tuple[type[RangePartitionAssignor]] = (RangePartitionAssignor,)

#: Most records one fetch hands over (and so most records a partition's backlog holds).
FETCH_RECORDS = 500


def reserved_slots(max_jobs: int, share: float) -> int:
    """How many of ``max_jobs`` slots only priority jobs may take: ``share`` of them,
    rounded up, but never all (other jobs keep at least one slot)."""
    if share <= 0 or max_jobs <= 1:
        return 0
    return min(max_jobs - 1, math.ceil(share * max_jobs - 1e-9))


class _Stream:
    """A stream being generated here."""

    def __init__(self, job: Job, offset: int, tp: TopicPartition, *, max_inputs: int) -> None:
        self.job = job
        self.offset = offset
        self.tp = tp
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False
        #: True only while the task awaits the generator's next draft.
        self.in_generator = False
        #: Inputs received from the jobs partition and not written yet, in order; the ids
        #: of every input in the log, written, or waiting here (none is written twice).
        self.inbox: deque[InputRecord] = deque()
        self.input_ids: set[str] = set()
        self.max_inputs = max_inputs
        #: The generator's inputs, if it takes input.
        self.inputs: Inputs | None = None
        #: Where the stream's events go, once the log was scanned (None before): the
        #: outbox, the index record, the generation span, the next seq, and whether
        #: nothing was written yet (the first write carries the index record).
        self.outbox: Outbox | None = None
        self.info: StreamInfo | None = None
        self.span: Span | None = None
        self.seq = 0
        self.first = True

    def offer(self, record: InputRecord) -> None:
        """An input for this stream from the jobs partition (maybe one it already has):
        written at once while the task awaits the generator (the generator may be
        waiting for it), else when the task next asks the generator for a draft."""
        if record.input_id in self.input_ids:
            return
        if len(self.input_ids) >= self.max_inputs:
            log.warning("stream %s: dropping input %s, the stream took %s inputs already",
                        self.job.stream_id, record.input_id, self.max_inputs)
            return
        self.input_ids.add(record.input_id)
        self.inbox.append(record)
        if self.in_generator:
            self.write_inputs()

    def write_inputs(self) -> None:
        """Queue the inputs that arrived as the stream's next events (each carries its
        input id, ``tm-input``) and hand them to the generator. Synchronous, so no draft
        can take a seq meanwhile: past the outbox's cap if need be (bounded by
        ``TIDEMARK_WORKER_STREAM_INPUTS``)."""
        outbox = self.outbox
        if outbox is None or self.cancel_requested:
            return
        while self.inbox:
            record = self.inbox.popleft()
            ev = Event(stream=self.job.stream_id, seq=self.seq, type=events.INPUT,
                       ts=now_ms(), data=record.data)
            outbox.put_nowait(Entry(event=ev, info=self.info, snapshot=self.first,
                                    span=self.span,
                                    headers=((HEADER_INPUT, record.input_id.encode()),)))
            log.info("stream %s: input %s at seq %s", self.job.stream_id, record.input_id,
                     self.seq)
            self.first = False
            self.seq += 1
            if self.inputs is not None:
                self.inputs.put(record.data)

    def request_cancel(self) -> None:
        """Stop the generator at once if it is being awaited, else at its next draft."""
        if self.cancel_requested:
            return
        self.cancel_requested = True
        if self.in_generator and self.task is not None:
            self.task.cancel()


class _Partition:
    """The jobs of one assigned partition of a jobs topic."""

    def __init__(self, tp: TopicPartition, tracker: OffsetTracker, *, priority: bool) -> None:
        self.tp = tp
        self.tracker = tracker
        self.priority = priority
        self.streams: dict[str, _Stream] = {}
        #: Records read and not handled yet, in order: the first is a job waiting for a
        #: slot. The partition is paused while there are any.
        self.backlog: deque[tuple[int, Job | InputRecord | str | None]] = deque()
        self.paused = False


class _Writer:
    """The transactional producer of one assignment, its outbox and its flusher."""

    def __init__(self, writer_id: str, producer: Any, outbox: Outbox) -> None:
        self.id = writer_id
        self.producer = producer
        self.outbox = outbox
        self.flusher = asyncio.create_task(outbox.run(), name=f"outbox-{writer_id}")

    @property
    def failed(self) -> BaseException | None:
        if self.flusher.done() and not self.flusher.cancelled():
            return self.flusher.exception()
        return None


class Worker:
    """Runs until cancelled: consumes jobs, generates streams, commits in transactions."""

    def __init__(self, settings: Settings,
                 generators: Mapping[str, Generator | InteractiveGenerator],
                 versions: Mapping[str, str] | None = None,
                 processors: Mapping[str, Processor] | None = None) -> None:
        self.settings = settings
        self.generators: dict[str, Generator | InteractiveGenerator] = dict(generators)
        #: Each generator's version, a part of its cached answers' key: the operator's
        #: (TIDEMARK_CACHE_GENERATOR_VERSIONS), else the generator's own ``version``,
        #: else its distribution's (``versions``).
        self.versions = {name: str(settings.cache.versions.get(name)
                                   or getattr(gen, "version", None)
                                   or (versions or {}).get(name) or "")
                         for name, gen in self.generators.items()}
        #: The content processors the tenants' policies may name (``workers.processors``).
        self.processors = dict(processors or {})
        #: Built in, not a plugin: only POST /v1/batches makes its streams.
        self.batches = BatchGenerator(settings)
        self.generators[batch.GENERATOR] = self.batches
        #: Background cancels of batches' children (each ends on its own).
        self._cancels: set[asyncio.Task[None]] = set()
        self.max_jobs = settings.worker.max_jobs
        #: Slots that only priority jobs may take.
        self.reserved = reserved_slots(self.max_jobs, settings.worker.priority_reserve)
        self.running = 0
        self.partitions: dict[TopicPartition, _Partition] = {}
        self.trackers: dict[TopicPartition, OffsetTracker] = {}
        self.reader = LogReader(settings.kafka, size=4, role="worker-reader")
        self.metrics = WorkerMetrics(tenants=settings.metrics_tenants,
                                     default_tenant=settings.auth.default_tenant)
        self._lag = JobsLag(self.metrics, settings.lag_sample_s)
        #: The similar-query cache. Built whether it is on or not: a stream another
        #: worker began replaying from it is replayed to its end either way.
        self.cache = QueryCache(settings, self.reader,
                                on_lookup=self.metrics.count_cache_lookup,
                                on_embed=self.metrics.embed_seconds.observe)
        self.metrics.cache_entries.set_function(lambda: len(self.cache))
        #: The predictive warm-up (``TIDEMARK_WARMUP``), once running.
        self.warmup: WarmUp | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._writer: _Writer | None = None
        self._cache_task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    # Ownership ---------------------------------------------------------------------

    async def take(self, tps: list[TopicPartition]) -> None:
        """Own these partitions of the jobs topics: claim each jobs partition (both
        topics' partition of one number, fencing its last writer), then start one
        writer for all of them; their records wait (paused) until then."""
        consumer = self._consumer
        assert consumer is not None
        if not tps:
            return
        consumer.pause(*tps)
        ns = self.settings.log.namespace
        writer_id = new_writer_id(ns)
        fenced: dict[str, asyncio.Future[None]] = {}
        numbered: dict[int, list[TopicPartition]] = {}
        for tp in tps:
            numbered.setdefault(tp.partition, []).append(tp)
        if any(len(pair) != len(jobs_topics(ns)) for pair in numbered.values()):
            # Two workers would claim one partition number and fence each other's claims.
            log.error("the group's assignment splits co-numbered jobs partitions (%s); "
                      "do both jobs topics have the same partition count?",
                      sorted(f"{tp.topic}:{tp.partition}" for tp in tps))
        got = await asyncio.gather(
            *(self._claim(number, pair, writer_id, fenced)
              for number, pair in sorted(numbered.items())), return_exceptions=True)
        failures = [x for x in got if isinstance(x, BaseException)]
        if any(isinstance(x, ProducerFenced) for x in failures):
            # Another worker claimed one of them meanwhile: this assignment is stale.
            log.warning("lost a jobs partition while claiming it; waiting for the group")
            return
        if failures:
            raise failures[0]
        starts: dict[TopicPartition, int] = {}
        for x in got:
            if isinstance(x, dict):
                starts.update(x)
        settings = self.settings
        producer = await started(
            lambda: make_producer(settings.kafka, role="worker", transactional_id=writer_id,
                                  linger_ms=0),
            settings.kafka, "transactional producer start")
        self.trackers.clear()
        priority_topic = jobs_topic(ns, priority=True)
        for tp in tps:
            tracker = OffsetTracker(starts[tp])
            self.trackers[tp] = tracker
            self.partitions[tp] = _Partition(tp, tracker, priority=tp.topic == priority_topic)
            consumer.seek(tp, starts[tp])
        outbox = Outbox(producer, group_id=group_id(ns), writer_id=writer_id,
                        trackers=self.trackers, linger_ms=settings.worker.linger_ms,
                        batch_events=settings.worker.batch_events, metrics=self.metrics)
        self._writer = _Writer(writer_id, producer, outbox)
        self.metrics.partitions.set(len(numbered))
        consumer.resume(*tps)
        log.info("took jobs partitions %s at offsets %s (writer %s)", sorted(numbered),
                 {f"{tp.topic}:{tp.partition}": start for tp, start in starts.items()},
                 writer_id)

    async def _claim(self, number: int, tps: list[TopicPartition], writer_id: str,
                     fenced: dict[str, asyncio.Future[None]]) -> dict[TopicPartition, int]:
        """Claim jobs partition ``number`` (its partition of each jobs topic, ``tps``) for
        ``writer_id``; return the offset to start from of each."""
        settings = self.settings
        ns = settings.log.namespace
        group = group_id(ns)
        consumer, admin = self._consumer, self._admin
        assert consumer is not None and admin is not None
        claim = await started(
            lambda: make_producer(settings.kafka, role="worker-claim",
                                  transactional_id=claim_id(ns, number), linger_ms=0),
            settings.kafka, "claim producer start")
        try:
            async def committed() -> dict[TopicPartition, OffsetAndMetadata]:
                got: dict[TopicPartition, OffsetAndMetadata] = (
                    await admin.list_consumer_group_offsets(group, partitions=tps))
                return got

            prev = await retry_until(settings.kafka.connect_timeout_s, "offset fetch",
                                     committed)
            starts: dict[TopicPartition, int] = {}
            for tp in tps:
                om = prev.get(tp)
                last_writer = om.metadata if om is not None else ""
                if last_writer.startswith(writer_prefix(ns)) and last_writer != writer_id:
                    if last_writer not in fenced:
                        fenced[last_writer] = asyncio.ensure_future(self._fence(last_writer))
                    await fenced[last_writer]
                if om is not None and om.offset >= 0:
                    starts[tp] = int(om.offset)
                else:
                    starts[tp] = int(await consumer.position(tp))
            async with claim.transaction():
                await claim.send_offsets_to_transaction(
                    {tp: OffsetAndMetadata(start, writer_id) for tp, start in starts.items()},
                    group)
            return starts
        finally:
            await stop_client(claim)

    async def _fence(self, writer_id: str) -> None:
        """Fence a former writer: its open transaction aborts, its later calls fail."""
        settings = self.settings
        producer = await started(
            lambda: make_producer(settings.kafka, role="worker-fence",
                                  transactional_id=writer_id, linger_ms=0),
            settings.kafka, "fencing producer start")
        await stop_client(producer)
        log.info("fenced the former writer %s", writer_id)

    async def release(self) -> None:
        """Stop every stream and the writer (unflushed events are dropped: the jobs'
        offsets are not committed, so their next owner redoes them from the log)."""
        streams = [s for pj in self.partitions.values() for s in pj.streams.values()]
        tasks = [s.task for s in streams if s.task is not None]
        # Gone before the streams end, so that their freed slots start nothing more.
        self.partitions.clear()
        self._count_waiting()
        for task in tasks:
            task.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.flusher.cancel()
            tasks.append(writer.flusher)
        await asyncio.gather(*tasks, return_exceptions=True)
        self.trackers.clear()
        self.metrics.partitions.set(0)
        if writer is not None:
            await stop_client(writer.producer)

    async def _reset(self, failure: BaseException) -> None:
        """The writer's transaction failed: drop all work and redo it from the commits.

        If another worker fenced this one (it took a partition over while this one was
        stalled: a zombie), nothing is redone here: the partitions stay paused until
        the group's next assignment says who owns what.
        """
        await self.release()
        consumer = self._consumer
        assert consumer is not None
        assigned = sorted(consumer.assignment(), key=lambda tp: tp.partition)
        if isinstance(failure, ProducerFenced):
            log.warning("fenced: another worker owns these jobs partitions now")
            if assigned:
                consumer.pause(*assigned)
            return
        log.error("a transaction failed (%s); redoing the jobs from their committed offsets",
                  failure)
        await self.retake(assigned)

    async def retake(self, tps: list[TopicPartition]) -> None:
        """:meth:`take`, retried while Kafka does not answer (up to the connect timeout)."""

        async def attempt() -> None:
            await self.release()
            await self.take(tps)
        await retry_until(self.settings.kafka.connect_timeout_s, "taking jobs partitions",
                          attempt)

    # Jobs ------------------------------------------------------------------------------

    def _free_slot(self, priority: bool) -> bool:
        if self.running >= self.max_jobs:
            return False
        return priority or self.running < self.max_jobs - self.reserved

    def pump(self) -> None:
        """Handle every backlog record that can be handled now: priority partitions
        first, then the others, one record per partition in turn (no partition starves
        the rest). Pause the partitions left with a backlog, resume the others."""
        pjs = list(self.partitions.values())
        for group in ([pj for pj in pjs if pj.priority], [pj for pj in pjs if not pj.priority]):
            progress = True
            while progress:
                progress = False
                for pj in group:
                    if pj.backlog and self._step(pj):
                        progress = True
        consumer = self._consumer
        if consumer is not None:
            for pj in pjs:
                if bool(pj.backlog) != pj.paused:
                    pj.paused = bool(pj.backlog)
                    (consumer.pause if pj.paused else consumer.resume)(pj.tp)
        self._count_waiting()

    def _step(self, pj: _Partition) -> bool:
        """Handle the first record of ``pj``'s backlog, unless it is a job that has no
        free slot; say whether it was handled."""
        offset, parsed = pj.backlog[0]
        if isinstance(parsed, Job) and parsed.stream_id not in pj.streams:
            if not self._free_slot(pj.priority):
                return False
            pj.backlog.popleft()
            pj.tracker.begin(offset)
            stream = _Stream(parsed, offset, pj.tp,
                             max_inputs=self.settings.worker.stream_inputs)
            pj.streams[parsed.stream_id] = stream
            self.running += 1
            self.metrics.started.labels(_kind(pj.priority)).inc()
            stream.task = asyncio.create_task(self._run(pj, stream),
                                              name=f"job-{parsed.stream_id}")
            return True
        pj.backlog.popleft()
        if isinstance(parsed, str):
            running = self._generating(pj.tp.partition, parsed)
            if running is not None:
                log.info("cancel requested for stream %s", parsed)
                running.request_cancel()
                if running.job.generator == batch.GENERATOR:
                    self._cancel_children(running.job)
        elif isinstance(parsed, InputRecord):
            # Skipped like a cancel: while the job runs its offset (below this one) is
            # not committed, so a worker that takes the job over reads the input again.
            running = self._generating(pj.tp.partition, parsed.stream_id)
            if running is not None:
                running.offer(parsed)
        elif parsed is None:
            log.warning("skipping unreadable job record at %s offset %s", pj.tp, offset)
        pj.tracker.skip(offset)
        if self._writer is not None:
            self._writer.outbox.commit_offsets_soon()
        return True

    def _cancel_children(self, job: Job) -> None:
        task = asyncio.create_task(self.batches.cancel_children(job),
                                   name=f"cancel-children-{job.stream_id}")
        self._cancels.add(task)
        task.add_done_callback(self._cancelled_children)

    def _cancelled_children(self, task: asyncio.Task[None]) -> None:
        self._cancels.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not cancel a batch's children: %s", task.exception())

    def _generating(self, number: int, stream_id: str) -> _Stream | None:
        """The stream being generated here from jobs partition ``number`` (either topic)."""
        for pj in self.partitions.values():
            if pj.tp.partition == number and stream_id in pj.streams:
                return pj.streams[stream_id]
        return None

    def _count_waiting(self) -> None:
        for priority in (True, False):
            self.metrics.waiting.labels(_kind(priority)).set(sum(
                len(pj.backlog) for pj in self.partitions.values() if pj.priority is priority))

    async def _run(self, pj: _Partition, stream: _Stream) -> None:
        # This task's log lines are about this stream (its events partition is numbered
        # like its jobs partition; the offset is the job record's).
        context = logcontext.bind(stream=stream.job.stream_id,
                                  partition=stream.tp.partition, offset=stream.offset)
        self.metrics.running.inc()
        try:
            writer = self._writer
            assert writer is not None
            with generation_span(stream.job, jobs_partition=stream.tp.partition,
                                 jobs_offset=stream.offset) as span:
                await self._generate(stream, writer.outbox, span)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The writer fails too (or already has): the jobs run again from the commits.
            log.exception("stream %s failed in the worker", stream.job.stream_id)
        finally:
            pj.streams.pop(stream.job.stream_id, None)
            self.running -= 1
            self.metrics.running.dec()
            # What pump logs (and the tasks it starts) is not about this stream.
            logcontext.reset(context)
            self.pump()  # a slot is free

    async def _generate(self, stream: _Stream, outbox: Outbox, span: Span | None = None,
                        ) -> None:
        """Write the job's events from the first seq the log lacks, and the stream's
        inputs as they arrive; ``span``: the generation span (tracing on), whose trace
        the events' records carry."""
        job = stream.job
        state = await scan_from_start(self.reader, job.stream, inputs=True)
        if state.terminal is not None:
            await outbox.put_and_wait(Entry(jobs_tp=stream.tp, done_offset=stream.offset))
            return
        logged = state.inputs or []
        # Inputs already in the log are not written again (a takeover re-reads them).
        in_log = {i.input_id for i in logged if i.input_id is not None}
        stream.input_ids |= in_log
        stream.inbox = deque(r for r in stream.inbox if r.input_id not in in_log)
        info = job.stream.evolve(status=index.RUNNING, updated_at=now_ms())
        log.debug("stream %s: generating from seq %s", job.stream_id, state.last_seq + 1)
        seq = state.last_seq + 1
        note_start(span, start_seq=seq)
        if seq > 1:
            # Another worker wrote part of this stream: a takeover.
            log.info("resuming stream %s at seq %s", job.stream_id, seq)
            self.metrics.count_stream("resumed", job.stream.tenant)
            self.metrics.takeovers.inc()
        # The generator numbers its events as if there were no inputs.
        own = seq - len(logged)
        hit, vector, cacheable = await self._cached(stream, state)
        if self.warmup is not None and cacheable and not state.answered:
            self.warmup.trigger(job)  # a new query: pre-generate what may follow it
        pipeline, own, skip, failure = self._pipeline(job, state.position, own)
        drafts: Any
        if failure is not None:
            drafts = _fail(own, *failure)
        elif hit is not None:
            # A cached answer stands for the generator's drafts (and goes through the
            # tenant's processors like them).
            drafts = self.cache.replay(hit, own, job.cache.pacing or self.settings.cache.pacing)
        else:
            drafts = self._drafts(stream, own, [i.data for i in logged])
        stream.outbox, stream.info, stream.span, stream.seq = outbox, info, span, seq
        try:
            while True:
                stream.write_inputs()
                draft = await self._next(stream, drafts, own)
                if draft is None:
                    # The generator stopped without a terminal event: end it as failed.
                    draft = Draft(own, events.ERROR, {
                        "code": "generator_incomplete", "retryable": False,
                        "message": "the generator ended without a result"})
                elif draft.seq != own:
                    draft = Draft(own, events.ERROR, {
                        "code": "generator_error", "retryable": False,
                        "message": f"generator yielded seq {draft.seq}, expected {own}"})
                outs = _processed(pipeline, draft)[skip:]
                skip = 0
                if hit is not None and draft.seq == 1:
                    # A replay's first event (the cache marker) names its source.
                    outs = [(out, (*headers, *self.cache.headers(hit)))
                            for out, headers in outs]
                for out, headers in outs:
                    seq = stream.seq
                    ev = Event(stream=job.stream_id, seq=seq, type=out.type, ts=now_ms(),
                               data=out.data)
                    if ev.terminal:
                        last = Entry(event=ev, info=info, snapshot=stream.first,
                                     jobs_tp=stream.tp, done_offset=stream.offset, span=span,
                                     headers=headers)
                        await outbox.put_and_wait(last)
                        if cacheable and hit is None and ev.type == events.RESULT \
                                and last.final is not None:
                            await self._remember(job, last.final, vector)
                        note_end(span, ev)
                        self.metrics.count_stream(terminal_status(ev.type), job.stream.tenant)
                        log.info("stream %s ended with %s at seq %s", job.stream_id, ev.type,
                                 ev.seq)
                        return
                    await outbox.put(Entry(event=ev, info=info, snapshot=stream.first,
                                           span=span, headers=headers))
                    stream.first = False
                    stream.seq = seq + 1
                own += 1
        finally:
            stream.outbox = None  # no input is written after this
            aclose = getattr(drafts, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(RuntimeError):
                    await aclose()

    async def _cached(self, stream: _Stream, state: StreamState,
                      ) -> tuple[Hit | None, Any, bool]:
        """How the job is answered: (the cached answer to replay or None, the query's
        embedding if the lookup made one, whether the answer may be cached). A stream
        already answered keeps the decision its log shows (``workers.cache``)."""
        job = stream.job
        if state.cache_source is not None:
            return QueryCache.hit_in_log(state.cache_source), None, False
        generator = self.generators.get(job.generator)
        # Not a batch stream: its answer is its children's (each looked up on its own),
        # and its own query ("batch of n queries") says nothing of them.
        cacheable = (self.settings.cache.enabled and job.cache.use and generator is not None
                     and not takes_input(generator) and job.generator != batch.GENERATOR)
        if not cacheable or state.answered:
            return None, None, cacheable
        source = job.replay_of
        if source is not None and source.tenant == job.stream.tenant and (
                source.namespace == job.stream.namespace):
            # A batch answers a similar query once: replay its sibling's answer.
            log.info("stream %s: replays the batch's similar answer, stream %s (%.3f)",
                     job.stream_id, source.stream_id, job.replay_similarity)
            return Hit(source, SIMILAR, job.replay_similarity, source.updated_at), None, False
        try:
            hit, vector = await self.cache.lookup(job, self.versions.get(job.generator, ""))
        except asyncio.CancelledError:
            raise
        except Exception:  # the cache is an optimisation: generate instead
            log.exception("stream %s: cache lookup failed; generating", job.stream_id)
            return None, None, False
        if hit is not None:
            log.info("stream %s: cache hit (%s, %.3f) from stream %s", job.stream_id,
                     hit.match, hit.similarity, hit.source.stream_id)
        return hit, vector, cacheable

    async def _remember(self, job: Job, final: StreamInfo, vector: Any) -> None:
        try:
            await self.cache.remember(job, self.versions.get(job.generator, ""), final, vector)
        except asyncio.CancelledError:
            raise
        except Exception:  # the stream is complete; only its caching failed
            log.exception("stream %s: could not cache its answer", job.stream_id)

    def _pipeline(self, job: Job, position: bytes | None, own: int,
                  ) -> tuple[Pipeline | None, int, int, tuple[str, str] | None]:
        """The stream's content processors (None: its tenant has none), the generator
        seq to start from, how many of that draft's outputs the log holds already, and
        why the stream must fail instead (``(code, message)``), if it must.

        A stream the log shows processed goes on from its last ``tm-proc`` header, under
        the policy recorded there; a new one starts with its tenant's policy now."""
        try:
            if position is not None:
                at = Position.decode(position)
                return Pipeline.resume(job, self.processors, at), at.src, at.part + 1, None
            policy = self.settings.worker.content_policy.for_tenant(job.stream.tenant)
            if not policy:
                return None, own, 0, None
            if own > 1:
                log.warning("stream %s was written without content processors: it goes on "
                            "without them", job.stream_id)
                return None, own, 0, None
            return Pipeline(job, self.processors, policy), own, 0, None
        except ProcessorUnavailable as exc:
            return None, own, 0, ("processor_unavailable", str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return None, own, 0, ("content_policy_invalid", f"{type(exc).__name__}: {exc}")

    def _drafts(self, stream: _Stream, start: int, logged: list[dict[str, Any]]) -> Any:
        """The generator's drafts from its seq ``start``; a generator that takes input
        reads ``logged`` (the log's inputs) and then those written from here on."""
        job = stream.job
        generator = self.generators.get(job.generator)
        if generator is None:
            return _fail(start, "unknown_generator", f"no generator named {job.generator!r}")
        if takes_input(generator):
            interactive = generator
            inputs = stream.inputs = Inputs(logged)
            return announced(job, start, lambda j, s: interactive.events(j, s, inputs))
        plain: Generator = generator  # type: ignore[assignment]
        return announced(job, start, plain.events)

    @staticmethod
    async def _next(stream: _Stream, drafts: Any, seq: int) -> Draft | None:
        """The generator's next draft; a ``cancelled`` one once a cancel arrived, an
        ``error`` one if it raised; None when it is exhausted."""
        if stream.cancel_requested:
            return Draft(seq, events.CANCELLED, {"reason": "cancelled by request"})
        stream.in_generator = True
        try:
            draft: Draft = await drafts.__anext__()
            return draft
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # Only the cancel request's own task.cancel() is absorbed; a shutdown's is not.
            if not stream.cancel_requested or task is None or task.uncancel() > 0:
                raise
            return Draft(seq, events.CANCELLED, {"reason": "cancelled by request"})
        except Exception as exc:
            log.exception("generator raised")
            return Draft(seq, events.ERROR, {"code": "generator_error", "retryable": True,
                                             "message": f"{type(exc).__name__}: {exc}"})
        finally:
            stream.in_generator = False

    # The consumer loop -----------------------------------------------------------------

    async def run(self) -> None:
        settings = self.settings
        self._admin = await started(lambda: make_admin(settings.kafka, role="worker-admin"),
                                    settings.kafka, "admin start")
        cache_task: asyncio.Task[None] | None = None
        warmup_task: asyncio.Task[None] | None = None
        side = None
        try:
            await ensure_topics(self._admin, settings.log)
            if settings.cache.enabled:
                cache_task = self._cache_task = asyncio.create_task(self.cache.run(),
                                                                    name="cache")
            if settings.cache.warmup:
                parts = settings.log.partitions
                self.warmup = WarmUp(
                    settings, self.cache, self.metrics, versions=self.versions,
                    share=lambda: len({tp.partition for tp in self.partitions}) / parts)
                warmup_task = asyncio.create_task(self._supervised_warmup(), name="warmup")
            side = await started(lambda: make_producer(settings.kafka, role="worker-batch"),
                                 settings.kafka, "batch producer start")
            self.batches.bind(KafkaAccess(producer=side, reader=self.reader))
            self._consumer = await started(
                lambda: make_consumer(settings.kafka, role="worker",
                                      group_id=group_id(settings.log.namespace),
                                      max_poll_interval_ms=300_000, session_timeout_ms=10_000,
                                      heartbeat_interval_ms=2_000,
                                      partition_assignment_strategy=ASSIGNORS),
                settings.kafka, "job consumer start")
            consumer = self._consumer
            consumer.subscribe(list(jobs_topics(settings.log.namespace)),
                               listener=_Rebalance(self))
            try:
                await self._consume(consumer)
            finally:
                await self.release()
                await stop_client(consumer)
        finally:
            for task in list(self._cancels):
                task.cancel()
            await asyncio.gather(*self._cancels, return_exceptions=True)
            if side is not None:
                await stop_client(side)
            for side_task in (warmup_task, cache_task):
                if side_task is not None:
                    side_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await side_task
            await stop_client(self._admin)
            await self.reader.close()

    async def _supervised_warmup(self) -> None:
        """The warm-up, started again after a failure (it is an optimisation: the worker
        goes on without it meanwhile)."""
        assert self.warmup is not None
        while True:
            try:
                await self.warmup.run()
            except Exception:
                log.exception("warm-up failed; starting it again in 5 s")
            await asyncio.sleep(5)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=FETCH_RECORDS)
            self.ready.set()
            for tp, records in batches.items():
                pj = self.partitions.get(tp)
                if pj is None:
                    # Not ready (or just revoked): read these again once it is.
                    consumer.seek(tp, records[0].offset)
                    continue
                pj.backlog.extend(
                    (rec.offset, parse_job_record(rec.value, rec.headers)
                     if rec.value is not None else None)
                    for rec in records)
            self.pump()
            await self._lag.maybe_sample(consumer)
            writer = self._writer
            if writer is not None and writer.failed is not None:
                await self._reset(writer.failed)
            cache = self._cache_task
            if cache is not None and cache.done() and not cache.cancelled():
                cache.result()  # the cache's tail or producer failed: so does the worker


def _kind(priority: bool) -> str:
    return "priority" if priority else "other"


def _processed(pipeline: Pipeline | None, draft: Draft,
               ) -> list[tuple[Output, tuple[tuple[str, bytes], ...]]]:
    """The events that stand for ``draft``: itself without processors, else what the
    pipeline makes of it (each with its ``tm-proc`` header). A processor that raises,
    or loses the terminal event, ends the stream with an ``error``."""
    event = Output(draft.type, draft.data)
    if pipeline is None:
        return [(event, ())]
    try:
        outs = pipeline.feed(draft.seq, event)
    except Exception as exc:  # a processor plugin's own code: its stream fails
        log.exception("content processor raised")
        outs = pipeline.fail(draft.seq, "processor_error", f"{type(exc).__name__}: {exc}")
    if events.is_terminal(draft.type) and not any(events.is_terminal(o.type) for o, _ in outs):
        outs += pipeline.fail(draft.seq, "processor_error",
                              "a content processor dropped the stream's terminal event",
                              part=len(outs))
    return [(out, ((HEADER_PROC, header),)) for out, header in outs]


async def _fail(seq: int, code: str, message: str) -> Any:
    yield Draft(seq, events.ERROR, {"code": code, "message": message, "retryable": False})


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Eager rebalancing: everything is revoked, then the new assignment is taken."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        #: What the last assignment gave (eager: everything is revoked in between, so
        #: gains and losses are counted against the previous assignment).
        self._owned: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker.release()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        now = set(assigned)
        metrics = self._worker.metrics
        metrics.gained.inc(len(now - self._owned))
        metrics.lost.inc(len(self._owned - now))
        self._owned = now
        try:
            await self._worker.retake(sorted(assigned, key=lambda tp: tp.partition))
        except KafkaUnavailable as exc:
            # Kafka is unreachable: nothing is owned until the next assignment.
            log.error("could not take jobs partitions %s: %s",
                      [tp.partition for tp in assigned], exc)
