"""Errors of the event-log layer.

The root, :class:`TidemarkError`, lives in ``schemas.errors``; this module adds the
errors of the log layer.
"""

from __future__ import annotations

from schemas.errors import TidemarkError

__all__ = [
    "ConfigError", "InvalidToken", "KafkaUnavailable", "SeqConflict", "StreamEnded", "StreamGone",
    "StreamNotFound", "TidemarkError",
]


class ConfigError(TidemarkError):
    """A setting is missing or malformed."""


class InvalidToken(TidemarkError):
    """A bearer token that does not verify (``eventlog.tokens``); the message says why."""


class KafkaUnavailable(TidemarkError):
    """Kafka could not be reached or did not answer in time."""

    retriable = True


class StreamNotFound(TidemarkError):
    """No stream with this id: not in the log (or, for ids without a location, not in
    the stream index)."""


class StreamGone(TidemarkError):
    """The stream existed but retention has deleted all of its events."""


class StreamEnded(TidemarkError):
    """The stream already has a terminal event; nothing more can be appended."""


class SeqConflict(TidemarkError):
    """An append's sequence number leaves a gap after the stream's last one."""

    def __init__(self, message: str, *, expected: int) -> None:
        super().__init__(message)
        self.expected = expected
