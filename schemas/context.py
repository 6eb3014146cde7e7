"""A stream's per-user context (the roadmap's ``UserStreamingContext``).

``POST /v1/streams`` accepts ``context: {"sessionId", "preferences": {"updateFrequency",
"responseFormat", "includeMetadata"}}`` (every part optional, checked by
``schemas/json/create_stream.json``). The context is stored, as given, in the stream's
first event (``data.context`` of its ``status`` ``queued`` event), so every reader of
the log sees it, and in the stream's job, so the generator sees ``responseFormat``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

REALTIME: Final = "realtime"
BATCHED: Final = "batched"
UPDATE_FREQUENCIES: Final = (REALTIME, BATCHED)
DETAILED: Final = "detailed"
CONCISE: Final = "concise"
RESPONSE_FORMATS: Final = (DETAILED, CONCISE)

#: The marker of a context in a first event's envelope (orjson writes no spaces).
_MARKER: Final = b'"context":'


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamContext:
    """The parts of a context; None where the creator said nothing."""

    session_id: str | None = None
    update_frequency: str | None = None
    response_format: str | None = None
    include_metadata: bool | None = None

    @classmethod
    def from_json(cls, obj: Any) -> StreamContext:
        """From the JSON form (as validated at create); parts of the wrong type or value
        (a log written by someone else) count as not given."""
        if not isinstance(obj, dict):
            return cls()
        prefs = obj.get("preferences")
        prefs = prefs if isinstance(prefs, dict) else {}
        session = obj.get("sessionId")
        freq = prefs.get("updateFrequency")
        fmt = prefs.get("responseFormat")
        meta = prefs.get("includeMetadata")
        return cls(session_id=session if isinstance(session, str) else None,
                   update_frequency=freq if freq in UPDATE_FREQUENCIES else None,
                   response_format=fmt if fmt in RESPONSE_FORMATS else None,
                   include_metadata=meta if isinstance(meta, bool) else None)

    def to_json(self) -> dict[str, Any]:
        """The JSON form, with only the parts given."""
        prefs: dict[str, Any] = {}
        if self.update_frequency is not None:
            prefs["updateFrequency"] = self.update_frequency
        if self.response_format is not None:
            prefs["responseFormat"] = self.response_format
        if self.include_metadata is not None:
            prefs["includeMetadata"] = self.include_metadata
        out: dict[str, Any] = {}
        if self.session_id is not None:
            out["sessionId"] = self.session_id
        if prefs:
            out["preferences"] = prefs
        return out


def context_of_envelope(envelope: bytes) -> StreamContext | None:
    """The context in a stream's first event (its envelope bytes), or None when it has
    none. Cheap for the common case: no JSON is parsed unless the marker is there."""
    if _MARKER not in envelope:
        return None
    try:
        obj = orjson.loads(envelope)
    except orjson.JSONDecodeError:
        return None
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, dict) or obj.get("seq") != 0 or "context" not in data:
        return None
    return StreamContext.from_json(data["context"])
