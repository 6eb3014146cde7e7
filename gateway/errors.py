"""Errors of the HTTP edge: who may do what, and how much.

Each maps to one problem+json answer in ``gateway.problems``.
"""

from __future__ import annotations

from eventlog.errors import StreamNotFound
from schemas.errors import TidemarkError


class Unauthenticated(TidemarkError):
    """No token, or a token that does not verify (401 with ``WWW-Authenticate``)."""

    def __init__(self, reason: str, *, error: str = "invalid_token") -> None:
        super().__init__(reason)
        #: The RFC 6750 ``error`` code: ``invalid_request`` (no token) or ``invalid_token``.
        self.error = error


class Forbidden(TidemarkError):
    """A valid token without the scope this request needs (403)."""

    def __init__(self, reason: str, *, scope: str | None = None) -> None:
        super().__init__(reason)
        self.scope = scope


class LimitExceeded(TidemarkError):
    """A limit is reached (429 with ``Retry-After``); ``limit`` names which one."""

    retriable = True

    def __init__(self, reason: str, *, limit: str, retry_after: int) -> None:
        super().__init__(reason)
        self.limit = limit
        self.retry_after = max(1, retry_after)


class NotYours(StreamNotFound):
    """Another tenant's or user's stream: answered exactly as a stream that does not
    exist; only the audit log sees ``why``."""

    def __init__(self, message: str, *, why: str) -> None:
        super().__init__(message)
        self.why = why


class LimitsUnavailable(TidemarkError):
    """The store of the shared limit counters (Redis) did not answer in time (503 with
    ``Retry-After``): requests that would create streams or publish are refused."""

    retriable = True
