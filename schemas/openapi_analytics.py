"""The OpenAPI description of ``GET /v1/analytics`` and ``GET /v1/analytics/live``, and
the JSON Schema of the analytics document (``AnalyticsDocument``), which
``schemas.openapi`` merges into its document. The e2e tests validate the documents the
gateways answer against :func:`components` (``tests/e2e/test_analytics.py``)."""

from __future__ import annotations

from typing import Any, Final

import orjson

WINDOW_NAMES: Final = ("1m", "5m", "15m", "1h", "6h", "24h")

_INT: Final = {"type": "integer", "minimum": 0}
_MS: Final = {"type": ["number", "null"], "minimum": 0}
_RATE: Final = {"type": ["number", "null"], "minimum": 0, "maximum": 1}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required),
            "properties": {**required, **optional}}


def components() -> dict[str, Any]:
    """The schemas this module adds to ``components.schemas``."""
    percentiles = _obj({"count": _INT, "p50": _MS, "p90": _MS, "p99": _MS})
    figures = _obj({
        "streams": _obj({"created": _INT, "completed": _INT, "failed": _INT,
                         "cancelled": _INT, "success_rate": _RATE, "failure_rate": _RATE}),
        "first_event_ms": _ref("AnalyticsPercentiles"),
        "resume_ms": _obj({"memory": _ref("AnalyticsPercentiles"),
                           "kafka": _ref("AnalyticsPercentiles")}),
        "cutoffs": _INT,
        "usage": _obj({
            "tenants": {"type": "array", "items": _obj(
                {"tenant": {"type": "string"}, "streams": _INT, "events": _INT})},
            "users": {"type": "array", "description": "the top users by streams "
                      "(TIDEMARK_ANALYTICS_TOP_USERS)", "items": _obj(
                {"tenant": {"type": "string"}, "user": {"type": "string"},
                 "streams": _INT, "events": _INT})},
        }),
    })
    point = _obj({"t": _INT, "created": _INT, "completed": _INT, "failed": _INT,
                  "cancelled": _INT, "first_event_p50": _MS, "first_event_p99": _MS,
                  "active_streams": _INT, "connections": _INT})
    window = {
        "allOf": [_ref("AnalyticsFigures"), _obj({
            "from": _INT, "to": _INT,
            "variants": {"type": "object", "description": "experiment -> variant -> the "
                         "figures of its streams",
                         "additionalProperties": {"type": "object",
                                                  "additionalProperties":
                                                  _ref("AnalyticsFigures")}},
            "series": {"type": "array", "maxItems": 120, "items": point,
                       "description": "one entry per bucket, oldest first"},
        })],
    }
    recent_stream = _obj({
        "stream": {"type": "string"}, "tenant": {"type": "string"},
        "owner": {"type": "string"}, "generator": {"type": "string"},
        "status": {"type": "string"}, "created_at": _INT, "updated_at": _INT,
        "experiments": {"type": "object", "additionalProperties": {"type": "string"}}})
    recent_error = _obj({
        "stream": {"type": "string"}, "tenant": {"type": "string"}, "ts": _INT,
        "code": {"type": ["string", "null"]}, "message": {"type": ["string", "null"]},
        "retryable": {"type": ["boolean", "null"]}})
    document = _obj({
        "tenant": {"type": "string", "description": "the tenant the figures are of; `*`: "
                   "every tenant (the operator's view)"},
        "generated_at": _INT,
        "as_of": {**_INT, "description": "the newest record time this gateway has folded"},
        "active": _obj({"streams": _INT, "connections": _INT}),
        "windows": {"type": "object", "propertyNames": {"enum": list(WINDOW_NAMES)},
                    "additionalProperties": _ref("AnalyticsWindow")},
        "recent": _obj({"streams": {"type": "array", "items": recent_stream},
                        "errors": {"type": "array", "items": recent_error}}),
    })
    return {"AnalyticsPercentiles": percentiles, "AnalyticsFigures": figures,
            "AnalyticsWindow": window, "AnalyticsDocument": document}


def document_schema() -> dict[str, Any]:
    """``AnalyticsDocument`` as a standalone JSON Schema (its components as ``$defs``)."""
    defs = orjson.loads(orjson.dumps(components()).replace(
        b"#/components/schemas/", b"#/$defs/"))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **defs["AnalyticsDocument"], "$defs": defs}


def _parameters() -> list[dict[str, Any]]:
    return [
        {"name": "window", "in": "query", "required": False, "explode": True,
         "description": "a window to report (repeatable; default 5m and 1h)",
         "schema": {"type": "array", "items": {"enum": list(WINDOW_NAMES)}}},
        {"name": "tenant", "in": "query", "required": False,
         "description": "operators only (admins of TIDEMARK_OPERATOR_TENANT): another "
                        "tenant, or `*` for all; default the caller's own tenant",
         "schema": {"type": "string", "minLength": 1, "maxLength": 64}},
    ]


def _responses(ok: dict[str, Any]) -> dict[str, Any]:
    refs = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden",
            "414": "UriTooLong", "429": "TooManyRequests", "503": "Unavailable"}
    return {"200": ok, **{code: {"$ref": f"#/components/responses/{name}"}
                          for code, name in refs.items()}}


def paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The two paths; ``security``: the requirement of every protected route."""
    common = {"security": security, "x-required-scopes": ["admin"],
              "parameters": _parameters()}
    return {
        "/v1/analytics": {"get": {
            "operationId": "analytics", "summary": "Stream analytics over chosen windows",
            "description": "Needs a token with the `admin` scope. Figures are computed "
                           "from the log (the stream index and every gateway's reports), "
                           "so every gateway answers the same once it has read the same "
                           "records; see docs/analytics.md.",
            **common,
            "responses": _responses({
                "description": "the analytics document",
                "content": {"application/json": {"schema": _ref("AnalyticsDocument")}}}),
        }},
        "/v1/analytics/live": {"get": {
            "operationId": "analyticsLive",
            "summary": "The analytics document as Server-Sent Events",
            "description": "Needs a token with the `admin` scope (also as `access_token` "
                           "or the `tidemark_token` cookie, for EventSource). A `retry:` "
                           "line, then `event: analytics` with the document as `data` at "
                           "once and every TIDEMARK_ANALYTICS_LIVE_INTERVAL, `: ping` "
                           "between; no event ids. Ends after "
                           "TIDEMARK_MAX_RESPONSE_SECONDS.",
            **common,
            "responses": _responses({
                "description": "the feed",
                "content": {"text/event-stream": {"schema": _obj(
                    {"event": {"const": "analytics"},
                     "data": {"type": "string", "contentMediaType": "application/json",
                              "contentSchema": _ref("AnalyticsDocument")}},
                    retry=_INT)}}}),
        }},
    }
