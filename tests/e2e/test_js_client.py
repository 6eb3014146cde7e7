"""The JavaScript SDK (clients/js) in Node against real gateways: its built ES module
follows streams over each transport and yields exactly what the wire gives
(tests/transport_clients.py reads the same streams), refuses with typed errors carrying
the problem's detail, creates, cancels and talks back, and a gateway SIGKILLed behind
HAProxy mid-stream costs it nothing: no event lost, none repeated."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests import transport_clients as tc
from tests.conftest import Cluster
from tests.e2e.test_streams import create
from tests.procs import REPO, run_node, start_haproxy, token

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

JS = REPO / "clients" / "js"
TOKEN = token()
Line = dict[str, Any]


@pytest.fixture(scope="module")
def gateway(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[Cluster, str]]:
    """One gateway and one worker shared by the module's tests (each makes its own
    streams). Small long-poll answers, so that a read pages through several."""
    cluster = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("jsclient"))
    try:
        cluster.worker()
        base = asyncio.run(cluster.gateway(TIDEMARK_POLL_MAX_EVENTS="5"))
        yield cluster, base
    finally:
        cluster.stop()


async def node(script: str, cfg: dict[str, Any], *, timeout: float = 60.0,
               on_line: Callable[[Line], Awaitable[None]] | None = None) -> list[Line]:
    """Run ``clients/js/test/<script>`` with ``cfg``; its JSON lines, read as they come
    (``on_line`` sees each one then)."""
    return await run_node(JS / "test" / script, cfg, timeout=timeout, on_line=on_line)


def follow_cfg(base: str, streams: list[str], transport: str, **extra: Any) -> dict[str, Any]:
    return {"base": base, "token": TOKEN, "streams": streams, "transports": [transport],
            **extra}


def events_of(lines: list[Line], stream: str) -> list[tuple[str | None, str, Any]]:
    return [(ln["id"], ln["type"], ln["data"]) for ln in lines
            if ln["stream"] == stream and "type" in ln]


def wire(outcome: tc.Outcome) -> list[tuple[str | None, str, Any]]:
    return [(i, e, json.loads(d)) for i, e, d in outcome.items]


def ends(lines: list[Line], stream: str) -> list[Line]:
    return [ln for ln in lines if ln["stream"] == stream and ("end" in ln or "error" in ln)]


async def test_node_follows_over_each_transport_exactly_what_the_wire_gives(
        gateway: tuple[Cluster, str], http: aiohttp.ClientSession) -> None:
    _, base = gateway
    done = await create(http, base, options={"tokens": 12, "tokens_per_second": 400})
    failed = await create(http, base, options={"tokens": 12, "tokens_per_second": 400,
                                               "fail_at_seq": 6})
    for sid in (done, failed):  # both finished: the expected events are fixed
        assert (await tc.read(http, base, sid, "sse")).ended
    # A live one: followed while its worker writes it.
    live = await create(http, base, options={"tokens": 30, "tokens_per_second": 40})
    runs = await asyncio.gather(*(node("follow.mjs", follow_cfg(base, [done, failed, live], t))
                                  for t in tc.TRANSPORTS))
    expected = {sid: wire(await tc.read(http, base, sid, "sse")) for sid in (done, failed, live)}
    assert expected[failed][-1][1] == "error" and expected[done][-1][1] == "result"
    for transport, lines in zip(tc.TRANSPORTS, runs, strict=True):
        for sid, want in expected.items():
            assert events_of(lines, sid) == want, (transport, sid)
            assert ends(lines, sid) == [{"stream": sid, "end": True}], (transport, sid)
        assert {ln["transport"] for ln in lines if "type" in ln} == {transport}
        assert not [ln for ln in lines if "retry" in ln], (transport, "no reconnect needed")

    # Resume from the middle, and from the terminal event (nothing comes: 204 / 1000).
    middle = expected[done][4][0]
    terminal = expected[done][-1][0]
    for transport in tc.TRANSPORTS:
        lines = await node("follow.mjs", follow_cfg(base, [done], transport, lastEventId=middle))
        assert events_of(lines, done) == expected[done][5:], transport
        lines = await node("follow.mjs", follow_cfg(base, [done], transport,
                                                    lastEventId=terminal))
        assert events_of(lines, done) == [] and ends(lines, done)[0].get("end"), transport


async def test_refusals_are_typed_errors_with_the_problem_detail(
        gateway: tuple[Cluster, str], http: aiohttp.ClientSession) -> None:
    _, base = gateway
    sid = await create(http, base, options={"tokens": 3, "tokens_per_second": 400})
    cases = {  # what to follow -> the error class and status
        "unknown": ("s0-nosuchstream", {}, "NotFoundError", 404),
        "malformed": (sid, {"lastEventId": "not-an-id"}, "BadRequestError", 400),
        "bad token": (sid, {"token": "not.a.token"}, "UnauthorizedError", 401),
        "no scope": (sid, {"token": token(scope="streams:create")}, "ForbiddenError", 403),
    }
    for transport in tc.TRANSPORTS:
        for case, (stream, extra, error, status) in cases.items():
            lines = await node("follow.mjs", follow_cfg(base, [stream], transport, **extra))
            position = extra.get("lastEventId")
            headers = {"Authorization": f"Bearer {extra['token']}"} if "token" in extra else None
            outcome = await tc.read(http, base, stream, transport, position=position,
                                    headers=headers)
            assert ends(lines, stream) == [{"stream": stream, "error": error,
                                            "status": status, "detail": outcome.reason}], \
                (transport, case)
            assert not [ln for ln in lines if "retry" in ln], (transport, case, "no retry")


async def test_create_cancel_and_talk_back_from_node(
        gateway: tuple[Cluster, str], http: aiohttp.ClientSession) -> None:
    _, base = gateway
    lines = await node("api.mjs", {"base": base, "token": TOKEN})
    steps = {next(iter(ln)): ln for ln in lines}
    assert steps["cancel"]["cancel"]["status"] == "cancelling"
    types = steps["cancelled"]["types"]
    assert types[0] == "status" and types[-1] == "cancelled" and len(types) < 100, types
    ack = steps["input"]["input"]
    got = next(ln for ln in lines if "inputEvent" in ln)["inputEvent"]
    assert got == {"id": ack["id"], "seq": ack["seq"], "data": {"answer": "yes", "n": 1}}
    # The external stream holds its first event and the input (it has not ended).
    reply = await tc.read(http, base, got_stream(lines), "sse", max_events=2)
    assert [(i, e) for i, e, _ in reply.items] == [(reply.items[0][0], "status"),
                                                   (ack["id"], "input")]
    assert steps["refused"] == {"refused": "NotFoundError", "isProblem": True, "status": 404,
                                "detail": steps["refused"]["detail"]}
    assert steps["refused"]["detail"]
    assert "done" in steps


def got_stream(lines: list[Line]) -> str:
    return str(next(ln for ln in lines if "inputEvent" in ln)["stream"])


async def test_a_gateway_killed_behind_haproxy_loses_and_repeats_nothing(
        cluster: Cluster, http: aiohttp.ClientSession) -> None:
    cluster.worker()
    gateways = [await cluster.gateway(), await cluster.gateway()]
    haproxy, lb = start_haproxy(gateways, cluster.logdir)
    cluster.procs.append(haproxy)
    per_transport = 2
    streams = {t: [await create(http, lb, options={"tokens": 60, "tokens_per_second": 15})
                   for _ in range(per_transport)] for t in tc.TRANSPORTS}
    counts: dict[str, int] = {}
    killed = asyncio.Event()

    async def seen(line: Line) -> None:
        if "type" in line:
            counts[line["stream"]] = counts.get(line["stream"], 0) + 1
        if (not killed.is_set() and len(counts) == 3 * per_transport
                and min(counts.values()) >= 5):
            killed.set()
            cluster.proc("gateway0").stop(signal.SIGKILL)

    # Fast retries: the test waits for the reconnects, not for the default backoff.
    options = {"backoffBaseMs": 100, "backoffMaxMs": 1000}
    runs = await asyncio.gather(*(
        node("follow.mjs", follow_cfg(lb, streams[t], t, options=options), on_line=seen)
        for t in tc.TRANSPORTS))
    assert killed.is_set(), "the streams ended before a gateway could be killed"
    retried = 0
    for transport, lines in zip(tc.TRANSPORTS, runs, strict=True):
        retried += len([ln for ln in lines if "retry" in ln])
        for sid in streams[transport]:
            want = wire(await tc.read(http, lb, sid, "sse"))
            assert want[-1][1] == "result"
            got = events_of(lines, sid)
            assert got == want, (transport, sid, len(got), len(want))
            assert ends(lines, sid) == [{"stream": sid, "end": True}]
    assert retried >= 1, "no client noticed the killed gateway"
