"""What a follower yields: one frozen value per stream event, and the reset notice."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from schemas.events import TERMINAL_TYPES


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of a stream, as every transport delivers it.

    ``id`` is the event's position (give it back as ``last_event_id`` to resume after
    it); ``type`` is the event name (``status``, ``partial_result``, ``result``...);
    ``seq``, ``ts`` and ``data`` come from the envelope, which is kept whole in
    ``envelope``.
    """

    id: str
    type: str
    seq: int
    ts: int
    data: Any
    envelope: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """Whether this event ends the stream (``result``, ``error``, ``cancelled``)."""
        return self.type in TERMINAL_TYPES


@dataclass(frozen=True, slots=True)
class Reset:
    """The gateway could not resume at the position asked for (older than the log holds,
    or from another topic epoch) and serves from ``earliest`` (an event id), the first
    event it holds. Events between the position and ``earliest`` are gone."""

    reason: str
    earliest: str | None
    type: Literal["reset"] = "reset"


#: What :meth:`tidemark.client.Client.follow` yields.
Item = StreamEvent | Reset
