"""Bounded memory: a client that stops reading is cut off while others stream on; the
gateway's memory stays bounded, and the slow client later resumes with nothing lost.
A long stream and many finished streams leave the gateway's memory flat."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from bench.scn_compression import Dechunker, decoder
from eventlog.clients import make_producer
from eventlog.settings import load_settings
from eventlog.streams import send_event
from schemas.events import Event
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous
from tests.procs import token
from workers.publisher import Publisher

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    async with http.get(f"{base}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def produce(cluster: Cluster, stream_ids: list[str], events_each: int, *,
                  payload: int, first_seq: int = 1, end: bool = False,
                  noise: bool = False, text: Callable[[int], str] | None = None,
                  per_second: float | None = None) -> None:
    """Write events straight to Kafka, as a fast backend would (Tidemark's record format):
    ``partial_result`` events whose chunk is ``payload`` bytes (or ``text(seq)``), the last
    one a ``result`` if ``end``; at most ``per_second`` events a second per stream if
    given (in bursts of 50), else as fast as Kafka takes them. ``noise``: each event's
    padding is random hex (it does not compress away)."""
    settings = load_settings(cluster.env)
    async with Publisher(settings) as pub:
        infos = [(await pub.open_stream(sid)).info for sid in stream_ids]
    producer = make_producer(settings.kafka, role="test", linger_ms=5)
    await producer.start()
    try:
        pad = "x" * payload
        step = 200 if per_second is None else 50
        began = asyncio.get_running_loop().time()
        for i in range(events_each):
            seq = first_seq + i
            last = end and i == events_each - 1
            if noise:
                pad = secrets.token_hex(payload // 2)
            futures = [await send_event(producer, info.topic, info.partition, Event(
                stream=info.stream_id, seq=seq, type="result" if last else "partial_result",
                ts=0, data={"text": pad} if last else
                {"chunk": pad if text is None else text(seq), "chunkIndex": seq - 1}))
                for info in infos]
            if i % step == step - 1 or last:
                await asyncio.gather(*futures)
                if per_second is not None:
                    due = began + (i + 1) / per_second
                    await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
        await producer.flush()
    finally:
        await producer.stop()


async def plain_cut_off_gateway(cluster: Cluster, http: aiohttp.ClientSession
                                ) -> tuple[str, str]:
    """A gateway on the plain cut-off path (every event as it is; coalescing for readers
    that fall behind is tested in test_lagging.py), and an external stream on it."""
    base = await cluster.gateway(TIDEMARK_CLIENT_BUFFER_BYTES=str(CLIENT_BUFFER),
                                 TIDEMARK_TAIL_BYTES="1048576",
                                 TIDEMARK_CLIENT_WRITE_TIMEOUT="2",
                                 TIDEMARK_LAG_COALESCE="false")
    async with http.post(f"{base}/v1/streams", json={"query": "q", "generator": "external"}
                         ) as resp:
        return base, (await resp.json())["stream_id"]


#: TIDEMARK_CLIENT_BUFFER_BYTES of :func:`plain_cut_off_gateway`.
CLIENT_BUFFER = 65536


def unread_socket(base: str, path: str, headers: dict[str, str]) -> socket.socket:
    """A client with a tiny receive buffer that sends ``GET path`` (with a token) and
    then reads nothing. The caller closes it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = base.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    lines = "".join(f"{k}: {v}\r\n" for k, v in
                    {"Host": host, "Authorization": f"Bearer {token()}", **headers}.items())
    sock.sendall(f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode())
    return sock


async def wait_cut_off(http: aiohttp.ClientSession, base: str, what: str) -> None:
    """Until the gateway has counted a slow client cut off (30 s at most)."""
    for _ in range(300):
        if await metric(http, base, "tidemark_slow_client_cutoffs_total") >= 1:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} was never cut off")


async def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the socket still gets until the gateway closes it (or 10 s of
    silence)."""
    sock.setblocking(False)
    received = bytearray()
    loop = asyncio.get_running_loop()
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received.extend(chunk)
    return bytes(received)


async def peak_buffered(http: aiohttp.ClientSession, base: str, peak: list[float]) -> None:
    """Keep the highest ``tidemark_client_buffered_bytes`` seen in ``peak[0]`` (until
    cancelled)."""
    while True:
        peak[0] = max(peak[0], await metric(http, base, "tidemark_client_buffered_bytes"))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("coding", ["identity", "gzip"])
async def test_a_client_that_stops_reading_is_cut_off_and_resumes_completely(
        cluster: Cluster, http: aiohttp.ClientSession, coding: str) -> None:
    base, sid = await plain_cut_off_gateway(cluster, http)
    slow = unread_socket(base, f"/v1/streams/{sid}/events",
                         {"Accept-Encoding": coding, "Accept": "text/event-stream"})
    try:
        # A reader keeps up with the same stream the whole time.
        seen: list[sse_client.Event] = []
        follower = asyncio.create_task(sse_client.read(
            http, f"{base}/v1/streams/{sid}/events", sink=seen, idle_timeout=60))
        await sse_client.wait_for(seen, 1, follower)
        peak = [0.0]
        sampler = asyncio.create_task(peak_buffered(http, base, peak))
        # ~20 MB through the gateway (incompressible when the slow client takes gzip, so
        # that its socket fills up too).
        await produce(cluster, [sid], 20_000, payload=1000, end=True,
                      noise=coding != "identity")
        await asyncio.wait_for(follower, 120)
        assert_contiguous(seen)
        assert seen[-1].event == "result", "the reading client was held back by the slow one"
        # The slow client's socket has taken nothing for the write timeout: it is dropped.
        await wait_cut_off(http, base, "the slow client")
        sampler.cancel()
        # What the gateway held for its two clients the whole time: for each, its live
        # feed and its transport's unsent bytes (a catch-up batch from the 1 MiB tail at
        # most), never the megabytes the slow one did not take.
        assert 0 < peak[0] < 2 * (CLIENT_BUFFER + 1024 * 1024), peak[0]

        # The slow client reads what reached it, then resumes from its last id.
        received = await read_until_closed(slow)
    finally:
        slow.close()
    if coding != "identity":  # what a browser decodes of it: unchunked, then gunzipped
        head, _, body = received.partition(b"\r\n\r\n")
        assert f"content-encoding: {coding}" in head.decode().lower(), head
        decode = decoder(coding)
        received = b"".join(decode(piece) for piece in Dechunker().feed(body))
    text = received.decode(errors="replace")
    assert "fell behind" in text, "the slow client was not told why it was cut off"
    ids = [line[4:] for line in text.split("\n") if line.startswith("id: ")]
    # An id counts only if its event arrived whole (its blank line came through).
    complete = [i for i in ids if f"id: {i}\n" in text and
                text.split(f"id: {i}\n", 1)[1].split("\n\n", 1)[0] != text.split(
                    f"id: {i}\n", 1)[1]]
    assert complete, "the slow client got nothing at all"
    rest = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                 last_event_id=complete[-1])
    resumed_from = [e.id for e in seen].index(complete[-1])
    assert [e.id for e in rest.stream_events] == [e.id for e in seen[resumed_from + 1:]]


async def test_a_client_stuck_until_it_is_aborted_is_counted_once(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """The watchdog drops a stuck client, then gives its connection the write timeout
    again to take the last words before aborting it; the ticks of that grace period do
    not count it again, in the metric or in the analytics."""
    base, sid = await plain_cut_off_gateway(cluster, http)
    stuck = unread_socket(base, f"/v1/streams/{sid}/events",
                          {"Accept": "text/event-stream"})
    try:
        await asyncio.sleep(0.5)
        await produce(cluster, [sid], 5_000, payload=1000)
        await wait_cut_off(http, base, "the stuck client")
        # Past the grace period (2 s) and a few watchdog ticks (1 s each), still unread.
        await asyncio.sleep(4.5)
        assert await metric(http, base, "tidemark_slow_client_cutoffs_total") == 1
        assert await metric(http, base, "tidemark_sse_connections") == 0
        assert await metric(http, base, "tidemark_client_buffered_bytes") == 0
    finally:
        stuck.close()


async def test_a_long_stream_and_many_finished_streams_leave_memory_flat(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    # Every event as it is, so the reader can check each seq (a reader that falls behind
    # the fast writer would get coalesced chunks: test_lagging.py).
    base = await cluster.gateway(TIDEMARK_TAIL_BYTES="1048576", TIDEMARK_LAG_COALESCE="false")
    gateway = cluster.proc("gateway0")
    async with http.post(f"{base}/v1/streams", json={"query": "q", "generator": "external"}
                         ) as resp:
        sid = (await resp.json())["stream_id"]
    seen: list[sse_client.Event] = []
    reader = asyncio.create_task(
        sse_client.read(http, f"{base}/v1/streams/{sid}/events", sink=seen, idle_timeout=60))
    await sse_client.wait_for(seen, 1, reader)
    await produce(cluster, [sid], 20_000, payload=100)
    await sse_client.wait_for(seen, 20_001, reader, timeout=120)
    warmed = rss_bytes(gateway.popen.pid)
    await produce(cluster, [sid], 180_000, payload=100, first_seq=20_001, end=True)
    await asyncio.wait_for(reader, 180)
    assert len(seen) == 200_001
    assert_contiguous(seen)
    after_long = rss_bytes(gateway.popen.pid)

    # Many short streams, each followed to its end by a client.
    ids = []
    for _ in range(300):
        async with http.post(f"{base}/v1/streams",
                             json={"query": "q", "generator": "external"}) as resp:
            ids.append((await resp.json())["stream_id"])
    await produce(cluster, ids, 5, payload=100, end=True)
    replies = await asyncio.gather(*(
        sse_client.read(http, f"{base}/v1/streams/{i}/events") for i in ids))
    assert all(r.stream_events[-1].event == "result" for r in replies)
    after_many = rss_bytes(gateway.popen.pid)
    assert await metric(http, base, "tidemark_sse_connections") == 0

    mib = 2**20
    assert after_long - warmed < 16 * mib, \
        f"180k more events grew the gateway by {(after_long - warmed) / mib:.1f} MiB"
    assert after_many - after_long < 16 * mib, \
        f"300 finished streams grew the gateway by {(after_many - after_long) / mib:.1f} MiB"
