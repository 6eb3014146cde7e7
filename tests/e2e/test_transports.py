"""WebSocket and long-poll beside SSE, checked from outside: for every resume case the
SSE tests cover, the three transports give the same events (ids, types, envelope bytes)
in the same order, and the same refusals (an HTTP status on SSE and long-poll, 4000 +
that status as the WebSocket's close code)."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext

from schemas.eventid import encode_event_id, parse_event_id
from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_dashboard import browser  # noqa: F401 (a fixture)
from tests.e2e.test_legacy_ids import write_v1_stream
from tests.e2e.test_positions import delete_before, offset_of
from tests.e2e.test_streams import create, publish
from tests.procs import auth_headers, scrape

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: Small long-poll answers, so that reading a stream pages through several.
POLL_MAX_EVENTS = 4
OTHER_TENANT = {"sub": "mallory", "tenant": "evil"}


@dataclass
class Gateway:
    cluster: Cluster
    base: str


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[Gateway]:
    """One gateway shared by the module's tests (each makes streams of its own)."""
    cluster = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("transports"))
    try:
        base = asyncio.run(cluster.gateway(TIDEMARK_POLL_MAX_EVENTS=str(POLL_MAX_EVENTS)))
        yield Gateway(cluster, base)
    finally:
        cluster.stop()


async def finished(http: aiohttp.ClientSession, base: str, chunks: int = 9) -> str:
    """An external stream: status, ``chunks`` partial results, metadata, result."""
    sid = await create(http, base, generator="external")
    body: list[dict[str, Any]] = [{"type": "status", "data": {"state": "running"}}]
    body += [{"type": "partial_result", "data": {"chunk": f"c{i} ", "chunkIndex": i}}
             for i in range(chunks)]
    body += [{"type": "metadata", "data": {"model": "demo", "é": "ünïcode"}},
             {"type": "result", "data": {"text": "".join(f"c{i} " for i in range(chunks))}}]
    status, reply = await publish(http, base, sid, body)
    assert status == 200, reply
    return sid


def assert_same(outcomes: dict[str, tc.Outcome]) -> list[tc.Item]:
    """The three transports gave identical sequences; return it."""
    sse = outcomes["sse"].items
    for name in ("ws", "poll"):
        assert outcomes[name].items == sse, (name, outcomes[name].items[:3], sse[:3])
    return sse


def expected_code(transport: str, status: int) -> int:
    if transport == "ws":
        return 1000 if status == 204 else 4000 + status
    return status


CASES = ["start", "mid", "mid_by_header", "end", "malformed", "unknown", "epoch",
         "other_tenant", "no_token", "bad_token", "read_token", "other_read_token",
         "legacy_id", "batched"]


@pytest.mark.parametrize("case", CASES)
async def test_every_resume_case_is_the_same_on_sse_websocket_and_long_poll(
        gateway: Gateway, http: aiohttp.ClientSession, case: str) -> None:
    base = gateway.base
    sid = await finished(http, base)
    full = (await tc.read(http, base, sid, "sse")).items
    assert [i[1] for i in full] == ["status", "status", *["partial_result"] * 9, "metadata",
                                    "result"]
    position: str | None = None
    query = ""
    headers: dict[str, str] | None = None
    per_request: dict[str, str] = {}
    want: int | list[tc.Item] = full
    if case == "mid":
        position, want = full[4][0], full[5:]
    elif case == "mid_by_header":
        per_request, want = {"Last-Event-ID": full[4][0] or ""}, full[5:]
    elif case == "end":
        position, want = full[-1][0], 204
    elif case == "malformed":
        position, want = "nonsense", 400
    elif case == "unknown":
        sid, want = "0" * 32, 404
    elif case == "epoch":
        # A version 1 id (no seq) of another topic epoch: reset, then the whole stream.
        real = parse_event_id(full[-1][0] or "")
        position = encode_event_id("0" * 8 if real.epoch != "0" * 8 else "f" * 8,
                                   real.partition, real.offset, None)
    elif case == "other_tenant":
        async with aiohttp.ClientSession(headers=auth_headers(**OTHER_TENANT)) as other:
            sid = await create(other, base, generator="external")
        want = 404
    elif case == "no_token":
        headers, want = {}, 401
    elif case == "bad_token":
        headers, want = {"Authorization": "Bearer not-a-jwt"}, 401
    elif case in ("read_token", "other_read_token"):
        async with http.post(f"{base}/v1/streams", json={"query": "q", "generator": "external"}
                             ) as resp:
            made = await resp.json()
        if case == "read_token":
            sid = made["stream_id"]
            await publish(http, base, sid, {"type": "result", "data": {"text": "t"}})
            full = (await tc.read(http, base, sid, "sse")).items
            want = full
        else:
            want = 403
        query, headers = f"access_token={made['read_token']}", {}
    elif case == "legacy_id":
        sid = await write_v1_stream(gateway.cluster, generator="external", job=False)
        await publish(http, base, sid, [{"type": "partial_result",
                                         "data": {"chunk": "a", "chunkIndex": 0}},
                                        {"type": "result", "data": {"text": "a"}}])
        full = (await tc.read(http, base, sid, "sse")).items
        assert [i[1] for i in full] == ["status", "partial_result", "result"]
        want = full
    elif case == "batched":
        query = "update_frequency=batched"
        want = []  # checked below

    outcomes: dict[str, tc.Outcome] = {}
    async with aiohttp.ClientSession(headers=headers if headers is not None
                                     else auth_headers()) as session:
        for transport in tc.TRANSPORTS:
            outcomes[transport] = await tc.read(session, base, sid, transport,
                                                position=position, query=query,
                                                headers=per_request)
    items = assert_same(outcomes)
    if isinstance(want, int):
        for transport, outcome in outcomes.items():
            assert outcome.code == expected_code(transport, want), (transport, outcome)
            assert outcome.items == []
        # The reason: the problem's detail, the same on every transport (bounded on WS).
        if want != 204:
            detail = outcomes["sse"].reason
            assert detail and outcomes["poll"].reason == detail
            assert detail.encode()[:123].decode(errors="ignore") == outcomes["ws"].reason
        else:
            assert "ended" in outcomes["ws"].reason
        return
    assert outcomes["sse"].code == outcomes["poll"].code == 200
    assert outcomes["ws"].code == 1000
    assert all(o.ended for o in outcomes.values())
    if case == "epoch":
        assert items[0][0] is None and items[0][1] == "reset"
        assert json.loads(items[0][2])["reason"] == "epoch"
        assert items[1:] == full
    elif case == "batched":
        assert len(items) < len(full)
        assert [i for i in items if i[1] != "partial_result"] == \
            [i for i in full if i[1] != "partial_result"]
        assert "".join(json.loads(i[2])["data"]["chunk"] for i in items
                       if i[1] == "partial_result") == "".join(f"c{i} " for i in range(9))
    else:
        assert items == want
    # Long-poll paged through answers of at most POLL_MAX_EVENTS events.
    assert outcomes["poll"].answers >= -(-len(outcomes["poll"].stream_items) // POLL_MAX_EVENTS)


async def test_retention_reset_and_a_deleted_stream_are_the_same_on_every_transport(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.env["TIDEMARK_PARTITIONS"] = "1"  # every stream in partition 0
    base = await cluster.gateway()
    topic = f"tidemark.{cluster.namespace}.events"
    gone = await finished(http, base, chunks=1)
    live = await create(http, base, generator="external")
    for i in range(4):
        await publish(http, base, live, {"type": "partial_result",
                                         "data": {"chunk": f"c{i} ", "chunkIndex": i}})
    await publish(http, base, live, {"type": "result", "data": {"text": "c0 c1 c2 c3 "}})
    before = (await tc.read(http, base, live, "sse")).items
    # Retention deletes everything before the live stream's seq 2. (Gateways learn a
    # partition's log start at most a second late.)
    await delete_before(cluster.bootstrap, topic, offset_of(before[2][0] or ""))
    await asyncio.sleep(1.2)

    for position in (None, before[0][0]):
        outcomes = {t: await tc.read(http, base, live, t, position=position)
                    for t in tc.TRANSPORTS}
        items = assert_same(outcomes)
        assert items[0][0] is None and items[0][1] == "reset"
        assert json.loads(items[0][2]) == {"reason": "retention", "earliest": before[2][0]}
        assert items[1:] == before[2:]
    gone_outcomes = {t: await tc.read(http, base, gone, t) for t in tc.TRANSPORTS}
    assert {t: o.code for t, o in gone_outcomes.items()} == {"sse": 410, "ws": 4410,
                                                              "poll": 410}


async def test_live_events_after_the_catch_up_are_the_same_on_every_transport(
        gateway: Gateway, http: aiohttp.ClientSession) -> None:
    base = gateway.base
    sid = await create(http, base, generator="external")
    await publish(http, base, sid, [{"type": "partial_result",
                                     "data": {"chunk": f"a{i}", "chunkIndex": i}}
                                    for i in range(3)])
    readers = {t: asyncio.create_task(tc.read(http, base, sid, t)) for t in tc.TRANSPORTS}
    await asyncio.sleep(1.0)  # every reader has caught up and waits for live events
    for i in range(3, 10):
        await publish(http, base, sid, {"type": "partial_result",
                                        "data": {"chunk": f"a{i}", "chunkIndex": i}})
        await asyncio.sleep(0.05)
    await publish(http, base, sid, {"type": "result", "data": {"text": "done"}})
    outcomes = {t: await task for t, task in readers.items()}
    items = assert_same(outcomes)
    seqs = [json.loads(i[2])["seq"] for i in items]
    assert seqs == list(range(12))
    assert outcomes["ws"].code == 1000 and outcomes["poll"].answers > 3


async def test_create_answers_with_each_transports_url_carrying_the_read_token(
        gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{gateway.base}/v1/streams",
                         json={"query": "q", "generator": "external"}) as resp:
        assert resp.status == 201
        made = await resp.json()
    sid, token = made["stream_id"], made["read_token"]
    assert made["events_url"] == made["urls"]["sse"]
    assert made["urls"] == {
        "sse": f"/v1/streams/{sid}/events?access_token={token}",
        "ws": f"/v1/streams/{sid}/ws?access_token={token}",
        "poll": f"/v1/streams/{sid}/poll?access_token={token}"}
    await publish(http, gateway.base, sid, {"type": "result", "data": {"text": "t"}})
    async with aiohttp.ClientSession() as anonymous:  # the URL alone reads the stream
        async with anonymous.ws_connect("ws" + gateway.base.removeprefix("http")
                                        + made["urls"]["ws"]) as ws:
            first = await ws.receive_json()
        async with anonymous.get(gateway.base + made["urls"]["poll"]) as resp:
            body = await resp.json()
            assert resp.status == 200, body
    assert first["event"] == "status" and first["data"]["stream"] == sid
    assert body["events"][0] == first


async def test_websocket_pings_when_idle_and_refuses_a_plain_get(
        gateway: Gateway, http: aiohttp.ClientSession) -> None:
    sid = await create(http, gateway.base, generator="external")
    url = tc.url_of(gateway.base, sid, "ws")
    async with http.ws_connect(url, autoping=False) as ws:
        first = await ws.receive_json()
        assert first["event"] == "status"
        began = time.monotonic()
        ping = await ws.receive(timeout=5)
        assert ping.type is aiohttp.WSMsgType.PING  # the heartbeat (1 s in the tests)
        assert time.monotonic() - began < 2.5
        await ws.pong(ping.data)
    async with http.get(tc.url_of(gateway.base, sid, "sse").replace("/events", "/ws")
                        ) as resp:
        assert resp.status == 426
        assert resp.content_type == "application/problem+json"
        assert resp.headers["Upgrade"] == "websocket"


async def test_long_poll_waits_for_the_next_event_or_answers_empty(
        gateway: Gateway, http: aiohttp.ClientSession) -> None:
    base = gateway.base
    sid = await create(http, base, generator="external")
    url = tc.url_of(base, sid, "poll")
    async with http.get(url, params={"wait": "0"}) as resp:
        first = await resp.json()
    assert [e["event"] for e in first["events"]] == ["status"] and not first["ended"]
    position = first["last_event_id"]
    assert position == first["events"][0]["id"]

    # Nothing due: an empty answer after the wait, with the same position.
    began = time.monotonic()
    async with http.get(url, params={"wait": "1", "last_event_id": position}) as resp:
        empty = await resp.json()
    assert 0.9 < time.monotonic() - began < 3
    assert empty == {"events": [], "last_event_id": position, "ended": False}

    # An event published during the wait answers at once.
    async def later() -> None:
        await asyncio.sleep(0.5)
        await publish(http, base, sid, {"type": "result", "data": {"text": "t"}})
    task = asyncio.create_task(later())
    began = time.monotonic()
    async with http.get(url, params={"wait": "20", "last_event_id": position}) as resp:
        woke = await resp.json()
    await task
    assert time.monotonic() - began < 5
    assert [e["event"] for e in woke["events"]] == ["result"] and woke["ended"]
    async with http.get(url, params={"last_event_id": woke["last_event_id"]}) as resp:
        assert resp.status == 204

    for bad in ("soon", "-1", "nan"):
        async with http.get(url, params={"wait": bad}) as resp:
            assert resp.status == 400
            assert resp.content_type == "application/problem+json"


async def test_open_responses_are_counted_per_transport(
        gateway: Gateway, http: aiohttp.ClientSession) -> None:
    base = gateway.base
    sid = await create(http, base, generator="external")

    def series(m: dict[str, float]) -> dict[str, float]:
        return {t: m.get(f'tidemark_open_responses{{transport="{t}"}}', -1.0)
                for t in ("sse", "websocket", "long-poll")} | {
                    "all": m["tidemark_sse_connections"]}

    async def until(want: dict[str, float]) -> dict[str, float]:
        deadline = time.monotonic() + 10
        while (got := series(await scrape(http, f"{base}/metrics"))) != want:
            assert time.monotonic() < deadline, (got, want)
            await asyncio.sleep(0.1)
        return got

    async with http.get(tc.url_of(base, sid, "poll"), params={"wait": "0"}) as resp:
        position = (await resp.json())["last_event_id"]  # the stream's end: a poll waits
    before = series(await scrape(http, f"{base}/metrics"))
    assert min(before.values()) >= 0  # every transport's series is there from the start
    async with http.get(tc.url_of(base, sid, "sse")) as sse, \
            http.ws_connect(tc.url_of(base, sid, "ws")) as ws:
        await sse.content.readline()
        await ws.receive_json()
        poll = asyncio.create_task(http.get(tc.url_of(base, sid, "poll"), params={
            "wait": "20", "last_event_id": position}))
        try:
            await until({"sse": before["sse"] + 1, "websocket": before["websocket"] + 1,
                         "long-poll": before["long-poll"] + 1, "all": before["all"] + 3})
        finally:
            # An event answers the waiting poll (a client that went away would leave
            # it open on the gateway until its wait ends).
            await publish(http, base, sid, {"type": "result", "data": {"text": "t"}})
            async with await poll as resp:
                assert resp.status == 200
    await until(before)


def ws_frames(raw: bytes) -> tuple[list[dict[str, Any]], int | None, str]:
    """Parse what a server sent on a WebSocket (unmasked frames): the text frames'
    JSON, the close code and reason (None if no close frame came whole)."""
    out: list[dict[str, Any]] = []
    i = 0
    while i + 2 <= len(raw):
        opcode, size = raw[i] & 0x0F, raw[i + 1] & 0x7F
        head = 2
        if size == 126:
            size, head = int.from_bytes(raw[i + 2:i + 4], "big"), 4
        elif size == 127:
            size, head = int.from_bytes(raw[i + 2:i + 10], "big"), 10
        payload = raw[i + head:i + head + size]
        if len(payload) < size:
            break
        if opcode == 1:
            out.append(json.loads(payload))
        elif opcode == 8:
            return out, int.from_bytes(payload[:2], "big"), payload[2:].decode()
        i += head + size
    return out, None, ""


async def test_a_websocket_client_that_stops_reading_is_closed_1013_and_resumes(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    import base64
    import os

    from tests.e2e.test_slow_client import (
        plain_cut_off_gateway,
        produce,
        read_until_closed,
        unread_socket,
        wait_cut_off,
    )

    base, sid = await plain_cut_off_gateway(cluster, http)
    slow = unread_socket(base, f"/v1/streams/{sid}/ws", {
        "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13"})
    try:
        follower = asyncio.create_task(tc.read(http, base, sid, "ws", timeout=120))
        await asyncio.sleep(0.5)
        await produce(cluster, [sid], 20_000, payload=1000, end=True)
        whole = (await follower).items
        assert json.loads(whole[-1][2])["type"] == "result"
        # The slow client's socket has taken nothing for the write timeout: it is dropped.
        await wait_cut_off(http, base, "the slow client")
        received = await read_until_closed(slow)
    finally:
        slow.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    seen, code, reason = ws_frames(body)
    assert code == 1013, (code, reason, len(seen))
    assert "fell behind" in reason
    assert seen, "the slow client got nothing at all"
    rest = await tc.read(http, base, sid, "ws", position=seen[-1]["id"], timeout=60)
    ids = [i[0] for i in whole]
    assert [i[0] for i in rest.items] == ids[ids.index(seen[-1]["id"]) + 1:]


async def test_websocket_lifetime_and_shutdown_close_1001_and_the_client_resumes(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway(TIDEMARK_MAX_RESPONSE_SECONDS="1")
    sid = await create(http, base, generator="external")
    lived = await tc.read(http, base, sid, "ws")
    assert lived.code == 1001 and "lifetime" in lived.reason, lived
    assert [i[1] for i in lived.items] == ["status"]

    await publish(http, base, sid, {"type": "status", "data": {"state": "running"}})
    again = await tc.read(http, base, sid, "ws", position=lived.last_id)
    assert [i[1] for i in again.items] == ["status"] and again.code == 1001

    other = await cluster.gateway()
    reader = asyncio.create_task(tc.read(http, other, sid, "ws", position=again.last_id))
    await asyncio.sleep(0.5)
    cluster.procs[-1].stop()  # SIGTERM: the gateway drains
    stopped = await reader
    assert stopped.code == 1001 and "shutting down" in stopped.reason, stopped
    assert stopped.items == []


@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_compressed_answers_decode_to_the_plain_ones_on_every_transport(
        gateway: Gateway, http: aiohttp.ClientSession, coding: str) -> None:
    """SSE and long-poll in ``coding``, the WebSocket with permessage-deflate: the same
    events as the plain answers, from the start and from a position, and the SSE body
    decodes to exactly the plain body's bytes."""
    base = gateway.base
    sid = await finished(http, base, chunks=40)
    plain = {t: await tc.read(http, base, sid, t) for t in tc.TRANSPORTS}
    packed = {t: await tc.read(http, base, sid, t, encoding=coding) for t in tc.TRANSPORTS}
    items = assert_same(plain)
    assert assert_same(packed) == items and len(items) == 44
    assert packed["sse"].raw == plain["sse"].raw
    assert packed["sse"].wire < plain["sse"].wire / 3, (packed["sse"].wire, plain["sse"].wire)
    assert packed["poll"].wire < plain["poll"].wire / 2
    # Resume ids are the same: from the plain answer's 5th id, compressed.
    after = {t: await tc.read(http, base, sid, t, position=items[4][0], encoding=coding)
             for t in tc.TRANSPORTS}
    assert assert_same(after) == items[5:]
    # Refusals are problems as ever (not compressed), and 204 stays 204.
    for t in ("sse", "poll"):
        bad = await tc.read(http, base, sid, t, position="nonsense", encoding=coding)
        end = await tc.read(http, base, sid, t, position=items[-1][0], encoding=coding)
        assert (bad.code, end.code) == (400, 204) and bad.reason


@pytest.mark.parametrize("coding", ["gzip", "br"])
async def test_a_compressed_sse_client_decodes_each_live_event_before_the_next_is_published(
        gateway: Gateway, http: aiohttp.ClientSession, coding: str) -> None:
    """Every write is flushed: a client that decodes chunk by chunk has each event (and
    each ``: ping``) before anything else is sent."""
    from tests import sse_client

    base = gateway.base
    sid = await create(http, base, generator="external")
    url = tc.url_of(base, sid, "sse")
    # An idle stream: the heartbeat (1 s in the tests) arrives on its own, decodable.
    pinged = await sse_client.read(http, url, encoding=coding, stop_after_comments=1,
                                   idle_timeout=5)
    assert pinged.comments == ["ping"] and [e.event for e in pinged.events] == ["status"]

    seen: list[sse_client.Event] = []
    reader = asyncio.create_task(sse_client.read(http, url, sink=seen, encoding=coding))
    await sse_client.wait_for(seen, 1, reader)
    for i in range(6):
        await publish(http, base, sid, {"type": "partial_result",
                                        "data": {"chunk": f"t{i} ", "chunkIndex": i}})
        await sse_client.wait_for(seen, 2 + i, reader, timeout=10)
        assert json.loads(seen[-1].data)["data"]["chunk"] == f"t{i} "
    await publish(http, base, sid, {"type": "result", "data": {"text": "done"}})
    live = await asyncio.wait_for(reader, 30)
    assert live.ended_by_server and seen[-1].event == "result"
    plain = await tc.read(http, base, sid, "sse")
    assert [(e.id, e.event, e.data) for e in seen] == plain.items


async def test_websocket_permessage_deflate_is_agreed_within_the_window_and_flushed(
        gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """The offer browsers and aiohttp's client send (``permessage-deflate;
    client_max_window_bits``) is answered with the gateway's window (12 bits in the
    tests' default settings); each text frame is compressed (RSV1) and inflates on its
    own, with what came before, to the event's JSON."""
    import base64
    import os

    from tests.procs import token

    base = gateway.base
    sid = await finished(http, base, chunks=3)
    plain = (await tc.read(http, base, sid, "ws")).items
    host, port = base.removeprefix("http://").split(":")
    for offer, answer in [
            ("permessage-deflate; client_max_window_bits",
             "permessage-deflate; server_max_window_bits=12"),
            ("permessage-deflate; server_max_window_bits=10",
             "permessage-deflate; server_max_window_bits=10"),
            (None, None)]:
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        ext = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
        writer.write(f"GET /v1/streams/{sid}/ws HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {token()}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{ext}"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        assert head.startswith("HTTP/1.1 101"), head
        agreed = {k.lower(): v for k, _, v in (line.partition(": ") for line in
                                                head.split("\r\n")[1:] if line)}
        assert agreed.get("sec-websocket-extensions") == answer, head
        inflate = zlib.decompressobj(-15)
        events: list[dict[str, Any]] = []
        while len(events) < len(plain):
            b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
            size = b1 & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2), "big")
            payload = await reader.readexactly(size)
            assert b0 & 0x0F == 1, b0  # text frames until the stream ends
            assert bool(b0 & 0x40) == (answer is not None)  # RSV1: compressed
            text = inflate.decompress(payload + b"\x00\x00\xff\xff") if answer else payload
            events.append(json.loads(text))
        writer.close()
        assert [(e["id"], e["event"]) for e in events] == [(i[0], i[1]) for i in plain]


async def test_a_browser_gets_gzip_sse_and_a_deflated_websocket_with_the_same_events(
        gateway: Gateway, http: aiohttp.ClientSession,
        browser: BrowserContext) -> None:  # noqa: F811 (the fixture imported above)
    """Chromium's own negotiation: its ``EventSource`` accepts gzip, br (and more) and
    is answered gzip; its ``WebSocket`` offers permessage-deflate and agrees to the
    gateway's window. Both decode to the events every other client reads."""
    async with http.post(f"{gateway.base}/v1/streams",
                         json={"query": "q", "generator": "external"}) as resp:
        made = await resp.json()
    sid = made["stream_id"]
    await publish(http, gateway.base, sid, [
        *[{"type": "partial_result", "data": {"chunk": f"w{i} ", "chunkIndex": i}}
          for i in range(5)], {"type": "result", "data": {"text": "done"}}])
    plain = (await tc.read(http, gateway.base, sid, "sse")).items
    page = await browser.new_page()
    await page.goto(gateway.base + "/")
    async with page.expect_response(lambda r: f"/v1/streams/{sid}/events" in r.url,
                                    timeout=20_000) as answered:
        got = await page.evaluate("""([sse, ws]) => new Promise((done, fail) => {
        const out = {sse: [], ws: [], extensions: null};
        const es = new EventSource(sse);
        for (const type of ["status", "partial_result", "result"]) {
            es.addEventListener(type, e => {
                out.sse.push([e.lastEventId, e.type, e.data]);
                if (type !== "result") return;
                es.close();
                const sock = new WebSocket(ws);
                sock.onopen = () => { out.extensions = sock.extensions; };
                sock.onmessage = e => out.ws.push(e.data);
                sock.onclose = () => done(out);
                sock.onerror = () => fail(new Error("websocket error"));
            });
        }
        setTimeout(() => fail(new Error("timed out")), 20000);
    })""", [made["urls"]["sse"], "ws" + gateway.base.removeprefix("http") + made["urls"]["ws"]])
    headers = await (await answered.value).all_headers()
    assert (headers.get("content-encoding"), headers.get("vary")) == ("gzip", "Accept-Encoding")
    assert [tuple(e) for e in got["sse"]] == plain
    assert got["extensions"] == "permessage-deflate; server_max_window_bits=12"
    frames = [json.loads(f) for f in got["ws"]]
    assert [(f["id"], f["event"]) for f in frames] == [(i[0], i[1]) for i in plain]
    assert [json.loads(i[2]) for i in plain] == [f["data"] for f in frames]


async def test_compression_off_answers_identity_without_vary_and_declines_deflate(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """``TIDEMARK_COMPRESSION=off`` and ``TIDEMARK_WS_COMPRESSION=false``: a client that
    accepts gzip gets the identity answers of before (no ``Vary``), and the WebSocket
    declines permessage-deflate."""
    from tests import sse_client

    base = await cluster.gateway(TIDEMARK_COMPRESSION="off", TIDEMARK_WS_COMPRESSION="false")
    sid = await finished(http, base, chunks=2)
    async with http.get(tc.url_of(base, sid, "sse"), auto_decompress=False,
                        headers={"Accept-Encoding": "gzip, br"}) as resp:
        reply = await sse_client.parse(resp)
    assert reply.status == 200 and "Content-Encoding" not in reply.headers
    assert "Vary" not in reply.headers and reply.events[-1].event == "result"
    async with http.get(tc.url_of(base, sid, "poll"), auto_decompress=False,
                        headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.status == 200 and "Vary" not in resp.headers
        assert "Content-Encoding" not in resp.headers and (await resp.json())["events"]
    async with http.ws_connect(tc.url_of(base, sid, "ws"), compress=15) as ws:
        assert ws.compress == 0
        first = await ws.receive_json()
    assert first["event"] == "status"
