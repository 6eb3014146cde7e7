"""Compressed answers: ``Accept-Encoding`` negotiation (RFC 9110 section 12.5.3) and
per-connection encoders that flush after every write.

An SSE response is a stream of small writes that must each reach the client at once,
so every :meth:`Encoder.compress` ends with a sync flush (zlib ``Z_SYNC_FLUSH``,
brotli's ``flush``): what it returns decompresses to everything written so far. aiohttp's
own ``enable_compression`` cannot do that (its writer compresses without flushing, so
small events stay in the compressor until the response ends) and knows no brotli.

Each connection has its own encoder (its own window), so what one costs is chosen here
on purpose. Measured with 1,000 encoders after 301 token-sized writes each (tracemalloc
for zlib, RSS for brotli, whose C allocations tracemalloc does not see): gzip with
``TIDEMARK_COMPRESSION_WINDOW_BITS`` 12 (a 4 KiB window, some 15 token events) and
``memLevel`` 4 holds about 30 KiB (zlib's defaults, 15 and 8, 262 KiB); brotli's hash
tables depend on its quality, not its window: about 320 KiB at quality 2-3 (the default
3), 660 KiB at 4-11, 15 KiB at 1 (which hardly compresses events written one by one).
So gzip comes first at equal q (docs/transports.md has the measurements).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final, Protocol

import brotli

from eventlog.settings import GatewaySettings

GZIP: Final = "gzip"
BR: Final = "br"
#: zlib's memLevel for gzip streams: with a 12-bit window, 4 holds about 30 KiB where the
#: default 8 holds 150 KiB (its hash table and pending buffer), for the same bytes on
#: token streams (28.2 per event both, measured).
GZIP_MEM_LEVEL: Final = 4
#: Most codings of an ``Accept-Encoding`` header looked at (a bounded parse).
MAX_CODINGS: Final = 32


class Encoder(Protocol):
    """One connection's compressor."""

    @property
    def coding(self) -> str:
        """Its ``Content-Encoding``."""

    def compress(self, data: bytes) -> bytes:
        """``data`` compressed and flushed: the client can decode all of it now."""

    def finish(self) -> bytes:
        """The end of the compressed stream (gzip's trailer, brotli's last block)."""


class GzipEncoder:
    __slots__ = ("_z",)
    coding: Final = GZIP

    def __init__(self, level: int, window_bits: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 16 + window_bits, GZIP_MEM_LEVEL)

    def compress(self, data: bytes) -> bytes:
        z = self._z
        return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._z.flush(zlib.Z_FINISH)


class BrotliEncoder:
    __slots__ = ("_c",)
    coding: Final = BR

    def __init__(self, quality: int, window_bits: int) -> None:
        self._c = brotli.Compressor(mode=brotli.MODE_TEXT, quality=quality,
                                    lgwin=max(10, window_bits))

    def compress(self, data: bytes) -> bytes:
        c = self._c
        # brotli-stubs 1.2.1 lacks Compressor.flush (Brotli has had it since 1.0).
        return c.process(data) + c.flush()  # type: ignore[attr-defined,no-any-return]

    def finish(self) -> bytes:
        return self._c.finish()


def _qvalue(params: list[str]) -> float | None:
    """The ``q`` of one coding's parameters (1 when absent); None when malformed."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        value = value.strip()
        if not value or len(value) > 5 or not value.replace(".", "", 1).isdigit():
            return None
        q = float(value)
        return q if q <= 1 else None
    return 1.0


def negotiate(header: str | None, offered: tuple[str, ...]) -> str | None:
    """The coding of ``offered`` to answer with, or None (identity).

    The client's highest q wins (``*`` stands for every coding it does not name; q=0
    refuses); at equal q, the earlier in ``offered``. A malformed entry counts as not
    sent. No header at all means identity: a client may accept any coding then, but
    one that sends none is most likely one that cannot decode any.
    """
    if not header or not offered:
        return None
    named: dict[str, float] = {}
    star: float | None = None
    for entry in header.split(",", MAX_CODINGS)[:MAX_CODINGS]:
        coding, *params = entry.split(";")
        coding = coding.strip().lower()
        q = _qvalue(params)
        if not coding or q is None:
            continue
        if coding == "*":
            star = q
        elif coding == "x-gzip":  # RFC 9110 section 8.4.1.3: the same as gzip
            named.setdefault(GZIP, q)
        else:
            named.setdefault(coding, q)
    best: str | None = None
    best_q = 0.0
    for coding in offered:
        q = named.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    return best


@dataclass(frozen=True, slots=True)
class Codings:
    """The gateway's compression settings, ready to make encoders."""

    offered: tuple[str, ...]
    level: int
    quality: int
    window_bits: int

    @classmethod
    def of(cls, gw: GatewaySettings) -> Codings:
        names = tuple(c.strip() for c in gw.compression.lower().split(",") if c.strip())
        return cls(offered=() if names == ("off",) else names, level=gw.compression_level,
                   quality=gw.brotli_quality, window_bits=gw.compression_window_bits)

    @property
    def enabled(self) -> bool:
        return bool(self.offered)

    def choose(self, accept_encoding: str | None) -> str | None:
        """The coding to answer a client that sent ``accept_encoding`` with (None:
        identity)."""
        return negotiate(accept_encoding, self.offered)

    def encoder(self, coding: str) -> Encoder:
        """A new encoder for ``coding`` (one of :attr:`offered`)."""
        if coding == BR:
            return BrotliEncoder(self.quality, self.window_bits)
        return GzipEncoder(self.level, self.window_bits)

    def compress(self, accept_encoding: str | None, body: bytes) -> tuple[bytes, str | None]:
        """A whole body compressed for this client, and its coding (None: as it was)."""
        coding = self.choose(accept_encoding)
        if coding is None:
            return body, None
        encoder = self.encoder(coding)
        return encoder.compress(body) + encoder.finish(), coding
