"""The log record as Tidemark reads it: a position, a key, the routing headers and the
trace context."""

from __future__ import annotations

import re
from typing import Any, Final, NamedTuple

from schemas.events import (
    EVENT_TYPE_PATTERN,
    HEADER_CACHE_SOURCE,
    HEADER_GENERATOR,
    HEADER_INPUT,
    HEADER_PROC,
    HEADER_SEQ,
    HEADER_TRACEPARENT,
    HEADER_TYPE,
)

_TYPE_RE: Final = re.compile(EVENT_TYPE_PATTERN)


class LogRecord(NamedTuple):
    """One record of a stream's log, with ``type`` and ``seq`` from its headers."""

    partition: int
    offset: int
    key: bytes
    value: bytes
    type: str
    seq: int
    timestamp: int
    #: The ``tm-generator`` header (a stream's first record carries it), else None.
    generator: str | None = None
    #: The W3C ``traceparent`` header (of the span that wrote it), else None.
    traceparent: str | None = None
    #: The ``tm-input`` header (an input a worker wrote for a generated stream), else None.
    input_id: str | None = None
    #: The ``tm-cache-source`` header (a cache hit's ``metadata`` event), else None.
    cache_source: bytes | None = None
    #: The ``tm-proc`` header (an event content processors wrote), else None.
    proc: bytes | None = None

    @classmethod
    def from_consumer(cls, record: Any) -> LogRecord | None:
        """Convert an aiokafka ConsumerRecord; None for records Tidemark did not write
        (no key or value, or routing headers missing or malformed)."""
        if record.key is None or record.value is None:
            return None
        kind = ""
        seq = -1
        generator = traceparent = input_id = None
        cache_source = None
        proc: bytes | None = None
        for name, raw in record.headers:
            if name == HEADER_TYPE:
                kind = raw.decode("ascii", "replace")
            elif name == HEADER_SEQ:
                try:
                    seq = int(raw)
                except ValueError:
                    return None
            elif name == HEADER_GENERATOR:
                generator = raw.decode("ascii", "replace")
            elif name == HEADER_TRACEPARENT:
                traceparent = raw.decode("ascii", "replace")
            elif name == HEADER_INPUT:
                input_id = raw.decode("ascii", "replace")
            elif name == HEADER_CACHE_SOURCE:
                cache_source = raw
            elif name == HEADER_PROC:
                proc = raw
        if seq < 0 or _TYPE_RE.search(kind) is None:
            return None
        return cls(record.partition, record.offset, record.key, record.value, kind, seq,
                   record.timestamp, generator, traceparent, input_id, cache_source, proc)
