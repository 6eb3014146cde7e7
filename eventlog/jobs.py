"""Records of the jobs topics: generation requests and control records (cancel, input).

A control record goes to the stream's partition of both jobs topics (the sender need not
know which one its job went to): the copy on the job's own topic comes after the job, so
it finds the job even if it had not started yet, and it stays unconsumed (below the
partition's committed offset) while the job runs, so a worker that takes the job over
reads it again. The worker ignores control records of a stream it is not generating,
and an input it already has (by its ``input_id``)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer

from eventlog.cache import CachePrefs
from eventlog.index import StreamInfo
from eventlog.placement import stream_partition
from eventlog.topics import jobs_topic, jobs_topics
from eventlog.tracing import trace_headers_of
from schemas.context import StreamContext

GENERATE: Final = "generate"
CANCEL: Final = "cancel"
INPUT: Final = "input"


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """A request to generate one stream's events, with the stream's index record.

    ``priority``: it is on the priority jobs topic (its user's tier has ``priority``).
    """

    stream: StreamInfo
    query: str
    options: dict[str, Any] = field(default_factory=dict)
    priority: bool = False
    #: The stream's per-user context (its ``responseFormat`` is for the generator).
    context: StreamContext | None = None
    #: The W3C trace-context headers of the job's record (``traceparent``: the span that
    #: created the stream), for the worker's generation span. Not in the JSON.
    trace: tuple[tuple[str, bytes], ...] = ()
    #: The creator's similar-query cache preferences (``eventlog.cache``).
    cache: CachePrefs = field(default_factory=CachePrefs)
    #: A completed stream of the same tenant whose answer this job replays instead of
    #: generating (a batch's similar query, answered once: ``workers.batch``), and the
    #: similarity it was matched with. Set only by Tidemark's own processes: no client
    #: input reaches it.
    replay_of: StreamInfo | None = None
    replay_similarity: float = 0.0
    #: The query's sentence embedding, when the process that wrote the job computed it
    #: (a batch embeds its children's queries at once): the model's id and the vector as
    #: little-endian float32 bytes. The worker's cache lookup uses it instead of
    #: embedding the query again (if the model is its own). Set only by Tidemark's own
    #: processes, like ``replay_of``.
    query_model: str = ""
    query_vector: bytes = b""

    @property
    def stream_id(self) -> str:
        return self.stream.stream_id

    @property
    def generator(self) -> str:
        return self.stream.generator

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"type": GENERATE, "stream": self.stream.to_json().decode(),
                               "query": self.query, "options": self.options,
                               "priority": self.priority}
        if self.context is not None:
            obj["context"] = self.context.to_json()
        if self.cache != CachePrefs():
            obj["cache"] = self.cache.to_json()
        if self.replay_of is not None:
            obj["replay_of"] = self.replay_of.to_json().decode()
            obj["replay_similarity"] = self.replay_similarity
        if self.query_vector:
            obj["query_vector"] = {"model": self.query_model,
                                   "f32le": base64.b64encode(self.query_vector).decode()}
        return orjson.dumps(obj)


def cancel_record(stream_id: str) -> bytes:
    return orjson.dumps({"type": CANCEL, "stream_id": stream_id})


@dataclass(frozen=True, kw_only=True, slots=True)
class InputRecord:
    """A client's input for a worker-generated stream, on its way to the owning worker
    (``schemas/json/input_record.json``). ``input_id`` is unique per input: the worker
    writes each input into the stream once, whoever sends or reads it twice."""

    stream_id: str
    input_id: str
    data: dict[str, Any]
    #: Who sent it (the token's tenant and ``sub``) and when (ms since the epoch).
    tenant: str
    sub: str
    ts: int

    def to_json(self) -> bytes:
        return orjson.dumps({"type": INPUT, "stream_id": self.stream_id,
                             "input_id": self.input_id, "data": self.data,
                             "tenant": self.tenant, "sub": self.sub, "ts": self.ts})


async def send_job(producer: AIOKafkaProducer, job: Job, *, partitions: int,
                   trace: Sequence[tuple[str, bytes]] = ()) -> None:
    """Write the job record (to the priority jobs topic for a ``priority`` job), at the
    stream's jobs partition; ``trace``: W3C trace-context headers for it. Writing one
    twice is harmless: a worker skips a job it is running and ends at once one whose
    stream has ended."""
    stream_id = job.stream_id
    await (await producer.send(
        jobs_topic(job.stream.namespace, priority=job.priority), job.to_json(),
        key=stream_id.encode(), partition=stream_partition(stream_id, partitions),
        headers=list(trace) or None))


async def send_control(producer: AIOKafkaProducer, namespace: str, stream_id: str,
                       record: bytes, *, partitions: int) -> None:
    """Send a control record to the stream's partition of both jobs topics."""
    partition = stream_partition(stream_id, partitions)
    futures = [await producer.send(topic, record, key=stream_id.encode(),
                                   partition=partition) for topic in jobs_topics(namespace)]
    for fut in futures:
        await fut


async def send_cancel(producer: AIOKafkaProducer, namespace: str, stream_id: str, *,
                      partitions: int) -> None:
    """Ask the worker that owns the stream's job to stop it."""
    await send_control(producer, namespace, stream_id, cancel_record(stream_id),
                       partitions=partitions)


async def send_input(producer: AIOKafkaProducer, namespace: str, record: InputRecord, *,
                     partitions: int) -> None:
    """Hand an input to the worker that owns (or will own) the stream's job."""
    await send_control(producer, namespace, record.stream_id, record.to_json(),
                       partitions=partitions)


def parse_job_record(raw: bytes, headers: Iterable[tuple[str, bytes]] = (),
                     ) -> Job | InputRecord | str | None:
    """A :class:`Job` (with the trace-context ``headers`` of its record), an
    :class:`InputRecord`, the stream id of a cancel record, or None for anything else."""
    try:
        obj = orjson.loads(raw)
        if obj.get("type") == GENERATE:
            context = obj.get("context")
            replay = obj.get("replay_of")
            return Job(stream=StreamInfo.from_json(obj["stream"].encode()),
                       query=str(obj["query"]), options=dict(obj.get("options") or {}),
                       priority=bool(obj.get("priority", False)),
                       context=None if context is None else StreamContext.from_json(context),
                       trace=trace_headers_of(headers),
                       cache=CachePrefs.from_json(obj.get("cache")),
                       replay_of=(StreamInfo.from_json(replay.encode())
                                  if isinstance(replay, str) else None),
                       replay_similarity=float(obj.get("replay_similarity") or 0.0),
                       **_query_vector(obj.get("query_vector")))
        if obj.get("type") == CANCEL:
            return str(obj["stream_id"])
        if obj.get("type") == INPUT:
            data = obj["data"]
            if not isinstance(data, dict):
                return None
            return InputRecord(stream_id=str(obj["stream_id"]), input_id=str(obj["input_id"]),
                               data=data, tenant=str(obj.get("tenant", "")),
                               sub=str(obj.get("sub", "")), ts=int(obj.get("ts", 0)))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return None


def _query_vector(raw: Any) -> dict[str, Any]:
    """A job record's ``query_vector`` as :class:`Job` fields; none for a record without
    one (every record before it existed) or with a malformed one (the worker embeds)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("f32le"), str):
        return {}
    try:
        vector = base64.b64decode(raw["f32le"], validate=True)
    except (binascii.Error, ValueError):
        return {}
    if not vector or len(vector) % 4:
        return {}
    return {"query_model": str(raw.get("model") or ""), "query_vector": vector}
