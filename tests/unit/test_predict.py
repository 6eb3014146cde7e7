"""The query predictor of the predictive warm-up (eventlog/predict.py) and its budget."""

from __future__ import annotations

from eventlog.predict import HOUR_MS, PredictorLimits, QueryPredictor
from workers.warmup import Budget

MIN = 60_000


def test_follow_ups_in_a_users_session_are_predicted_by_their_share() -> None:
    p = QueryPredictor()
    for i in range(10):
        p.observe("acme", f"u{i}", "How do I reset my password?", i * HOUR_MS)
        follow = "reset email not received" if i < 7 else "change my username"
        p.observe("acme", f"u{i}", follow, i * HOUR_MS + MIN)
    got = p.predict("acme", "how do I RESET my password", 0, 2)
    assert [(g.norm, round(g.share, 2), g.why) for g in got] == [
        ("reset email not received", 0.7, "follow-up"), ("change my username", 0.3, "follow-up")]
    assert got[0].query == "reset email not received"  # the text as asked
    assert [g.norm for g in p.predict("acme", "how do i reset my password", 0, 2,
                                      min_share=0.5)][:1] == ["reset email not received"]


def test_a_gap_longer_than_the_session_is_not_a_follow_up_and_tenants_stay_apart() -> None:
    p = QueryPredictor(PredictorLimits(session_gap_ms=30 * MIN))
    p.observe("acme", "u", "first", 0)
    p.observe("acme", "u", "much later", 31 * MIN)
    assert all(g.why == "hot" for g in p.predict("acme", "first", 0, 3))
    p.observe("acme", "v", "a", 0)
    p.observe("acme", "v", "b", MIN)
    assert p.predict("other", "a", 0, 3) == []
    assert [g.norm for g in p.predict("acme", "a", 0, 1)] == ["b"]


def test_the_hours_hottest_fill_up_what_follow_ups_leave() -> None:
    p = QueryPredictor()
    nine = 9 * HOUR_MS
    for i in range(5):
        p.observe("acme", "", "daily standup notes", nine + i)  # no user: no session
    p.observe("acme", "", "lunch menu", 12 * HOUR_MS)
    got = p.predict("acme", None, nine + 30 * MIN, 2)
    assert [(g.norm, g.why) for g in got] == [("daily standup notes", "hot")]
    # The next day at nine, too.
    assert p.predict("acme", None, nine + 24 * HOUR_MS, 1)[0].norm == "daily standup notes"


def test_memory_is_bounded() -> None:
    limits = PredictorLimits(tenants=3, users=5, queries=20, followups=2, hot=5)
    p = QueryPredictor(limits)
    for t in range(10):
        for i in range(200):
            p.observe(f"t{t}", f"u{i % 50}", f"q{i}", i * 1000)
    assert len(p._tenants) == 3
    for tenant in p._tenants.values():
        assert len(tenant.users) <= 5 and len(tenant.texts) <= 20
        assert len(tenant.followups) <= 20
        assert all(len(c) <= 2 * 2 for c in tenant.followups.values())
        assert all(len(c) <= 2 * 5 for c in tenant.hours)


def test_the_budget_allows_so_many_a_minute_per_tenant() -> None:
    now = [0.0]
    budget = Budget(3, clock=lambda: now[0])
    assert [budget.take("a") for _ in range(4)] == [True, True, True, False]
    assert budget.take("b")
    now[0] = 20.0  # a third of a minute: one more
    assert budget.take("a") and not budget.take("a")
    assert not Budget(0).take("a")


def test_each_worker_takes_its_share_of_the_budget_and_at_least_one() -> None:
    now = [0.0]
    share = [0.5]
    budget = Budget(10, share=lambda: share[0], clock=lambda: now[0])
    assert sum(budget.take("a") for _ in range(10)) == 5  # half the partitions: half
    now[0] = 12.0  # a fifth of a minute: a fifth of its 5
    assert budget.take("a") and not budget.take("a")
    share[0] = 0.0  # no jobs partition: this worker triggers nothing
    assert not budget.take("b")
    tiny = Budget(1, share=lambda: 0.25, clock=lambda: now[0])
    assert tiny.take("a") and not tiny.take("a")


def test_a_late_record_of_a_users_session_does_not_rewind_it() -> None:
    p = QueryPredictor()
    p.observe("acme", "u", "first", 0)
    p.observe("acme", "u", "third", 2 * MIN)
    p.observe("acme", "u", "second", MIN)  # read late, from another partition
    p.observe("acme", "u", "fourth", 3 * MIN)
    # "fourth" follows "third" (the newest), not "second"
    assert [g.norm for g in p.predict("acme", "third", 0, 1)] == ["fourth"]
    assert not [g for g in p.predict("acme", "second", 0, 3) if g.why == "follow-up"]
