"""`topic-per-stream` placement (kept for the benchmark's comparison) honours the same
contract: every stream in a topic of its own, served and resumed alike."""

from __future__ import annotations

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import assert_contiguous, create, joined_chunks, publish

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


async def test_topic_per_stream_streams_resume_and_publish(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.env["TIDEMARK_PLACEMENT"] = "topic-per-stream"
    cluster.worker()
    base = await cluster.gateway()
    sid = await create(http, base, options={"tokens": 30, "tokens_per_second": 100})
    url = f"{base}/v1/streams/{sid}/events"
    head = await sse_client.read(http, url, max_events=8)
    assert head.status == 200, head.body
    rest = await sse_client.read(http, url, last_event_id=head.last_id)
    whole = head.stream_events + rest.stream_events
    assert_contiguous(whole)
    assert whole[-1].envelope["data"]["text"] == joined_chunks(whole)

    ext = await create(http, base, generator="external")
    status, _ = await publish(http, base, ext, [{"type": "status", "data": {"state": "x"}},
                                                {"type": "result", "data": {"text": ""}}])
    assert status == 200
    events = (await sse_client.read(http, f"{base}/v1/streams/{ext}/events")).stream_events
    assert [e.seq for e in events] == [0, 1, 2]

    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert {f"tidemark.{cluster.namespace}.stream.{s}" for s in (sid, ext)} <= topics
