"""The Durable Streams chaos run (short), with the official client: idempotent producers
and live followers through HAProxy while a gateway is SIGKILLed and restarted and the
broker restarts (tests/ds_chaos.py; `make chaos` runs the long version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import ds_chaos

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _client(items: list[list[Any]], appended: int = 3) -> dict[str, Any]:
    return {"retries": 0, "streams": [{
        "path": "s", "writers": [{"id": "w0", "appended": appended, "errors": []}],
        "followers": [{"live": "sse", "sessions": 1, "errors": [], "items": items}]}]}


@pytest.mark.parametrize(("final", "seen", "why"), [
    ([0, 1, 2], [0, 1, 2], ""),
    ([0, 1, 1, 2], [0, 1, 1, 2], "1 repeated"),
    ([0, 2], [0, 2], "1 missing"),
    ([0, 2, 1], [0, 2, 1], "in order: False"),
    ([0, 1, 2], [0, 1, 1, 2], "follower 0 (sse): saw 4 items"),
    ([0, 1, 2], [0, 2], "follower 0 (sse): saw 2 items"),
])
def test_the_checker_finds_lost_repeated_and_reordered_appends(
        final: list[int], seen: list[int], why: str) -> None:
    report = ds_chaos.Report(seed=0, seconds=0)
    ds_chaos.check(report, _client([["w0", i] for i in seen]),
                   {"s": [{"w": "w0", "i": i} for i in final]})
    assert report.appends == 3 and report.items_checked == len(final)
    if why:
        assert len(report.violations) >= 1 and why in " ".join(report.violations)
    else:
        assert report.violations == []


@pytest.mark.timeout(180)
async def test_official_client_loses_and_repeats_nothing_through_kills_and_restarts(
        tmp_path: Path) -> None:
    report = await ds_chaos.run(seconds=20, streams=2, seed=20261202, workdir=tmp_path)
    summary = report.as_dict()
    assert {"gateway", "broker-term"} <= set(report.kills), summary
    assert report.writers == 4 and report.followers == 4, summary
    # Every writer wrote the whole run (20/s for 20 s): the outages did not stop it.
    assert report.appends >= 4 * 20 * 15 and report.items_checked == report.appends, summary
    assert report.violations == [], summary
