"""Generators loaded from the ``tidemark.generators`` entry points (``eventlog.plugins``
says which are selected). Each entry point names a class or factory that is called with
no arguments (with the process's :class:`~eventlog.settings.Settings` when it sets
``takes_settings = True``, as the built-in ``openai`` generator does) and returns an
object satisfying :class:`workers.generators.Generator`: its ``name`` is the entry
point's name and its ``events`` is callable. A plugin that fails to import, to build or
that check is reported (logged, listed as broken) and the worker serves the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Final, cast

from eventlog.plugins import GENERATORS, Plugin, discover
from eventlog.settings import Settings
from workers.generators import Generator

log = logging.getLogger(__name__)

LOADED: Final = "loaded"
REFUSED: Final = "refused"
BROKEN: Final = "broken"


@dataclass(frozen=True, kw_only=True, slots=True)
class Status:
    """One plugin and what became of it: ``loaded``, ``refused`` (not selected) or
    ``broken`` (selected, but it did not load or check); ``reason`` says why."""

    plugin: Plugin
    state: str
    reason: str = ""


class PluginCheckError(TypeError):
    """A plugin's object does not satisfy its group's protocol."""


def checked(obj: object, name: str) -> Generator:
    """``obj`` as a :class:`Generator` named ``name``, else :class:`PluginCheckError`."""
    if getattr(obj, "name", None) != name:
        raise PluginCheckError(f"its name is {getattr(obj, 'name', None)!r}, not {name!r}")
    if not callable(getattr(obj, "events", None)):
        raise PluginCheckError("it has no events(job, start_seq) method")
    return cast(Generator, obj)


def _load(plugin: Plugin, settings: Settings) -> Generator:
    factory = plugin.entry_point.load()
    if not callable(factory):
        raise PluginCheckError(f"{plugin.value} is not a class or factory")
    built = factory(settings) if getattr(factory, "takes_settings", False) is True else factory()
    return checked(built, plugin.name)


def load_generators(allow: Iterable[str] = (),
                    found: Iterable[tuple[metadata.EntryPoint, str, str]] | None = None,
                    settings: Settings | None = None,
                    ) -> tuple[dict[str, Generator], list[Status]]:
    """The selected generators by name, and the status of every installed one;
    ``settings``: what a generator that takes settings is built with (default: the
    defaults)."""
    settings = settings or Settings()
    generators: dict[str, Generator] = {}
    report: list[Status] = []
    for plugin in discover(GENERATORS, allow, found):
        if plugin.refused:
            log.warning("generator plugin %s from %s %s is not used: %s", plugin.name,
                        plugin.dist, plugin.version, plugin.refused)
            report.append(Status(plugin=plugin, state=REFUSED, reason=plugin.refused))
            continue
        try:
            generators[plugin.name] = _load(plugin, settings)
        except Exception as exc:  # noqa: BLE001 - a plugin's own code: report it, go on
            reason = f"{type(exc).__name__}: {exc}"
            log.error("generator plugin %s (%s from %s %s) is broken: %s", plugin.name,
                      plugin.value, plugin.dist, plugin.version, reason)
            report.append(Status(plugin=plugin, state=BROKEN, reason=reason))
            continue
        report.append(Status(plugin=plugin, state=LOADED))
    return generators, report
