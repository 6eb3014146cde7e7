"""The reference "most tutorials" SSE gateway: one Kafka consumer per client.

Kept for comparison only. ``GET /v1/streams/{id}/events`` starts an aiokafka consumer
for this one client, assigns it the stream's partition of the namespace's events
topic (``eventlog.placement.stream_partition``, where Tidemark writes), seeks
to the end (live events only: no resume), and writes every record whose key is the
stream id as an SSE event, with a ``: ping`` comment when nothing was written for a
heartbeat interval. The consumer is stopped when the client goes away. Everything
a consumer-per-client design costs - a broker connection, a fetch loop, buffers and
a metadata copy per client - is paid per connection.

Run: ``python -m bench.baseline_gateway --port P`` with ``TIDEMARK_KAFKA_BOOTSTRAP``,
``TIDEMARK_NAMESPACE``, ``TIDEMARK_PARTITIONS`` and ``TIDEMARK_HEARTBEAT_SECONDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

from aiohttp import web
from aiokafka import TopicPartition

from eventlog.clients import make_consumer, stop_client
from eventlog.placement import stream_partition
from eventlog.settings import Settings, load_settings
from eventlog.topics import events_topic
from schemas.events import HEADER_TYPE, TERMINAL_TYPES

log = logging.getLogger("bench.baseline")

SETTINGS = web.AppKey("settings", Settings)
OPEN = web.AppKey("open", dict)

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}


def frame(partition: int, offset: int, kind: str, value: bytes) -> bytes:
    return (f"id: {partition}-{offset}\nevent: {kind}\n".encode() + b"data: " + value + b"\n\n")


async def events(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    stream_id = request.match_info["id"]
    key = stream_id.encode()
    topic = events_topic(settings.log.namespace)
    tp = TopicPartition(topic, stream_partition(stream_id, settings.log.partitions))
    heartbeat = settings.gateway.heartbeat_s
    consumer = make_consumer(settings.kafka, role="baseline")
    try:
        await asyncio.wait_for(consumer.start(), 30)
    except BaseException:
        await stop_client(consumer)
        raise
    request.app[OPEN]["consumers"] += 1
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        resp = web.StreamResponse(status=200, headers=SSE_HEADERS)
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n\n")
        last_write = time.monotonic()
        while True:
            wait = max(0.0, heartbeat - (time.monotonic() - last_write))
            batches = await consumer.getmany(tp, timeout_ms=int(wait * 1000), max_records=500)
            for rec in batches.get(tp, ()):
                if rec.key != key or rec.value is None:
                    continue
                kind = next((v.decode() for k, v in rec.headers if k == HEADER_TYPE), "message")
                await resp.write(frame(tp.partition, rec.offset, kind, rec.value))
                last_write = time.monotonic()
                if kind in TERMINAL_TYPES:
                    await resp.write_eof()
                    return resp
            if time.monotonic() - last_write >= heartbeat:
                await resp.write(b": ping\n\n")
                last_write = time.monotonic()
    except ConnectionError:
        return web.Response(status=204)  # the client went away
    finally:
        request.app[OPEN]["consumers"] -= 1
        await stop_client(consumer)


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready", "consumers": request.app[OPEN]["consumers"]})


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[OPEN] = {"consumers": 0}
    app.router.add_get("/v1/streams/{id}/events", events)
    app.router.add_get("/healthz", readyz)
    app.router.add_get("/readyz", readyz)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline_gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings(os.environ)
    app = create_app(settings)
    print(f"Baseline gateway listening on http://{args.host}:{args.port}/", flush=True)
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=3,
                loop=uvloop.new_event_loop() if uvloop else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
