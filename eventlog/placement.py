"""Placement: which partition holds a stream.

The default (and only, until the topic-per-stream benchmark mode lands) placement is
one partitioned topic per namespace with key = stream id. The partition is chosen
here, explicitly, with the same murmur2 hash Kafka's Java clients use for keys, so
every writer agrees on it and the stream index can record it.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(stream_id: str, partitions: int) -> int:
    digest: int = murmur2(stream_id.encode())
    return (digest & 0x7FFFFFFF) % partitions
