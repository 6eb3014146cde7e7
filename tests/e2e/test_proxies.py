"""The test proxies of tests/proxies.py do what they claim, checked with plain clients:
the WS-refusing HAProxy answers a WebSocket upgrade with 403 and passes SSE and
long-poll; the buffering nginx holds a live SSE response's bytes back and forwards no
upgrade, while a long-poll through it answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_streams import create
from tests.procs import auth_headers
from tests.proxies import start_buffering_proxy, start_ws_refusing_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: How long a live SSE response through the buffering proxy must give no byte.
SILENT_S = 3.0


@dataclass
class Proxied:
    gateway: str
    no_ws: str
    buffering: str


@pytest.fixture(scope="module")
def proxied(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[Proxied]:
    cluster = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("proxies"))
    try:
        cluster.worker()
        gateway = asyncio.run(cluster.gateway())
        haproxy, no_ws = start_ws_refusing_proxy([gateway], cluster.logdir)
        cluster.procs.append(haproxy)
        nginx, buffering = start_buffering_proxy([gateway], cluster.logdir)
        cluster.procs.append(nginx)
        yield Proxied(gateway, no_ws, buffering)
    finally:
        cluster.stop()


async def test_the_ws_refusing_proxy_refuses_upgrades_and_passes_http(
        proxied: Proxied, http: aiohttp.ClientSession) -> None:
    sid = await create(http, proxied.no_ws, options={"tokens": 5, "tokens_per_second": 200})
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(tc.url_of(proxied.no_ws, sid, "ws"))
    assert refused.value.status == 403
    # The same upgrade straight to the gateway works: it is the proxy that refuses.
    direct = await tc.read(http, proxied.gateway, sid, "ws")
    assert direct.code == 1000 and direct.ended
    for transport in ("sse", "poll"):
        through = await tc.read(http, proxied.no_ws, sid, transport)
        assert through.ended and through.items == direct.items, transport


async def test_the_buffering_proxy_holds_live_sse_back_but_answers_polls(
        proxied: Proxied, http: aiohttp.ClientSession) -> None:
    # A live stream of ~8 s: its small events fill no buffer of the proxy's.
    sid = await create(http, proxied.buffering,
                       options={"tokens": 40, "tokens_per_second": 5})
    url = tc.url_of(proxied.buffering, sid, "sse")

    async def first_bytes() -> bytes:
        async with http.get(url) as resp:
            assert resp.status == 200
            return await resp.content.readany()

    began = time.monotonic()
    with pytest.raises(TimeoutError):  # not even the headers come (the gzip filter)
        await asyncio.wait_for(first_bytes(), SILENT_S)
    assert time.monotonic() - began >= SILENT_S
    # Straight from the gateway the same response starts at once.
    async with http.get(tc.url_of(proxied.gateway, sid, "sse")) as resp:
        first = await asyncio.wait_for(resp.content.readany(), SILENT_S)
        assert first.startswith(b"retry:")
    # A long-poll through the proxy answers with events, well within the same time.
    began = time.monotonic()
    async with http.get(tc.url_of(proxied.buffering, sid, "poll"),
                        params={"wait": "5"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["events"] and time.monotonic() - began < SILENT_S
    # nginx passes no Upgrade: the gateway sees a plain GET and answers 426.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(tc.url_of(proxied.buffering, sid, "ws"),
                              headers=auth_headers())
    assert refused.value.status == 426
