"""The Durable Streams conformance run: the official suite against Tidemark and, side by
side, against the protocol's reference Node server.

    python -m tests.conformance            # what `make conformance` runs

It installs the pinned suite (``conformance/package.json`` and its lock, ``npm ci``)
unless it is installed, starts a broker (unless ``--bootstrap``), two gateways behind
HAProxy (round robin, no stickiness) and the reference server
(``@durable-streams/server``, in memory), runs every test of
``@durable-streams/server-conformance-tests`` against the balancer's URL and then against
the reference server, and prints a JSON report: both pass counts and every test that did
not pass, with its first failure line.

The gateways run with ``TIDEMARK_AUTH=none`` on purpose: the suite sends no tokens (auth
and tenants of the Durable Streams surface are tested in tests/e2e/test_durable.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.procs import REPO, Gateways, Proc, base_env, start_broker, start_reference

SUITE_DIR = REPO / "conformance"
#: The settings of the gateways under test (beyond the broker and namespace).
GATEWAY_SETTINGS = {
    "TIDEMARK_AUTH": "none",
    "TIDEMARK_PARTITIONS": "4",
    # The suite's own long-poll tests wait 21 s at most; a short timeout keeps it quick.
    "TIDEMARK_DS_LONG_POLL_TIMEOUT": "3",
    "TIDEMARK_MAX_BODY_BYTES": str(64 * 1024 * 1024),
    "TIDEMARK_SHUTDOWN_GRACE": "2",
}


@dataclass
class SuiteResult:
    """One run of the suite against one server."""

    url: str
    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    #: "group > test": first line of its failure.
    failures: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def npm_install() -> None:
    """``npm ci`` of the pinned suite, unless it is installed already."""
    if (SUITE_DIR / "node_modules" / "@durable-streams" / "server-conformance-tests").is_dir():
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SUITE_DIR, check=True)


async def run_suite(url: str, workdir: Path, name: str) -> SuiteResult:
    """Every conformance test against ``url``; vitest's JSON report parsed."""
    report = workdir / f"{name}.json"
    result = SuiteResult(url=url)
    started = time.monotonic()
    with (workdir / f"{name}.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(SUITE_DIR / "node_modules" / ".bin" / "vitest"), "run",
            "--config", str(SUITE_DIR / "vitest.config.mjs"), "--reporter=json",
            f"--outputFile.json={report}", cwd=SUITE_DIR, stdout=log, stderr=log,
            env={**os.environ, "CONFORMANCE_TEST_URL": url})
        await proc.wait()
    result.seconds = round(time.monotonic() - started, 1)
    if not report.exists():
        result.error = f"no report; see {workdir / (name + '.log')}"
        return result
    data = json.loads(report.read_text())
    result.total = data["numTotalTests"]
    result.passed = data["numPassedTests"]
    result.failed = data["numFailedTests"]
    result.skipped = data["numPendingTests"] + data.get("numTodoTests", 0)
    for suite in data["testResults"]:
        for test in suite["assertionResults"]:
            if test["status"] == "failed":
                title = " > ".join([*test["ancestorTitles"], test["title"]])
                message = (test.get("failureMessages") or [""])[0].strip().splitlines()
                result.failures[title] = message[0][:300] if message else ""
    return result


async def run(*, workdir: Path, bootstrap: str | None = None,
              reference: bool = True) -> dict[str, Any]:
    """Start everything, run the suite against Tidemark (and the reference), stop all."""
    npm_install()
    procs: list[Proc] = []
    out: dict[str, Any] = {"workdir": str(workdir)}
    gateways: Gateways | None = None
    try:
        if not bootstrap:
            broker, bootstrap = start_broker(workdir)
            procs.append(broker)
        env = base_env(TIDEMARK_KAFKA_BOOTSTRAP=bootstrap,
                       TIDEMARK_NAMESPACE="ds" + uuid.uuid4().hex[:10], **GATEWAY_SETTINGS)
        gateways = Gateways(env, workdir)
        await gateways.start_all()
        tidemark = await run_suite(gateways.balancer + "/ds", workdir, "tidemark")
        out["tidemark"] = tidemark.as_dict()
        if reference:
            ref, ref_url = start_reference(workdir)
            procs.append(ref)
            out["reference"] = (await run_suite(ref_url, workdir, "reference")).as_dict()
        if exited := gateways.exited():
            out["errors"] = exited
    finally:
        if gateways is not None:
            gateways.stop()
        for proc in reversed(procs):
            proc.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="", help="use this Kafka instead of a new one")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference server's run")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="logs and reports (default: a new temporary directory)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tidemark-conformance-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = asyncio.run(run(workdir=workdir, bootstrap=args.bootstrap or None,
                          reference=not args.no_reference))
    print(json.dumps(out, indent=2))  # noqa: T201
    summary = [f"{name}: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped "
               f"of {r['total']} ({r['seconds']} s)"
               for name in ("tidemark", "reference") if (r := out.get(name))]
    print("\n".join(summary))  # noqa: T201
    ours, ref = out.get("tidemark"), out.get("reference")
    if ours is None or (ref is not None and ours["passed"] < ref["passed"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
