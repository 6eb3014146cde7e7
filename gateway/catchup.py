"""The backlog of a subscriber: everything of its stream from a position up to where
the hub's live feed takes over.

Recent positions are served from the hub's memory tail (its index by stream key, so a
resume reads only its own stream's frames); older ones are read from Kafka through the
pooled reader (bounded concurrency), framed on the way.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from aiokafka import TopicPartition

from eventlog.reader import LogReader
from gateway.hub import Hub, Row, frame_record


def from_memory(hub: Hub, tp: TopicPartition, key: bytes, start: int,
                until: int) -> list[Row] | None:
    """This stream's frames with offsets in [start, until) from the memory tail, when it
    holds them all (possibly none); None when the read must go to Kafka (:func:`backlog`).
    No coroutine: the common resume needs nothing else."""
    if start >= until:
        return []
    tail = hub.tails[tp]
    if not tail.covers(start):
        return None
    frames = tail.since(start, key)
    if frames and frames[-1][0] >= until:
        frames = [f for f in frames if f[0] < until]
    return frames


async def backlog(hub: Hub, reader: LogReader, tp: TopicPartition, key: bytes, start: int,
                  until: int) -> AsyncGenerator[tuple[list[Row], str], None]:
    """This stream's frames with offsets in [start, until), in order and in batches, with
    their source (``memory`` or ``kafka``). Batches are never empty."""
    frames = from_memory(hub, tp, key, start, until)
    if frames is not None:
        if frames:
            yield frames, "memory"
        return
    epoch = hub.epochs[tp.topic]
    async with reader.open(tp.topic, tp.partition, start) as cursor:
        async for batch in cursor.batches(until=until, key=key):
            yield [frame_record(epoch, rec) for rec in batch], "kafka"  # Frames are Rows
