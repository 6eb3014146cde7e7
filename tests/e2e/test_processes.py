"""``tidemark gateway --processes 2``: two gateway processes on one port (SO_REUSEPORT)
under one supervising parent, seen from outside: connections land on both, a stream is
delivered once and in order through either, /readyz answers 200 from all of them once
the parent says they are ready, a killed child is replaced, and SIGTERM to the parent
ends every child within the shutdown grace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_load_balancer import follow_through
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks
from tests.procs import Proc, auth_headers

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def start(cluster: Cluster, processes: str = "2") -> tuple[Proc, str]:
    """``tidemark gateway --processes N --port 0``; its URL once every child is ready."""
    n = sum(p.name.startswith("gateway") for p in cluster.procs)
    proc = Proc(f"gateway{n}", ["gateway", "--port", "0", "--processes", processes],
                cluster.env, cluster.logdir)
    cluster.procs.append(proc)
    line = proc.wait_line("Gateway listening on ")
    url = line.removeprefix("Gateway listening on ").rstrip("/")
    proc.wait_line("Gateway ready: ")
    return proc, url


def children(pid: int) -> set[int]:
    return {int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.asynccontextmanager
async def served_by(url: str, sid: str, attempts: int = 60,
                    ) -> AsyncIterator[dict[str, aiohttp.ClientResponse]]:
    """Open SSE responses on fresh connections until each process has one; yields one
    open response per ``Tidemark-Gateway`` (host:pid)."""
    found: dict[str, aiohttp.ClientResponse] = {}
    sessions: list[aiohttp.ClientSession] = []
    try:
        yield await _open_on_each(url, sid, attempts, found, sessions)
    finally:
        for resp in found.values():
            resp.release()
        for session in sessions:
            await session.close()


async def _open_on_each(url: str, sid: str, attempts: int,
                        found: dict[str, aiohttp.ClientResponse],
                        sessions: list[aiohttp.ClientSession],
                        ) -> dict[str, aiohttp.ClientResponse]:
    for _ in range(attempts):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                        headers=auth_headers())
        resp = await session.get(f"{url}/v1/streams/{sid}/events",
                                 headers={"Accept": "text/event-stream"})
        assert resp.status == 200, await resp.text()
        name = resp.headers["Tidemark-Gateway"]
        if name in found:
            resp.release()
            await session.close()
        else:
            found[name] = resp
            sessions.append(session)
        if len(found) == 2:
            break
    return found


async def test_connections_land_on_both_processes_and_each_delivers_once_in_order(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    parent, url = start(cluster)
    kids = children(parent.popen.pid)
    assert len(kids) == 2

    # Readiness: every /readyz on a fresh connection is 200, whichever child it hits.
    for _ in range(30):
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            async with fresh.get(f"{url}/readyz") as resp:
                assert resp.status == 200, await resp.text()

    # Two live followers of one stream, one on each process, both see all of it once.
    sid = await create(http, url, options={"tokens": 40, "tokens_per_second": 40})
    async with served_by(url, sid) as responses:
        assert {int(name.rsplit(":", 1)[1]) for name in responses} == kids
        replies = await asyncio.wait_for(asyncio.gather(
            *(sse_client.parse(r, idle_timeout=30) for r in responses.values())), 60)
    for reply in replies:
        assert reply.ended_by_server
        assert_contiguous(reply.stream_events)
        assert reply.stream_events[-1].event == "result"
        assert reply.stream_events[-1].envelope["data"]["text"] == \
            joined_chunks(reply.stream_events)

    # One follower reconnecting every few events (fresh connections, so it moves between
    # the processes) with Last-Event-ID: one unbroken stream.
    sid = await create(http, url, options={"tokens": 60, "tokens_per_second": 60})
    events, names = await follow_through(url, sid, chunk=5)
    assert len(names) == 2, f"every reconnect went to the same process: {names}"
    assert_contiguous(events)
    assert events[-1].envelope["data"]["text"] == joined_chunks(events)


async def test_a_killed_child_is_replaced_while_the_other_keeps_serving(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    parent, url = start(cluster)
    before = children(parent.popen.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # The survivor answers meanwhile; the parent starts a new child in its place.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as fresh:
            async with fresh.get(f"{url}/healthz") as resp:
                assert resp.status == 200
        now = children(parent.popen.pid)
        if len(now) == 2 and victim not in now:
            break
        await asyncio.sleep(0.1)
    now = children(parent.popen.pid)
    assert len(now) == 2 and victim not in now, now
    (replacement,) = now - before
    sid = await create(http, url, generator="external")
    seen: set[int] = set()
    while time.monotonic() < deadline and seen != now:  # until the replacement listens
        async with served_by(url, sid) as responses:
            seen = {int(name.rsplit(":", 1)[1]) for name in responses}
    assert seen == now, f"the replacement {replacement} took no connection"


async def test_sigterm_to_the_parent_ends_every_child_within_the_grace(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    parent, url = start(cluster)
    kids = children(parent.popen.pid)
    sid = await create(http, url, generator="external")
    grace = float(cluster.env["TIDEMARK_SHUTDOWN_GRACE"])
    async with served_by(url, sid) as responses:
        assert len(responses) == 2
        readers = [asyncio.create_task(sse_client.parse(r, idle_timeout=30))
                   for r in responses.values()]
        t0 = time.monotonic()
        os.kill(parent.popen.pid, signal.SIGTERM)  # the parent alone, not its group
        code = await asyncio.to_thread(parent.popen.wait, grace + 10)
        took = time.monotonic() - t0
        replies = await asyncio.wait_for(asyncio.gather(*readers), 5)
    assert code == 0, parent.logs()
    assert took < grace + 1.5, f"took {took:.1f}s, grace {grace}s"
    assert not [pid for pid in kids if alive(pid)]
    # Each open response was ended cleanly by its process (the client would resume).
    assert all(reply.ended_by_server for reply in replies)
