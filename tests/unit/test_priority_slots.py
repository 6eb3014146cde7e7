"""How many job slots a worker keeps for priority jobs."""

from __future__ import annotations

import pytest

from eventlog.errors import ConfigError
from eventlog.settings import WorkerSettings
from workers.runner import reserved_slots


@pytest.mark.parametrize(("max_jobs", "share", "reserved"), [
    (1000, 0.1, 100), (4, 0.1, 1), (10, 0.25, 3), (10, 0.0, 0), (1, 0.1, 0), (2, 1.0, 1),
    (3, 0.5, 2),
])
def test_the_reserve_is_the_share_rounded_up_and_never_every_slot(
        max_jobs: int, share: float, reserved: int) -> None:
    assert reserved_slots(max_jobs, share) == reserved


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_reserve_that_is_not_a_share_is_refused(share: float) -> None:
    with pytest.raises(ConfigError, match="PRIORITY_RESERVE"):
        WorkerSettings(priority_reserve=share)
