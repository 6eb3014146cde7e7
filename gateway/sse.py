"""Server-Sent Events framing (WHATWG HTML, "Server-sent events"), byte for byte.

Frames are built once per event and shared by every subscriber. A field value may
not contain CR or LF; multi-line data becomes one ``data:`` line per line, which a
client joins back with LF.
"""

from __future__ import annotations

import re
from typing import Final

_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")
_BAD_FIELD: Final = re.compile(r"[\r\n\x00]")


def _field(name: str, value: str) -> bytes:
    if _BAD_FIELD.search(value):
        raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return f"{name}: {value}\n".encode()


def frame_event(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event: ``id``, ``event``, then ``data`` lines, then a blank line."""
    parts = []
    if id is not None:
        parts.append(_field("id", id))
    if event is not None:
        parts.append(_field("event", event))
    if b"\n" in data or b"\r" in data:
        parts.extend(b"data: " + line + b"\n" for line in _LINE_BREAK.split(data))
    else:
        parts.append(b"data: " + data + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def frame_comment(text: str = "") -> bytes:
    """A comment line (ignored by clients; keeps idle connections alive)."""
    lines = text.splitlines() or [""]
    return b"".join((f": {line}\n" if line else ":\n").encode() for line in lines) + b"\n"


def frame_retry(milliseconds: int) -> bytes:
    """The client's reconnection delay."""
    if milliseconds < 0:
        raise ValueError("retry must be >= 0")
    return f"retry: {milliseconds}\n\n".encode()


PING: Final = frame_comment("ping")
