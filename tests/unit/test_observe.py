"""The log context, JSON log lines, per-module levels, the breaker's transitions and the
bounded tenant labels (issue 11, metrics and logs)."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
import sys
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from eventlog import logcontext, loglevels
from eventlog.errors import ConfigError
from eventlog.settings import load_settings
from gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from tests.procs import REPO, base_env
from tidemark.logs import JsonFormatter
from workers.metrics import TenantLabels, WorkerMetrics


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines go, as JSON, to a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.observe.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_carries_the_bound_stream_partition_and_offset(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_log
    logger.info("before")
    with logcontext.bound(stream="s3-1-abc", partition=1, offset=42):
        logger.info("during %s", "work", extra={"seq": 7})
        with logcontext.bound(offset=43, partition=None):
            logger.info("nested")
    logger.info("after")
    before, during, nested, after = _lines(out)
    assert "stream" not in before and "stream" not in after
    assert during["msg"] == "during work"
    assert (during["stream"], during["partition"], during["offset"], during["seq"]) == (
        "s3-1-abc", 1, 42, 7)
    # A nested bind overrides only what it names (None leaves a field as it was).
    assert (nested["partition"], nested["offset"]) == (1, 43)
    assert "trace_id" not in during  # no span is current


def test_a_json_line_carries_the_current_spans_trace_and_span_ids(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = json_log
    tracer = TracerProvider().get_tracer("tests.observe")
    with tracer.start_as_current_span("deliver") as span:
        logger.info("inside a span")
        context = span.get_span_context()
    logger.info("outside")
    inside, outside = _lines(out)
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert len(str(inside["trace_id"])) == 32 and len(str(inside["span_id"])) == 16
    assert "trace_id" not in outside and "span_id" not in outside


async def test_each_task_has_its_own_log_context() -> None:
    seen: dict[str, object] = {}

    async def handler(stream: str) -> None:
        logcontext.bind(stream=stream)
        await asyncio.sleep(0.01)
        seen[stream] = logcontext.current().get("stream")

    await asyncio.gather(handler("a"), handler("b"))
    assert seen == {"a": "a", "b": "b"}
    assert "stream" not in logcontext.current()  # nothing leaked into the caller


def test_log_level_specs_parse_from_a_string_or_an_object() -> None:
    assert loglevels.parse("gateway.hub=DEBUG, workers=info,") == {
        "gateway.hub": "DEBUG", "workers": "INFO"}
    assert loglevels.parse({"aiokafka": "warning", "root": "ERROR"}) == {
        "aiokafka": "WARNING", "root": "ERROR"}
    assert loglevels.parse("") == {}


@pytest.mark.parametrize(("spec", "says"), [
    ("gateway.hub", "is not <logger>=<LEVEL>"),
    ("gatway.hub=DEBUG", "unknown logger 'gatway.hub'"),
    ("gateway.hub=LOUD", "is not one of DEBUG"),
    ("gateway..hub=DEBUG", "is not a logger name"),
    ("root=NOTSET", "needs a level"),
    ({"gateway": 10}, "is not one of"),
    (",".join(f"gateway.m{i}=DEBUG" for i in range(65)), "at most 64"),
    (["gateway=DEBUG"], "a string"),
])
def test_a_bad_log_level_spec_says_what_is_wrong(spec: object, says: str) -> None:
    with pytest.raises(loglevels.LogLevelError, match=re.escape(says)):
        loglevels.parse(spec)  # type: ignore[arg-type]


def test_applied_levels_change_what_a_module_logs_and_notset_inherits_again(
        json_log: tuple[logging.Logger, io.StringIO]) -> None:
    _, out = json_log
    levels = loglevels.LogLevels()
    child = logging.getLogger("tests.observe.json.child")
    try:
        child.debug("hidden")
        levels.apply({"tests.observe.json.child": "DEBUG"})
        child.debug("shown")
        assert levels.current()["levels"] == {"tests.observe.json.child": "DEBUG"}
        levels.apply({"tests.observe.json.child": "NOTSET"})
        child.debug("hidden again")
        assert levels.current()["levels"] == {}
    finally:
        child.setLevel(logging.NOTSET)
    assert [line["msg"] for line in _lines(out)] == ["shown"]


def test_a_bad_TIDEMARK_LOG_LEVELS_is_a_start_up_error() -> None:
    with pytest.raises(ConfigError, match=r"TIDEMARK_LOG_LEVELS: .*unknown logger 'gatway'"):
        load_settings({"TIDEMARK_LOG_LEVELS": "gatway=DEBUG"})
    proc = subprocess.run([sys.executable, "-m", "tidemark", "worker"], cwd=REPO,
                          env=base_env(TIDEMARK_LOG_LEVELS="workers=LOUD"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "TIDEMARK_LOG_LEVELS" in proc.stderr and "'LOUD' is not one of" in proc.stderr


def test_breaker_transitions_are_reported_as_they_happen() -> None:
    now = [0.0]
    changes: list[str] = []
    breaker = CircuitBreaker(failures=2, reset_s=5.0, clock=lambda: now[0],
                             on_change=changes.append)
    assert breaker.state_code == 0
    breaker.failure()
    assert changes == []
    breaker.failure()
    assert (changes, breaker.state_code) == ([OPEN], 2)
    with pytest.raises(CircuitOpen):
        breaker.check()
    breaker.trip()  # the watcher trips it again: still open, no change
    assert changes == [OPEN]
    now[0] = 6.0
    breaker.check()  # the trial request
    assert (changes, breaker.state_code) == ([OPEN, HALF_OPEN], 1)
    breaker.failure()
    assert changes == [OPEN, HALF_OPEN, OPEN]
    now[0] = 12.0
    assert breaker.state_code == 1  # noticed by a scrape, without a request
    breaker.check()
    breaker.success()
    assert (changes, breaker.state_code) == ([OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED], 0)


def test_tenant_labels_are_bounded() -> None:
    labels = TenantLabels(2)
    assert [labels(t) for t in ("a", "b", "c", "a", "other", "d", "b")] == [
        "a", "b", "other", "a", "other", "other", "b"]
    assert TenantLabels(0)("a") == "other"


def test_worker_outcomes_count_per_tenant_with_the_default_for_legacy_streams() -> None:
    metrics = WorkerMetrics(tenants=2, default_tenant="main")
    metrics.count_stream("completed", "")
    metrics.count_stream("completed", "acme")
    metrics.count_stream("failed", "zeta")
    value = metrics.registry.get_sample_value
    assert value("tidemark_worker_streams_total",
                 {"outcome": "completed", "tenant": "main"}) == 1
    assert value("tidemark_worker_streams_total",
                 {"outcome": "completed", "tenant": "acme"}) == 1
    assert value("tidemark_worker_streams_total",
                 {"outcome": "failed", "tenant": "other"}) == 1
