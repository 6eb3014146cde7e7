"""The transport-neutral form of what the resume pipeline writes: ``(id, event,
envelope)`` items, decoded from the SSE frames the hub made once per event, and their
JSON rendering for the WebSocket and long-poll transports.

The hub frames every event as ``id: <id>\\nevent: <type>\\ndata: <envelope>\\n\\n``;
the envelope is one line of orjson, so the ``data`` bytes are the envelope's bytes
exactly. Decoding a frame gives those bytes back untouched, and :func:`render` puts
them in the item's JSON as they are: an event's ``data`` is byte for byte the SSE
``data:`` line on every transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, NamedTuple

import orjson

from schemas.events import TERMINAL_TYPES

#: A comment the pipeline writes as a keepalive (``gateway.sse.PING``).
PING_TEXT: Final = "ping"
#: Comments that end the answer start with this (the client is to resume).
CLOSING_PREFIX: Final = "closing:"


class Item(NamedTuple):
    """One event (or in-band notice, with ``id`` None) as every transport sends it."""

    id: str | None
    event: str
    #: The envelope's JSON bytes (the SSE ``data:`` line).
    data: bytes

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_TYPES


class Comment(NamedTuple):
    """An SSE comment the pipeline wrote: a ping, or why the answer ends."""

    text: str

    @property
    def closing(self) -> bool:
        return self.text.startswith(CLOSING_PREFIX)


def decode(data: bytes) -> Iterator[Item | Comment]:
    """The items and comments in ``data`` (whole SSE frames, as the pipeline writes
    them), in order; ``retry:`` lines are dropped (they are SSE's own)."""
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        if frame.startswith(b":"):
            yield Comment("\n".join(line[1:].strip().decode() for line in frame.split(b"\n")))
            continue
        event_id: str | None = None
        event = "message"
        lines: list[bytes] = []
        for line in frame.split(b"\n"):
            name, _, value = line.partition(b": ")
            if name == b"data":
                lines.append(value)
            elif name == b"id":
                event_id = value.decode()
            elif name == b"event":
                event = value.decode()
        if lines:
            yield Item(event_id, event, lines[0] if len(lines) == 1 else b"\n".join(lines))


def render(item: Item) -> bytes:
    """``{"id", "event", "data"}``, with ``data`` the envelope object itself (its bytes
    as the log holds them); ``id`` is null for an in-band notice (``reset``)."""
    head = b'{"id":null' if item.id is None else b'{"id":"' + item.id.encode() + b'"'
    return head + b',"event":' + orjson.dumps(item.event) + b',"data":' + item.data + b"}"
