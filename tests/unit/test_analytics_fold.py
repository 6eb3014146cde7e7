"""The analytics fold without Kafka: log-scale histograms and their percentiles, time
buckets per window, counting each stream once, tenants kept apart, reports summed over
processes, the document's shape (``schemas.openapi_analytics``)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from eventlog.index import StreamInfo
from gateway.analytics_fold import MAX_USERS, OTHER, WINDOWS, Fold, parse_windows
from gateway.analytics_hist import RELATIVE_ERROR, Histogram, bucket_of, bucket_value
from gateway.analytics_recorder import build_report
from schemas import openapi_analytics

NOW = 1_764_650_000_000


def _validator() -> Draft202012Validator:
    return Draft202012Validator(openapi_analytics.document_schema())


def info(stream: str, status: str, *, tenant: str = "acme", owner: str = "alice",
         created: int = NOW - 1000, updated: int | None = None, last_seq: int = 0,
         experiments: dict[str, str] | None = None) -> StreamInfo:
    return StreamInfo(stream_id=stream, namespace="ns", topic="t", partition=0,
                      first_offset=0, generator="demo", status=status, created_at=created,
                      updated_at=created if updated is None else updated,
                      last_seq=last_seq, tenant=tenant, owner=owner,
                      experiments=experiments or {},
                      terminal_offset=5 if status in ("completed", "failed", "cancelled")
                      else None)


def fold() -> Fold:
    return Fold(default_tenant="default", recent=5, top_users=3)


# --- histograms ---------------------------------------------------------------------------

def test_every_value_is_reported_within_the_documented_relative_error() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        ms = math.exp(rng.uniform(math.log(0.02), math.log(600_000)))
        assert abs(bucket_value(bucket_of(ms)) / ms - 1) <= RELATIVE_ERROR + 1e-9
    assert RELATIVE_ERROR < 0.0444


def test_percentiles_are_nearest_rank_within_the_bucket_error() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(3.5, 0.8) for _ in range(1000)]
    hist = Histogram()
    for v in values:
        hist.add(v)
    ordered = sorted(values)
    for p in (0.5, 0.9, 0.99):
        true = ordered[math.ceil(p * len(ordered)) - 1]
        got = hist.percentile(p)
        assert got is not None
        assert abs(got / true - 1) <= RELATIVE_ERROR + 1e-3, (p, got, true)


def test_histograms_merge_by_adding_counts_through_their_wire_form() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for v in (1.0, 2.0, 40.0):
        a.add(v)
        both.add(v)
    for v in (3.0, 900.0):
        b.add(v)
        both.add(v)
    merged = Histogram()
    merged.merge_json(a.to_json())
    merged.merge_json(b.to_json())
    assert merged.counts == both.counts and merged.count == 5
    assert merged.summary() == both.summary()


def test_an_empty_histogram_has_null_percentiles() -> None:
    assert Histogram().summary() == {"count": 0, "p50": None, "p90": None, "p99": None}


# --- windows and counting -----------------------------------------------------------------

def test_windows_are_parsed_in_order_without_repeats_and_bad_ones_refused() -> None:
    assert parse_windows([]) == ["5m", "1h"]
    assert parse_windows(["1h", "1m", "1h"]) == ["1h", "1m"]
    with pytest.raises(ValueError, match="2m"):
        parse_windows(["5m", "2m"])


def test_every_window_has_at_most_120_buckets() -> None:
    doc = fold().document(selected="acme", windows=list(WINDOWS), now=NOW)
    for name, (span, width) in WINDOWS.items():
        series = doc["windows"][name]["series"]
        assert len(series) == span // width <= 120
        assert [p["t"] for p in series] == sorted(p["t"] for p in series)
        assert series[-1]["t"] <= NOW < series[-1]["t"] + width


def test_a_stream_is_counted_once_whatever_snapshots_are_read() -> None:
    f = fold()
    for status in ("queued", "running", "running"):
        f.apply_index(info("s1", status), now=NOW)
    done = info("s1", "completed", updated=NOW - 500, last_seq=9)
    f.apply_index(done, now=NOW)
    f.apply_index(done, now=NOW)  # read twice (e.g. written again): still once
    w = f.document(selected="acme", windows=["5m"], now=NOW)["windows"]["5m"]
    assert w["streams"] == {"created": 1, "completed": 1, "failed": 0, "cancelled": 0,
                            "success_rate": 1.0, "failure_rate": 0.0}
    assert w["usage"]["tenants"] == [{"tenant": "acme", "streams": 1, "events": 10}]
    assert w["usage"]["users"] == [{"tenant": "acme", "user": "alice", "streams": 1,
                                    "events": 10}]


def test_a_stream_whose_first_record_compaction_removed_still_counts_as_created() -> None:
    f = fold()
    f.apply_index(info("s1", "failed", updated=NOW - 10, last_seq=3), now=NOW)
    w = f.document(selected="acme", windows=["1m"], now=NOW)["windows"]["1m"]
    assert w["streams"]["created"] == 1 and w["streams"]["failed"] == 1


def test_rates_are_over_streams_that_ended_and_null_without_any() -> None:
    f = fold()
    f.apply_index(info("q", "queued"), now=NOW)
    assert f.document(selected="acme", windows=["5m"], now=NOW)["windows"]["5m"][
        "streams"]["success_rate"] is None
    outcomes = ["completed"] * 25 + ["failed"] * 2 + ["cancelled"]
    for i, status in enumerate(outcomes):
        f.apply_index(info(f"s{i}", status), now=NOW)
    streams = f.document(selected="acme", windows=["5m"], now=NOW)["windows"]["5m"]["streams"]
    assert streams["created"] == 29 and streams["completed"] == 25
    assert streams["success_rate"] == 0.893 and streams["failure_rate"] == 0.071


def test_facts_leave_the_window_with_their_bucket() -> None:
    f = fold()
    f.apply_index(info("old", "completed", created=NOW - 120_000, updated=NOW - 119_000),
                  now=NOW)
    f.apply_index(info("new", "completed", created=NOW - 1000), now=NOW)
    doc = f.document(selected="acme", windows=["1m", "5m"], now=NOW)
    assert doc["windows"]["1m"]["streams"]["created"] == 1
    assert doc["windows"]["5m"]["streams"]["created"] == 2
    # Older than the longest window: not counted at all.
    f.apply_index(info("ancient", "completed", created=NOW - 90_000_000,
                       updated=NOW - 89_000_000), now=NOW)
    assert f.document(selected="acme", windows=["24h"], now=NOW)["windows"]["24h"][
        "streams"]["created"] == 2


def test_active_streams_are_created_and_not_ended() -> None:
    f = fold()
    f.apply_index(info("a", "queued", created=NOW - 3000), now=NOW)
    f.apply_index(info("b", "running", created=NOW - 2000), now=NOW)
    f.apply_index(info("c", "queued", created=NOW - 1000), now=NOW)
    f.apply_index(info("c", "cancelled", created=NOW - 1000, updated=NOW - 500), now=NOW)
    doc = f.document(selected="acme", windows=["1m"], now=NOW)
    assert doc["active"]["streams"] == 2
    series = doc["windows"]["1m"]["series"]
    assert series[-1]["active_streams"] == 2
    assert series[0]["active_streams"] == 0


def test_a_tenant_sees_only_its_own_figures_users_and_streams() -> None:
    f = fold()
    f.apply_index(info("a1", "completed", tenant="acme", owner="alice"), now=NOW)
    f.apply_index(info("g1", "failed", tenant="globex", owner="carol", last_seq=2), now=NOW)
    acme = f.document(selected="acme", windows=["5m"], now=NOW)
    acme["recent"]["errors"] = f.failed_streams("acme")
    text = repr(acme)
    assert "globex" not in text and "carol" not in text and "g1" not in text
    assert acme["windows"]["5m"]["streams"]["created"] == 1
    everyone = f.document(selected="*", windows=["5m"], now=NOW)
    assert everyone["tenant"] == "*"
    assert {t["tenant"]: t["streams"] for t in everyone["windows"]["5m"]["usage"]["tenants"]} \
        == {"acme": 1, "globex": 1}
    assert [i.stream_id for i in f.failed_streams("*")] == ["g1"]


def test_figures_are_split_by_variant() -> None:
    f = fold()
    f.apply_index(info("a", "completed", experiments={"coalesce": "fast", "hb": "5"}), now=NOW)
    f.apply_index(info("b", "failed", experiments={"coalesce": "slow"}, owner="bob"), now=NOW)
    f.apply_index(info("c", "completed"), now=NOW)
    w = f.document(selected="acme", windows=["5m"], now=NOW)["windows"]["5m"]
    assert w["streams"]["created"] == 3
    fast, slow = w["variants"]["coalesce"]["fast"], w["variants"]["coalesce"]["slow"]
    assert fast["streams"]["completed"] == 1 and fast["streams"]["failed"] == 0
    assert slow["streams"]["failed"] == 1 and slow["streams"]["failure_rate"] == 1.0
    assert slow["usage"]["users"] == [{"tenant": "acme", "user": "bob", "streams": 1,
                                       "events": 1}]
    assert w["variants"]["hb"]["5"]["streams"]["created"] == 1
    assert "series" not in fast and "variants" not in fast


def test_reports_of_several_processes_add_up_and_stale_gauges_count_zero() -> None:
    f = fold()
    f.apply_index(info("s1", "running", experiments={"coalesce": "fast"}), now=NOW)
    streams = {"s1": ("acme", {"coalesce": "fast"})}
    obs_a = [("first_event", "s1", "acme", 10.0), ("resume_memory", "s1", "acme", 2.0),
             ("cutoff", "s1", "acme", 0.0)]
    obs_b = [("first_event", "sX", "acme", 30.0), ("resume_kafka", "sX", "acme", 9.0)]
    f.apply_report(build_report(obs_a, process="a", ts=NOW - 2000, interval_ms=1000,
                                connections=["acme", "acme", "globex"],
                                resolve=streams.get), now=NOW)
    f.apply_report(build_report(obs_b, process="b", ts=NOW - 500, interval_ms=1000,
                                connections=["acme"], resolve=streams.get), now=NOW)
    doc = f.document(selected="acme", windows=["1m"], now=NOW)
    w = doc["windows"]["1m"]
    assert w["first_event_ms"]["count"] == 2 and w["cutoffs"] == 1
    assert w["resume_ms"]["memory"]["count"] == 1 and w["resume_ms"]["kafka"]["count"] == 1
    assert w["resume_ms"]["kafka"]["p50"] == pytest.approx(9.0, rel=RELATIVE_ERROR)
    fast = w["variants"]["coalesce"]["fast"]
    assert fast["first_event_ms"]["count"] == 1 and fast["cutoffs"] == 1
    # Process a's last report is 2 s old: more than 3 of its 1 s intervals? no (2 <= 3).
    assert doc["active"]["connections"] == 3
    later = f.document(selected="acme", windows=["1m"], now=NOW + 2000)
    assert later["active"]["connections"] == 1  # a is stale now; b is not
    assert f.document(selected="*", windows=["1m"], now=NOW)["active"]["connections"] == 4


def test_users_past_the_bound_are_folded_into_other() -> None:
    f = Fold(default_tenant="default", recent=5, top_users=MAX_USERS + 10)
    for i in range(MAX_USERS + 5):
        f.apply_index(info(f"s{i}", "queued", owner=f"u{i}"), now=NOW)
    users = f.document(selected="acme", windows=["1m"], now=NOW)["windows"]["1m"][
        "usage"]["users"]
    assert len(users) <= MAX_USERS + 1
    assert sum(u["streams"] for u in users) == MAX_USERS + 5
    assert any(u["user"] == OTHER for u in users)


def test_recent_streams_are_the_newest_of_the_tenant() -> None:
    f = fold()
    for i in range(8):
        f.apply_index(info(f"s{i}", "queued", created=NOW - 10_000 + i), now=NOW)
    recent = f.recent_streams("acme")
    assert [r["stream"] for r in recent] == ["s7", "s6", "s5", "s4", "s3"]
    assert recent[0] == {"stream": "s7", "tenant": "acme", "owner": "alice",
                         "generator": "demo", "status": "queued",
                         "created_at": NOW - 10_000 + 7, "updated_at": NOW - 10_000 + 7,
                         "experiments": {}}


def test_the_document_matches_its_schema() -> None:
    f = fold()
    f.apply_index(info("a", "completed", experiments={"coalesce": "fast"}), now=NOW)
    f.apply_report(build_report([("first_event", "a", "acme", 12.0)], process="p", ts=NOW,
                                interval_ms=5000, connections=["acme"],
                                resolve=lambda _: None), now=NOW)
    doc: dict[str, Any] = f.document(selected="acme", windows=list(WINDOWS), now=NOW)
    doc["recent"]["errors"] = [{"stream": "a", "tenant": "acme", "ts": NOW, "code": "x",
                                "message": "m", "retryable": False}]
    errors = sorted(_validator().iter_errors(doc), key=str)
    assert not errors, errors[0]
