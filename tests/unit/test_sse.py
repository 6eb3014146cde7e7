"""SSE framing, byte for byte, and read back by an independent WHATWG-style parser."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson
import pytest

from gateway import sse

# --- exact bytes -------------------------------------------------------------------


def test_event_with_id_event_and_one_line_data() -> None:
    frame = sse.frame_event(b'{"seq":3}', event="progress", id="1-5f3a9c21-7-48213")
    assert frame == b'id: 1-5f3a9c21-7-48213\nevent: progress\ndata: {"seq":3}\n\n'


def test_event_with_data_only() -> None:
    assert sse.frame_event(b"hello") == b"data: hello\n\n"


@pytest.mark.parametrize(
    "data",
    [b"one\ntwo\nthree", b"one\r\ntwo\r\nthree", b"one\rtwo\rthree", b"one\r\ntwo\rthree"],
    ids=["lf", "crlf", "cr", "mixed"],
)
def test_multi_line_data_is_one_data_line_per_line(data: bytes) -> None:
    assert sse.frame_event(data, event="x") == (
        b"event: x\ndata: one\ndata: two\ndata: three\n\n"
    )


def test_trailing_line_break_keeps_an_empty_last_line() -> None:
    assert sse.frame_event(b"a\n") == b"data: a\ndata: \n\n"


def test_empty_data() -> None:
    assert sse.frame_event(b"") == b"data: \n\n"
    assert sse.frame_event(b"", event="status", id="7") == b"id: 7\nevent: status\ndata: \n\n"


def test_comment() -> None:
    assert sse.frame_comment("ping") == b": ping\n\n"
    assert sse.PING == b": ping\n\n"


def test_empty_comment_is_a_bare_colon() -> None:
    assert sse.frame_comment() == b":\n\n"


@pytest.mark.parametrize("text", ["first\nsecond", "first\r\nsecond", "first\rsecond"])
def test_multi_line_comment_is_one_comment_line_per_line(text: str) -> None:
    assert sse.frame_comment(text) == b": first\n: second\n\n"


@pytest.mark.parametrize("ms", [0, 500, 2000, 86_400_000])
def test_retry(ms: int) -> None:
    assert sse.frame_retry(ms) == f"retry: {ms}\n\n".encode()


def test_negative_retry_is_rejected() -> None:
    with pytest.raises(ValueError):
        sse.frame_retry(-1)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "a\x00b", "\n", "x\n\ndata: injected"])
@pytest.mark.parametrize("name", ["id", "event"])
def test_cr_lf_nul_in_id_or_event_name_is_rejected(name: str, bad: str) -> None:
    with pytest.raises(ValueError):
        sse.frame_event(b"{}", **{name: bad})


def test_unicode_id_and_event_are_utf8() -> None:
    assert sse.frame_event(b"d", event="caf\u00e9", id="\u00e9") == (
        "id: \u00e9\nevent: caf\u00e9\ndata: d\n\n".encode()
    )


# --- an independent parser (WHATWG HTML, "Parsing an event stream") -----------------


@dataclass
class Message:
    type: str
    data: str
    last_event_id: str


@dataclass
class Parsed:
    messages: list[Message] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None


def parse_event_stream(raw: bytes) -> Parsed:
    text = raw.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split("\r\n|\r|\n", text)
    out = Parsed()
    data_buffer = ""
    event_type = ""
    last_event_id = ""
    # The text after the last line break is an incomplete line and is not processed.
    for line in lines[:-1]:
        if line == "":
            if data_buffer == "":
                event_type = ""
                continue
            data = data_buffer[:-1] if data_buffer.endswith("\n") else data_buffer
            out.messages.append(Message(event_type or "message", data, last_event_id))
            data_buffer, event_type = "", ""
            continue
        if line.startswith(":"):
            out.comments.append(line[1:].removeprefix(" "))
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data_buffer += value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id":
            if "\x00" not in value:
                last_event_id = value
        elif name == "retry":
            if re.fullmatch("[0-9]+", value):
                out.retry = int(value)
    return out


def _normalize_breaks(text: str) -> str:
    return re.sub("\r\n|\r", "\n", text)


PAYLOADS = [
    "plain",
    "",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "colon: inside: data",
    "data: looks like a field",
    "unicode: h\u00e9llo w\u00f6rld \u6f22\u5b57 \U0001f30a",
    "line one\nline two",
    "crlf one\r\ntwo\r\nthree",
    "cr one\rtwo",
    "\n",
    "\n\n",
    "ends with newline\n",
    "\nstarts with newline",
    "blank\n\nline in the middle",
    ": not a comment when inside data\n: still data",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_data_round_trips_through_a_whatwg_parser(payload: str) -> None:
    frame = sse.frame_event(payload.encode(), event="partial_result", id="1-00000000-0-9")
    parsed = parse_event_stream(frame)
    assert parsed.messages == [
        Message("partial_result", _normalize_breaks(payload), "1-00000000-0-9")
    ]


JSON_VALUES = [
    {"stream": "s1", "seq": 0, "type": "status", "ts": 1, "data": {"state": "queued"}},
    {"chunk": "line\nbreak\r\nand\rcr", "chunkIndex": 3, "isComplete": False},
    {"text": "h\u00e9llo \u6f22\u5b57 \U0001f30a \u2028\u2029 \x00 \t"},
    {"nested": {"list": [1, 2.5, None, True, "x"]}, "empty": {}},
    ["a", {"b": "c"}],
    "just a string",
]


@pytest.mark.parametrize("value", JSON_VALUES)
def test_orjson_payload_round_trips_as_one_data_line(value: object) -> None:
    payload = orjson.dumps(value)
    frame = sse.frame_event(payload, event="result", id="1-abcdef01-2-3")
    assert frame.count(b"data: ") == 1
    (message,) = parse_event_stream(frame).messages
    assert message.data.encode() == payload
    assert orjson.loads(message.data) == value


def test_a_whole_response_parses_back_in_order() -> None:
    envelopes = [
        {"stream": "s", "seq": n, "type": t, "ts": n, "data": {"n": n}}
        for n, t in enumerate(["status", "progress", "partial_result", "result"])
    ]
    body = sse.frame_retry(2000) + sse.PING
    for n, env in enumerate(envelopes):
        body += sse.frame_event(orjson.dumps(env), event=str(env["type"]), id=f"1-0a0b0c0d-1-{n}")
        body += sse.frame_comment("ping")
    parsed = parse_event_stream(body)
    assert parsed.retry == 2000
    assert parsed.comments == ["ping"] * 5
    assert [m.type for m in parsed.messages] == ["status", "progress", "partial_result", "result"]
    assert [m.last_event_id for m in parsed.messages] == [f"1-0a0b0c0d-1-{n}" for n in range(4)]
    assert [orjson.loads(m.data) for m in parsed.messages] == envelopes


def test_comments_produce_no_message() -> None:
    parsed = parse_event_stream(sse.frame_comment("a\nb") + sse.PING + sse.frame_comment())
    assert parsed.messages == []
    assert parsed.comments == ["a", "b", "ping", ""]


def test_event_without_id_keeps_the_previous_last_event_id() -> None:
    body = sse.frame_event(b"1", id="first") + sse.frame_event(b"2", event="reset")
    parsed = parse_event_stream(body)
    assert [(m.type, m.data, m.last_event_id) for m in parsed.messages] == [
        ("message", "1", "first"),
        ("reset", "2", "first"),
    ]
