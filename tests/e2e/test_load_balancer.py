"""Two gateways behind a real load balancer (HAProxy, round robin, no stickiness):
clients land on different gateways across reconnects and see one unbroken stream,
also when a gateway dies under them."""

from __future__ import annotations

import signal

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.procs import auth_headers, start_haproxy
from tests.sse_client import Event

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def follow_through(lb: str, sid: str, *, chunk: int,
                         before_reconnect: object = None) -> tuple[list[Event], set[str]]:
    """Read the stream a few events per connection, reconnecting through the load
    balancer each time (a fresh TCP connection: no keep-alive stickiness)."""
    events: list[Event] = []
    served_by: set[str] = set()
    for _ in range(200):
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                headers=auth_headers()) as http:
            reply = await sse_client.read(http, f"{lb}/v1/streams/{sid}/events",
                                          last_event_id=events[-1].id if events else None,
                                          max_events=chunk)
        if reply.status == 204:
            return events, served_by
        assert reply.status == 200, reply.body
        served_by.add(reply.headers["Tidemark-Gateway"])
        events.extend(reply.stream_events)
        if events and events[-1].event in sse_client.TERMINAL:
            return events, served_by
        if callable(before_reconnect):
            before_reconnect(len(events))
    raise AssertionError("the stream never ended")


async def test_reconnects_through_the_balancer_see_one_unbroken_stream(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    gateways = [await cluster.gateway(), await cluster.gateway()]
    haproxy, lb = start_haproxy(gateways, cluster.logdir)
    cluster.procs.append(haproxy)
    sid = await create(http, lb, options={"tokens": 60, "tokens_per_second": 60})

    killed = []

    def kill_one_midway(count: int) -> None:
        if count >= 30 and not killed:
            cluster.proc("gateway0").stop(signal.SIGKILL)
            killed.append(count)

    events, served_by = await follow_through(lb, sid, chunk=5,
                                             before_reconnect=kill_one_midway)
    assert killed, "the stream ended before a gateway could be killed"
    assert len(served_by) == 2, f"every reconnect went to the same gateway: {served_by}"
    assert_contiguous(events)
    assert events[-1].event == "result"
    assert events[-1].envelope["data"]["text"] == joined_chunks(events)
