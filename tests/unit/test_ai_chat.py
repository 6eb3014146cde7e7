"""The AI SDK chat routes' pieces without a gateway: how Tidemark events become UI message
chunks (the chunk types and fields of ai 7's ``uiMessageChunkSchema``), which turns of a
chat become the query and the history, and whose chat a chat id names."""

from __future__ import annotations

import warnings
from typing import Any

import orjson
import pytest

from gateway.ai_chat import UIMessageTransport, chat_key, turns
from gateway.auth import Identity
from gateway.items import Item
from gateway.problems import Problem


def item(kind: str, data: dict[str, Any], event_id: str | None = "e1") -> Item:
    return Item(event_id, kind, orjson.dumps({"stream": "s", "seq": 1, "type": kind,
                                              "ts": 0, "data": data}))


def chunks(transport: UIMessageTransport, *items: Item) -> list[Any]:
    out = []
    for i in items:
        for raw in transport.parts(i):
            assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
            body = raw[6:-2]
            out.append("[DONE]" if body == b"[DONE]" else orjson.loads(body))
    return out


def test_an_answer_becomes_one_text_part_then_finish_and_done() -> None:
    t = UIMessageTransport()
    got = chunks(t, item("status", {"state": "running"}), item("metadata", {"model": "m"}),
                 item("partial_result", {"chunk": "Hel", "chunkIndex": 0}),
                 item("partial_result", {"chunk": "lo", "chunkIndex": 1}),
                 item("result", {"text": "Hello", "finishReason": "content_filter"}, "e9"))
    assert got == [
        {"type": "data-status", "id": "status", "data": {"state": "running"}},
        {"type": "message-metadata", "messageMetadata": {"model": "m"}},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "Hel"},
        {"type": "text-delta", "id": "text-0", "delta": "lo"},
        {"type": "text-end", "id": "text-0"},
        {"type": "finish", "finishReason": "content-filter",
         "messageMetadata": {"lastEventId": "e9"}},
        "[DONE]"]


def test_a_result_without_partial_results_is_its_text() -> None:
    got = chunks(UIMessageTransport(), item("result", {"text": "whole", "finishReason": "x"}))
    assert [c if isinstance(c, str) else c["type"] for c in got] == [
        "text-start", "text-delta", "text-end", "finish", "[DONE]"]
    assert got[1]["delta"] == "whole" and got[3]["finishReason"] == "other"


def test_error_and_cancelled_close_the_text_and_say_so() -> None:
    t = UIMessageTransport()
    got = chunks(t, item("partial_result", {"chunk": "a"}),
                 item("error", {"code": "generation_interrupted", "message": "ask again",
                                "retryable": True}, "e5"))
    assert got[2:] == [
        {"type": "text-end", "id": "text-0"},
        {"type": "error", "errorText": "generation_interrupted: ask again"},
        {"type": "finish", "finishReason": "error",
         "messageMetadata": {"lastEventId": "e5", "retryable": True}}, "[DONE]"]
    got = chunks(UIMessageTransport(), item("cancelled", {"reason": "stop"}, "e7"))
    assert got == [{"type": "abort", "reason": "stop"},
                   {"type": "finish", "finishReason": "other",
                    "messageMetadata": {"lastEventId": "e7", "cancelled": True}}, "[DONE]"]


def test_other_events_are_data_parts_and_a_reset_is_transient() -> None:
    got = chunks(UIMessageTransport(), item("input", {"text": "yes"}, "e3"),
                 item("progress", {"percentage": 50}),
                 Item(None, "reset", b'{"reason":"retention","earliest":"x"}'))
    assert got == [{"type": "data-input", "id": "e3", "data": {"text": "yes"}},
                   {"type": "data-progress", "id": "progress", "data": {"percentage": 50}},
                   {"type": "data-reset", "data": {"reason": "retention", "earliest": "x"},
                    "transient": True}]


def ui(role: str, *texts: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "step-start"},
                                    *({"type": "text", "text": t} for t in texts)]}


def test_the_last_user_message_is_the_query_and_earlier_turns_the_history() -> None:
    query, history = turns([ui("system", "be brief"), ui("user", "hi"),
                            ui("assistant"), ui("assistant", "hello", " there"),
                            ui("user", "how ", "are you")])
    assert query == "how are you"
    assert history == [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "hello there"}]
    for bad in ([ui("assistant", "hi")], [ui("user", "  ")], [ui("user")]):
        # (aiohttp deprecates the body argument that Problem passes to HTTPException.)
        with pytest.raises(Problem) as exc, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            turns(bad)
        assert exc.value.status_code == 422


def test_a_chat_id_names_only_the_callers_own_chat() -> None:
    def who(sub: str, tenant: str = "t1") -> Identity:
        return Identity(sub=sub, tenant=tenant, scopes=frozenset(), tier="free")

    key = chat_key("default", who("ann"), "c1")
    assert key.startswith("ai-chat:") and key == chat_key("default", who("ann"), "c1")
    assert len({key, chat_key("default", who("bob"), "c1"),
                chat_key("default", who("ann", "t2"), "c1"),
                chat_key("other", who("ann"), "c1"),
                chat_key("default", who("ann"), "c2")}) == 5
