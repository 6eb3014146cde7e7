"""`tidemark kafka --data-dir` comes back as the same broker; gateways wait for Kafka."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from eventlog.settings import load_settings
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.e2e.test_takeover import scrape
from tests.procs import Proc, base_env, free_port
from workers.publisher import Publisher

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def start_broker(tmp_path: Path, n: int) -> tuple[Proc, str]:
    proc = Proc(f"kafka{n}", ["kafka", "--data-dir", str(tmp_path / "kafka-data")],
                base_env(), tmp_path)
    line = proc.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", timeout=120)
    assert line == proc.out.read_text().splitlines()[0], "the bootstrap line comes first"
    return proc, line.split("=", 1)[1]


async def test_restarted_broker_keeps_streams_replayable(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    broker, bootstrap = start_broker(tmp_path, 0)
    cluster = Cluster(bootstrap, tmp_path)
    try:
        cluster.worker()
        base = await cluster.gateway()
        sid = await create(http, base, options={"tokens": 10, "tokens_per_second": 500})
        before = (await sse_client.read(http, f"{base}/v1/streams/{sid}/events")).stream_events
        assert before[-1].event == "result"

        assert broker.stop() == 0, broker.logs()
        broker, again = start_broker(tmp_path, 1)
        assert again == bootstrap, "a restart keeps the same listener"

        # The running gateway reconnects by itself; a new one starts against it too.
        fresh = await cluster.gateway()
        for url in (base, fresh):
            reply = await sse_client.read(http, f"{url}/v1/streams/{sid}/events")
            assert [e.id for e in reply.stream_events] == [e.id for e in before]
            assert [e.data for e in reply.stream_events] == [e.data for e in before]

        # And new streams flow again through the restarted broker.
        sid2 = await create(http, fresh, options={"tokens": 5, "tokens_per_second": 500})
        events = (await sse_client.read(http, f"{fresh}/v1/streams/{sid2}/events")
                  ).stream_events
        assert_contiguous(events)
        assert events[-1].envelope["data"]["text"] == joined_chunks(events)
    finally:
        cluster.stop()
        broker.stop()


async def test_gateway_is_alive_but_not_ready_until_kafka_answers(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    kafka_port = free_port()
    port = free_port()
    env = base_env(TIDEMARK_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}",
                   TIDEMARK_KAFKA_CONNECT_TIMEOUT="120", TIDEMARK_READY_WAIT="0.5")
    gateway = Proc("gateway", ["gateway", "--port", str(port)], env, tmp_path)
    broker: Proc | None = None
    try:
        gateway.wait_line("Gateway listening on")
        url = f"http://127.0.0.1:{port}"
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{url}/readyz") as resp:
            assert resp.status == 503
            assert resp.content_type == "application/problem+json"
        async with http.post(f"{url}/v1/streams", json={"query": "q"}) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"]

        broker = Proc("kafka", ["kafka", "--port", str(kafka_port)], base_env(), tmp_path)
        broker.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", timeout=120)
        for _ in range(600):
            async with http.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"gateway never became ready:\n{gateway.logs()}")
    finally:
        gateway.stop()
        if broker is not None:
            broker.stop()


async def wait_status(http: aiohttp.ClientSession, url: str, status: int,
                      timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.1)):
        try:
            async with http.get(url) as resp:
                if resp.status == status:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}")


async def test_broker_down_fails_fast_keeps_streams_open_and_recovers(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    broker, bootstrap = start_broker(tmp_path, 0)
    cluster = Cluster(bootstrap, tmp_path)
    try:
        base = await cluster.gateway(TIDEMARK_REQUEST_TIMEOUT="3")
        sid = await create(http, base, generator="external")
        seen: list[sse_client.Event] = []
        reader = asyncio.create_task(sse_client.read(
            http, f"{base}/v1/streams/{sid}/events", sink=seen, idle_timeout=60))
        await sse_client.wait_for(seen, 1, reader)

        assert broker.stop() == 0, broker.logs()
        await wait_status(http, f"{base}/readyz", 503)
        for _ in range(3):
            async with http.post(f"{base}/v1/streams", json={"query": "q"}) as resp:
                assert resp.status == 503
                assert resp.content_type == "application/problem+json"
                assert int(resp.headers["Retry-After"]) >= 1
        # Operators see the circuit open (the watcher keeps tripping it while Kafka is down).
        metrics = await scrape(http, f"{base}/metrics")
        assert metrics['tidemark_breaker_state{name="kafka"}'] == 2
        assert metrics['tidemark_breaker_transitions_total{name="kafka",to="open"}'] >= 1
        await asyncio.sleep(2.5)  # heartbeats keep the open response alive meanwhile
        assert not reader.done()

        broker, _ = start_broker(tmp_path, 1)
        await wait_status(http, f"{base}/readyz", 200)
        for _ in range(100):
            async with http.post(f"{base}/v1/streams/{sid}/events", json=[
                    {"type": "partial_result", "data": {"chunk": "back", "chunkIndex": 0},
                     "seq": 1},
                    {"type": "result", "data": {"text": "back"}, "seq": 2}]) as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.2)
        reply = await asyncio.wait_for(reader, 60)
        assert [e.seq for e in reply.stream_events] == [0, 1, 2]
        metrics = await scrape(http, f"{base}/metrics")
        assert metrics['tidemark_breaker_state{name="kafka"}'] == 0
        assert metrics['tidemark_breaker_transitions_total{name="kafka",to="closed"}'] >= 1
        assert reply.stream_events[-1].event == "result"
        assert "ping" in reply.comments
    finally:
        cluster.stop()
        broker.stop()


async def test_publisher_sdk_rides_out_a_broker_restart_without_duplicates(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    broker, bootstrap = start_broker(tmp_path, 0)
    cluster = Cluster(bootstrap, tmp_path)
    try:
        base = await cluster.gateway()
        settings = load_settings(cluster.env)
        async with Publisher(settings) as pub:
            stream = await pub.create_stream()
            await stream.status("running")
            assert broker.stop() == 0
            pending = asyncio.create_task(stream.partial("during the outage", 0))
            await asyncio.sleep(2)
            broker, _ = start_broker(tmp_path, 1)
            await asyncio.wait_for(pending, 60)
            await stream.result({"text": "during the outage"})
        reply = await sse_client.read(http, f"{base}/v1/streams/{stream.stream_id}/events")
        assert [e.seq for e in reply.stream_events] == [0, 1, 2, 3]
        assert [e.event for e in reply.stream_events] == [
            "status", "status", "partial_result", "result"]
    finally:
        cluster.stop()
        broker.stop()
