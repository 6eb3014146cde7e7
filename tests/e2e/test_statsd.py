"""StatsD and DogStatsD export: a gateway and a worker push their metrics to a real StatsD
daemon (Etsy's ``statsd`` from npm, pinned in package.json), and what the daemon sums is
what the processes' own ``/metrics`` say."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.procs import REPO, Proc, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

STATSD_JS = REPO / "node_modules" / "statsd" / "stats.js"
#: A key and a number as ``util.inspect`` prints an object (quoted or not).
_ENTRY = re.compile(r"(?:'((?:[^'\\]|\\.)*)'|([A-Za-z_$][\w$]*))\s*:\s*(-?[\d.]+(?:e[+-]?\d+)?)")


class StatsdDaemon:
    """The daemon on loopback: UDP ``port`` for metrics, its management port to read them."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.mgmt_port = free_port(), free_port()
        config = tmp / "statsd-config.js"
        # No backend and no flush within a test: its counters hold every line received.
        config.write_text(
            f'{{ port: {self.port}, address: "127.0.0.1", mgmt_port: {self.mgmt_port}, '
            f'mgmt_address: "127.0.0.1", flushInterval: 3600000, backends: [] }}\n')
        self.proc = Proc("statsd", [], {"PATH": "/usr/bin:/bin:/usr/local/bin"}, tmp,
                         argv=["node", str(STATSD_JS), str(config)])

    def ready(self) -> None:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.mgmt_port), timeout=1).close()
                return
            except OSError:
                if not self.proc.alive:
                    raise AssertionError(self.proc.logs()) from None
                time.sleep(0.05)
        raise AssertionError(f"statsd did not start:\n{self.proc.logs()}")

    async def read(self, kind: str) -> dict[str, float]:
        """``counters`` or ``gauges`` as the daemon holds them now."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.mgmt_port)
        writer.write(kind.encode())
        text = ""
        while "END" not in text:
            text += (await asyncio.wait_for(reader.read(65536), 5)).decode()
        writer.close()
        return {(quoted or bare).replace("\\'", "'"): float(value)
                for quoted, bare, value in _ENTRY.findall(text.split("END")[0])}


@pytest.fixture
def statsd(tmp_path: Path) -> Iterator[StatsdDaemon]:
    daemon = StatsdDaemon(tmp_path)
    try:
        daemon.ready()
        yield daemon
    finally:
        daemon.proc.stop()


async def prometheus(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Sample name with its labels (as Prometheus prints them) -> value."""
    async with http.get(url) as resp:
        text = await resp.text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


async def until_equal(read: Callable[[], Awaitable[dict[str, float]]],
                      want: dict[str, float]) -> dict[str, float]:
    """Poll the daemon until it holds ``want`` (a push every 0.2 s; 15 s at most)."""
    got: dict[str, float] = {}
    for _ in range(150):
        got = await read()
        if all(got.get(k) == pytest.approx(v) for k, v in want.items()):
            return got
        await asyncio.sleep(0.1)
    raise AssertionError({k: (v, got.get(k)) for k, v in want.items()})


async def test_a_gateway_and_a_worker_push_what_their_metrics_say_to_statsd(
        cluster: Cluster, http: aiohttp.ClientSession, statsd: StatsdDaemon) -> None:
    push = {"TIDEMARK_STATSD": f"127.0.0.1:{statsd.port}", "TIDEMARK_STATSD_INTERVAL": "0.2"}
    worker = cluster.worker(**push)
    base = await cluster.gateway(**push)
    ids = []
    for i in range(3):
        async with http.post(f"{base}/v1/streams", json={"query": f"q{i}"}) as resp:
            assert resp.status == 201
            ids.append((await resp.json())["stream_id"])
    replies = await asyncio.gather(*(
        sse_client.read(http, f"{base}/v1/streams/{sid}/events") for sid in ids))
    assert all(r.stream_events[-1].event == "result" for r in replies)

    gw = await prometheus(http, f"{base}/metrics")
    # A worker counts an event once its transaction's commit is acknowledged, which can
    # come after a client has read the event: wait until its count stops moving.
    wk = await prometheus(http, worker.metrics_url)
    for _ in range(50):
        await asyncio.sleep(0.3)
        again = await prometheus(http, worker.metrics_url)
        if again["tidemark_worker_events_total"] == wk["tidemark_worker_events_total"]:
            break
        wk = again
    delivered = gw["tidemark_events_delivered_total"]
    assert delivered >= sum(len(r.stream_events) for r in replies)
    # Counters are sent as what they grew by: the daemon's sums are the totals.
    counters = await until_equal(lambda: statsd.read("counters"), {
        "tidemark.streams_created_total.generator.demo": 3,
        "tidemark.events_delivered_total": delivered,
        "tidemark.sse_requests_total.outcome.new": gw[
            'tidemark_sse_requests_total{outcome="new"}'],
        "tidemark.first_event_seconds_count": gw["tidemark_first_event_seconds_count"],
        "tidemark.first_event_seconds_bucket.le._Inf": 3,
        "tidemark.worker_events_total": wk["tidemark_worker_events_total"],
        "tidemark.worker_streams_total.outcome.completed.tenant.default": 3,
    })
    assert counters["tidemark.first_event_seconds_sum"] == pytest.approx(
        gw["tidemark_first_event_seconds_sum"])
    assert not [k for k in counters if k.endswith("_created")]
    gauges = await until_equal(lambda: statsd.read("gauges"), {
        "tidemark.sse_connections": 0, "tidemark.worker_streams_running": 0})
    assert gauges["tidemark.breaker_state.name.kafka"] == 0
    assert (await statsd.read("counters"))["statsd.bad_lines_seen"] == 0


async def test_dogstatsd_sends_labels_and_the_configured_tags_as_tags(
        cluster: Cluster, http: aiohttp.ClientSession, statsd: StatsdDaemon) -> None:
    base = await cluster.gateway(TIDEMARK_STATSD=f"127.0.0.1:{statsd.port}",
                                 TIDEMARK_STATSD_INTERVAL="0.2",
                                 TIDEMARK_STATSD_FLAVOR="dogstatsd",
                                 TIDEMARK_STATSD_TAGS="env:test,region:eu-1")
    for _ in range(2):
        async with http.post(f"{base}/v1/streams",
                             json={"query": "q", "generator": "external"}) as resp:
            assert resp.status == 201
    async with http.post(f"{base}/v1/streams", json={"query": 5}) as resp:
        assert resp.status == 422
    # The daemon files a tagged line under name;tag=value;... (Graphite's tagged form).
    await until_equal(lambda: statsd.read("counters"), {
        "tidemark.streams_created_total;generator=external;env=test;region=eu-1": 2,
        "tidemark.http_problems_total;status=422;env=test;region=eu-1": 1,
    })
    gauges = await statsd.read("gauges")
    assert gauges["tidemark.sse_connections;env=test;region=eu-1"] == 0
    assert (await statsd.read("counters"))["statsd.bad_lines_seen"] == 0
