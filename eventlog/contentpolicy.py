"""Which content processors each tenant's streams go through: ``TIDEMARK_CONTENT_POLICY``
(JSON, validated by ``schemas/json/content_policy.json``), read once at start like
``TIDEMARK_TIERS`` (docs/content.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from eventlog.errors import ConfigError
from schemas.validation import load_schema


@dataclass(frozen=True, kw_only=True, slots=True)
class Spec:
    """One processor of a tenant's policy: its name, the action (filters), the
    threshold and the processor's own options."""

    processor: str
    action: str = "redact"
    threshold: float | None = None
    options: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"processor": self.processor, "action": self.action}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.options:
            out["options"] = dict(self.options)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Spec:
        return cls(processor=str(obj["processor"]), action=str(obj.get("action", "redact")),
                   threshold=obj.get("threshold"), options=obj.get("options") or None)


@dataclass(frozen=True, kw_only=True, slots=True)
class ContentPolicy:
    default: tuple[Spec, ...] = ()
    tenants: Mapping[str, tuple[Spec, ...]] = field(
        default_factory=lambda: MappingProxyType({}))

    def for_tenant(self, tenant: str) -> tuple[Spec, ...]:
        return self.tenants.get(tenant, self.default)

    @property
    def processors(self) -> frozenset[str]:
        """Every processor some tenant's policy names."""
        return frozenset(s.processor for specs in (self.default, *self.tenants.values())
                         for s in specs)


def parse_policy(raw: str) -> ContentPolicy:
    """``TIDEMARK_CONTENT_POLICY``; "" : no processors for anybody."""
    if not raw.strip():
        return ContentPolicy()
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"TIDEMARK_CONTENT_POLICY is not JSON: {exc}") from exc
    error = best_match(Draft202012Validator(load_schema("content_policy")).iter_errors(obj))
    if error is not None:
        where = "".join(f"/{p}" for p in error.absolute_path) or "/"
        raise ConfigError(f"TIDEMARK_CONTENT_POLICY {where}: {error.message}")

    def specs(items: list[dict[str, Any]]) -> tuple[Spec, ...]:
        return tuple(Spec.from_json(item) for item in items)

    return ContentPolicy(default=specs(obj.get("default", [])), tenants=MappingProxyType(
        {str(t): specs(items) for t, items in obj.get("tenants", {}).items()}))
