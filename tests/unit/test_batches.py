"""Batch rules without Kafka: duplicates, strategy order and concurrency, highlights,
the aggregate, the plan's round trip through a job, and the body's validation."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.batches import plan_children
from schemas import batch
from schemas.batch import (
    Aggregation,
    BatchPlan,
    Child,
    Outcome,
    Strategy,
    aggregate,
    concurrency,
    dispatch_order,
    group_queries,
    highlight,
    normalise,
)
from schemas.validation import InvalidInput, Validators


def test_exact_duplicates_after_normalisation_share_one_group_in_first_index_order() -> None:
    fullwidth_what = "\uff57\uff48\uff41\uff54"  # NFKC makes it "what"
    queries = ["Why Kafka?", "what is SSE", "why  kafka?", "WHY KAFKA?", f"{fullwidth_what} is sse"]
    assert normalise("  Why\tKafka? ") == "why kafka?"
    assert group_queries(queries) == [[0, 2, 3], [1, 4]]
    # The hook: any key function (a similarity cache's) groups as it says.
    assert group_queries(queries, key=lambda q: normalise(q).split()[0]) == [[0, 2, 3], [1, 4]]
    assert group_queries(["a", "b"], key=lambda q: "same") == [[0, 1]]


def test_a_childs_weight_is_the_highest_of_its_queries() -> None:
    req = Validators().batch_request({"queries": ["a", "b", "A"], "strategy": {
        "type": "priority", "priorityWeights": [1, 5, 9]}})
    children = plan_children(req)
    assert [(c.indices, c.query, c.weight) for c in children] == [
        ((0, 2), "a", 9.0), ((1,), "b", 5.0)]


def _children(weights: list[float]) -> list[Child]:
    return [Child(indices=(i,), query=str(i), weight=w) for i, w in enumerate(weights)]


@pytest.mark.parametrize(("strategy", "order"), [
    (Strategy(type=batch.PARALLEL), [0, 1, 2, 3]),
    (Strategy(type=batch.SEQUENTIAL), [0, 1, 2, 3]),
    (Strategy(type=batch.PRIORITY), [1, 3, 0, 2]),
])
def test_dispatch_order(strategy: Strategy, order: list[int]) -> None:
    # Weights 1, 7, 1, 3: priority goes by weight, ties in query order.
    assert dispatch_order(_children([1, 7, 1, 3]), strategy) == order


def test_concurrency_is_bounded_by_the_strategy_the_children_and_the_cap() -> None:
    assert concurrency(Strategy(type=batch.SEQUENTIAL, max_concurrency=9), 5, 20) == 1
    assert concurrency(Strategy(type=batch.PARALLEL), 5, 20) == 5
    assert concurrency(Strategy(type=batch.PARALLEL), 50, 20) == 20
    assert concurrency(Strategy(type=batch.PARALLEL, max_concurrency=3), 50, 20) == 3
    assert concurrency(Strategy(type=batch.PRIORITY, max_concurrency=99), 4, 20) == 4


def test_highlight_is_the_first_sentence_bounded_at_a_word() -> None:
    assert highlight("Kafka keeps order.  It also\nkeeps offsets.") == "Kafka keeps order."
    assert highlight("no sentence end here") == "no sentence end here"
    long = "word " * 100
    cut = highlight(long, limit=30)
    assert len(cut) <= 30 and cut.endswith(batch.ELLIPSIS)
    assert cut[:-1].split() == ["word"] * len(cut[:-1].split())
    assert highlight("v1.2 is out! Next") == "v1.2 is out!"  # a dot inside a word is not an end


def _plan(summary: str, combine: bool = True) -> BatchPlan:
    return BatchPlan(queries=("q0", "q1", "Q0"),
                     children=(Child(indices=(0, 2), query="q0"), Child(indices=(1,), query="q1")),
                     aggregation=Aggregation(combine=combine, summary=summary))


def test_aggregate_comprehensive_gives_every_result_in_query_order() -> None:
    outcomes = {0: Outcome(type="result", data={"text": "First. More."}),
                1: Outcome(type="error", data={"code": "x"})}
    out = aggregate(_plan(batch.COMPREHENSIVE), outcomes, ["s0", "s1", "s0"])
    assert [c["status"] for c in out["children"]] == ["completed", "failed", "completed"]
    assert (out["completed"], out["failed"], out["generated"]) == (2, 1, 2)
    assert [r["result"] for r in out["results"]] == [
        {"text": "First. More."}, {"code": "x"}, {"text": "First. More."}]
    assert out["text"] == "First. More.\n\nFirst. More."


def test_aggregate_highlights_is_a_bounded_numbered_summary() -> None:
    outcomes = {0: Outcome(type="result", data={"text": "First. More."}),
                1: Outcome(type="result", data={"text": "x " * 5000})}
    out = aggregate(_plan(batch.HIGHLIGHTS), outcomes, ["s0", "s1", "s0"])
    assert out["text"].startswith("1. First.\n2. x x")
    assert out["text"].endswith("\n3. First.")
    assert len(out["text"]) <= batch.SUMMARY_CHARS
    assert all(len(h["text"]) <= batch.HIGHLIGHT_CHARS for h in out["highlights"])
    assert aggregate(_plan(batch.HIGHLIGHTS), outcomes, ["s0", "s1", "s0"]) == out


def test_without_combine_results_the_aggregate_only_lists_the_children() -> None:
    out = aggregate(_plan(batch.HIGHLIGHTS, combine=False), {}, ["s0", "s1", "s0"])
    assert "text" not in out and "results" not in out
    assert [c["status"] for c in out["children"]] == ["missing"] * 3


def test_the_plan_survives_the_jobs_json() -> None:
    import orjson

    plan = BatchPlan(queries=("a", "b"), children=(Child(indices=(0, 1), query="a",
                                                         weight=2.5, stream="{}"),),
                     strategy=Strategy(type=batch.PRIORITY, max_concurrency=3,
                                       weights=(2.5, 1.0)),
                     aggregation=Aggregation(combine=True, summary=batch.HIGHLIGHTS),
                     options={"tokens": 3}, cap=7, priority=True)
    assert BatchPlan.from_options(orjson.loads(orjson.dumps(plan.to_options()))) == plan


@pytest.mark.parametrize(("body", "pointer"), [
    ({"queries": []}, "/queries"),
    ({"queries": ["a", ""]}, "/queries/1"),
    ({"queries": ["a"], "strategy": {"type": "priority", "priorityWeights": [1, 2]}},
     "/strategy/priorityWeights"),
    ({"queries": ["a"], "strategy": {"maxConcurrency": 0}}, "/strategy/maxConcurrency"),
    ({"queries": ["a"], "aggregation": {"summaryType": "brief"}}, "/aggregation/summaryType"),
    ({"queries": ["a"], "options": {"tokens": 0}}, "/options/tokens"),
    ({"queries": ["a"], "surprise": 1}, ""),
])
def test_bad_bodies_name_the_failing_field(body: dict[str, Any], pointer: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Validators().batch_request(body)
    assert info.value.pointer == pointer and info.value.reason


def test_a_good_body_with_defaults() -> None:
    req = Validators().batch_request({"queries": ["a"]})
    assert req.strategy == Strategy() and req.aggregation == Aggregation()
    assert req.generator == "demo" and req.options == {}


def test_similar_children_follow_the_first_earlier_leader_above_the_threshold() -> None:
    import numpy as np

    from workers.batch import similar_leaders

    def unit(*xs: float) -> list[float]:
        v = np.array(xs, dtype=np.float32)
        return list(v / np.linalg.norm(v))

    vectors = np.array([unit(1, 0, 0), unit(0, 1, 0), unit(0.95, 0.05, 0.3),
                        unit(0.1, 1, 0), unit(0, 0, 1)], dtype=np.float32)
    got = similar_leaders(vectors, 0.9)
    assert set(got) == {2, 3}  # 0, 1 and 4 are generated
    assert got[2][0] == 0 and got[3][0] == 1
    assert all(0.9 <= cosine <= 1 for _, cosine in got.values())
    assert similar_leaders(vectors, 1.01) == {}
    # A follower is never a leader: 2 is like 1 (which follows 0) but not like 0, so it
    # is generated itself.
    chain = np.array([unit(1, 0), unit(0.9, 0.44), unit(0.6, 0.8)], dtype=np.float32)
    assert similar_leaders(chain, 0.89) == {1: (0, round(float(chain[1] @ chain[0]), 4))}
