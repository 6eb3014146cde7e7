"""Who is asking, and may they: bearer tokens (JWT) and the checks every route makes.

A request's token comes from ``Authorization: Bearer``, else the ``access_token`` query
parameter (a browser ``EventSource`` cannot set headers), else the ``tidemark_token``
cookie. It is verified by ``eventlog.tokens.TokenVerifier`` (PyJWT) against keys this
process was given at start: HS256 with ``TIDEMARK_JWT_SECRET``, RS256 / ES256 with
``TIDEMARK_JWT_PUBLIC_KEY_FILE``; nothing named in a token is ever fetched, ``alg: none``
is refused, ``exp`` and ``sub`` are required.

Claims: ``sub`` (the user), ``tenant``, ``scope`` (space-separated), optional ``tier``
and ``limits`` (``{"maxConcurrentStreams", "requestsPerMinute"}``, overriding the tier's
defaults), and ``stream`` on the read tokens a gateway issues at create: such a token
reads that one stream and nothing else. With public keys configured, an HS256 token is
accepted only as such a read token (the secret then signs nothing else).

Streams belong to a tenant and an owner. :func:`check_stream` refuses another tenant's
(or, without ``admin``, another user's) stream exactly as a stream that does not exist:
for version 3 ids from the id's tags, before anything is read.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import jwt
from aiohttp import web

from eventlog.errors import ConfigError, InvalidToken
from eventlog.index import StreamInfo
from eventlog.settings import TENANT_PATTERN, AuthSettings, LimitSettings
from eventlog.tokens import TokenVerifier
from gateway.errors import Forbidden, NotYours, Unauthenticated
from schemas.streamid import belongs_to, parse_stream_id

log = logging.getLogger(__name__)

CREATE: Final = "streams:create"
READ: Final = "streams:read"
PUBLISH: Final = "streams:publish"
CANCEL: Final = "streams:cancel"
WEBHOOKS: Final = "webhooks:manage"
ADMIN: Final = "admin"
SCOPES: Final = (CREATE, READ, PUBLISH, CANCEL, WEBHOOKS, ADMIN)

COOKIE: Final = "tidemark_token"
QUERY: Final = "access_token"
_SUB_MAX: Final = 256
_CACHE_SIZE: Final = 10_000

_TENANT_RE: Final = re.compile(TENANT_PATTERN)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: built from a verified token (or, with ``TIDEMARK_AUTH=none``, the
    anonymous caller who may do anything in the default tenant)."""

    sub: str
    tenant: str
    scopes: frozenset[str]
    tier: str
    #: The token's ``limits`` claim, overriding the tier's (None: the tier's value).
    max_concurrent_streams: int | None = None
    requests_per_minute: int | None = None
    #: A read token: the one stream it may read.
    stream: str | None = None
    #: No token at all (``TIDEMARK_AUTH=none``).
    anonymous: bool = False

    def has(self, scope: str) -> bool:
        """``admin`` holds every scope, within its own tenant."""
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def owner(self) -> str:
        """The owner recorded on streams this identity creates ("" when anonymous: the
        stream then belongs to the whole tenant)."""
        return "" if self.anonymous else self.sub


def mint_token(secret: str, *, sub: str, tenant: str, scope: str, ttl_s: float,
               tier: str | None = None, limits: dict[str, int] | None = None,
               stream: str | None = None, audience: str | None = None) -> str:
    """An HS256 token (tests, ``tidemark token``, the dev page, read tokens)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "tenant": tenant, "scope": scope, "iat": now,
                              "exp": now + int(ttl_s)}
    for name, value in (("tier", tier), ("limits", limits), ("stream", stream),
                        ("aud", audience)):
        if value is not None:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm="HS256")


class Authenticator:
    """Verifies tokens with the keys it was given; remembers verified tokens (bounded)."""

    def __init__(self, auth: AuthSettings, limits: LimitSettings) -> None:
        self._settings = auth
        self._tiers = limits.tiers
        self._default_tier = limits.default_tier
        self.enabled = auth.mode == "jwt"
        self._verifier = TokenVerifier(auth)
        self._secret = self._verifier.secret
        self._keys = self._verifier.keys
        if self.enabled and self._secret is None and not self._keys:
            raise ConfigError("TIDEMARK_AUTH=jwt needs TIDEMARK_JWT_SECRET or "
                              "TIDEMARK_JWT_PUBLIC_KEY_FILE (or TIDEMARK_AUTH=none, on purpose)")
        self._cache: OrderedDict[str, tuple[Identity, float, float]] = OrderedDict()
        self.anonymous = Identity(sub="anonymous", tenant=auth.default_tenant,
                                  scopes=frozenset(SCOPES), tier=limits.default_tier,
                                  anonymous=True)

    @property
    def can_issue(self) -> bool:
        """Whether this gateway can sign read tokens (it has the HS256 secret)."""
        return self.enabled and self._secret is not None

    def issue_read_token(self, identity: Identity, stream_id: str) -> tuple[str, int]:
        """A token that reads ``stream_id`` only, and when it expires (s since the epoch)."""
        assert self._secret is not None
        ttl = self._settings.read_token_ttl_s
        token = mint_token(self._secret, sub=identity.sub, tenant=identity.tenant,
                           scope=READ, ttl_s=ttl, stream=stream_id,
                           audience=self._settings.jwt_audience or None)
        return token, int(time.time()) + ttl

    def identify(self, request: web.Request) -> Identity:
        """The caller of ``request``; :class:`Unauthenticated` without a valid token."""
        if not self.enabled:
            return self.anonymous
        return self.verify(_token_of(request))

    def verify(self, token: str) -> Identity:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            identity, not_before, expires = cached
            if not_before <= now < expires:
                self._cache.move_to_end(token)
                return identity
            del self._cache[token]
        identity, claims = self._decode(token)
        leeway = self._settings.jwt_leeway_s
        self._cache[token] = (identity, float(claims.get("nbf", 0)) - leeway,
                              float(claims["exp"]) + leeway)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return identity

    def _decode(self, token: str) -> tuple[Identity, dict[str, Any]]:
        try:
            claims, alg = self._verifier.claims(token)
        except InvalidToken as exc:
            raise Unauthenticated(str(exc)) from exc
        identity = self._identity(claims)
        if alg == "HS256" and self._keys and identity.stream is None:
            raise Unauthenticated("HS256 tokens are accepted only as read tokens here")
        return identity, claims

    def _identity(self, claims: dict[str, Any]) -> Identity:
        sub, tenant, scope = claims.get("sub"), claims.get("tenant"), claims.get("scope", "")
        if not isinstance(sub, str) or not 0 < len(sub) <= _SUB_MAX:
            raise Unauthenticated("the token's sub must be a non-empty string")
        if not isinstance(tenant, str) or _TENANT_RE.search(tenant) is None:
            raise Unauthenticated(f"the token's tenant must match {TENANT_PATTERN}")
        if not isinstance(scope, str):
            raise Unauthenticated("the token's scope must be a space-separated string")
        tier = claims.get("tier", self._default_tier)
        if not isinstance(tier, str) or tier not in self._tiers:
            raise Unauthenticated(f"the token's tier {tier!r} is not one of "
                                  f"{', '.join(sorted(self._tiers))}")
        limits = claims.get("limits") or {}
        if not isinstance(limits, dict):
            raise Unauthenticated("the token's limits must be an object")
        overrides = {name: _limit(limits, name)
                     for name in ("maxConcurrentStreams", "requestsPerMinute")}
        stream = claims.get("stream")
        if stream is not None and not isinstance(stream, str):
            raise Unauthenticated("the token's stream must be a stream id")
        scopes = frozenset(scope.split()) & frozenset(SCOPES)
        if stream is not None:
            scopes &= {READ}  # a read token reads; whatever else it claims
        return Identity(sub=sub, tenant=tenant, scopes=scopes, tier=tier,
                        max_concurrent_streams=overrides["maxConcurrentStreams"],
                        requests_per_minute=overrides["requestsPerMinute"], stream=stream)


def _limit(limits: dict[str, Any], name: str) -> int | None:
    value = limits.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unauthenticated(f"the token's limits.{name} must be an integer >= 0")
    return value


def _token_of(request: web.Request) -> str:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'",
                                  error="invalid_request")
        return token.strip()
    fallback = request.query.get(QUERY) or request.cookies.get(COOKIE)
    if not fallback:
        raise Unauthenticated("a bearer token is required (Authorization: Bearer, "
                              f"?{QUERY}= or the {COOKIE} cookie)", error="invalid_request")
    return fallback


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)


IDENTITY: Final = "tidemark.identity"


def authorize(request: web.Request, scope: str) -> Identity:
    """The caller, if they hold ``scope``: 401 without a valid token, 403 without it.
    The identity is kept on the request (``request[IDENTITY]``) for the audit log."""
    identity = request.app[AUTHENTICATOR].identify(request)
    request[IDENTITY] = identity
    if not identity.has(scope):
        raise Forbidden(f"this token lacks the {scope!r} scope", scope=scope)
    return identity


def not_yours(stream_id: str, why: str) -> NotYours:
    """Answered exactly as a stream that does not exist (the audit log has ``why``)."""
    return NotYours(f"no stream {stream_id!r}", why=why)


def check_stream(identity: Identity, stream_id: str, *, default_tenant: str) -> bool:
    """Before anything is read: refuse a stream that is not the caller's (404, as if it
    did not exist). True when the id alone decided; False when the stream's record must
    be checked with :func:`check_record` (ids that carry no tags)."""
    if identity.stream is not None and identity.stream != stream_id:
        raise Forbidden("this read token is for another stream")
    owner = None if identity.has(ADMIN) else identity.sub
    verdict = belongs_to(stream_id, identity.tenant, owner)
    if verdict is False:
        raise not_yours(stream_id, "the id is of another tenant's or user's stream")
    if verdict is True:
        return True
    ref = parse_stream_id(stream_id)
    if ref is not None:  # version 2: made before tenants, the default tenant's
        if identity.tenant != default_tenant:
            raise not_yours(stream_id, "a stream of the default tenant")
        return True
    return False


def check_record(identity: Identity, info: StreamInfo, *, default_tenant: str) -> None:
    """For ids without tags: the stream index's record says whose stream it is."""
    tenant = info.tenant or default_tenant
    if tenant != identity.tenant:
        raise not_yours(info.stream_id, "a stream of another tenant")
    if info.owner and info.owner != identity.sub and not identity.has(ADMIN):
        raise not_yours(info.stream_id, "a stream of another user")
