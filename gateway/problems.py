"""RFC 9457 problem details: every error response, mapped in one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiokafka.errors import KafkaError

from eventlog.errors import (
    KafkaUnavailable,
    SeqConflict,
    StreamEnded,
    StreamGone,
    StreamNotFound,
)
from eventlog.targets import UnsafeTarget
from gateway.audit import AUDIT
from gateway.breaker import CircuitOpen
from gateway.errors import Forbidden, LimitExceeded, NotYours, Unauthenticated
from gateway.metrics import METRICS
from schemas.errors import TidemarkError
from schemas.eventid import InvalidEventId
from schemas.validation import InvalidInput

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/problem+json"

_TITLES: Final = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    413: "Content Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 426: "Upgrade Required",
    429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Problem(web.HTTPException):
    """An HTTP error with a problem+json body."""

    def __init__(self, status: int, detail: str, *, retry_after: int = 1,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        self.status_code = status
        body = {"type": "about:blank", "title": _TITLES.get(status, "Error"),
                "status": status, "detail": detail, **extra}
        headers = dict(headers or {})
        if status in (429, 503):
            headers["Retry-After"] = str(retry_after)
        super().__init__(body=orjson.dumps(body), content_type=CONTENT_TYPE, headers=headers)


def problem_for(exc: TidemarkError) -> Problem:
    if isinstance(exc, Unauthenticated):
        return Problem(401, str(exc), headers={
            "WWW-Authenticate": f'Bearer realm="tidemark", error="{exc.error}"'})
    if isinstance(exc, Forbidden):
        if exc.scope is None:
            return Problem(403, str(exc))
        return Problem(403, str(exc), scope=exc.scope)
    if isinstance(exc, LimitExceeded):
        return Problem(429, str(exc), retry_after=exc.retry_after, limit=exc.limit)
    if isinstance(exc, InvalidInput):
        return Problem(422, exc.reason, field=exc.pointer)
    if isinstance(exc, UnsafeTarget):
        return Problem(400, str(exc), field="/url")
    if isinstance(exc, InvalidEventId):
        return Problem(400, f"malformed position: {exc}")
    if isinstance(exc, StreamNotFound):
        return Problem(404, str(exc))
    if isinstance(exc, StreamGone):
        return Problem(410, str(exc))
    if isinstance(exc, SeqConflict):
        return Problem(409, str(exc), expected_seq=exc.expected)
    if isinstance(exc, StreamEnded):
        return Problem(409, str(exc))
    if isinstance(exc, CircuitOpen):
        return Problem(503, f"temporarily unavailable: {exc}", retry_after=exc.retry_after)
    if isinstance(exc, KafkaUnavailable) or exc.retriable:
        return Problem(503, f"temporarily unavailable: {exc}")
    return Problem(500, "internal error")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Methods that read: the only ones a gateway of a mirror serves.
_READS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def read_only_middleware(home: str) -> Middleware:
    """A gateway of a MirrorMaker 2 copy of the namespace (``TIDEMARK_MIRROR_OF``) serves
    reads; a write would go to a log that MirrorMaker, not Tidemark, writes: 409."""

    @web.middleware
    async def read_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in _READS and request.path.startswith("/v1/"):
            raise Problem(409, f"this gateway serves a read-only mirror of cluster {home!r}: "
                          "create, publish, cancel and reply through a gateway of that "
                          "cluster", home=home)
        return await handler(request)

    return read_only


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into problem+json; nothing a client sends crashes the gateway.
    Each error answer is counted in ``tidemark_http_problems_total{status}``. (One
    coroutine: it stays on the stack of every open SSE response.)"""
    try:
        return await handler(request)
    except Exception as exc:  # the outer edge: every error becomes a problem
        problem = _problem_of(request, exc)
        if problem is None:
            raise
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.problems.labels(str(problem.status)).inc()
        if problem is exc:
            raise
        raise problem from exc


def _problem_of(request: web.Request, exc: Exception) -> Problem | None:
    """The problem that answers ``exc`` (None: a redirect or other non-error answer,
    raised as it is). Called while ``exc`` is being handled."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, Unauthenticated | Forbidden | LimitExceeded | NotYours):
        problem = problem_for(exc)
        request.app[AUDIT].record(
            request, "deny", outcome="denied", status=problem.status,
            reason=exc.why if isinstance(exc, NotYours) else str(exc),
            stream=request.match_info.get("id"))
        return problem
    if isinstance(exc, TidemarkError):
        return problem_for(exc)
    if isinstance(exc, KafkaError):
        return Problem(503, f"temporarily unavailable: Kafka: {exc}")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return Problem(exc.status, detail or exc.reason)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return Problem(500, "internal error")
