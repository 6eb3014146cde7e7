"""Generators and content processors loaded from the ``tidemark.generators`` and
``tidemark.processors`` entry points, and webhook signers from ``tidemark.webhook_signers``
(``eventlog.plugins`` says which are selected). Each entry point names a class or factory
that is called with no arguments (with the process's :class:`~eventlog.settings.Settings`
when it sets ``takes_settings = True``, as the built-in ``openai`` generator does) and
returns an object satisfying its group's protocol (:class:`workers.generators.Generator`,
:class:`workers.processors.Processor`, :class:`workers.signing.WebhookSigner`): its
``name`` is the entry point's name and its ``events`` (a generator's), ``open`` (a
processor's) or ``headers`` (a signer's) is callable. A plugin that fails to import, to
build or that check is reported (logged, listed as broken) and the process uses the
others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Final, cast

from eventlog.plugins import GENERATORS, PROCESSORS, WEBHOOK_SIGNERS, Plugin, discover
from eventlog.settings import Settings
from workers.generators import Generator
from workers.processors import Processor
from workers.signing import WebhookSigner

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


#: Each loaded group: what its objects are called in logs, and the method they must have.
_KINDS: Final = {GENERATORS: ("generator", "events", "events(job, start_seq)"),
                 PROCESSORS: ("processor", "open", "open(job, spec, state)"),
                 WEBHOOK_SIGNERS: ("webhook signer", "headers",
                                   "headers(*, msg_id, timestamp, body, secret)")}


def checked(obj: object, name: str, group: str = GENERATORS) -> object:
    """``obj``, if it is named ``name`` and has its group's method, else
    :class:`PluginCheckError`."""
    if getattr(obj, "name", None) != name:
        raise PluginCheckError(f"its name is {getattr(obj, 'name', None)!r}, not {name!r}")
    _, method, signature = _KINDS[group]
    if not callable(getattr(obj, method, None)):
        raise PluginCheckError(f"it has no {signature} method")
    return obj


def _load(plugin: Plugin, settings: Settings) -> object:
    factory = plugin.entry_point.load()
    if not callable(factory):
        raise PluginCheckError(f"{plugin.value} is not a class or factory")
    built = factory(settings) if getattr(factory, "takes_settings", False) is True else factory()
    return checked(built, plugin.name, plugin.group)


def _load_group(group: str, allow: Iterable[str],
                found: Iterable[tuple[metadata.EntryPoint, str, str]] | None,
                settings: Settings) -> tuple[dict[str, object], list[Status]]:
    kind = _KINDS[group][0]
    loaded: dict[str, object] = {}
    report: list[Status] = []
    for plugin in discover(group, allow, found):
        if plugin.refused:
            log.warning("%s plugin %s from %s %s is not used: %s", kind, plugin.name,
                        plugin.dist, plugin.version, plugin.refused)
            report.append(Status(plugin=plugin, state=REFUSED, reason=plugin.refused))
            continue
        try:
            loaded[plugin.name] = _load(plugin, settings)
        except Exception as exc:  # noqa: BLE001 - a plugin's own code: report it, go on
            reason = f"{type(exc).__name__}: {exc}"
            log.error("%s plugin %s (%s from %s %s) is broken: %s", kind, plugin.name,
                      plugin.value, plugin.dist, plugin.version, reason)
            report.append(Status(plugin=plugin, state=BROKEN, reason=reason))
            continue
        report.append(Status(plugin=plugin, state=LOADED))
    return loaded, report


def load_generators(allow: Iterable[str] = (),
                    found: Iterable[tuple[metadata.EntryPoint, str, str]] | None = None,
                    settings: Settings | None = None,
                    ) -> tuple[dict[str, Generator], list[Status]]:
    """The selected generators by name, and the status of every installed one;
    ``settings``: what a generator that takes settings is built with (default: the
    defaults)."""
    loaded, report = _load_group(GENERATORS, allow, found, settings or Settings())
    return cast(dict[str, Generator], loaded), report


def load_processors(allow: Iterable[str] = (),
                    found: Iterable[tuple[metadata.EntryPoint, str, str]] | None = None,
                    settings: Settings | None = None,
                    ) -> tuple[dict[str, Processor], list[Status]]:
    """The selected content processors by name, and the status of every installed one."""
    loaded, report = _load_group(PROCESSORS, allow, found, settings or Settings())
    return cast(dict[str, Processor], loaded), report


def load_signers(allow: Iterable[str] = (),
                 found: Iterable[tuple[metadata.EntryPoint, str, str]] | None = None,
                 settings: Settings | None = None,
                 ) -> tuple[dict[str, WebhookSigner], list[Status]]:
    """The selected webhook signers by name, and the status of every installed one."""
    loaded, report = _load_group(WEBHOOK_SIGNERS, allow, found, settings or Settings())
    return cast(dict[str, WebhookSigner], loaded), report
