"""Request hardening of a real gateway (gateway/hardening.py), over real sockets: size
limits on the request line, header lines and the URL; slow bodies (408) and slow headers
(cut); CORS by TIDEMARK_CORS_ORIGINS; security headers on pages and API answers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BODY_TIMEOUT = 1.5
MAX_HEADER = 2000
MAX_URL = 1000
MAX_BODY = 10_000
ORIGIN = "https://app.example"
OTHER = "https://other.example"


@pytest.fixture
async def gateway(cluster: Cluster) -> AsyncIterator[tuple[str, int]]:
    url = await cluster.gateway(
        TIDEMARK_AUTH="none", TIDEMARK_BODY_TIMEOUT=str(BODY_TIMEOUT),
        TIDEMARK_MAX_HEADER_BYTES=str(MAX_HEADER), TIDEMARK_MAX_URL_BYTES=str(MAX_URL),
        TIDEMARK_MAX_BODY_BYTES=str(MAX_BODY), TIDEMARK_CORS_ORIGINS=f"{ORIGIN}, {OTHER}")
    yield url, int(url.rsplit(":", 1)[1])


async def _exchange(port: int, data: bytes, *, wait: float = 10.0) -> tuple[bytes, float]:
    """Send ``data`` on a new connection; everything the gateway sends until it closes the
    connection, and how long that took."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), wait)
        return answer, time.monotonic() - start
    finally:
        writer.close()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _body(answer: bytes) -> dict[str, object]:
    body: dict[str, object] = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])
    return body


async def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_closes(
        gateway: tuple[str, int]) -> None:
    _, port = gateway
    head = (b"POST /v1/streams HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    answer, took = await _exchange(port, head + b'{"query": "sl')
    assert _status(answer) == 408, answer
    assert b"content-type: application/problem+json" in answer.lower()
    assert _body(answer)["status"] == 408
    assert b"connection: close" in answer.lower()
    # The answer comes at the deadline, and the gateway closed the connection itself
    # (reader.read() returned at EOF) at most a linger later.
    assert BODY_TIMEOUT - 0.2 <= took < BODY_TIMEOUT + 3, took


async def test_a_body_that_trickles_in_slower_than_the_deadline_is_cut(
        gateway: tuple[str, int]) -> None:
    _, port = gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/streams HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000\r\n\r\n")
        start = time.monotonic()
        answer = b""
        # One byte every 0.2 s: always "something arriving", never the whole body.
        while time.monotonic() - start < BODY_TIMEOUT + 5:
            try:
                writer.write(b" ")
                await writer.drain()
            except ConnectionError:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
        took = time.monotonic() - start
    finally:
        writer.close()
    assert _status(answer) == 408, answer
    assert took < BODY_TIMEOUT + 3, took


async def test_a_client_dribbling_its_headers_is_cut(gateway: tuple[str, int]) -> None:
    # Slowloris: the headers never end; one byte every 0.25 s keeps the socket busy.
    _, port = gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.monotonic()
    received = b""
    closed = False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        while time.monotonic() - start < BODY_TIMEOUT + 5:
            try:
                writer.write(b"a")
                await writer.drain()
                chunk = await asyncio.wait_for(reader.read(4096), 0.25)
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
        took = time.monotonic() - start
    finally:
        writer.close()
    assert closed and received == b"", received
    assert took < BODY_TIMEOUT + 2, took


async def test_an_idle_keep_alive_connection_is_closed(gateway: tuple[str, int]) -> None:
    _, port = gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert b" 200 " in head
        start = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), BODY_TIMEOUT + 5)
        took = time.monotonic() - start
    finally:
        writer.close()
    assert rest == b'{"status":"ok"}'
    assert took < BODY_TIMEOUT + 2, took


async def test_header_lines_longer_than_the_limit_are_refused(
        gateway: tuple[str, int]) -> None:
    _, port = gateway
    fits = b"a" * (MAX_HEADER - 100)
    answer, _ = await _exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + fits + b"\r\nConnection: close"
        b"\r\n\r\n")
    assert _status(answer) == 200, answer[:200]
    too_long = b"a" * (MAX_HEADER + 1)
    answer, _ = await _exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + too_long + b"\r\n\r\n")
    assert _status(answer) == 400, answer[:200]  # and the connection closed (read() ended)
    # Too many header fields: refused the same way.
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    answer, _ = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
    assert _status(answer) == 400, answer[:200]


async def test_a_url_longer_than_the_limit_is_414(gateway: tuple[str, int]) -> None:
    url, port = gateway
    async with aiohttp.ClientSession() as http:
        query = "x=" + "a" * (MAX_URL - len("/healthz?x="))
        async with http.get(f"{url}/healthz?{query}") as resp:
            assert resp.status == 200
        async with http.get(f"{url}/healthz?{query}a") as resp:
            assert resp.status == 414
            assert resp.content_type == "application/problem+json"
            body = await resp.json(content_type=None)
            assert body["status"] == 414 and body["title"] == "URI Too Long"
    # Far past it, beyond the request line limit too: refused by the parser (400).
    answer, _ = await _exchange(port, b"GET /healthz?" + b"a" * (MAX_HEADER + MAX_URL) +
                                b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert _status(answer) == 400


async def test_a_body_larger_than_the_limit_is_413(gateway: tuple[str, int]) -> None:
    url, _ = gateway
    async with aiohttp.ClientSession() as http:
        body = orjson.dumps({"query": "a" * MAX_BODY})
        async with http.post(f"{url}/v1/streams", data=body,
                             headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413
            assert resp.content_type == "application/problem+json"


async def test_cors_answers_listed_origins_only(gateway: tuple[str, int]) -> None:
    url, _ = gateway
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization, last-event-id"}
    async with aiohttp.ClientSession() as http:
        for origin in (ORIGIN, OTHER):
            async with http.options(f"{url}/v1/streams/abc/events",
                                    headers={"Origin": origin, **preflight}) as resp:
                assert resp.status == 204
                h = resp.headers
                assert h["Access-Control-Allow-Origin"] == origin
                assert h["Access-Control-Allow-Credentials"] == "true"
                allowed = {x.strip().lower() for x in h["Access-Control-Allow-Headers"]
                           .split(",")}
                assert {"authorization", "last-event-id", "content-type"} <= allowed
                assert {m.strip() for m in h["Access-Control-Allow-Methods"].split(",")} \
                    == {"GET", "POST"}
        async with http.options(f"{url}/v1/streams",
                                headers={"Origin": "https://evil.example", **preflight}) as r:
            assert r.status == 403
            assert "Access-Control-Allow-Origin" not in r.headers
        # Actual requests: the header for a listed origin (errors too), nothing otherwise.
        async with http.get(f"{url}/healthz", headers={"Origin": ORIGIN}) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
        async with http.get(f"{url}/v1/streams/nope", headers={"Origin": ORIGIN}) as resp:
            assert resp.status == 404
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        async with http.get(f"{url}/healthz", headers={"Origin": "https://evil.example"}) as r:
            assert r.status == 200
            assert not any(k.lower().startswith("access-control-") for k in r.headers)
        async with http.get(f"{url}/healthz") as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_pages_carry_security_headers_and_api_answers_nosniff(
        gateway: tuple[str, int]) -> None:
    url, _ = gateway
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as resp:
            assert resp.status == 200
            html = await resp.read()
            h = resp.headers
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["X-Frame-Options"] == "DENY"
        assert h["Referrer-Policy"] == "no-referrer"
        policy = dict(d.strip().split(" ", 1) for d in h["Content-Security-Policy"].split(";"))
        assert policy["default-src"] == "'none'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["connect-src"] == "'self'"
        # Every inline script and style of the page is allowed by its hash, nothing else.
        for tag in ("script", "style"):
            blocks = re.findall(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), html, re.S)
            assert blocks, tag
            for block in blocks:
                digest = base64.b64encode(hashlib.sha256(block).digest()).decode()
                assert f"'sha256-{digest}'" in policy[f"{tag}-src"].split(), tag
            assert "'unsafe-inline'" not in policy[f"{tag}-src"]
        for path in ("/healthz", "/v1/openapi.json", "/v1/streams/nope", "/metrics"):
            async with http.get(f"{url}{path}") as resp:
                assert resp.headers["X-Content-Type-Options"] == "nosniff", path
                assert "Content-Security-Policy" not in resp.headers, path
