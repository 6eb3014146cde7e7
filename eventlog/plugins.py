"""Plugins: what is installed in each Tidemark entry-point group, read from package
metadata (nothing is imported here: a gateway learns the generator names it accepts
without running any plugin's code; ``workers.plugins`` loads them).

Groups: ``tidemark.generators`` and ``tidemark.processors`` (content processors), both
loaded by workers; ``tidemark.webhook_signers`` (loaded by the webhooks processes;
gateways accept a registration's ``signer`` by the names selected here).

Which entry point of a group is used (the *selected* ones):
- its name matches :data:`NAME_PATTERN` and is not reserved (``external`` is the
  generator name of streams a backend service writes);
- ``TIDEMARK_PLUGINS`` is empty, or lists it as ``name`` or ``name@distribution``;
- no other installed distribution declares the same name in the group, unless the
  allow-list picks one of them with ``name@distribution`` (else none of them is used:
  a name never silently means one of two pieces of code).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Final

GENERATORS: Final = "tidemark.generators"
PROCESSORS: Final = "tidemark.processors"
WEBHOOK_SIGNERS: Final = "tidemark.webhook_signers"
GROUPS: Final = (GENERATORS, PROCESSORS, WEBHOOK_SIGNERS)
#: The generator names a create request may name (schemas/json/create_stream.json).
NAME_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,63}$(?!\n)"
RESERVED: Final = {GENERATORS: frozenset({"external"})}
#: The allow-list's entries: ``name`` or ``name@distribution``.
ALLOW_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,63}(@[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$(?!\n)"


class AllowListError(ValueError):
    """A ``TIDEMARK_PLUGINS`` entry that is not ``name`` or ``name@distribution``."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Plugin:
    """One installed entry point; ``refused``: why it is not used ("" when selected)."""

    group: str
    name: str
    #: The object path, ``module:attribute``.
    value: str
    dist: str
    version: str
    refused: str = ""

    @property
    def entry_point(self) -> metadata.EntryPoint:
        return metadata.EntryPoint(self.name, self.value, self.group)


def parse_allow(text: str) -> frozenset[str]:
    """``TIDEMARK_PLUGINS``: comma-separated ``name`` or ``name@distribution``."""
    entries = frozenset(part.strip() for part in text.split(",") if part.strip())
    for entry in entries:
        if not re.match(ALLOW_PATTERN, entry):
            raise AllowListError(f"{entry!r} is not name or name@distribution")
    return entries


def installed(group: str) -> list[tuple[metadata.EntryPoint, str, str]]:
    """The group's entry points in this environment, each with its distribution's name
    and version."""
    out = []
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == group:
                out.append((ep, dist.metadata["Name"] or "?", dist.version or "?"))
    return out


def discover(group: str, allow: Iterable[str] = (),
             found: Iterable[tuple[metadata.EntryPoint, str, str]] | None = None,
             ) -> list[Plugin]:
    """Every entry point of ``group`` (``found``, else :func:`installed`), sorted by
    name then distribution, each selected or refused by the rules above."""
    allowed = frozenset(allow)
    rows = sorted({(ep.name, dist): (ep, dist, version)
                   for ep, dist, version in (installed(group) if found is None else found)
                   }.values(), key=lambda row: (row[0].name, row[1]))
    by_name: dict[str, list[str]] = defaultdict(list)
    for ep, dist, _ in rows:
        by_name[ep.name].append(dist)
    out = []
    for ep, dist, version in rows:
        out.append(Plugin(group=group, name=ep.name, value=ep.value, dist=dist,
                          version=version, refused=_refusal(group, ep.name, dist,
                                                            by_name[ep.name], allowed)))
    return out


def _refusal(group: str, name: str, dist: str, providers: list[str],
             allowed: frozenset[str]) -> str:
    if not re.match(NAME_PATTERN, name):
        return f"the name does not match {NAME_PATTERN}"
    if name in RESERVED.get(group, ()):
        return "the name is reserved"
    chosen = [d for d in providers if f"{name}@{d}" in allowed]
    if len(chosen) > 1:
        return f"TIDEMARK_PLUGINS picks {name!r} of several distributions: {', '.join(chosen)}"
    if chosen:
        return "" if chosen[0] == dist else f"TIDEMARK_PLUGINS picks {name}@{chosen[0]}"
    if allowed and name not in allowed:
        return "not in TIDEMARK_PLUGINS"
    if len(providers) > 1:
        others = ", ".join(d for d in providers if d != dist)
        return (f"{others} also provides {name!r}: uninstall one, or pick one in "
                f"TIDEMARK_PLUGINS as {name}@<distribution>")
    return ""


def selected_names(group: str, allow: Iterable[str] = ()) -> frozenset[str]:
    """The names of the group's selected plugins (nothing is imported)."""
    return frozenset(p.name for p in discover(group, allow) if not p.refused)
