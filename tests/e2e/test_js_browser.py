"""The JavaScript SDK in headless Chromium (Debian's, through Playwright): the demo page,
served by the gateway or through a proxy, loads the SDK's browser bundle and follows
streams. Straight to the gateway it uses the WebSocket; through a proxy that refuses
WebSocket upgrades it falls back to SSE; through a proxy that buffers responses, to
long-poll. Every stream arrives complete, each event once, in order, equal to what the
wire gives (tests/transport_clients.py). The page itself answers a question with it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext

from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_dashboard import browser, open_page
from tests.procs import token
from tests.proxies import start_buffering_proxy, start_ws_refusing_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["browser"]  # the fixture, shared with the dashboard's tests

TOKEN = token()
#: Streams followed at once per way in.
N = 5
#: An SSE response with no byte for this long is taken for a buffering proxy (the
#: gateway's first byte, its `retry:` line, comes at once).
FIRST_BYTE_MS = 1500

#: Creates N streams from the page and follows them all with one client; returns each
#: one's events (id, type, envelope), the transports that delivered them, and the
#: reconnects. The streams last longer than the first-byte deadline (a buffering proxy
#: would otherwise hand over a whole response, done, in time).
FOLLOW = """async ([n, firstByteMs]) => {
  const client = new Tidemark.TidemarkClient(location.origin, {
    token: async () => new URLSearchParams(location.search).get("token"),
    firstByteTimeoutMs: firstByteMs,
  });
  const ids = [];
  for (let i = 0; i < n; i++) {
    const created = await client.create({
      query: "browser " + i, options: { tokens: 30, tokens_per_second: 10 } });
    ids.push(created.stream_id);
  }
  const out = {};
  await Promise.all(ids.map(async (id) => {
    const got = out[id] = { events: [], transports: [], retries: [] };
    for await (const ev of client.follow(id, { onRetry: (r) => got.retries.push(r) })) {
      got.events.push([ev.id, ev.type, ev.id === null ? ev.data :
        { stream: ev.stream, seq: ev.seq, type: ev.type, ts: ev.ts, data: ev.data }]);
      if (!got.transports.includes(ev.transport)) got.transports.push(ev.transport);
    }
  }));
  return { streams: out, remembered: client.transport };
}"""


def wire(outcome: tc.Outcome) -> list[list[Any]]:
    return [[i, e, json.loads(d)] for i, e, d in outcome.items]


async def test_the_browser_falls_back_behind_proxies_and_gets_every_event_once(
        cluster: Cluster, http: aiohttp.ClientSession, browser: BrowserContext) -> None:
    cluster.worker()
    base = await cluster.gateway()
    no_ws, no_ws_url = start_ws_refusing_proxy([base], cluster.logdir)
    buffering, buffering_url = start_buffering_proxy([base], cluster.logdir)
    cluster.procs += [no_ws, buffering]
    for url, transport in ((base, "ws"), (no_ws_url, "sse"), (buffering_url, "poll")):
        watched = await open_page(browser, f"{url}/?token={TOKEN}")
        result = await watched.page.evaluate(FOLLOW, [N, FIRST_BYTE_MS])
        assert watched.errors == []
        await watched.page.close()
        assert result["remembered"] == transport, url
        assert len(result["streams"]) == N
        for sid, got in result["streams"].items():
            want = wire(await tc.read(http, base, sid, "sse"))
            assert want[-1][1] == "result"
            assert got["events"] == want, (transport, sid)
            assert got["transports"] == [transport], (transport, sid, got["retries"])
            fell_back = [r["transport"] for r in got["retries"] if r["fellBack"]]
            assert fell_back == {"ws": [], "sse": ["ws"], "poll": ["ws", "sse"]}[transport]


async def test_the_demo_page_answers_with_the_sdk(
        cluster: Cluster, http: aiohttp.ClientSession, browser: BrowserContext) -> None:
    cluster.worker()
    base = await cluster.gateway()
    watched = await open_page(browser, f"{base}/?token={TOKEN}")
    page = watched.page
    await page.fill("#query", "what is a tidemark?")
    await page.fill("#tokens", "12")
    await page.fill("#tps", "40")
    await page.click("#ask")
    await page.wait_for_selector("#badge[data-state=completed]", timeout=20000)
    sid = await page.inner_text("#f-stream")
    want = await tc.read(http, base, sid, "sse")
    result = json.loads(want.items[-1][2])
    assert await page.inner_text("#answer") == result["data"]["text"]
    assert await page.inner_text("#f-count") == str(len(want.items))
    assert await page.inner_text("#f-last") == want.items[-1][0]
    assert await page.inner_text("#f-transport") == "ws"
    assert watched.errors == []
