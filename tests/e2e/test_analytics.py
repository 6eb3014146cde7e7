"""``GET /v1/analytics`` and ``/v1/analytics/live`` end to end: a real broker, two real
gateways and a worker; streams in two tenants and two A/B variants that complete, fail
and get cancelled, read new and resumed from memory and from Kafka. Checked as an
operator would: counts exact, rates right, percentiles within the bucket error, the
same document from both gateways, tenants kept apart, the live feed updating."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from eventlog.clients import make_producer, started, stop_client
from eventlog.index import StreamInfo
from eventlog.settings import load_settings
from eventlog.streams import StreamCreator
from gateway.analytics_hist import RELATIVE_ERROR
from schemas.openapi_analytics import document_schema
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_slow_client import metric, produce
from tests.procs import auth_headers
from tests.sse_client import Reply

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FAST = {"tokens": 5, "tokens_per_second": 200}
SETTINGS = {"TIDEMARK_ANALYTICS_INTERVAL": "0.5", "TIDEMARK_ANALYTICS_LIVE_INTERVAL": "0.5"}
SCHEMA = Draft202012Validator(document_schema())


def admin(tenant: str, sub: str = "root") -> dict[str, str]:
    return auth_headers(sub=sub, tenant=tenant, scope="admin")


def user(tenant: str, sub: str) -> dict[str, str]:
    return auth_headers(sub=sub, tenant=tenant)


async def _zero(topic: str, partition: int) -> int:
    return 0  # a floor at or below every first event: readers scan from the start


class Streams:
    """Creates streams as the gateway's create path does (``StreamCreator``), with the
    A/B variants the experiments work will assign at POST /v1/streams."""

    def __init__(self, cluster: Cluster) -> None:
        self.settings = load_settings(cluster.env)
        self.producer: Any = None

    async def __aenter__(self) -> Streams:
        kafka = self.settings.kafka
        self.producer = await started(lambda: make_producer(kafka, role="test"), kafka,
                                      "test producer")
        self.creator = StreamCreator(self.settings.log, self.producer, floor=_zero)
        return self

    async def __aexit__(self, *_: object) -> None:
        await stop_client(self.producer)

    async def create(self, tenant: str, owner: str, *, experiments: dict[str, str] | None = None,
                     **options: Any) -> StreamInfo:
        return await self.creator.create(generator="demo", query="q",
                                         options={**FAST, **options}, with_job=True,
                                         tenant=tenant, owner=owner, experiments=experiments)


async def read(http: aiohttp.ClientSession, base: str, sid: str, headers: dict[str, str], *,
               last_event_id: str | None = None,
               sink: list[sse_client.Event] | None = None) -> tuple[Reply, float]:
    """The whole stream from ``base``, and the ms until the response's head arrived (the
    gateway sends its headers with the first event, so this bounds its own figure)."""
    hdrs = {**headers, "Accept": "text/event-stream"}
    if last_event_id is not None:
        hdrs["Last-Event-ID"] = last_event_id
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with http.get(f"{base}/v1/streams/{sid}/events", headers=hdrs) as resp:
        head_ms = (loop.time() - began) * 1000
        reply = await sse_client.parse(resp, sink=sink)
    assert reply.status == 200, reply.body
    return reply, head_ms


async def analytics(http: aiohttp.ClientSession, base: str, headers: dict[str, str],
                    query: str = "window=15m&window=1h") -> dict[str, Any]:
    async with http.get(f"{base}/v1/analytics?{query}", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "application/json"
        doc: dict[str, Any] = await resp.json()
    errors = list(SCHEMA.iter_errors(doc))
    assert not errors, errors[0]
    return doc


async def until(http: aiohttp.ClientSession, base: str, headers: dict[str, str],
                check: Any, query: str = "window=15m&window=1h",
                timeout: float = 30.0) -> dict[str, Any]:
    """Poll the document until ``check(doc)`` holds (reports come every 0.5 s)."""
    doc: dict[str, Any] = {}
    for _ in range(int(timeout / 0.25)):
        doc = await analytics(http, base, headers, query)
        if check(doc):
            return doc
        await asyncio.sleep(0.25)
    raise AssertionError(f"the document never got there: {json.dumps(doc)[:3000]}")


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """What two gateways must agree on (not when each was asked)."""
    windows = {name: {k: v for k, v in w.items() if k not in ("from", "to", "series")}
               for name, w in doc["windows"].items()}
    return {"tenant": doc["tenant"], "active": doc["active"], "windows": windows,
            "recent": doc["recent"]}


def nearest_rank(values: list[float], p: float) -> float:
    return sorted(values)[math.ceil(p * len(values)) - 1]


@pytest.mark.timeout(300)
async def test_two_gateways_answer_the_same_exact_figures_per_tenant_and_variant(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    gw_a = await cluster.gateway(**SETTINGS)
    acme_alice, acme_bob = user("acme", "alice"), user("acme", "bob")
    globex_carol = user("globex", "carol")
    async with Streams(cluster) as streams:
        done = [await streams.create("acme", "alice", experiments={"coalesce": v})
                for v in ("fast", "fast", "slow")]
        failed = await streams.create("acme", "bob", experiments={"coalesce": "slow"},
                                      fail_at_seq=3)
        long = await streams.create("acme", "alice", experiments={"coalesce": "fast"},
                                    tokens=400, tokens_per_second=10)
        globex = [await streams.create("globex", "carol") for _ in range(2)]

    # New reads (first-event latency) through gateway A.
    events: dict[str, int] = {}
    head_ms: list[float] = []
    replies: dict[str, Reply] = {}
    for info, who in [*((i, acme_alice) for i in done), (failed, acme_bob),
                      *((i, globex_carol) for i in globex)]:
        reply, ms = await read(http, gw_a, info.stream_id, who)
        assert reply.stream_events[-1].event in ("result", "error")
        events[info.stream_id] = len(reply.stream_events)
        replies[info.stream_id] = reply
        if info.tenant == "acme":
            head_ms.append(ms)
    assert replies[failed.stream_id].stream_events[-1].event == "error"

    # The long stream: followed while active, then cancelled through the gateway.
    sink: list[sse_client.Event] = []
    follow = asyncio.create_task(read(http, gw_a, long.stream_id, acme_alice, sink=sink))
    for _ in range(600):
        if len(sink) >= 3:
            break
        assert not follow.done(), follow.result()
        await asyncio.sleep(0.05)
    live = await until(http, gw_a, admin("acme"),
                       lambda d: d["active"] == {"streams": 1, "connections": 1})
    assert live["windows"]["1h"]["series"][-1]["active_streams"] == 1
    async with http.post(f"{gw_a}/v1/streams/{long.stream_id}/cancel",
                         headers=acme_alice) as resp:
        assert resp.status == 202, await resp.text()
    reply, ms = await follow
    head_ms.append(ms)
    assert reply.stream_events[-1].event == "cancelled"
    events[long.stream_id] = len(reply.stream_events)

    # A resume from gateway A's memory tail, and (gateway B started after the streams
    # were written, so its tail does not hold them) one from Kafka.
    second = replies[done[0].stream_id].stream_events[1].id
    resumed, _ = await read(http, gw_a, done[0].stream_id, acme_alice, last_event_id=second)
    assert resumed.stream_events[0].seq == 2
    gw_b = await cluster.gateway(**SETTINGS)
    old = replies[globex[0].stream_id].stream_events[1].id
    resumed, _ = await read(http, gw_b, globex[0].stream_id, globex_carol, last_event_id=old)
    assert resumed.stream_events[0].seq == 2

    acme_events = sum(n for sid, n in events.items() if sid not in
                      {g.stream_id for g in globex})
    doc = await until(http, gw_a, admin("acme"), lambda d: (
        d["windows"]["1h"]["first_event_ms"]["count"] == 5
        and d["windows"]["1h"]["resume_ms"]["memory"]["count"] == 1
        and d["active"] == {"streams": 0, "connections": 0}))
    assert doc["tenant"] == "acme"
    for name in ("15m", "1h"):
        w = doc["windows"][name]
        assert w["streams"] == {"created": 5, "completed": 3, "failed": 1, "cancelled": 1,
                                "success_rate": 0.6, "failure_rate": 0.2}
        assert w["resume_ms"]["kafka"]["count"] == 0
        assert w["cutoffs"] == 0
        assert w["usage"]["tenants"] == [{"tenant": "acme", "streams": 5,
                                          "events": acme_events}]
        assert w["usage"]["users"] == [
            {"tenant": "acme", "user": "alice", "streams": 4,
             "events": sum(events[i.stream_id] for i in (*done, long))},
            {"tenant": "acme", "user": "bob", "streams": 1, "events": events[failed.stream_id]}]
        fast, slow = w["variants"]["coalesce"]["fast"], w["variants"]["coalesce"]["slow"]
        assert fast["streams"] == {"created": 3, "completed": 2, "failed": 0, "cancelled": 1,
                                   "success_rate": 0.667, "failure_rate": 0.0}
        assert slow["streams"] == {"created": 2, "completed": 1, "failed": 1, "cancelled": 0,
                                   "success_rate": 0.5, "failure_rate": 0.5}
        assert fast["first_event_ms"]["count"] == 3 and slow["first_event_ms"]["count"] == 2
        assert fast["resume_ms"]["memory"]["count"] == 1
        assert [u["user"] for u in slow["usage"]["users"]] == ["alice", "bob"]
        assert sum(p["created"] for p in w["series"]) == 5
        assert sum(p["failed"] for p in w["series"]) == 1
    # Each reported percentile is at most the client's own figure (the gateway's clock
    # starts after the client sent the request and stops before the head is written),
    # plus the bucket error.
    first = doc["windows"]["1h"]["first_event_ms"]
    for p, name in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
        assert 0 < first[name] <= nearest_rank(head_ms, p) * (1 + RELATIVE_ERROR), (
            first, head_ms)
    assert first["p50"] <= first["p90"] <= first["p99"]
    recent = doc["recent"]["streams"]
    assert {r["stream"] for r in recent} == {i.stream_id for i in (*done, failed, long)}
    assert {r["stream"]: r["status"] for r in recent}[long.stream_id] == "cancelled"
    assert {r["stream"]: r["experiments"] for r in recent}[failed.stream_id] == {
        "coalesce": "slow"}
    (error,) = doc["recent"]["errors"]
    assert error["stream"] == failed.stream_id and error["tenant"] == "acme"
    assert error["code"] == "demo_failure" and error["retryable"] is False
    assert error["ts"] == replies[failed.stream_id].stream_events[-1].envelope["ts"]
    # Another tenant's figures, users and streams never appear.
    text = json.dumps(doc)
    assert "globex" not in text and "carol" not in text
    assert not any(g.stream_id in text for g in globex)

    # Gateway B, started later, read the same log: the same document.
    doc_b = await until(http, gw_b, admin("acme"),
                        lambda d: comparable(d) == comparable(doc), timeout=15)
    assert comparable(doc_b) == comparable(doc)

    # Globex's admin sees globex only, including B's resume from Kafka.
    g = await until(http, gw_b, admin("globex"),
                    lambda d: d["windows"]["1h"]["resume_ms"]["kafka"]["count"] == 1)
    gw = g["windows"]["1h"]
    assert g["tenant"] == "globex"
    assert gw["streams"]["created"] == 2 and gw["streams"]["completed"] == 2
    assert gw["first_event_ms"]["count"] == 2 and gw["variants"] == {}
    assert "acme" not in json.dumps(g) and "alice" not in json.dumps(g)

    # The operator (an admin of the default tenant) sees every tenant, or any one.
    everyone = await analytics(http, gw_a, admin("default"), "window=1h&tenant=*")
    assert everyone["tenant"] == "*"
    assert everyone["windows"]["1h"]["usage"]["tenants"] == [
        {"tenant": "acme", "streams": 5, "events": acme_events},
        {"tenant": "globex", "streams": 2,
         "events": sum(events[i.stream_id] for i in globex)}]
    assert everyone["windows"]["1h"]["streams"]["created"] == 7
    one = await analytics(http, gw_a, admin("default"), "window=1h&tenant=globex")
    assert one["tenant"] == "globex" and one["windows"]["1h"]["streams"] == gw["streams"]
    # A tenant admin asking for another tenant: 403.
    async with http.get(f"{gw_a}/v1/analytics?tenant=globex",
                        headers=admin("acme")) as resp:
        assert resp.status == 403


async def test_analytics_needs_an_admin_token_and_known_windows(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway(**SETTINGS, TIDEMARK_MAX_RESPONSE_SECONDS="2")
    for path in ("/v1/analytics", "/v1/analytics/live"):
        async with aiohttp.ClientSession() as anonymous, anonymous.get(base + path) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(base + path, headers=user("acme", "alice")) as resp:
            assert resp.status == 403
            assert (await resp.json())["scope"] == "admin"
        async with http.get(f"{base}{path}?window=5m&window=2m",
                            headers=admin("acme")) as resp:
            assert resp.status == 400
            assert resp.content_type == "application/problem+json"
            assert "window" in (await resp.json())["detail"]
    doc = await analytics(http, base, admin("acme"), "")
    assert list(doc["windows"]) == ["5m", "1h"]
    assert doc["windows"]["5m"]["streams"]["success_rate"] is None
    assert doc["windows"]["5m"]["first_event_ms"] == {"count": 0, "p50": None, "p90": None,
                                                      "p99": None}
    assert len(doc["windows"]["5m"]["series"]) == 30
    assert len(doc["windows"]["1h"]["series"]) == 60
    # The live feed's lifetime is bounded like every SSE response's.
    loop = asyncio.get_running_loop()
    began = loop.time()
    reply = await sse_client.read(http, f"{base}/v1/analytics/live", headers=admin("acme"),
                                  idle_timeout=5)
    assert reply.ended_by_server and 1.9 < loop.time() - began < 8
    assert reply.retry == 500 and reply.first_field == "retry"
    assert reply.comments[-1] == "closing: response lifetime reached; reconnect"
    assert len(reply.events) >= 3 and {e.event for e in reply.events} == {"analytics"}
    assert all(e.id is None for e in reply.events)


async def test_the_live_feed_sends_the_document_and_then_an_updated_one(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway(**SETTINGS)
    token = admin("acme")["Authorization"].removeprefix("Bearer ")
    # As a browser's EventSource would: the token in the query, no Authorization header.
    async with aiohttp.ClientSession() as browser, browser.get(
            f"{base}/v1/analytics/live?window=1m&access_token={token}") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        docs: list[dict[str, Any]] = []
        reader = asyncio.create_task(_documents(resp, docs))
        try:
            for _ in range(600):
                if docs:
                    break
                await asyncio.sleep(0.05)
            assert docs, "no document at once"
            assert docs[0]["tenant"] == "acme"
            assert docs[0]["windows"]["1m"]["streams"]["created"] == 0
            async with Streams(cluster) as streams:
                info = await streams.create("acme", "alice")
            for _ in range(600):
                if docs[-1]["windows"]["1m"]["streams"]["created"] == 1:
                    break
                await asyncio.sleep(0.05)
            newest = docs[-1]
            assert newest["windows"]["1m"]["streams"]["created"] == 1
            assert newest["recent"]["streams"][0]["stream"] == info.stream_id
        finally:
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
    for doc in docs:
        errors = list(SCHEMA.iter_errors(doc))
        assert not errors, errors[0]


async def _documents(resp: aiohttp.ClientResponse, docs: list[dict[str, Any]]) -> None:
    """Parse the feed: a retry line first, then ``event: analytics`` documents, no ids."""
    fields: list[str] = []
    buffer = b""
    while True:
        chunk = await resp.content.readany()
        if not chunk:
            return
        buffer += chunk
        *lines, rest = buffer.split(b"\n")
        buffer = rest
        for raw in lines:
            line = raw.decode()
            if not line:
                continue
            name = line.partition(":")[0]
            fields.append(name)
            assert fields[0] == "retry"
            assert name != "id", "the live feed sends no event ids"
            if name == "event":
                assert line == "event: analytics"
            elif name == "data":
                docs.append(json.loads(line.removeprefix("data: ")))


async def test_a_slow_client_cut_off_is_counted_once_for_its_tenant_and_variant(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway(**SETTINGS, TIDEMARK_CLIENT_BUFFER_BYTES="65536",
                                 TIDEMARK_TAIL_BYTES="1048576",
                                 TIDEMARK_CLIENT_WRITE_TIMEOUT="2")
    async with Streams(cluster) as streams:
        info = await streams.creator.create(
            generator="external", query=None, options=None, with_job=False, tenant="acme",
            owner="alice", experiments={"coalesce": "slow"})
    # A client with a tiny receive buffer that reads nothing.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = base.removeprefix("http://").split(":")
    slow.connect((host, int(port)))
    bearer = user("acme", "alice")["Authorization"]
    slow.sendall(f"GET /v1/streams/{info.stream_id}/events HTTP/1.1\r\nHost: {host}\r\n"
                 f"Authorization: {bearer}\r\nAccept: text/event-stream\r\n\r\n".encode())
    try:
        await until(http, base, admin("acme"), lambda d: d["active"]["connections"] == 1)
        await produce(cluster, [info.stream_id], 5000, payload=1000, end=True)
        for _ in range(300):
            if await metric(http, base, "tidemark_slow_client_cutoffs_total") >= 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the slow client was never cut off")
        cutoffs = await metric(http, base, "tidemark_slow_client_cutoffs_total")
        doc = await until(http, base, admin("acme"),
                          lambda d: d["windows"]["1h"]["cutoffs"] >= cutoffs)
    finally:
        slow.close()
    w = doc["windows"]["1h"]
    assert w["cutoffs"] == cutoffs == 1
    assert w["variants"]["coalesce"]["slow"]["cutoffs"] == 1
    other = await analytics(http, base, admin("globex"))
    assert other["windows"]["1h"]["cutoffs"] == 0
