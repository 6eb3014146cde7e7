"""Inputs this gateway handed to a generated stream's worker, waiting for their
``input`` event: the hub tells which input id an event carries (its ``tm-input``
header) and when a stream ends.

Bounded: at most ``per_stream`` waiters per stream (``TIDEMARK_INPUT_PENDING``); each
waits at most ``TIDEMARK_INPUT_WAIT_SECONDS`` (the caller's timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import NamedTuple

from eventlog.errors import StreamEnded
from gateway.errors import LimitExceeded


class Written(NamedTuple):
    """Where an input's event is: its seq and its event id."""

    seq: int
    id: str


class InputWaiters:
    def __init__(self, per_stream: int) -> None:
        self._per_stream = per_stream
        self._by_id: dict[str, tuple[str, asyncio.Future[Written]]] = {}
        self._by_stream: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    @contextlib.contextmanager
    def expect(self, stream_id: str, input_id: str) -> Iterator[asyncio.Future[Written]]:
        """A future of the input's event, resolved by :meth:`seen` (or failed with
        :class:`StreamEnded` by :meth:`ended`), forgotten when the block ends."""
        ids = self._by_stream.setdefault(stream_id, set())
        if len(ids) >= self._per_stream:
            raise LimitExceeded(
                f"{self._per_stream} inputs to stream {stream_id} are already waiting for its "
                "worker here; send this one when one of them was answered",
                limit="pending_inputs", retry_after=1)
        fut: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        ids.add(input_id)
        self._by_id[input_id] = (stream_id, fut)
        try:
            yield fut
        finally:
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved: the caller may have left before it came
            del self._by_id[input_id]
            ids.discard(input_id)
            if not ids:
                del self._by_stream[stream_id]

    def seen(self, input_id: str, seq: int, event_id: str) -> None:
        """The hub read an input event that carries ``input_id``."""
        entry = self._by_id.get(input_id)
        if entry is not None and not entry[1].done():
            entry[1].set_result(Written(seq, event_id))

    def ended(self, stream_id: str) -> None:
        """The hub read the stream's terminal event: inputs not written by now never are."""
        for input_id in self._by_stream.get(stream_id, ()):
            fut = self._by_id[input_id][1]
            if not fut.done():
                fut.set_exception(StreamEnded(
                    f"stream {stream_id} ended before its worker took the input"))
