"""The ``batch`` generator: runs a batch's plan (``schemas.batch``, docs/batches.md).

Its job names the child streams the gateway made (their first event and index record;
no job yet). The generator starts their jobs as the strategy says (at most the plan's
concurrency at once, in its order), follows their events from Kafka (a read_committed
consumer of its own over the children's partitions) and writes into the batch stream,
through the worker's transactional outbox like any generator:

    seq 1  status   {"state": "running", ...}
    seq 2  metadata {"batch": {"queries", "generated", "strategy", "aggregation",
                               "children": [{"index", "streamId", "duplicateOf"?}]}}
    seq 3  progress 0 %
    then   metadata {"child": {"index", "indices", "streamId", "seq", "type", "data"}}
           for each child event but its ``queued`` status and its ``partial_result``
           tokens (those stay in the child's own stream: follow ``streamId``), and a
           ``progress`` after each child's end (completedSteps = children ended);
    last   result   (``schemas.batch.aggregate``), once every child has ended.

Resumable: the first three events are the same every time. After them the order is
that of the children's events as they came, so a worker that takes the batch over reads
what the batch stream already holds (which child events it forwarded, which children
ended and how) and goes on from there: every child event is forwarded once, and the
children it had started are started again (a job record written twice is harmless:
``eventlog.jobs.send_job``).

Cancel: :meth:`BatchGenerator.cancel_children`, called by the worker when the batch's
cancel arrives, writes a cancel for every child (and the job of a child not started
yet, so that its worker ends it ``cancelled`` at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from eventlog import index
from eventlog.clients import make_consumer, started, stop_client
from eventlog.embeddings import MODEL_ID
from eventlog.index import StreamInfo
from eventlog.jobs import Job, send_cancel, send_job
from eventlog.reader import LogReader
from eventlog.records import LogRecord
from eventlog.settings import Settings
from schemas import batch, events
from workers.generators import Draft

log = logging.getLogger(__name__)

#: The batch's own events before the children's (status, metadata, progress 0 %).
HEAD: Final = 3
_NOT_FORWARDED: Final = frozenset({events.PARTIAL_RESULT})
#: The children's consumer asks the broker for this much per fetch, or what it has after
#: this wait: a batch's events lag its children's by at most the wait, and the broker
#: answers a few fetches a second instead of one per children's transaction (100 children
#: streaming commit hundreds a second, and the token records are fetched only to be
#: skipped).
FOLLOW_MIN_BYTES: Final = 256 * 1024
FOLLOW_MAX_WAIT_MS: Final = 100


@dataclass(frozen=True, slots=True)
class KafkaAccess:
    """What the generator needs of the worker's Kafka clients: a plain producer (job and
    cancel records) and the worker's reader pool (its own stream, after a takeover)."""

    producer: AIOKafkaProducer
    reader: LogReader


@dataclass(slots=True)
class _Progress:
    """What the batch stream says so far about its children (by position in the plan)."""

    forwarded: dict[int, int] = field(default_factory=dict)  # last child seq forwarded
    outcomes: dict[int, batch.Outcome] = field(default_factory=dict)


def _envelope_data(value: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(value).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def similar_leaders(vectors: Any, threshold: float) -> dict[int, tuple[int, float]]:
    """Which children answer like an earlier one: child -> (its leader, cosine), for each
    whose sentence embedding (rows of ``vectors``, unit length) is at least ``threshold``
    from an earlier child that is itself a leader (the first such, in plan order)."""
    leaders: list[int] = []
    out: dict[int, tuple[int, float]] = {}
    for i in range(len(vectors)):
        for j in leaders:
            cosine = float(vectors[i] @ vectors[j])
            if cosine >= threshold:
                out[i] = (j, round(cosine, 4))
                break
        else:
            leaders.append(i)
    return out


class BatchGenerator:
    name = batch.GENERATOR

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._kafka: KafkaAccess | None = None

    def bind(self, kafka: KafkaAccess) -> None:
        """The worker's clients, once they are started."""
        self._kafka = kafka

    def _access(self) -> KafkaAccess:
        if self._kafka is None:
            raise RuntimeError("the batch generator runs only in a worker (bind it first)")
        return self._kafka

    @staticmethod
    def children(job: Job, plan: batch.BatchPlan) -> list[StreamInfo]:
        """The children's index records; each must be the batch's tenant's and owner's
        (the gateway made them so; a job that says otherwise is refused)."""
        infos = [StreamInfo.from_json(c.stream.encode()) for c in plan.children]
        for info in infos:
            if (info.tenant, info.owner, info.namespace) != (
                    job.stream.tenant, job.stream.owner, job.stream.namespace):
                raise ValueError(f"child {info.stream_id} is not the batch's creator's")
        return infos

    def _job(self, plan: batch.BatchPlan, pos: int, info: StreamInfo,
             vectors: Any = None) -> Job:
        """Child ``pos``'s job; with the children's query ``vectors`` (the cache on), its
        own goes along, so that its worker's cache lookup does not embed it again."""
        job = Job(stream=info, query=plan.children[pos].query, options=plan.options,
                  priority=plan.priority)
        if vectors is None:
            return job
        return dataclasses.replace(job, query_model=MODEL_ID,
                                   query_vector=vectors[pos].astype("<f4").tobytes())

    async def cancel_children(self, job: Job) -> None:
        """Cancel every child of the batch: its job (harmless if it ran already), then
        the cancel record (the job's worker sees it after the job)."""
        kafka = self._access()
        plan = batch.BatchPlan.from_options(job.options)
        partitions = self._settings.log.partitions
        for pos, info in enumerate(self.children(job, plan)):
            await send_job(kafka.producer, self._job(plan, pos, info), partitions=partitions)
            await send_cancel(kafka.producer, info.namespace, info.stream_id,
                              partitions=partitions)
        log.info("batch %s: cancelled %d children", job.stream_id, len(plan.children))

    async def _recover(self, job: Job, start_seq: int,
                       by_id: dict[str, int]) -> _Progress:
        """What the batch stream holds below ``start_seq`` (a takeover)."""
        got = _Progress()
        if start_seq <= HEAD + 1:
            return got
        reader = self._access().reader
        info = job.stream
        _, end = await reader.bounds(info.topic, info.partition)
        async with reader.open(info.topic, info.partition, info.first_offset) as cursor:
            async for rec in cursor.records(until=end, key=info.stream_id.encode()):
                if rec.type != events.METADATA or not HEAD < rec.seq < start_seq:
                    continue
                child = _envelope_data(rec.value).get("child")
                if not isinstance(child, dict) or child.get("streamId") not in by_id:
                    continue
                pos = by_id[child["streamId"]]
                got.forwarded[pos] = max(got.forwarded.get(pos, 0), int(child["seq"]))
                if events.is_terminal(str(child["type"])):
                    got.outcomes[pos] = batch.Outcome(type=str(child["type"]),
                                                      data=dict(child.get("data") or {}))
        return got

    async def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        plan = batch.BatchPlan.from_options(job.options)
        infos = self.children(job, plan)
        stream_ids = [""] * len(plan.queries)
        for child, info in zip(plan.children, infos, strict=True):
            for i in child.indices:
                stream_ids[i] = info.stream_id
        limit = batch.concurrency(plan.strategy, len(infos), plan.cap)
        head = [
            Draft(1, events.STATUS, {
                "state": "running", "message": f"answering {len(plan.queries)} queries "
                f"({len(infos)} to generate, {plan.strategy.type}, {limit} at once)"}),
            Draft(2, events.METADATA, {"batch": {
                "queries": len(plan.queries), "generated": len(infos),
                "strategy": plan.strategy.to_json(), "concurrency": limit,
                "aggregation": plan.aggregation.to_json(),
                "children": [
                    {"index": i, "streamId": sid,
                     **({"duplicateOf": c.index} if c.index != i else {})}
                    for c in plan.children for i in c.indices
                    for sid in (stream_ids[i],)]}}),
            Draft(3, events.PROGRESS, {"percentage": 0, "estimatedTimeRemaining": None,
                                       "currentStep": f"0 of {len(infos)} answered",
                                       "completedSteps": 0}),
        ]
        for draft in head:
            if draft.seq >= start_seq:
                yield draft
        by_id = {info.stream_id: pos for pos, info in enumerate(infos)}
        got = await self._recover(job, start_seq, by_id)
        seq = max(start_seq, HEAD + 1)
        followers, vectors = (await self._similar(job, plan)
                              if len(got.outcomes) < len(infos) else ({}, None))
        async for kind, data in self._follow(job, plan, infos, got, followers, vectors):
            yield Draft(seq, kind, data)
            seq += 1
        yield Draft(seq, events.RESULT, batch.aggregate(plan, got.outcomes, stream_ids))

    async def _similar(self, job: Job, plan: batch.BatchPlan,
                       ) -> tuple[dict[int, tuple[int, float]], Any]:
        """With the cache on: the children whose query is similar (the cache's
        threshold) to an earlier child's (they wait for it and replay its answer), and
        the children's query embeddings, computed here in one call (each child's job
        carries its own: its worker's cache lookup need not embed it again)."""
        cs = self._settings.cache
        if not cs.enabled or not job.cache.use:
            return {}, None
        from eventlog.embeddings import shared_embedder

        queries = [c.query for c in plan.children]
        try:
            vectors = await asyncio.to_thread(shared_embedder().embed, queries)
        except Exception:  # an optimisation: every child is generated instead
            log.exception("batch %s: could not embed its queries", job.stream_id)
            return {}, None
        return similar_leaders(vectors, cs.threshold), vectors

    async def _follow(self, job: Job, plan: batch.BatchPlan, infos: list[StreamInfo],
                      got: _Progress, followers: dict[int, tuple[int, float]],
                      vectors: Any = None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Start the children and forward their events until every one has ended. A
        follower (``followers``) starts once its leader has ended: replaying the
        leader's answer if it completed here (``Job.replay_of``), else as any child."""
        kafka = self._access()
        partitions = self._settings.log.partitions
        limit = batch.concurrency(plan.strategy, len(infos), plan.cap)
        pending = deque(p for p in batch.dispatch_order(plan.children, plan.strategy)
                        if p not in got.outcomes)
        running: set[int] = set()
        by_key = {info.stream_id.encode(): pos for pos, info in enumerate(infos)}
        loop = asyncio.get_running_loop()
        began = loop.time()
        ended_here = 0

        #: Leaders that completed while this generator followed them: their answer.
        answered: dict[int, StreamInfo] = {}

        async def dispatch() -> None:
            held: list[int] = []
            jobs: list[Job] = []
            while pending and len(running) < limit:
                pos = pending.popleft()
                lead = followers.get(pos)
                if lead is not None and lead[0] not in got.outcomes:
                    held.append(pos)  # its leader has not ended yet
                    continue
                running.add(pos)
                child = self._job(plan, pos, infos[pos], vectors)
                if lead is not None and lead[0] in answered:
                    child = dataclasses.replace(child, replay_of=answered[lead[0]],
                                                replay_similarity=lead[1])
                jobs.append(child)
            pending.extendleft(reversed(held))
            # Sent together (queued in this order, acknowledged in one round trip or
            # a few), not one acknowledgement after another.
            await asyncio.gather(*(send_job(kafka.producer, j, partitions=partitions)
                                   for j in jobs))

        if len(got.outcomes) == len(infos):
            return
        consumer = await started(
            lambda: make_consumer(self._settings.kafka, role="worker-batch",
                                  fetch_min_bytes=FOLLOW_MIN_BYTES,
                                  fetch_max_wait_ms=FOLLOW_MAX_WAIT_MS),
            self._settings.kafka, "batch consumer start")
        try:
            starts: dict[TopicPartition, int] = {}
            for pos, info in enumerate(infos):
                if pos in got.outcomes:
                    continue
                tp = TopicPartition(info.topic, info.partition)
                starts[tp] = min(starts.get(tp, info.first_offset), info.first_offset)
            consumer.assign(list(starts))
            for tp, offset in starts.items():
                consumer.seek(tp, offset)
            await dispatch()
            while len(got.outcomes) < len(infos):
                fetched = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in fetched.values():
                    for raw in records:
                        found = by_key.get(raw.key) if raw.key is not None else None
                        if found is None or found in got.outcomes:
                            continue
                        pos = found
                        rec = LogRecord.from_consumer(raw)
                        if rec is None or rec.seq <= got.forwarded.get(pos, 0):
                            continue
                        got.forwarded[pos] = rec.seq
                        if rec.type in _NOT_FORWARDED:
                            continue
                        child = plan.children[pos]
                        data = _envelope_data(rec.value)
                        yield events.METADATA, {"child": {
                            "index": child.index, "indices": list(child.indices),
                            "streamId": infos[pos].stream_id, "seq": rec.seq,
                            "type": rec.type, "data": data}}
                        if not events.is_terminal(rec.type):
                            continue
                        got.outcomes[pos] = batch.Outcome(type=rec.type, data=data)
                        if rec.type == events.RESULT:
                            answered[pos] = infos[pos].evolve(
                                status=index.COMPLETED, terminal_offset=raw.offset,
                                last_seq=rec.seq, updated_at=rec.timestamp)
                        running.discard(pos)
                        ended_here += 1
                        done = len(got.outcomes)
                        left = len(infos) - done
                        per_child = (loop.time() - began) / ended_here
                        yield events.PROGRESS, {
                            "percentage": round(100 * done / len(infos), 1),
                            "estimatedTimeRemaining": round(
                                per_child * left / max(1, min(limit, left or 1)), 3),
                            "currentStep": f"{done} of {len(infos)} answered",
                            "completedSteps": done}
                        await dispatch()
        finally:
            await stop_client(consumer)
