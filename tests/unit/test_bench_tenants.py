"""The pure helpers of the ``tenants`` benchmark (bench/scn_tenants.py, bench/tenants_load.py,
bench/report_tenants.py): the extrapolation to 1,000 tenants, the partition arithmetic, the
latency summary and the report rows. The scenario itself never runs in the test suite."""

from __future__ import annotations

import pytest

from bench import report_tenants, scn_tenants, tenants_load


def test_fit_recovers_a_line_and_its_value_at_a_point() -> None:
    line = scn_tenants.fit([(100, 250.0), (200, 300.0), (400, 400.0)])
    assert line is not None
    assert line["slope"] == pytest.approx(0.5)
    assert line["intercept"] == pytest.approx(200.0)
    assert scn_tenants.at(line, 24_012) == pytest.approx(200 + 0.5 * 24_012)


def test_fit_needs_two_distinct_points_with_values() -> None:
    assert scn_tenants.fit([(1, 2.0)]) is None
    assert scn_tenants.fit([(1, 2.0), (1, 3.0)]) is None
    assert scn_tenants.fit([(1, 2.0), (2, None), (3, None)]) is None
    assert scn_tenants.at(None, 10) is None


def test_partitions_of_a_namespace_per_tenant() -> None:
    # events + jobs per namespace (12 each), one stream index for the whole cluster.
    assert scn_tenants.partitions_for(1000) == 24_012
    assert scn_tenants.partitions_for(1000, index_per_namespace=True) == 36_000
    assert scn_tenants.partitions_for(0) == 12
    # ~4,000 partitions per broker: 166 namespaces (166 * 24 + 12 = 3,996).
    assert scn_tenants.tenants_within(4000) == 166
    assert scn_tenants.partitions_for(166) <= 4000 < scn_tenants.partitions_for(167)


def test_ratio() -> None:
    assert scn_tenants.ratio(3.0, 2.0) == 1.5
    assert scn_tenants.ratio(None, 2.0) is None
    assert scn_tenants.ratio(1.0, 0.0) is None


def test_fit_alternative_extrapolates_from_the_steps() -> None:
    steps = [
        {"namespaces": 0, "broker_partitions": 84, "jvm_rss_mb": 400.0, "rss_mb": 430.0,
         "jvm_open_files": 300, "jvm_memory_maps": 500},
        {"namespaces": 10, "broker_partitions": 324, "created_now": 10, "create_s": 2.0,
         "jvm_rss_mb": 424.0, "rss_mb": 454.0, "jvm_open_files": 540, "jvm_memory_maps": 980,
         "broker_idle_cpu_pct_of_core": 1.0},
        {"namespaces": 20, "broker_partitions": 564, "created_now": 10, "create_s": 4.0,
         "jvm_rss_mb": 448.0, "rss_mb": 478.0, "jvm_open_files": 780, "jvm_memory_maps": 1460,
         "broker_idle_cpu_pct_of_core": 2.0},
    ]
    fit = scn_tenants.fit_alternative(steps)
    assert fit["partitions_at_1000_tenants"] == 24_012
    # 1 open file per partition, 0.1 MB per partition, 2 maps per partition.
    assert fit["jvm_open_files"]["per_1000_partitions"] == pytest.approx(1000)
    assert fit["jvm_open_files"]["at_1000_tenants"] == pytest.approx(216 + 24_012, abs=0.5)
    assert fit["jvm_rss_mb"]["at_1000_tenants"] == pytest.approx(391.6 + 2401.2, abs=0.5)
    assert fit["jvm_memory_maps"]["at_1000_tenants"] == pytest.approx(332 + 2 * 24_012, abs=1)
    assert fit["create_s_per_namespace_mean"] == pytest.approx(0.3)
    assert fit["create_s_at_1000_tenants"] == pytest.approx(300.0)
    assert fit["tenants_within_guidance"] == 166


def test_latency_summary_in_ms() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1 .. 100 ms
    s = tenants_load.summarize_ms(values)
    assert s == {"count": 100, "p50_ms": 50.0, "p99_ms": 99.0, "max_ms": 100.0}
    assert tenants_load.summarize_ms([]) == {"count": 0, "p50_ms": None, "p99_ms": None,
                                             "max_ms": None}


def test_users_spread_over_tenants() -> None:
    assert tenants_load.user_of(0, 2000, 1000) == ("t0", "u0")
    assert tenants_load.user_of(1999, 2000, 1000) == ("t999", "u1999")
    assert tenants_load.user_of(2001, 2000, 1000) == ("t1", "u1")
    assert {tenants_load.user_of(j, 2000, 1)[0] for j in range(5000)} == {"t0"}
    assert len({tenants_load.user_of(j, 2000, 1000)[0] for j in range(5000)}) == 1000


def test_report_rows() -> None:
    mode = {"tenants": 1000, "gateway_cpu_us_per_request": 812.4,
            "gateway_rss_mb_before": 80.0, "gateway_rss_mb_after": 95.5,
            "load": {"completed": 5000, "failed": 0, "requests_per_s": 1234.5,
                     "ops": {op: {"count": 5000, "p50_ms": 4.0, "p99_ms": 20.25}
                             for op in report_tenants.OPS}},
            "window": {"processes": {
                "gateway": {"cpu_s": 16.2, "cpu_pct_of_core": 90.0},
                "kafka": {"cpu_s": 5.0, "cpu_pct_of_core": 30.0},
                "client": {"cpu_s": 8.0, "cpu_pct_of_core": 45.0}}},
            "broker": {"topics": 5, "partitions": 60, "namespace": {
                "topics": ["tidemark.x.events", "tidemark.x.jobs"], "partitions": 24,
                "shared_index_partitions": 12}}}
    row = report_tenants.mode_row(mode)
    assert row[0] == "1,000"
    assert row[1] == "5,000 / 0"
    assert row[2] == "4.0 / 20.2"
    assert row[6:8] == ["1,234", "812"]
    assert row[9] == "80.0 → 95.5 MB"
    assert row[-2:] == ["3 / 36", "5 / 60"]
    step = {"namespaces": 100, "broker_topics": 205, "broker_partitions": 2460,
            "create_s": 12.34, "create_ms_per_namespace": {"p50_ms": 110.0},
            "broker_cpu_s_creating": 9.0, "jvm_rss_mb": 612.0, "jvm_open_files": 2900,
            "jvm_memory_maps": 5400, "broker_idle_cpu_pct_of_core": 3.25}
    assert report_tenants.step_row(step) == ["100", "205", "2,460", "12.3 s (110 ms p50)",
                                             "9.0", "612.0 MB", "2,900", "5,400", "3.2"]
    lines = report_tenants.render({"tenants": {"setup": {}, "shared": {"modes": [mode]},
                                               "alternative": {"steps": [step]}}})
    assert any("| 1,000 | 5,000 / 0 |" in x for x in lines)
    assert report_tenants.render({}) == []
