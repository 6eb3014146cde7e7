"""The audit log: who created, cancelled or published to which stream, and every denied
request with its reason, as JSON lines.

Lines go to ``TIDEMARK_AUDIT_LOG`` (a file, appended to) when it is set, else to the
process log (logger ``tidemark.audit``). The log carries no tokens and no event data.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.auth import IDENTITY, Identity

LOGGER = "tidemark.audit"


class _Lines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return orjson.dumps(record.msg).decode()


class Audit:
    def __init__(self, path: str, *, gateway: str) -> None:
        self._log = logging.getLogger(LOGGER)
        self._gateway = gateway
        self._handler: logging.Handler | None = None
        if path:
            self._handler = logging.FileHandler(Path(path), encoding="utf-8")
            self._handler.setFormatter(_Lines())
            self._log.addHandler(self._handler)
            self._log.propagate = False
            self._log.setLevel(logging.INFO)

    def record(self, request: web.Request, action: str, *, outcome: str,
               stream: str | None = None, reason: str | None = None,
               status: int | None = None, **extra: Any) -> None:
        identity: Identity | None = request.get(IDENTITY)
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3), "action": action, "outcome": outcome,
            "tenant": identity.tenant if identity else None,
            "sub": identity.sub if identity else None,
            "stream": stream, "method": request.method, "path": request.path,
            "remote": request.remote, "gateway": self._gateway}
        if reason is not None:
            entry["reason"] = reason
        if status is not None:
            entry["status"] = status
        entry.update(extra)
        if self._handler is not None:
            self._log.info(entry)
        else:
            self._log.info("audit %s", orjson.dumps(entry).decode())

    def close(self) -> None:
        if self._handler is not None:
            self._log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None


AUDIT = web.AppKey("audit", Audit)
