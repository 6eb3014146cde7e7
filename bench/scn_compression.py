"""Scenario ``compression``: bytes on the wire and gateway CPU per event, plain vs gzip vs
br SSE, the WebSocket without and with permessage-deflate, and long-poll plain and gzip.

Real processes: the broker, one Tidemark gateway (default settings: compression on, gzip
level 6 / br quality 3, 12-bit windows), the publisher writing demo-like tokens
(``bench.publisher publish --tokens``: the demo generator's words, as ``workers.demo``
writes them) and this module's client (``python -m bench.scn_compression client``:
asyncio on raw sockets, one process). For each mode in turn, on fresh streams: the
client opens one connection per stream and reads the stream's first event; then the
publisher writes ``rate`` tokens/s per stream for the window. Figures per mode: events
delivered, bytes the client read from its sockets per event (headers, chunk framing and
WebSocket frame heads included), gateway CPU per event and the client's CPU (so that the
client is seen not to be the limit), and the gateway's RSS growth per connection once
every connection has had its first event (the compressor of each included).

The client decodes what it reads as a browser would (gzip/br incrementally, chunk by
chunk; WebSocket frames with RSV1 inflated with the connection's context) and counts the
events it decoded, so a mode that held events back would show fewer events, not fewer
bytes.

What it measures: the gateway's delivery (hub -> compressor -> socket), fed by the bench's
publisher, which writes straight to Kafka without the worker's transactional outbox. That
is the part compression changes; it is not the generated-token path (``worker_path``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.cluster import Bench, Publisher, create_streams, start_gateway
from bench.markdown import cpu_cell, fmt, table
from bench.procs import PYTHON, Sample, raise_fd_limit, window

MODES = ("sse", "sse-gzip", "sse-br", "ws", "ws-deflate", "poll", "poll-gzip")


@dataclass(frozen=True)
class Profile:
    streams: int
    tokens_per_s: float
    window_s: float


SHORT = Profile(streams=200, tokens_per_s=5.0, window_s=10.0)
FULL = Profile(streams=1000, tokens_per_s=5.0, window_s=30.0)


# The client ---------------------------------------------------------------------------


@dataclass
class Counters:
    events: int = 0
    wire: int = 0
    decoded: int = 0
    errors: int = 0


def decoder(coding: str) -> Callable[[bytes], bytes]:
    """An incremental decoder of a ``Content-Encoding`` (``identity`` too): each piece's
    bytes as soon as it came, as a browser decodes (the tests' clients use it too)."""
    if coding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if coding == "br":
        import brotli
        return brotli.Decompressor().process
    if coding != "identity":
        raise ValueError(f"no decoder for {coding!r}")
    return bytes


class Dechunker:
    """HTTP/1.1 chunked transfer coding, undone as bytes come."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = 0
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while not self.done:
            if self.need == 0:
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                if not line:  # the CRLF after a chunk's data
                    continue
                self.need = int(line.split(b";")[0], 16)
                if self.need == 0:
                    self.done = True
                    break
            take = min(self.need, len(self.buf))
            if not take:
                break
            out.append(bytes(self.buf[:take]))
            del self.buf[:take]
            self.need -= take
        return out


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith(("HTTP/1.1 200", "HTTP/1.1 101")):
        raise RuntimeError(lines[0])
    return {k.lower(): v for k, _, v in (x.partition(": ") for x in lines[1:] if x)}


async def _sse(host: str, port: int, sid: str, coding: str, c: Counters,
               first: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/streams/{sid}/events HTTP/1.1\r\nHost: {host}\r\n"
                 f"Accept: text/event-stream\r\nAccept-Encoding: {coding}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    c.wire += len(head)
    got = _headers(head).get("content-encoding", "identity")
    if got != coding:
        raise RuntimeError(f"asked for {coding}, got {got}")
    dechunk, decode, pending = Dechunker(), decoder(coding), b""
    while data := await reader.read(65536):
        c.wire += len(data)
        for piece in dechunk.feed(data):
            text = decode(piece)
            c.decoded += len(text)
            *frames, pending = (pending + text).split(b"\n\n")
            c.events += sum(f.startswith(b"id: ") for f in frames)
            if frames:
                first.set()
    writer.close()


async def _ws(host: str, port: int, sid: str, deflate: bool, c: Counters,
              first: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" \
        if deflate else ""
    writer.write(f"GET /v1/streams/{sid}/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{ext}"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    c.wire += len(head)
    if deflate != ("sec-websocket-extensions" in _headers(head)):
        raise RuntimeError(f"permessage-deflate asked {deflate}, not so agreed")
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    while True:
        b0, b1 = await reader.readexactly(2)
        size, n = b1 & 0x7F, 2
        if size >= 126:
            extra = 2 if size == 126 else 8
            size = int.from_bytes(await reader.readexactly(extra), "big")
            n += extra
        payload = await reader.readexactly(size)
        c.wire += n + size
        opcode = b0 & 0x0F
        if opcode == 8:
            break
        if opcode != 1:
            continue
        text = inflate.decompress(payload + b"\x00\x00\xff\xff") if b0 & 0x40 else payload
        c.decoded += len(text)
        c.events += 1
        first.set()
    writer.close()


async def _poll(host: str, port: int, sid: str, coding: str, c: Counters,
                first: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    last: str | None = None
    while True:
        query = "wait=30" + (f"&last_event_id={last}" if last else "")
        writer.write(f"GET /v1/streams/{sid}/poll?{query} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Accept-Encoding: {coding}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        headers = _headers(head)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        c.wire += len(head) + len(body)
        got = headers.get("content-encoding", "identity")
        if got != coding:
            raise RuntimeError(f"asked for {coding}, got {got}")
        text = decoder(coding)(body)
        c.decoded += len(text)
        answer = json.loads(text)
        c.events += sum(e["id"] is not None for e in answer["events"])
        last = answer["last_event_id"] or last
        first.set()
        if answer["ended"]:
            break


async def client(base: str, sids: list[str], mode: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    c = Counters()
    cpu = [time.process_time()]
    firsts = [asyncio.Event() for _ in sids]
    kind, _, coding = mode.partition("-")

    async def one(sid: str, first: asyncio.Event) -> None:
        try:
            if kind == "sse":
                await _sse(host, int(port), sid, coding or "identity", c, first)
            elif kind == "ws":
                await _ws(host, int(port), sid, coding == "deflate", c, first)
            else:
                await _poll(host, int(port), sid, coding or "identity", c, first)
        except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError) as exc:
            c.errors += 1
            sys.stderr.write(f"{sid}: {type(exc).__name__}: {exc}\n")

    def snapshot() -> None:
        now = time.process_time()
        print(json.dumps({"kind": "snapshot", **asdict(c), "cpu_s": round(now - cpu[0], 3)}),
              flush=True)
        c.events = c.wire = c.decoded = 0
        cpu[0] = now

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, snapshot)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = []
    for sid, first in zip(sids, firsts, strict=True):
        tasks.append(asyncio.create_task(one(sid, first)))
        await asyncio.sleep(0.002)  # not a connect storm
    await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 60)
    print("CONNECTED", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _client_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scn_compression client")
    ap.add_argument("--base", required=True)
    ap.add_argument("--streams", required=True, help="a file of stream ids, one a line")
    ap.add_argument("--mode", choices=MODES, required=True)
    args = ap.parse_args(argv)
    raise_fd_limit()
    sids = [x.strip() for x in Path(args.streams).read_text().splitlines() if x.strip()]
    try:
        import uvloop
    except ImportError:
        asyncio.run(client(args.base, sids, args.mode))
    else:
        uvloop.run(client(args.base, sids, args.mode))
    return 0


# The scenario -------------------------------------------------------------------------


def _snapshots(proc: Any, count: int, timeout: float = 10) -> dict[str, Any]:
    def test() -> list[dict[str, Any]] | None:
        got = [x for x in proc.json_lines() if x.get("kind") == "snapshot"]
        return got if len(got) >= count else None
    snap: dict[str, Any] = proc.wait_for(f"snapshot {count}", test, timeout)[count - 1]
    return snap


def _mode(b: Bench, gw: Any, ns: str, mode: str, p: Profile) -> dict[str, Any]:
    path, rows, _ = create_streams(b, ns, p.streams, tag=f"cmp-{mode}")
    ids = b.workdir / f"ids-{mode}.txt"
    ids.write_text("".join(r["stream_id"] + "\n" for r in rows))
    rss0 = gw.proc.rss_kb()
    with b.reg.scope():
        cl = b.reg.start(f"client-{mode}", [PYTHON, "-m", "bench.scn_compression", "client",
                                             "--base", gw.url, "--streams", str(ids),
                                             "--mode", mode], b.env(ns))
        cl.wait_line("CONNECTED", 120)
        time.sleep(0.5)
        rss1 = gw.proc.rss_kb()
        cl.signal(signal.SIGUSR1)
        _snapshots(cl, 1)
        pub = Publisher(b, ns, path, b.workdir / f"state-{mode}", rate=p.streams * p.tokens_per_s,
                        duration=p.window_s, payload=0, name=f"publisher-{mode}", tokens=True)
        pub.wait_started()
        # The publisher exits before the window's end is sampled: its own summary has
        # its CPU.
        procs = {"gateway": gw.proc, "client": cl, "kafka": b.broker}
        a = Sample.take(procs)
        published = pub.result(p.window_s + 60)
        time.sleep(1.5)  # the last events reach the client
        z = Sample.take(procs)
        cl.signal(signal.SIGUSR1)
        snap = _snapshots(cl, 2)
    win = window(a, z)
    events = snap["events"]
    gw_cpu = win["processes"]["gateway"]["cpu_s"]
    return {"mode": mode, "connections": p.streams, "published": published.get("acked"),
            "delivered": events, "client_errors": snap["errors"],
            "wire_bytes_per_event": round(snap["wire"] / events, 1) if events else None,
            "decoded_bytes_per_event": round(snap["decoded"] / events, 1) if events else None,
            "gateway_cpu_us_per_event": round(1e6 * gw_cpu / events, 1) if events else None,
            "gateway_rss_kib_per_connection": round((rss1 - rss0) / p.streams, 1),
            "client_cpu_s": snap["cpu_s"], "publisher_cpu_s": published.get("cpu_s"),
            "window": win}


def compression(b: Bench, profile_name: str, modes: tuple[str, ...] = MODES,
                ) -> dict[str, Any]:
    p = FULL if profile_name == "full" else SHORT
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown compression modes {sorted(unknown)}")
    ns = b.namespace("cmp")
    out: dict[str, Any] = {"setup": {**asdict(p), "modes": list(modes),
                                     "events_per_s": p.streams * p.tokens_per_s,
                                     "client": "bench.scn_compression client (Python asyncio "
                                               "on raw sockets, one process)"},
                           "modes": {}}
    with b.reg.scope():
        gw = start_gateway(b, "gateway-cmp", ns)
        for mode in modes:
            try:
                out["modes"][mode] = _mode(b, gw, ns, mode, p)
            except RuntimeError as exc:
                out["modes"][mode] = {"mode": mode, "error": str(exc)[-2000:]}
    plain = out["modes"].get("sse", {}).get("wire_bytes_per_event")
    for m in out["modes"].values():
        if plain and m.get("wire_bytes_per_event"):
            m["wire_vs_plain_sse"] = round(m["wire_bytes_per_event"] / plain, 3)
    return out


def render(sc: dict[str, Any]) -> list[str]:
    c = sc.get("compression")
    if not c:
        return []
    lines = ["### Compression: bytes on the wire and gateway CPU per event", ""]
    if c.get("error"):
        return [*lines, f"**error:** `{c['error'][-300:]}`", ""]
    s = c.get("setup", {})
    lines += [f"{fmt(s.get('streams'))} connections, one per stream, "
              f"{fmt(s.get('tokens_per_s'))} demo-like tokens/s each "
              f"({fmt(s.get('events_per_s'), 0)} events/s) for {fmt(s.get('window_s'))} s per "
              f"mode; {s.get('client', '')}. One gateway process, local single-node Kafka, "
              "all on the same 2 cores.", ""]
    rows = []
    for mode in MODES:
        m = c.get("modes", {}).get(mode)
        if not m:
            continue
        if m.get("error"):
            rows.append([mode, f"error: {m['error'][-120:]}", *["-"] * 7])
            continue
        win = m.get("window", {})
        rows.append([mode, f"{fmt(m.get('delivered'))} / {fmt(m.get('published'))}",
                     fmt(m.get("wire_bytes_per_event")), fmt(m.get("wire_vs_plain_sse"), 2),
                     fmt(m.get("gateway_cpu_us_per_event")), cpu_cell(win, "gateway"),
                     fmt(m.get("gateway_rss_kib_per_connection")), cpu_cell(win, "client"),
                     fmt(win.get("other_processes_cpu_s"))])
    lines += table(["mode", "events delivered / published", "wire B/event", "vs plain SSE",
                    "gateway CPU µs/event", "gateway CPU", "gateway RSS KiB/conn",
                    "client CPU", "other procs CPU s"], rows)
    return [*lines, ""]


if __name__ == "__main__":
    if sys.argv[1:2] != ["client"]:
        raise SystemExit("usage: python -m bench.scn_compression client --base URL "
                         "--streams FILE --mode MODE")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(_client_main(sys.argv[2:]))
