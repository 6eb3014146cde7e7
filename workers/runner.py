"""The worker: a consumer group over the jobs topic, one transactional writer per
assigned jobs partition, and one task per stream being generated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ProducerFenced

from eventlog import index
from eventlog.clients import make_admin, make_consumer, make_producer, started, stop_client
from eventlog.jobs import Job, parse_job_record
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.streams import now_ms, scan, terminal_status
from eventlog.topics import ensure_topics, jobs_topic
from schemas import events
from schemas.events import Event
from workers.generators import Draft, Generator
from workers.metrics import WorkerMetrics
from workers.outbox import Entry, OffsetTracker, Outbox

log = logging.getLogger(__name__)


def group_id(namespace: str) -> str:
    return f"tidemark.{namespace}.workers"


def transactional_id(namespace: str, partition: int) -> str:
    """One per jobs partition: the next owner of the partition fences the last one."""
    return f"tidemark.{namespace}.worker.{partition}"


class _Stream:
    """A stream being generated here."""

    def __init__(self, job: Job, offset: int) -> None:
        self.job = job
        self.offset = offset
        self.cancel = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class PartitionWorker:
    """Generates the jobs of one jobs partition through one transactional producer."""

    def __init__(self, worker: Worker, tp: TopicPartition) -> None:
        self._worker = worker
        self.tp = tp
        self.tracker = OffsetTracker(0)
        self._streams: dict[str, _Stream] = {}
        self._producer: Any = None
        self._outbox: Outbox | None = None
        self._flusher: asyncio.Task[None] | None = None

    @property
    def failed(self) -> BaseException | None:
        if self._flusher is not None and self._flusher.done() and not self._flusher.cancelled():
            return self._flusher.exception()
        return None

    async def start(self, position: Callable[[], Awaitable[int]]) -> int:
        """Fence the partition's last owner, then start from ``position()``."""
        settings = self._worker.settings
        ns = settings.log.namespace
        # init_transactions() (inside start) fences any earlier owner of this partition
        # and aborts its open transaction, so its half-written batch is never shown.
        self._producer = await started(
            lambda: make_producer(settings.kafka, role="worker",
                                  transactional_id=transactional_id(ns, self.tp.partition),
                                  linger_ms=settings.worker.linger_ms),
            settings.kafka, "transactional producer start")
        start = await position()
        self.tracker = OffsetTracker(start)
        self._outbox = Outbox(self._producer, jobs_tp=self.tp, group_id=group_id(ns),
                              tracker=self.tracker, linger_ms=settings.worker.linger_ms,
                              batch_events=settings.worker.batch_events)
        self._outbox.metrics = self._worker.metrics
        self._flusher = asyncio.create_task(self._outbox.run(), name=f"outbox-{self.tp}")
        return start

    async def stop(self) -> None:
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
            tasks.append(self._flusher)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        if self._producer is not None:
            await stop_client(self._producer)
            self._producer = None

    async def dispatch(self, offset: int, value: bytes | None) -> None:
        parsed = parse_job_record(value) if value is not None else None
        if isinstance(parsed, Job) and parsed.stream_id not in self._streams:
            await self._worker.slots.acquire()
            self.tracker.begin(offset)
            stream = _Stream(parsed, offset)
            self._streams[parsed.stream_id] = stream
            stream.task = asyncio.create_task(self._run(stream), name=f"job-{parsed.stream_id}")
            return
        if isinstance(parsed, str) and parsed in self._streams:
            log.info("cancel requested for stream %s", parsed)
            self._streams[parsed].cancel.set()
        elif parsed is None:
            log.warning("skipping unreadable job record at %s offset %s", self.tp, offset)
        self.tracker.skip(offset)
        assert self._outbox is not None
        self._outbox.commit_offsets_soon()

    async def _run(self, stream: _Stream) -> None:
        self._worker.metrics.running.inc()
        try:
            await self._generate(stream)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The partition is reset: the job runs again from the committed offset.
            log.exception("stream %s failed in the worker", stream.job.stream_id)
        finally:
            self._streams.pop(stream.job.stream_id, None)
            self._worker.slots.release()
            self._worker.metrics.running.dec()

    async def _generate(self, stream: _Stream) -> None:
        job, outbox = stream.job, self._outbox
        assert outbox is not None
        state = await scan(self._worker.reader, job.stream)
        if state.terminal is not None:
            await (await outbox.put(Entry(done_offset=stream.offset)))
            return
        info = job.stream.evolve(status=index.RUNNING, updated_at=now_ms())
        seq = state.last_seq + 1
        if seq > 1:
            log.info("resuming stream %s at seq %s", job.stream_id, seq)
            self._worker.metrics.streams.labels("resumed").inc()
        generator = self._worker.generators.get(job.generator)
        drafts = (generator.events(job, seq) if generator is not None
                  else _fail(seq, "unknown_generator", f"no generator named {job.generator!r}"))
        first = True
        async for draft in _until_cancelled(drafts, stream.cancel, seq):
            if draft.seq != seq:
                draft = Draft(seq, events.ERROR, {
                    "code": "generator_error", "retryable": False,
                    "message": f"generator yielded seq {draft.seq}, expected {seq}"})
            ev = Event(stream=job.stream_id, seq=seq, type=draft.type, ts=now_ms(),
                       data=draft.data)
            written = await outbox.put(Entry(
                event=ev, info=info, snapshot=first,
                done_offset=stream.offset if ev.terminal else None))
            first = False
            seq += 1
            if ev.terminal:
                await written
                self._worker.metrics.streams.labels(terminal_status(ev.type)).inc()
                log.info("stream %s ended with %s at seq %s", job.stream_id, ev.type, ev.seq)
                return
        # The generator stopped without a terminal event: end the stream as failed.
        ev = Event(stream=job.stream_id, seq=seq, type=events.ERROR, ts=now_ms(), data={
            "code": "generator_incomplete", "retryable": False,
            "message": "the generator ended without a result"})
        await (await outbox.put(Entry(event=ev, info=info, done_offset=stream.offset)))
        self._worker.metrics.streams.labels("failed").inc()


async def _fail(seq: int, code: str, message: str) -> Any:
    yield Draft(seq, events.ERROR, {"code": code, "message": message, "retryable": False})


async def _until_cancelled(drafts: Any, cancel: asyncio.Event, first_seq: int) -> Any:
    """Drafts from a generator until a cancel arrives; then one ``cancelled`` draft."""
    iterator = drafts.__aiter__()
    seq = first_seq
    cancel_wait = asyncio.create_task(cancel.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(iterator.__anext__())
            await asyncio.wait({nxt, cancel_wait}, return_when=asyncio.FIRST_COMPLETED)
            if cancel.is_set():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
                yield Draft(seq, events.CANCELLED, {"reason": "cancelled by request"})
                return
            try:
                draft = nxt.result()
            except StopAsyncIteration:
                return
            except Exception as exc:
                log.exception("generator raised")
                yield Draft(seq, events.ERROR, {"code": "generator_error", "retryable": True,
                                                "message": f"{type(exc).__name__}: {exc}"})
                return
            seq = draft.seq + 1
            yield draft
    finally:
        cancel_wait.cancel()
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(RuntimeError):
                await aclose()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            pw = self._worker.partitions.pop(tp, None)
            if pw is not None:
                await pw.stop()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            await self._worker.take(tp)


class Worker:
    """Runs until cancelled: consumes jobs, generates streams, commits in transactions."""

    def __init__(self, settings: Settings, generators: Mapping[str, Generator]) -> None:
        self.settings = settings
        self.generators = dict(generators)
        self.slots = asyncio.Semaphore(settings.worker.max_jobs)
        self.partitions: dict[TopicPartition, PartitionWorker] = {}
        self.reader = LogReader(settings.kafka, size=4, role="worker-reader")
        self.metrics = WorkerMetrics()
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()

    async def take(self, tp: TopicPartition) -> None:
        """Own a jobs partition: its records wait (paused) until its writer is ready."""
        consumer = self._consumer
        assert consumer is not None
        consumer.pause(tp)

        async def position() -> int:
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
                return int(committed)
            return int(await consumer.position(tp))

        pw = PartitionWorker(self, tp)
        start = await pw.start(position)
        self.partitions[tp] = pw
        self.metrics.partitions.set(len(self.partitions))
        consumer.resume(tp)
        log.info("took jobs partition %s at offset %s", tp.partition, start)

    async def _reset(self, tp: TopicPartition, pw: PartitionWorker) -> None:
        """A transaction failed: drop the partition's work and redo it from the commit.

        If another worker fenced this one (it took the partition over while this one
        was stalled: a zombie), nothing is redone here: the partition stays paused
        until the group's next assignment says who owns it.
        """
        failure = pw.failed
        await pw.stop()
        self.partitions.pop(tp, None)
        self.metrics.partitions.set(len(self.partitions))
        assert self._consumer is not None
        if isinstance(failure, ProducerFenced):
            log.warning("fenced on jobs partition %s: another worker owns it now",
                        tp.partition)
            if tp in self._consumer.assignment():
                self._consumer.pause(tp)
            return
        log.error("jobs partition %s failed (%s); redoing from its committed offset",
                  tp.partition, failure)
        committed = await self._consumer.committed(tp)
        self._consumer.seek(tp, committed if committed is not None else pw.tracker.start)
        await self.take(tp)

    async def run(self) -> None:
        settings = self.settings
        admin = await started(lambda: make_admin(settings.kafka, role="worker-admin"),
                              settings.kafka, "admin start")
        try:
            await ensure_topics(admin, settings.log)
        finally:
            await stop_client(admin)
        self._consumer = await started(
            lambda: make_consumer(settings.kafka, role="worker",
                                  group_id=group_id(settings.log.namespace),
                                  max_poll_interval_ms=300_000, session_timeout_ms=10_000,
                                  heartbeat_interval_ms=2_000),
            settings.kafka, "job consumer start")
        consumer = self._consumer
        consumer.subscribe([jobs_topic(settings.log.namespace)], listener=_Rebalance(self))
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=100)
                self.ready.set()
                for tp, records in batches.items():
                    pw = self.partitions.get(tp)
                    if pw is None:
                        # Not ready (or just revoked): read these again once it is.
                        consumer.seek(tp, records[0].offset)
                        continue
                    for rec in records:
                        await pw.dispatch(rec.offset, rec.value)
                for tp, pw in list(self.partitions.items()):
                    if pw.failed is not None:
                        await self._reset(tp, pw)
        finally:
            for pw in list(self.partitions.values()):
                await pw.stop()
            self.partitions.clear()
            await stop_client(consumer)
            await self.reader.close()
