"""The official Durable Streams conformance suite, run by the test suite: against two
gateways behind HAProxy and against the reference Node server, side by side
(tests/conformance.py; ``make conformance`` prints the same report)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import run

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.mark.timeout(420)
async def test_conformance_suite_passes_at_least_what_the_reference_passes(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    report = await run(workdir=tmp_path, bootstrap=kafka_bootstrap)
    ours, ref = report["tidemark"], report["reference"]
    assert not report.get("errors"), report["errors"]
    assert not ours["error"] and not ref["error"], (ours["error"], ref["error"])
    assert ours["total"] == ref["total"] > 300
    failing = "\n".join(f"- {name}: {why}" for name, why in ours["failures"].items())
    assert ours["passed"] >= ref["passed"], (
        f"Tidemark passes {ours['passed']} of {ours['total']}, the reference "
        f"{ref['passed']}; failing:\n{failing}")
