"""A/B experiments end to end (real Kafka, gateways and a worker): users of two variants
create streams; the create answer, the status and the log carry their variants; a
variant's generator options reach the generator, and its delivery changes (batched with
its own coalescing interval, its own ping interval) are what a subscriber sees, through
any gateway."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from eventlog.experiments import parse_experiments
from tests import sse_client
from tests.conftest import Cluster
from tests.procs import auth_headers
from tests.sse_client import Event

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

#: 48 tokens at 8 per second; the streams' creators ask for concise answers (a quarter
#: of the tokens, no progress events between the chunks), so 12 consecutive chunks over
#: 1.4 s: a live subscriber with the default 250 ms batch interval would get several
#: batches; with 5 s it gets one.
TREATMENT = {"updateFrequency": "batched", "coalesceMs": 5000, "heartbeatSeconds": 1,
             "options": {"tokens": 48, "tokens_per_second": 8}}
CONCISE = {"preferences": {"responseFormat": "concise"}}
DEFINITIONS = [
    {"name": "delivery", "variants": [
        {"name": "control", "weight": 1},
        {"name": "treatment", "weight": 1, "changes": TREATMENT},
        {"name": "never", "weight": 0, "changes": {"options": {"tokens": 1}}}]},
    {"name": "acme-only", "tenants": ["acme"], "variants": [{"name": "on", "weight": 1}]},
]
RAW = orjson.dumps(DEFINITIONS).decode()
#: The gateways' own ping interval is the production default (15 s): a control
#: subscriber of an idle stream sees no ping for 7.5 s at least.
GATEWAY = {"TIDEMARK_EXPERIMENTS": RAW, "TIDEMARK_HEARTBEAT_SECONDS": "15"}


def user_in(variant: str) -> str:
    """The first test user whom the definitions put in ``variant`` of ``delivery``."""
    defs = parse_experiments(RAW)
    return next(sub for sub in (f"user-{i}" for i in range(1000))
                if defs.assign("default", sub)["delivery"] == variant)


async def create(http: aiohttp.ClientSession, base: str, sub: str,
                 **body: Any) -> dict[str, Any]:
    async with http.post(f"{base}/v1/streams", json={"query": "which variant am I in?",
                                                     **body},
                         headers=auth_headers(sub=sub)) as resp:
        assert resp.status == 201, await resp.text()
        reply: dict[str, Any] = await resp.json()
        return reply


async def get(http: aiohttp.ClientSession, url: str, **claims: Any) -> tuple[int, Any]:
    async with http.get(url, headers=auth_headers(**claims)) as resp:
        return resp.status, await resp.json(content_type=None)


async def timed(http: aiohttp.ClientSession, url: str, sub: str, *,
                seconds: float = 30.0) -> list[tuple[float, Event | str]]:
    """Every event and comment of an SSE response with the time it arrived (seconds from
    the request), until the server ends it or ``seconds`` have passed."""
    out: list[tuple[float, Event | str]] = []
    began = time.monotonic()
    async with http.get(url, headers={**auth_headers(sub=sub),
                                      "Accept": "text/event-stream"}) as resp:
        assert resp.status == 200, await resp.text()
        fields: dict[str, str] = {}
        while (left := seconds - (time.monotonic() - began)) > 0:
            try:
                raw = await asyncio.wait_for(resp.content.readline(), left)
            except TimeoutError:
                break
            if not raw:
                break
            line = raw.decode().rstrip("\n")
            now = time.monotonic() - began
            if line.startswith(":"):
                out.append((now, line[1:].strip()))
            elif line == "":
                if "data" in fields:
                    out.append((now, Event(fields.get("id"), fields.get("event", "message"),
                                           fields["data"])))
                fields = {}
            elif ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return out


def events_of(timeline: list[tuple[float, Event | str]]) -> list[Event]:
    return [e for _, e in timeline if isinstance(e, Event)]


def pings_of(timeline: list[tuple[float, Event | str]]) -> list[float]:
    return [t for t, e in timeline if e == "ping"]


def partials(events: list[Event]) -> list[Event]:
    return [e for e in events if e.event == "partial_result"]


async def test_variants_are_recorded_and_change_what_the_generator_and_subscribers_do(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    base = await cluster.gateway(**GATEWAY)
    control, treatment = user_in("control"), user_in("treatment")

    # The POST answer shows the variants (the acme-only experiment is not this tenant's).
    made_t = await create(http, base, treatment, context=CONCISE)
    follow_t = asyncio.create_task(timed(http, f"{base}{made_t['events_url']}", treatment))
    realtime_t = asyncio.create_task(timed(
        http, f"{base}{made_t['events_url']}&update_frequency=realtime", treatment))
    made_c = await create(http, base, control, context=CONCISE)
    follow_c = asyncio.create_task(timed(http, f"{base}{made_c['events_url']}", control))
    assert made_t["experiments"] == {"delivery": "treatment"}
    assert made_c["experiments"] == {"delivery": "control"}

    batched_t, live_t, plain_c = await asyncio.gather(follow_t, realtime_t, follow_c)
    got_t, got_c = events_of(batched_t), events_of(plain_c)
    every_t = events_of(live_t)

    # The log: the first event records the variants, the worker's metadata event too.
    for got, variant in ((every_t, "treatment"), (got_c, "control")):
        assert got[0].seq == 0 and got[0].envelope["data"]["experiments"] == {
            "delivery": variant}
        assert got[1].event == "metadata" and got[1].seq == 1
        assert got[1].envelope["data"] == {"experiments": {"delivery": variant}}
        assert got[-1].event == "result"

    # The variant's options reached the generator: 48 tokens (concise: 12) at 8/s; the
    # control's stream has the defaults (40, concise: 10, at 20/s).
    result_t, result_c = every_t[-1].envelope["data"], got_c[-1].envelope["data"]
    assert result_t["tokens"] == 12 and len(partials(every_t)) == 12
    meta_t, meta_c = (next(e for e in got if e.event == "metadata" and "model" in
                           e.envelope["data"]) for got in (every_t, got_c))
    assert meta_t.envelope["data"]["tokensPerSecond"] == 8
    assert meta_c.envelope["data"]["tokensPerSecond"] == 20
    assert result_c["tokens"] == 10 and len(partials(got_c)) == 10

    # Batched by the variant, with its 5 s interval: one coalesced event for the 12
    # chunks that arrived live over more than half a second (the realtime follower of the
    # same stream, asking for realtime, got each chunk on its own): a 250 ms interval
    # would have made two batches at least.
    arrivals = [t for t, e in live_t if isinstance(e, Event) and e.event == "partial_result"]
    assert arrivals[-1] - arrivals[0] > 0.5
    (coalesced,) = partials(got_t)
    assert coalesced.envelope["data"]["chunkCount"] == 12
    assert coalesced.envelope["data"]["chunk"] == result_t["text"]
    assert coalesced.id == partials(every_t)[-1].id
    assert [e.id for e in got_t if e.event != "partial_result"] == \
        [e.id for e in every_t if e.event != "partial_result"]

    # GET /v1/streams/{id} shows the variants.
    for made, sub, variant in ((made_t, treatment, "treatment"), (made_c, control, "control")):
        status, body = await get(http, f"{base}/v1/streams/{made['stream_id']}", sub=sub)
        assert status == 200 and body["experiments"] == {"delivery": variant}
        assert body["status"] == "completed"

    # The stream index (the worker's last snapshot) keeps them: what analytics split by.
    records = await cluster.index_records(made_t["stream_id"], made_c["stream_id"])
    assert [(r.status, r.experiments) for r in records if r is not None] == [
        ("completed", {"delivery": "treatment"}), ("completed", {"delivery": "control"})]

    # Another gateway applies the same (from Kafka: it keeps no memory tail), also to a
    # resume, whose fast path finds the stream from its id alone.
    other = await cluster.gateway(**GATEWAY, TIDEMARK_TAIL_BYTES="1")
    again_t = events_of(await timed(http, f"{other}/v1/streams/{made_t['stream_id']}/events",
                                    treatment))
    again_c = events_of(await timed(http, f"{other}/v1/streams/{made_c['stream_id']}/events",
                                    control))
    assert len(partials(again_t)) == 1 and len(partials(again_c)) == 10
    resumed = await sse_client.read(
        http, f"{other}/v1/streams/{made_t['stream_id']}/events",
        last_event_id=every_t[2].id, headers=auth_headers(sub=treatment))
    assert len(partials(resumed.stream_events)) == 1
    assert partials(resumed.stream_events)[0].envelope["data"]["chunkCount"] == 12


async def test_a_variants_heartbeat_is_the_ping_interval_its_subscribers_get(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    """Idle external streams: the treatment's subscribers get a ping about every second
    (heartbeatSeconds 1), the control's none in 5 s (the gateway's 15 s)."""
    base = await cluster.gateway(**GATEWAY)
    control, treatment = user_in("control"), user_in("treatment")
    made_t = await create(http, base, treatment, generator="external")
    made_c = await create(http, base, control, generator="external")
    idle_t, idle_c = await asyncio.gather(
        timed(http, f"{base}{made_t['events_url']}", treatment, seconds=5),
        timed(http, f"{base}{made_c['events_url']}", control, seconds=5))
    pings_t = pings_of(idle_t)
    assert len(pings_t) >= 4, idle_t
    gaps = [b - a for a, b in zip([0.0, *pings_t], pings_t, strict=False)]
    assert max(gaps) <= 1.6, gaps
    assert pings_of(idle_c) == [], idle_c
    assert [e.event for e in events_of(idle_t)] == ["status"]

    # Ended through the publish API, an external stream's index record keeps its variants.
    async with http.post(f"{base}/v1/streams/{made_t['stream_id']}/events",
                         json={"type": "result", "data": {"text": "done"}},
                         headers=auth_headers(sub=treatment)) as resp:
        assert resp.status == 200, await resp.text()
    (record,) = await cluster.index_records(made_t["stream_id"])
    assert record is not None and record.status == "completed"
    assert record.experiments == {"delivery": "treatment"}


async def test_the_experiment_routes(cluster: Cluster, http: aiohttp.ClientSession) -> None:
    base = await cluster.gateway(**GATEWAY)
    treatment = user_in("treatment")
    status, mine = await get(http, f"{base}/v1/experiments/mine", sub=treatment)
    assert status == 200
    assert mine == {"tenant": "default", "sub": treatment,
                    "assignment": {"delivery": "treatment"}}

    # The definitions need the admin scope.
    status, problem = await get(http, f"{base}/v1/experiments", sub=treatment)
    assert status == 403 and problem["scope"] == "admin"
    status, listed = await get(http, f"{base}/v1/experiments", sub="ops", scope="admin")
    assert status == 200
    assert listed["assignment"] == parse_experiments(RAW).assign("default", "ops")
    # Only the experiments of the admin's tenant, without naming other tenants.
    (delivery,) = listed["experiments"]
    assert delivery["name"] == "delivery" and delivery["allTenants"] is True
    assert [(v["name"], v["share"]) for v in delivery["variants"]] == [
        ("control", 0.5), ("treatment", 0.5), ("never", 0.0)]
    assert delivery["variants"][1]["changes"] == TREATMENT
    status, acme = await get(http, f"{base}/v1/experiments", sub="ops", tenant="acme",
                             scope="admin")
    assert status == 200 and [e["name"] for e in acme["experiments"]] == [
        "delivery", "acme-only"]
    assert acme["experiments"][1]["allTenants"] is False and "tenants" not in \
        acme["experiments"][1]
    assert acme["assignment"]["acme-only"] == "on"
