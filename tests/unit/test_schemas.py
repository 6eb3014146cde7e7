"""The JSON Schemas in schemas/json, the code in schemas/, and the workers agree."""

from __future__ import annotations

import base64
import dataclasses
import json
from importlib import resources
from typing import Any

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from eventlog.embeddings import DIM, MODEL_ID
from eventlog.index import StreamInfo
from eventlog.jobs import InputRecord, Job, parse_job_record
from schemas import events
from schemas.validation import CreateRequest, EventInput, InvalidInput, Validators, load_schema
from workers.cache import QueryCache
from workers.demo import DemoGenerator
from workers.generators import Inputs
from workers.interactive import InteractiveGenerator

SCHEMA_DIR = resources.files("schemas").joinpath("json")
SCHEMA_FILES = sorted(p.name for p in SCHEMA_DIR.iterdir() if p.name.endswith(".json"))


@pytest.fixture
def validators() -> Validators:
    return Validators()


def resolve(document: Any, pointer: str) -> Any:
    """RFC 6901: the value a JSON Pointer names."""
    if pointer == "":
        return document
    assert pointer.startswith("/"), pointer
    node = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


# --- the schema files -----------------------------------------------------------


def test_there_are_schema_files() -> None:
    assert "envelope.json" in SCHEMA_FILES
    assert "event_input.json" in SCHEMA_FILES


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_schema_file_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = json.loads(SCHEMA_DIR.joinpath(name).read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # "$ref": "event_input.json" in publish.json resolves against the $id.
    assert schema["$id"].endswith("/" + name)


@pytest.mark.parametrize("event_type", sorted(events.BUILTIN_TYPES))
def test_every_builtin_type_has_a_data_schema(event_type: str) -> None:
    assert f"{event_type}.json" in SCHEMA_FILES
    assert load_schema(event_type)["type"] == "object"


def test_the_publishable_types_are_exactly_the_builtin_types(validators: Validators) -> None:
    assert validators.event_types == events.BUILTIN_TYPES
    assert not validators.event_types & events.RESERVED_TYPES


def test_terminal_types_are_builtin() -> None:
    assert events.TERMINAL_TYPES <= events.BUILTIN_TYPES
    assert events.TERMINAL_TYPES == {"result", "error", "cancelled"}


def test_code_patterns_equal_schema_patterns() -> None:
    envelope = load_schema("envelope")["properties"]
    event_input = load_schema("event_input")["properties"]
    assert envelope["stream"]["pattern"] == events.STREAM_ID_PATTERN
    assert envelope["type"]["pattern"] == events.EVENT_TYPE_PATTERN
    assert event_input["type"]["pattern"] == events.EVENT_TYPE_PATTERN


def test_every_builtin_and_reserved_name_matches_the_event_type_pattern() -> None:
    type_schema = {"type": "string", "pattern": events.EVENT_TYPE_PATTERN}
    for name in events.BUILTIN_TYPES | events.RESERVED_TYPES:
        Draft202012Validator(type_schema).validate(name)


# --- the envelope ------------------------------------------------------------------

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "status": {"state": "running", "message": "working"},
    "progress": {"percentage": 42.5, "estimatedTimeRemaining": 1.5,
                 "currentStep": "generating", "completedSteps": 3},
    "partial_result": {"chunk": "h\u00e9llo\n", "chunkIndex": 0, "isComplete": False},
    "metadata": {"model": "m", "sources": ["a", "b"], "usage": {"tokens": 3}},
    "result": {"text": "done"},
    "error": {"code": "boom", "message": "it broke", "retryable": True},
    "cancelled": {"reason": "user"},
    "input": {"approved": True, "comment": "go ahead"},
}


def test_sample_data_covers_every_builtin_type() -> None:
    assert set(SAMPLE_DATA) == events.BUILTIN_TYPES


@pytest.mark.parametrize("event_type", sorted(SAMPLE_DATA))
def test_event_to_json_is_a_valid_one_line_envelope(event_type: str) -> None:
    event = events.Event(stream="s-1_A", seq=5, type=event_type, ts=1_700_000_000_000,
                         data=SAMPLE_DATA[event_type])
    raw = event.to_json()
    assert b"\n" not in raw and b"\r" not in raw
    Draft202012Validator(load_schema("envelope")).validate(orjson.loads(raw))
    assert events.Event.from_json(raw) == event
    assert orjson.loads(raw) == {"stream": "s-1_A", "seq": 5, "type": event_type,
                                 "ts": 1_700_000_000_000, "data": SAMPLE_DATA[event_type]}


def test_queued_event_at_seq_zero_is_a_valid_envelope(validators: Validators) -> None:
    event = events.Event(stream="s", seq=0, type="status", ts=0, data={"state": "queued"})
    validators.check("envelope", orjson.loads(event.to_json()))


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", ""), ("stream", "a b"), ("stream", "-a"), ("stream", "a" * 129),
     ("stream", "abc\n"), ("type", "Status"), ("type", "status\n"), ("seq", -1), ("ts", -1)],
)
def test_envelope_rejects_bad_fields(validators: Validators, field: str, value: Any) -> None:
    envelope = {"stream": "s", "seq": 1, "type": "status", "ts": 1, "data": {"state": "x"}}
    envelope[field] = value
    with pytest.raises(InvalidInput) as info:
        validators.check("envelope", envelope)
    assert info.value.pointer == f"/{field}"


@pytest.mark.parametrize("stream_id", ["a", "A", "0", "abc-DEF_123", "a" * 128])
def test_valid_stream_ids(stream_id: str) -> None:
    assert events.is_valid_stream_id(stream_id)


@pytest.mark.parametrize(
    "stream_id",
    ["", "-a", "_a", "a" * 129, "a b", "a/b", "a.b", "a%0A", "\u00e9", "abc\n", "\nabc"],
)
def test_invalid_stream_ids(stream_id: str) -> None:
    assert not events.is_valid_stream_id(stream_id)


# --- workers and the publish API agree ------------------------------------------


def demo_job(**options: Any) -> Job:
    info = StreamInfo(stream_id="s1", namespace="default", topic="tidemark.default.events",
                      partition=0, first_offset=0, generator="demo", status="running",
                      created_at=0, updated_at=0)
    return Job(stream=info, query="why is the sea salty?",
               options={"tokens": 12, "tokens_per_second": 10000, **options})


@pytest.mark.parametrize("fail_at_seq", [None, 6])
async def test_every_demo_event_passes_the_publish_validator(
        validators: Validators, fail_at_seq: int | None) -> None:
    drafts = [d async for d in DemoGenerator().events(demo_job(fail_at_seq=fail_at_seq), 1)]
    assert drafts
    for draft in drafts:
        [item] = validators.publish_request(
            {"type": draft.type, "data": draft.data, "seq": draft.seq})
        assert item == EventInput(type=draft.type, data=draft.data, seq=draft.seq)
    # And all of them in one publish body.
    body = [{"type": d.type, "data": d.data, "seq": d.seq} for d in drafts]
    assert len(validators.publish_request(body)) == len(drafts)


# --- publish requests -------------------------------------------------------------


def test_publish_one_object(validators: Validators) -> None:
    items = validators.publish_request({"type": "status", "data": {"state": "running"}})
    assert items == [EventInput(type="status", data={"state": "running"}, seq=None)]


def test_publish_a_list_keeps_order_and_seqs(validators: Validators) -> None:
    body = [
        {"type": "status", "data": {"state": "running"}, "seq": 1},
        {"type": "partial_result", "data": {"chunk": "a", "chunkIndex": 0}, "seq": 2},
        {"type": "result", "data": {"text": "a"}, "seq": 3},
    ]
    items = validators.publish_request(body)
    assert [(i.type, i.data, i.seq) for i in items] == [
        (b["type"], b["data"], b["seq"]) for b in body]
    assert all(isinstance(i, EventInput) for i in items)


OK_ITEM = {"type": "status", "data": {"state": "running"}}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"type": "progress", "data": {"percentage": 150}}, "/data/percentage"),
        ({"type": "progress", "data": {"percentage": "half"}}, "/data/percentage"),
        ({"type": "status", "data": {"state": ""}}, "/data/state"),
        ({"type": "partial_result", "data": {"chunk": "x", "chunkIndex": -1}},
         "/data/chunkIndex"),
        ({"type": "error", "data": {"code": "c", "message": "m", "retryable": "no"}},
         "/data/retryable"),
        ({"type": "status", "data": []}, "/data"),
        ({"type": "status", "data": {"state": "x"}, "seq": 0}, "/seq"),
        ({"type": "status", "data": {"state": "x"}, "seq": -3}, "/seq"),
        ({"type": "status", "data": {"state": "x"}, "seq": 1.5}, "/seq"),
        ({"type": "Status", "data": {"state": "x"}}, "/type"),
        ({"type": "nope", "data": {}}, "/type"),
        ({"type": "reset", "data": {"reason": "epoch", "earliest": "1-00000000-0-0"}}, "/type"),
        ({"type": "message", "data": {}}, "/type"),
        ([OK_ITEM, {"type": "progress", "data": {"percentage": -1}}], "/1/data/percentage"),
        ([OK_ITEM, OK_ITEM, {"type": "nope", "data": {}}], "/2/type"),
        ([{"type": "status", "data": {"state": "x"}, "seq": 0}, OK_ITEM], "/0/seq"),
        ([OK_ITEM, {"type": "status", "data": {"state": ""}, "seq": 2}], "/1/data/state"),
    ],
)
def test_publish_errors_point_at_the_failing_field(
        validators: Validators, body: Any, pointer: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validators.publish_request(body)
    assert info.value.pointer == pointer
    resolve(body, pointer)  # the pointer names a value that exists in the body
    assert info.value.reason


@pytest.mark.parametrize(
    ("body", "container"),
    [({"type": "status"}, ""), ([OK_ITEM, {"type": "status"}], "/1")],
)
def test_publish_missing_data_is_reported(
        validators: Validators, body: Any, container: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validators.publish_request(body)
    # The pointer is the object that lacks "data" (or "data" itself), and the reason
    # names the missing member.
    assert info.value.pointer in (container, container + "/data")
    assert "data" in info.value.reason


@pytest.mark.parametrize("body", [[], "status", 5, None, [OK_ITEM] * 1001])
def test_publish_rejects_bodies_that_are_not_events(validators: Validators, body: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        validators.publish_request(body)
    assert info.value.pointer == ""


def test_publish_accepts_the_largest_list(validators: Validators) -> None:
    assert len(validators.publish_request([OK_ITEM] * 1000)) == 1000


# --- custom event types -----------------------------------------------------------

TOOL_CALL = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "args": {"type": "object"}},
}


def test_registered_custom_type_is_validated_against_its_schema(
        validators: Validators) -> None:
    validators.register_event_type("tool_call", TOOL_CALL)
    assert validators.event_types == events.BUILTIN_TYPES | {"tool_call"}
    [item] = validators.publish_request(
        {"type": "tool_call", "data": {"name": "search", "args": {"q": "x"}}, "seq": 4})
    assert item == EventInput(type="tool_call", data={"name": "search", "args": {"q": "x"}},
                              seq=4)
    with pytest.raises(InvalidInput) as info:
        validators.publish_request({"type": "tool_call", "data": {"name": ""}})
    assert info.value.pointer == "/data/name"
    with pytest.raises(InvalidInput):
        validators.publish_request({"type": "tool_call", "data": {}})


def test_registration_belongs_to_one_validators_object(validators: Validators) -> None:
    validators.register_event_type("tool_call", TOOL_CALL)
    assert Validators().event_types == events.BUILTIN_TYPES


@pytest.mark.parametrize("name", sorted(events.BUILTIN_TYPES | events.RESERVED_TYPES))
def test_builtin_and_reserved_names_cannot_be_registered(
        validators: Validators, name: str) -> None:
    with pytest.raises(ValueError):
        validators.register_event_type(name, {"type": "object"})
    assert validators.event_types == events.BUILTIN_TYPES


@pytest.mark.parametrize(
    "name",
    ["", "Tool", "1tool", "_tool", "tool call", "tool/call", "t\u00f6ol", "a" * 65,
     "tool\r", "tool\n", "tool\x00"],
)
def test_bad_names_cannot_be_registered(validators: Validators, name: str) -> None:
    with pytest.raises(ValueError):
        validators.register_event_type(name, {"type": "object"})
    assert name not in validators.event_types


def test_an_invalid_schema_cannot_be_registered(validators: Validators) -> None:
    with pytest.raises(SchemaError):
        validators.register_event_type("tool_call", {"type": "no-such-type"})
    assert "tool_call" not in validators.event_types


# --- create requests ----------------------------------------------------------------


def test_create_request_defaults(validators: Validators) -> None:
    assert validators.create_request({"query": "why?"}) == CreateRequest(
        query="why?", generator="demo", options={})


def test_create_request_keeps_given_values(validators: Validators) -> None:
    body = {"query": "q", "generator": "demo",
            "options": {"tokens": 5, "tokens_per_second": 2.5, "fail_at_seq": 3}}
    assert validators.create_request(body) == CreateRequest(
        query="q", generator="demo",
        options={"tokens": 5, "tokens_per_second": 2.5, "fail_at_seq": 3})


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"query": "q", "options": {"bogus": 1}}, "/options"),
        ({"query": "q", "options": {"tokens": 0}}, "/options/tokens"),
        ({"query": "q", "options": {"tokens_per_second": 0}}, "/options/tokens_per_second"),
        ({"query": "q", "options": {"fail_at_seq": 0}}, "/options/fail_at_seq"),
        ({"query": "q", "options": []}, "/options"),
        ({"query": ""}, "/query"),
        ({"query": 5}, "/query"),
        ({"query": "q", "generator": "Demo"}, "/generator"),
        ({}, ""),
        ([], ""),
    ],
)
def test_create_request_errors_point_at_the_failing_field(
        validators: Validators, body: Any, pointer: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validators.create_request(body)
    assert info.value.pointer == pointer
    resolve(body, pointer)


def test_unknown_option_key_is_named(validators: Validators) -> None:
    with pytest.raises(InvalidInput) as info:
        validators.create_request({"query": "q", "options": {"tokenz": 3}})
    assert info.value.pointer == "/options"
    assert "tokenz" in info.value.reason


# --- talking back: the input control record and the interactive generator's events -------


def test_an_input_record_is_valid_and_parses_back(validators: Validators) -> None:
    record = InputRecord(stream_id="s3-abc", input_id="0" * 32, data={"answer": "speed"},
                         tenant="acme", sub="alice", ts=1_795_557_395_923)
    validators.check("input_record", orjson.loads(record.to_json()))
    assert parse_job_record(record.to_json()) == record


@pytest.mark.parametrize("change", [{"input_id": "not hex"}, {"data": [1]}, {"ts": -1},
                                    {"extra": 1}, {"type": "cancel"}])
def test_the_input_record_schema_refuses_bad_records(
        validators: Validators, change: dict[str, Any]) -> None:
    record = orjson.loads(InputRecord(stream_id="s3-abc", input_id="0" * 32, data={},
                                      tenant="", sub="", ts=0).to_json())
    with pytest.raises(InvalidInput):
        validators.check("input_record", {**record, **change})


def test_a_job_record_carries_its_query_vector_and_reads_records_without_one() -> None:
    vector = np.arange(DIM, dtype="<f4") / DIM
    job = dataclasses.replace(demo_job(), query_model=MODEL_ID,
                              query_vector=vector.tobytes())
    back = parse_job_record(job.to_json())
    assert back == job
    assert isinstance(back, Job)
    given = QueryCache.given(back)
    assert given is not None and np.array_equal(given, vector)
    # A record of before (no vector), a malformed one, another model's: embedded anew.
    plain = orjson.loads(job.to_json())
    del plain["query_vector"]
    old = parse_job_record(orjson.dumps(plain))
    assert isinstance(old, Job) and old == demo_job() and QueryCache.given(old) is None
    for bad in ({"model": MODEL_ID, "f32le": "not base64!"}, {"model": MODEL_ID},
                {"model": MODEL_ID, "f32le": base64.b64encode(b"abc").decode()}):
        parsed = parse_job_record(orjson.dumps({**plain, "query_vector": bad}))
        assert isinstance(parsed, Job) and parsed.query_vector == b"", bad
    other = dataclasses.replace(job, query_model="another-model")
    assert QueryCache.given(other) is None
    short = dataclasses.replace(job, query_vector=vector[:10].tobytes())
    assert QueryCache.given(short) is None


def test_a_job_record_parser_drops_an_input_record_without_an_object() -> None:
    assert parse_job_record(b'{"type": "input", "stream_id": "s", "input_id": "i", '
                            b'"data": [1]}') is None
    assert parse_job_record(b'{"type": "input", "stream_id": "s"}') is None


async def test_every_interactive_event_passes_the_publish_validator(
        validators: Validators) -> None:
    job = demo_job()
    inputs = Inputs([{"answer": "cost"}])
    drafts = [d async for d in InteractiveGenerator().events(job, 1, inputs)]
    assert drafts[-1].type == events.RESULT
    for draft in drafts:
        validators.publish_request({"type": draft.type, "data": draft.data})
