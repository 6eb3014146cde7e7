"""The OpenAPI document (schemas/openapi.py) against the gateway's routes, the JSON Schema
files the gateway validates with, and the OpenAPI 3.1 specification."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from eventlog.settings import AuthSettings, Settings
from gateway.app import create_app
from schemas import openapi
from schemas.validation import InvalidInput, Validators, load_schema
from tidemark.cli import _mount_durable

METHODS = {"get", "post", "put", "patch", "delete", "options"}


#: Routes only ``tidemark dev`` serves (the demo page's token): not part of the contract.
DEV_ONLY = {("GET", "/dev/token")}


def _app_routes(*, dev: bool = False) -> set[tuple[str, str]]:
    secret = "routes-test-secret-of-at-least-32-bytes"
    settings = Settings(auth=AuthSettings(jwt_secret=secret))
    app = create_app(settings, dev=dev)
    _mount_durable(app, settings)  # as `tidemark gateway` does
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD beside every GET
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"route without a path: {route}"
        routes.add((route.method, path))
    return routes


def _document_routes() -> set[tuple[str, str]]:
    doc = openapi.document()
    return {(method.upper(), path) for path, item in doc["paths"].items()
            for method in item if method in METHODS}


#: Documented routes that a branch is still landing on main (empty: the document and the
#: routes are equal).
LANDING: set[tuple[str, str]] = set()


def test_every_route_is_in_the_document_and_nothing_else() -> None:
    served, documented = _app_routes(), _document_routes()
    assert served - documented == set(), "routes missing from the document"
    assert documented - served <= LANDING, "documented routes the gateway does not serve"


def test_the_dev_gateway_adds_only_its_token_route() -> None:
    assert _app_routes(dev=True) - _app_routes() == DEV_ONLY


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # raises on any violation of the 3.1 schema


def test_the_served_bytes_are_the_document() -> None:
    assert orjson.loads(openapi.document_bytes()) == openapi.document()


def _without_ids(schema: Any) -> Any:
    return {k: v for k, v in schema.items() if k not in ("$id", "$schema")}


@pytest.mark.parametrize(("component", "stem"), sorted(openapi.REQUEST_SCHEMAS.items()))
def test_request_bodies_are_the_gateways_schema_files(component: str, stem: str) -> None:
    doc = openapi.document()
    embedded = doc["components"]["schemas"][component]
    # The embedded copy is the file itself, but for $id/$schema and its references to
    # sibling files, which point at those files' components.
    file_schema = load_schema(stem)
    assert embedded == openapi.embed(stem)[0]
    assert set(embedded) == set(_without_ids(file_schema))
    for key, value in _without_ids(file_schema).items():
        if "$ref" not in orjson.dumps(value).decode():
            assert embedded[key] == value, key
    # ... and each referenced file is a component, equal to that file the same way.
    for ref_stem in openapi.embed(stem)[1]:
        assert doc["components"]["schemas"][openapi.component_name(ref_stem)] == \
            openapi.embed(ref_stem)[0]


def _doc_validator(component: str) -> Draft202012Validator:
    """A validator of the document's component (its references resolve in the document)."""
    doc = openapi.document()
    return Draft202012Validator({"components": doc["components"],
                                 "$ref": f"#/components/schemas/{component}"})


CREATE_BODIES: list[Any] = [
    {"query": "q"}, {"query": ""}, {}, [], "x", {"query": "q", "generator": "external"},
    {"query": "q", "generator": "Bad"}, {"query": "q", "options": {"tokens": 5}},
    {"query": "q", "options": {"tokens": 0}}, {"query": "q", "extra": 1},
    {"query": "q", "options": {"tokens_per_second": 0}},
    {"query": "q", "context": {"sessionId": "s1", "preferences": {
        "updateFrequency": "batched", "responseFormat": "concise", "includeMetadata": False}}},
    {"query": "q", "context": {"preferences": {"updateFrequency": "sometimes"}}},
]
BATCH_BODIES: list[Any] = [
    {"queries": ["a", "b"]}, {"queries": []}, {"queries": [""]}, {"queries": "a"}, {},
    {"queries": ["a"], "strategy": {"type": "priority", "priorityWeights": [2]}},
    {"queries": ["a"], "strategy": {"type": "fastest"}},
    {"queries": ["a"], "strategy": {"type": "parallel", "maxConcurrency": 0}},
    {"queries": ["a"], "aggregation": {"combineResults": True, "summaryType": "highlights"}},
    {"queries": ["a"], "aggregation": {"summaryType": "brief"}},
    {"queries": ["a"], "options": {"tokens": 0}}, {"queries": ["a"], "extra": 1},
]
PUBLISH_BODIES: list[Any] = [
    {"type": "progress", "data": {}}, {"type": "Progress", "data": {}}, {"type": "x"},
    [], [{"type": "a", "data": {}}], [{"type": "a", "data": {}, "seq": 0}],
    {"type": "a", "data": {}, "seq": 1}, {"type": "a", "data": [], "seq": 1}, 5,
    [{"type": "a", "data": {}}] * 1001,
]


LOG_LEVEL_BODIES: list[Any] = [
    {"levels": {"gateway.hub": "DEBUG"}}, {"levels": "gateway.hub=DEBUG,workers=info"},
    {"levels": {}}, {"levels": ""}, {"levels": {"bad name": "DEBUG"}}, {"levels": 3},
    {"levels": {"gateway": "DEBUG"}, "more": 1}, {}, [], {"levels": {"gateway": "DE BUG"}},
]


@pytest.mark.parametrize(("component", "method", "bodies"), [
    ("CreateStreamRequest", "create_stream", CREATE_BODIES),
    ("CreateBatchRequest", "create_batch", BATCH_BODIES),
    ("PublishRequest", "publish", PUBLISH_BODIES),
    ("LogLevelsRequest", "log_levels", LOG_LEVEL_BODIES),
])
def test_the_document_and_the_gateway_accept_the_same_bodies(
        component: str, method: str, bodies: list[Any]) -> None:
    validators = Validators()
    by_document = _doc_validator(component)
    for body in bodies:
        try:
            validators.check(method, body)
            gateway_ok = True
        except InvalidInput:
            gateway_ok = False
        assert by_document.is_valid(body) == gateway_ok, body


def test_protected_routes_name_their_scope_and_public_ones_need_no_token() -> None:
    doc = openapi.document()
    public = {"/v1/openapi.json", "/healthz", "/readyz", "/metrics", "/", "/dashboard",
              "/dashboard/assets/{name}", "/demo/assets/{name}"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path in public:
                assert op["security"] == [], (method, path)
                continue
            assert op["x-required-scopes"], (method, path)
            assert set(op["x-required-scopes"]) <= set(openapi.SCOPES)
            assert {next(iter(s)) for s in op["security"]} == set(
                doc["components"]["securitySchemes"])
            assert "401" in op["responses"] and "403" in op["responses"], (method, path)


def test_every_error_answer_is_a_problem() -> None:
    doc = openapi.document()
    responses = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if int(status) < 400:
                    continue
                if method == "head":  # an answer to HEAD has no body
                    assert "content" not in answer and "$ref" not in answer, (path, status)
                    continue
                ref = answer["$ref"].rsplit("/", 1)[-1]
                assert list(responses[ref]["content"]) == ["application/problem+json"], \
                    (method, path, status)
