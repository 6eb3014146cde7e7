"""The chaos test (short): demo streams while workers, gateways and the broker are
killed and restarted at random; clients reconnect through HAProxy with Last-Event-ID.
The independent checker in tests/chaos.py must find no violation. `make chaos` runs
the long version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import chaos
from workers.demo import demo_text

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.mark.parametrize("query", ["", "chaos stream 3: what survives a crash?", "ünï"])
def test_the_checkers_oracle_agrees_with_the_generator(query: str) -> None:
    # The oracle is written from the generator's specification; if the two ever
    # disagree, one of them changed and the chaos verdicts would mean nothing.
    assert chaos.expected_text(query, 57) == demo_text(query, 57)


@pytest.mark.timeout(420)
async def test_chaos_loses_and_repeats_nothing(tmp_path: Path) -> None:
    report = await chaos.run(seconds=30, streams=10, seed=20261124, workdir=tmp_path)
    summary = report.as_dict()
    assert report.streams == 10
    assert {"worker", "gateway", "broker-term", "broker-kill"} <= set(report.kills), summary
    assert report.events_checked > 0 and report.reconnects > 0, summary
    assert report.violations == [], summary
