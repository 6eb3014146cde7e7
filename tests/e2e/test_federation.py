"""Federation: streams of cluster A served by gateways of cluster B, through Apache
Kafka's own MirrorMaker 2 (`tidemark mirror`), all real: two KRaft brokers, MirrorMaker 2
from its Maven Central jars, workers and gateways (docs/federation.md).

A client follows a stream through A's gateway, then resumes through B's gateway with
the id A gave it: it gets exactly the rest, once, in order (B's offsets are not A's: the
id's seq says where). A late resume with A's terminal id is answered 204, a whole read
through B equals A's, and B's gateway refuses writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from schemas.eventid import parse_event_id
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous
from tests.procs import Proc, auth_headers, base_env

pytestmark = [pytest.mark.e2e, pytest.mark.integration,
              pytest.mark.timeout(300)]  # a second broker and a JVM of MirrorMaker

HEADERS = auth_headers(sub="fed-user")


@pytest.fixture
async def cluster_b(tmp_path: Path) -> AsyncIterator[str]:
    """A second Kafka cluster (one KRaft broker) of this test's own."""
    broker = Proc("kafka-b", ["kafka", "--data-dir", str(tmp_path / "kafka-b")], base_env(),
                  tmp_path)
    try:
        line = await asyncio.to_thread(broker.wait_line, "TIDEMARK_KAFKA_BOOTSTRAP=", 120)
        yield line.split("=", 1)[1]
    finally:
        broker.stop()


def _view(events: list[sse_client.Event]) -> list[tuple[int, str, object]]:
    return [(e.seq, e.event, e.envelope["data"]) for e in events]


async def _copied(http: aiohttp.ClientSession, base: str, sid: str, mirror: Proc,
                  timeout: float = 90.0) -> sse_client.Reply:
    """The stream read through ``base`` once its copy holds the terminal event."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with http.get(f"{base}/v1/streams/{sid}/events", headers={
                **HEADERS, "Accept": "text/event-stream"}) as resp:
            found = resp.status == 200
        if found:
            reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                          headers=HEADERS, idle_timeout=30)
            if reply.stream_events and reply.stream_events[-1].event == "result":
                return reply
        assert asyncio.get_running_loop().time() < deadline, f"{sid} never reached B"
        assert mirror.alive, f"MirrorMaker exited:\n{mirror.logs()}"
        await asyncio.sleep(0.5)


async def test_a_client_resumes_on_cluster_b_with_an_id_from_cluster_a_exactly_once(
        cluster: Cluster, cluster_b: str, http: aiohttp.ClientSession, tmp_path: Path,
        ) -> None:
    cluster.worker()
    base_a = await cluster.gateway()
    mirror = Proc("mirror", ["mirror", "--from", f"A={cluster.bootstrap}",
                             "--to", f"B={cluster_b}", "--work-dir", str(tmp_path / "mm2")],
                  cluster.env, cluster.logdir)
    cluster.procs.append(mirror)
    await asyncio.to_thread(mirror.wait_line, "Mirror started", 60)
    base_b = await cluster.gateway(TIDEMARK_KAFKA_BOOTSTRAP=cluster_b, TIDEMARK_MIRROR_OF="A")

    # A first stream, read whole through A, must arrive whole through B: MirrorMaker is
    # copying (it picks the topic up within its refresh interval).
    async with http.post(f"{base_a}/v1/streams", headers=HEADERS, json={
            "query": "federated warm-up", "options": {"tokens": 5,
                                                      "tokens_per_second": 100}}) as resp:
        assert resp.status == 201, await resp.text()
        first = (await resp.json())["stream_id"]
    whole_a = await sse_client.read(http, f"{base_a}/v1/streams/{first}/events",
                                    headers=HEADERS)
    whole_b = await _copied(http, base_b, first, mirror)
    assert _view(whole_b.stream_events) == _view(whole_a.stream_events)
    ids_a = [parse_event_id(e.id or "") for e in whole_a.stream_events]
    ids_b = [parse_event_id(e.id or "") for e in whole_b.stream_events]
    assert {i.epoch for i in ids_a}.isdisjoint({i.epoch for i in ids_b})  # two logs
    assert [i.seq for i in ids_a] == [i.seq for i in ids_b] == [e.seq for e in
                                                                 whole_a.stream_events]

    # The user's stream: followed through A for a while, then resumed through B.
    async with http.post(f"{base_a}/v1/streams", headers=HEADERS, json={
            "query": "what does federation keep?", "options": {
                "tokens": 60, "tokens_per_second": 30}}) as resp:
        sid = (await resp.json())["stream_id"]
    part = await sse_client.read(http, f"{base_a}/v1/streams/{sid}/events", headers=HEADERS,
                                 max_events=12)
    assert_contiguous(part.stream_events)
    last_id = part.last_id
    assert last_id is not None and parse_event_id(last_id).seq == 11
    rest = await sse_client.read(http, f"{base_b}/v1/streams/{sid}/events", headers=HEADERS,
                                 last_event_id=last_id, idle_timeout=60)
    assert rest.status == 200
    assert [e.event for e in rest.events if e.id is None] == []  # no reset notice
    assert_contiguous(rest.stream_events, start=12)
    assert rest.stream_events[-1].event == "result"
    whole = await sse_client.read(http, f"{base_a}/v1/streams/{sid}/events", headers=HEADERS)
    assert _view(part.stream_events + rest.stream_events) == _view(whole.stream_events)

    # An id of codec version 1 (handed out before the upgrade) still resumes exactly on
    # its own cluster.
    v1 = last_id.rsplit("-", 1)[0].replace("2-", "1-", 1)
    old = await sse_client.read(http, f"{base_a}/v1/streams/{sid}/events", headers=HEADERS,
                                last_event_id=v1)
    assert _view(old.stream_events) == _view(rest.stream_events)

    # Resumed again through B with B's own id, and through A with B's id: the id carries
    # what each side needs.
    mid_b = rest.stream_events[10].id
    again = await sse_client.read(http, f"{base_b}/v1/streams/{sid}/events", headers=HEADERS,
                                  last_event_id=mid_b)
    assert_contiguous(again.stream_events, start=23)
    back = await sse_client.read(http, f"{base_a}/v1/streams/{sid}/events", headers=HEADERS,
                                 last_event_id=mid_b)
    assert _view(back.stream_events) == _view(again.stream_events)

    # A late resume with the terminal id from A: nothing is left, 204 (EventSource stops).
    async with http.get(f"{base_b}/v1/streams/{sid}/events", headers={
            **HEADERS, "Accept": "text/event-stream",
            "Last-Event-ID": whole.stream_events[-1].id or ""}) as resp:
        assert resp.status == 204

    # B's gateway serves a read-only copy: a create is refused with a reason.
    async with http.post(f"{base_b}/v1/streams", headers=HEADERS,
                         json={"query": "write here?"}) as resp:
        assert resp.status == 409
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert problem["home"] == "A" and "read-only mirror" in problem["detail"]
