"""The similar-query cache in the worker: look a job up, replay a cached answer into the
new stream, and remember completed answers (docs/cache.md).

Where the decision is made. At job start, before the generator runs, the worker that
owns the job looks its query up in the tenant's scope (``eventlog.cache``): the same
normalised query is a hit without an embedding; else the query is embedded and the
nearest cached queries of the scope (``eventlog.cache_index``) are tried from the
nearest, and the first at or above ``TIDEMARK_CACHE_THRESHOLD`` whose stream is still
usable wins. Usable: younger than ``TIDEMARK_CACHE_TTL``, and its events still in the
log (its first offset at or above its partition's log start; retention deletes from
the start, so then all of them are there).

How a hit is answered. The new stream's events are written into its own log by the
worker's transactional outbox, like any generator's: first a ``metadata`` event
``{"cache": {"hit": true, "sourceStream", "match", "similarity", "cachedAt",
"pacing"}}`` whose record carries the source's index record in a ``tm-cache-source``
header, then the source's events after its seq 0 (its inputs left out), each with the
same type and data, at the next seqs. So the stream has its own ids, resumes exactly
like any other, and outlives its source. A worker that takes the stream over reads the
header back (``StreamState.cache_source``) and goes on with the same source from where
the log stops; a stream whose first answer event has no such header is generated.
A replay is paced as its creator asked (``cache.pacing`` of the create request, else
``TIDEMARK_CACHE_PACING``): ``instant``, or ``original``: the source's own gaps between
events (each at most ``TIDEMARK_CACHE_REPLAY_MAX_GAP``).

What is remembered. A generated stream that ends with ``result`` (and whose creator did
not say ``cache.use: false``) becomes an entry once its terminal transaction committed.
The events of the answers replayed most recently stay in memory, up to
``TIDEMARK_CACHE_HOT_BYTES``, so a hot answer is not read from Kafka again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer

from eventlog.cache import (
    EXACT,
    ORIGINAL,
    SIMILAR,
    CacheEntry,
    Scope,
    normalise,
)
from eventlog.clients import make_producer, started, stop_client
from eventlog.embeddings import DIM, MODEL_ID, Embedder, shared_embedder
from eventlog.index import StreamInfo
from eventlog.jobs import Job
from eventlog.reader import LogReader
from eventlog.settings import Settings
from eventlog.streams import now_ms
from eventlog.topics import cache_topic
from schemas import events
from schemas.context import DETAILED
from schemas.events import HEADER_CACHE_SOURCE
from workers.generators import Draft
from workers.pacing import Pacer, Schedule

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from eventlog.cache_index import CacheIndex

log = logging.getLogger(__name__)

#: How often expired entries are tombstoned (by every worker; tombstones are idempotent).
SWEEP_S = 60.0


class SourceEvent(NamedTuple):
    """One event of a cached answer: its type, data and ``ts`` (ms)."""

    type: str
    data: dict[str, Any]
    ts: int


class Hit(NamedTuple):
    """A cached answer for a job: the completed stream to replay and how it matched."""

    source: StreamInfo
    match: str
    similarity: float
    cached_at: int


class HotAnswers:
    """The events of the most recently used answers, by source stream, bounded by their
    bytes (the JSON size of each event's data, plus a fixed cost per event)."""

    PER_EVENT = 200

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._answers: OrderedDict[str, tuple[list[SourceEvent], int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, stream_id: str) -> list[SourceEvent] | None:
        got = self._answers.get(stream_id)
        if got is None:
            return None
        self._answers.move_to_end(stream_id)
        return got[0]

    def put(self, stream_id: str, answer: list[SourceEvent]) -> None:
        size = sum(len(orjson.dumps(e.data)) + self.PER_EVENT for e in answer)
        self.drop(stream_id)
        if size > self._max:
            return
        self._answers[stream_id] = (answer, size)
        self.bytes += size
        while self.bytes > self._max:
            _, (_, dropped) = self._answers.popitem(last=False)
            self.bytes -= dropped

    def drop(self, stream_id: str) -> None:
        old = self._answers.pop(stream_id, None)
        if old is not None:
            self.bytes -= old[1]


def fresh(entry: CacheEntry, now: int, ttl_s: float) -> bool:
    """Whether ``entry`` may still be served at ``now`` (ms) under a TTL of ``ttl_s``."""
    return now - entry.created_at < ttl_s * 1000


def response_format(job: Job) -> str:
    return (job.context.response_format if job.context is not None else None) or DETAILED


def marker(hit: Hit, pacing: str) -> dict[str, Any]:
    """The ``data`` of the ``metadata`` event that opens a replayed stream."""
    return {"cache": {"hit": True, "sourceStream": hit.source.stream_id, "match": hit.match,
                      "similarity": round(hit.similarity, 4), "cachedAt": hit.cached_at,
                      "pacing": pacing}}


class QueryCache:
    """The worker's cache: the index (rebuilt from the topic), the embedder (loaded in a
    thread when :meth:`run` starts), the hot answers and a producer for
    entries and tombstones. :meth:`run` until cancelled."""

    def __init__(self, settings: Settings, reader: LogReader, *,
                 embedder: Callable[[], Embedder] = shared_embedder,
                 on_lookup: Callable[[str], None] | None = None,
                 on_embed: Callable[[float], None] | None = None) -> None:
        self._settings = settings
        self._cs = settings.cache
        self._reader = reader
        self._embedder_factory = embedder
        self._on_lookup = on_lookup or (lambda outcome: None)
        self._on_embed = on_embed or (lambda seconds: None)
        self.hot = HotAnswers(self._cs.hot_bytes)
        self._producer: AIOKafkaProducer | None = None
        self._ready = asyncio.Event()
        #: The index, built by :meth:`run` (numpy and faiss are imported only then: a
        #: worker with the cache off only replays streams another worker began).
        self.index: CacheIndex | None = None
        self._pacer = Pacer()
        self._topic = cache_topic(settings.log.namespace)

    @property
    def ready(self) -> asyncio.Event:
        """Set once the index holds the whole topic (lookups wait for it, bounded)."""
        return self._ready

    def __len__(self) -> int:
        return 0 if self.index is None else len(self.index)

    async def run(self) -> None:
        from eventlog.cache_index import CacheIndex, CacheTail

        kafka = self._settings.kafka
        self.index = CacheIndex(dim=DIM, model=MODEL_ID, max_entries=self._cs.max_entries)
        tail = CacheTail(kafka, self._settings.log.namespace, self.index)
        tail.ready = self._ready
        self._producer = await started(lambda: make_producer(kafka, role="cache"), kafka,
                                       "cache producer start")
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(tail.run(), name="cache-tail")
                tasks.create_task(self._sweep(), name="cache-sweep")
                tasks.create_task(self._load_model(), name="cache-model")
        finally:
            await stop_client(self._producer)
            self._producer = None

    async def _load_model(self) -> None:
        """Load the model now, in a thread, rather than on the first query that needs it
        (0.5 s and more: that query's first event, or a batch's start, would wait)."""
        start = time.perf_counter()
        try:
            await asyncio.to_thread(self._embedder_factory)
        except Exception:  # the first query that needs it tries again, and says why
            log.exception("could not load the embedding model")
            return
        log.info("embedding model loaded in %.2f s", time.perf_counter() - start)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(SWEEP_S, self._cs.ttl_s))
            oldest = now_ms() - int(self._cs.ttl_s * 1000)
            for entry in self.index.expired(oldest) if self.index is not None else ():
                await self.forget(entry)

    # Lookup ---------------------------------------------------------------------------

    def scope(self, job: Job, version: str) -> Scope:
        return Scope(tenant=job.stream.tenant or self._settings.auth.default_tenant,
                     generator=job.generator, version=version, options=job.options,
                     response_format=response_format(job), model=MODEL_ID)

    async def lookup(self, job: Job, version: str,
                     ) -> tuple[Hit | None, npt.NDArray[np.float32] | None]:
        """The job's cached answer (None: a miss), and the query's embedding if one was
        computed (kept for :meth:`remember`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), self._settings.kafka.connect_timeout_s)
        index = self.index
        if index is None:
            return None, None
        scope = self.scope(job, version).key
        norm = normalise(job.query)
        exact = index.exact(scope, norm)
        if exact is not None and await self._usable(exact):
            self._on_lookup("hit_exact")
            return Hit(exact.source, EXACT, 1.0, exact.created_at), None
        vector = self.given(job)
        if vector is None:
            vector = await self.embed(job.query)
        for candidate in index.nearest(scope, vector):
            if candidate.similarity < self._cs.threshold:
                break
            if await self._usable(candidate.entry):
                self._on_lookup("hit_similar")
                entry = candidate.entry
                return Hit(entry.source, SIMILAR, candidate.similarity,
                           entry.created_at), vector
        self._on_lookup("miss")
        return None, vector

    @staticmethod
    def given(job: Job) -> npt.NDArray[np.float32] | None:
        """The query's embedding the job brought (a batch computed it), if it is this
        model's; None: embed it here."""
        if job.query_model != MODEL_ID or len(job.query_vector) != DIM * 4:
            return None
        import numpy as np

        vector: npt.NDArray[np.float32] = np.frombuffer(job.query_vector, dtype="<f4")
        return vector.astype(np.float32)

    async def embed(self, text: str) -> npt.NDArray[np.float32]:
        """``text``'s unit vector, computed off the event loop."""
        start = time.perf_counter()
        vectors = await asyncio.to_thread(lambda: self._embedder_factory().embed([text]))
        self._on_embed(time.perf_counter() - start)
        out: npt.NDArray[np.float32] = vectors[0]
        return out

    async def _usable(self, entry: CacheEntry) -> bool:
        """Young enough, and its events all still in the log; an entry that is neither
        is tombstoned (never served again)."""
        source = entry.source
        if fresh(entry, now_ms(), self._cs.ttl_s) and source.terminal_offset is not None:
            start = await self._reader.log_start(source.topic, source.partition)
            if start <= source.first_offset:
                return True
        await self.forget(entry)
        return False

    # Replay ---------------------------------------------------------------------------

    async def answer(self, source: StreamInfo) -> list[SourceEvent] | None:
        """The source's events after its seq 0, inputs left out, up to its terminal one;
        None if the log no longer holds them all."""
        hot = self.hot.get(source.stream_id)
        if hot is not None:
            return hot
        if source.terminal_offset is None:
            return None
        start, end = await self._reader.bounds(source.topic, source.partition)
        if start > source.first_offset or end <= source.terminal_offset:
            return None
        out: list[SourceEvent] = []
        last = 0
        terminal = False
        async with self._reader.open(source.topic, source.partition,
                                     source.first_offset) as cursor:
            async for rec in cursor.records(until=source.terminal_offset + 1,
                                            key=source.stream_id.encode()):
                if rec.seq <= last or terminal:
                    continue
                last = rec.seq
                terminal = events.is_terminal(rec.type)
                if rec.type == events.INPUT:
                    continue
                envelope = orjson.loads(rec.value)
                data = envelope.get("data")
                out.append(SourceEvent(rec.type, data if isinstance(data, dict) else {},
                                       int(envelope.get("ts") or rec.timestamp)))
        if not terminal:
            return None
        self.hot.put(source.stream_id, out)
        return out

    async def replay(self, hit: Hit, start: int, pacing: str) -> AsyncIterator[Draft]:
        """The replayed stream's drafts from generator seq ``start``: 1 is the marker,
        2.. the source's events (see the module's docstring)."""
        if start <= 1:
            yield Draft(1, events.METADATA, marker(hit, pacing))
        answer = await self.answer(hit.source)
        if answer is None:
            yield Draft(max(start, 2), events.ERROR, {
                "code": "cache_source_gone", "retryable": True,
                "message": f"the cached stream {hit.source.stream_id} is no longer in the "
                           "log; create the stream again"})
            return
        schedule = Schedule(self._pacer, self._cs.replay_max_gap_s)
        previous: int | None = None
        for i, ev in enumerate(answer):
            seq = i + 2
            if seq >= start:
                if pacing == ORIGINAL and previous is not None:
                    gap = max(0.0, (ev.ts - previous) / 1000)
                    await schedule.wait(min(gap, self._cs.replay_max_gap_s))
                yield Draft(seq, ev.type, ev.data)
            previous = ev.ts

    @staticmethod
    def headers(hit: Hit) -> tuple[tuple[str, bytes], ...]:
        """The marker's record headers: the source's index record."""
        return ((HEADER_CACHE_SOURCE, hit.source.to_json()),)

    @staticmethod
    def hit_in_log(raw: bytes) -> Hit | None:
        """The hit a replayed stream's marker recorded (``tm-cache-source``)."""
        try:
            source = StreamInfo.from_json(raw)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
        return Hit(source, SIMILAR, 0.0, source.updated_at)

    # Entries --------------------------------------------------------------------------

    async def remember(self, job: Job, version: str, info: StreamInfo,
                       vector: npt.NDArray[np.float32] | None) -> None:
        """Make the completed stream ``info`` the cached answer to its job's query."""
        if vector is None:
            vector = await self.embed(job.query)
        scope = self.scope(job, version)
        entry = CacheEntry(scope=scope.key, tenant=scope.tenant, generator=job.generator,
                           version=version, query=job.query, norm=normalise(job.query),
                           source=info, created_at=now_ms(),
                           vector=vector.astype("<f4").tobytes(), model=MODEL_ID)
        await self._send(entry.key, entry.to_json())
        # This worker's index learns of it from the topic like every other one; until
        # then a lookup here misses, never serves a half-written answer.

    async def forget(self, entry: CacheEntry) -> None:
        if self.index is not None:
            self.index.remove(entry.key)
        self.hot.drop(entry.stream_id)
        await self._send(entry.key, None)

    async def _send(self, key: str, value: bytes | None) -> None:
        producer = self._producer
        if producer is None:
            return
        # The default partitioner (by key, over the topic's own partition count), as
        # gateways' tombstones use: an entry and its tombstone meet in one partition.
        await (await producer.send(self._topic, value, key=key.encode()))
