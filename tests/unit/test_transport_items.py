"""The transport-neutral items: SSE frames decoded into (id, event, envelope) and
rendered as the WebSocket's and long-poll's JSON, byte for byte; close reasons bounded."""

from __future__ import annotations

import orjson

from gateway import items, sse
from gateway.poll import PollTransport
from gateway.streaming import CUT_OFF_REASON, reset_frame
from gateway.ws import MAX_REASON, reason_bytes

ENVELOPE = orjson.dumps({"stream": "s3-x", "seq": 7, "type": "partial_result", "ts": 1,
                         "data": {"chunk": "h\u00e9 \"q\"\n", "chunkIndex": 6}})


def test_a_frame_decodes_to_its_id_type_and_exact_envelope_bytes() -> None:
    frame = sse.frame_event(ENVELOPE, event="partial_result", id="1-abcdef01-0-42")
    assert list(items.decode(frame)) == [items.Item("1-abcdef01-0-42", "partial_result",
                                                    ENVELOPE)]


def test_retry_lines_are_dropped_and_comments_kept_in_order() -> None:
    data = (sse.frame_retry(500) + reset_frame("epoch", "1-abcdef01-0-3") + sse.PING
            + sse.frame_event(ENVELOPE, event="result", id="1-abcdef01-0-4") + CUT_OFF_REASON)
    decoded = list(items.decode(data))
    assert decoded[0] == items.Item(None, "reset", b'{"reason":"epoch","earliest":'
                                                   b'"1-abcdef01-0-3"}')
    assert decoded[1] == items.Comment("ping") and not decoded[1].closing
    assert isinstance(decoded[2], items.Item) and decoded[2].terminal
    assert isinstance(decoded[3], items.Comment) and decoded[3].closing


def test_render_embeds_the_envelope_bytes_as_the_data_object() -> None:
    rendered = items.render(items.Item("1-abcdef01-0-42", "partial_result", ENVELOPE))
    assert rendered == b'{"id":"1-abcdef01-0-42","event":"partial_result","data":' + \
        ENVELOPE + b"}"
    assert orjson.loads(rendered)["data"] == orjson.loads(ENVELOPE)
    assert items.render(items.Item(None, "reset", b"{}")) == \
        b'{"id":null,"event":"reset","data":{}}'


def test_close_reasons_are_cut_to_123_bytes_on_a_character_boundary() -> None:
    assert reason_bytes("short") == b"short"
    cut = reason_bytes("\u00e9" * 100)  # 200 bytes of two-byte characters
    assert len(cut) <= MAX_REASON and cut.decode() == "\u00e9" * 61


def test_a_poll_body_is_the_items_as_the_websocket_renders_them() -> None:
    transport = PollTransport(wait_s=0, max_events=10, max_bytes=1 << 20)
    transport.items = [items.Item("1-abcdef01-0-4", "result", ENVELOPE)]
    transport.ended = True
    body = transport.body("1-abcdef01-0-3")
    assert body == (b'{"events":[' + items.render(transport.items[0])
                    + b'],"last_event_id":"1-abcdef01-0-4","ended":true}')
    empty = PollTransport(wait_s=0, max_events=10, max_bytes=1 << 20)
    assert orjson.loads(empty.body("1-abcdef01-0-3")) == {
        "events": [], "last_event_id": "1-abcdef01-0-3", "ended": False}
    assert orjson.loads(empty.body(None))["last_event_id"] is None
