"""Fuzzing the HTTP contract: schemathesis against ``/v1/openapi.json`` of a real gateway
(a real Kafka broker, a redis-server, a worker), until at least ``--requests`` requests
were answered.

    python -m tests.fuzz --requests 10000        # what `make fuzz` runs; prints a JSON report

Every answer is checked against the document: no 5xx, a documented status code, content
type, headers and body schema. Schemathesis runs all its phases (examples, coverage,
fuzzing, and stateful sequences that follow the document's links from a created stream
to its status, events, publish and cancel), in positive and negative mode, repeated with
a new seed until enough requests were made (schemathesis reports test cases, so
``tests/fuzz_hooks.py`` counts the requests themselves).

The gateway under test ends an SSE response after 1 s (``TIDEMARK_MAX_RESPONSE_SECONDS``,
``TIDEMARK_IDLE_TIMEOUT``) so reads of live streams do not hold the fuzzer. Every request
carries a token with every scope, signed with the gateway's ``TIDEMARK_JWT_SECRET``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.auth import SCOPES, mint_token
from tests.procs import REPO, Proc, base_env, free_port, start_redis, wait_ready

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
#: The gateway's settings for the run (besides Kafka, namespace and auth).
GATEWAY_SETTINGS = {
    "TIDEMARK_PARTITIONS": "4",
    "TIDEMARK_MAX_RESPONSE_SECONDS": "1",
    "TIDEMARK_IDLE_TIMEOUT": "1",
    "TIDEMARK_POLL_MAX_WAIT": "1",
    "TIDEMARK_HEARTBEAT_SECONDS": "0.5",
    "TIDEMARK_BODY_TIMEOUT": "5",
    "TIDEMARK_SHUTDOWN_GRACE": "2",
    # Few demo streams at once: the document allows a stream of 10^6 events at 10^5/s,
    # and hundreds of those would make the run a load test of the broker.
    "TIDEMARK_WORKER_MAX_JOBS": "2",
}
_SCHEMATHESIS = [sys.executable, "-m", "schemathesis.cli"]


@dataclass
class Report:
    requests: int = 0
    runs: int = 0
    seconds: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    server_errors: int = 0

    @property
    def ok(self) -> bool:
        return (not self.failures and not self.errors and self.server_errors == 0
                and all(code == 0 for code in self.exit_codes))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "requests": self.requests, "runs": self.runs,
                "seconds": round(self.seconds, 1),
                "server_errors": self.server_errors, "failures": self.failures,
                "errors": self.errors, "exit_codes": self.exit_codes,
                "excluded_operations": self.excluded,
                "by_status": dict(sorted(self.by_status.items()))}


def _token() -> tuple[dict[str, str], list[str]]:
    """The gateway's auth settings (a fresh secret) and the header of a token with every
    scope for it (its per-user limits off: the run measures the contract, not limits)."""
    secret = secrets.token_hex(32)
    token = mint_token(secret, sub="fuzzer", tenant="fuzz", scope=" ".join(SCOPES),
                       ttl_s=24 * 3600, limits={"maxConcurrentStreams": 0,
                                                "requestsPerMinute": 0})
    return ({"TIDEMARK_AUTH": "jwt", "TIDEMARK_JWT_SECRET": secret},
            ["-H", f"Authorization: Bearer {token}"])


async def _unserved(url: str) -> tuple[int, list[str]]:
    """How many operations the document has, and those the gateway answers 405 to (not
    on this branch yet)."""
    import aiohttp

    out = []
    count = 0
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/v1/openapi.json") as resp:
            doc = await resp.json()
        for path, item in doc["paths"].items():
            for method, op in item.items():
                count += 1
                probe = path.replace("{id}", "probe")
                async with session.request(method.upper(), url + probe) as resp:
                    if resp.status == 405:
                        out.append(op["operationId"])
    return count, out


async def _schemathesis(url: str, *, examples: int, seed: int, workers: int,
                        auth_args: list[str], excluded: list[str], workdir: Path,
                        run: int) -> tuple[int, dict[str, int], dict[str, Any]]:
    counts = workdir / f"counts-{run}.json"
    reports = workdir / f"schemathesis-{run}"
    args = [*_SCHEMATHESIS, "run", f"{url}/v1/openapi.json", "--checks", ",".join(CHECKS),
            "--max-examples", str(examples), "--seed", str(seed), "--workers", str(workers),
            "--request-timeout", "15", "--mode", "all", "--suppress-health-check", "all",
            "--report", "json", "--report-dir", str(reports), "--continue-on-failure",
            # Shrinking replays a failing case hundreds of times against a live service
            # (each a full request, up to the timeout): report it as found instead.
            "--no-shrink",
            "--no-color", *auth_args]
    for op in excluded:
        args += ["--exclude-operation-id", op]
    env = base_env(SCHEMATHESIS_HOOKS="tests.fuzz_hooks", FUZZ_COUNTS_FILE=str(counts))
    with (workdir / f"schemathesis-{run}.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=log, env=env,
                                                    cwd=REPO)
        code = await proc.wait()
    try:
        by_status: dict[str, int] = json.loads(counts.read_text())
    except (OSError, ValueError):  # schemathesis did not exit normally
        by_status = {}
    report_files = sorted(reports.glob("*.json"))
    report = json.loads(report_files[-1].read_text()) if report_files else {}
    return code, by_status, report


async def run(*, requests: int, workdir: Path, bootstrap: str | None = None,
              seed: int = 20261202, workers: int = 1) -> Report:
    """Start a broker (unless ``bootstrap``), a worker and a gateway; fuzz until
    ``requests`` were answered; stop them. The processes' logs stay in ``workdir`` (an
    existing directory)."""
    procs: list[Proc] = []
    report = Report()
    started = time.monotonic()
    try:
        if not bootstrap:
            broker = Proc("kafka", ["kafka", "--data-dir", str(workdir / "kafka")],
                          base_env(), workdir)
            procs.append(broker)
            bootstrap = broker.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", 120).split("=", 1)[1]
        # Redis holds the limits' counters and the session lists (without it the
        # session list answers 503).
        redis, redis_url = start_redis(workdir)
        procs.append(redis)
        auth_env, auth_args = _token()
        env = base_env(TIDEMARK_KAFKA_BOOTSTRAP=bootstrap,
                       TIDEMARK_NAMESPACE="fuzz" + uuid.uuid4().hex[:10],
                       TIDEMARK_REDIS_URL=redis_url, **GATEWAY_SETTINGS, **auth_env)
        worker = Proc("worker", ["worker"], env, workdir)
        procs.append(worker)
        worker.wait_line("Worker started")
        port = free_port()
        gateway = Proc("gateway", ["gateway", "--port", str(port)], env, workdir)
        procs.append(gateway)
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, gateway)
        documented, report.excluded = await _unserved(url)
        operations = max(1, documented - len(report.excluded))
        while report.requests < requests:
            # Fuzzing makes about `examples` requests per operation; coverage and
            # stateful add more. Ask for what is missing, at least 2 per operation.
            examples = max(2, min(2000, (requests - report.requests) // operations))
            code, by_status, st = await _schemathesis(
                url, examples=examples, seed=seed + report.runs, workers=workers,
                auth_args=auth_args, excluded=report.excluded, workdir=workdir,
                run=report.runs)
            report.runs += 1
            report.exit_codes.append(code)
            made = sum(by_status.values())
            if made == 0:
                report.errors.append(f"run {report.runs}: no request made (exit {code}); "
                                     f"see {workdir}/schemathesis-{report.runs - 1}.log")
                break
            report.requests += made
            for key, n in by_status.items():
                report.by_status[key] = report.by_status.get(key, 0) + n
            report.failures += st.get("failures", [])
            report.errors += st.get("errors", [])
            if code != 0:
                break
        report.server_errors = sum(n for key, n in report.by_status.items()
                                   if key.rsplit(" ", 1)[1].startswith("5"))
        if not gateway.alive:
            report.errors.append(f"the gateway exited:\n{gateway.logs()}")
    finally:
        for proc in reversed(procs):
            proc.stop()
        report.seconds = time.monotonic() - started
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--workers", type=int, default=1,
                        help="schemathesis workers (threads; >1 trips a CPython 3.11 ast bug)")
    parser.add_argument("--bootstrap", default="", help="use this Kafka instead of a new one")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="logs and reports (default: a new temporary directory)")
    args = parser.parse_args()
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tidemark-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(requests=args.requests, workdir=workdir,
                             bootstrap=args.bootstrap or None, seed=args.seed,
                             workers=args.workers))
    print(json.dumps({**report.as_dict(), "workdir": str(workdir)}, indent=2))  # noqa: T201
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
