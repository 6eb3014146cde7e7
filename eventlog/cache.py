"""The similar-query cache's records: what a cached answer is keyed by, how a query is
normalised, and the compacted topic ``tidemark.<ns>.cache`` that holds the entries.

An entry says "the completed stream S answered query Q for this scope". Its scope is the
tenant, the generator, the generator's version, the generator's options and the response
format the stream was made with, and the embedding model (vectors of two models do not
compare): two streams share a cached answer only when all of them are equal. The entry's
Kafka key is a hash of the scope and the normalised query, so a newer answer to the same
query replaces the older one when the topic is compacted, and a tombstone (a null value)
removes it. Each entry carries its query's embedding, so a process that rebuilds the
index from the topic embeds nothing.

Nothing here loads the model or numpy: gateways use this module to delete entries (by
stream or by query, :func:`delete_entries`) without paying for the model. Workers keep the index
(``eventlog.cache_index``) and answer from it (``workers.cache``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer

from eventlog.clients import make_consumer, read_to_end, started, stop_client
from eventlog.index import StreamInfo
from eventlog.settings import KafkaSettings
from eventlog.topics import cache_topic

__all__ = ["CacheEntry", "CachePrefs", "Scope", "cache_topic", "delete_entries", "entry_key",
           "normalise"]

#: The creator's replay pacing: every event at once, or at the source's own pace.
INSTANT: Final = "instant"
ORIGINAL: Final = "original"
PACINGS: Final = (INSTANT, ORIGINAL)
#: How a hit was found: the same normalised query (no embedding computed), or a near one.
EXACT: Final = "exact"
SIMILAR: Final = "similar"
#: Version of the entry record's JSON.
RECORD_VERSION: Final = 1

_NOT_WORD: Final = re.compile(r"[\W_]+", re.UNICODE)


def normalise(query: str) -> str:
    """The form two queries must share to be an exact match: Unicode NFKC, case-folded,
    every run of punctuation, symbols and white space one space, trimmed."""
    text = unicodedata.normalize("NFKC", query).casefold()
    return _NOT_WORD.sub(" ", text).strip()


@dataclass(frozen=True, kw_only=True, slots=True)
class CachePrefs:
    """The creator's cache preferences (``cache`` of ``POST /v1/streams``): ``use``
    false: always generate (and cache nothing); ``pacing`` of a replay, None: the
    operator's default (``TIDEMARK_CACHE_PACING``)."""

    use: bool = True
    pacing: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> CachePrefs:
        if not isinstance(obj, dict):
            return cls()
        pacing = obj.get("pacing")
        return cls(use=obj.get("use") is not False,
                   pacing=pacing if pacing in PACINGS else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"use": self.use}
        if self.pacing is not None:
            out["pacing"] = self.pacing
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Scope:
    """Everything besides the query that an answer depends on."""

    tenant: str
    generator: str
    version: str
    options: Mapping[str, Any] = field(default_factory=dict)
    response_format: str = ""
    model: str = ""

    @property
    def key(self) -> str:
        """A stable hash of the scope (options in key order)."""
        raw = orjson.dumps([self.tenant, self.generator, self.version, dict(self.options),
                            self.response_format, self.model], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(raw).hexdigest()[:32]


def entry_key(scope_key: str, norm: str) -> str:
    """The entry's Kafka key: one per scope and normalised query."""
    return hashlib.sha256(f"{scope_key}\x00{norm}".encode()).hexdigest()[:32]


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheEntry:
    """One cached answer: the completed ``source`` stream answered ``query``."""

    scope: str
    tenant: str
    generator: str
    version: str
    query: str
    norm: str
    source: StreamInfo
    created_at: int
    #: The query's embedding, float32 little-endian (``model``'s dimension).
    vector: bytes
    model: str

    @property
    def key(self) -> str:
        return entry_key(self.scope, self.norm)

    @property
    def stream_id(self) -> str:
        return self.source.stream_id

    def to_json(self) -> bytes:
        return orjson.dumps({
            "v": RECORD_VERSION, "scope": self.scope, "tenant": self.tenant,
            "generator": self.generator, "version": self.version, "query": self.query,
            "norm": self.norm, "source": self.source.to_json().decode(),
            "createdAt": self.created_at, "model": self.model,
            "vector": base64.b64encode(self.vector).decode()})

    @classmethod
    def from_json(cls, raw: bytes) -> CacheEntry | None:
        """The entry, or None for a record that is not one (another version, damage)."""
        try:
            obj = orjson.loads(raw)
            if obj.get("v") != RECORD_VERSION:
                return None
            return cls(scope=str(obj["scope"]), tenant=str(obj["tenant"]),
                       generator=str(obj["generator"]), version=str(obj["version"]),
                       query=str(obj["query"]), norm=str(obj["norm"]),
                       source=StreamInfo.from_json(str(obj["source"]).encode()),
                       created_at=int(obj["createdAt"]), model=str(obj["model"]),
                       vector=base64.b64decode(obj["vector"], validate=True))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            return None


def matches(entry: CacheEntry, *, tenant: str, stream_id: str | None = None,
            norm: str | None = None, generator: str | None = None) -> bool:
    """Whether an admin delete of ``tenant`` (by ``stream_id``, or by a normalised
    query ``norm``, optionally of one ``generator``) removes ``entry``."""
    if entry.tenant != tenant:
        return False
    if stream_id is not None and entry.stream_id != stream_id:
        return False
    if norm is not None and entry.norm != norm:
        return False
    return generator is None or entry.generator == generator


async def delete_entries(kafka: KafkaSettings, producer: AIOKafkaProducer, namespace: str,
                         predicate: Callable[[CacheEntry], bool]) -> int:
    """Tombstone every entry of the namespace's cache topic for which ``predicate``
    holds; return how many. Reads the compacted topic from its start to its end (one
    pass, keeping only the keys that match: memory grows with the matches, not the
    topic). Every worker's index drops them as its tail reads the tombstones."""
    topic = cache_topic(namespace)
    consumer = await started(lambda: make_consumer(kafka, role="cache-admin"), kafka,
                             "cache admin reader start")
    keys: set[str] = set()
    try:
        async for rec in read_to_end(consumer, topic):
            if rec.key is None:
                continue
            key = rec.key.decode("ascii", "replace")
            entry = None if rec.value is None else CacheEntry.from_json(rec.value)
            if entry is not None and entry.key == key and predicate(entry):
                keys.add(key)
            else:
                keys.discard(key)
    finally:
        await stop_client(consumer)
    futures = [await producer.send(topic, None, key=key.encode()) for key in sorted(keys)]
    for fut in futures:
        await fut
    return len(keys)
