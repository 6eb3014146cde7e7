"""``Accept-Encoding`` negotiation and the per-connection encoders
(``gateway.compression``): each write decodes at once, on its own, to exactly its bytes."""

from __future__ import annotations

import zlib

import brotli
import pytest

from eventlog.errors import ConfigError
from eventlog.settings import GatewaySettings
from gateway import sse
from gateway.compression import Codings, negotiate

BOTH = ("gzip", "br")


@pytest.mark.parametrize(("header", "offered", "want"), [
    (None, BOTH, None),
    ("", BOTH, None),
    ("identity", BOTH, None),
    ("gzip", BOTH, "gzip"),
    ("br", BOTH, "br"),
    ("gzip, deflate, br, zstd", BOTH, "gzip"),  # a browser: the server's order
    ("gzip, deflate, br, zstd", ("br", "gzip"), "br"),
    ("gzip;q=0.5, br", BOTH, "br"),  # the client's q first
    ("GZIP;Q=0.5, Br;q=0.9", BOTH, "br"),  # case-insensitive
    ("br;q=0, gzip;q=0.1", BOTH, "gzip"),
    ("gzip;q=0, br;q=0", BOTH, None),  # both refused
    ("*", BOTH, "gzip"),
    ("*;q=0.2, gzip;q=0.1", BOTH, "br"),  # * stands for the codings not named
    ("*;q=0", BOTH, None),
    ("x-gzip", BOTH, "gzip"),
    ("deflate, compress", BOTH, None),
    ("gzip;q=2", BOTH, None),  # malformed q: as if not sent
    ("gzip;q=abc, br;q=0.3", BOTH, "br"),
    ("gzip;q=0.001", BOTH, "gzip"),
    ("gzip ; q=0.8 , br ; q=0.7", BOTH, "gzip"),
    ("gzip, br", (), None),  # compression off
    ("gzip, br", ("br",), "br"),
    ("," * 10_000 + "gzip", BOTH, None),  # bounded: only the first entries count
])
def test_negotiation_follows_the_clients_q_values_then_the_servers_order(
        header: str | None, offered: tuple[str, ...], want: str | None) -> None:
    assert negotiate(header, offered) == want


FRAMES = [sse.frame_retry(2000)] + [
    sse.frame_event(b'{"stream":"s3-x","seq":%d,"type":"partial_result","data":{"chunk":'
                    b'"w%d ","chunkIndex":%d}}' % (i, i % 7, i), event="partial_result",
                    id=f"1-5f3a9c21-7-{100 + i}") for i in range(200)] + [sse.PING]


@pytest.mark.parametrize("coding", BOTH)
def test_every_write_decodes_at_once_and_the_whole_equals_the_plain_bytes(
        coding: str) -> None:
    codings = Codings.of(GatewaySettings())
    encoder = codings.encoder(coding)
    assert encoder.coding == coding
    decoder = zlib.decompressobj(16 + 15) if coding == "gzip" else brotli.Decompressor()
    wire = 0
    for frame in FRAMES:
        out = encoder.compress(frame)
        wire += len(out)
        # Nothing held back: this write's bytes alone give the frame back.
        assert decoder.process(out) == frame if coding == "br" else \
            decoder.decompress(out) == frame
    tail = encoder.finish()
    if coding == "gzip":
        assert decoder.decompress(tail) == b"" and decoder.eof
    else:
        assert decoder.process(tail) == b"" and decoder.is_finished()
    assert wire < sum(map(len, FRAMES)) / 3  # token frames repeat a lot


def test_a_whole_body_is_compressed_for_the_client_or_left_alone() -> None:
    codings = Codings.of(GatewaySettings())
    body = b'{"events":[' + b",".join([b'{"id":"1-a-0","event":"status"}'] * 50) + b"]}"
    gz, coding = codings.compress("gzip, br", body)
    assert coding == "gzip" and zlib.decompress(gz, 16 + 15) == body
    br, coding = codings.compress("br", body)
    assert coding == "br" and brotli.decompress(br) == body
    assert codings.compress("identity", body) == (body, None)
    off = Codings.of(GatewaySettings(compression="off"))
    assert not off.enabled and off.compress("gzip", body) == (body, None)


def test_settings_take_the_codings_in_order_and_refuse_bad_ones() -> None:
    assert Codings.of(GatewaySettings(compression=" br , gzip ")).offered == ("br", "gzip")
    assert not Codings.of(GatewaySettings(compression="")).enabled
    for bad in ({"compression": "zstd"}, {"compression": "gzip,gzip"}, {"compression": "off,gzip"},
                {"compression_level": 0}, {"brotli_quality": 12},
                {"compression_window_bits": 8}, {"compression_window_bits": 16}):
        with pytest.raises(ConfigError):
            GatewaySettings(**bad)  # type: ignore[arg-type]
