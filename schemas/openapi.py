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

from schemas import eventid, openapi_analytics
from schemas.openapi_ds import ds_paths
from schemas.validation import load_schema

VERSION: Final = "3.1.0"

#: Request bodies: component name -> the JSON Schema file (in ``schemas/json``) it is.
REQUEST_SCHEMAS: Final = {
    "LogLevelsRequest": "log_levels",
    "CreateStreamRequest": "create_stream",
    "CreateBatchRequest": "create_batch",
    "PublishRequest": "publish",
    "InputRequest": "input_request",
    "AiChatRequest": "ai_chat",
    "WebhookCreateRequest": "webhook_create",
}

#: Every scope a token may carry (``gateway.auth.SCOPES``; ``admin`` holds them all).
SCOPES: Final = ("streams:create", "streams:read", "streams:publish", "streams:cancel",
                 "webhooks:manage", "admin")

#: The files ``GET /dashboard/assets/{name}`` serves (``gateway.dashboard.ASSETS``).
DASHBOARD_ASSETS: Final = ("dashboard.css", "dashboard.js", "uPlot.iife.min.js",
                           "uPlot.min.css")

#: The files ``GET /demo/assets/{name}`` serves (``gateway.routes.DEMO_ASSETS``).
DEMO_ASSETS: Final = ("tidemark-client.js",)

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
    "NoSuchFile": _problem("the page has no file of that name"),
    "Conflict": _problem("the request conflicts with the stream's state (a seq conflict, "
                         "a stream that has ended, a stream another generator writes)"),
    "Gone": _problem("the stream's events were deleted by retention"),
    "InputNotWritten": _problem("a generated stream's worker had not written the input "
                                "within TIDEMARK_INPUT_WAIT_SECONDS; it may still arrive "
                                "(input_id names it)"),
    "RequestTimeout": _problem("the request body did not arrive within "
                               "TIDEMARK_BODY_TIMEOUT; the connection is closed"),
    "ContentTooLarge": _problem("the body is larger than TIDEMARK_MAX_BODY_BYTES"),
    "UriTooLong": _problem("the request target is longer than TIDEMARK_MAX_URL_BYTES"),
    "UnsupportedMediaType": _problem("the body is not sent as application/json"),
    "UpgradeRequired": _problem("not a WebSocket upgrade request (such a request gets "
                                "the token's problems first: 401, 403, 404)",
                                {"Upgrade": {"required": True,
                                             "schema": {"const": "websocket"}}}),
    "Unprocessable": _problem("the body does not match its JSON Schema; the body's "
                              "`field` is a JSON Pointer to the failing value"),
    "TooManyRequests": _problem("a limit is reached (the body's `limit` names it)",
                                _RETRY_AFTER),
    "Unavailable": _problem("Kafka (or the limits' store) is not answering, or the gateway "
                            "is still starting", _RETRY_AFTER),
    "UnsafeTarget": _problem("the webhook URL is refused: not http(s), carries credentials, "
                             "does not resolve, or resolves to an address that is not "
                             "public (loopback, private, link-local, multicast, reserved) "
                             "and not in TIDEMARK_WEBHOOK_ALLOW"),
    "NoSuchWebhook": _problem("no such webhook (or dead letter) of the caller's tenant; "
                              "another tenant's answers exactly like one that does not exist"),
    "WebhookLimit": _problem("the tenant has TIDEMARK_WEBHOOK_MAX_PER_TENANT webhooks already"),
}


def _refs(*names: str) -> dict[str, Any]:
    codes = {"BadRequest": "400", "Unauthorized": "401", "Forbidden": "403",
             "NotFound": "404", "RequestTimeout": "408", "Conflict": "409", "Gone": "410",
             "ContentTooLarge": "413", "UriTooLong": "414", "UnsupportedMediaType": "415",
             "NoSuchFile": "404", "UnsafeTarget": "400", "NoSuchWebhook": "404",
             "WebhookLimit": "409",
             "Unprocessable": "422", "UpgradeRequired": "426", "TooManyRequests": "429",
             "Unavailable": "503", "InputNotWritten": "504"}
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
    "StreamPoll": {"operationId": "streamPoll",
                   "parameters": {"id": "$response.body#/stream_id"}},
    "StreamInput": {"operationId": "streamInput",
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


# --- AI SDK chats (docs/ai-sdk.md) ----------------------------------------------------

_CHAT_ID: Final = {
    "name": "chat_id", "in": "path", "required": True,
    "description": "the AI SDK chat's id (1 to 128 letters, digits, '_' or '-')",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
}

_UI_MESSAGE_STREAM: Final = {
    "description": "the answer as the AI SDK's UI message stream (header "
                   "x-vercel-ai-ui-message-stream: v1): `data: {chunk}` lines, then "
                   "`data: [DONE]`; from the answer's first event",
    "headers": {"x-vercel-ai-ui-message-stream": {"schema": {"const": "v1"}}},
    "content": {"text/event-stream": {"schema": {
        "type": "object", "description": "one UI message chunk (start, text-start, "
        "text-delta, text-end, message-metadata, data-*, error, abort, finish)",
        "required": ["type"], "properties": {"type": {"type": "string"}}}}},
}


def _ai_chat_paths() -> dict[str, Any]:
    return {
        "/v1/ai/chat": {
            "post": _op(
                "aiChat", "Ask in an AI SDK chat (DefaultChatTransport's api)",
                scope="streams:create",
                description="Creates a stream whose query is the last (user) message and "
                            "earlier turns its options.messages, records it as the chat's "
                            "latest answer and answers it as a UI message stream. See "
                            "docs/ai-sdk.md.",
                requestBody=_body("AiChatRequest"),
                responses={"200": _UI_MESSAGE_STREAM,
                           **_refs("BadRequest", *_GUARDED, "RequestTimeout",
                                   "ContentTooLarge", "UnsupportedMediaType",
                                   "Unprocessable", "Unavailable")}),
        },
        "/v1/ai/chat/{chat_id}/stream": {
            "get": _op(
                "aiChatResume", "Resume an AI SDK chat's latest answer",
                scope="streams:read",
                description="The DefaultChatTransport's reconnect: the chat's latest answer "
                            "replayed from its first event, live or finished (from the "
                            "log); 204 when the chat has none.",
                parameters=[_CHAT_ID],
                responses={"200": _UI_MESSAGE_STREAM,
                           "204": {"description": "the chat has no answer to resume"},
                           **_refs("BadRequest", *_GUARDED, "NotFound", "Gone",
                                   "Unavailable")}),
        },
        "/v1/ai/chat/{chat_id}/stop": {
            "post": _op(
                "aiChatStop", "Stop an AI SDK chat's latest answer", scope="streams:cancel",
                description="Cancels the answer's stream (the AI SDK's stop() only aborts "
                            "the client's request); the answer ends with an abort chunk.",
                parameters=[_CHAT_ID],
                responses={
                    "202": _json(_schema("AiChatStopResult"), "the cancel is on its way"),
                    "200": _json(_schema("AiChatStopResult"), "the answer had finished"),
                    **_refs("BadRequest", *_GUARDED, "NotFound", "Unavailable")}),
        },
    }


# --- A/B experiments (docs/experiments.md) ------------------------------------------

def _experiment_components() -> dict[str, Any]:
    name = {"type": "string"}
    assignment: dict[str, Any] = {"type": "object", "required": ["tenant", "sub", "assignment"],
                  "properties": {"tenant": name, "sub": name,
                                 "assignment": _schema("Variants")}}
    return {
        "Variants": {
            "type": "object", "additionalProperties": {"type": "string"},
            "description": "the A/B variants of a stream (or a caller): experiment name -> "
                           "variant name; {} when in none"},
        "Experiment": {
            "type": "object", "required": ["name", "enabled", "allTenants", "variants"],
            "properties": {
                "name": name,
                "enabled": {"type": "boolean", "description": "false: nobody new is "
                            "assigned; streams already in it keep their variant's changes"},
                "allTenants": {"type": "boolean", "description": "false: only some tenants "
                               "take part (the caller's among them)"},
                "variants": {"type": "array", "items": {
                    "type": "object", "required": ["name", "weight", "share", "changes"],
                    "properties": {
                        "name": name, "weight": {"type": "number", "minimum": 0},
                        "share": {"type": "number", "minimum": 0, "maximum": 1,
                                  "description": "weight / the experiment's total weight"},
                        "changes": {"type": "object", "description": "updateFrequency, "
                                    "coalesceMs, heartbeatSeconds, options (as defined in "
                                    "TIDEMARK_EXPERIMENTS)"}}}},
            },
        },
        "ExperimentList": {
            **assignment, "required": ["tenant", "sub", "experiments", "assignment"],
            "properties": {**assignment["properties"], "experiments": {
                "type": "array", "items": _schema("Experiment"),
                "description": "the experiments the caller's tenant takes part in"}},
        },
        "Assignment": assignment,
    }


def _experiment_paths() -> dict[str, Any]:
    return {
        "/v1/experiments": {
            "get": _op("listExperiments", "The A/B experiments and the caller's variants",
                       scope="admin", description="A tenant's admin sees the experiments "
                       "their tenant takes part in.",
                       responses={"200": _json(_schema("ExperimentList"), "the experiments"),
                                  **_refs(*_GUARDED)}),
        },
        "/v1/experiments/mine": {
            "get": _op("myExperiments", "The caller's own A/B variants (what their next "
                       "stream gets)", scope="streams:create",
                       responses={"200": _json(_schema("Assignment"), "the caller's "
                                               "variants"), **_refs(*_GUARDED)}),
        },
    }


# --- webhooks (docs/webhooks.md) ------------------------------------------------------

def _webhook_components() -> dict[str, Any]:
    string = {"type": "string"}
    webhook: dict[str, Any] = {
        "type": "object",
        "required": ["id", "url", "eventTypes", "signer", "description", "createdAt"],
        "properties": {
            "id": {"type": "string", "pattern": "^wh_[0-9a-f]{24}$"}, "url": string,
            "eventTypes": {"type": "array", "items": string}, "signer": string,
            "description": string,
            "createdAt": {"type": "integer", "description": "ms since the epoch; events "
                          "written before it are not delivered"}}}
    return {
        "Webhook": webhook,
        "WebhookCreated": {
            **webhook, "required": [*webhook["required"], "secret"],
            "properties": {**webhook["properties"], "secret": {
                "type": "string", "description": "the signing secret (whsec_...): shown "
                "in this answer only"}}},
        "WebhookList": {"type": "object", "required": ["webhooks"], "properties": {
            "webhooks": {"type": "array", "items": _schema("Webhook")}}},
        "DeadLetter": {
            "type": "object",
            "required": ["id", "webhook", "eventId", "stream", "type", "reason", "attempts",
                         "failedAt", "replays", "payload"],
            "properties": {
                "id": {"type": "string", "pattern": "^dl_[0-9a-f]{32}$"}, "webhook": string,
                "eventId": string, "stream": string, "type": string,
                "reason": {"type": "string", "description": "why the last attempt failed"},
                "attempts": {"type": "integer", "minimum": 0},
                "failedAt": {"type": "integer", "description": "ms since the epoch"},
                "replays": {"type": "integer", "minimum": 0,
                            "description": "replays of it that failed too"},
                "payload": _schema("WebhookPayload")}},
        "DeadLetterList": {
            "type": "object", "required": ["webhook", "deadLetters", "truncated"],
            "properties": {
                "webhook": string,
                "deadLetters": {"type": "array", "items": _schema("DeadLetter"),
                                "description": "oldest first; at most "
                                "TIDEMARK_WEBHOOK_DLQ_LIST_MAX, the newest"},
                "truncated": {"type": "boolean"}}},
        "ReplayQueued": {
            "type": "object", "required": ["deadLetter", "eventId", "replay"],
            "properties": {"deadLetter": string, "eventId": string,
                           "replay": {"const": "queued"}}},
        "WebhookPayload": embed("webhook_payload")[0],
    }


def _webhook_paths() -> dict[str, Any]:
    scope = "webhooks:manage"
    webhook_id = {"name": "id", "in": "path", "required": True, "description": "a webhook id",
                  "schema": {"type": "string", "maxLength": 64}}
    letter_id = {"name": "letter", "in": "path", "required": True,
                 "description": "a dead letter's id", "schema": {"type": "string",
                                                                 "maxLength": 64}}
    return {
        "/v1/webhooks": {
            "post": _op("createWebhook", "Register a webhook of the caller's tenant",
                        scope=scope, requestBody=_body("WebhookCreateRequest"),
                        description="Deliveries are signed as Standard Webhooks says "
                        "(webhook-id is the event id).",
                        responses={"201": _json(_schema("WebhookCreated"), "registered"),
                                   **_refs("UnsafeTarget", *_GUARDED, "WebhookLimit",
                                           "ContentTooLarge", "UnsupportedMediaType",
                                           "Unprocessable", "Unavailable")}),
            "get": _op("listWebhooks", "The caller's tenant's webhooks (without secrets)",
                       scope=scope,
                       responses={"200": _json(_schema("WebhookList"), "the webhooks"),
                                  **_refs(*_GUARDED, "Unavailable")}),
        },
        "/v1/webhooks/{id}": {
            "delete": _op("deleteWebhook", "Delete a webhook (its pending deliveries are "
                          "dropped)", scope=scope, parameters=[webhook_id],
                          responses={"204": {"description": "deleted"},
                                     **_refs(*_GUARDED, "NoSuchWebhook", "Unavailable")}),
        },
        "/v1/webhooks/{id}/dead-letters": {
            "get": _op("listDeadLetters", "The webhook's dead letters: deliveries whose "
                       "attempts ran out", scope=scope, parameters=[webhook_id],
                       responses={"200": _json(_schema("DeadLetterList"), "dead letters"),
                                  **_refs(*_GUARDED, "NoSuchWebhook", "Unavailable")}),
        },
        "/v1/webhooks/{id}/dead-letters/{letter}/replay": {
            "post": _op("replayDeadLetter", "Send a dead letter again (same webhook-id); "
                        "delivered, it leaves the list", scope=scope,
                        parameters=[webhook_id, letter_id],
                        responses={"202": _json(_schema("ReplayQueued"), "queued"),
                                   **_refs(*_GUARDED, "NoSuchWebhook", "Unavailable")}),
        },
    }


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
            "type": "object",
            "required": ["stream_id", "events_url", "status_url", "experiments"],
            "properties": {
                "stream_id": string,
                "events_url": {"type": "string", "description": "the stream's SSE URL; "
                               "carries the read token when the gateway issues one"},
                "status_url": string,
                "read_token": {"type": "string", "description": "a short-lived token that "
                               "reads this one stream (with TIDEMARK_AUTH=jwt)"},
                "read_token_expires_at": {"type": "integer",
                                          "description": "seconds since the epoch"},
                "experiments": _schema("Variants"),
                "urls": _schema("TransportUrls"),
            },
        },
        "BatchChild": {
            "type": "object",
            "required": ["index", "stream_id", "events_url", "status_url", "urls"],
            "description": "the child stream that answers one query of a batch",
            "properties": {
                "index": {"type": "integer", "minimum": 0,
                          "description": "the query's position in `queries`"},
                "stream_id": string,
                "events_url": {"type": "string", "description": "the child's SSE URL "
                               "(with its read token when the gateway issues them)"},
                "status_url": string,
                "read_token": string,
                "read_token_expires_at": {"type": "integer"},
                "urls": _schema("TransportUrls"),
                "duplicate_of": {"type": "integer", "minimum": 0, "description": "the "
                                 "query is a duplicate of this earlier one and shares its "
                                 "stream"},
            },
        },
        "CreateBatchResponse": {
            "type": "object",
            "required": ["stream_id", "batch_id", "events_url", "status_url", "urls",
                         "queries", "generated", "children"],
            "description": "the batch stream (follow it like any stream) and its children",
            "properties": {
                "stream_id": {"type": "string", "description": "the batch stream's id"},
                "batch_id": {"type": "string", "description": "the same as stream_id"},
                "events_url": string, "status_url": string,
                "read_token": string, "read_token_expires_at": {"type": "integer"},
                "urls": _schema("TransportUrls"),
                "queries": {"type": "integer", "minimum": 1},
                "generated": {"type": "integer", "minimum": 1,
                              "description": "child streams made (distinct queries)"},
                "children": {"type": "array", "items": _schema("BatchChild"),
                             "description": "one per query, in query order"},
            },
        },
        "TransportUrls": {
            "type": "object", "required": ["sse", "ws", "poll"],
            "description": "the stream's URL on each transport (each carries the read "
                           "token when the gateway issues one); docs/transports.md",
            "properties": {
                "sse": {"type": "string", "description": "Server-Sent Events (the same as "
                        "`events_url`)"},
                "ws": {"type": "string", "description": "WebSocket (GET with Upgrade)"},
                "poll": {"type": "string", "description": "long-poll"},
            },
        },
        "StreamItem": {
            "type": "object", "required": ["id", "event", "data"],
            "description": "one event as the WebSocket and long-poll transports send it: "
                           "the same id, type and envelope as on SSE",
            "properties": {
                "id": {**nullable_string, "description": "its position (resume after it "
                       "with last_event_id); null for an in-band `reset` notice"},
                "event": {"type": "string", "description": "the event type"},
                "data": {"type": "object", "description": "the event envelope "
                         "(schemas/json/envelope.json) as an object, byte for byte the SSE "
                         "`data:` line; for `reset`, the reset notice"},
            },
        },
        "PollAnswer": {
            "type": "object", "required": ["events", "last_event_id", "ended"],
            "properties": {
                "events": {"type": "array", "items": _schema("StreamItem"),
                           "description": "at most TIDEMARK_POLL_MAX_EVENTS events; empty "
                           "when the wait ended with nothing new"},
                "last_event_id": {**nullable_string, "description": "poll again with "
                                  "this; the request's own position when nothing came"},
                "ended": {"type": "boolean", "description": "the answer holds the "
                          "stream's terminal event: nothing more will come"},
            },
        },
        "InputResult": {
            "type": "object", "required": ["seq", "id"],
            "properties": {"seq": {"type": "integer", "minimum": 1}, "id": string},
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
                         "last_seq", "first_event_id", "terminal_event_id", "events_url",
                         "experiments"],
            "properties": {
                "stream_id": string,
                "status": {"type": "string", "description": "pending, running, completed, "
                           "failed or cancelled"},
                "generator": string, "namespace": string,
                "created_at": {"type": "integer"}, "updated_at": {"type": "integer"},
                "last_seq": {"type": "integer", "minimum": 0},
                "first_event_id": string, "terminal_event_id": nullable_string,
                "events_url": string,
                "experiments": _schema("Variants"),
            },
        },
        **_experiment_components(),
        **_webhook_components(),
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
        "AiChatStopResult": {
            "type": "object", "required": ["chat_id", "stream_id", "status"],
            "properties": {"chat_id": string, "stream_id": string, "status": string},
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
        "CacheDeleted": {
            "type": "object", "required": ["deleted"],
            "description": "how many cached answers of the caller's tenant were removed",
            "properties": {"deleted": {"type": "integer", "minimum": 0}},
        },
        "LogLevels": {
            "type": "object", "required": ["process", "root", "levels"],
            "description": "this one process's log levels",
            "properties": {
                "process": {"type": "string", "description": "which process answered "
                            "(host:pid): a change applies to it alone"},
                "root": {"type": "string", "description": "the root logger's level"},
                "levels": {"type": "object", "additionalProperties": string,
                           "description": "loggers set by TIDEMARK_LOG_LEVELS or a PUT"},
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
    schemas.update(openapi_analytics.components())
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


#: A resume position: an event id as the gateway sends it (schemas/eventid.py).
_EVENT_ID: Final = {"type": "string", "maxLength": eventid.MAX_LENGTH,
                    "pattern": eventid.PATTERN}


def _paths() -> dict[str, Any]:
    sse_params = [
        _STREAM_ID,
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "description": "resume after this event (what EventSource sends on reconnect); "
                        "an id is opaque to clients, any other text is 400",
         "schema": _EVENT_ID},
        {"name": "last_event_id", "in": "query", "required": False,
         "description": "resume after this event (when the header is absent)",
         "schema": _EVENT_ID},
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
                                   "UnsupportedMediaType", "Unprocessable", "Unavailable",
                                   "InputNotWritten")}),
        },
        "/v1/streams/{id}/ws": {
            "get": _op(
                "streamWebSocket", "Follow a stream over a WebSocket", scope="streams:read",
                description="The upgrade is accepted first; then every refusal the SSE "
                            "route answers with a problem closes the socket with 4000 + its "
                            "status (4400, 4401, 4403, 4404, 4410, 4429, 4503) and the "
                            "problem's detail. One text frame per event (StreamItem); close "
                            "1000 after the terminal event, or at once for a position at or "
                            "after it; 1013 for a client too slow to keep up and 1001 when "
                            "the gateway shuts down or the response reaches its lifetime "
                            "(resume with last_event_id). Client messages: "
                            '`{"op": "input", "data": {...}}` (streams:publish) and '
                            '`{"op": "cancel"}` (streams:cancel). See docs/transports.md.',
                parameters=sse_params,
                responses={
                    "101": {"description": "switching to the WebSocket protocol"},
                    **_refs(*_GUARDED, "NotFound", "UpgradeRequired"),
                }),
        },
        "/v1/streams/{id}/poll": {
            "get": _op(
                "streamPoll", "Follow a stream by long-poll", scope="streams:read",
                description="Answers at once with the events that are due (at most "
                            "TIDEMARK_POLL_MAX_EVENTS / TIDEMARK_POLL_MAX_BYTES), else "
                            "waits up to `wait` seconds for the next one. Poll again with "
                            "the answer's `last_event_id` until `ended`.",
                parameters=[*sse_params,
                            {"name": "wait", "in": "query", "required": False,
                             "description": "seconds to wait for an event when none is "
                                            "due (default and bound: "
                                            "TIDEMARK_POLL_MAX_WAIT, 30)",
                             "schema": {"type": "number", "minimum": 0}}],
                responses={
                    "200": _json(_schema("PollAnswer"), "the events due, or none after "
                                 "the wait"),
                    "204": {"description": "the stream has ended and last_event_id is its "
                                           "last event: nothing more will come"},
                    **_refs("BadRequest", *_GUARDED, "NotFound", "Gone", "Unavailable"),
                }),
        },
        "/v1/streams/{id}/input": {
            "post": _op(
                "streamInput", "Talk back: append an input event to one's stream",
                scope="streams:publish",
                description="The input goes into the stream's log as an `input` event, in "
                            "order, with the next seq, and every follower sees it. An "
                            "external stream's is appended at once; a generated stream's "
                            "goes to its worker, which writes it (and hands it to its "
                            "generator): the answer comes once it is in the log (504 "
                            "past TIDEMARK_INPUT_WAIT_SECONDS). A stream that has ended, "
                            "or a generated one not started yet (queued): 409. Its data "
                            "is at most TIDEMARK_INPUT_MAX_BYTES of JSON (413).",
                parameters=[_STREAM_ID], requestBody=_body("InputRequest"),
                responses={"200": _json(_schema("InputResult"), "the input was written"),
                           **_refs("BadRequest", *_GUARDED, "NotFound", "RequestTimeout",
                                   "Conflict", "Gone", "ContentTooLarge",
                                   "UnsupportedMediaType", "Unprocessable", "Unavailable",
                                   "InputNotWritten")}),
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
        "/v1/batches": {
            "post": _op(
                "createBatch", "Start a batch: one stream per distinct query and a batch "
                "stream that follows them", scope="streams:create",
                description="Each stream counts against the caller's active-stream limits "
                            "(all or none: 429 writes nothing); at most "
                            "TIDEMARK_BATCH_MAX_QUERIES queries. See docs/batches.md.",
                requestBody=_body("CreateBatchRequest"),
                responses={
                    "201": _json(_schema("CreateBatchResponse"), "the batch was created",
                                 headers={"Location": {"required": True,
                                                       "schema": {"type": "string"}}},
                                 links=_STREAM_LINKS),
                    **_refs("BadRequest", *_GUARDED, "RequestTimeout", "ContentTooLarge",
                            "UnsupportedMediaType", "Unprocessable", "Unavailable"),
                }),
        },
        **_ai_chat_paths(),
        **_experiment_paths(),
        **_webhook_paths(),
        "/v1/openapi.json": {
            "get": _op("openapi", "This document", scope=None, responses={
                "200": _json({"type": "object"}, "the OpenAPI 3.1 document"),
                **_refs("UriTooLong")}),
        },
        "/v1/cache/streams/{id}": {
            "delete": _op(
                "deleteCachedStream", "Forget the cached answers a stream gives",
                scope="admin", description="The caller's tenant only (docs/cache.md): "
                "later similar queries are generated again.",
                parameters=[_STREAM_ID],
                responses={"200": _json(_schema("CacheDeleted"), "the entries removed"),
                           **_refs("BadRequest", *_GUARDED, "Unavailable")}),
        },
        "/v1/cache/entries": {
            "delete": _op(
                "deleteCachedQuery", "Forget the cached answers of a query",
                scope="admin", description="The entries of the caller's tenant whose "
                "normalised query equals this one's (docs/cache.md), of one generator or "
                "of all.",
                parameters=[
                    {"name": "query", "in": "query", "required": True,
                     "description": "the query (compared in its normalised form); a "
                                    "longer one is accepted while the request target fits "
                                    "TIDEMARK_MAX_URL_BYTES (414 beyond)",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 300}},
                    {"name": "generator", "in": "query", "required": False,
                     "description": "only this generator's entries",
                     "schema": {"type": "string", "minLength": 1, "maxLength": 64}}],
                responses={"200": _json(_schema("CacheDeleted"), "the entries removed"),
                           **_refs("BadRequest", *_GUARDED, "Unavailable")}),
        },
        "/v1/admin/log-levels": {
            "get": _op(
                "getLogLevels", "This process's log levels", scope="admin",
                description="Only an admin of the operators' tenant "
                            "(TIDEMARK_DEFAULT_TENANT): levels are the whole process's.",
                responses={"200": _json(_schema("LogLevels"), "the current levels"),
                           **_refs(*_GUARDED)}),
            "put": _op(
                "setLogLevels", "Change this process's log levels", scope="admin",
                description="Only an admin of the operators' tenant "
                            "(TIDEMARK_DEFAULT_TENANT). Sets the named loggers in this one "
                            "process (behind a load balancer, put it to each gateway); "
                            "audited. Workers serve the same on their metrics port.",
                requestBody=_body("LogLevelsRequest"),
                responses={"200": _json(_schema("LogLevels"), "the levels after the change"),
                           **_refs("BadRequest", *_GUARDED, "RequestTimeout",
                                   "ContentTooLarge", "UnsupportedMediaType",
                                   "Unprocessable")}),
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
        "/demo/assets/{name}": {
            "get": _op("demoAsset", "A file of the demo page (the JavaScript SDK's bundle)",
                       scope=None,
                       parameters=[{"name": "name", "in": "path", "required": True,
                                    "description": "the file",
                                    "schema": {"enum": sorted(DEMO_ASSETS)}}],
                       responses={
                           "200": {"description": "the file",
                                   "content": {"text/javascript": {"schema": {"type": "string"}}}},
                           **_refs("UriTooLong", "NoSuchFile")}),
        },
        "/dashboard": {
            "get": _op("dashboardPage", "The live operator dashboard (an HTML page)",
                       scope=None,
                       description="Public, holds no data: its script reads an admin token "
                                   "from the URL fragment (`#token=`) or a paste field and "
                                   "follows `GET /v1/analytics/live` (docs/operations.md).",
                       responses={
                           "200": {"description": "an HTML page",
                                   "content": {"text/html": {"schema": {"type": "string"}}}},
                           **_refs("UriTooLong")}),
        },
        "/dashboard/assets/{name}": {
            "get": _op("dashboardAsset", "A file of the dashboard page", scope=None,
                       parameters=[{"name": "name", "in": "path", "required": True,
                                    "description": "the file",
                                    "schema": {"enum": sorted(DASHBOARD_ASSETS)}}],
                       responses={
                           "200": {"description": "the file",
                                   "content": {"text/javascript": {"schema": {"type": "string"}},
                                               "text/css": {"schema": {"type": "string"}}}},
                           **_refs("UriTooLong", "NoSuchFile")}),
        },
        **openapi_analytics.paths(_PROTECTED),
        **ds_paths(_op, _refs, _GUARDED, _RESPONSES),
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
