"""A/B experiments: their definitions, the assignment of users to variants, and what a
stream's variants change.

Definitions come from ``TIDEMARK_EXPERIMENTS`` (a JSON array, checked at start against
``schemas/json/experiments.json`` and by :func:`parse_experiments`; a bad definition is
a :class:`ConfigError` that names the failing value). Each experiment has a ``name``,
``variants`` (``name``, ``weight``, ``changes``), optional ``tenants`` (only streams of
these tenants take part; absent: every tenant) and ``enabled`` (default true; a disabled
experiment assigns nobody, but the streams already in it keep their variant's changes).

Assignment is deterministic per user: :func:`bucket` maps ``name|tenant|sub`` through
BLAKE2b (8 bytes, big-endian) to a number in [0, 1), which is walked over the variants'
cumulative weights. The same user of the same tenant gets the same variant on every
gateway, across restarts and Python versions; the experiment's name is part of the
hash, so changing one experiment's weights moves no user of another. A caller without a
token (``TIDEMARK_AUTH=none``) is the tenant's anonymous user (``sub`` ``anonymous``):
all such callers share one variant per experiment. A variant of weight 0 is never
assigned. Names and tenants cannot contain ``|`` (their patterns forbid it) and ``sub``
comes last, so distinct inputs never hash the same text.

What a variant changes (:class:`Changes`; camelCase in the definition): the stream's
default ``updateFrequency``, the batched ``coalesceMs`` interval, the subscribers'
``heartbeatSeconds`` and generator ``options``. A stream in several experiments gets
their changes combined in definition order: for each change (and each option) the
first experiment that sets it wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from eventlog.errors import ConfigError
from schemas.validation import load_schema

#: The variable the definitions come from.
ENV: Final = "TIDEMARK_EXPERIMENTS"
#: The ``sub`` of a caller without a token (``TIDEMARK_AUTH=none``), as the gateway's
#: anonymous identity names it.
ANONYMOUS_SUB: Final = "anonymous"
#: The marker of experiments in a first event's envelope (orjson writes no spaces).
_MARKER: Final = b'"experiments":'


def bucket(name: str, tenant: str, sub: str) -> float:
    """Where a user falls in an experiment: a number in [0, 1) from BLAKE2b of
    ``name|tenant|sub`` (stable everywhere; never Python's ``hash()``)."""
    digest = hashlib.blake2b(f"{name}|{tenant}|{sub}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, kw_only=True, slots=True)
class Changes:
    """What a variant (or a stream's variants together) changes; None: nothing."""

    update_frequency: str | None = None
    coalesce_ms: int | None = None
    heartbeat_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Changes:
        """From the definition's (already validated) camelCase form."""
        heartbeat = obj.get("heartbeatSeconds")
        return cls(update_frequency=obj.get("updateFrequency"),
                   coalesce_ms=obj.get("coalesceMs"),
                   heartbeat_s=None if heartbeat is None else float(heartbeat),
                   options=dict(obj.get("options") or {}))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.update_frequency is not None:
            out["updateFrequency"] = self.update_frequency
        if self.coalesce_ms is not None:
            out["coalesceMs"] = self.coalesce_ms
        if self.heartbeat_s is not None:
            out["heartbeatSeconds"] = self.heartbeat_s
        if self.options:
            out["options"] = dict(self.options)
        return out

    @property
    def delivery(self) -> bool:
        """Whether it changes how the gateway delivers (not only generator options)."""
        return (self.update_frequency is not None or self.coalesce_ms is not None
                or self.heartbeat_s is not None)

    def over(self, later: Changes) -> Changes:
        """These changes, with ``later`` filling what these leave unset."""
        return Changes(
            update_frequency=(self.update_frequency if self.update_frequency is not None
                              else later.update_frequency),
            coalesce_ms=self.coalesce_ms if self.coalesce_ms is not None else later.coalesce_ms,
            heartbeat_s=self.heartbeat_s if self.heartbeat_s is not None else later.heartbeat_s,
            options={**later.options, **self.options})


NO_CHANGES: Final = Changes()


@dataclass(frozen=True, kw_only=True, slots=True)
class Variant:
    name: str
    #: A relative share: the variant's share is its weight over the experiment's total.
    weight: float
    changes: Changes = NO_CHANGES


@dataclass(frozen=True, kw_only=True, slots=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    #: Only streams of these tenants take part; None: every tenant.
    tenants: frozenset[str] | None = None
    enabled: bool = True

    @property
    def total_weight(self) -> float:
        return sum(v.weight for v in self.variants)

    def takes_part(self, tenant: str) -> bool:
        """Whether users of ``tenant`` are assigned a variant (enabled, tenant listed)."""
        return self.enabled and (self.tenants is None or tenant in self.tenants)

    def assign(self, tenant: str, sub: str) -> Variant | None:
        """The user's variant; None when the tenant does not take part."""
        if not self.takes_part(tenant):
            return None
        point = bucket(self.name, tenant, sub) * self.total_weight
        cumulative = 0.0
        for variant in self.variants:
            cumulative += variant.weight
            if point < cumulative:
                return variant
        # Only reachable through float rounding at the very top: the last that can win.
        return next(v for v in reversed(self.variants) if v.weight > 0)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_json(self) -> dict[str, Any]:
        total = self.total_weight
        out: dict[str, Any] = {
            "name": self.name, "enabled": self.enabled,
            "variants": [{"name": v.name, "weight": v.weight, "share": v.weight / total,
                          "changes": v.changes.to_json()} for v in self.variants]}
        if self.tenants is not None:
            out["tenants"] = sorted(self.tenants)
        return out


@dataclass(frozen=True, slots=True)
class Experiments:
    """Every experiment, in definition order (which decides between overlapping
    changes: see the module docstring)."""

    experiments: tuple[Experiment, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.experiments)

    def __iter__(self) -> Iterator[Experiment]:
        return iter(self.experiments)

    def get(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    def assign(self, tenant: str, sub: str) -> dict[str, str]:
        """The user's variant of every experiment their tenant takes part in
        (experiment name -> variant name)."""
        out: dict[str, str] = {}
        for experiment in self.experiments:
            variant = experiment.assign(tenant, sub)
            if variant is not None:
                out[experiment.name] = variant.name
        return out

    def changes(self, variants: Mapping[str, str]) -> Changes:
        """What a stream's recorded variants change together, by the current
        definitions (a variant no longer defined changes nothing)."""
        combined = NO_CHANGES
        if not variants:
            return combined
        for experiment in self.experiments:
            name = variants.get(experiment.name)
            variant = experiment.variant(name) if name is not None else None
            if variant is not None:
                combined = combined.over(variant.changes)
        return combined

    @property
    def change_delivery(self) -> bool:
        """Whether any variant changes how the gateway delivers a stream (then a
        subscriber needs its stream's variants, from the first event)."""
        return any(v.changes.delivery for e in self.experiments for v in e.variants)


NONE: Final = Experiments()


def _validator() -> Draft202012Validator:
    schemas = [load_schema("experiments"), load_schema("create_stream")]
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas)
    return Draft202012Validator(schemas[0], registry=registry)


def parse_experiments(raw: str) -> Experiments:
    """The definitions of ``TIDEMARK_EXPERIMENTS`` ("" : none); :class:`ConfigError`
    naming the problem (a JSON Pointer to the failing value) otherwise."""
    if not raw.strip():
        return NONE
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{ENV} is not valid JSON: {exc}") from exc
    error = best_match(_validator().iter_errors(obj))
    if error is not None:
        pointer = "".join(f"/{part}" for part in error.absolute_path) or "/"
        raise ConfigError(f"{ENV} {pointer}: {error.message[:300]}")
    experiments: list[Experiment] = []
    for i, spec in enumerate(obj):
        name = spec["name"]
        if any(e.name == name for e in experiments):
            raise ConfigError(f"{ENV} /{i}/name: experiment {name!r} is defined twice")
        variants: list[Variant] = []
        for j, vspec in enumerate(spec["variants"]):
            if any(v.name == vspec["name"] for v in variants):
                raise ConfigError(f"{ENV} /{i}/variants/{j}/name: experiment {name!r} has "
                                  f"two variants named {vspec['name']!r}")
            variants.append(Variant(name=vspec["name"], weight=float(vspec["weight"]),
                                    changes=Changes.from_json(vspec.get("changes") or {})))
        if not sum(v.weight for v in variants) > 0:
            raise ConfigError(f"{ENV} /{i}/variants: experiment {name!r} has no variant "
                              "with a weight above 0")
        tenants = spec.get("tenants")
        experiments.append(Experiment(
            name=name, variants=tuple(variants), enabled=bool(spec.get("enabled", True)),
            tenants=None if tenants is None else frozenset(tenants)))
    return Experiments(tuple(experiments))


def variants_of_envelope(envelope: bytes) -> dict[str, str]:
    """The variants recorded in a stream's first event (its envelope bytes:
    ``data.experiments``); {} when it has none. No JSON is parsed without the marker."""
    if _MARKER not in envelope:
        return {}
    try:
        obj = orjson.loads(envelope)
    except orjson.JSONDecodeError:
        return {}
    data = obj.get("data") if isinstance(obj, dict) else None
    found = data.get("experiments") if isinstance(data, dict) and obj.get("seq") == 0 else None
    if not isinstance(found, dict):
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, str)}
