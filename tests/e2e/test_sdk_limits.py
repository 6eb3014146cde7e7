"""Both client SDKs against a real 429: a gateway whose per-user request limit (Redis, the
limits' shared store) is full answers the follower's request 429 with ``Retry-After``;
the Python SDK (``tidemark.client``) and the JavaScript SDK (clients/js, in Node) wait
that long, not their own short backoff, then read the stream whole, each event once.

The user's sliding window is filled with requests made 58 s ago (entries in the real
store, scored by its own clock, as the gateway's script scores them), so the limit frees
in about 2 s instead of a minute."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.limits import WINDOW_MS, key_part
from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_js_client import JS, events_of
from tests.e2e.test_streams import publish
from tests.procs import auth_headers, run_node, token
from tidemark.client import Backoff, Client, StreamEvent

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: The limited user's requests per minute: far above what the test itself sends.
LIMIT = 50
#: How long ago the requests that fill the window were made (it is 60 s long).
AGE_S = 58.0


@dataclass
class Limited:
    base: str
    namespace: str
    redis_url: str


@pytest.fixture
async def limited(cluster: Cluster, redis_url: str) -> AsyncIterator[Limited]:
    base = await cluster.gateway(TIDEMARK_REDIS_URL=redis_url)
    yield Limited(base, cluster.env["TIDEMARK_NAMESPACE"], redis_url)


def claims(sub: str) -> dict[str, Any]:
    return {"sub": sub, "tenant": "acme", "limits": {"requestsPerMinute": LIMIT}}


async def finished_stream(site: Limited, sub: str) -> tuple[str, list[tuple[str, str]]]:
    """An external stream of ``sub``'s, ended, and its (id, type) pairs as SSE gives them."""
    async with aiohttp.ClientSession(headers=auth_headers(**claims(sub))) as http:
        async with http.post(f"{site.base}/v1/streams",
                             json={"query": "q", "generator": "external"}) as resp:
            assert resp.status == 201, await resp.text()
            sid = str((await resp.json())["stream_id"])
        status, reply = await publish(http, site.base, sid, [
            {"type": "status", "data": {"state": "running"}, "seq": 1},
            *({"type": "partial_result", "data": {"chunk": f"c{i} ", "chunkIndex": i},
               "seq": i + 2} for i in range(5)),
            {"type": "result", "data": {"text": "done"}, "seq": 7}])
        assert status == 200, reply
        wire = await tc.read(http, site.base, sid, "sse")
    return sid, [(i, name) for i, name, _ in wire.items]


async def fill_window(site: Limited, sub: str) -> None:
    """``LIMIT`` requests of ``sub`` made ``AGE_S`` ago, in the gateway's own key."""
    r = aioredis.from_url(site.redis_url)
    try:
        secs, micros = await r.time()
        then = secs * 1000 + micros / 1000 - AGE_S * 1000
        key = f"tm:{{{key_part(site.namespace)}}}:rpm:u:{key_part('acme')}:{key_part(sub)}"
        await r.zadd(key, {f"earlier-{i}": then for i in range(LIMIT)})
        await r.pexpire(key, WINDOW_MS)
    finally:
        await r.aclose()


async def refused_now(site: Limited, sub: str) -> int:
    """The Retry-After of the gateway's 429 to ``sub`` (asserting it is one)."""
    async with aiohttp.ClientSession(headers=auth_headers(**claims(sub))) as http:
        async with http.get(f"{site.base}/v1/streams?session=s") as resp:
            body = await resp.json(content_type=None)
            assert resp.status == 429 and body["limit"] == "requestsPerMinute", body
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            return int(resp.headers["Retry-After"])


async def test_the_python_sdk_waits_out_a_real_429_and_reads_each_event_once(
        limited: Limited) -> None:
    sid, wire = await finished_stream(limited, "py-user")
    await fill_window(limited, "py-user")
    retry_after = await refused_now(limited, "py-user")
    assert 1 <= retry_after <= 3
    # Its own backoff alone would retry within 0.05 s, ten times, and give up.
    backoff = Backoff(initial=0.05, max_delay=0.05, max_attempts=10, max_elapsed=None)
    began = time.monotonic()
    async with Client(limited.base, token=token(**claims("py-user")), backoff=backoff,
                      transports=("sse",)) as c:
        items = [item async for item in c.follow(sid)]
        waited = time.monotonic() - began
        assert c.reconnects >= 1
    events = [(e.id, e.type) for e in items if isinstance(e, StreamEvent)]
    assert events == wire
    assert waited >= retry_after - 1.0, waited


async def test_the_js_sdk_waits_out_a_real_429_and_reads_each_event_once(
        limited: Limited) -> None:
    sid, wire = await finished_stream(limited, "js-user")
    await fill_window(limited, "js-user")
    retry_after = await refused_now(limited, "js-user")
    began = time.monotonic()
    lines = await run_node(JS / "test" / "follow.mjs", {
        "base": limited.base, "token": token(**claims("js-user")), "streams": [sid],
        "transports": ["sse"],
        "options": {"backoffBaseMs": 50, "backoffMaxMs": 50, "maxRetries": 10}},
        timeout=60)
    waited = time.monotonic() - began
    retries = [ln["retry"] for ln in lines if "retry" in ln]
    assert retries and retries[0]["delayMs"] >= (retry_after - 1) * 1000, retries
    assert [(i, t) for i, t, _ in events_of(lines, sid)] == wire
    assert {"stream": sid, "end": True} in lines, lines[-3:]
    assert waited >= retry_after - 1.0, waited
