"""Records of the jobs topic: generation requests and control records (cancel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from eventlog.index import StreamInfo
from schemas.context import StreamContext

GENERATE: Final = "generate"
CANCEL: Final = "cancel"


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """A request to generate one stream's events, with the stream's index record."""

    stream: StreamInfo
    query: str
    options: dict[str, Any] = field(default_factory=dict)
    #: The stream's per-user context (its ``responseFormat`` is for the generator).
    context: StreamContext | None = None

    @property
    def stream_id(self) -> str:
        return self.stream.stream_id

    @property
    def generator(self) -> str:
        return self.stream.generator

    def to_json(self) -> bytes:
        obj: dict[str, Any] = {"type": GENERATE, "stream": self.stream.to_json().decode(),
                               "query": self.query, "options": self.options}
        if self.context is not None:
            obj["context"] = self.context.to_json()
        return orjson.dumps(obj)


def cancel_record(stream_id: str) -> bytes:
    return orjson.dumps({"type": CANCEL, "stream_id": stream_id})


def parse_job_record(raw: bytes) -> Job | str | None:
    """A :class:`Job`, the stream id of a cancel record, or None for anything else."""
    try:
        obj = orjson.loads(raw)
        if obj.get("type") == GENERATE:
            context = obj.get("context")
            return Job(stream=StreamInfo.from_json(obj["stream"].encode()),
                       query=str(obj["query"]), options=dict(obj.get("options") or {}),
                       context=None if context is None else StreamContext.from_json(context))
        if obj.get("type") == CANCEL:
            return str(obj["stream_id"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return None
