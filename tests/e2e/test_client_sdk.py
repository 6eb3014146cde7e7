"""The Python client SDK (`tidemark.client`) against real gateways, a real worker, a
real HAProxy and the real proxies of tests/proxies.py (first checked with plain
clients: the WS-refusing HAProxy answers an upgrade 403 and passes SSE and long-poll;
the buffering nginx holds a live SSE response back, passes no upgrade and answers
long-polls): every transport gives what the wire gives, a gateway killed mid-stream
costs nothing, a WS-refusing proxy and a buffering proxy make it fall back (SSE,
long-poll) and every stream still arrives exactly once, and the resume contract's
answers (204, 404, 401, 410, reset) become an end, clear exceptions or a Reset item."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_positions import delete_before, offset_of
from tests.e2e.test_streams import create, publish
from tests.procs import Proc, auth_headers, free_port, start_haproxy, token, wait_ready
from tests.proxies import start_buffering_proxy, start_ws_refusing_proxy
from tidemark.client import (
    Backoff,
    Client,
    Gone,
    Item,
    NotFound,
    Reset,
    StreamEvent,
    Unauthorized,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
log = logging.getLogger(__name__)

#: Streams followed at once through each proxy.
N_STREAMS = 12
#: The SDK's first-byte deadline in the fallback tests (its default is 5 s).
DEADLINE_S = 2.0
#: How long a live SSE response through the buffering proxy must give no byte.
SILENT_S = 3.0


@dataclass
class Site:
    cluster: Cluster
    gateway: str
    no_ws: str
    buffering: str


@pytest.fixture(scope="module")
def site(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One worker, one gateway, and both proxies in front of it, for the module."""
    cluster = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("client-sdk"))
    try:
        cluster.worker()
        gateway = asyncio.run(cluster.gateway())
        haproxy, no_ws = start_ws_refusing_proxy([gateway], cluster.logdir)
        cluster.procs.append(haproxy)
        nginx, buffering = start_buffering_proxy([gateway], cluster.logdir)
        cluster.procs.append(nginx)
        yield Site(cluster, gateway, no_ws, buffering)
    finally:
        cluster.stop()


# --- the proxies of tests/proxies.py do what they claim (plain clients) ---------


async def test_the_ws_refusing_proxy_refuses_upgrades_and_passes_http(
        site: Site, http: aiohttp.ClientSession) -> None:
    sid = await create(http, site.no_ws, options={"tokens": 5, "tokens_per_second": 200})
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(tc.url_of(site.no_ws, sid, "ws"))
    assert refused.value.status == 403
    # The same upgrade straight to the gateway works: it is the proxy that refuses.
    direct = await tc.read(http, site.gateway, sid, "ws")
    assert direct.code == 1000 and direct.ended
    for transport in ("sse", "poll"):
        through = await tc.read(http, site.no_ws, sid, transport)
        assert through.ended and through.items == direct.items, transport


async def test_the_buffering_proxy_holds_live_sse_back_but_answers_polls(
        site: Site, http: aiohttp.ClientSession) -> None:
    # A live stream of ~8 s: its small events fill no buffer of the proxy's.
    sid = await create(http, site.buffering,
                       options={"tokens": 40, "tokens_per_second": 5})
    url = tc.url_of(site.buffering, sid, "sse")

    async def first_bytes() -> bytes:
        async with http.get(url) as resp:
            assert resp.status == 200
            return await resp.content.readany()

    began = time.monotonic()
    with pytest.raises(TimeoutError):  # not even the headers come (the gzip filter)
        await asyncio.wait_for(first_bytes(), SILENT_S)
    assert time.monotonic() - began >= SILENT_S
    # Straight from the gateway the same response starts at once.
    async with http.get(tc.url_of(site.gateway, sid, "sse")) as resp:
        first = await asyncio.wait_for(resp.content.readany(), SILENT_S)
        assert first.startswith(b"retry:")
    # A long-poll through the proxy answers with events, well within the same time.
    began = time.monotonic()
    async with http.get(tc.url_of(site.buffering, sid, "poll"),
                        params={"wait": "5"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["events"] and time.monotonic() - began < SILENT_S
    # nginx passes no Upgrade: the gateway sees a plain GET and answers 426.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(tc.url_of(site.buffering, sid, "ws"),
                              headers=auth_headers())
    assert refused.value.status == 426


# --- the SDK ----------------------------------------------------------------------


def client(base: str, **kwargs: Any) -> Client:
    # The token is a callable: the client asks for a fresh one on each connection.
    return Client(base, token=token, **kwargs)


async def follow_all(c: Client, stream_id: str, **kwargs: Any) -> list[Item]:
    return [item async for item in c.follow(stream_id, **kwargs)]


def assert_exactly_once(events: list[Item]) -> list[StreamEvent]:
    """Every seq from 0 once, in order, ending with the result; the chunks add up."""
    stream = [e for e in events if isinstance(e, StreamEvent)]
    assert [e.seq for e in stream] == list(range(len(stream)))
    assert len({e.id for e in stream}) == len(stream)
    assert stream[-1].type == "result"
    chunks = "".join(e.data["chunk"] for e in stream if e.type == "partial_result")
    assert stream[-1].data["text"] == chunks
    return stream


async def test_each_transport_gives_what_the_wire_gives(
        site: Site, http: aiohttp.ClientSession) -> None:
    async with client(site.gateway) as c:
        created = await c.create("what is a tidemark?",
                                 options={"tokens": 20, "tokens_per_second": 100})
    assert created.read_token and created.raw["stream_id"] == created.stream_id

    async def forced(transport: str) -> list[Item]:
        async with client(site.gateway, transports=(transport,)) as c:
            items = await follow_all(c, created.stream_id)
            assert c.working == transport and not c.refused
            return items

    got = dict(zip(tc.TRANSPORTS, await asyncio.gather(*map(forced, tc.TRANSPORTS)),
                   strict=True))
    for transport in tc.TRANSPORTS:
        wire = await tc.read(http, site.gateway, created.stream_id, transport)
        assert wire.ended
        stream = assert_exactly_once(got[transport])
        assert [(e.id, e.type, e.envelope) for e in stream] == [
            (i, name, json.loads(raw)) for i, name, raw in wire.items], transport
        assert all(e.ts == e.envelope["ts"] and e.data == e.envelope["data"] for e in stream)


async def test_a_gateway_killed_mid_stream_costs_no_event(site: Site) -> None:
    gateways = [await site.cluster.gateway(), await site.cluster.gateway()]
    haproxy, lb = start_haproxy(gateways, site.cluster.logdir)
    site.cluster.procs.append(haproxy)
    async with client(lb, backoff=Backoff(initial=0.05, max_delay=1.0)) as c:
        created = await c.create("q", options={"tokens": 60, "tokens_per_second": 40})
        events: list[Item] = []
        killed: list[str] = []
        async for item in c.follow(created.stream_id):
            events.append(item)
            if len(events) == 15:
                killed.append(await kill_the_serving_gateway(site.cluster, gateways))
    assert killed == [killed[0]] and killed[0]
    assert c.reconnects >= 1 and c.working == "ws"
    assert_exactly_once(events)


async def kill_the_serving_gateway(cluster: Cluster, gateways: list[str]) -> str:
    """SIGKILL the gateway holding the one open stream connection; its name."""
    async with aiohttp.ClientSession() as http:
        for i, url in enumerate(gateways):
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
            open_now = [line for line in text.splitlines()
                        if line.startswith("tidemark_sse_connections ")]
            if open_now and float(open_now[0].split()[1]) >= 1:
                name = f"gateway{i + 1}"  # the module's first gateway is gateway0
                cluster.proc(name).stop(signal.SIGKILL)
                return name
    raise AssertionError("no gateway holds the connection")


async def test_503_from_a_balancer_with_no_gateway_up_is_retried_not_a_refusal(
        site: Site, http: aiohttp.ClientSession) -> None:
    """HAProxy answers 503 while its one gateway is down (the upgrade too): the follower
    backs off and retries on the WebSocket, and reads the stream once a gateway is up."""
    port = free_port()
    haproxy, lb = start_haproxy([f"http://127.0.0.1:{port}"], site.cluster.logdir,
                                name="haproxy-late")
    site.cluster.procs.append(haproxy)
    sid = await create(http, site.gateway, options={"tokens": 5, "tokens_per_second": 200})
    wire = await tc.read(http, site.gateway, sid, "ws")
    async with client(lb, backoff=Backoff(initial=0.2, max_delay=1.0, max_attempts=None,
                                          max_elapsed=60.0)) as c:
        follower = asyncio.create_task(follow_all(c, sid))
        while c.reconnects < 2:
            assert not follower.done(), follower
            await asyncio.sleep(0.05)
        late = Proc("gateway-late", ["gateway", "--port", str(port)], site.cluster.env,
                    site.cluster.logdir)
        site.cluster.procs.append(late)
        await wait_ready(f"http://127.0.0.1:{port}", late)
        events = await asyncio.wait_for(follower, 30)
    assert c.working == "ws" and not c.refused
    assert [(e.id, e.type) for e in events if isinstance(e, StreamEvent)] == [
        (i, name) for i, name, _ in wire.items]


async def follow_n_through(base: str, **kwargs: Any) -> tuple[Client, list[float]]:
    """N demo streams followed at once through one client; each arrives exactly once.
    Returns the client and each stream's time to its first event."""
    c = client(base, first_byte_timeout=DEADLINE_S, **kwargs)
    async with c:
        created = await asyncio.gather(*(
            # Live for ~4 s, longer than the deadline: a proxy cannot just hand over a
            # response that has already ended.
            c.create(f"stream {i}", options={"tokens": 20, "tokens_per_second": 5})
            for i in range(N_STREAMS)))

        async def one(stream_id: str) -> float:
            began = time.monotonic()
            first: float | None = None
            events: list[Item] = []
            async for item in c.follow(stream_id):
                first = first or time.monotonic() - began
                events.append(item)
            assert_exactly_once(events)
            assert first is not None
            return first

        firsts = await asyncio.gather(*(one(s.stream_id) for s in created))
    log.info("first event after %s s (median %.2f s, max %.2f s)",
             [round(f, 2) for f in firsts], statistics.median(firsts), max(firsts))
    return c, list(firsts)


async def test_a_ws_refusing_proxy_makes_it_fall_back_to_sse(site: Site) -> None:
    c, firsts = await follow_n_through(site.no_ws)
    assert c.working == "sse"
    assert list(c.refused) == ["ws"] and "403" in c.refused["ws"]
    assert max(firsts) < DEADLINE_S  # the refusal is an answer: no deadline to wait for


async def test_a_buffering_proxy_makes_it_fall_back_to_long_poll(site: Site) -> None:
    c, firsts = await follow_n_through(site.buffering)
    assert c.working == "poll"
    assert set(c.refused) == {"ws", "sse"}
    assert "426" in c.refused["ws"] and "no byte within" in c.refused["sse"]
    assert DEADLINE_S <= min(firsts) and max(firsts) < DEADLINE_S + 3.0


async def test_the_end_unknown_streams_and_bad_tokens(site: Site) -> None:
    async with client(site.gateway) as c:
        created = await c.create("q", options={"tokens": 3, "tokens_per_second": 500})
        events = await follow_all(c, created.stream_id)
    last = events[-1]
    assert isinstance(last, StreamEvent) and last.terminal
    for transport in tc.TRANSPORTS:
        async with client(site.gateway, transports=(transport,)) as c:
            # At the end: nothing more, the iterator ends (204 / close 1000).
            assert await follow_all(c, created.stream_id, last_event_id=last.id) == []
            with pytest.raises(NotFound) as unknown:
                await follow_all(c, "0" * 32)
            assert unknown.value.status == 404 and unknown.value.detail
        async with Client(site.gateway, token="not-a-token", transports=(transport,)) as c:
            with pytest.raises(Unauthorized) as bad:
                await follow_all(c, created.stream_id)
            assert bad.value.status == 401 and bad.value.detail, transport
            assert c.reconnects == 0  # no retry


async def test_cancel_ends_the_stream_with_cancelled(site: Site) -> None:
    async with client(site.gateway) as c:
        created = await c.create("q", options={"tokens": 400, "tokens_per_second": 40})
        types: list[str] = []
        answers: list[dict[str, Any]] = []
        async for item in c.follow(created.stream_id):
            types.append(item.type)
            # Once: the next item may be the `cancelled` one, with still three partials.
            if types.count("partial_result") == 3 and not answers:
                answers.append(await c.cancel(created.stream_id))
        again = await c.cancel(created.stream_id)
    assert answers[0]["status"] == "cancelling"
    assert types[-1] == "cancelled" and "result" not in types
    # Cancelling a finished stream answers its status (200, not a second cancel).
    assert again == {"stream_id": created.stream_id, "status": "cancelled"}


async def test_input_on_an_external_stream_arrives_in_order(
        site: Site, http: aiohttp.ClientSession) -> None:
    async with client(site.gateway) as c:
        created = await c.create("q", generator="external")
        seen: list[Item] = []
        source = c.event_source(created.stream_id)
        source.on("input", seen.append)
        got_input = asyncio.Event()

        async def after_input(item: Item) -> None:
            got_input.set()

        source.on("input", after_input)
        follower = asyncio.create_task(source.run())
        status, _ = await publish(http, site.gateway, created.stream_id,
                                  {"type": "status", "data": {"state": "running"}})
        assert status == 200
        answer = await c.send_input(created.stream_id, {"text": "more, please"})
        await asyncio.wait_for(got_input.wait(), 10)
        status, _ = await publish(http, site.gateway, created.stream_id,
                                  {"type": "result", "data": {"text": "done"}})
        assert status == 200
        terminal = await asyncio.wait_for(follower, 10)
    assert len(seen) == 1 and isinstance(seen[0], StreamEvent)
    assert (seen[0].id, seen[0].seq, seen[0].data) == (
        answer["id"], answer["seq"], {"text": "more, please"})
    assert terminal is not None and terminal.type == "result"
    assert terminal.seq == answer["seq"] + 1


async def test_retention_gives_a_reset_item_and_a_deleted_stream_gone(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.env["TIDEMARK_PARTITIONS"] = "1"  # every stream in partition 0
    base = await cluster.gateway()
    topic = f"tidemark.{cluster.namespace}.events"
    async with client(base) as c:
        gone = await c.create("q", generator="external")
        await publish(http, base, gone.stream_id, [
            {"type": "status", "data": {"state": "running"}},
            {"type": "result", "data": {"text": "done"}}])
        live = await c.create("q", generator="external")
        await publish(http, base, live.stream_id, [
            *({"type": "partial_result", "data": {"chunk": f"c{i} ", "chunkIndex": i}}
              for i in range(4)),
            {"type": "result", "data": {"text": "c0 c1 c2 c3 "}}])
        before = [e for e in await follow_all(c, live.stream_id)
                  if isinstance(e, StreamEvent)]
    assert [e.seq for e in before] == [0, 1, 2, 3, 4, 5]
    # Retention deletes everything before the live stream's seq 2 (gateways learn a
    # partition's log start at most a second late).
    await delete_before(cluster.bootstrap, topic, offset_of(before[2].id))
    await asyncio.sleep(1.2)
    for transport in tc.TRANSPORTS:
        async with client(base, transports=(transport,)) as c:
            items = await follow_all(c, live.stream_id, last_event_id=before[0].id)
            assert items[0] == Reset("retention", before[2].id), transport
            assert items[1:] == before[2:], transport
            with pytest.raises(Gone) as deleted:
                await follow_all(c, gone.stream_id)
            assert deleted.value.status == 410 and deleted.value.detail

