"""A reader that falls behind a fast token stream (it stalls for a second, as a phone in
a tunnel does, then reads slowly) gets its partial results coalesced from then on
(docs/transports.md, "Slow clients") and keeps up where it would not, over SSE and the WebSocket
alike: fewer events than chunks, the same text, every seq accounted for, and a resume from
an id it got continues exactly. A fast reader of the same stream gets every event as it
is. The same slow reader of a gateway with ``TIDEMARK_LAG_COALESCE=false`` (the behaviour
before) is still far behind when they are done."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests import sse_client
from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_slow_client import metric, produce
from tests.e2e.test_streams import assert_contiguous, create
from tests.procs import auth_headers

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: A fast token stream: this many chunks of a few bytes, at up to this many a second ...
CHUNKS, RATE = 20_000, 5000
#: ... and readers that take nothing for this long once it starts (while their socket
#: buffers are still small: a reader that keeps reading lets the kernel's send buffer grow
#: to megabytes first), then this many bytes a second: a tenth of what the stream's events
#: take as they are (about 200 bytes each), fifteen times what its text takes.
STALL, PACE = 2.0, 300_000
#: A small live buffer, so that falling behind comes quickly; a write timeout well above
#: the stall (a socket that takes nothing for it is cut off by the watchdog, a path that
#: coalescing does not change: this test is about the readers that still read).
SLOW = {"TIDEMARK_CLIENT_BUFFER_BYTES": "65536", "TIDEMARK_CLIENT_WRITE_TIMEOUT": "30"}


def word(seq: int) -> str:
    return f"w{seq - 1} "


def stalls_then_crawls(got: list[int]) -> sse_client.Throttle:
    """A reader that stops reading for :data:`STALL` once the stream's first chunk came
    (the first read is the ``status`` event of the connect), then reads :data:`PACE`
    bytes a second; it adds up in ``got[0]`` the bytes it read."""
    reads = 0

    async def throttle(size: int) -> None:
        nonlocal reads
        reads += 1
        got[0] += size
        if reads == 2:
            await asyncio.sleep(STALL)
        await asyncio.sleep(size / PACE)
    return throttle


async def wait_metric(http: aiohttp.ClientSession, base: str, name: str, at_least: float,
                      timeout: float = 30.0) -> float:
    for _ in range(int(timeout / 0.1)):
        value = await metric(http, base, name)
        if value >= at_least:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} stayed at {value} on {base}, not {at_least}")


def check_coalesced(out: tc.Outcome, fast_ids: dict[int, str]) -> list[tuple[str, Any]]:
    """What a lagging reader got: the whole stream, its chunks coalesced in places, every
    seq once, each event with the id of its last chunk; its coalesced (id, envelope)s."""
    assert out.ended and out.items[-1][1] == "result", (out.code, out.reason, out.items[-2:])
    envelopes = [(i, json.loads(d)) for i, e, d in out.stream_items]
    partial = [(i, env) for i, env in envelopes if env["type"] == "partial_result"]
    # Fewer events than chunks (what the kernel took before the overflow came as it was).
    assert len(partial) < CHUNKS, f"{len(partial)} events for {CHUNKS} chunks"
    assert "".join(env["data"]["chunk"] for _, env in partial) == "".join(
        word(seq) for seq in range(1, CHUNKS + 1))
    following = 0
    for event_id, env in envelopes:
        assert env["data"].get("firstSeq", env["seq"]) == following, (following, env["seq"])
        following = env["seq"] + 1
        assert event_id == fast_ids[env["seq"]]
    coalesced = [(i, env) for i, env in partial if "chunkCount" in env["data"]]
    assert coalesced
    return coalesced


async def test_a_reader_that_falls_behind_gets_coalesced_partial_results(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway(**SLOW)
    before = await cluster.gateway(TIDEMARK_LAG_COALESCE="false", **SLOW)
    sid = await create(http, base, generator="external")
    url = f"{base}/v1/streams/{sid}/events"
    async with sse_client.slow_session(auth_headers()) as slow:
        fast = asyncio.create_task(sse_client.read(http, url, idle_timeout=60))
        got = {t: [0] for t in ("sse", "ws", "before")}
        lagging = {t: asyncio.create_task(tc.read(slow, base, sid, t, timeout=120,
                                                  throttle=stalls_then_crawls(got[t])))
                   for t in ("sse", "ws")}
        baseline = asyncio.create_task(tc.read(slow, before, sid, "sse", timeout=120,
                                               throttle=stalls_then_crawls(got["before"])))
        try:
            await wait_metric(http, base, "tidemark_sse_connections", 3)
            await wait_metric(http, before, "tidemark_sse_connections", 1)
            await produce(cluster, [sid], CHUNKS + 1, payload=0, end=True, text=word,
                          per_second=RATE)

            whole = (await asyncio.wait_for(fast, 60)).stream_events
            outcomes = {t: await task for t, task in lagging.items()}
            slow_as_before = await baseline
        finally:
            baseline.cancel()
            for task in (fast, *lagging.values()):
                task.cancel()

    # Without coalescing the same reader got every event as it is (or was cut off): more
    # bytes to read. (Not many more here: what the kernel's send buffer took before the
    # live buffer overflowed, megabytes, is read as it was; see docs/transports.md.)
    assert await metric(http, before, "tidemark_lag_coalesced_total") == 0
    assert all("chunkCount" not in d for _, e, d in slow_as_before.items)
    assert got["sse"][0] < got["before"][0] and got["ws"][0] < got["before"][0], got
    # The fast reader got every event as it was written.
    assert_contiguous(whole)
    assert len(whole) == CHUNKS + 2 and whole[-1].event == "result"
    assert all("chunkCount" not in e.envelope["data"] for e in whole)
    fast_ids = {e.seq: e.id for e in whole if e.id is not None}
    ids = [e.id for e in whole]

    # Each slow one fell behind once, was caught up coalesced, and was not cut off.
    assert outcomes["ws"].code == 1000, outcomes["ws"].reason
    assert await metric(http, base, "tidemark_lag_coalesced_total") == 2
    assert await metric(http, base, "tidemark_slow_client_cutoffs_total") == 0
    for transport, out in outcomes.items():
        coalesced = check_coalesced(out, fast_ids)
        # A resume from a coalesced event's id continues right after its last chunk.
        at, _ = coalesced[len(coalesced) // 2]
        rest = await tc.read(http, base, sid, transport, position=at, timeout=60)
        assert [i[0] for i in rest.stream_items] == ids[ids.index(at) + 1:], transport


#: A reader that reads steadily but slowly from the start (no stall): this many bytes a
#: second through a 4 KiB receive buffer, of a stream whose events take about ten times
#: that as they are (:data:`CHUNKS` at :data:`RATE`).
STEADY_PACE = 100_000


def steady(got: list[int]) -> sse_client.Throttle:
    """Reads :data:`STEADY_PACE` bytes a second; adds up in ``got[0]`` what it read."""
    async def throttle(size: int) -> None:
        got[0] += size
        await asyncio.sleep(size / STEADY_PACE)
    return throttle


async def test_a_steadily_slow_socket_is_coalesced_before_the_watchdog_cuts_it_off(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    # The gateway's defaults (a 1 MiB live buffer, slow sockets found after 1 s) but a
    # write timeout of 5 s: a reader whose socket holds megabytes (the kernel's send
    # buffer left to grow) or that is not coalesced in time has writes that wait longer.
    base = await cluster.gateway(TIDEMARK_CLIENT_WRITE_TIMEOUT="5")
    sid = await create(http, base, generator="external")
    async with sse_client.slow_session(auth_headers()) as slow:
        fast = asyncio.create_task(sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                                   idle_timeout=30))
        got = {t: [0] for t in ("sse", "ws")}
        lagging = {t: asyncio.create_task(tc.read(slow, base, sid, t, timeout=30,
                                                  throttle=steady(got[t])))
                   for t in ("sse", "ws")}
        try:
            await wait_metric(http, base, "tidemark_sse_connections", 3)
            await produce(cluster, [sid], CHUNKS + 1, payload=0, end=True, text=word,
                          per_second=RATE)
            whole = (await asyncio.wait_for(fast, 30)).stream_events
            outcomes = {t: await task for t, task in lagging.items()}
        finally:
            for task in (fast, *lagging.values()):
                task.cancel()
    assert_contiguous(whole)
    assert len(whole) == CHUNKS + 2 and all("chunkCount" not in e.envelope["data"]
                                            for e in whole)
    fast_ids = {e.seq: e.id for e in whole if e.id is not None}
    ids = [e.id for e in whole]
    # Both slow readers were coalesced, neither was cut off, and each read far less than
    # the stream's events take as they are (about 4 MB).
    assert await metric(http, base, "tidemark_slow_client_cutoffs_total") == 0
    assert await metric(http, base, "tidemark_lag_coalesced_total") == 2
    assert outcomes["ws"].code == 1000, outcomes["ws"].reason
    assert all(n < 2_000_000 for n, in got.values()), got
    for transport, out in outcomes.items():
        coalesced = check_coalesced(out, fast_ids)
        at, _ = coalesced[len(coalesced) // 2]
        rest = await tc.read(http, base, sid, transport, position=at, timeout=30)
        assert [i[0] for i in rest.stream_items] == ids[ids.index(at) + 1:], transport
