"""Generator plugins' objects for tests/unit/test_plugins.py: one good, and one of each
way a plugin can be broken (entry points name them as ``tests.plugins.samples:...``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from eventlog.jobs import Job
from workers.generators import Draft


class Good:
    name = "good"

    async def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        for seq in range(start_seq, 3):
            yield Draft(seq, "partial_result", {"chunk": f"{job.query}{seq}", "chunkIndex": seq})
        yield Draft(3, "result", {"text": "done"})


class WrongName(Good):
    name = "not-the-entry-points-name"


class NoEvents:
    name = "noevents"


def failing_factory() -> Good:
    raise RuntimeError("the plugin's factory failed")


NOT_CALLABLE = 42
