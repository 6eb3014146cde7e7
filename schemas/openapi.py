"""The HTTP contract: the gateway's OpenAPI 3.1 document, served at ``/v1/openapi.json``.

The document is built once, at first use, from the description in this module and
from the JSON Schema files in ``schemas/json`` that the gateway validates request
bodies with: those files are embedded as components (see :func:`embed`), so the
document and the validators cannot disagree. ``tests/unit/test_openapi.py`` checks the
document against the gateway's routes and against the OpenAPI 3.1 specification.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final

import orjson

from schemas.openapi_ds import ds_paths
from schemas.validation import load_schema

VERSION: Final = "3.1.0"

#: Request bodies: component name -> the JSON Schema file (in ``schemas/json``) it is.
REQUEST_SCHEMAS: Final = {
    "CreateStreamRequest": "create_stream",
    "PublishRequest": "publish",
}

#: Every scope a token may carry (``gateway.auth.SCOPES``; ``admin`` holds them all).
SCOPES: Final = ("streams:create", "streams:read", "streams:publish", "streams:cancel",
                 "admin")

_PROTECTED: Final[list[dict[str, list[str]]]] = [
    {"bearerAuth": []}, {"accessToken": []}, {"tokenCookie": []}]
_PUBLIC: Final[list[dict[str, list[str]]]] = []


def component_name(file_stem: str) -> str:
    """``event_input`` -> ``EventInput``: the component a schema file becomes (request
    bodies keep the names of :data:`REQUEST_SCHEMAS`)."""
    for name, stem in REQUEST_SCHEMAS.items():
        if stem == file_stem:
            return name
    return "".join(part.capitalize() for part in file_stem.split("_"))


def _rewrite(node: Any, found: set[str]) -> Any:
    """A copy of ``node`` whose references to sibling files (``"event_input.json"``,
    ``"event_input.json#/properties/type"``) point at their components instead."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                target, _, fragment = value.partition("#")
                stem = target.rsplit("/", 1)[-1].removesuffix(".json")
                found.add(stem)
                out[key] = f"#/components/schemas/{component_name(stem)}{fragment}"
            else:
                out[key] = _rewrite(value, found)
        return out
    if isinstance(node, list):
        return [_rewrite(item, found) for item in node]
    return node


def embed(file_stem: str) -> tuple[dict[str, Any], set[str]]:
    """The schema file ``file_stem`` as a component: the same JSON Schema without its
    ``$schema``/``$id`` (the document's dialect is 2020-12 already; an ``$id`` would
    move the base of its references), its cross-file ``$ref`` s pointed at components.
    Returns it and the stems of the files it refers to."""
    schema = copy.deepcopy(load_schema(file_stem))
    schema.pop("$schema", None)
    schema.pop("$id", None)
    found: set[str] = set()
    return _rewrite(schema, found), found


def _embedded_components() -> dict[str, Any]:
    todo = list(REQUEST_SCHEMAS.values())
    out: dict[str, Any] = {}
    while todo:
        stem = todo.pop()
        name = component_name(stem)
        if name in out:
            continue
        out[name], refs = embed(stem)
        todo.extend(refs)
    return out


# --- shared pieces -------------------------------------------------------------------

def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if headers:
        out["headers"] = headers
    return out


_RETRY_AFTER: Final = {"Retry-After": {
    "description": "seconds to wait before trying again", "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"}}}

_RESPONSES: Final[dict[str, Any]] = {
    "BadRequest": _problem("malformed request: a body that is not JSON, a malformed "
                           "Last-Event-ID, a bad query parameter"),
    "Unauthorized": _problem("no token, or one that does not verify (expired, wrong key, "
                             "wrong audience, alg none)", {"WWW-Authenticate": {
                                 "description": 'Bearer realm="tidemark", error="..."',
                                 "required": True, "schema": {"type": "string"}}}),
    "Forbidden": _problem("a valid token without the scope this route needs; the body's "
                          "`scope` names it"),
    "NotFound": _problem("no such stream, or one this caller may not see (another "
                         "tenant's stream answers exactly like one that does not exist)"),
    "Conflict": _problem("the request conflicts with the stream's state (a seq conflict, "
                         "a stream that has ended, a stream another generator writes)"),
    "Gone": _problem("the stream's events were deleted by retention"),
    "RequestTimeout": _problem("the request body did not arrive within "
                               "TIDEMARK_BODY_TIMEOUT; the connection is closed"),
    "ContentTooLarge": _problem("the body is larger than TIDEMARK_MAX_BODY_BYTES"),
    "UriTooLong": _problem("the request target is longer than TIDEMARK_MAX_URL_BYTES"),
    "UnsupportedMediaType": _problem("the body is not sent as application/json"),
    "Unprocessable": _problem("the body does not match its JSON Schema; the body's "
                              "`field` is a JSON Pointer to the failing value"),
    "TooManyRequests": _problem("a limit is reached (the body's `limit` names it)",
                                _RETRY_AFTER),
    "Unavailable": _problem("Kafka (or the limits' store) is not answering, or the gateway "
                            "is still starting", _RETRY_AFTER),
}


def _refs(*names: str) -> dict[str, Any]:
    codes = {"BadRequest": "400", "Unauthorized": "401", "Forbidden": "403",
             "NotFound": "404", "RequestTimeout": "408", "Conflict": "409", "Gone": "410",
             "ContentTooLarge": "413", "UriTooLong": "414", "UnsupportedMediaType": "415",
             "Unprocessable": "422", "TooManyRequests": "429", "Unavailable": "503"}
    return {codes[n]: {"$ref": f"#/components/responses/{n}"} for n in names}


#: What every route that needs a token can answer besides its own statuses.
_GUARDED: Final = ("Unauthorized", "Forbidden", "UriTooLong", "TooManyRequests")


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": schema}}, **extra}


def _schema(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_STREAM_ID: Final = {
    "name": "id", "in": "path", "required": True,
    "description": "the stream id, an opaque string from POST /v1/streams",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}

_STREAM_LINKS: Final = {
    "GetStream": {"operationId": "getStream",
                  "parameters": {"id": "$response.body#/stream_id"}},
    "StreamEvents": {"operationId": "streamEvents",
                     "parameters": {"id": "$response.body#/stream_id"}},
    "Publish": {"operationId": "publish", "parameters": {"id": "$response.body#/stream_id"}},
    "CancelStream": {"operationId": "cancelStream",
                     "parameters": {"id": "$response.body#/stream_id"}},
}


def _op(op_id: str, summary: str, *, scope: str | None, responses: dict[str, Any],
        **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op_id, "summary": summary}
    if scope is None:
        out["security"] = _PUBLIC
    else:
        out["security"] = _PROTECTED
        out["x-required-scopes"] = [scope]
        out["description"] = (f"Needs a token with the `{scope}` scope (or `admin`). "
                              + extra.pop("description", ""))
    out.update(extra)
    out["responses"] = responses
    return out


def _body(component: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _schema(component)}}}


# --- the document ------------------------------------------------------------------------

def _components() -> dict[str, Any]:
    string = {"type": "string"}
    nullable_string = {"type": ["string", "null"]}
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object", "description": "RFC 9457 problem details",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": string, "title": string,
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "detail": string,
                "field": {"type": "string", "description": "JSON Pointer of the bad value"},
                "scope": {"type": "string", "description": "the scope the request needs"},
                "limit": {"type": "string", "description": "which limit was reached"},
                "expected_seq": {"type": "integer"},
            },
        },
        "CreateStreamResponse": {
            "type": "object", "required": ["stream_id", "events_url", "status_url"],
            "properties": {
                "stream_id": string,
                "events_url": {"type": "string", "description": "the stream's SSE URL; "
                               "carries the read token when the gateway issues one"},
                "status_url": string,
                "read_token": {"type": "string", "description": "a short-lived token that "
                               "reads this one stream (with TIDEMARK_AUTH=jwt)"},
                "read_token_expires_at": {"type": "integer",
                                          "description": "seconds since the epoch"},
            },
        },
        "StreamSummary": {
            "type": "object",
            "required": ["stream_id", "created_at", "status_url", "events_url"],
            "properties": {"stream_id": string, "created_at": {"type": "integer"},
                           "status_url": string, "events_url": string},
        },
        "StreamList": {
            "type": "object", "required": ["streams", "next_cursor"],
            "properties": {
                "streams": {"type": "array", "items": _schema("StreamSummary"),
                            "description": "the caller's streams of the session, newest "
                            "first"},
                "next_cursor": {**nullable_string,
                                "description": "pass as `cursor` for the next page; null on "
                                "the last"},
            },
        },
        "StreamStatus": {
            "type": "object",
            "required": ["stream_id", "status", "generator", "created_at", "updated_at",
                         "last_seq", "first_event_id", "terminal_event_id", "events_url"],
            "properties": {
                "stream_id": string,
                "status": {"type": "string", "description": "pending, running, completed, "
                           "failed or cancelled"},
                "generator": string, "namespace": string,
                "created_at": {"type": "integer"}, "updated_at": {"type": "integer"},
                "last_seq": {"type": "integer", "minimum": 0},
                "first_event_id": string, "terminal_event_id": nullable_string,
                "events_url": string,
            },
        },
        "PublishResult": {
            "type": "object",
            "required": ["accepted", "written", "duplicates", "last_seq", "ended"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 1},
                "written": {"type": "array", "items": {
                    "type": "object", "required": ["seq", "id"],
                    "properties": {"seq": {"type": "integer"}, "id": string}}},
                "duplicates": {"type": "integer", "minimum": 0},
                "last_seq": {"type": "integer", "minimum": 0},
                "ended": {"type": "boolean"},
            },
        },
        "CancelResult": {
            "type": "object", "required": ["stream_id", "status"],
            "properties": {"stream_id": string, "status": string},
        },
        "ServerSentEvent": {
            "type": "object", "description": "one event of the stream (OpenAPI 3.1: the "
            "schema of a text/event-stream response describes each event)",
            "required": ["data", "event"],
            "properties": {
                "id": {"type": "string", "description": "its position: resume after it "
                       "with Last-Event-ID"},
                "event": {"type": "string", "description": "the event type (status, "
                          "progress, partial_result, metadata, result, error, cancelled, "
                          "reset, or a custom type)"},
                "data": {"type": "string", "contentMediaType": "application/json",
                         "description": "the event envelope (schemas/json/envelope.json); "
                         "for `reset`, the reset notice (schemas/json/reset.json)"},
                "retry": {"type": "integer", "minimum": 0},
            },
        },
        "Health": {"type": "object", "required": ["status"],
                   "properties": {"status": {"const": "ok"}}},
        "Ready": {"type": "object", "required": ["status", "partitions", "subscribers"],
                  "properties": {"status": {"const": "ready"},
                                 "partitions": {"type": "integer", "minimum": 0},
                                 "subscribers": {"type": "integer", "minimum": 0}}},
    }
    schemas.update(_embedded_components())
    return {
        "schemas": schemas,
        "responses": _RESPONSES,
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "`Authorization: Bearer <JWT>`; claims `sub`, "
                           "`tenant`, `scope` (space-separated: "
                           + ", ".join(SCOPES) + "), `exp`, optional `tier`, `limits`"},
            "accessToken": {"type": "apiKey", "in": "query", "name": "access_token",
                            "description": "the same JWT as a query parameter, for a browser "
                            "EventSource (which cannot set headers)"},
            "tokenCookie": {"type": "apiKey", "in": "cookie", "name": "tidemark_token",
                            "description": "the same JWT as a cookie"},
        },
    }


def _paths() -> dict[str, Any]:
    sse_params = [
        _STREAM_ID,
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "description": "resume after this event (what EventSource sends on reconnect)",
         "schema": {"type": "string", "maxLength": 256}},
        {"name": "last_event_id", "in": "query", "required": False,
         "description": "resume after this event (when the header is absent)",
         "schema": {"type": "string", "maxLength": 256}},
        {"name": "update_frequency", "in": "query", "required": False,
         "description": "override the stream's preference for this connection: `batched` "
                        "coalesces consecutive partial results",
         "schema": {"enum": ["realtime", "batched"]}},
        {"name": "include_metadata", "in": "query", "required": False,
         "description": "override the stream's preference: `false` drops metadata events",
         "schema": {"enum": ["true", "false"]}},
    ]
    return {
        "/v1/streams": {
            "post": _op(
                "createStream", "Start a stream", scope="streams:create",
                requestBody=_body("CreateStreamRequest"),
                responses={
                    "201": _json(_schema("CreateStreamResponse"), "the stream was created",
                                 headers={"Location": {"required": True,
                                                       "schema": {"type": "string"}}},
                                 links=_STREAM_LINKS),
                    **_refs("BadRequest", *_GUARDED, "RequestTimeout", "ContentTooLarge",
                            "UnsupportedMediaType", "Unprocessable", "Unavailable"),
                }),
            "get": _op(
                "listStreams", "The caller's streams of one session, newest first",
                scope="streams:read",
                parameters=[
                    {"name": "session", "in": "query", "required": True,
                     "description": "the `context.sessionId` the streams were created with",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
                    {"name": "limit", "in": "query", "required": False,
                     "description": "page size (default 50)",
                     "schema": {"type": "integer", "minimum": 1, "maximum": 200}},
                    {"name": "cursor", "in": "query", "required": False,
                     "description": "the `next_cursor` of the previous page",
                     "schema": {"type": "string"}},
                ],
                responses={"200": _json(_schema("StreamList"), "one page of streams"),
                           **_refs("BadRequest", *_GUARDED, "Unavailable")}),
        },
        "/v1/streams/{id}": {
            "get": _op(
                "getStream", "A stream's status (read-your-writes)", scope="streams:read",
                parameters=[_STREAM_ID],
                responses={"200": _json(_schema("StreamStatus"), "the stream"),
                           **_refs(*_GUARDED, "NotFound", "Gone", "Unavailable")}),
        },
        "/v1/streams/{id}/events": {
            "get": _op(
                "streamEvents", "Follow a stream as Server-Sent Events", scope="streams:read",
                description="A read token from `POST /v1/streams` reads its one stream. The "
                            "response ends after TIDEMARK_MAX_RESPONSE_SECONDS or "
                            "TIDEMARK_IDLE_TIMEOUT without events; resume with Last-Event-ID.",
                parameters=sse_params,
                responses={
                    "200": {"description": "the stream's events from the position on",
                            "content": {"text/event-stream": {
                                "schema": _schema("ServerSentEvent")}}},
                    "204": {"description": "the stream has ended and Last-Event-ID is its "
                                           "last event: nothing more will come"},
                    **_refs("BadRequest", *_GUARDED, "NotFound", "Gone", "Unavailable"),
                }),
            "post": _op(
                "publish", "Append events to an external stream", scope="streams:publish",
                parameters=[_STREAM_ID], requestBody=_body("PublishRequest"),
                responses={"200": _json(_schema("PublishResult"), "the events were written"),
                           **_refs("BadRequest", *_GUARDED, "NotFound", "RequestTimeout",
                                   "Conflict", "Gone", "ContentTooLarge",
                                   "UnsupportedMediaType", "Unprocessable", "Unavailable")}),
        },
        "/v1/streams/{id}/cancel": {
            "post": _op(
                "cancelStream", "Cancel a stream", scope="streams:cancel",
                parameters=[_STREAM_ID],
                responses={
                    "202": _json(_schema("CancelResult"), "the cancel is on its way"),
                    "200": _json(_schema("CancelResult"), "the stream had already finished"),
                    **_refs(*_GUARDED, "NotFound", "Conflict", "Gone", "Unavailable"),
                }),
        },
        "/v1/openapi.json": {
            "get": _op("openapi", "This document", scope=None, responses={
                "200": _json({"type": "object"}, "the OpenAPI 3.1 document"),
                **_refs("UriTooLong")}),
        },
        "/healthz": {
            "get": _op("healthz", "Liveness: the process answers", scope=None, responses={
                "200": _json(_schema("Health"), "alive"), **_refs("UriTooLong")}),
        },
        "/readyz": {
            "get": _op("readyz", "Readiness: connected to Kafka and serving", scope=None,
                       responses={"200": _json(_schema("Ready"), "ready"),
                                  **_refs("UriTooLong", "Unavailable")}),
        },
        "/metrics": {
            "get": _op("metrics", "Prometheus metrics", scope=None, responses={
                "200": {"description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_refs("UriTooLong")}),
        },
        "/": {
            "get": _op("demoPage", "The demo page", scope=None, responses={
                "200": {"description": "an HTML page",
                        "content": {"text/html": {"schema": {"type": "string"}}}},
                **_refs("UriTooLong")}),
        },
        **ds_paths(_op, _refs, _GUARDED),
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; do not mutate the result)."""
    return {
        "openapi": VERSION,
        "info": {
            "title": "Tidemark",
            "version": "1",
            "summary": "Resumable Server-Sent Event streams on Apache Kafka",
            "description": "Errors are RFC 9457 problem details "
                           "(`application/problem+json`). Every response carries "
                           "`X-Content-Type-Options: nosniff`; see docs/api.md for the "
                           "request limits and CORS.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": _paths(),
        "components": _components(),
    }


@functools.cache
def document_bytes() -> bytes:
    """:func:`document` as JSON, what ``GET /v1/openapi.json`` answers."""
    return orjson.dumps(document())
