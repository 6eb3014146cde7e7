"""Records of the jobs topic: generation requests and control records (cancel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from eventlog.index import StreamInfo

GENERATE: Final = "generate"
CANCEL: Final = "cancel"


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """A request to generate one stream's events, with the stream's index record."""

    stream: StreamInfo
    query: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_id(self) -> str:
        return self.stream.stream_id

    @property
    def generator(self) -> str:
        return self.stream.generator

    def to_json(self) -> bytes:
        return orjson.dumps({"type": GENERATE, "stream": self.stream.to_json().decode(),
                             "query": self.query, "options": self.options})


def cancel_record(stream_id: str) -> bytes:
    return orjson.dumps({"type": CANCEL, "stream_id": stream_id})


def parse_job_record(raw: bytes) -> Job | str | None:
    """A :class:`Job`, the stream id of a cancel record, or None for anything else."""
    try:
        obj = orjson.loads(raw)
        if obj.get("type") == GENERATE:
            return Job(stream=StreamInfo.from_json(obj["stream"].encode()),
                       query=str(obj["query"]), options=dict(obj.get("options") or {}))
        if obj.get("type") == CANCEL:
            return str(obj["stream_id"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None
    return None
