"""AI SDK frontends through Tidemark: the real ``ai`` package's client-side Chat and
DefaultChatTransport (tests/ai_sdk/chat.mjs, in Node) against two real gateways behind
HAProxy. An answer is asked, its gateway SIGKILLed mid-answer, the chat resumed (the
whole message, each part once), resumed again after the end from a fresh chat (the
finished answer, from the log), a chat without an answer resumes nothing (204), and a
stop cancels the answer's stream."""

from __future__ import annotations

import json
import signal
from typing import Any

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.procs import REPO, Proc, run_node, start_haproxy, token
from workers.demo import demo_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCRIPT = REPO / "tests" / "ai_sdk" / "chat.mjs"
QUERY = "how do resumable chats survive a gateway crash"
TOKENS = 60


def texts(message: dict[str, Any]) -> list[str]:
    return [p["text"] for p in message["parts"] if p["type"] == "text"]


async def test_a_chat_resumes_through_a_gateway_kill_and_after_the_end(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    gateways = [await cluster.gateway(), await cluster.gateway()]
    haproxy, lb = start_haproxy(gateways, cluster.logdir)
    cluster.procs.append(haproxy)
    procs: dict[str, Proc] = {url: cluster.proc(f"gateway{i}") for i, url in enumerate(gateways)}
    killed: list[str] = []

    async def serving() -> str | None:
        """The gateway whose hub has a subscriber: the one answering the chat."""
        for url in gateways:
            async with http.get(f"{url}/readyz") as resp:
                if resp.status == 200 and (await resp.json())["subscribers"] > 0:
                    return url
        return None

    async def on_line(line: dict[str, Any]) -> None:
        if killed or line["step"] != "text" or line["chat"] != "chat-kill" or \
                line["length"] < 20:
            return
        url = await serving()
        if url is not None:
            procs[url].stop(signal.SIGKILL)
            killed.append(url)

    cfg = {"base": lb, "token": token(), "query": QUERY, "chatId": "chat-kill",
           "emptyChatId": "chat-empty", "stopChatId": "chat-stop",
           "options": {"tokens": TOKENS, "tokens_per_second": 15},
           "slowOptions": {"tokens": 400, "tokens_per_second": 10}}
    lines = await run_node(SCRIPT, cfg, timeout=120, on_line=on_line)
    steps = {ln["step"]: ln for ln in lines if ln["step"] != "text"}
    answer = demo_text(QUERY, TOKENS)

    # The first answer broke with its gateway, part way.
    assert killed, "the answer ended before its gateway could be killed"
    sent = steps["sent"]
    assert sent["status"] == "error"
    assert 20 <= len("".join(texts(sent["messages"][-1]))) < len(answer)

    # Resumed through the other gateway: the whole message, once.
    resumed = steps["resumed"]
    assert resumed["status"] == "ready" and resumed["error"] is None
    user, assistant = resumed["messages"]
    assert user["role"] == "user" and texts(user) == [QUERY]
    assert assistant["role"] == "assistant" and texts(assistant) == [answer]
    stream_id = assistant["id"]
    assert assistant["metadata"]["streamId"] == stream_id
    assert resumed["finishes"][-1]["finishReason"] == "stop"
    # The message is the log's answer: the stream's own events, from a gateway alive.
    alive = next(url for url in gateways if url not in killed)
    seen = (await sse_client.read(http, f"{alive}/v1/streams/{stream_id}/events"))
    assert seen.stream_events[-1].event == "result"
    assert seen.stream_events[-1].envelope["data"]["text"] == answer

    # After the end, a fresh chat (a reloaded page) gets the finished answer from the log.
    late = steps["late"]
    assert late["status"] == "ready"
    assert [m["role"] for m in late["messages"]] == ["user", "assistant"]
    assert late["messages"][1]["id"] == stream_id and texts(late["messages"][1]) == [answer]

    # A chat that never asked: nothing to resume.
    assert steps["none"]["status"] == "ready" and steps["none"]["messages"] == []

    # Stop: the stop route cancels the answer's stream, which ends with `cancelled`.
    stopped = steps["stopped"]
    assert stopped["stopStatus"] == 202 and stopped["stopAnswer"]["status"] == "cancelling"
    stop_id = stopped["stopAnswer"]["stream_id"]
    assert stopped["messages"][-1]["id"] == stop_id
    assert stopped["finishes"][-1]["finishReason"] == "other"
    part = "".join(texts(stopped["messages"][-1]))
    assert part and demo_text(QUERY, 400).startswith(part)
    ended = await sse_client.read(http, f"{alive}/v1/streams/{stop_id}/events")
    assert ended.stream_events[-1].event == "cancelled"


async def test_the_chat_routes_refuse_bad_input_and_other_users(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway()
    url = f"{base}/v1/ai/chat"
    ask = {"id": "c1", "messages": [{"id": "m1", "role": "user",
                                     "parts": [{"type": "text", "text": "hi"}]}],
           "trigger": "submit-message", "options": {"tokens": 3, "tokens_per_second": 100}}
    async with http.post(url, json=ask) as resp:
        assert resp.status == 200
        assert resp.headers["x-vercel-ai-ui-message-stream"] == "v1"
        body = await resp.text()
    frames = [f.removeprefix("data: ") for f in body.split("\n\n") if f.startswith("data: ")]
    assert frames[-1] == "[DONE]"
    parts = [json.loads(f) for f in frames[:-1]]
    kinds = [p["type"] for p in parts]
    assert kinds[0] == "start" and parts[0]["messageId"].startswith("s3-")
    assert kinds[-1] == "finish" and parts[-1]["finishReason"] == "stop"
    text = [k for k in kinds if k.startswith("text-")]
    assert text == ["text-start", "text-delta", "text-delta", "text-delta", "text-end"]
    assert "".join(p["delta"] for p in parts if p["type"] == "text-delta") == \
        demo_text("hi", 3)
    assert {"data-status", "data-progress", "message-metadata"} <= set(kinds)
    for bad, status in [
            ({**ask, "id": "../x"}, 422),
            ({**ask, "messages": []}, 422),
            ({**ask, "messages": [{"role": "assistant", "parts": [{"type": "text",
                                                                    "text": "hi"}]}]}, 422),
            ({**ask, "generator": "nope"}, 422)]:
        async with http.post(url, json=bad) as resp:
            assert resp.status == status, bad
            assert resp.content_type == "application/problem+json"
    async with http.post(url, data=b"{", headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
    async with http.get(f"{url}/c1/stream") as resp:
        assert resp.status == 200  # the test user's own chat
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{url}/c1/stream") as resp:
            assert resp.status == 401
    other = {"Authorization": f"Bearer {token(sub='someone-else')}"}
    async with http.get(f"{url}/c1/stream", headers=other) as resp:
        assert resp.status == 204  # another user's chat id names no chat of theirs
    async with http.post(f"{url}/c1/stop", headers=other) as resp:
        assert resp.status == 404
    async with http.get(f"{url}/{'x' * 200}/stream") as resp:
        assert resp.status == 400
