"""The protocol's request parsing and answers, free of I/O: headers, JSON mode, cursors.

Each check here names the protocol rule it applies; :mod:`durable.routes` composes them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from durable.offsets import ORIGIN, START, Position, parse
from durable.state import Stream
from durable.state import media_type as media_type

STREAM_NEXT_OFFSET: Final = "Stream-Next-Offset"
STREAM_UP_TO_DATE: Final = "Stream-Up-To-Date"
STREAM_CLOSED: Final = "Stream-Closed"
STREAM_CURSOR: Final = "Stream-Cursor"
STREAM_TTL: Final = "Stream-TTL"
STREAM_EXPIRES_AT: Final = "Stream-Expires-At"
STREAM_SEQ: Final = "Stream-Seq"
FORKED_FROM: Final = "Stream-Forked-From"
FORK_OFFSET: Final = "Stream-Fork-Offset"
FORK_SUB_OFFSET: Final = "Stream-Fork-Sub-Offset"
PRODUCER_ID: Final = "Producer-Id"
PRODUCER_EPOCH: Final = "Producer-Epoch"
PRODUCER_SEQ: Final = "Producer-Seq"
PRODUCER_EXPECTED_SEQ: Final = "Producer-Expected-Seq"
PRODUCER_RECEIVED_SEQ: Final = "Producer-Received-Seq"
SSE_ENCODING: Final = "Stream-SSE-Data-Encoding"

#: Headers a browser page may send and read (CORS).
REQUEST_HEADERS: Final = (
    "Authorization", "Content-Type", "If-None-Match", STREAM_TTL, STREAM_EXPIRES_AT,
    STREAM_SEQ, STREAM_CLOSED, FORKED_FROM, FORK_OFFSET, FORK_SUB_OFFSET, PRODUCER_ID,
    PRODUCER_EPOCH, PRODUCER_SEQ)
RESPONSE_HEADERS: Final = (
    STREAM_NEXT_OFFSET, STREAM_UP_TO_DATE, STREAM_CLOSED, STREAM_CURSOR, STREAM_TTL,
    STREAM_EXPIRES_AT, PRODUCER_EPOCH, PRODUCER_SEQ, PRODUCER_EXPECTED_SEQ,
    PRODUCER_RECEIVED_SEQ, SSE_ENCODING, "ETag", "Location", "Content-Type")

_UINT: Final = re.compile(r"^(0|[1-9][0-9]*)$(?!\n)")
#: 2^53 - 1: the largest producer epoch or seq (JavaScript's safe integers).
MAX_SAFE: Final = 2**53 - 1
#: Cursor intervals: 20 s from 2024-10-09T00:00:00Z (the protocol's defaults).
CURSOR_EPOCH_S: Final = 1728432000
CURSOR_INTERVAL_S: Final = 20


class BadRequest(Exception):
    """The request is malformed: 400 with this text."""


def flag(value: str | None) -> bool:
    """``Stream-Closed``: present only when exactly ``true`` (any case)."""
    return value is not None and value.strip().lower() == "true"


def uint(value: str, what: str, *, limit: int | None = None) -> int:
    if not _UINT.match(value):
        raise BadRequest(f"{what} must be a non-negative decimal integer")
    number = int(value)
    if limit is not None and number > limit:
        raise BadRequest(f"{what} must be at most {limit}")
    return number


def ttl_of(value: str | None) -> int | None:
    return None if value is None else uint(value.strip(), STREAM_TTL)


def expires_of(value: str | None) -> int | None:
    """``Stream-Expires-At`` (RFC 3339) as epoch milliseconds."""
    if value is None:
        return None
    text = value.strip()
    if not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
                    text):
        raise BadRequest(f"{STREAM_EXPIRES_AT} must be an RFC 3339 timestamp")
    try:
        moment = dt.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{STREAM_EXPIRES_AT} must be an RFC 3339 timestamp") from exc
    return int(moment.timestamp() * 1000)


def rfc3339(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Producer:
    id: str
    epoch: int
    seq: int


def producer_of(headers: Any) -> Producer | None:
    """The idempotent producer headers: all three or none (400)."""
    values = [headers.get(name) for name in (PRODUCER_ID, PRODUCER_EPOCH, PRODUCER_SEQ)]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise BadRequest("Producer-Id, Producer-Epoch and Producer-Seq go together")
    pid, epoch, seq = (str(v) for v in values)
    if not pid.strip():
        raise BadRequest("Producer-Id must not be empty")
    return Producer(pid, uint(epoch.strip(), PRODUCER_EPOCH, limit=MAX_SAFE),
                    uint(seq.strip(), PRODUCER_SEQ, limit=MAX_SAFE))


def read_offset(raw: str | None, stream: Stream) -> tuple[Position, bool]:
    """Where a read starts, and whether it was ``now``."""
    if raw is None or raw == START:
        return ORIGIN, False
    if raw == "now":
        return stream.tail, True
    position = parse(raw)
    if position is None:
        raise BadRequest("malformed offset")
    return position, False


def json_messages(body: bytes, *, allow_empty: bool) -> list[bytes]:
    """JSON mode: the messages of a body, one level of array flattened (400 when the body
    is not JSON, or an empty array where that is not allowed)."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON") from exc
    items = value if isinstance(value, list) else [value]
    if not items and not allow_empty:
        raise BadRequest("an empty JSON array appends nothing")
    return [json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
            for item in items]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def content_type_matches(stream: Stream, content_type: str | None) -> bool:
    return content_type is None or media_type(content_type) == media_type(stream.content_type)


def is_text(content_type: str) -> bool:
    kind = media_type(content_type)
    return kind.startswith("text/") or kind == "application/json"


def cursor(client: str | None) -> str:
    """The next ``Stream-Cursor``: the current 20 s interval, or past the client's one
    by 1-3600 s of random jitter when the client is already at or past it."""
    current = int((time.time() - CURSOR_EPOCH_S) // CURSOR_INTERVAL_S)
    if client is not None and client.isdigit() and int(client) >= current:
        jitter_s = random.randint(1, 3600)  # noqa: S311 (spreads caches, no secret)
        return str(int(client) + max(1, jitter_s // CURSOR_INTERVAL_S))
    return str(current)


def sse_event(kind: str, lines: list[str]) -> bytes:
    return (f"event: {kind}\n" + "".join(f"data:{line}\n" for line in lines) + "\n").encode()


def sse_data(stream: Stream, chunks: list[bytes]) -> bytes:
    """One ``event: data`` with these records' bytes (a JSON array, text lines, or base64)."""
    if stream.is_json:
        return sse_event("data", ["[" + ",".join(c.decode() for c in chunks if c) + "]"])
    data = b"".join(chunks)
    if is_text(stream.content_type):
        text = data.decode("utf-8", errors="replace")
        return sse_event("data", text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return sse_event("data", [base64.b64encode(data).decode()])


#: Chunks up to this many framed bytes are shared by the SSE readers of a stream.
SSE_FRAME_MAX_BYTES = 64 * 1024
#: Framed bytes kept in all (the oldest go first).
SSE_FRAMES_MAX_BYTES = 16 * 1024 * 1024


class SseFrames:
    """The ``event: data`` bytes of recent chunks, framed once and written by every SSE
    reader that sends the same chunk: the live readers of a stream all send the records
    just applied, so 1,000 readers cost one framing (and no read of the bytes) per append
    rather than 1,000. A chunk is named by its stream's incarnation and its first and
    next positions, and the records between never change. Bounded: chunks of up to
    :data:`SSE_FRAME_MAX_BYTES`, :data:`SSE_FRAMES_MAX_BYTES` in all, oldest out first."""

    def __init__(self, *, max_bytes: int = SSE_FRAMES_MAX_BYTES,
                 max_frame: int = SSE_FRAME_MAX_BYTES) -> None:
        self._frames: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_frame = max_frame

    def get(self, key: tuple[object, ...]) -> bytes | None:
        return self._frames.get(key)

    def put(self, key: tuple[object, ...], frame: bytes) -> None:
        if len(frame) > self._max_frame or key in self._frames:
            return
        self._frames[key] = frame
        self._bytes += len(frame)
        while self._bytes > self._max_bytes:
            _, old = self._frames.popitem(last=False)
            self._bytes -= len(old)
