"""``python -m bench.bare_server --port P``: the bare aiohttp + uvloop SSE server, the
reference for connection accept rate (bench/scn_storm.py).

It answers ``GET /v1/streams/{id}/events`` (the gateway's URL shape; a
``Last-Event-ID`` header is accepted and ignored) at once with Tidemark's SSE response
headers, a ``retry:`` line and one event, seq 0 of that stream, in Tidemark's envelope
shape; then a ``: ping`` comment every ``--heartbeat`` seconds until the client goes. No
Kafka, no lookup, no state: what any aiohttp SSE endpoint costs per connection. It
listens with the same accept backlog as the gateway (``--backlog``, default 4096) and
prints ``Bare SSE server listening on http://H:P/`` once it does; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

import orjson
from aiohttp import web

HEADERS = {"Content-Type": "text/event-stream; charset=utf-8",
           "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
HEARTBEAT = web.AppKey("heartbeat", float)
RETRY = web.AppKey("retry_ms", int)


def first_event(stream_id: str) -> bytes:
    """The one event each response carries: seq 0 of the stream, framed as SSE."""
    envelope = {"stream": stream_id, "seq": 0, "type": "status",
                "ts": int(time.time() * 1000), "data": {"state": "queued"}}
    return b"id: bare-0\nevent: status\ndata: " + orjson.dumps(envelope) + b"\n\n"


async def events(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers=HEADERS)
    await resp.prepare(request)
    await resp.write(b"retry: %d\n\n" % request.app[RETRY] + first_event(
        request.match_info["id"]))
    heartbeat = request.app[HEARTBEAT]
    try:
        while True:
            await asyncio.sleep(heartbeat)
            await resp.write(b": ping\n\n")
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    return resp


def make_app(*, heartbeat_s: float, retry_ms: int) -> web.Application:
    app = web.Application()
    app[HEARTBEAT] = heartbeat_s
    app[RETRY] = retry_ms
    app.router.add_get("/v1/streams/{id}/events", events)
    return app


async def serve(host: str, port: int, *, backlog: int, heartbeat_s: float,
                retry_ms: int) -> None:
    runner = web.AppRunner(make_app(heartbeat_s=heartbeat_s, retry_ms=retry_ms),
                           access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=backlog)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    sys.stdout.write(f"Bare SSE server listening on http://{host}:{bound}/\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bare_server", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--backlog", type=int, default=4096)
    ap.add_argument("--heartbeat", type=float, default=15.0, help="seconds between pings")
    ap.add_argument("--retry-ms", type=int, default=2000)
    args = ap.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port, backlog=args.backlog, heartbeat_s=args.heartbeat,
                     retry_ms=args.retry_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
