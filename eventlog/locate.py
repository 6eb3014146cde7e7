"""Finding a stream in the log from its self-describing id (``schemas.streamid``).

A version 2 id names the stream's partition and a floor offset at or below its first
event, so the first record with the stream's key at or after the floor is its first
event. The scan is bounded whatever the id says: it stops at ``until`` (how far the
caller has read) and at the first record written more than ``window_ms`` after the
id's creation time, since the first event is written right after the id is made.
"""

from __future__ import annotations

from typing import Final

from eventlog.errors import KafkaUnavailable
from eventlog.index import RUNNING, StreamInfo
from eventlog.reader import LogReader
from eventlog.records import LogRecord
from schemas.streamid import StreamRef

#: How long after an id's creation its first event may still become visible: the
#: create request's deadline, producer retries, a read_committed reader held back by
#: another producer's open transaction (aiokafka's default transaction timeout is
#: 60 s), and clock skew between hosts.
CREATE_WINDOW_MS: Final = 120_000


async def first_record(reader: LogReader, topic: str, partition: int, key: bytes, *,
                       start: int, until: int,
                       not_after_ms: int | None = None) -> LogRecord | None:
    """The first record with ``key`` in [start, until), or None.

    With ``not_after_ms``, gives up at the first record (of any key) whose timestamp is
    later than that.
    """
    if start >= until:
        return None
    try:
        async with reader.open(topic, partition, start) as cursor:
            async for rec in cursor.records(until=until, timeout_s=10.0):
                if rec.key == key:
                    return rec
                if not_after_ms is not None and rec.timestamp > not_after_ms:
                    return None
    except TimeoutError as exc:
        raise KafkaUnavailable(f"reading {topic}/{partition} made no progress") from exc
    return None


def found(stream_id: str, namespace: str, topic: str, ref: StreamRef,
          rec: LogRecord) -> StreamInfo:
    """What the first record found of a stream says about it (status not yet known)."""
    return StreamInfo(stream_id=stream_id, namespace=namespace, topic=topic,
                      partition=ref.partition, first_offset=rec.offset,
                      generator=rec.generator or "unknown", status=RUNNING,
                      created_at=ref.created_ms, updated_at=ref.created_ms,
                      last_seq=rec.seq)
