"""Content processors end to end (real broker, gateway and workers): each tenant's
policy redacts, flags or blocks a card number and an email that the generator splits
across chunks; a processor plugin installed from the test tree runs; a worker SIGKILLed
mid-stream leaves the next owner to go on with exactly the events the first would have
written (nothing redacted twice, nothing leaked); CJK, right-to-left and emoji text goes
through the processors and the demo page (Debian's Chromium) unharmed."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from playwright.async_api import BrowserContext

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_dashboard import browser, open_page
from tests.e2e.test_plugins import echo_installed, plugins_listed
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.e2e.test_takeover import taken_over
from tests.procs import auth_headers, token
from workers.filters import pii_scanner
from workers.holdback import graphemes, redact

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["browser", "echo_installed"]  # the fixtures, used by name

QUERY = "pay 4111 1111 1111 1111 or mail jo.doe@example.com ok "
POLICY = {
    "default": [{"processor": "pii"}, {"processor": "sentiment", "options": {"every": 5}},
                {"processor": "relevance", "options": {"every": 5}}],
    "tenants": {
        "t-flag": [{"processor": "pii", "action": "flag"}],
        "t-block": [{"processor": "pii", "action": "block"}],
        "t-shout": [{"processor": "pii"}, {"processor": "shout"}],
        "t-none": [],
    },
}


def spell(query: str, tokens: int) -> str:
    echo = importlib.import_module("tidemark_echo")
    return "".join(echo.spell_chunks(query, tokens))


@pytest.fixture
async def content_cluster(cluster: Cluster) -> AsyncIterator[Cluster]:
    cluster.env["TIDEMARK_CONTENT_POLICY"] = json.dumps(POLICY)
    yield cluster


async def follow(base: str, tenant: str, tokens: int, query: str = QUERY,
                 ) -> list[sse_client.Event]:
    """A ``spell`` stream of ``query`` created and read whole by a user of ``tenant``."""
    async with aiohttp.ClientSession(headers=auth_headers(tenant=tenant)) as http:
        sid = await create(http, base, query=query, generator="spell",
                           options={"tokens": tokens, "tokens_per_second": 100})
        events = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                        idle_timeout=30)).stream_events
    assert_contiguous(events)
    return events


async def test_each_tenant_policy_redacts_flags_or_blocks_terms_split_across_chunks(
        echo_installed: None, content_cluster: Cluster) -> None:
    listed = {(p["group"], p["name"]): p for p in plugins_listed()}
    for name in ("pii", "profanity", "sentiment", "relevance", "language"):
        assert listed["tidemark.processors", name]["status"] == "loaded"
        assert listed["tidemark.processors", name]["distribution"] == "tidemark"
    assert listed["tidemark.processors", "shout"]["distribution"] == "tidemark-echo"
    assert listed["tidemark.processors", "shout"]["status"] == "loaded"

    content_cluster.worker()
    base = await content_cluster.gateway()
    tokens = -(-len(QUERY) // 3)  # one pass over the query, three characters a chunk
    text = spell(QUERY, tokens)
    assert text == QUERY
    redacted, flagged, blocked, shouted, plain = await asyncio.gather(
        follow(base, "default", tokens), follow(base, "t-flag", tokens),
        follow(base, "t-block", tokens), follow(base, "t-shout", tokens),
        follow(base, "t-none", tokens))

    # Redact: the chunks and the result carry the placeholders, never the terms.
    assert joined_chunks(redacted) == "pay [card] or mail [email] ok "
    assert redacted[-1].event == "result"
    assert redacted[-1].envelope["data"]["text"] == "pay [card] or mail [email] ok "
    assert redacted[-1].envelope["data"]["content"]["pii"]["found"] == {"card": 1, "email": 1}
    assert "sentiment" in redacted[-1].envelope["data"]["analysis"]
    # The answer repeats the (redacted) question: relevant, scored on the written text,
    # every 5 chunks that the pii filter let out.
    relevance = redacted[-1].envelope["data"]["analysis"]["relevance"]
    assert relevance["relevant"] and 0.3 <= relevance["score"] <= 1, relevance
    assert [e.envelope["data"]["analysis"]["chunks"] for e in redacted if e.event == "metadata"
            and "relevance" in e.envelope["data"].get("analysis", {})] == [
        5 * (i + 1) for i in range(sum(e.event == "partial_result" for e in redacted) // 5)]
    assert any("analysis" in e.envelope["data"] for e in redacted if e.event == "metadata")
    for e in redacted:
        assert "4111" not in e.data and "jo.doe" not in e.data

    # Flag: the text as it is, a metadata event after each term says where it was.
    assert joined_chunks(flagged) == QUERY
    flags = [e.envelope["data"]["contentFlag"] for e in flagged
             if e.event == "metadata" and "contentFlag" in e.envelope["data"]]
    assert [(f["kind"], QUERY[f["start"]:f["start"] + f["length"]]) for f in flags] == [
        ("card", "4111 1111 1111 1111"), ("email", "jo.doe@example.com")]
    assert flagged[-1].event == "result"

    # Block: the stream ends with content_blocked before any digit of the card.
    assert blocked[-1].event == "error"
    assert blocked[-1].envelope["data"]["code"] == "content_blocked"
    assert joined_chunks(blocked) == "pay "

    # A processor plugin runs after pii, in the policy's order.
    assert joined_chunks(shouted) == "PAY [CARD] OR MAIL [EMAIL] OK "
    assert shouted[-1].envelope["data"]["text"] == "PAY [CARD] OR MAIL [EMAIL] OK "

    # A tenant without processors gets the generator's events as they are.
    assert joined_chunks(plain) == QUERY
    assert [e.event for e in plain].count("partial_result") == tokens


async def test_a_worker_killed_mid_stream_the_next_owner_goes_on_redacting_exactly(
        echo_installed: None, content_cluster: Cluster, http: aiohttp.ClientSession) -> None:
    whole = spell(QUERY, 80)
    expected = redact(whole, pii_scanner().scan(whole, final=True).findings,
                      lambda f, _: f"[{f.kind}]")
    assert expected.count("[card]") >= 3
    await taken_over(content_cluster, http, QUERY, generator="spell", text=expected)


#: Chinese, Arabic and Hebrew (right to left), a family emoji (a ZWJ sequence of five code
#: points, one grapheme), a flag (two regional indicators) and an e with a combining acute.
WORLD = ("你好，世界！ مرحبا بالعالم שלום עולם "  # noqa: RUF001 - CJK punctuation, on purpose
         "\U0001F468\u200D\U0001F469\u200D\U0001F467 \U0001F1EF\U0001F1F5 caf\u0065\u0301 ")


async def test_multi_language_text_reaches_the_demo_page_exactly(
        echo_installed: None, content_cluster: Cluster, browser: BrowserContext) -> None:
    content_cluster.worker()
    base = await content_cluster.gateway()
    tokens = -(-len(graphemes(WORLD)) // 3)
    # Through the processors (the default tenant's pii and sentiment), on the wire: every
    # chunk is whole grapheme clusters.
    events = await follow(base, "default", tokens, WORLD)
    chunks = [e.envelope["data"]["chunk"] for e in events if e.event == "partial_result"]
    assert "".join(chunks) == WORLD
    assert [g for c in chunks for g in graphemes(c)] == graphemes(WORLD)

    # The demo page asks the same question with the spell generator (added to its list:
    # the page offers the built-in ones) and shows the answer as it streams in.
    watched = await open_page(browser, f"{base}/?token={token()}")
    page = watched.page
    await page.evaluate("""() => {
      const select = document.querySelector("#generator");
      select.add(new Option("spell", "spell"));
      select.value = "spell";
      window.seen = [];
      new MutationObserver(() => window.seen.push(
        document.querySelector("#answer").textContent)).observe(
        document.querySelector("#answer"), {childList: true, characterData: true,
                                            subtree: true});
    }""")
    await page.fill("#query", WORLD)
    await page.fill("#tokens", str(tokens))
    await page.fill("#tps", "40")
    await page.click("#ask")
    await page.wait_for_selector("#badge[data-state=completed]", timeout=20000)
    assert await page.text_content("#answer") == WORLD
    seen = await page.evaluate("window.seen")
    # Each step of the rendering is a prefix of the answer made of whole clusters.
    for text in seen:
        assert WORLD.startswith(text)
        assert graphemes(text) == graphemes(WORLD)[:len(graphemes(text))]
    assert watched.errors == []

