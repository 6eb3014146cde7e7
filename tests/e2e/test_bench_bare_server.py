"""The benchmark's bare aiohttp SSE server is the reference for connection accept rate
(bench/scn_storm.py): it must answer what the gateway answers and what the benchmark's
client checks, or the comparison means nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.swarm import build
from tests import sse_client
from tests.procs import REPO, Proc, base_env, free_port, wait_port

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = Proc("bare", [], base_env(), tmp_path, argv=[
        sys.executable, "-m", "bench.bare_server", "--port", str(port), "--heartbeat", "0.3"])
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


async def test_it_answers_like_the_gateway_headers_retry_one_event_then_pings(
        bare: str, http: aiohttp.ClientSession) -> None:
    for last_event_id in (None, "1-abcd-3-17"):
        reply = await sse_client.read(http, f"{bare}/v1/streams/s-42/events",
                                      last_event_id=last_event_id, max_events=None,
                                      stop_after_comments=2, idle_timeout=5)
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert reply.headers["Cache-Control"] == "no-cache, no-transform"
        assert reply.headers["X-Accel-Buffering"] == "no"
        assert reply.first_field == "retry" and reply.retry == 2000
        assert [(e.event, e.seq, e.envelope["stream"]) for e in reply.events] == [
            ("status", 0, "s-42")]
        assert reply.comments == ["ping", "ping"]


async def test_the_benchmark_client_sees_each_connections_expected_first_event(
        bare: str, tmp_path: Path) -> None:
    client = await asyncio.to_thread(build, REPO / ".cache" / "bench")
    urls = tmp_path / "urls"
    urls.write_text("".join(f"{bare}/v1/streams/s{i}/events\tlast-{i}\t0\n"
                            for i in range(50)))
    done = await asyncio.to_thread(subprocess.run, [
        str(client), "-urls", str(urls), "-max-events", "1", "-from-start", "-rate", "500",
        "-duration", "30"], capture_output=True, text=True, timeout=60, check=True)
    final = [json.loads(x) for x in done.stdout.splitlines() if '"kind":"final"' in x][-1]
    assert final["connections"]["established"] == 50
    assert final["connections"]["failed"] == 0
    assert final["events"] == 50 and final["first_seq_mismatch"] == 0
    # -from-start times each first event from the client's start: with -rate 500 the
    # 50th connection starts about 0.1 s in.
    since_start = final["create_to_first_event"]
    assert since_start["count"] == 50
    assert since_start["max_ms"] >= 90
