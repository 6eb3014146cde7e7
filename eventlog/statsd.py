"""Push a process's Prometheus metrics to a StatsD or DogStatsD server (``TIDEMARK_STATSD``).

Every ``TIDEMARK_STATSD_INTERVAL`` seconds the registry is collected and sent over UDP
as StatsD lines, in datagrams of at most ``TIDEMARK_STATSD_MAX_PACKET`` bytes:

- a gauge is a gauge (``name:value|g``; a negative value is sent as ``0|g`` then the
  value, since a signed value is an adjustment in StatsD);
- a counter is sent as what it grew by since the last push (``name:delta|c``), so that
  the server can sum the processes of a fleet; nothing is sent for a counter that did
  not move;
- a histogram is its ``_count`` and ``_sum`` and each ``_bucket`` (cumulative, with its
  ``le``) as counters in the same way: rates and means per interval, and quantiles from
  the buckets, as from Prometheus.

A metric's name is its Prometheus sample name with ``tidemark_`` replaced by
``TIDEMARK_STATSD_PREFIX`` and a dot (``tidemark_events_delivered_total`` becomes
``tidemark.events_delivered_total``). Labels are DogStatsD tags (``|#outcome:new``, and
``TIDEMARK_STATSD_TAGS`` on every line) with ``TIDEMARK_STATSD_FLAVOR=dogstatsd``; plain
StatsD has no tags, so there each label becomes two more name parts
(``.outcome.new``; a dot in a value becomes ``_``). Characters other than letters,
digits and ``_ . - /`` become ``_``. The set of lines is as bounded as the registry:
labels that could grow without bound (tenants) are already capped there
(``TIDEMARK_METRICS_TENANTS``).

The wire format is a line per metric, which is simpler to write than to adapt a client
library to (the ``statsd`` and ``datadog`` packages send a datagram per call from a
blocking socket, and neither reads a Prometheus registry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

FLAVORS: Final = ("statsd", "dogstatsd")
DEFAULT_PORT: Final = 8125
#: What may not appear in a name part or a tag: StatsD's and DogStatsD's separators.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")
_TAG = re.compile(r"[A-Za-z0-9_.\-/]+(:[A-Za-z0-9_.\-/]+)?")


@dataclass(frozen=True, slots=True)
class StatsdConfig:
    """Where and how to push (from the ``TIDEMARK_STATSD*`` settings)."""

    host: str
    port: int
    flavor: str = "statsd"
    prefix: str = "tidemark"
    interval_s: float = 10.0
    tags: tuple[str, ...] = ()
    max_packet: int = 1432


def parse_address(address: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as (host, port); raises ValueError."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":") or str(DEFAULT_PORT)
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port")
    return host, int(port)


def parse_tags(raw: str) -> tuple[str, ...]:
    """``k:v,k2:v2`` as DogStatsD tags; raises ValueError on a tag it would mangle."""
    tags = tuple(t.strip() for t in raw.split(",") if t.strip())
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r} is not name or name:value of letters, digits "
                             "and _ . - /")
    return tags


def _part(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Translator:
    """Turns collections of one registry into StatsD lines; keeps the counters' last
    values to send what they grew by."""

    def __init__(self, config: StatsdConfig) -> None:
        self._config = config
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._tags = ",".join(config.tags)

    def _name(self, sample: str, labels: Iterable[tuple[str, str]]) -> tuple[str, str]:
        """(metric name, tag suffix) of a sample."""
        base = sample.removeprefix("tidemark_")
        name = f"{self._config.prefix}.{base}" if self._config.prefix else base
        if self._config.flavor == "dogstatsd":
            tags = [f"{_part(k)}:{_part(v)}" for k, v in labels]
            if self._tags:
                tags.append(self._tags)
            return name, ("|#" + ",".join(tags)) if tags else ""
        # A dot in a value would make another level of the name (``le.0_25``).
        return ".".join([name, *(f"{_part(k)}.{_part(v).replace('.', '_')}"
                                 for k, v in labels)]), ""

    def lines(self, registry: CollectorRegistry) -> list[str]:
        out: list[str] = []
        for family in registry.collect():
            gauge = family.type in ("gauge", "unknown", "info", "stateset")
            for sample in family.samples:
                if sample.name.endswith("_created") or math.isnan(sample.value):
                    continue
                labels = tuple(sorted(sample.labels.items()))
                name, tags = self._name(sample.name, labels)
                if gauge:
                    if sample.value < 0:
                        out.append(f"{name}:0|g{tags}")
                    out.append(f"{name}:{_number(sample.value)}|g{tags}")
                    continue
                key = (sample.name, labels)
                delta = sample.value - self._last.get(key, 0.0)
                self._last[key] = sample.value
                if delta > 0:  # a counter never shrinks in one process
                    out.append(f"{name}:{_number(delta)}|c{tags}")
        return out


def packets(lines: Iterable[str], max_packet: int) -> list[bytes]:
    """Lines joined by newlines into datagrams of at most ``max_packet`` bytes (a line
    longer than that goes alone)."""
    out: list[bytes] = []
    current = bytearray()
    for line in lines:
        data = line.encode()
        if current and len(current) + 1 + len(data) > max_packet:
            out.append(bytes(current))
            current.clear()
        if current:
            current += b"\n"
        current += data
    if current:
        out.append(bytes(current))
    return out


class _Quiet(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        # Nobody listening (ICMP port unreachable) and the like: metrics are best effort.
        log.debug("statsd: %s", exc)


class StatsdExporter:
    """Pushes one registry every interval, and once more when it stops."""

    def __init__(self, registry: CollectorRegistry, config: StatsdConfig) -> None:
        self._registry = registry
        self._config = config
        self._translator = Translator(config)
        self._transport: asyncio.DatagramTransport | None = None
        self.pushed = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._config.host, self._config.port,
                                       type=socket.SOCK_DGRAM)
        family, _, _, _, address = infos[0]
        self._transport, _ = await loop.create_datagram_endpoint(
            _Quiet, remote_addr=(str(address[0]), int(address[1])), family=family)

    def push(self) -> None:
        if self._transport is None:
            return
        for packet in packets(self._translator.lines(self._registry),
                              self._config.max_packet):
            self._transport.sendto(packet)
        self.pushed += 1

    async def run(self) -> None:
        """Push every interval until cancelled."""
        while True:
            await asyncio.sleep(self._config.interval_s)
            try:
                self.push()
            except Exception:  # a metric that cannot be collected must not end the loop
                log.exception("statsd push failed")

    def close(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self.push()
            self._transport.close()
            self._transport = None


@contextlib.asynccontextmanager
async def pushing(registry: CollectorRegistry, config: StatsdConfig | None
                  ) -> AsyncIterator[StatsdExporter | None]:
    """Push ``registry`` while the block runs (nothing when ``config`` is None)."""
    if config is None:
        yield None
        return
    exporter = StatsdExporter(registry, config)
    await exporter.start()
    task = asyncio.create_task(exporter.run(), name="statsd")
    log.info("pushing metrics to %s %s:%d every %g s", config.flavor, config.host,
             config.port, config.interval_s)
    try:
        yield exporter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        exporter.close()
