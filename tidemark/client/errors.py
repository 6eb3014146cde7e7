"""The client SDK's errors, under Tidemark's one root (``schemas.errors``).

A refusal the gateway explains (problem+json, or a WebSocket close 4000 + status with the
problem's ``detail`` as its reason) is a :class:`ProblemError` carrying that ``detail``;
the statuses a follower cannot retry have a class each.
"""

from __future__ import annotations

from typing import Any

from schemas.errors import TidemarkError

__all__ = [
    "BadRequest", "ClientError", "Forbidden", "Gone", "NoTransport", "NotFound",
    "ProblemError", "RetriesExhausted", "Unauthorized", "problem_error",
]


class ClientError(TidemarkError):
    """Root of the client SDK's errors."""


class ProblemError(ClientError):
    """The gateway refused a request: ``status`` and the problem's ``detail``."""

    def __init__(self, status: int, detail: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {detail}" if detail else str(status))
        self.status = status
        self.detail = detail
        #: The whole problem+json body (empty for a WebSocket close, which has only a reason).
        self.problem = problem or {}


class BadRequest(ProblemError):
    """400: a malformed position or parameter."""


class Unauthorized(ProblemError):
    """401: no token, or one that does not verify."""


class Forbidden(ProblemError):
    """403: the token lacks the scope, or is another stream's read token."""


class NotFound(ProblemError):
    """404: no such stream, or not the caller's."""


class Gone(ProblemError):
    """410: the stream was deleted by retention; nothing of it can be read any more."""


class RetriesExhausted(ClientError):
    """The connection kept dropping (or the gateway kept answering 429/503) past the
    reconnect policy's attempts or total time. ``__cause__`` is the last failure."""

    retriable = True


class NoTransport(ClientError):
    """Every allowed transport was refused on the way to the gateway (an upgrade refused,
    a response that gave no byte within the deadline)."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 410: Gone}


def problem_error(status: int, detail: str,
                  problem: dict[str, Any] | None = None) -> ProblemError:
    """The error for a refusal with ``status``."""
    return _BY_STATUS.get(status, ProblemError)(status, detail, problem)
