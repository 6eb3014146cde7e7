"""The checker of the Durable Streams chaos run (tests/ds_chaos.py, run by `make chaos`):
it finds lost, repeated and reordered appends."""

from __future__ import annotations

from typing import Any

import pytest

from tests import ds_chaos


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

