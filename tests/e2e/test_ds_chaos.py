"""The Durable Streams chaos run (short), with the official client: idempotent producers
and live followers through HAProxy while a gateway is SIGKILLed and restarted and the
broker restarts (tests/ds_chaos.py; `make chaos` runs the long version; the checker's own
tests are tests/unit/test_ds_chaos_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import ds_chaos

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.mark.timeout(240)
async def test_official_client_loses_and_repeats_nothing_through_kills_and_restarts(
        tmp_path: Path) -> None:
    report = await ds_chaos.run(seconds=20, streams=2, seed=20261202, workdir=tmp_path)
    summary = report.as_dict()
    assert {"gateway", "broker-term"} <= set(report.kills), summary
    assert report.writers == 4 and report.followers == 4, summary
    # Every writer wrote the whole run (20/s for 20 s): the outages did not stop it.
    assert report.appends >= 4 * 20 * 15 and report.items_checked == report.appends, summary
    assert report.violations == [], summary
