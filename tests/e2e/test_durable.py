"""The Durable Streams surface through two real gateways (and HAProxy in front of them),
with auth on: read-your-writes across gateways, idempotent producers and Stream-Seq
through both at once, tenants, TTL expiry, forks, closure and delete."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from durable.records import partition_of, stream_key
from tests.conftest import Cluster
from tests.procs import auth_headers, start_haproxy

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@dataclass
class Two:
    """Two gateways and a load balancer over them; stream URLs on each."""

    gw: list[str]
    lb: str

    def url(self, base: str, path: str) -> str:
        return f"{base}/ds/v1/stream/{path}"


@pytest.fixture
async def two(cluster: Cluster) -> AsyncIterator[Two]:
    gw = [await cluster.gateway(), await cluster.gateway()]
    haproxy, lb = start_haproxy(gw, cluster.logdir)
    try:
        yield Two(gw=gw, lb=lb)
    finally:
        haproxy.stop()


def _path(name: str) -> str:
    return f"{name}-{time.time_ns()}"


async def test_append_through_one_gateway_is_read_through_the_other_at_once(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("ryw")
    a, b = (two.url(g, path) for g in two.gw)
    async with http.put(a, data=b"first;", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    for i in range(20):
        writer, reader = (a, b) if i % 2 else (b, a)
        async with http.post(writer, data=f"{i};".encode(),
                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204
            written = r.headers["Stream-Next-Offset"]
        async with http.get(reader, params={"offset": "-1"}) as r:
            assert r.status == 200
            assert r.headers["Stream-Next-Offset"] == written
            assert r.headers["Stream-Up-To-Date"] == "true"
            body = await r.text()
        assert body == "first;" + "".join(f"{j};" for j in range(i + 1))
        async with http.head(reader) as r:
            assert r.headers["Stream-Next-Offset"] == written


async def test_idempotent_producer_retries_through_both_gateways_write_once(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("idem")
    urls = [two.url(g, path) for g in two.gw]
    async with http.put(urls[0], headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201

    async def send(url: str, seq: int) -> int:
        async with http.post(url, data=json.dumps({"n": seq}), headers={
                "Content-Type": "application/json", "Producer-Id": "p1",
                "Producer-Epoch": "0", "Producer-Seq": str(seq)}) as r:
            return r.status

    for seq in range(10):
        # The same batch sent three times through each gateway at once.
        statuses = await asyncio.gather(*(send(u, seq) for u in urls * 3))
        assert sorted(statuses) == [200] + [204] * 5, (seq, statuses)
    async with http.get(two.url(two.lb, path), params={"offset": "-1"}) as r:
        assert await r.json() == [{"n": seq} for seq in range(10)]
    # A stale epoch is fenced, a gap is refused with the expected seq.
    async with http.post(urls[1], data="{}", headers={
            "Content-Type": "application/json", "Producer-Id": "p1",
            "Producer-Epoch": "1", "Producer-Seq": "0"}) as r:
        assert r.status == 200
    async with http.post(urls[0], data="{}", headers={
            "Content-Type": "application/json", "Producer-Id": "p1",
            "Producer-Epoch": "0", "Producer-Seq": "10"}) as r:
        assert r.status == 403
        assert r.headers["Producer-Epoch"] == "1"
    async with http.post(urls[0], data="{}", headers={
            "Content-Type": "application/json", "Producer-Id": "p1",
            "Producer-Epoch": "1", "Producer-Seq": "5"}) as r:
        assert r.status == 409
        assert r.headers["Producer-Expected-Seq"] == "1"
        assert r.headers["Producer-Received-Seq"] == "5"


async def test_stream_seq_through_both_gateways_at_once_accepts_one(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("seq")
    urls = [two.url(g, path) for g in two.gw]
    async with http.put(urls[0], headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201

    async def send(url: str, seq: str, body: str) -> int:
        async with http.post(url, data=body, headers={"Content-Type": "text/plain",
                                                      "Stream-Seq": seq}) as r:
            return r.status

    for n in range(8):
        seq = f"{n:04d}"
        statuses = await asyncio.gather(send(urls[0], seq, f"a{n}"), send(urls[1], seq, f"b{n}"))
        assert sorted(statuses) == [204, 409], statuses
    async with http.get(urls[1], params={"offset": "-1"}) as r:
        body = await r.text()
    assert len(body) == 16 and all(body[2 * n + 1] == str(n) for n in range(8))


async def test_another_tenants_path_answers_as_if_it_did_not_exist(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("tenant")
    url = two.url(two.lb, path)
    acme = auth_headers(tenant="acme")
    other = auth_headers(tenant="globex")
    async with http.put(url, data=b"secret", headers={**acme, "Content-Type": "text/plain"}) as r:
        assert r.status == 201
    for method in ("GET", "HEAD", "DELETE"):
        async with http.request(method, url, headers=other) as r:
            assert r.status == 404, method
    async with http.post(url, data=b"x", headers={**other, "Content-Type": "text/plain"}) as r:
        assert r.status == 404
    # The same path is the other tenant's own stream, and leaves acme's alone.
    async with http.put(url, data=b"mine", headers={**other, "Content-Type": "text/plain"}) as r:
        assert r.status == 201
    async with http.get(url, headers=acme) as r:
        assert await r.text() == "secret"
    async with http.get(url, headers=other) as r:
        assert await r.text() == "mine"
    async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as r:
        assert r.status == 401
    async with http.get(url, headers=auth_headers(tenant="acme", scope="streams:create")) as r:
        assert r.status == 403
    # The cookie reads, but does not write (a cross-site form post would carry it).
    cookie = {"Cookie": "tidemark_token=" + acme["Authorization"].split()[1]}
    async with aiohttp.ClientSession() as browser:
        async with browser.get(url, headers=cookie) as r:
            assert await r.text() == "secret"
        async with browser.post(url, data=b"csrf", headers={
                **cookie, "Content-Type": "text/plain"}) as r:
            assert r.status == 401


async def test_a_stream_expires_after_its_ttl_without_access_on_every_gateway(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("ttl")
    a, b = (two.url(g, path) for g in two.gw)
    async with http.put(a, headers={"Content-Type": "text/plain", "Stream-TTL": "2"}) as r:
        assert r.status == 201
    # Reads through either gateway keep it alive past its TTL ...
    for url in (b, a, b, a):
        await asyncio.sleep(1.0)
        async with http.get(url) as r:
            assert r.status == 200
    async with http.head(b) as r:
        assert r.headers["Stream-TTL"] == "2"
    # ... and without any it is gone everywhere (HEAD does not reset the TTL).
    await asyncio.sleep(2.5)
    for url in (a, b):
        async with http.head(url) as r:
            assert r.status == 404
    async with http.put(b, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201


async def test_fork_inherits_up_to_its_offset_and_outlives_its_source(
        two: Two, http: aiohttp.ClientSession) -> None:
    src, fork = _path("src"), _path("fork")
    a, b = two.gw
    text = {"Content-Type": "text/plain"}
    async with http.put(two.url(a, src), data=b"A", headers=text) as r:
        assert r.status == 201
        after_a = r.headers["Stream-Next-Offset"]
    async with http.post(two.url(b, src), data=b"B", headers=text) as r:
        assert r.status == 204
    # No Content-Type: the fork inherits its source's.
    async with http.put(two.url(b, fork), skip_auto_headers=["Content-Type"], headers={
            "Stream-Forked-From": f"/v1/stream/{src}", "Stream-Fork-Offset": after_a}) as r:
        assert r.status == 201
        assert r.headers["Content-Type"] == "text/plain"
    async with http.post(two.url(a, fork), data=b"F", headers=text) as r:
        assert r.status == 204
    async with http.get(two.url(b, fork), params={"offset": "-1"}) as r:
        assert await r.text() == "AF"
    async with http.get(two.url(a, src), params={"offset": "-1"}) as r:
        assert await r.text() == "AB"
    # Deleting the source while a fork reads it: the source is soft-deleted (410) ...
    async with http.delete(two.url(a, src)) as r:
        assert r.status == 204
    async with http.get(two.url(b, src)) as r:
        assert r.status == 410
    async with http.put(two.url(b, src), headers=text) as r:
        assert r.status == 409
    async with http.get(two.url(b, fork), params={"offset": "-1"}) as r:
        assert await r.text() == "AF"
    # ... and goes with its last fork.
    async with http.delete(two.url(b, fork)) as r:
        assert r.status == 204
    async with http.get(two.url(a, src)) as r:
        assert r.status == 404


async def test_close_is_seen_by_every_read_mode_through_the_other_gateway(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("close")
    a, b = (two.url(g, path) for g in two.gw)
    async with http.put(a, data=b"x", headers={"Content-Type": "text/plain"}) as r:
        tail = r.headers["Stream-Next-Offset"]

    async def long_poll() -> aiohttp.ClientResponse:
        async with http.get(b, params={"offset": tail, "live": "long-poll"}) as r:
            await r.read()
            return r

    waiting = asyncio.create_task(long_poll())
    await asyncio.sleep(0.5)
    async with http.post(a, data=b"last", headers={"Content-Type": "text/plain",
                                                   "Stream-Closed": "true"}) as r:
        assert r.status == 204
        assert r.headers["Stream-Closed"] == "true"
        final = r.headers["Stream-Next-Offset"]
    woken = await asyncio.wait_for(waiting, 10)
    assert woken.status == 200 and woken.headers["Stream-Closed"] == "true"
    async with http.post(b, data=b"more", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 409
        assert r.headers["Stream-Closed"] == "true"
        assert r.headers["Stream-Next-Offset"] == final
    started = time.monotonic()
    async with http.get(b, params={"offset": final, "live": "long-poll"}) as r:
        assert r.status == 204 and r.headers["Stream-Closed"] == "true"
    assert time.monotonic() - started < 2
    async with http.get(a, params={"offset": "-1", "live": "sse"}) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        events = (await r.text()).strip().split("\n\n")
    assert events[0] == "event: data\ndata:xlast"
    control = json.loads(events[-1].split("data:", 1)[1])
    assert control == {"streamNextOffset": final, "streamClosed": True, "upToDate": True}


async def test_delete_is_seen_by_the_other_gateway_and_the_path_can_be_reused(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("delete")
    a, b = (two.url(g, path) for g in two.gw)
    async with http.put(a, data=b"old", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    async with http.delete(b) as r:
        assert r.status == 204
    for url in (a, b):
        async with http.get(url) as r:
            assert r.status == 404
    async with http.delete(a) as r:
        assert r.status == 404
    async with http.put(a, data=b"new", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    async with http.get(b) as r:
        assert await r.text() == "new"


async def test_bytes_dropped_from_memory_are_read_again_from_kafka(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    gw = await cluster.gateway(TIDEMARK_DS_CACHE_BYTES="2048",
                               TIDEMARK_DS_MAX_CHUNK_BYTES="1024")
    url = f"{gw}/ds/v1/stream/{_path('budget')}"
    parts = [bytes([65 + i]) * 600 for i in range(10)]
    async with http.put(url, headers={"Content-Type": "application/octet-stream"}) as r:
        assert r.status == 201
    for part in parts:
        async with http.post(url, data=part,
                             headers={"Content-Type": "application/octet-stream"}) as r:
            assert r.status == 204
    got, offset, reads = b"", "-1", 0
    while True:
        async with http.get(url, params={"offset": offset}) as r:
            got += await r.read()
            offset = r.headers["Stream-Next-Offset"]
            reads += 1
            if r.headers.get("Stream-Up-To-Date") == "true":
                break
    assert got == b"".join(parts)
    assert reads >= 5  # at most 1024 bytes (one 600-byte record) per answer


async def test_idempotent_appends_through_a_gateway_sigkill_land_once_each(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    gw = [await cluster.gateway(), await cluster.gateway()]
    haproxy, lb = start_haproxy(gw, cluster.logdir)
    try:
        url = f"{lb}/ds/v1/stream/{_path('kill')}"
        async with http.put(url, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 201
        retries = 0
        for seq in range(60):
            if seq == 20:
                cluster.proc("gateway0").stop(signal.SIGKILL)
            while True:  # a client's retry loop: the same (id, epoch, seq) until answered
                try:
                    async with http.post(url, data=json.dumps({"seq": seq}), headers={
                            "Content-Type": "application/json", "Producer-Id": "killer",
                            "Producer-Epoch": "0", "Producer-Seq": str(seq)}) as r:
                        if r.status in (200, 204):
                            break
                        assert r.status in (502, 503), (seq, r.status, await r.text())
                except aiohttp.ClientError:
                    pass
                retries += 1
                await asyncio.sleep(0.1)
        async with http.get(url, params={"offset": "-1"}) as r:
            assert await r.json() == [{"seq": seq} for seq in range(60)]
    finally:
        haproxy.stop()


async def test_concurrent_appends_share_commits_and_each_answers_its_own_offset(
        two: Two, http: aiohttp.ClientSession) -> None:
    # Appends that arrive together are committed in a few transactions (group commit);
    # each still answers the offset just after its own bytes.
    path = _path("group")
    a, b = (two.url(g, path) for g in two.gw)
    async with http.put(a, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201

    async def send(i: int) -> tuple[str, str]:
        body = f"<{i:03d}>"
        async with http.post(a, data=body, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 204, (r.status, await r.text())
            return body, r.headers["Stream-Next-Offset"]

    answers = await asyncio.gather(*(send(i) for i in range(60)))
    assert len({offset for _, offset in answers}) == 60
    async with http.get(b, params={"offset": "-1"}) as r:
        full = await r.text()
        tail = r.headers["Stream-Next-Offset"]
    assert sorted(full[k:k + 5] for k in range(0, 300, 5)) == sorted(b for b, _ in answers)
    assert max(offset for _, offset in answers) == tail
    for body, offset in answers[::6]:
        async with http.get(b, params={"offset": offset}) as r:
            assert await r.text() == full[full.index(body) + len(body):], body


async def test_producers_appending_at_once_through_both_gateways_land_once_each(
        two: Two, http: aiohttp.ClientSession) -> None:
    path = _path("producers")
    urls = [two.url(g, path) for g in two.gw]
    async with http.put(urls[0], headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201

    async def send(url: str, pid: str, seq: int) -> int:
        async with http.post(url, data=json.dumps({"p": pid, "n": seq}), headers={
                "Content-Type": "application/json", "Producer-Id": pid,
                "Producer-Epoch": "0", "Producer-Seq": str(seq)}) as r:
            return r.status

    async def producer(pid: str) -> None:
        for seq in range(10):
            # Each batch sent twice at once, mostly through one gateway.
            statuses = await asyncio.gather(send(urls[0], pid, seq),
                                            send(urls[1 if seq % 5 == 0 else 0], pid, seq))
            assert sorted(statuses) == [200, 204], (pid, seq, statuses)

    pids = [f"p{i}" for i in range(6)]
    await asyncio.gather(*(producer(pid) for pid in pids))
    async with http.get(two.url(two.lb, path), params={"offset": "-1"}) as r:
        got = await r.json()
    assert len(got) == 60
    for pid in pids:
        assert [m["n"] for m in got if m["p"] == pid] == list(range(10)), pid


def _in_another_partition(name: str, than: str) -> str:
    """A fresh path of the test tenant whose partition (of 4) is not ``than``'s."""
    avoid = partition_of(stream_key("default", than), 4)
    for n in range(100):
        path = _path(f"{name}{n}")
        if partition_of(stream_key("default", path), 4) != avoid:
            return path
    raise AssertionError("no path in another partition")


async def test_a_fork_made_while_its_source_is_deleted_elsewhere_ends_alike_everywhere(
        two: Two, http: aiohttp.ClientSession) -> None:
    # The fork is checked in its own partition, the delete in its source's: the fork's
    # second step (a record in the source's partition) orders the two.
    for i in range(8):
        src = _path(f"race{i}-")
        fork = _in_another_partition(f"race{i}-fork-", src)
        async with http.put(two.url(two.gw[0], src), data=b"data",
                            headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 201

        async def put_fork(url: str, source: str) -> int:
            async with http.put(url, headers={"Stream-Forked-From": source}) as r:
                return r.status

        async def delete(url: str) -> int:
            async with http.delete(url) as r:
                return r.status

        forked, deleted = await asyncio.gather(put_fork(two.url(two.gw[i % 2], fork), src),
                                               delete(two.url(two.gw[1 - i % 2], src)))
        assert deleted == 204 and forked in (201, 404, 409), (forked, deleted)
        for g in two.gw:
            async with http.get(two.url(g, fork), params={"offset": "-1"}) as r:
                assert r.status == (200 if forked == 201 else 404), (i, forked, g)
                if forked == 201:
                    assert await r.text() == "data"
            async with http.head(two.url(g, src)) as r:
                # Soft-deleted while the fork reads it, else gone.
                assert r.status == (410 if forked == 201 else 404), (i, forked, g)
        if forked == 201:
            async with http.delete(two.url(two.gw[1], fork)) as r:
                assert r.status == 204
            for g in two.gw:
                async with http.head(two.url(g, src)) as r:
                    assert r.status == 404
        async with http.put(two.url(two.gw[1], src), headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 201  # the path is free again
