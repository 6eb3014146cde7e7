"""The similar-query cache's index in memory, and the tail that keeps it equal to the
compacted topic ``tidemark.<ns>.cache`` (``eventlog.cache``).

:class:`CacheIndex` holds the entries, at most ``max_entries`` (the oldest beyond it are
forgotten here; they stay in the topic until their TTL), with one faiss HNSW index
(cosine) per scope: a query is only ever compared with queries of its own tenant and
scope, so one scope's crowd never pushes another's answers out of a search. Exact
normalised matches are a dict lookup and need no embedding.

:class:`CacheTail` reads the topic from its start at process start (the index is
rebuilt from the topic, so it survives restarts and every worker has the same one), then
follows it: an entry a worker writes, or a tombstone an admin's delete writes through
any gateway, reaches every worker's index within a fetch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, NamedTuple

import faiss
import numpy as np
from aiokafka import AIOKafkaConsumer

from eventlog.cache import CacheEntry, cache_topic, entry_key
from eventlog.clients import make_consumer, read_to_end, started, stop_client
from eventlog.settings import KafkaSettings

if TYPE_CHECKING:
    import numpy.typing as npt

log = logging.getLogger(__name__)

#: How many neighbours one search looks at (the nearest valid one wins).
NEIGHBOURS = 8


class Candidate(NamedTuple):
    entry: CacheEntry
    #: Cosine similarity to the query (1.0 for an exact normalised match).
    similarity: float


class _ScopeIndex:
    """The ANN index of one scope: a faiss HNSW graph over inner products (the vectors
    are unit length, so the inner product is the cosine), with faiss's integer ids mapped
    to entry keys. HNSW cannot remove a vector: a removed entry's id is forgotten (its
    vector no longer maps to anything) and the graph is rebuilt from the live vectors
    once the dead outnumber them."""

    #: HNSW neighbours per node (faiss's ``M``).
    LINKS = 32

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self.labels: dict[int, str] = {}
        self.by_key: dict[str, int] = {}
        self._vectors: dict[int, npt.NDArray[np.float32]] = {}
        self._dead = 0
        self._next = 1
        self._ann = self._new()

    def _new(self) -> Any:
        return faiss.IndexIDMap(faiss.IndexHNSWFlat(self._dim, self.LINKS,
                                                    faiss.METRIC_INNER_PRODUCT))

    def add(self, key: str, vector: npt.NDArray[np.float32]) -> None:
        self.remove(key)
        label = self._next
        self._next += 1
        row = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        self._ann.add_with_ids(row, np.array([label], dtype=np.int64))
        self.labels[label] = key
        self.by_key[key] = label
        self._vectors[label] = row

    def remove(self, key: str) -> None:
        label = self.by_key.pop(key, None)
        if label is None:
            return
        self.labels.pop(label, None)
        self._vectors.pop(label, None)
        self._dead += 1
        if self._dead > max(64, len(self.labels)):
            self._rebuild()

    def _rebuild(self) -> None:
        self._ann = self._new()
        self._dead = 0
        if self._vectors:
            ids = np.array(list(self._vectors), dtype=np.int64)
            self._ann.add_with_ids(np.vstack(list(self._vectors.values())), ids)

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[tuple[str, float]]:
        if not self.labels:
            return []
        row = np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32)
        sims, ids = self._ann.search(row, min(k + self._dead, len(self.labels) + self._dead))
        out = [(self.labels[int(i)], float(sim)) for i, sim in zip(ids[0], sims[0], strict=True)
               if int(i) in self.labels]
        return out[:k]


class CacheIndex:
    """Entries by key, by scope and normalised query, and by scope in an ANN index."""

    def __init__(self, *, dim: int, model: str, max_entries: int) -> None:
        self._dim = dim
        self._model = model
        self._max = max_entries
        #: key -> entry, oldest first (by when this index learnt of it).
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._scopes: dict[str, _ScopeIndex] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[CacheEntry]:
        return list(self._entries.values())

    def put(self, entry: CacheEntry) -> None:
        """Add or replace an entry (one of another model, or damaged, is ignored)."""
        if entry.model != self._model or len(entry.vector) != 4 * self._dim:
            return
        key = entry.key
        self.remove(key)
        self._entries[key] = entry
        scope = self._scopes.get(entry.scope)
        if scope is None:
            scope = self._scopes[entry.scope] = _ScopeIndex(self._dim)
        scope.add(key, np.frombuffer(entry.vector, dtype="<f4"))
        while len(self._entries) > self._max:
            self.remove(next(iter(self._entries)))

    def remove(self, key: str) -> CacheEntry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            scope = self._scopes.get(entry.scope)
            if scope is not None:
                scope.remove(key)
                if not scope.labels:
                    del self._scopes[entry.scope]
        return entry

    def apply(self, key: str, value: bytes | None) -> None:
        """A record of the topic: an entry, or a tombstone (None) for ``key``."""
        if value is None:
            self.remove(key)
            return
        entry = CacheEntry.from_json(value)
        if entry is not None and entry.key == key:
            self.put(entry)

    def exact(self, scope: str, norm: str) -> CacheEntry | None:
        return self._entries.get(entry_key(scope, norm))

    def nearest(self, scope: str, vector: npt.NDArray[np.float32],
                k: int = NEIGHBOURS) -> list[Candidate]:
        """The entries of ``scope`` nearest to ``vector`` (unit length), nearest first."""
        index = self._scopes.get(scope)
        if index is None:
            return []
        out = []
        for key, similarity in index.search(vector, k):
            entry = self._entries.get(key)
            if entry is not None:
                out.append(Candidate(entry, similarity))
        return out

    def expired(self, oldest_ms: int) -> list[CacheEntry]:
        """Entries created before ``oldest_ms``."""
        return [e for e in self._entries.values() if e.created_at < oldest_ms]


class CacheTail:
    """Follows the cache topic into a :class:`CacheIndex`; :attr:`ready` is set once it
    has read up to the end the topic had when it started (the index is whole)."""

    def __init__(self, kafka: KafkaSettings, namespace: str, index: CacheIndex) -> None:
        self._kafka = kafka
        self._topic = cache_topic(namespace)
        self._index = index
        #: May be replaced by the owner's event before :meth:`run`.
        self.ready = asyncio.Event()

    def _apply(self, rec: Any) -> None:
        if rec.key is not None:
            self._index.apply(rec.key.decode("ascii", "replace"), rec.value)

    async def run(self) -> None:
        kafka = self._kafka
        consumer: AIOKafkaConsumer = await started(
            lambda: make_consumer(kafka, role="cache-tail"), kafka, "cache tail start")
        try:
            async for rec in read_to_end(consumer, self._topic):
                self._apply(rec)
            log.info("cache index rebuilt from %s: %s entries", self._topic, len(self._index))
            self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for records in batches.values():
                    for rec in records:
                        self._apply(rec)
        finally:
            await stop_client(consumer)
