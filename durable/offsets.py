"""Durable Streams offsets: opaque tokens that are Kafka positions and sort as strings.

A token is ``DDDD_PPPPP_OOOOOOOOOOOOOOOOOOOO``: the stream's fork depth (0 for a stream
that is no fork, its source's depth + 1 for a fork), the Kafka partition of the stream's
records, and a Kafka offset in it, each zero-padded to a fixed width, so that byte-wise
comparison orders them as the tuples ``(depth, partition, offset)``.

A record at Kafka offset ``k`` starts at ``(d, p, k)`` and ends at ``(d, p, k + 1)``;
``Stream-Next-Offset`` after it is its end. A stream's own records all live in one
partition, so they sort by Kafka offset; a fork's own records sort after everything it
inherits (a larger depth), so the fork continues its source's offset space without any
translation, as the protocol wants.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

#: The protocol's sentinels: the stream's start, and its tail at the time of the read.
START: Final = "-1"
NOW: Final = "now"

_TOKEN: Final = re.compile(r"^(\d{4})_(\d{5})_(\d{20})$(?!\n)")


class Position(NamedTuple):
    """A place in a stream's offset space (between two records, or at an end)."""

    depth: int
    partition: int
    offset: int

    def token(self) -> str:
        return f"{self.depth:04d}_{self.partition:05d}_{self.offset:020d}"


#: Before everything: ``offset=-1``.
ORIGIN: Final = Position(0, 0, 0)


def parse(token: str) -> Position | None:
    """The position a token names; None when it is not one this server mints."""
    match = _TOKEN.match(token)
    if match is None:
        # Any all-zero token (other servers' "before any data") is the origin.
        if token and "0" in token and not token.strip("0_"):
            return ORIGIN
        return None
    depth, partition, offset = (int(g) for g in match.groups())
    return Position(depth, partition, offset)
