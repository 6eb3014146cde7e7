"""What a log line is about: the stream, partition and offset of the work in progress.

A ``contextvars`` variable, so each asyncio task (a gateway's request handler, a
worker's per-stream task) has its own and a value set in one never shows in another's
lines. :func:`bind` sets fields for the current context; JSON log lines
(``tidemark.logs.JsonFormatter``) carry every field bound when they are logged.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Final

#: A bound field's value: the stream id, a partition, an offset.
Value = str | int

_EMPTY: Final[Mapping[str, Value]] = MappingProxyType({})
_FIELDS: contextvars.ContextVar[Mapping[str, Value]] = contextvars.ContextVar(
    "tidemark_log_context", default=_EMPTY)


def current() -> Mapping[str, Value]:
    """The fields bound in the current context (read-only)."""
    return _FIELDS.get()


def bind(**fields: Value | None) -> contextvars.Token[Mapping[str, Value]]:
    """Add ``fields`` (those not None) to the current context's, for the rest of the
    current task (or until :func:`reset` with the returned token)."""
    merged = dict(_FIELDS.get())
    merged.update({k: v for k, v in fields.items() if v is not None})
    return _FIELDS.set(MappingProxyType(merged))


def reset(token: contextvars.Token[Mapping[str, Value]]) -> None:
    """Restore the fields as they were before the :func:`bind` that gave ``token``."""
    _FIELDS.reset(token)


@contextmanager
def bound(**fields: Value | None) -> Iterator[None]:
    """:func:`bind` for the duration of a ``with`` block."""
    token = bind(**fields)
    try:
        yield
    finally:
        reset(token)
