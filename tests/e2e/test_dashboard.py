"""The /dashboard page in headless Chromium (Debian's /usr/bin/chromium through Playwright)
against a real broker, gateway and worker: it shows the figures GET /v1/analytics answers,
draws its charts, follows the live feed without a reload, lists the real stream ids, says
so when the token is refused, and axe-core finds no accessibility violation.

Screenshots go to ``test-artifacts/dashboard/`` (git ignores it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_analytics import Streams
from tests.procs import REPO, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = REPO / "test-artifacts" / "dashboard"
#: Analytics published and the live document sent this often (seconds).
INTERVAL = "0.5"
#: Each SSE response (the analytics feed's too) ends after this long.
FEED_RESPONSE_S = 4
#: What the page writes for a figure that is null (no stream ended, no sample).
DASH = "\u2014"

#: Stroke colours of each chart's series, in order (gateway/static/dashboard.js, COLORS).
COLORS = [(0x1F, 0x5F, 0xBF), (0x1A, 0x7A, 0x43), (0xB4, 0x23, 0x18), (0x8A, 0x5A, 0x00)]


def _count(n: Any) -> str:
    return DASH if n is None else str(n)


def _rate(r: Any) -> str:
    return DASH if r is None else f"{r * 100:.1f} %"


def _ms(v: Any) -> str:
    if v is None:
        return DASH
    return f"{v:.{0 if v >= 100 else 1 if v >= 1 else 2}f} ms"


def expected_figures(doc: dict[str, Any], window: str = "5m") -> dict[str, str]:
    """What the page must show for ``doc`` (the same formatting as dashboard.js)."""
    w = doc["windows"][window]
    s, fe = w["streams"], w["first_event_ms"]
    return {
        "created": _count(s["created"]), "completed": _count(s["completed"]),
        "failed": _count(s["failed"]), "cancelled": _count(s["cancelled"]),
        "success-rate": _rate(s["success_rate"]), "failure-rate": _rate(s["failure_rate"]),
        "first-p50": _ms(fe["p50"]), "first-p99": _ms(fe["p99"]),
        "cutoffs": _count(w["cutoffs"]),
        "active-streams": _count(doc["active"]["streams"]),
        "connections": _count(doc["active"]["connections"]),
    }


def expected_tables(doc: dict[str, Any], window: str = "5m") -> dict[str, list[list[str]]]:
    """The rows the page's tables must show for ``doc`` (first columns; times aside)."""
    w = doc["windows"][window]
    return {
        "resume-table": [[src, _count(r["count"]), _ms(r["p50"]), _ms(r["p90"]), _ms(r["p99"])]
                         for src, r in sorted(w["resume_ms"].items())],
        "tenants-table": [[u["tenant"], _count(u["streams"]), _count(u["events"])]
                          for u in w["usage"]["tenants"]],
        "users-table": [[u["tenant"], u["user"], _count(u["streams"]), _count(u["events"])]
                        for u in w["usage"]["users"]],
        "recent-streams": [[s["stream"], s["status"], s["tenant"]]
                           for s in doc["recent"]["streams"]],
        "recent-errors": [[e["stream"], e["tenant"], e["code"], e["message"]]
                          for e in doc["recent"]["errors"]],
        "variants-table": [
            [exp, v, _count(f["streams"]["created"]), _rate(f["streams"]["success_rate"]),
             _rate(f["streams"]["failure_rate"]), _ms(f["first_event_ms"]["p50"]),
             _ms(f["first_event_ms"]["p99"]), _count(f["cutoffs"])]
            for exp, vs in sorted(w["variants"].items()) for v, f in sorted(vs.items())],
    }


#: The columns of each table that :func:`expected_tables` gives.
_COLUMNS = {"resume-table": slice(0, 5), "tenants-table": slice(0, 3),
            "users-table": slice(0, 4), "recent-streams": slice(0, 3),
            "recent-errors": slice(1, 5), "variants-table": slice(0, 8)}


async def page_figures(page: Page) -> dict[str, str]:
    figures: dict[str, str] = await page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('dd[id^="fig-"]')]
               .map(el => [el.id.slice(4), el.textContent]))""")
    return figures


async def table_rows(page: Page, table: str) -> list[list[str]]:
    rows: list[list[str]] = await page.evaluate(
        """(id) => [...document.getElementById(id).tBodies[0].rows]
               .map(tr => [...tr.cells].map(td => td.textContent))""", table)
    return rows


async def analytics(base: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=headers) as session, \
            session.get(f"{base}/v1/analytics?window=5m") as resp:
        assert resp.status == 200, await resp.text()
        doc: dict[str, Any] = await resp.json()
    return doc


ADMIN = token(sub="operator", scope="admin")


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 20.0) -> Any:
    """``check()`` once it returns something true (polled), else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s (last: {last!r})")


async def create(http: aiohttp.ClientSession, base: str, **options: Any) -> str:
    body = {"query": "dashboard test", "options": {"tokens": 4, "tokens_per_second": 200,
                                                     **options}}
    async with http.post(f"{base}/v1/streams", json=body) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["stream_id"])


async def read_whole(http: aiohttp.ClientSession, base: str, sid: str) -> sse_client.Reply:
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
    assert reply.ended_by_server and reply.stream_events[-1].event in sse_client.TERMINAL
    return reply


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Chromium with a fresh profile; nothing is downloaded (no `playwright install`)."""
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            await context.close()


class Watched:
    """A page whose script errors and CSP violations are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text else None)


async def open_page(context: BrowserContext, url: str) -> Watched:
    watched = Watched(await context.new_page())
    await watched.page.goto(url)
    return watched


async def axe_violations(context: BrowserContext, url: str,
                         ready: Callable[[Page], Awaitable[None]]) -> list[dict[str, Any]]:
    """axe-core's violations on the page at ``url`` once ``ready``. axe is injected as an
    inline script, which the page's CSP refuses, so this page (only) bypasses the CSP, as
    Playwright's ``bypass_csp`` does, through the DevTools protocol."""
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Page.setBypassCSP", {"enabled": True})
    await page.goto(url)
    await ready(page)
    await page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = await page.evaluate("axe.run()")
    await page.close()
    violations: list[dict[str, Any]] = [
        {"id": v["id"], "impact": v["impact"],
         "nodes": [n["target"] for n in v["nodes"]]} for v in result["violations"]]
    return violations


async def chart_pixels(page: Page, chart: str, rgb: tuple[int, int, int]) -> int:
    """Pixels of ``chart``'s canvas near colour ``rgb`` (a series' stroke)."""
    n: int = await page.evaluate(
        """([id, rgb]) => {
             const c = document.querySelector('#' + id + ' canvas');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0;
             for (let i = 0; i < d.length; i += 4) {
               if (d[i + 3] > 200 && Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1])
                   + Math.abs(d[i + 2] - rgb[2]) < 40) n++;
             }
             return n;
           }""", [chart, list(rgb)])
    return n


async def test_the_dashboard_shows_live_analytics_of_real_streams(
        cluster: Cluster, http: aiohttp.ClientSession, browser: BrowserContext) -> None:
    cluster.env.update(TIDEMARK_ANALYTICS_INTERVAL=INTERVAL,
                       TIDEMARK_ANALYTICS_LIVE_INTERVAL=INTERVAL)
    cluster.worker()
    # Short feed responses: the page must follow the feed across the browser's reconnects.
    base = await cluster.gateway(TIDEMARK_MAX_RESPONSE_SECONDS=str(FEED_RESPONSE_S))

    # Streams that complete, fail and get cancelled, each read by a client (first-event
    # latency), the cancelled one resumed with Last-Event-ID (a resume from memory). Three
    # carry A/B variants, made as the create path makes them (nothing assigns variants at
    # POST /v1/streams on this branch).
    async with Streams(cluster) as streams:
        variants = {(await streams.create("default", "tester",
                                          experiments={"coalesce": v})).stream_id: v
                    for v in ("fast", "fast")}
        slow = await streams.create("default", "tester", experiments={"coalesce": "slow"},
                                    fail_at_seq=3)
    variants[slow.stream_id] = "slow"
    completed = [await create(http, base), *(sid for sid, v in variants.items() if v == "fast")]
    failed = [await create(http, base, fail_at_seq=3), slow.stream_id]
    cancelled = await create(http, base, tokens=400, tokens_per_second=10)
    for sid in completed + failed:
        await read_whole(http, base, sid)
    url = f"{base}/v1/streams/{cancelled}/events"
    head = await sse_client.read(http, url, max_events=3)
    async with http.post(f"{base}/v1/streams/{cancelled}/cancel") as resp:
        assert resp.status == 202
    rest = await sse_client.read(http, url, last_event_id=head.last_id)
    assert rest.stream_events[-1].event == "cancelled"

    statuses = {**dict.fromkeys(completed, "completed"), **dict.fromkeys(failed, "failed"),
                cancelled: "cancelled"}

    async def counted() -> dict[str, Any] | None:
        doc = await analytics(base)
        w = doc["windows"]["5m"]
        s = w["streams"]
        recent = {r["stream"]: r["status"] for r in doc["recent"]["streams"]}
        done = ((s["created"], s["completed"], s["failed"], s["cancelled"]) == (6, 3, 2, 1)
                and w["first_event_ms"]["count"] == 6 and w["resume_ms"]["memory"]["count"] == 1
                and recent == statuses)
        return doc if done else None

    await until(counted, "GET /v1/analytics counted the streams")

    dashboard = f"{base}/dashboard#token={ADMIN}"
    watched = await open_page(browser, dashboard)
    page = watched.page
    # The token left the address bar; the browser sends it to the analytics routes only.
    assert "#token" not in page.url
    cookies = await browser.cookies(f"{base}/v1/analytics/live")
    assert [(c["name"], c["value"], c["path"], c["sameSite"]) for c in cookies] == \
        [("tidemark_token", ADMIN, "/v1/analytics", "Strict")]
    assert await browser.cookies(f"{base}/v1/streams") == []

    # The page's figures are the document's (polled: both move with each publish).
    async def same_figures() -> bool:
        doc = await analytics(base)
        shown = await page_figures(page)
        want = expected_figures(doc)
        if {k: shown.get(k) for k in want} != want:
            return False
        for table, rows in expected_tables(doc).items():
            cells = [row[_COLUMNS[table]] for row in await table_rows(page, table)]
            if cells != rows:
                return False
        return True

    await until(same_figures, "the page showed GET /v1/analytics's figures")
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SHOTS / "dashboard.png", full_page=True)
    shown = await page_figures(page)
    assert (shown["created"], shown["completed"], shown["failed"], shown["cancelled"]) == \
        ("6", "3", "2", "1")
    assert shown["success-rate"] == "50.0 %" and shown["failure-rate"] == "33.3 %"
    assert shown["first-p50"].endswith(" ms") and shown["first-p99"].endswith(" ms")
    assert [row[:2] for row in await table_rows(page, "resume-table")] == \
        [["kafka", "0"], ["memory", "1"]]
    assert "Live" in await page.inner_text("#connection")
    assert [row[:5] for row in await table_rows(page, "variants-table")] == [
        ["coalesce", "fast", "2", "100.0 %", "0.0 %"],
        ["coalesce", "slow", "1", "0.0 %", "100.0 %"]]

    # Every chart exists and is drawn with its series.
    charts = await page.eval_on_selector_all(
        ".chart", "els => els.map(e => [e.id, e.dataset.series, Number(e.dataset.points),"
                  " e.querySelectorAll('canvas').length])")
    by_id = {c[0]: c[1:] for c in charts}
    assert by_id["chart-streams"][0] == "created,completed,failed,cancelled"
    assert by_id["chart-first"][0] == "p50,p99"
    assert by_id["chart-active"][0] == "active streams,connections"
    assert by_id["chart-resume"][0] == "kafka p50,kafka p99,memory p50,memory p99"
    assert by_id["chart-variants"][0] == "coalesce=fast,coalesce=slow"
    assert set(by_id) == {"chart-streams", "chart-success", "chart-first", "chart-active",
                          "chart-resume", "chart-cutoffs", "chart-variants"}
    assert all(points >= 1 and canvases == 1 for _, points, canvases in by_id.values()), by_id
    # ... and described in words for screen readers.
    described = await page.eval_on_selector(
        "#chart-streams", "el => document.getElementById("
                          "el.getAttribute('aria-describedby')).textContent")
    assert described.startswith(f"{by_id['chart-streams'][1]} points; newest: created "), \
        described
    # Each series with data has its stroke on the canvas (series with equal values overlap:
    # then one of them). The axes and the grid are drawn in other colours.
    drawn = {"chart-streams": [[0], [1], [2], [3]], "chart-success": [[0]],
             "chart-first": [[0], [1]], "chart-active": [[0, 1]], "chart-resume": [[2, 3]],
             "chart-cutoffs": [[0]], "chart-variants": [[0], [1]]}
    for chart, groups in drawn.items():
        for group in groups:
            pixels = [await chart_pixels(page, chart, COLORS[i]) for i in group]
            assert max(pixels) > 10, (chart, group, pixels)

    # Recent streams and errors list the real ids.
    rows = await table_rows(page, "recent-streams")
    assert {row[0]: row[1] for row in rows} == statuses
    assert {row[0]: row[7] for row in rows if row[0] in variants} == {
        sid: f"coalesce={v}" for sid, v in variants.items()}
    errors = await table_rows(page, "recent-errors")
    assert sorted(row[1] for row in errors) == sorted(failed)
    assert {row[3] for row in errors} == {"demo_failure"}

    # Live: more streams, and the figures change without a reload, after the feed's first
    # response has ended and the browser has opened the next.
    await page.evaluate("window.tidemarkTestMark = 'same page'")
    async def reopened() -> bool:
        opens = await page.get_attribute("#connection", "data-opens")
        return int(opens or 0) >= 2

    await until(reopened, "the browser reopened the feed", timeout=FEED_RESPONSE_S + 5)
    more = [await create(http, base) for _ in range(2)]
    for sid in more:
        await read_whole(http, base, sid)

    async def updated() -> bool:
        shown = await page_figures(page)
        recent = {row[0]: row[1] for row in await table_rows(page, "recent-streams")}
        return ((shown["created"], shown["completed"]) == ("8", "5")
                and all(recent.get(sid) == "completed" for sid in more))

    await until(updated, "the page's figures and recent streams followed the live feed")
    assert await page.evaluate("window.tidemarkTestMark") == "same page"
    await until(same_figures, "the page showed GET /v1/analytics's newer figures")
    await page.screenshot(path=SHOTS / "dashboard-updated.png", full_page=True)
    assert watched.errors == []

    async def board_ready(p: Page) -> None:
        await p.wait_for_selector("#board:not([hidden])")
        await p.wait_for_function(
            "document.getElementById('fig-created').textContent === '8'")

    assert await axe_violations(browser, dashboard, board_ready) == []


async def test_a_refused_token_says_why_on_the_page(
        cluster: Cluster, browser: BrowserContext) -> None:
    base = await cluster.gateway()
    cases = [
        ("not.a-token.really", "401", "refused the token"),
        (token(sub="reader"), "403", "admin scope"),  # valid, but without admin
    ]
    SHOTS.mkdir(parents=True, exist_ok=True)
    for n, (bad, status, words) in enumerate(cases):
        watched = await open_page(browser, f"{base}/dashboard#token={bad}")
        page = watched.page
        await page.wait_for_selector("#auth-error:not([hidden])")
        text = await page.inner_text("#auth-error")
        assert status in text and words in text, text
        assert await page.is_visible("#token"), "the paste field is offered again"
        assert not await page.is_visible("#board")
        assert await page.evaluate("sessionStorage.length") == 0, "a refused token is kept"
        assert watched.errors == []
        await page.screenshot(path=SHOTS / f"refused-{status}.png", full_page=True)
        await page.close()

        async def error_shown(p: Page) -> None:
            await p.wait_for_selector("#auth-error:not([hidden])")

        assert await axe_violations(browser, f"{base}/dashboard#token={bad}",
                                    error_shown) == [], n

    # The paste field: a good token from it connects (here an operator's view of every
    # tenant, /dashboard?tenant=*).
    watched = await open_page(browser, f"{base}/dashboard?tenant=*")
    page = watched.page
    assert await page.inner_text("#connection") == "Not connected."
    await page.fill("#token", ADMIN)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#board:not([hidden])")
    assert not await page.is_visible("#auth-error")
    assert await page.evaluate("sessionStorage.getItem('tidemark.dashboard.token')") == ADMIN
    assert await page.inner_text("#scope") == "(tenant all, last 5m)"
    assert watched.errors == []
