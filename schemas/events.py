"""The event envelope and the built-in event types.

A Kafka record of a stream carries key = stream id, value = the envelope as orjson
bytes, and headers ``tm-type`` and ``tm-seq`` (so routers need not decode values), and,
when its writer was traced, the W3C ``traceparent`` (see ``eventlog.tracing``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

STATUS: Final = "status"
PROGRESS: Final = "progress"
PARTIAL_RESULT: Final = "partial_result"
METADATA: Final = "metadata"
RESULT: Final = "result"
ERROR: Final = "error"
CANCELLED: Final = "cancelled"
#: What a client said back mid-stream (``POST /v1/streams/{id}/input``, or the
#: WebSocket's ``{"op": "input"}``): an event of the log like any other.
INPUT: Final = "input"
#: In-band notice from a gateway that it could not resume at the asked position.
#: Never stored in the log, never publishable.
RESET: Final = "reset"

BUILTIN_TYPES: Final = frozenset(
    {STATUS, PROGRESS, PARTIAL_RESULT, METADATA, RESULT, ERROR, CANCELLED, INPUT}
)
TERMINAL_TYPES: Final = frozenset({RESULT, ERROR, CANCELLED})
RESERVED_TYPES: Final = frozenset({RESET, "message"})

HEADER_TYPE: Final = "tm-type"
HEADER_SEQ: Final = "tm-seq"
HEADER_TRACEPARENT: Final = "traceparent"
#: On a stream's first record (seq 0) only: the generator that writes the stream, so a
#: reader that found the stream in the log knows who writes it without an index.
HEADER_GENERATOR: Final = "tm-generator"
#: Also on the first record only: the stream's tenant and owner (the creator's ``sub``;
#: absent or empty: every user of the tenant). Consumers of the topic can tell whose
#: stream a record belongs to; gateways check version 3 ids by their tags instead.
HEADER_TENANT: Final = "tm-tenant"
HEADER_OWNER: Final = "tm-owner"
#: On an ``input`` event a worker wrote for a generated stream: the input's id (from its
#: jobs-topic record), so the gateway that took the input finds its event, and a worker
#: that takes the stream over writes no input twice.
HEADER_INPUT: Final = "tm-input"
#: On a stream answered from the similar-query cache, on its ``metadata`` event that
#: says so: the source stream's index record (JSON), so a worker that takes the replay
#: over replays the same source (``workers.cache``).
HEADER_CACHE_SOURCE: Final = "tm-cache-source"
#: On an event a worker's content processors wrote: where they were (the generator's
#: seq, the event's index among that draft's outputs, the processors' state before it),
#: so a worker that takes the stream over goes on exactly (``workers.processors``).
HEADER_PROC: Final = "tm-proc"

#: Patterns end in ``$(?!\n)``: the end of the string both in JSON Schema (ECMA-262)
#: and in Python, whose bare ``$`` also matches before a trailing newline.
#: Stream ids are URL path segments, Kafka keys and (with topic-per-stream
#: placement) part of topic names, so they stay within Kafka's topic alphabet.
STREAM_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$(?!\n)"
_STREAM_ID_RE: Final = re.compile(STREAM_ID_PATTERN)
#: Event type names: lowercase identifiers, safe on an SSE ``event:`` line.
EVENT_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_.-]{0,63}$(?!\n)"


def is_terminal(event_type: str) -> bool:
    return event_type in TERMINAL_TYPES


def is_valid_stream_id(stream_id: str) -> bool:
    return _STREAM_ID_RE.search(stream_id) is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One event of a stream, as the envelope on the wire."""

    stream: str
    seq: int
    type: str
    ts: int
    data: dict[str, Any]

    def to_json(self) -> bytes:
        """The envelope as one line of JSON (orjson never emits a newline)."""
        return orjson.dumps(
            {"stream": self.stream, "seq": self.seq, "type": self.type, "ts": self.ts,
             "data": self.data}
        )

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def headers(self) -> list[tuple[str, bytes]]:
        return [(HEADER_TYPE, self.type.encode()), (HEADER_SEQ, str(self.seq).encode())]

    @classmethod
    def from_json(cls, raw: bytes) -> Event:
        obj = orjson.loads(raw)
        return cls(stream=obj["stream"], seq=obj["seq"], type=obj["type"], ts=obj["ts"],
                   data=obj["data"])
