"""What operators see of real processes (issue 11, metrics and logs): the latency
histograms, consumer lag, per-tenant outcomes, breaker state and takeovers on
``/metrics``; JSON log lines that say which stream, partition and offset they are
about; log levels changed on a running gateway and worker by an admin."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from schemas.eventid import parse_event_id
from tests import sse_client
from tests.conftest import Cluster
from tests.e2e.test_streams import create
from tests.e2e.test_takeover import scrape, taken_over
from tests.procs import auth_headers, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FAST_LAG = {"TIDEMARK_LAG_SAMPLE_SECONDS": "0.3"}
ADMIN = {"Authorization": f"Bearer {token(scope='admin')}"}


async def _until(check: Any, timeout: float = 15.0) -> None:
    """Wait until ``await check()`` is true (metrics are sampled on timers)."""
    for _ in range(int(timeout / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not true within {timeout}s: {check.__doc__}")


def _series(metrics: dict[str, float], name: str) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(name + "{")}


async def _create_as(http: aiohttp.ClientSession, base: str, tenant: str) -> str:
    async with http.post(f"{base}/v1/streams", headers=auth_headers(tenant=tenant),
                         json={"query": f"asked by {tenant}",
                               "options": {"tokens": 10, "tokens_per_second": 100}}) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["stream_id"])


async def test_metrics_after_real_streams_and_resumes(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    worker = cluster.worker(TIDEMARK_METRICS_TENANTS="2", **FAST_LAG)
    base = await cluster.gateway(**FAST_LAG)
    # A gateway whose memory tail holds nothing: its resumes read Kafka.
    cold = await cluster.gateway(TIDEMARK_TAIL_BYTES="1", **FAST_LAG)
    tenants = ["default", "acme", "beta"]
    sids = [await _create_as(http, base, tenant) for tenant in tenants]
    replies = []
    for sid, tenant in zip(sids, tenants, strict=True):
        reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events",
                                      headers=auth_headers(tenant=tenant))
        assert reply.stream_events[-1].event == "result"
        replies.append(reply)
    # Each stream resumed once through each gateway, from its third event.
    for sid, tenant, reply in zip(sids, tenants, replies, strict=True):
        for gateway in (base, cold):
            again = await sse_client.read(http, f"{gateway}/v1/streams/{sid}/events",
                                          last_event_id=reply.stream_events[2].id,
                                          headers=auth_headers(tenant=tenant))
            assert [e.id for e in again.stream_events] == [
                e.id for e in reply.stream_events[3:]]

    gw = await scrape(http, f"{base}/metrics")
    # Every stream was read from its start while new: one first-event figure each,
    # between its create and now.
    assert gw["tidemark_first_event_seconds_count"] == 3
    assert 0 < gw["tidemark_first_event_seconds_sum"] < 3 * 30
    assert gw['tidemark_first_event_seconds_bucket{le="+Inf"}'] == 3
    # Resumes: from memory here, from Kafka on the cold gateway.
    assert gw['tidemark_resume_seconds_count{source="memory"}'] == 3
    assert gw['tidemark_resume_seconds_count{source="kafka"}'] == 0
    assert 0 < gw['tidemark_resume_seconds_sum{source="memory"}'] < 3
    cold_gw = await scrape(http, f"{cold}/metrics")
    assert cold_gw['tidemark_resume_seconds_count{source="kafka"}'] == 3
    assert cold_gw['tidemark_resume_seconds_count{source="memory"}'] == 0
    assert cold_gw["tidemark_first_event_seconds_count"] == 0  # it served only resumes
    # The breaker is closed and never moved.
    assert gw['tidemark_breaker_state{name="kafka"}'] == 0
    assert gw['tidemark_breaker_transitions_total{name="kafka",to="open"}'] == 0

    async def tail_caught_up() -> bool:
        """every events partition of the gateway's tail shows lag 0"""
        lag = _series(await scrape(http, f"{base}/metrics"), "tidemark_tail_lag_records")
        return len(lag) == 4 and set(lag.values()) == {0.0}
    await _until(tail_caught_up)

    async def worker_done() -> bool:
        """the worker counted all three streams and its jobs lag is 0 everywhere"""
        m = await scrape(http, worker.metrics_url)
        lag = _series(m, "tidemark_worker_jobs_lag_records")
        done = sum(v for k, v in _series(m, "tidemark_worker_streams_total").items()
                   if 'outcome="completed"' in k)
        return done == 3 and len(lag) == 8 and set(lag.values()) == {0.0}
    await _until(worker_done)

    wm = await scrape(http, worker.metrics_url)
    # Outcomes per tenant: two tenants get labels (the default's and the first other
    # one seen), the third counts as other.
    for tenant in ("default", "acme", "other"):
        assert wm[f'tidemark_worker_streams_total{{outcome="completed",tenant="{tenant}"}}'] \
            == 1, tenant
    assert not any('tenant="beta"' in k for k in wm)
    # One token-latency figure per event written; one duration per transaction.
    assert wm["tidemark_worker_token_latency_seconds_count"] == wm[
        "tidemark_worker_events_total"] >= 3 * 12
    assert 0 < wm["tidemark_worker_token_latency_seconds_sum"] / wm[
        "tidemark_worker_token_latency_seconds_count"] < 5
    assert wm["tidemark_worker_transaction_seconds_count"] == wm[
        "tidemark_worker_transactions_total"] > 0
    assert wm["tidemark_worker_takeovers_total"] == 0
    assert wm['tidemark_worker_rebalance_partitions_total{change="gained"}'] == 8
    assert wm['tidemark_worker_rebalance_partitions_total{change="lost"}'] == 0


async def test_takeover_is_counted_by_the_worker_that_took_over(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    _, second = await taken_over(cluster, http, "who counts the takeover?")
    metrics = await scrape(http, second.metrics_url)
    assert metrics["tidemark_worker_takeovers_total"] == 1
    assert metrics['tidemark_worker_streams_total{outcome="resumed",tenant="default"}'] == 1
    # It came to own every jobs partition of both topics (4 each), and lost none.
    assert metrics['tidemark_worker_rebalance_partitions_total{change="gained"}'] == 8
    assert metrics['tidemark_worker_rebalance_partitions_total{change="lost"}'] == 0


def _json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


async def test_json_log_lines_carry_stream_partition_and_offset(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    json_logs = {"TIDEMARK_LOG_FORMAT": "json"}
    worker = cluster.worker(**json_logs)
    base = await cluster.gateway(**json_logs, TIDEMARK_LOG_LEVELS="gateway.streaming=DEBUG")
    sid = await create(http, base, options={"tokens": 5, "tokens_per_second": 100})
    reply = await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
    position = reply.stream_events[1].id
    await sse_client.read(http, f"{base}/v1/streams/{sid}/events", last_event_id=position)
    partition = int(sid.split("-")[1])

    gateway_lines = [line for line in _json_lines(cluster.proc("gateway0").err)
                     if line.get("stream") == sid]
    serving = [line for line in gateway_lines if line["msg"].startswith(f"stream {sid}: serving")]
    assert len(serving) == 2, gateway_lines
    assert all(line["partition"] == partition for line in serving)
    assert all(line["logger"] == "gateway.streaming" and line["level"] == "DEBUG"
               for line in serving)
    assert "offset" not in serving[0]  # read from the start: no position
    assert position is not None
    assert serving[1]["offset"] == parse_event_id(position).offset
    # The create's audit line is about the stream it made, in its partition.
    created = [line for line in gateway_lines if line["logger"] == "tidemark.audit"
               and '"action":"create"' in line["msg"]]
    assert len(created) == 1 and created[0]["partition"] == partition

    async def ended() -> bool:
        """the worker logged the stream's end"""
        return any(line["msg"].startswith(f"stream {sid} ended")
                   for line in _json_lines(worker.err))
    await _until(ended)
    end = next(line for line in _json_lines(worker.err)
               if line["msg"].startswith(f"stream {sid} ended"))
    assert end["stream"] == sid and end["partition"] == partition
    assert isinstance(end["offset"], int) and end["offset"] >= 0
    assert end["logger"] == "workers.runner"
    # Lines about no stream carry no stream fields.
    started = next(line for line in _json_lines(worker.err)
                   if line["msg"].startswith("took jobs partitions"))
    assert "stream" not in started and "partition" not in started


async def _levels(http: aiohttp.ClientSession, url: str, *, method: str = "GET",
                  headers: dict[str, str] | None = None, body: Any = None,
                  ) -> tuple[int, str, Any]:
    async with http.request(method, url, headers=headers, json=body) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


@pytest.mark.parametrize("role", ["gateway", "worker"])
async def test_log_levels_change_what_a_running_process_logs(
        cluster: Cluster, http: aiohttp.ClientSession, role: str) -> None:
    worker = cluster.worker()
    base = await cluster.gateway()
    if role == "gateway":
        url, logger, proc = f"{base}/v1/admin/log-levels", "gateway.streaming", \
            cluster.proc("gateway0")
        marker = "serving from offset"
    else:
        url, logger, proc = worker.metrics_url.replace("/metrics", "/v1/admin/log-levels"), \
            "workers.runner", worker
        marker = "generating from seq"

    async def a_stream() -> str:
        sid = await create(http, base, options={"tokens": 3, "tokens_per_second": 100})
        await sse_client.read(http, f"{base}/v1/streams/{sid}/events")
        return sid

    # Only an admin of the operators' tenant may read or change them.
    no_token = {"Authorization": ""}
    status, ctype, body = await _levels(http, url, headers=no_token)
    assert (status, ctype) == (401, "application/problem+json"), body
    status, ctype, body = await _levels(http, url, headers=auth_headers())
    assert (status, ctype, body["scope"]) == (403, "application/problem+json", "admin")
    other_admin = {"Authorization": f"Bearer {token(scope='admin', tenant='acme')}"}
    status, _, _ = await _levels(http, url, method="PUT", headers=other_admin,
                                 body={"levels": {logger: "DEBUG"}})
    assert status == 403
    status, _, body = await _levels(http, url, headers=ADMIN)
    assert status == 200 and body["root"] == "INFO" and body["levels"] == {}

    quiet = await a_stream()

    # A bad spec is refused and changes nothing.
    status, ctype, body = await _levels(http, url, method="PUT", headers=ADMIN,
                                        body={"levels": "gatway.hub=DEBUG"})
    assert (status, ctype, body["field"]) == (422, "application/problem+json", "/levels")
    status, _, _ = await _levels(http, url, method="PUT", headers=ADMIN,
                                 body={"levels": {logger: "LOUD"}})
    assert status == 422

    status, _, body = await _levels(http, url, method="PUT", headers=ADMIN,
                                    body={"levels": f"{logger}=debug"})
    assert status == 200 and body["levels"] == {logger: "DEBUG"}
    loud = await a_stream()

    async def logged() -> bool:
        """the process logged the debug line of the stream made after the change"""
        return f"stream {loud}: {marker}" in proc.err.read_text(errors="replace")
    await _until(logged, timeout=10)
    text = proc.err.read_text(errors="replace")
    assert f"stream {quiet}: {marker}" not in text
    assert "audit" in text and "log-levels" in text  # the change is in the audit log

    # Back to inheriting the root's level: quiet again.
    status, _, body = await _levels(http, url, method="PUT", headers=ADMIN,
                                    body={"levels": {logger: "NOTSET"}})
    assert status == 200 and body["levels"] == {}
    after = await a_stream()
    await asyncio.sleep(0.5)
    assert f"stream {after}: {marker}" not in proc.err.read_text(errors="replace")


async def test_log_levels_belong_to_the_operator_tenant_when_one_is_set(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """``TIDEMARK_OPERATOR_TENANT`` names the operators, as for analytics: its admins set
    log levels on a gateway and a worker, and the default tenant's admins no longer may."""
    operators = {"TIDEMARK_OPERATOR_TENANT": "ops"}
    worker = cluster.worker(**operators)
    base = await cluster.gateway(**operators)
    ops_admin = {"Authorization": f"Bearer {token(scope='admin', tenant='ops')}"}
    for url in (f"{base}/v1/admin/log-levels",
                worker.metrics_url.replace("/metrics", "/v1/admin/log-levels")):
        status, ctype, body = await _levels(http, url, headers=ADMIN)
        assert (status, ctype) == (403, "application/problem+json"), body
        assert "'ops'" in body["detail"]
        status, _, body = await _levels(http, url, method="PUT", headers=ops_admin,
                                        body={"levels": {"gateway.hub": "DEBUG"}})
        assert status == 200 and body["levels"] == {"gateway.hub": "DEBUG"}, body
