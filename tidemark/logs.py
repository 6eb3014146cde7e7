"""Logging set-up: plain text or one JSON object per line, and per-module levels.

A JSON line carries ``ts``, ``level``, ``logger``, ``msg``, any ``extra`` fields, the
fields of the log context (``eventlog.logcontext``: ``stream``, ``partition``,
``offset`` where the code bound them) and, when an OpenTelemetry span is current and
valid, its ``trace_id`` and ``span_id`` (lower-case hex, as in ``traceparent``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
from opentelemetry import trace

from eventlog import logcontext, loglevels

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3), "level": record.levelname,
            "logger": record.name, "msg": record.getMessage(),
        }
        out.update(logcontext.current())
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = format(span.trace_id, "032x")
            out["span_id"] = format(span.span_id, "016x")
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class _TransientKafkaNoise(logging.Filter):
    """aiokafka logs some errors it retries by itself at ERROR (a group coordinator
    not elected yet, a partition leader moving); below DEBUG they are noise."""

    _RETRIED = ("GroupCoordinatorNotAvailable", "NotLeaderForPartition", "NodeNotReady",
                "NotCoordinatorForGroup", "CoordinatorLoadInProgress")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        message = record.getMessage()
        return not any(name in message for name in self._RETRIED)


def setup_logging(*, level: str, fmt: str, role: str, levels: str = "") -> None:
    """Log to stderr as text or JSON at ``level``, with ``levels`` (a
    ``TIDEMARK_LOG_LEVELS`` spec, already validated by the settings) on top."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {role} %(name)s: %(message)s"))
    if level.upper() != "DEBUG":
        handler.addFilter(_TransientKafkaNoise())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    loglevels.LOG_LEVELS.apply(loglevels.parse(levels))
