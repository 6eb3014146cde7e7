"""The Durable Streams routes in the OpenAPI document (package ``durable``, mounted under
``TIDEMARK_DS_BASE_PATH``, default ``/ds``; docs/durable-streams.md).

The protocol's own document is PROTOCOL.md of github.com/durable-streams/durable-streams;
this describes how Tidemark serves it: headers in, headers out, and the statuses.

Content types: a stream's bytes go out in the stream's own content type (any media type,
``*/*``; SSE reads ``text/event-stream``); the answers of a create or an append have no body
and name the stream's type in ``Content-Type``; errors are ``application/problem+json``
like the rest of the API, except on ``HEAD``, whose answers never have a body.
"""

from __future__ import annotations

from typing import Any, Final

#: The default base path the document describes.
BASE: Final = "/ds"

#: The gateway serves paths of up to 1024 characters whose request target fits
#: ``TIDEMARK_MAX_URL_BYTES`` (4096 bytes: 414 above, and aiohttp's parser answers a
#: request line over ``TIDEMARK_MAX_HEADER_BYTES`` with a plain 400); the document promises
#: 256, which fits even when every character takes 12 bytes percent-encoded (as stream ids).
_PATH: Final = {"name": "path", "in": "path", "required": True,
                "description": "the stream's path (its tenant is the token's); up to 1024 "
                               "characters are served while the request target fits "
                               "TIDEMARK_MAX_URL_BYTES (414 above)",
                "schema": {"type": "string", "minLength": 1, "maxLength": 256}}


#: From a created stream to the operations on it (the fuzzer's stateful phase follows them).
_STREAM_LINKS: Final = {
    name: {"operationId": op, "parameters": {"path": "$request.path.path"}}
    for name, op in (("Append", "dsAppend"), ("Read", "dsRead"), ("Head", "dsHead"),
                     ("Delete", "dsDelete"))}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", **schema}}


def _out(description: str, *headers: str) -> dict[str, Any]:
    return {"description": description,
            "headers": {h: {"schema": {"type": "string"}} for h in headers}}


def _bodiless(errors: dict[str, Any], responses: dict[str, Any]) -> dict[str, Any]:
    """``errors`` (status -> ``$ref`` of a response component) as answers to ``HEAD``:
    the component's description and headers, no content."""
    out = {}
    for status, ref in errors.items():
        answer = responses[ref["$ref"].rsplit("/", 1)[1]]
        out[status] = {k: v for k, v in answer.items() if k != "content"}
    return out


def ds_paths(op: Any, refs: Any, guarded: tuple[str, ...],
             responses: dict[str, Any]) -> dict[str, Any]:
    """The path item of ``<base>/v1/stream/{path}`` (``op``, ``refs``: the document's
    builders of operations and of error answers; ``responses``: its response
    components by name)."""
    typed = ("Content-Type", "Stream-Next-Offset")
    offsets = ("Stream-Next-Offset", "Stream-Up-To-Date", "Stream-Closed", "Stream-Cursor",
               "ETag", "Cache-Control")
    read_params = [
        _PATH,
        _query("offset", "where to read from: -1 (the start), now (the tail) or a "
                         "Stream-Next-Offset", maxLength=64),
        _query("live", "long-poll or sse (absent: a catch-up read)",
               enum=["long-poll", "sse"]),
        _query("cursor", "the last Stream-Cursor (CDN collapsing)", maxLength=64),
        _header("If-None-Match", "an ETag of an earlier read: 304 when unchanged"),
    ]
    producer = [_header("Producer-Id", "idempotent producer (with the next two)"),
                _header("Producer-Epoch", "the producer's epoch"),
                _header("Producer-Seq", "the producer's seq in its epoch")]
    return {f"{BASE}/v1/stream/{{path}}": {
        "put": op(
            "dsCreate", "Durable Streams: create a stream (or a fork)", scope="streams:create",
            parameters=[_PATH, _header("Content-Type", "the stream's content type"),
                        _header("Stream-TTL", "sliding time to live, seconds"),
                        _header("Stream-Expires-At", "absolute expiry, RFC 3339"),
                        _header("Stream-Closed", "true: create it closed"),
                        _header("Stream-Forked-From", "fork this stream (its path)"),
                        _header("Stream-Fork-Offset", "fork at this offset (default: tail)"),
                        _header("Stream-Fork-Sub-Offset", "bytes or JSON messages past it")],
            requestBody={"required": False, "content": {"*/*": {"schema": {}}}},
            responses={"201": {**_out("created (no body; Content-Type: the stream's)",
                                      "Location", *typed, "Stream-Closed"),
                               "links": _STREAM_LINKS},
                       "200": _out("it exists with this configuration (no body)", *typed,
                                   "Stream-Closed"),
                       **refs("BadRequest", *guarded, "NotFound", "Conflict",
                              "ContentTooLarge", "Unavailable")}),
        "post": op(
            "dsAppend", "Durable Streams: append (and/or close)", scope="streams:publish",
            parameters=[_PATH, _header("Content-Type", "the stream's content type"),
                        _header("Stream-Seq", "writer sequence, must grow (bytewise)"),
                        _header("Stream-Closed", "true: close the stream"), *producer],
            requestBody={"required": False, "content": {"*/*": {"schema": {}}}},
            responses={"200": _out("appended by an idempotent producer", "Stream-Next-Offset",
                                   "Producer-Epoch", "Producer-Seq"),
                       "204": _out("appended, closed, or a producer's duplicate",
                                   "Stream-Next-Offset", "Stream-Closed"),
                       **refs("BadRequest", *guarded, "NotFound", "Conflict", "Gone",
                              "ContentTooLarge", "Unavailable")}),
        "get": op(
            "dsRead", "Durable Streams: read (catch-up, long-poll or SSE)",
            scope="streams:read", parameters=read_params,
            responses={"200": {**_out("the stream's bytes from the offset (SSE: "
                                      "text/event-stream)", *offsets),
                               "content": {"*/*": {"schema": {}}}},
                       "204": _out("long-poll: nothing new before the timeout", *offsets),
                       "304": _out("unchanged since the If-None-Match ETag", *offsets),
                       **refs("BadRequest", *guarded, "NotFound", "Gone", "Unavailable")}),
        "head": op(
            "dsHead", "Durable Streams: the stream's metadata", scope="streams:read",
            parameters=[_PATH],
            responses={"200": _out("metadata (no body)", *typed, "Stream-TTL",
                                   "Stream-Expires-At", "Stream-Closed", "Cache-Control"),
                       **_bodiless(refs("BadRequest", *guarded, "NotFound", "Gone",
                                        "Unavailable"), responses)}),
        "delete": op(
            "dsDelete", "Durable Streams: delete a stream", scope="streams:create",
            parameters=[_PATH],
            responses={"204": {"description": "deleted (soft-deleted while forks read it)"},
                       **refs("BadRequest", *guarded, "NotFound", "Gone", "Unavailable")}),
    }}
