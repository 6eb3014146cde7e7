"""The fuzz run (short): schemathesis against /v1/openapi.json of a real gateway, two
examples per operation and its coverage cases (about 1,800 requests), one at a time
(four workers once gave a schemathesis runtime error). No 5xx and no answer outside the
document. `make fuzz` runs the long version (tests/fuzz.py, >= 10,000 requests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import fuzz

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.mark.timeout(420)
async def test_fuzzing_the_contract_finds_no_server_error_and_no_broken_answer(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    report = await fuzz.run(requests=300, workdir=tmp_path, bootstrap=kafka_bootstrap,
                            workers=1)
    summary = report.as_dict()
    assert report.requests >= 300, summary
    assert report.server_errors == 0, summary
    assert report.failures == [] and report.errors == [], summary
    assert report.ok, summary
    # It reached past validation: streams were created, read, published to and cancelled,
    # and Durable Streams created.
    statuses = report.by_status
    for reached in ("POST /v1/streams 201", "GET /v1/streams/{id} 200",
                    "GET /v1/streams/{id}/events 200", "POST /v1/streams/{id}/cancel 202",
                    "PUT /ds/v1/stream/{path} 201"):
        assert statuses.get(reached, 0) > 0, (reached, summary)
