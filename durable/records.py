"""The Kafka records of Durable Streams: one topic per namespace, one record per operation.

Topic ``tidemark.<ns>.ds``; key = ``<tenant>/<stream path>``; the value is the bytes
the operation adds to the stream (possibly none) and the header ``ds`` is the
operation as compact JSON:

- ``{"op": "create", "ct", "ttl", "exp", "closed", "src", "srcgen", "fo", "pend", "ts"}``: a
  stream (re)created at this key; ``src``/``srcgen``/``fo`` name a fork's source (its key,
  the position of the source's create record) and fork offset;
- ``{"op": "append", "close", "pid", "ep", "sq", "sseq", "n", "ts"}``: data appended
  (``n`` JSON messages for ``application/json`` streams), optionally by an idempotent
  producer (``pid``/``ep``/``sq``), optionally with ``Stream-Seq`` ``sseq``, optionally
  closing the stream;
- ``{"op": "delete", "ts"}``, and ``{"op": "touch", "ts"}`` (a read that resets a sliding
  TTL);
- ``{"op": "fork", "fork", "fgen", "ts"}`` in a source's partition: confirms the fork
  whose create record (marked ``pend``) is at ``fgen`` (see :mod:`durable.state`).

Every gateway folds these records, in partition order, into the same state
(:mod:`durable.state`); the log is the only store.
"""

from __future__ import annotations

import zlib
from typing import Any, Final

import orjson

HEADER: Final = "ds"


def ds_topic(namespace: str) -> str:
    """The Durable Streams records of a namespace."""
    return f"tidemark.{namespace}.ds"


def stream_key(tenant: str, path: str) -> str:
    """The Kafka key of a tenant's stream path (a tenant name holds no ``/``)."""
    return f"{tenant}/{path}"


def partition_of(key: str, partitions: int) -> int:
    """The partition of a stream's records: a stable hash of its key."""
    return zlib.crc32(key.encode()) % partitions


def encode(meta: dict[str, Any]) -> list[tuple[str, bytes]]:
    return [(HEADER, orjson.dumps(meta))]


def decode(headers: Any) -> dict[str, Any] | None:
    """The operation of a record (None: not a Durable Streams record)."""
    for name, value in headers or ():
        if name == HEADER:
            try:
                meta = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
            return meta if isinstance(meta, dict) else None
    return None
