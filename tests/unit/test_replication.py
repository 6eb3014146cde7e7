"""Replication of new topics: TIDEMARK_REPLICATION_FACTOR and TIDEMARK_MIN_INSYNC_REPLICAS
(auto by default: 3 replicas and 2 in sync on a cluster of three or more brokers, and on a
single broker exactly what it was before, one replica and the broker's min.insync)."""

from __future__ import annotations

import pytest

from eventlog.errors import ConfigError
from eventlog.settings import LogSettings, load_settings
from eventlog.topics import namespace_topics, stream_topic_spec


@pytest.mark.parametrize(("brokers", "expected"), [
    (1, (1, None)), (2, (2, None)), (3, (3, 2)), (5, (3, 2))])
def test_auto_follows_the_cluster_size(brokers: int, expected: tuple[int, int | None]) -> None:
    settings = load_settings({}).log
    assert (settings.replication_factor, settings.min_insync_replicas) == ("auto", "auto")
    assert settings.replication(brokers) == expected


def test_explicit_values_win() -> None:
    settings = load_settings({"TIDEMARK_REPLICATION_FACTOR": "2",
                              "TIDEMARK_MIN_INSYNC_REPLICAS": "1"}).log
    assert settings.replication(3) == (2, 1)
    assert LogSettings(replication_factor="auto", min_insync_replicas="1").replication(3) \
        == (3, 1)
    assert LogSettings(replication_factor="3").replication(3) == (3, 2)


@pytest.mark.parametrize("env", [
    {"TIDEMARK_REPLICATION_FACTOR": "0"}, {"TIDEMARK_REPLICATION_FACTOR": "three"},
    {"TIDEMARK_MIN_INSYNC_REPLICAS": "-1"},
    {"TIDEMARK_REPLICATION_FACTOR": "2", "TIDEMARK_MIN_INSYNC_REPLICAS": "3"}])
def test_nonsense_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"TIDEMARK_(REPLICATION_FACTOR|MIN_INSYNC_REPLICAS)"):
        load_settings(env)


def test_topics_on_one_broker_are_as_before() -> None:
    for topic in namespace_topics(LogSettings(), brokers=1):
        assert topic.replication_factor == 1
        assert "min.insync.replicas" not in topic.topic_configs
    spec = stream_topic_spec(LogSettings(), "s1")
    assert spec.replication_factor == 1 and "min.insync.replicas" not in spec.topic_configs


def test_topics_on_three_brokers_have_three_replicas_two_in_sync() -> None:
    topics = namespace_topics(LogSettings(), brokers=3)
    # events, jobs, priority jobs, analytics, the cache's entries, the stream index,
    # webhooks, their dead letters and replays
    assert len(topics) == 9
    for topic in topics:
        assert topic.replication_factor == 3
        assert topic.topic_configs["min.insync.replicas"] == "2"
