"""The Durable Streams log reader of a gateway under failure, for real: a gateway whose
reader cannot start (Kafka unreachable past ``TIDEMARK_KAFKA_CONNECT_TIMEOUT``) answers
503 problem+json and is not ready, restarts the reader with backoff and serves once
Kafka answers; a malformed record in the topic does not stop any gateway."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from durable.records import HEADER, ds_topic, partition_of, stream_key
from tests.conftest import Cluster
from tests.procs import Proc, base_env, free_port, wait_port, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: A TCP door in front of the broker (HAProxy, tcp mode), opened when the test says:
#: clients bootstrap through it, then talk to the broker's advertised listener.
_DOOR = """\
global
    maxconn 500
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
listen kafka
    bind 127.0.0.1:{port}
    server broker {broker}
"""


async def test_a_ds_reader_that_cannot_start_answers_503_then_restarts(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    door = free_port()
    port = free_port()
    gateway = Proc("gateway-late", ["gateway", "--port", str(port)], {
        **cluster.env, "TIDEMARK_KAFKA_BOOTSTRAP": f"127.0.0.1:{door}",
        "TIDEMARK_KAFKA_CONNECT_TIMEOUT": "1"}, cluster.logdir)
    cluster.procs.append(gateway)
    base = f"http://127.0.0.1:{port}"
    stream = f"{base}/ds/v1/stream/late-{time.time_ns()}"
    deadline = time.monotonic() + 30
    while True:  # the reader gives up on Kafka after 1 s, then waits to restart
        assert time.monotonic() < deadline and gateway.alive, gateway.logs()
        try:
            started = time.monotonic()
            async with http.get(stream, params={"offset": "-1"}) as r:
                took = time.monotonic() - started
                body = await r.json(content_type=None) if r.status == 503 else {}
                if "Durable Streams log failed" in body.get("detail", ""):
                    break
        except aiohttp.ClientConnectionError:
            pass  # not listening yet
        await asyncio.sleep(0.2)
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.headers["Retry-After"].isdigit()
    assert took < 2  # at once, not after TIDEMARK_DS_CATCHUP_WAIT
    async with http.get(f"{base}/readyz") as r:
        assert r.status == 503
    config = cluster.logdir / "door.cfg"
    config.write_text(_DOOR.format(port=door, broker=cluster.bootstrap))
    proxy = Proc("door", [], base_env(), cluster.logdir,
                 argv=["haproxy", "-db", "-f", str(config)])
    cluster.procs.append(proxy)
    wait_port(door, proxy)
    await wait_ready(base, gateway)  # the reader restarted (backoff at most 30 s)
    async with http.put(stream, data=b"back", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201, await r.text()
    async with http.get(stream, params={"offset": "-1"}) as r:
        assert r.status == 200 and await r.text() == "back"


async def test_a_malformed_record_in_the_topic_stops_no_gateway(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    gw = [await cluster.gateway(), await cluster.gateway()]
    path = f"poison-{time.time_ns()}"
    urls = [f"{g}/ds/v1/stream/{path}" for g in gw]
    async with http.put(urls[0], data=b"a;", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    key = stream_key("default", path)  # the test token's tenant
    producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap)
    await producer.start()
    try:
        # Not a gateway's: an append whose fields do not parse.
        await producer.send_and_wait(
            ds_topic(cluster.namespace), b"junk", key=key.encode(),
            partition=partition_of(key, 4),
            headers=[(HEADER, orjson.dumps({"op": "append", "ts": "soon"}))])
    finally:
        await producer.stop()
    for n, url in enumerate(urls):  # both gateways read past it and go on serving
        async with http.post(url, data=f"{n};".encode(),
                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204, await r.text()
    for g, url in zip(gw, urls, strict=True):
        async with http.get(url, params={"offset": "-1"}) as r:
            assert await r.text() == "a;0;1;"
        async with http.get(f"{g}/readyz") as r:
            assert r.status == 200
