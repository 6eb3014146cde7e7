"""The publisher SDK writes straight to Kafka; a gateway serves what it wrote."""

from __future__ import annotations

import aiohttp
import pytest

from eventlog.errors import SeqConflict, StreamEnded, StreamNotFound
from eventlog.settings import load_settings
from schemas.validation import InvalidInput
from tests import sse_client
from tests.conftest import Cluster
from tests.procs import auth_headers
from workers.publisher import Publisher

pytestmark = pytest.mark.integration


async def test_sdk_stream_is_served_by_a_gateway_with_the_seq_rules(cluster: Cluster) -> None:
    base = await cluster.gateway()  # creates the namespace's topics
    settings = load_settings(cluster.env)
    async with Publisher(settings) as pub:
        stream = await pub.create_stream()
        await stream.status("running")
        await stream.metadata(model="external-llm", sources=["a", "b"])
        await stream.progress(50, eta=1.5, step="drafting", completed_steps=1)
        await stream.partial("Hello, ", 0)
        retry = await stream.publish("partial_result", {"chunk": "Hello, ", "chunkIndex": 0},
                                     seq=4)
        assert retry.written == [] and retry.duplicates == 1
        with pytest.raises(SeqConflict):
            await stream.publish("partial_result", {"chunk": "x", "chunkIndex": 9}, seq=9)
        with pytest.raises(InvalidInput):
            await stream.progress(250)
        await stream.partial("world", 1, last=True)
        end = await stream.result({"text": "Hello, world"})
        assert end.terminal == "result" and end.last_seq == 6
        with pytest.raises(StreamEnded):
            await stream.status("running")

        again = await pub.open_stream(stream.stream_id)
        assert again.info.partition == stream.info.partition
        assert again.info.first_offset == stream.info.first_offset
        with pytest.raises(StreamNotFound):
            await pub.open_stream("no-such-stream")
        with pytest.raises(StreamNotFound):
            await pub.open_stream(stream.stream_id[:-24] + "0" * 24)

    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        reply = await sse_client.read(http, f"{base}/v1/streams/{stream.stream_id}/events")
        async with http.get(f"{base}/v1/streams/{stream.stream_id}") as resp:
            status = await resp.json()
    assert [e.event for e in reply.stream_events] == [
        "status", "status", "metadata", "progress", "partial_result", "partial_result",
        "result"]
    assert [e.seq for e in reply.stream_events] == list(range(7))
    assert reply.stream_events[2].envelope["data"]["sources"] == ["a", "b"]
    assert status["status"] == "completed" and status["last_seq"] == 6


async def test_a_stream_is_continued_by_another_publisher_from_its_id_alone(
        cluster: Cluster) -> None:
    base = await cluster.gateway()
    settings = load_settings(cluster.env)
    async with Publisher(settings) as first, Publisher(settings) as second:
        made = await first.create_stream()
        await made.partial("one ", 0)
        other = await second.open_stream(made.stream_id)  # e.g. another process
        assert other.next_seq == 2
        await other.partial("two", 1)
        await other.result({"text": "one two"})
        custom = await first.create_stream("order-4711")  # an id of the backend's own
        reopened = await second.open_stream("order-4711")
        assert reopened.info.first_offset == custom.info.first_offset
        with pytest.raises(ValueError):
            await first.create_stream("s2-0-0-0-" + "0" * 24)  # Tidemark's own form
    async with aiohttp.ClientSession(headers=auth_headers()) as http:
        reply = await sse_client.read(http, f"{base}/v1/streams/{made.stream_id}/events")
    assert [e.seq for e in reply.stream_events] == [0, 1, 2, 3]
    assert reply.stream_events[-1].envelope["data"] == {"text": "one two"}
