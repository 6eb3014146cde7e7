"""Per-module log levels: ``TIDEMARK_LOG_LEVELS`` at start, and the admin endpoints
that change them on a running process (``GET``/``PUT /v1/admin/log-levels`` on a
gateway, and on a worker's metrics server).

A spec names loggers as the code names them (the modules' ``__name__``, so a package
name covers its modules: ``gateway`` is every gateway module, ``gateway.hub`` one of
them) and a level: ``gateway.hub=DEBUG,workers=INFO``, or as JSON
``{"gateway.hub": "DEBUG"}``. ``root`` is the root logger (``TIDEMARK_LOG_LEVEL``);
``NOTSET`` makes a logger inherit its parent's level again. A logger name must start
with one of :data:`KNOWN_ROOTS`, so that a typo is an error, not a silent no-op.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Final

from eventlog.errors import ConfigError

LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NOTSET")
ROOT: Final = "root"
#: The top-level logger names a spec may name: Tidemark's packages and the libraries
#: whose lines an operator may want (``tidemark.audit`` is the audit log).
KNOWN_ROOTS: Final = frozenset({"schemas", "eventlog", "gateway", "workers", "tidemark",
                                "aiokafka", "aiohttp", "asyncio", "opentelemetry"})
#: Most loggers one spec may set.
MAX_ENTRIES: Final = 64
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class LogLevelError(ConfigError):
    """A log-level spec that names an unknown logger or level, or is malformed."""


def parse(spec: str | Mapping[str, Any]) -> dict[str, str]:
    """``"a=DEBUG,b.c=INFO"`` or ``{"a": "DEBUG"}`` -> ``{"a": "DEBUG", "b.c": "INFO"}``
    (levels upper-cased); :class:`LogLevelError` on anything else."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, level = part.partition("=")
            if not sep:
                raise LogLevelError(f"log levels: {part[:80]!r} is not <logger>=<LEVEL>")
            pairs.append((name.strip(), level.strip()))
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
    else:
        raise LogLevelError("log levels are a string 'logger=LEVEL,...' or an object "
                            "{logger: LEVEL}")
    if len(pairs) > MAX_ENTRIES:
        raise LogLevelError(f"log levels: at most {MAX_ENTRIES} loggers at once")
    out: dict[str, str] = {}
    for name, level in pairs:
        if not isinstance(name, str) or not (name == ROOT or _NAME.fullmatch(name)):
            raise LogLevelError(f"log levels: {str(name)[:80]!r} is not a logger name")
        if name != ROOT and name.split(".", 1)[0] not in KNOWN_ROOTS:
            raise LogLevelError(f"log levels: unknown logger {name[:80]!r} (names start "
                                f"with one of {', '.join(sorted(KNOWN_ROOTS))}, or root)")
        if not isinstance(level, str) or level.upper() not in LEVELS:
            raise LogLevelError(f"log levels: {name}: {str(level)[:40]!r} is not one of "
                                f"{', '.join(LEVELS)}")
        if name == ROOT and level.upper() == "NOTSET":
            raise LogLevelError("log levels: the root logger needs a level, not NOTSET")
        out[name] = level.upper()
    return out


class LogLevels:
    """The per-module levels of this process: applied, and remembered for ``GET``."""

    def __init__(self) -> None:
        self._set: dict[str, str] = {}

    def apply(self, levels: Mapping[str, str]) -> None:
        """Set each logger's level (``levels`` as :func:`parse` returns them)."""
        for name, level in levels.items():
            if name == ROOT:
                logging.getLogger().setLevel(level)
                continue
            logging.getLogger(name).setLevel(level)
            if level == "NOTSET":
                self._set.pop(name, None)
            else:
                self._set[name] = level

    def current(self) -> dict[str, Any]:
        """``{"root": <root level>, "levels": {logger: level}}``: what was set here."""
        return {"root": logging.getLevelName(logging.getLogger().level),
                "levels": dict(sorted(self._set.items()))}


#: The process's levels (one per process, as logging's own state is).
LOG_LEVELS: Final = LogLevels()
