"""A worker's admin endpoints, beside its ``/metrics``: ``GET`` and ``PUT
/v1/admin/log-levels``, as on a gateway (``gateway.observe``), for this one process.

A request needs a bearer token (``Authorization: Bearer``) verified with the same
settings as the gateways' (``eventlog.tokens``) that carries the ``admin`` scope and the
operators' tenant (``TIDEMARK_OPERATOR_TENANT``, else ``TIDEMARK_DEFAULT_TENANT``); with
``TIDEMARK_AUTH=none`` anyone may, as on a gateway. Errors are
``application/problem+json``; each change (and each refusal) is an audit line on the
logger ``tidemark.audit``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import orjson
from aiohttp import web

from eventlog import loglevels
from eventlog.errors import InvalidToken, TidemarkError
from eventlog.settings import AuthSettings
from eventlog.tokens import TokenVerifier
from schemas.validation import InvalidInput, Validators

log = logging.getLogger(__name__)
audit = logging.getLogger("tidemark.audit")

PATH: Final = "/v1/admin/log-levels"
ADMIN: Final = "admin"
_TITLES: Final = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                  415: "Unsupported Media Type", 422: "Unprocessable Content"}


class _Refused(TidemarkError):
    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


def _problem(status: int, detail: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="tidemark", error="invalid_token"'} \
        if status == 401 else None
    body = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status,
            "detail": detail, **extra}
    return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                        content_type="application/problem+json")


class _Guard:
    def __init__(self, auth: AuthSettings, operators: str) -> None:
        self._enabled = auth.mode == "jwt"
        self._tenant = operators
        self._verifier = TokenVerifier(auth)
        self.validators = Validators()

    def check(self, request: web.Request) -> str:
        """The admin's ``sub``; :class:`_Refused` (401/403) otherwise."""
        if not self._enabled:
            return "anonymous"
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "a bearer token is required (Authorization: Bearer)")
        try:
            claims, alg = self._verifier.claims(token.strip())
        except InvalidToken as exc:
            raise _Refused(401, str(exc)) from exc
        if alg == "HS256" and self._verifier.keys:
            # As on a gateway: the secret then signs only read tokens, never an admin.
            raise _Refused(401, "HS256 tokens are accepted only as read tokens here")
        scopes = str(claims.get("scope", "")).split()
        if ADMIN not in scopes or claims.get("stream") is not None:
            raise _Refused(403, f"this token lacks the {ADMIN!r} scope", scope=ADMIN)
        if claims.get("tenant") != self._tenant:
            raise _Refused(403, f"log levels belong to the whole process: an admin of "
                           f"tenant {self._tenant!r} (the operators') sets them",
                           scope=ADMIN)
        return str(claims.get("sub"))


def _record(request: web.Request, outcome: str, **extra: Any) -> None:
    entry = {"ts": round(time.time(), 3), "action": "log-levels", "outcome": outcome,
             "method": request.method, "path": request.path, "remote": request.remote,
             **extra}
    audit.info("audit %s", orjson.dumps(entry).decode())


def add_routes(app: web.Application, auth: AuthSettings, *, operators: str,
               instance: str) -> None:
    """``operators``: the tenant whose admins may (``Settings.operators_tenant``)."""
    guard = _Guard(auth, operators)

    def answer() -> web.Response:
        body = {"process": instance, **loglevels.LOG_LEVELS.current()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def get_levels(request: web.Request) -> web.Response:
        try:
            guard.check(request)
        except _Refused as exc:
            _record(request, "denied", status=exc.status, reason=exc.detail)
            return _problem(exc.status, exc.detail, **exc.extra)
        return answer()

    async def put_levels(request: web.Request) -> web.Response:
        try:
            sub = guard.check(request)
            levels = await _levels(request, guard.validators)
        except _Refused as exc:
            _record(request, "denied" if exc.status in (401, 403) else "invalid",
                    status=exc.status, reason=exc.detail)
            return _problem(exc.status, exc.detail, **exc.extra)
        loglevels.LOG_LEVELS.apply(levels)
        log.warning("log levels changed by %s: %s", sub, levels)
        _record(request, "ok", sub=sub, levels=levels)
        return answer()

    app.router.add_get(PATH, get_levels)
    app.router.add_put(PATH, put_levels)


async def _levels(request: web.Request, validators: Validators) -> dict[str, str]:
    if request.content_type not in ("application/json", ""):
        raise _Refused(415, "send the body as application/json")
    raw = await request.content.read(64 * 1024 + 1)
    if len(raw) > 64 * 1024:
        raise _Refused(400, "the body is larger than 64 KiB")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, f"the body is not valid JSON: {exc}") from exc
    try:
        validators.check("log_levels", body)
    except InvalidInput as exc:
        raise _Refused(422, str(exc), field=exc.pointer) from exc
    try:
        return loglevels.parse(body["levels"])
    except loglevels.LogLevelError as exc:
        raise _Refused(422, str(exc), field="/levels") from exc
