"""Webhooks end to end: a real gateway, worker and ``tidemark webhooks`` process on the
session's broker, delivering to a receiver this test runs on loopback. The receiver
verifies every request with the Standard Webhooks project's own library
(``standardwebhooks``), not with Tidemark's signer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from jsonschema import Draft202012Validator
from standardwebhooks.webhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from eventlog.webhooks import new_secret
from schemas.validation import load_schema
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_positions import as_version_1
from tests.procs import ALL_SCOPES, auth_headers, free_port, scrape

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ALLOW = {"TIDEMARK_WEBHOOK_ALLOW": "127.0.0.1/32"}
MANAGE = f"{ALL_SCOPES} webhooks:manage"
PAYLOAD = Draft202012Validator(load_schema("webhook_payload"))


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    #: What the receiver answered (a slow answer comes after the sender gave up).
    status: int
    slow: bool = False


@dataclass
class Receiver:
    """Answers as scripted: ``plan`` is consumed one action per request (``fail``: 500,
    ``slow``: 200 after ``slow_s``, ``ok``: 200), then ``default``."""

    secret: str
    plan: list[str] = field(default_factory=list)
    default: str = "ok"
    slow_s: float = 2.5
    received: list[Received] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = StandardWebhook(self.secret).verify(raw, dict(request.headers))
        except WebhookVerificationError as exc:
            self.unverified.append(f"{exc}: {dict(request.headers)}")
            return web.Response(status=400)
        action = self.plan.pop(0) if self.plan else self.default
        status = 500 if action == "fail" else 200
        self.received.append(Received(request.headers["webhook-id"], body, status,
                                      slow=action == "slow"))
        if action == "slow":
            await asyncio.sleep(self.slow_s)
        return web.Response(status=status)

    def accepted(self) -> list[Received]:
        return [r for r in self.received if r.status == 200]

    def first_seen(self) -> list[Received]:
        """Accepted deliveries, each webhook-id once (the first time)."""
        seen: set[str] = set()
        out = []
        for r in self.accepted():
            if r.webhook_id not in seen:
                seen.add(r.webhook_id)
                out.append(r)
        return out


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(secret=new_secret())
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def register(http: aiohttp.ClientSession, base: str, headers: dict[str, str],
                   **body: Any) -> dict[str, Any]:
    async with http.post(f"{base}/v1/webhooks", json=body, headers=headers) as resp:
        answer: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 201, answer
        return answer


async def create(http: aiohttp.ClientSession, base: str, headers: dict[str, str],
                 **body: Any) -> str:
    async with http.post(f"{base}/v1/streams", json=body, headers=headers) as resp:
        answer = await resp.json()
        assert resp.status == 201, answer
        return str(answer["stream_id"])


async def test_every_event_arrives_signed_in_order_through_failures_and_a_sigkill(
        cluster: Cluster, http: aiohttp.ClientSession, receiver: Receiver) -> None:
    settings = {**ALLOW, "TIDEMARK_WEBHOOK_TIMEOUT": "1", "TIDEMARK_WEBHOOK_RETRY_BASE": "0.1",
                "TIDEMARK_WEBHOOK_RETRY_MAX": "0.5", "TIDEMARK_WEBHOOK_MAX_ATTEMPTS": "100"}
    base = await cluster.gateway(**settings)
    cluster.worker()
    cluster.webhooks(**settings)
    owner = auth_headers(sub="ops", tenant="hooks-a", scope=MANAGE)
    webhook = await register(http, base, owner, url=receiver.url, secret=receiver.secret,
                             eventTypes=["status", "partial_result", "result"])
    assert webhook["secret"] == receiver.secret and webhook["signer"] == "standard"
    # It fails, then answers too slowly, then comes back.
    receiver.plan = ["fail"] * 4 + ["slow"] * 2
    streams = [await create(http, base, owner, query=f"webhooks {i}",
                            options={"tokens": 25, "tokens_per_second": 12})
               for i in range(2)]
    await until("some deliveries", lambda: len(receiver.first_seen()) >= 8)
    # It fails again, and the delivery process is SIGKILLed while deliveries are retried
    # (past a commit interval: nothing undelivered may have been committed).
    receiver.default = "fail"
    failing = len(receiver.received)
    await until("retries", lambda: len(receiver.received) >= failing + 4)
    await asyncio.sleep(1.5)
    cluster.proc("webhooks0").kill()
    killed_at = len(receiver.first_seen())
    receiver.default = "ok"
    cluster.webhooks(**settings)

    expected: dict[str, list[str]] = {}
    for sid in streams:
        reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                      headers=owner)
        # Webhook ids are the events' positions in codec version 1 (idempotency keys
        # that an upgrade does not change: docs/webhooks.md).
        expected[sid] = [as_version_1(e.id) for e in reply.stream_events
                         if e.event in ("status", "partial_result", "result") and e.id]
        assert reply.stream_events[-1].event == "result"
    total = sum(map(len, expected.values()))
    await until("every delivery", lambda: len(receiver.first_seen()) >= total, timeout=90)
    assert killed_at < total, "the kill came after everything was delivered"

    assert receiver.unverified == []
    first = receiver.first_seen()
    assert {sid: [r.webhook_id for r in first if r.body["stream"] == sid]
            for sid in streams} == expected  # exactly the events, in order per stream
    for r in receiver.received:
        PAYLOAD.validate(r.body)
        assert r.body["eventId"] == r.webhook_id
    assert [r.status for r in receiver.received[:4]] == [500] * 4
    assert sum(r.slow for r in receiver.received) == 2


async def test_dead_letters_replay_ssrf_and_tenant_isolation(
        cluster: Cluster, http: aiohttp.ClientSession, receiver: Receiver) -> None:
    settings = {**ALLOW, "TIDEMARK_WEBHOOK_TIMEOUT": "1", "TIDEMARK_WEBHOOK_RETRY_BASE": "0.1",
                "TIDEMARK_WEBHOOK_RETRY_MAX": "0.2", "TIDEMARK_WEBHOOK_MAX_ATTEMPTS": "2"}
    base = await cluster.gateway(**settings)
    deliverer = cluster.webhooks(**settings)
    a = auth_headers(sub="ops", tenant="hooks-a", scope=MANAGE)
    b = auth_headers(sub="ops", tenant="hooks-b", scope=MANAGE)

    for url in ("http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
                "http://127.0.0.2/hook", "http://[::ffff:10.0.0.1]/"):
        async with http.post(f"{base}/v1/webhooks", headers=a,
                             json={"url": url, "eventTypes": ["result"]}) as resp:
            assert resp.status == 400, url
            assert resp.content_type == "application/problem+json"
            assert (await resp.json(content_type=None))["field"] == "/url"
    async with http.post(f"{base}/v1/webhooks", json={"url": receiver.url,
                                                      "eventTypes": ["result"]}) as resp:
        assert resp.status == 403  # the test user's token lacks webhooks:manage

    receiver.default = "fail"
    webhook = await register(http, base, a, url=receiver.url, secret=receiver.secret,
                             eventTypes=["metadata"])
    wid = webhook["id"]
    async with http.get(f"{base}/v1/webhooks", headers=a) as resp:
        listed = (await resp.json())["webhooks"]
    assert [w["id"] for w in listed] == [wid] and "secret" not in listed[0]
    async with http.get(f"{base}/v1/webhooks", headers=b) as resp:
        assert (await resp.json())["webhooks"] == []
    for method, path in (("DELETE", ""), ("GET", "/dead-letters")):
        async with http.request(method, f"{base}/v1/webhooks/{wid}{path}", headers=b) as resp:
            assert resp.status == 404, (method, path)

    ours = await create(http, base, a, query="hooks", generator="external")
    theirs = await create(http, base, b, query="hooks", generator="external")
    for sid, headers in ((theirs, b), (ours, a)):
        async with http.post(f"{base}/v1/streams/{sid}/events", headers=headers, json=[
                {"type": "metadata", "data": {"n": 1}},
                {"type": "metadata", "data": {"n": 2}}]) as resp:
            assert resp.status in (200, 201), await resp.text()

    letters: list[dict[str, Any]] = []

    async def dead_letters(headers: dict[str, str] = a) -> list[dict[str, Any]]:
        async with http.get(f"{base}/v1/webhooks/{wid}/dead-letters", headers=headers) as resp:
            assert resp.status == 200
            found: list[dict[str, Any]] = (await resp.json())["deadLetters"]
            return found

    deadline = time.monotonic() + 60
    while len(letters) < 2:
        assert time.monotonic() < deadline, letters
        letters = await dead_letters()
        await asyncio.sleep(0.2)
    assert [d["payload"]["data"] for d in letters] == [{"n": 1}, {"n": 2}]
    assert all(d["stream"] == ours and d["attempts"] == 2 and "500" in d["reason"]
               for d in letters)
    assert len(receiver.received) == 4  # two attempts each, nothing of the other tenant
    assert {r.body["stream"] for r in receiver.received} == {ours}

    first = letters[0]
    replay = f"{base}/v1/webhooks/{wid}/dead-letters/{first['id']}/replay"
    async with http.post(replay, headers=b) as resp:
        assert resp.status == 404  # another tenant's
    receiver.default = "ok"
    async with http.post(replay, headers=a) as resp:
        assert resp.status == 202, await resp.text()
    await until("the replay", lambda: len(receiver.accepted()) == 1)
    assert receiver.accepted()[0].webhook_id == first["eventId"]
    assert receiver.accepted()[0].body == first["payload"]
    deadline = time.monotonic() + 30
    while [d["id"] for d in letters] != [letters[-1]["id"]]:
        assert time.monotonic() < deadline, letters
        await asyncio.sleep(0.2)
        letters = await dead_letters()
    assert receiver.unverified == []
    # The webhooks process counts what happened: 4 failed attempts and 2 dead letters,
    # then the replay's one attempt, delivered.
    counts = await scrape(http, deliverer.metrics_url)
    assert counts['tidemark_webhook_attempts_total{outcome="failed"}'] == 4
    assert counts['tidemark_webhook_attempts_total{outcome="ok"}'] == 1
    assert counts['tidemark_webhook_deliveries_total{outcome="dead_letter"}'] == 2
    assert counts['tidemark_webhook_deliveries_total{outcome="delivered"}'] == 1
    assert counts['tidemark_webhook_deliveries_total{outcome="dropped"}'] == 0
    assert counts["tidemark_webhook_attempt_seconds_count"] == 5
    assert counts["tidemark_webhook_deliveries_in_flight"] == 0

    async with http.delete(f"{base}/v1/webhooks/{wid}", headers=a) as resp:
        assert resp.status == 204
    async with http.get(f"{base}/v1/webhooks", headers=a) as resp:
        assert (await resp.json())["webhooks"] == []
    async with http.get(f"{base}/v1/webhooks/{wid}/dead-letters", headers=a) as resp:
        assert resp.status == 404
