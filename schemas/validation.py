"""Validation of input at the edges against the JSON Schemas in ``schemas/json``.

Validators are built once (Draft 2020-12, with ``$ref`` resolution across the
files) and reused; errors name the failing field as a JSON Pointer into the body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from schemas import batch, events
from schemas.context import StreamContext
from schemas.errors import TidemarkError

_BASE: Final = "https://tidemark.dev/schemas/"


class InvalidInput(TidemarkError):
    """A request body does not match its schema."""

    def __init__(self, reason: str, *, pointer: str) -> None:
        super().__init__(f"{pointer or '/'}: {reason}")
        self.reason = reason
        self.pointer = pointer


@dataclass(frozen=True, kw_only=True, slots=True)
class EventInput:
    """One event a backend service asked to append."""

    type: str
    data: dict[str, Any]
    seq: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CreateRequest:
    query: str
    generator: str = "demo"
    options: dict[str, Any] = field(default_factory=dict)
    #: The per-user context (``schemas.context``), None when the body has none.
    context: StreamContext | None = None
    #: The body's ``cache`` object as given ({}: none; ``eventlog.cache.CachePrefs``).
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchRequest:
    """A ``POST /v1/batches`` body (``schemas/json/create_batch.json``)."""

    queries: tuple[str, ...]
    generator: str = "demo"
    options: dict[str, Any] = field(default_factory=dict)
    strategy: batch.Strategy = field(default_factory=batch.Strategy)
    aggregation: batch.Aggregation = field(default_factory=batch.Aggregation)


def load_schema(name: str) -> dict[str, Any]:
    text = resources.files("schemas").joinpath("json", f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _pointer(error: ValidationError, prefix: str = "") -> str:
    return prefix + "".join(f"/{part}" for part in error.absolute_path)


def _reason(error: ValidationError) -> str:
    if error.validator == "oneOf" and isinstance(error.instance, list):
        return "expected an event object or a non-empty list of at most 1000 events"
    return error.message if len(error.message) <= 300 else error.message[:297] + "..."


class Validators:
    """The compiled validators of every request body and event type."""

    def __init__(self) -> None:
        names = ["create_stream", "create_batch", "event_input", "publish", "envelope",
                 "reset", "input_request", *sorted(events.BUILTIN_TYPES)]
        names.append("ai_chat")  # the AI SDK chat route's body (gateway.ai_chat)
        names.append("analysis")  # referenced by metadata and result
        names.append("log_levels")  # the admin endpoints' body (gateways and workers)
        names.append("input_record")  # the jobs topics' input control record
        names.append("webhook_create")  # POST /v1/webhooks
        self._schemas = {name: load_schema(name) for name in names}
        registry: Registry[Any] = Registry().with_resources(
            (schema["$id"], Resource.from_contents(schema)) for schema in self._schemas.values()
        )
        self._registry = registry
        self._compiled = {
            name: Draft202012Validator(schema, registry=registry)
            for name, schema in self._schemas.items()
        }
        self._data: dict[str, Draft202012Validator] = {
            name: self._compiled[name] for name in events.BUILTIN_TYPES
        }

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._data)

    def register_event_type(self, name: str, data_schema: Mapping[str, Any]) -> None:
        """Register a custom event type whose ``data`` must match ``data_schema``."""
        Draft202012Validator.check_schema(data_schema)
        if name in events.BUILTIN_TYPES or name in events.RESERVED_TYPES:
            raise ValueError(f"event type {name!r} is built in or reserved")
        if not Draft202012Validator({"pattern": events.EVENT_TYPE_PATTERN}).is_valid(name):
            raise ValueError(f"event type {name!r} does not match {events.EVENT_TYPE_PATTERN}")
        self._data[name] = Draft202012Validator(dict(data_schema), registry=self._registry)

    def check(self, schema: str, instance: Any, *, prefix: str = "") -> None:
        """Raise :class:`InvalidInput` for the most relevant error, if any."""
        error = best_match(self._compiled[schema].iter_errors(instance))
        if error is not None:
            raise InvalidInput(_reason(error), pointer=_pointer(error, prefix))

    def create_request(self, body: Any) -> CreateRequest:
        self.check("create_stream", body)
        context = body.get("context")
        return CreateRequest(query=body["query"], generator=body.get("generator", "demo"),
                             options=dict(body.get("options") or {}),
                             context=None if context is None else StreamContext.from_json(context),
                             cache=dict(body.get("cache") or {}))

    def batch_request(self, body: Any) -> BatchRequest:
        """Validate a batch body; ``priorityWeights``, when given, has one weight per
        query."""
        self.check("create_batch", body)
        queries = tuple(body["queries"])
        strategy = batch.Strategy.from_json(body.get("strategy") or {})
        if strategy.weights and len(strategy.weights) != len(queries):
            raise InvalidInput(f"expected {len(queries)} weights (one per query), got "
                               f"{len(strategy.weights)}", pointer="/strategy/priorityWeights")
        return BatchRequest(queries=queries, generator=body.get("generator", "demo"),
                            options=dict(body.get("options") or {}), strategy=strategy,
                            aggregation=batch.Aggregation.from_json(
                                body.get("aggregation") or {}))

    def publish_request(self, body: Any) -> list[EventInput]:
        """Validate a publish body (one event or a list) and each event's data."""
        self.check("publish", body)
        items: list[dict[str, Any]] = body if isinstance(body, list) else [body]
        out: list[EventInput] = []
        for index, item in enumerate(items):
            prefix = f"/{index}" if isinstance(body, list) else ""
            validator = self._data.get(item["type"])
            if validator is None:
                raise InvalidInput(f"unknown event type {item['type']!r}", pointer=f"{prefix}/type")
            error = best_match(validator.iter_errors(item["data"]))
            if error is not None:
                raise InvalidInput(_reason(error), pointer=_pointer(error, f"{prefix}/data"))
            out.append(EventInput(type=item["type"], data=item["data"], seq=item.get("seq")))
        return out
