"""Who may do what, checked from outside: two gateways behind HAProxy, tokens of several
tenants and users, and an attacker who swaps, forges, copies and guesses.

A stream of another tenant (or, without ``admin``, of another user) must answer exactly
like a stream that never existed; the count of cross-tenant reads must be 0.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from schemas.streamid import new_stream_id, random_part
from tests import sse_client
from tests.conftest import Cluster
from tests.procs import REPO, TEST_SECRET, Proc, base_env, free_port, start_haproxy, token
from workers.publisher import Publisher

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ALICE = {"sub": "alice", "tenant": "acme"}
BOB = {"sub": "bob", "tenant": "acme"}            # same tenant, another user
MALLORY = {"sub": "alice", "tenant": "evil"}      # another tenant, same user name
ACME_ADMIN = {"sub": "ops", "tenant": "acme", "scope": "admin"}


class Setup:
    def __init__(self, cluster: Cluster, lb: str, audit: Path) -> None:
        self.cluster = cluster
        self.lb = lb
        self.audit = audit


@pytest.fixture(scope="module")
def setup(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One worker and two gateways behind HAProxy, shared by the module's tests (each
    test makes streams of its own)."""
    logdir = tmp_path_factory.mktemp("auth")
    cluster = Cluster(kafka_bootstrap, logdir)
    audit = logdir / "audit.jsonl"
    haproxy: Proc | None = None
    try:
        cluster.worker()
        gateways = [asyncio.run(cluster.gateway(TIDEMARK_AUDIT_LOG=str(audit)))
                    for _ in range(2)]
        haproxy, lb = start_haproxy(gateways, logdir)
        yield Setup(cluster, lb, audit)
    finally:
        if haproxy is not None:
            haproxy.stop()
        cluster.stop()


def bearer(**claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(**claims)}"}


async def create(http: aiohttp.ClientSession, lb: str, who: dict[str, Any], **body: Any,
                 ) -> dict[str, Any]:
    body.setdefault("query", "who may read this?")
    body.setdefault("options", {"tokens": 8, "tokens_per_second": 200})
    async with http.post(f"{lb}/v1/streams", json=body, headers=bearer(**who)) as resp:
        assert resp.status == 201, await resp.text()
        reply: dict[str, Any] = await resp.json()
        return reply


async def answer(http: aiohttp.ClientSession, method: str, url: str,
                 headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any, str]:
    """(status, body as JSON or text, content type) of one request (SSE bodies: the
    first bytes only)."""
    async with http.request(method, url, headers=headers, **kw) as resp:
        raw = await (resp.content.read(2048) if resp.status == 200 and
                     resp.content_type == "text/event-stream" else resp.read())
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = raw.decode(errors="replace")
        return resp.status, body, resp.content_type


def stream_routes(sid: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [("GET", f"/v1/streams/{sid}", {}),
            ("GET", f"/v1/streams/{sid}/events", {}),
            ("POST", f"/v1/streams/{sid}/events",
             {"json": {"type": "metadata", "data": {"x": 1}}}),
            ("POST", f"/v1/streams/{sid}/cancel", {})]


async def test_no_or_bad_tokens_get_401_with_a_reason(setup: Setup) -> None:
    past = int(time.time()) - 3600
    forged = jwt.encode({"sub": "alice", "tenant": "acme", "scope": "streams:create",
                         "exp": past + 7200}, "not-the-secret-but-just-as-long-as-one-0123",
                        algorithm="HS256")
    unsigned = jwt.encode({"sub": "alice", "tenant": "acme", "scope": "admin",
                           "exp": past + 7200}, None, algorithm="none")
    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic YWxpY2U6cHc="},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "forged": {"Authorization": f"Bearer {forged}"},
        "alg none": {"Authorization": f"Bearer {unsigned}"},
        "expired": bearer(**ALICE, ttl_s=-60),
        "future nbf": {"Authorization": "Bearer " + jwt.encode(
            {**ALICE, "scope": "streams:create", "exp": past + 7200,
             "nbf": int(time.time()) + 600}, TEST_SECRET)},
        "no exp": {"Authorization": "Bearer " + jwt.encode(
            {"sub": "alice", "tenant": "acme", "scope": "admin"}, TEST_SECRET)},
        "bad tenant": bearer(sub="alice", tenant="../other"),
        "unknown tier": bearer(**ALICE, tier="platinum"),
    }
    async with aiohttp.ClientSession() as http:
        for name, headers in cases.items():
            async with http.post(f"{setup.lb}/v1/streams", json={"query": "q"},
                                 headers=headers) as resp:
                assert resp.status == 401, (name, await resp.text())
                assert resp.headers["WWW-Authenticate"].startswith("Bearer"), name
                assert resp.content_type == "application/problem+json", name
                assert (await resp.json())["detail"], name
        async with http.get(f"{setup.lb}/metrics") as resp:
            assert 'tidemark_http_problems_total{status="401"}' in await resp.text()


async def test_a_valid_token_without_the_scope_gets_403(setup: Setup) -> None:
    async with aiohttp.ClientSession() as http:
        status, body, kind = await answer(
            http, "POST", f"{setup.lb}/v1/streams", json={"query": "q"},
            headers=bearer(**ALICE, scope="streams:read"))
        assert (status, kind, body["scope"]) == (403, "application/problem+json",
                                                 "streams:create")


async def test_another_tenants_stream_answers_exactly_like_one_that_never_existed(
        setup: Setup) -> None:
    async with aiohttp.ClientSession() as http:
        made = await create(http, setup.lb, ALICE)
        sid = made["stream_id"]
        never = new_stream_id(partition=0, floor=0, created_ms=int(time.time() * 1000),
                              tenant="acme", owner="alice")
        for who in (MALLORY, BOB):
            for method, path, kw in stream_routes(sid):
                theirs = await answer(http, method, setup.lb + path, bearer(**who), **kw)
                nothing = await answer(http, method, setup.lb + path.replace(sid, never),
                                       bearer(**who), **kw)
                assert theirs[0] == nothing[0] == 404, (who, path, theirs, nothing)
                assert theirs[1] == {**nothing[1], "detail": f"no stream {sid!r}"}
        # The owner and the tenant's admin still see it, through either gateway.
        for who in (ALICE, ACME_ADMIN):
            status, body, _ = await answer(http, "GET", f"{setup.lb}/v1/streams/{sid}",
                                           bearer(**who))
            assert status == 200 and body["stream_id"] == sid


async def test_no_timing_difference_between_a_foreign_stream_and_none(setup: Setup) -> None:
    async with aiohttp.ClientSession() as http:
        sid = (await create(http, setup.lb, ALICE))["stream_id"]
        guessed = new_stream_id(partition=1, floor=0, created_ms=int(time.time() * 1000),
                                tenant="acme", owner="alice")
        headers = bearer(**MALLORY)
        times: dict[str, list[float]] = {sid: [], guessed: []}
        for _ in range(60):  # interleaved, so load changes hit both alike
            for target in (sid, guessed):
                start = time.perf_counter()
                async with http.get(f"{setup.lb}/v1/streams/{target}", headers=headers) as r:
                    assert r.status == 404
                    await r.read()
                times[target].append(time.perf_counter() - start)
    foreign, missing = statistics.median(times[sid]), statistics.median(times[guessed])
    assert abs(foreign - missing) < max(0.002, 0.25 * missing), (foreign, missing)


async def test_copied_or_retagged_ids_read_nothing(setup: Setup) -> None:
    async with aiohttp.ClientSession() as http:
        made = await create(http, setup.lb, ALICE)
        sid = made["stream_id"]
        # The attacker re-tags the copied random part for their own tenant: another key.
        retagged = new_stream_id(partition=int(sid.split("-")[1]),
                                 floor=int(sid.split("-")[2]), created_ms=int(sid.split("-")[3]),
                                 tenant="evil", owner="alice", random_part=random_part(sid))
        reads = 0
        for target in (sid, retagged, sid.upper(), sid + "%00", sid[:-1]):
            reply = await sse_client.read(http, f"{setup.lb}/v1/streams/{target}/events",
                                          idle_timeout=5, last_event_id=None,
                                          headers=bearer(**MALLORY))
            reads += len(reply.stream_events)
            assert reply.status in (400, 404), (target, reply.status)
        # Path and query tricks: encoded separators, a token in the query beside a header.
        for path in (f"/v1/streams/..%2F{sid}", f"/v1/streams/{sid}%2F..%2F",
                     f"/v1/streams/{sid}/../{sid}/events"):
            status, _, _ = await answer(http, "GET", setup.lb + path, bearer(**MALLORY))
            assert status in (400, 404), (path, status)
        status, _, _ = await answer(
            http, "GET", f"{setup.lb}/v1/streams/{sid}?access_token={token(**ALICE)}",
            bearer(**MALLORY))
        assert status == 404  # the header's token counts, not the one in the query
        assert reads == 0


async def test_a_read_token_reads_its_stream_and_nothing_else(setup: Setup) -> None:
    async with aiohttp.ClientSession() as http:
        mine = await create(http, setup.lb, ALICE)
        other = await create(http, setup.lb, ALICE)
        read_token = mine["read_token"]
        assert mine["read_token_expires_at"] > time.time()
        # events_url alone (the read token in its query) follows the stream to its end.
        reply = await sse_client.read(http, setup.lb + mine["events_url"])
        assert reply.status == 200 and reply.stream_events[-1].event == "result"
        sseq = [e.seq for e in reply.stream_events]
        assert sseq == list(range(len(sseq)))
        as_read = {"Authorization": f"Bearer {read_token}"}
        status, _, _ = await answer(http, "GET", f"{setup.lb}/v1/streams/{other['stream_id']}",
                                    as_read)
        assert status == 403
        status, _, _ = await answer(
            http, "GET", f"{setup.lb}/v1/streams/{other['stream_id']}/events"
            f"?access_token={read_token}")
        assert status == 403
        for method, path, kw in stream_routes(mine["stream_id"])[2:]:
            status, _, _ = await answer(http, method, setup.lb + path, as_read, **kw)
            assert status == 403, path
        status, _, _ = await answer(http, "POST", f"{setup.lb}/v1/streams", as_read,
                                    json={"query": "q"})
        assert status == 403
        # The cookie works too (a page on the gateway's own origin).
        status, body, _ = await answer(http, "GET", f"{setup.lb}/v1/streams/{mine['stream_id']}",
                                       {"Cookie": f"tidemark_token={read_token}"})
        assert status == 200 and body["status"] == "completed"


async def test_clients_resume_exactly_with_the_read_token(setup: Setup) -> None:
    """Existing clients that follow the README: events_url, then Last-Event-ID."""
    async with aiohttp.ClientSession() as http:
        made = await create(http, setup.lb, ALICE,
                            options={"tokens": 40, "tokens_per_second": 100})
        url = setup.lb + made["events_url"]
        seen: list[sse_client.Event] = []
        while not seen or seen[-1].event not in sse_client.TERMINAL:
            reply = await sse_client.read(http, url, max_events=7,
                                          last_event_id=seen[-1].id if seen else None)
            if reply.status == 204:
                break
            assert reply.status == 200, reply.body
            seen.extend(reply.stream_events)
    seqs = [e.seq for e in seen]
    assert seqs == list(range(len(seqs))) and seen[-1].event == "result"


async def test_sdk_streams_with_their_own_ids_belong_to_their_tenant(setup: Setup) -> None:
    settings_env = setup.cluster.env
    from eventlog.settings import load_settings

    async with Publisher(load_settings(settings_env)) as pub:
        custom = await pub.create_stream(f"order-{uuid.uuid4().hex[:8]}", tenant="acme",
                                         owner="alice")
        await custom.result({"text": "done"})
        legacy = await pub.create_stream()  # no tenant: the default tenant's, for everyone
        await legacy.result({"text": "old"})
    async with aiohttp.ClientSession() as http:
        sid = custom.stream_id
        for who, expected in ((ALICE, 200), (ACME_ADMIN, 200), (BOB, 404), (MALLORY, 404)):
            status, _, _ = await answer(http, "GET", f"{setup.lb}/v1/streams/{sid}",
                                        bearer(**who))
            assert status == expected, who
        status, _, _ = await answer(http, "GET", f"{setup.lb}/v1/streams/{legacy.stream_id}",
                                    bearer(sub="anyone", tenant="default"))
        assert status == 200
        status, _, _ = await answer(http, "GET", f"{setup.lb}/v1/streams/{legacy.stream_id}",
                                    bearer(**ALICE))
        assert status == 404


async def test_an_external_stream_ended_through_the_api_stays_its_tenants_and_owners(
        setup: Setup) -> None:
    """Gateways locate a stream from its id and the log, which do not say whose it is;
    the index record they write when an external stream ends (publish or cancel) must
    still name its tenant and owner, or analytics would count it for the default tenant."""
    async with aiohttp.ClientSession() as http:
        published = await create(http, setup.lb, ALICE, generator="external")
        cancelled = await create(http, setup.lb, ALICE, generator="external")
        status, body, _ = await answer(
            http, "POST", f"{setup.lb}/v1/streams/{published['stream_id']}/events",
            bearer(**ALICE), json={"type": "result", "data": {"text": "a"}})
        assert status == 200, body
        status, body, _ = await answer(
            http, "POST", f"{setup.lb}/v1/streams/{cancelled['stream_id']}/cancel",
            bearer(**ALICE))
        assert status == 202, body
    for _ in range(50):
        records = await setup.cluster.index_records(published["stream_id"],
                                                    cancelled["stream_id"])
        if all(r is not None and r.finished for r in records):
            break
        await asyncio.sleep(0.2)
    statuses = [(r.status, r.tenant, r.owner, r.generator) if r else None for r in records]
    assert statuses == [("completed", "acme", "alice", "external"),
                        ("cancelled", "acme", "alice", "external")]


async def test_the_audit_log_says_who_did_what_and_every_denial(setup: Setup) -> None:
    async with aiohttp.ClientSession() as http:
        made = await create(http, setup.lb, ALICE, generator="external")
        sid = made["stream_id"]
        status, _, _ = await answer(
            http, "POST", f"{setup.lb}/v1/streams/{sid}/events", bearer(**ALICE),
            json={"type": "partial_result",
                  "data": {"chunk": "a", "chunkIndex": 0, "isComplete": False}})
        assert status == 200
        assert (await answer(http, "POST", f"{setup.lb}/v1/streams/{sid}/cancel",
                             bearer(**ALICE)))[0] == 202
        assert (await answer(http, "GET", f"{setup.lb}/v1/streams/{sid}",
                             bearer(**MALLORY)))[0] == 404
        assert (await answer(http, "GET", f"{setup.lb}/v1/streams/{sid}"))[0] == 401
    await asyncio.sleep(0.2)
    lines = [orjson.loads(line) for line in setup.audit.read_text().splitlines()]
    mine = [e for e in lines if e.get("stream") == sid]
    assert {(e["action"], e["sub"]) for e in mine if e["outcome"] == "ok"} >= {
        ("create", "alice"), ("publish", "alice"), ("cancel", "alice")}
    denials = [e for e in mine if e["action"] == "deny"]
    assert {(e["tenant"], e["status"]) for e in denials} >= {("evil", 404), (None, 401)}
    assert all(e["reason"] for e in denials)
    assert not any(TEST_SECRET in line or "eyJ" in line
                   for line in setup.audit.read_text().splitlines())


def test_tidemark_token_mints_a_token_the_gateways_accept() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tidemark", "token", "--sub", "carol", "--tenant", "acme",
         "--scope", "streams:read", "--tier", "premium", "--requests-per-minute", "5"],
        env=base_env(), cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    claims = jwt.decode(out.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "carol" and claims["tenant"] == "acme"
    assert claims["tier"] == "premium" and claims["limits"] == {"requestsPerMinute": 5}
    failed = subprocess.run([sys.executable, "-m", "tidemark", "token", "--sub", "x"],
                            env={**base_env(), "TIDEMARK_JWT_SECRET": ""}, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and "TIDEMARK_JWT_SECRET" in failed.stderr


async def test_auth_none_must_be_chosen_and_is_logged(cluster: Cluster) -> None:
    base = await cluster.gateway(TIDEMARK_AUTH="none")
    async with aiohttp.ClientSession() as http:
        status, body, _ = await answer(http, "POST", f"{base}/v1/streams",
                                       json={"query": "q", "generator": "external"})
        assert status == 201 and "read_token" not in body
        status, _, _ = await answer(http, "GET", f"{base}/v1/streams/{body['stream_id']}")
        assert status == 200
        assert (await answer(http, "GET", f"{base}/dev/token"))[0] == 404
    assert "WARNING" in cluster.proc("gateway0").logs(200)
    assert "TIDEMARK_AUTH=none" in cluster.proc("gateway0").logs(200)


async def test_only_tidemark_dev_has_the_demo_token_endpoint(
        cluster: Cluster, tmp_path: Path) -> None:
    base = await cluster.gateway()
    async with aiohttp.ClientSession() as http:
        assert (await answer(http, "GET", f"{base}/dev/token"))[0] == 404
    port = free_port()
    env = {k: v for k, v in cluster.env.items() if k != "TIDEMARK_JWT_SECRET"}
    dev = Proc("dev", ["dev", "--data-dir", str(tmp_path / "unused")],
               {**env, "TIDEMARK_PORT": str(port)}, tmp_path)
    try:
        secret = dev.wait_line("TIDEMARK_JWT_SECRET=").split("=", 1)[1]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while True:
                try:
                    status, body, _ = await answer(http, "GET", f"{url}/dev/token")
                    if status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, dev.logs()
                await asyncio.sleep(0.2)
            assert jwt.decode(body["token"], secret, algorithms=["HS256"])["sub"] == "demo-user"
            status, made, _ = await answer(
                http, "POST", f"{url}/v1/streams", {"Authorization": f"Bearer {body['token']}"},
                json={"query": "demo", "options": {"tokens": 5, "tokens_per_second": 100}})
            assert status == 201
            reply = await sse_client.read(http, url + made["events_url"])
            assert reply.stream_events[-1].event == "result"
            # Without a token the API is closed, also under tidemark dev.
            assert (await answer(http, "POST", f"{url}/v1/streams", json={"query": "q"}))[0] == 401
    finally:
        dev.stop()
