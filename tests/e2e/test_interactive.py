"""Talking back to a worker-generated stream, checked from outside: the ``interactive``
generator asks a question mid-answer, the client's input (HTTP or the WebSocket op) goes
into the stream's log as an ``input`` event that every follower sees, and the answer
continues with the reply. A worker SIGKILLed around an input: the next owner writes
every input exactly once and continues correctly, also with an input sent while no
worker owned the stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext

from tests import sse_client
from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_dashboard import browser, open_page
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.e2e.test_talkback import post_input
from tests.procs import token
from tests.sse_client import Event
from workers.interactive import QUESTION, interactive_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["browser"]  # the fixture, from the dashboard's tests

QUERY = "how do tides work?"


@pytest.fixture(scope="module")
def base(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("interactive"))
    try:
        cluster.worker()
        yield asyncio.run(cluster.gateway(TIDEMARK_INPUT_WAIT_SECONDS="20"))
    finally:
        cluster.stop()


def asked(events: list[Event]) -> bool:
    return any(e.event == "status" and e.envelope["data"]["state"] == "waiting_for_input"
               for e in events)


async def until_asked(seen: list[Event], reader: asyncio.Task[Any], timeout: float = 30,
                      ) -> None:
    for _ in range(int(timeout / 0.05)):
        if asked(seen):
            return
        if reader.done():
            raise AssertionError(f"the read ended before the question: {reader.result()}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"no question in {timeout}s: {[e.event for e in seen]}")


def follow(http: aiohttp.ClientSession, base: str, sid: str, seen: list[Event],
           ) -> asyncio.Task[sse_client.Reply]:
    return asyncio.create_task(sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                               sink=seen, idle_timeout=60))


def inputs_of(events: list[Event]) -> list[Event]:
    return [e for e in events if e.event == "input"]


async def test_the_question_the_reply_and_an_answer_that_continues_with_it(
        base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, query=QUERY, generator="interactive",
                       options={"tokens": 10, "tokens_per_second": 50})
    seen: list[Event] = []
    reader = follow(http, base, sid, seen)
    # A WebSocket follower from the start, beside the SSE one.
    ws_reader = asyncio.create_task(tc.read(http, base, sid, "ws", timeout=60))
    await until_asked(seen, reader)
    question = next(e for e in seen if e.event == "status"
                    and e.envelope["data"]["state"] == "waiting_for_input")
    assert question.envelope["data"]["message"] == QUESTION
    assert question.envelope["data"]["input"]["field"] == "answer"

    status, written = await post_input(http, base, sid, {"data": {"answer": "safety"}})
    assert status == 200, written
    assert set(written) == {"seq", "id"}
    reply = await reader
    assert reply.ended_by_server
    events = reply.stream_events
    assert_contiguous(events)
    [got] = inputs_of(events)
    assert (got.id, got.seq, got.envelope["data"]) == (written["id"], written["seq"],
                                                       {"answer": "safety"})
    assert got.seq == question.seq + 1
    result = events[-1]
    assert result.event == "result"
    assert result.envelope["data"]["reply"] == "safety"
    assert result.envelope["data"]["text"] == joined_chunks(events) == \
        interactive_text(QUERY, 10, "safety")
    # Every follower saw the same events, the input among them, with the same ids.
    ws = await ws_reader
    assert [(i[0], i[1]) for i in ws.stream_items] == [(e.id, e.event) for e in events]
    outcomes = await tc.read_all(http, base, sid)
    assert outcomes["sse"].items == outcomes["ws"].items == outcomes["poll"].items
    assert [i[0] for i in outcomes["sse"].items] == [e.id for e in events]

    # The stream has ended: no more input (409), nothing written.
    status, problem = await post_input(http, base, sid, {"data": {"answer": "cost"}})
    assert status == 409 and "ended" in str(problem["detail"]), problem


async def test_input_over_the_websocket_op(base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, query=QUERY, generator="interactive",
                       options={"tokens": 6, "tokens_per_second": 50})
    frames: list[dict[str, Any]] = []
    async with http.ws_connect(tc.url_of(base, sid, "ws")) as ws:
        while not any(f.get("event") == "status"
                      and f["data"]["data"]["state"] == "waiting_for_input" for f in frames):
            frames.append(await asyncio.wait_for(ws.receive_json(), 30))
        await ws.send_json({"op": "input", "data": {"answer": "cost"}})
        while (msg := await asyncio.wait_for(ws.receive(), 30)).type is aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1000
    [ack] = [f for f in frames if "op" in f]
    [event] = [f for f in frames if f.get("event") == "input"]
    assert ack == {"op": "ack", "of": "input", "seq": event["data"]["seq"], "id": event["id"]}
    assert event["data"]["data"] == {"answer": "cost"}
    assert frames[-1]["event"] == "result"
    assert frames[-1]["data"]["data"]["text"] == interactive_text(QUERY, 6, "cost")


async def test_a_demo_stream_takes_input_at_once_between_slow_tokens(
        base: str, http: aiohttp.ClientSession) -> None:
    """A generator that does not read input: its worker still writes the input into the
    stream at once (not at the next token, 5 s away); the generator goes on as before."""
    sid = await create(http, base, options={"tokens": 3, "tokens_per_second": 0.2})
    # Running (its status running came): a queued stream takes no input.
    await sse_client.read(http, f"{base}/v1/streams/{sid}/events", max_events=2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    status, written = await post_input(http, base, sid, {"data": {"note": "hi"}})
    assert status == 200, written
    assert loop.time() - began < 4
    async with http.post(f"{base}/v1/streams/{sid}/cancel") as resp:
        assert resp.status == 202
    events = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events")).stream_events
    assert_contiguous(events)
    [got] = inputs_of(events)
    assert (got.id, got.seq, got.envelope["data"]) == (written["id"], written["seq"],
                                                       {"note": "hi"})
    assert events[-1].event == "cancelled"


async def test_input_refusals_for_generated_streams(
        base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, query=QUERY, generator="interactive",
                       options={"tokens": 4, "tokens_per_second": 50, "reply_timeout_s": 1})
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events", idle_timeout=30)
    # No reply within reply_timeout_s: the stream ends with input_timeout.
    last = reply.stream_events[-1]
    assert (last.event, last.envelope["data"]["code"]) == ("error", "input_timeout")
    assert asked(reply.stream_events) and not inputs_of(reply.stream_events)
    status, problem = await post_input(http, base, sid, {"data": {"answer": "late"}})
    assert status == 409, problem
    cancelled = await create(http, base, query=QUERY, generator="interactive",
                             options={"tokens": 4, "tokens_per_second": 50})
    async with http.post(f"{base}/v1/streams/{cancelled}/cancel") as resp:
        assert resp.status in (200, 202)
    await sse_client.read(http, f"{base}/v1/streams/{cancelled}/events", idle_timeout=30)
    status, problem = await post_input(http, base, cancelled, {"data": {"answer": "x"}})
    assert status == 409, problem


async def test_the_demo_page_asks_and_sends_the_reply(
        base: str, browser: BrowserContext) -> None:
    """The demo page (headless Chromium): choose interactive, the question shows an
    answer box with its choices, the reply is POSTed and the answer continues with it."""
    watched = await open_page(browser, f"{base}/?token={token()}")
    page = watched.page
    await page.fill("#query", QUERY)
    await page.fill("#tokens", "6")
    await page.fill("#tps", "20")
    await page.select_option("#generator", "interactive")
    await page.click("#ask")
    await page.wait_for_selector("#reply-form:not([hidden])", timeout=30_000)
    assert await page.text_content("#reply-question") == QUESTION
    await page.click("#reply-choices button:text-is('speed')")
    await page.click("#reply-send")
    await page.wait_for_selector("#badge[data-state=completed]", timeout=30_000)
    assert await page.text_content("#answer") == interactive_text(QUERY, 6, "speed")
    assert await page.text_content("#replied") == "Reply: speed"
    assert await page.is_hidden("#reply-form")
    assert await page.is_hidden("#error")
    assert watched.errors == []


async def test_a_takeover_writes_every_input_exactly_once(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    first = cluster.worker()
    base = await cluster.gateway(TIDEMARK_INPUT_WAIT_SECONDS="60")
    options = {"tokens": 40, "tokens_per_second": 10, "reply_timeout_s": 120}
    # Written by the first worker, which dies while the answer continues with it.
    answered = await create(http, base, query=QUERY, generator="interactive", options=options)
    # Sent while no worker owns the stream: the next owner takes it.
    orphan = await create(http, base, query="and currents?", generator="interactive",
                          options=options)
    seen: dict[str, list[Event]] = {answered: [], orphan: []}
    readers = {sid: follow(http, base, sid, sink) for sid, sink in seen.items()}
    for sid in seen:
        await until_asked(seen[sid], readers[sid])
    status, written = await post_input(http, base, answered, {"data": {"answer": "speed"}})
    assert status == 200, written
    await sse_client.wait_for(seen[answered], len(seen[answered]) + 3, readers[answered])
    first.kill()
    late = asyncio.create_task(post_input(http, base, orphan, {"data": {"answer": "cost"}}))
    await asyncio.sleep(1)
    assert not late.done(), "answered while no worker owned the stream"
    cluster.worker()
    status, late_written = await late
    assert status == 200, late_written

    for sid, answer, query in ((answered, "speed", QUERY), (orphan, "cost", "and currents?")):
        await readers[sid]
        events = seen[sid]
        assert_contiguous(events)
        [got] = inputs_of(events)
        assert got.envelope["data"] == {"answer": answer}
        assert events[-1].event == "result", [e.event for e in events[-3:]]
        assert events[-1].envelope["data"]["reply"] == answer
        assert events[-1].envelope["data"]["text"] == interactive_text(query, 40, answer)
        assert sum(asked([e]) for e in events) == 1
        # A fresh read agrees: nothing of an aborted transaction, no input twice.
        again = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events")).stream_events
        assert [e.id for e in again] == [e.id for e in events]
    assert (got.id, got.seq) == (late_written["id"], late_written["seq"])
