"""Talking back, checked from outside: a client's input goes into its stream's log as an
``input`` event (over HTTP or the WebSocket), in order, with an id like any other event,
and every follower on every transport sees it; ``{"op": "cancel"}`` on the WebSocket
ends the stream like the cancel route. Refusals are the publish route's problems.
Input to worker-generated streams: tests/e2e/test_interactive.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest

from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_streams import create, publish
from tests.procs import auth_headers

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture(scope="module")
def base(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cluster = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("talkback"))
    try:
        yield asyncio.run(cluster.gateway(TIDEMARK_INPUT_MAX_BYTES="1024"))
    finally:
        cluster.stop()


async def post_input(http: aiohttp.ClientSession, base: str, sid: str, body: object,
                     ) -> tuple[int, dict[str, object]]:
    async with http.post(f"{base}/v1/streams/{sid}/input", json=body) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_an_input_is_an_event_of_the_log_seen_on_every_transport(
        base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, generator="external")
    await publish(http, base, sid, {"type": "status", "data": {"state": "asking"}})
    status, written = await post_input(http, base, sid, {"data": {"approved": True}})
    assert status == 200, written
    assert written["seq"] == 2
    await publish(http, base, sid, {"type": "result", "data": {"text": "thanks"}})

    outcomes = await tc.read_all(http, base, sid)
    items = outcomes["sse"].items
    assert outcomes["ws"].items == outcomes["poll"].items == items
    assert [i[1] for i in items] == ["status", "status", "input", "result"]
    _, _, data = items[2]
    assert items[2][0] == written["id"]
    envelope = json.loads(data)
    assert (envelope["seq"], envelope["type"], envelope["data"]) == (2, "input",
                                                                     {"approved": True})


async def test_websocket_input_and_cancel_ops(base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, generator="external")
    async with http.ws_connect(tc.url_of(base, sid, "ws")) as ws:
        first = await ws.receive_json()
        assert first["event"] == "status"
        await ws.send_json({"op": "input", "data": {"answer": 42}})
        got = [await ws.receive_json(), await ws.receive_json()]
        ack = next(m for m in got if "op" in m)
        event = next(m for m in got if "op" not in m)
        assert ack == {"op": "ack", "of": "input", "seq": 1, "id": event["id"]}
        assert event["event"] == "input" and event["data"]["data"] == {"answer": 42}

        # Refused ops are answered in a frame of their own; the stream goes on.
        for message, status in ((b"not json", 400), (b'{"op": "sing"}', 400),
                                (b'{"op": "input", "data": [1]}', 422),
                                (b'{"op": "input", "data": {"x": "' + b"y" * 2000 + b'"}}',
                                 413)):
            await ws.send_str(message.decode())
            refusal = await ws.receive_json()
            assert refusal["op"] == "error" and refusal["status"] == status, refusal
            assert refusal["detail"]

        await ws.send_json({"op": "cancel"})
        rest = []
        while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            rest.append(json.loads(msg.data))
        # The stream ends with cancelled and the socket closes 1000 (the ack comes first
        # unless the stream's end did).
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1000
        assert [m["event"] for m in rest if "op" not in m] == ["cancelled"]
        assert all(m == {"op": "ack", "of": "cancel", "stream_id": sid,
                         "status": "cancelling"} for m in rest if "op" in m)


async def test_a_read_only_websocket_may_not_talk_back(
        base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, generator="external")
    async with aiohttp.ClientSession(headers=auth_headers(scope="streams:read")) as reader:
        async with reader.ws_connect(tc.url_of(base, sid, "ws")) as ws:
            assert (await ws.receive_json())["event"] == "status"
            for op in ({"op": "input", "data": {}}, {"op": "cancel"}):
                await ws.send_json(op)
                refusal = await ws.receive_json()
                assert (refusal["op"], refusal["status"]) == ("error", 403), refusal


async def test_input_refusals_are_the_publish_routes_problems(
        base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, generator="external")
    queued = await create(http, base)  # a demo stream no worker runs here: queued
    cases: list[tuple[aiohttp.ClientSession, str, object, int]] = [
        (http, queued, {"data": {}}, 409),
        (http, sid, {"data": "text"}, 422),
        (http, sid, {"data": {}, "extra": 1}, 422),
        (http, sid, {}, 422),
        (http, sid, {"data": {"x": "y" * 2000}}, 413),
        (http, "0" * 32, {"data": {}}, 404),
    ]
    async with aiohttp.ClientSession(headers=auth_headers(scope="streams:read")) as reader, \
            aiohttp.ClientSession(headers=auth_headers(sub="mallory", tenant="evil")) as other, \
            aiohttp.ClientSession() as anonymous:
        cases += [(reader, sid, {"data": {}}, 403), (other, sid, {"data": {}}, 404),
                  (anonymous, sid, {"data": {}}, 401)]
        for session, stream, body, want in cases:
            status, problem = await post_input(session, base, stream, body)
            assert status == want, (stream, body, problem)
            assert problem["detail"]
    # Nothing of that reached the stream.
    await publish(http, base, sid, {"type": "result", "data": {"text": "t"}})
    assert [i[1] for i in (await tc.read(http, base, sid, "sse")).items] == ["status", "result"]


async def test_a_websocket_message_over_the_limit_closes_1009(
        base: str, http: aiohttp.ClientSession) -> None:
    sid = await create(http, base, generator="external")
    async with http.ws_connect(tc.url_of(base, sid, "ws")) as ws:
        assert (await ws.receive_json())["event"] == "status"
        # TIDEMARK_INPUT_MAX_BYTES=1024 here: a message may be 1 KiB more than that.
        await ws.send_str(json.dumps({"op": "input", "data": {"x": "y" * 3000}}))
        closed = await ws.receive()
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1009, closed
