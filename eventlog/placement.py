"""Placement: which partition holds a stream.

The default placement is one partitioned topic per namespace with key = stream id
(``topic-per-stream`` exists for the benchmark's comparison). A self-describing stream
id names its partition (chosen by hashing its random part when it is made); any other
id is placed by the murmur2 hash Kafka's Java clients use for keys. Both are computed
here, so every writer and reader agrees. A stream's job and cancel records go to the
same-numbered partition of the jobs topics.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

from schemas.streamid import parse_stream_id


def partition_for(stream_id: str, partitions: int) -> int:
    digest: int = murmur2(stream_id.encode())
    return (digest & 0x7FFFFFFF) % partitions


def stream_partition(stream_id: str, partitions: int) -> int:
    """The partition of a stream's events (and of its jobs)."""
    ref = parse_stream_id(stream_id)
    return ref.partition if ref is not None else partition_for(stream_id, partitions)
