"""`tidemark mirror`'s MirrorMaker 2 configuration (eventlog/mirror.py): what it copies
and how, checked on the properties it writes (the e2e test runs them:
tests/e2e/test_federation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventlog.errors import ConfigError
from eventlog.mirror import MAIN_CLASS, Side, prepare, properties


def parsed(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" = ")
        out[key] = value
    return out


def test_only_the_namespaces_events_topic_is_copied_one_way_read_committed() -> None:
    props = parsed(properties(Side("A", "a:9092"), Side("B", "b:9092"), "shop"))
    assert props["clusters"] == "A, B"
    assert props["A.bootstrap.servers"] == "a:9092" and props["B.bootstrap.servers"] == "b:9092"
    assert props["A->B.enabled"] == "true" and props["B->A.enabled"] == "false"
    assert props["A->B.topics"] == r"tidemark\.shop\.events"  # a regex: dots escaped
    assert props["replication.policy.class"].endswith("IdentityReplicationPolicy")
    assert props["A->B.consumer.isolation.level"] == "read_committed"
    assert props["sync.group.offsets.enabled"] == "false"


@pytest.mark.parametrize("text", ["A", "=a:9092", "A=", "1A=a:9092", "A B=a:9092",
                                  "A" * 33 + "=a:9092"])
def test_a_side_is_alias_equals_bootstrap(text: str) -> None:
    with pytest.raises(ConfigError):
        Side.parse(text)


def test_the_copy_needs_another_alias_and_the_jars(tmp_path: Path) -> None:
    assert Side.parse("east-1=h1:9092,h2:9092") == Side("east-1", "h1:9092,h2:9092")
    with pytest.raises(ConfigError, match="different aliases"):
        properties(Side("A", "a:1"), Side("A", "b:1"), "ns")
    with pytest.raises(ConfigError, match="make setup"):
        prepare(Side("A", "a:1"), Side("B", "b:1"), "ns", work_dir=tmp_path / "w",
                jars_dir=tmp_path / "none")


def test_the_command_runs_a_dedicated_mirrormaker_for_the_copy(tmp_path: Path) -> None:
    jars = tmp_path / "libs"
    jars.mkdir()
    (jars / "connect-mirror-4.3.1.jar").write_bytes(b"")
    args = prepare(Side("A", "a:1"), Side("B", "b:1"), "ns", work_dir=tmp_path / "w",
                   jars_dir=jars)
    assert args[args.index(MAIN_CLASS) + 1:] == [str(tmp_path / "w" / "mm2.properties"),
                                                  "--clusters", "B"]
    assert (tmp_path / "w" / "mm2.properties").read_text().startswith("clusters = A, B")
