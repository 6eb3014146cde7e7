"""Tombstones in the stream index for streams that retention has deleted.

The index (``tidemark.streams``) is compacted: a key's last record wins, and a record
with no value (a tombstone) makes compaction drop the key altogether. Without
tombstones the index would keep a record for every stream ever made. A sweep reads the
namespace's records from the start of the topic to its end and writes a tombstone for
each finished stream whose terminal event is below its partition's log start: every
event of it is gone. An unfinished stream is never tombstoned (nothing cheap proves
that all its events are gone: an external stream may be written to long after its
index record), so a stream that never ends keeps its record; workers always end theirs.

A stream tombstoned later in the same pass (or already) is skipped, so repeated sweeps
do not pile up tombstones before compaction runs. Sweeps read one record at a time and
keep only the keys still to tombstone. Each worker runs a janitor, but only the one
that owns jobs partition 0 sweeps (the group hands that partition to exactly one
worker at a time; during a rebalance two may sweep, and a tombstone written twice is
harmless).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from eventlog.clients import make_consumer, make_producer, read_to_end, started, stop_client
from eventlog.errors import TidemarkError
from eventlog.index import StreamInfo
from eventlog.reader import LogReader
from eventlog.settings import KafkaSettings, LogSettings, Settings
from eventlog.topics import STREAMS_TOPIC, segment_ms

log = logging.getLogger(__name__)


class IndexJanitor:
    """Sweeps the index of one namespace every ``interval_s``."""

    def __init__(self, kafka: KafkaSettings, log_settings: LogSettings,
                 producer: AIOKafkaProducer, reader: LogReader, *, interval_s: float,
                 active: Callable[[], bool] = lambda: True) -> None:
        self._kafka = kafka
        self._log = log_settings
        self._producer = producer
        self._reader = reader
        self.interval_s = interval_s
        self._active = active
        self.tombstones = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not self._active():
                continue
            try:
                written = await self.sweep()
            except (KafkaError, TidemarkError, OSError) as exc:
                log.warning("index sweep failed (%s); trying again in %.0fs", exc,
                            self.interval_s)
                continue
            if written:
                log.info("wrote %s index tombstones for streams retention has deleted",
                         written)

    async def sweep(self) -> int:
        """One pass; returns how many tombstones it wrote."""
        consumer = await started(lambda: make_consumer(self._kafka, role="janitor"),
                                 self._kafka, "janitor start")
        doomed: dict[bytes, None] = {}
        log_starts: dict[tuple[str, int], int] = {}
        try:
            async for rec in read_to_end(consumer, STREAMS_TOPIC, max_records=2000):
                if rec.key is None:
                    continue
                if rec.value is None:
                    doomed.pop(rec.key, None)
                elif await self._deleted(rec.value, log_starts):
                    doomed[rec.key] = None
        finally:
            await stop_client(consumer)
        for key in doomed:
            await self._producer.send(STREAMS_TOPIC, None, key=key)
        await self._producer.flush()
        self.tombstones += len(doomed)
        return len(doomed)

    async def _deleted(self, value: bytes, log_starts: dict[tuple[str, int], int]) -> bool:
        try:
            info = StreamInfo.from_json(value)
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return False
        if info.namespace != self._log.namespace:
            return False
        where = (info.topic, info.partition)
        if where not in log_starts:
            try:
                log_starts[where] = (await self._reader.bounds(*where))[0]
            except KafkaError as exc:  # a topic that is gone: leave its records alone
                log.warning("janitor: no log start for %s/%s (%s)", *where, exc)
                log_starts[where] = 0
        log_start = log_starts[where]
        return (info.finished and info.terminal_offset is not None
                and info.terminal_offset < log_start)


def sweep_interval_s(log_settings: LogSettings) -> float:
    """As set, else a quarter of the retention time (at most an hour, at least a second):
    the events topic's segments roll at that pace too, so retention acts no faster."""
    if log_settings.janitor_interval_s > 0:
        return log_settings.janitor_interval_s
    return segment_ms(log_settings.retention_ms) / 1000


async def run_janitor(settings: Settings, *, active: Callable[[], bool]) -> None:
    """Sweep the index of ``settings``' namespace until cancelled, whenever ``active()``."""
    kafka = settings.kafka
    producer = await started(lambda: make_producer(kafka, role="janitor"), kafka,
                             "janitor producer start")
    reader = LogReader(kafka, size=1, role="janitor-reader")
    try:
        await IndexJanitor(kafka, settings.log, producer, reader,
                           interval_s=sweep_interval_s(settings.log), active=active).run()
    finally:
        await reader.close()
        await stop_client(producer)
