"""Batch requests (``POST /v1/batches``, docs/batches.md): the plan a gateway hands the
batch stream's worker in the batch's job, and the pure rules both sides share.

- Duplicates: queries whose :func:`normalise` d text is equal are one *child* stream;
  every index of the group is answered from it. :func:`group_queries` takes the key
  function, the hook for a similarity cache (a key that maps similar queries together).
- Strategy: the order children are started in (:func:`dispatch_order`) and how many run
  at once (:func:`concurrency`).
- Aggregation: the batch's final ``result`` (:func:`aggregate`), deterministic for the
  children's results; ``highlights`` is a bounded summary (:func:`highlight`).

Nothing here touches Kafka: the gateway builds the plan, the worker's ``batch`` generator
runs it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

#: The generator of a batch stream. Not a plugin: only ``POST /v1/batches`` creates such
#: streams (``POST /v1/streams`` refuses it), since its job names the child streams.
GENERATOR: Final = "batch"

PARALLEL: Final = "parallel"
SEQUENTIAL: Final = "sequential"
PRIORITY: Final = "priority"
STRATEGIES: Final = (PARALLEL, SEQUENTIAL, PRIORITY)

COMPREHENSIVE: Final = "comprehensive"
HIGHLIGHTS: Final = "highlights"

#: ``highlights``: the longest highlight of one child, and of the whole summary (chars).
HIGHLIGHT_CHARS: Final = 160
SUMMARY_CHARS: Final = 4000
ELLIPSIS: Final = "\u2026"

#: A query's key: equal keys in one batch are generated once.
QueryKey = Callable[[str], str]


def normalise(query: str) -> str:
    """The exact-duplicate key: Unicode NFKC, case-folded, runs of whitespace as one
    space, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def group_queries(queries: Sequence[str], key: QueryKey = normalise) -> list[list[int]]:
    """The indices of ``queries`` grouped by ``key``, each group in index order, the
    groups in the order of their first index."""
    groups: dict[str, list[int]] = {}
    for index, query in enumerate(queries):
        groups.setdefault(key(query), []).append(index)
    return list(groups.values())


@dataclass(frozen=True, kw_only=True, slots=True)
class Child:
    """One child stream of a batch: the queries it answers (``indices``, the first one's
    text is the query generated), its priority weight (the highest of its indices') and
    its index record as JSON (``eventlog.index.StreamInfo``)."""

    indices: tuple[int, ...]
    query: str
    weight: float = 0.0
    stream: str = ""

    @property
    def index(self) -> int:
        return self.indices[0]

    def to_json(self) -> dict[str, Any]:
        return {"indices": list(self.indices), "query": self.query, "weight": self.weight,
                "stream": self.stream}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Child:
        return cls(indices=tuple(int(i) for i in obj["indices"]), query=str(obj["query"]),
                   weight=float(obj.get("weight", 0.0)), stream=str(obj.get("stream", "")))


@dataclass(frozen=True, kw_only=True, slots=True)
class Strategy:
    type: str = PARALLEL
    #: None: as many as the batch's limit allows (parallel, priority); sequential is 1.
    max_concurrency: int | None = None
    #: One per query (``priority``), else empty.
    weights: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.max_concurrency is not None:
            out["maxConcurrency"] = self.max_concurrency
        if self.weights:
            out["priorityWeights"] = list(self.weights)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Strategy:
        mc = obj.get("maxConcurrency")
        return cls(type=str(obj.get("type", PARALLEL)),
                   max_concurrency=None if mc is None else int(mc),
                   weights=tuple(float(w) for w in obj.get("priorityWeights") or ()))


@dataclass(frozen=True, kw_only=True, slots=True)
class Aggregation:
    combine: bool = False
    summary: str = COMPREHENSIVE

    def to_json(self) -> dict[str, Any]:
        return {"combineResults": self.combine, "summaryType": self.summary}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Aggregation:
        return cls(combine=bool(obj.get("combineResults", False)),
                   summary=str(obj.get("summaryType", COMPREHENSIVE)))


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchPlan:
    """What the batch's job carries (its ``options``): the queries, the children, the
    strategy, the aggregation, and the generator and options every child runs with."""

    queries: tuple[str, ...]
    children: tuple[Child, ...]
    strategy: Strategy = field(default_factory=Strategy)
    aggregation: Aggregation = field(default_factory=Aggregation)
    generator: str = "demo"
    options: dict[str, Any] = field(default_factory=dict)
    #: The most children running at once whatever ``maxConcurrency`` says
    #: (``TIDEMARK_BATCH_MAX_CONCURRENCY`` when the batch was made).
    cap: int = 20
    #: The children's jobs go to the priority jobs topic (the creator's tier has it).
    priority: bool = False

    def to_options(self) -> dict[str, Any]:
        return {"queries": list(self.queries),
                "children": [c.to_json() for c in self.children],
                "strategy": self.strategy.to_json(),
                "aggregation": self.aggregation.to_json(),
                "generator": self.generator, "options": dict(self.options), "cap": self.cap,
                "priority": self.priority}

    @classmethod
    def from_options(cls, obj: Mapping[str, Any]) -> BatchPlan:
        return cls(queries=tuple(str(q) for q in obj["queries"]),
                   children=tuple(Child.from_json(c) for c in obj["children"]),
                   strategy=Strategy.from_json(obj.get("strategy") or {}),
                   aggregation=Aggregation.from_json(obj.get("aggregation") or {}),
                   generator=str(obj.get("generator", "demo")),
                   options=dict(obj.get("options") or {}), cap=int(obj.get("cap", 20)),
                   priority=bool(obj.get("priority", False)))


def weight_of(indices: Sequence[int], weights: Sequence[float]) -> float:
    """A child's priority weight: the highest of its queries' (0 without weights)."""
    return max((weights[i] for i in indices), default=0.0) if weights else 0.0


def dispatch_order(children: Sequence[Child], strategy: Strategy) -> list[int]:
    """The positions (in ``children``) in the order they start: ``priority`` by weight,
    highest first, ties by first index; the others by first index."""
    positions = sorted(range(len(children)), key=lambda p: children[p].index)
    if strategy.type == PRIORITY:
        positions.sort(key=lambda p: -children[p].weight)  # stable: ties keep index order
    return positions


def concurrency(strategy: Strategy, children: int, cap: int) -> int:
    """How many children run at once: 1 for ``sequential``, else ``maxConcurrency``
    (default: all), never above ``cap`` nor below 1."""
    if strategy.type == SEQUENTIAL:
        return 1
    wanted = children if strategy.max_concurrency is None else strategy.max_concurrency
    return max(1, min(wanted, cap, max(children, 1)))


_SENTENCE_END: Final = re.compile(r"[.!?\u3002\uff01\uff1f](?=\s|$)")


def highlight(text: str, limit: int = HIGHLIGHT_CHARS) -> str:
    """The first sentence of ``text`` (whitespace collapsed), at most ``limit``
    characters: a longer one is cut at a word boundary and ends in an ellipsis."""
    flat = " ".join(text.split())
    end = _SENTENCE_END.search(flat)
    sentence = flat[:end.end()] if end is not None else flat
    if len(sentence) <= limit:
        return sentence
    cut = sentence[:limit - 1]
    if " " in cut:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip() + ELLIPSIS


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """How one child ended: its terminal event's type and data."""

    type: str
    data: dict[str, Any]

    @property
    def text(self) -> str | None:
        text = self.data.get("text")
        return text if self.type == "result" and isinstance(text, str) else None


_STATUS: Final = {"result": "completed", "error": "failed", "cancelled": "cancelled"}


def aggregate(plan: BatchPlan, outcomes: Mapping[int, Outcome],
              stream_ids: Sequence[str]) -> dict[str, Any]:
    """The data of the batch's ``result``: every query's stream and status in index
    order (``stream_ids``: the child stream id of each query); with ``combineResults``,
    ``comprehensive`` adds every result in order (``text``: the texts joined by blank
    lines) and ``highlights`` a summary of at most ``SUMMARY_CHARS`` (one numbered
    highlight per query). ``outcomes``: by child position in ``plan.children``."""
    by_query: dict[int, Outcome | None] = {}
    for pos, child in enumerate(plan.children):
        for i in child.indices:
            by_query[i] = outcomes.get(pos)
    items: list[dict[str, Any]] = []
    for i, sid in enumerate(stream_ids):
        outcome = by_query.get(i)
        items.append({"index": i, "streamId": sid,
                      "status": "missing" if outcome is None else _STATUS.get(outcome.type,
                                                                              outcome.type)})
    counts = {s: sum(1 for it in items if it["status"] == s)
              for s in ("completed", "failed", "cancelled")}
    out: dict[str, Any] = {"queries": len(stream_ids), "generated": len(plan.children),
                           **counts, "children": items}
    if not plan.aggregation.combine:
        return out
    texts = [(i, o.text if o is not None else None)
             for i, o in sorted(by_query.items())]
    if plan.aggregation.summary == HIGHLIGHTS:
        lines = [f"{i + 1}. {highlight(t)}" for i, t in texts if t]
        summary = "\n".join(lines)
        if len(summary) > SUMMARY_CHARS:
            summary = summary[:SUMMARY_CHARS - 1].rstrip() + ELLIPSIS
        out["summaryType"] = HIGHLIGHTS
        out["highlights"] = [{"index": i, "text": highlight(t)} for i, t in texts if t]
        out["text"] = summary
    else:
        out["summaryType"] = COMPREHENSIVE
        out["results"] = [{"index": i, "query": plan.queries[i],
                           "result": None if (o := by_query.get(i)) is None else o.data}
                          for i in range(len(stream_ids))]
        out["text"] = "\n\n".join(t for _, t in texts if t)
    return out
