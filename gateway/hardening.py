"""Request hardening: size and time limits on what a client sends, CORS, security headers.

- Header lines and the request line: at most ``TIDEMARK_MAX_HEADER_BYTES`` (aiohttp's
  parser: ``max_line_size``/``max_field_size``, see :func:`server_options`; a longer line
  answers 400 and the connection is closed), at most :data:`MAX_HEADERS` header fields.
- The request target (path and query): at most ``TIDEMARK_MAX_URL_BYTES``, else 414.
- The body: at most ``TIDEMARK_MAX_BODY_BYTES`` (413, the app's ``client_max_size``), and
  all of it within ``TIDEMARK_BODY_TIMEOUT`` of the handler's start, else 408 and the
  connection is closed (after at most :data:`LINGER_S` more of reading and dropping
  what the client still sends, so that it sees the answer). The body is read here,
  before the route's handler runs (``Request.read`` keeps it for the handler).
- Slow headers: aiohttp closes a connection whose next request has not fully arrived
  ``keepalive_timeout`` after the connection opened or the last response ended; the
  gateway sets that to ``TIDEMARK_BODY_TIMEOUT`` too, so a client that dribbles its
  headers (slowloris) is cut after that long, and idle keep-alive connections as well.
- CORS by ``TIDEMARK_CORS_ORIGINS``: preflights from a listed origin are answered (204),
  responses to a listed origin carry ``Access-Control-Allow-Origin``; an unlisted
  origin gets no CORS header (its preflight answers 403).
- Every response carries ``X-Content-Type-Options: nosniff``; HTML pages also a
  ``Content-Security-Policy`` (their inline scripts and styles allowed by hash),
  ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import hdrs, web

from eventlog.settings import GatewaySettings
from gateway.problems import Handler, Problem

#: Header fields accepted in one request (aiohttp's ``max_headers``).
MAX_HEADERS: Final = 128
#: How long the rest of an unread body is read and dropped after an early answer (408,
#: 413) before the connection closes: long enough for the client to see the answer.
LINGER_S: Final = 1.0
#: Room in the request line for the method and the HTTP version beside the target.
_REQUEST_LINE_EXTRA: Final = 32

#: Request headers a browser page may send cross-origin.
CORS_ALLOW_HEADERS: Final = ("Authorization", "Content-Type", "Last-Event-ID",
                             "traceparent", "tracestate")
#: Response headers a cross-origin page may read.
CORS_EXPOSE_HEADERS: Final = ("Location", "Retry-After", "WWW-Authenticate",
                              "Tidemark-Gateway")
CORS_MAX_AGE_S: Final = 600

_INLINE: Final = re.compile(rb"<(script|style)(\s[^>]*)?>(.*?)</\1\s*>", re.S | re.I)
_SRC: Final = re.compile(rb"\ssrc\s*=", re.I)


def server_options(gw: GatewaySettings) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` (aiohttp's request handler): line and field
    sizes, the header count, the deadline for a request's headers, and the linger after
    an early answer."""
    return {
        "max_line_size": max(gw.max_header_bytes, gw.max_url_bytes + _REQUEST_LINE_EXTRA),
        "max_field_size": gw.max_header_bytes,
        "max_headers": MAX_HEADERS,
        "keepalive_timeout": gw.body_timeout_s,
        "lingering_time": min(LINGER_S, gw.body_timeout_s),
    }


@dataclass(frozen=True, slots=True)
class Cors:
    """The origins allowed to call the API from a browser."""

    origins: frozenset[str]
    any_origin: bool

    @classmethod
    def parse(cls, setting: str) -> Cors:
        items = {o.strip().rstrip("/") for o in setting.split(",") if o.strip()}
        return cls(origins=frozenset(items - {"*"}), any_origin="*" in items)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    def headers(self, origin: str) -> dict[str, str]:
        """The headers of a response to ``origin`` (which :meth:`allows`). Credentials
        (the ``tidemark_token`` cookie) only for listed origins, never for ``*``."""
        if origin in self.origins:
            return {"Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Credentials": "true",
                    "Access-Control-Expose-Headers": ", ".join(CORS_EXPOSE_HEADERS)}
        return {"Access-Control-Allow-Origin": "*",
                "Access-Control-Expose-Headers": ", ".join(CORS_EXPOSE_HEADERS)}


def _allowed_methods(request: web.Request) -> set[str] | None:
    """The methods of the resource ``request`` names (None: no such resource)."""
    exc = request.match_info.http_exception
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return set(exc.allowed_methods)
    if exc is not None:
        return None
    return {request.method}


def _preflight(request: web.Request, cors: Cors, origin: str) -> web.Response:
    if not cors.allows(origin):
        raise Problem(403, f"origin {origin!r} may not call this API (TIDEMARK_CORS_ORIGINS)")
    methods = _allowed_methods(request)
    if methods is None:
        raise Problem(404, "no such resource")
    methods.discard(hdrs.METH_HEAD)
    methods.discard(hdrs.METH_OPTIONS)
    return web.Response(status=204, headers={
        **cors.headers(origin),
        "Access-Control-Allow-Methods": ", ".join(sorted(methods)),
        "Access-Control-Allow-Headers": ", ".join(CORS_ALLOW_HEADERS),
        "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
    })


def middleware(gw: GatewaySettings, cors: Cors) -> Any:
    """URL length, CORS preflights, and the body read under its deadline."""
    max_url = gw.max_url_bytes
    body_timeout = gw.body_timeout_s

    @web.middleware
    async def hardening(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(request.raw_path) > max_url:
            raise Problem(414, f"the request target is longer than {max_url} bytes")
        origin = request.headers.get(hdrs.ORIGIN)
        if (request.method == hdrs.METH_OPTIONS and origin is not None
                and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers):
            return _preflight(request, cors, origin)
        if request.can_read_body and request.match_info.http_exception is None:
            try:
                async with asyncio.timeout(body_timeout):
                    await request.read()
            except TimeoutError:
                problem = Problem(408, f"the request body did not arrive within "
                                  f"{body_timeout:g}s")
                problem.force_close()
                raise problem from None
        return await handler(request)

    return hardening


@functools.lru_cache(maxsize=16)
def page_policy(html: bytes) -> str:
    """The Content-Security-Policy of a page: nothing but its own origin, and its inline
    scripts and styles by their SHA-256."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for tag, attributes, content in _INLINE.findall(html):
        if _SRC.search(b" " + attributes):
            continue  # a script file: allowed by 'self', its element's text is ignored
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        hashes[tag.lower()].append(f"'sha256-{digest}'")
    return "; ".join([
        "default-src 'none'",
        " ".join(["script-src 'self'", *hashes[b"script"]]),
        " ".join(["style-src 'self'", *hashes[b"style"]]),
        "connect-src 'self'", "img-src 'self' data:", "base-uri 'none'",
        "form-action 'self'", "frame-ancestors 'none'",
    ])


def _response_headers(cors: Cors) -> Any:
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        if response.content_type == "text/html":
            body = response.body if isinstance(response, web.Response) else None
            headers.setdefault("Content-Security-Policy",
                               page_policy(body if isinstance(body, bytes) else b""))
            headers.setdefault("Referrer-Policy", "no-referrer")
            headers.setdefault("X-Frame-Options", "DENY")
        if cors.origins:
            headers.add(hdrs.VARY, "Origin")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and cors.allows(origin):
            for name, value in cors.headers(origin).items():
                headers.setdefault(name, value)

    return on_prepare


def install(app: web.Application, gw: GatewaySettings) -> None:
    """Add the hardening middleware (inside the problem middleware) and the response
    headers to ``app``."""
    cors = Cors.parse(gw.cors_origins)
    app.middlewares.append(middleware(gw, cors))
    app.on_response_prepare.append(_response_headers(cors))
