"""The StatsD lines a registry becomes (the real daemon's sums: tests/e2e/test_statsd.py)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventlog.errors import ConfigError
from eventlog.settings import load_settings
from eventlog.statsd import StatsdConfig, Translator, packets, parse_address


def registry() -> tuple[CollectorRegistry, Counter, Gauge, Histogram]:
    r = CollectorRegistry()
    return (r, Counter("tidemark_requests_total", "r", ["outcome"], registry=r),
            Gauge("tidemark_open", "o", registry=r),
            Histogram("tidemark_wait_seconds", "w", buckets=(0.5, 1.0), registry=r))


def test_counters_go_as_what_they_grew_by_and_gauges_as_they_are() -> None:
    r, requests, gauge, hist = registry()
    translate = Translator(StatsdConfig(host="h", port=1))
    requests.labels("new").inc(3)
    gauge.set(-2)
    hist.observe(0.7)
    first = translate.lines(r)
    assert "tidemark.requests_total.outcome.new:3|c" in first
    assert first.index("tidemark.open:0|g") + 1 == first.index("tidemark.open:-2|g")
    assert "tidemark.wait_seconds_bucket.le.0_5:1|c" not in first  # 0.7 is over 0.5
    assert {"tidemark.wait_seconds_bucket.le.1_0:1|c", "tidemark.wait_seconds_count:1|c",
            "tidemark.wait_seconds_sum:0.7|c"} <= set(first)
    assert not [line for line in first if "_created" in line]
    # Nothing moved: no counter line; the gauge is sent again.
    assert translate.lines(r) == ["tidemark.open:0|g", "tidemark.open:-2|g"]
    requests.labels("new").inc(2)
    assert "tidemark.requests_total.outcome.new:2|c" in translate.lines(r)


def test_dogstatsd_labels_and_the_configured_tags_are_tags() -> None:
    r, requests, _, _ = registry()
    translate = Translator(StatsdConfig(host="h", port=1, flavor="dogstatsd", prefix="tm.x",
                                        tags=("env:prod", "region:eu")))
    requests.labels("a|b,c").inc()
    assert "tm.x.requests_total:1|c|#outcome:a_b_c,env:prod,region:eu" in translate.lines(r)


def test_lines_are_packed_into_datagrams_up_to_the_limit() -> None:
    lines = [f"tidemark.m{i}:{i}|c" for i in range(200)]
    sent = packets(lines, 512)
    assert all(len(p) <= 512 for p in sent) and len(sent) > 1
    assert b"\n".join(sent).decode().split("\n") == lines
    assert packets(["x" * 600], 512) == [b"x" * 600]  # a long line goes alone


@pytest.mark.parametrize(("address", "parsed"), [
    ("statsd", ("statsd", 8125)), ("10.0.0.1:9125", ("10.0.0.1", 9125)),
    ("[::1]:8000", ("::1", 8000)), ("[::1]", ("::1", 8125))])
def test_addresses(address: str, parsed: tuple[str, int]) -> None:
    assert parse_address(address) == parsed


@pytest.mark.parametrize("env", [
    {"TIDEMARK_STATSD": "host:0"}, {"TIDEMARK_STATSD": "host:http"},
    {"TIDEMARK_STATSD_FLAVOR": "graphite"},
    {"TIDEMARK_STATSD": "h", "TIDEMARK_STATSD_TAGS": "env:prod"},  # plain StatsD: no tags
    {"TIDEMARK_STATSD_FLAVOR": "dogstatsd", "TIDEMARK_STATSD_TAGS": "env:pr|od"},
    {"TIDEMARK_STATSD": "h", "TIDEMARK_STATSD_PREFIX": "a..b"},
    {"TIDEMARK_STATSD_INTERVAL": "0"}, {"TIDEMARK_STATSD_MAX_PACKET": "100"}])
def test_bad_settings_are_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="TIDEMARK_STATSD"):
        load_settings(env)


def test_off_unless_an_address_is_set() -> None:
    assert load_settings({}).statsd_config is None
    config = load_settings({"TIDEMARK_STATSD": "127.0.0.1:9125",
                            "TIDEMARK_STATSD_FLAVOR": "dogstatsd",
                            "TIDEMARK_STATSD_TAGS": "env:prod"}).statsd_config
    assert config == StatsdConfig(host="127.0.0.1", port=9125, flavor="dogstatsd",
                                  tags=("env:prod",))
