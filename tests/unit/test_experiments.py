"""A/B experiments without Kafka: the definitions (TIDEMARK_EXPERIMENTS) and their
checks, the deterministic assignment (stable, in another process too, matching the
weights), what a stream's variants change, and the worker's announcement of them."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventlog.errors import ConfigError
from eventlog.experiments import (
    ANONYMOUS_SUB,
    Changes,
    Experiments,
    bucket,
    parse_experiments,
    variants_of_envelope,
)
from eventlog.index import StreamInfo
from eventlog.jobs import Job
from eventlog.settings import load_settings
from gateway.auth import Authenticator, Identity
from gateway.delivery import Delivery
from gateway.experiments import assign_stream
from schemas import events
from schemas.context import StreamContext
from schemas.events import Event
from workers.demo import DemoGenerator
from workers.experiments import announced
from workers.generators import Draft

REPO = Path(__file__).resolve().parents[2]
USERS = [f"user-{i}" for i in range(20_000)]


def define(*experiments: dict[str, Any]) -> Experiments:
    return parse_experiments(orjson.dumps(list(experiments)).decode())


def experiment(name: str, *weights: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra,
            "variants": [{"name": f"v{i}", "weight": w} for i, w in enumerate(weights)]}


# --- assignment ------------------------------------------------------------------------


def test_the_bucket_is_blake2b_of_name_tenant_sub_pinned() -> None:
    # Fixed values: the same on every gateway, every restart, every Python version.
    assert bucket("checkout", "acme", "alice") == int("057355615f94c9d4", 16) / 2**64
    assert bucket("checkout", "acme", "bob") == int("7906f5d28a6749b7", 16) / 2**64
    assert bucket("heartbeat", "default", "anonymous") == int("bdeb6fa716a0c157", 16) / 2**64
    assert all(0 <= bucket("e", "t", u) < 1 for u in USERS[:1000])


def test_same_inputs_same_variant() -> None:
    defs = define(experiment("e1", 1, 1, 1))
    first = [defs.assign("acme", u) for u in USERS[:2000]]
    again = [define(experiment("e1", 1, 1, 1)).assign("acme", u) for u in USERS[:2000]]
    assert first == again
    assert len({a["e1"] for a in first}) == 3


def test_another_process_assigns_the_same_variants() -> None:
    raw = orjson.dumps([experiment("e1", 5, 3, 2), experiment("e2", 1, 1)]).decode()
    script = (
        "import sys, orjson\n"
        "from eventlog.experiments import parse_experiments\n"
        "defs = parse_experiments(sys.argv[1])\n"
        "print(orjson.dumps([defs.assign('acme', f'user-{i}') for i in range(3000)]).decode())\n")
    # A fresh interpreter with another hash seed: Python's hash() would differ.
    out = subprocess.run([sys.executable, "-c", script, raw], cwd=REPO, check=True,
                         capture_output=True, env={"PYTHONHASHSEED": "12345"}, timeout=60)
    assert orjson.loads(out.stdout) == [parse_experiments(raw).assign("acme", f"user-{i}")
                                        for i in range(3000)]


@pytest.mark.parametrize("weights", [(50, 30, 20), (5, 3, 2, 0), (0.1, 0.7, 0.2), (1, 1)])
def test_shares_match_the_weights_within_four_sigma(weights: tuple[float, ...]) -> None:
    """20,000 fixed users: each variant's count is within 4 binomial standard deviations
    (sqrt(n p (1 - p))) of n p. The hash is deterministic, so this cannot flake."""
    defs = define(experiment("shares", *weights))
    counts = Counter(defs.assign("acme", u)["shares"] for u in USERS)
    n, total = len(USERS), sum(weights)
    for i, weight in enumerate(weights):
        p = weight / total
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[f"v{i}"] - n * p) <= 4 * sigma, (weights, counts)
    assert sum(counts.values()) == n


def test_a_weight_of_zero_is_never_assigned() -> None:
    defs = define(experiment("zero", 0, 1, 0, 3, 0))
    got = {defs.assign("acme", u)["zero"] for u in USERS}
    assert got == {"v1", "v3"}


def test_changing_one_experiments_weights_moves_no_user_of_another() -> None:
    before = define(experiment("a", 1, 1), experiment("b", 1, 1, 1))
    after = define(experiment("a", 9, 1), experiment("b", 1, 1, 1))
    assert [before.assign("t", u)["b"] for u in USERS] == \
        [after.assign("t", u)["b"] for u in USERS]
    assert [before.assign("t", u)["a"] for u in USERS] != \
        [after.assign("t", u)["a"] for u in USERS]


def test_two_experiments_with_the_same_weights_split_users_independently() -> None:
    """The name is in the hash: being in v0 of one says nothing about the other."""
    defs = define(experiment("a", 1, 1), experiment("b", 1, 1))
    pairs = Counter((x["a"], x["b"]) for x in (defs.assign("t", u) for u in USERS))
    n, p = len(USERS), 0.25
    for pair in [("v0", "v0"), ("v0", "v1"), ("v1", "v0"), ("v1", "v1")]:
        assert abs(pairs[pair] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), pairs


def test_the_tenant_is_in_the_hash() -> None:
    defs = define(experiment("e", 1, 1))
    assert [defs.assign("acme", u) for u in USERS[:500]] != \
        [defs.assign("globex", u) for u in USERS[:500]]


def test_tenants_filter_and_disabled_experiments_assign_nobody() -> None:
    defs = define(experiment("only-acme", 1, tenants=["acme", "initech"]),
                  experiment("off", 1, enabled=False), experiment("everyone", 1))
    assert defs.assign("acme", "alice") == {"only-acme": "v0", "everyone": "v0"}
    assert defs.assign("initech", "alice") == {"only-acme": "v0", "everyone": "v0"}
    assert defs.assign("globex", "alice") == {"everyone": "v0"}
    assert define().assign("acme", "alice") == {}


def test_the_anonymous_caller_is_the_tenants_anonymous_user() -> None:
    settings = load_settings({"TIDEMARK_AUTH": "none"})
    anonymous = Authenticator(settings.auth, settings.limits).anonymous
    assert anonymous.sub == ANONYMOUS_SUB
    defs = define(experiment("e", 1, 1, 1, 1))
    assert assign_stream(defs, anonymous, {}).variants == defs.assign("default", "anonymous")


# --- definitions -----------------------------------------------------------------------


def test_a_full_definition_is_parsed() -> None:
    settings = load_settings({"TIDEMARK_EXPERIMENTS": orjson.dumps([{
        "name": "delivery.v2", "tenants": ["acme"], "enabled": True,
        "variants": [
            {"name": "control", "weight": 50},
            {"name": "batched", "weight": 25, "changes": {
                "updateFrequency": "batched", "coalesceMs": 500, "heartbeatSeconds": 5,
                "options": {"tokens": 8}}},
            {"name": "off", "weight": 0}]}]).decode()})
    (exp,) = settings.gateway.experiments
    assert exp.name == "delivery.v2" and exp.tenants == frozenset({"acme"}) and exp.enabled
    assert [(v.name, v.weight) for v in exp.variants] == [
        ("control", 50), ("batched", 25), ("off", 0)]
    assert exp.variants[1].changes == Changes(update_frequency="batched", coalesce_ms=500,
                                              heartbeat_s=5.0, options={"tokens": 8})
    assert exp.to_json()["variants"][1]["share"] == pytest.approx(1 / 3)
    assert load_settings({}).gateway.experiments == Experiments()


BAD = [
    ("{", "not valid JSON"),
    ('{"name": "e"}', "/: {'name': 'e'} is not of type 'array'"),
    ('[{"variants": [{"name": "a", "weight": 1}]}]', "/0: 'name' is a required property"),
    ('[{"name": "e"}]', "'variants' is a required property"),
    ('[{"name": "e", "variants": []}]', "/0/variants: [] should be non-empty"),
    ('[{"name": "e|x", "variants": [{"name": "a", "weight": 1}]}]', "/0/name"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": -1}]}]',
     "/0/variants/0/weight: -1 is less than the minimum of 0"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": "1"}]}]',
     "/0/variants/0/weight: '1' is not of type 'number'"),
    ('[{"name": "e", "variants": [{"name": "a"}]}]', "'weight' is a required property"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}]',
     "/0/variants: experiment 'e' has no variant with a weight above 0"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1}]},'
     ' {"name": "e", "variants": [{"name": "a", "weight": 1}]}]',
     "/1/name: experiment 'e' is defined twice"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 2}]}]',
     "/0/variants/1/name: experiment 'e' has two variants named 'a'"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1, "changes": {"color": 1}}]}]',
     "/0/variants/0/changes: Additional properties are not allowed ('color' was unexpected)"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1, '
     '"changes": {"updateFrequency": "hourly"}}]}]', "/0/variants/0/changes/updateFrequency"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1, '
     '"changes": {"heartbeatSeconds": 0.5}}]}]',
     "/0/variants/0/changes/heartbeatSeconds: 0.5 is less than the minimum of 1"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1, '
     '"changes": {"heartbeatSeconds": 16}}]}]',
     "/0/variants/0/changes/heartbeatSeconds: 16 is greater than the maximum of 15"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1, "changes": {"coalesceMs": 5}}]}]',
     "/0/variants/0/changes/coalesceMs: 5 is less than the minimum of 10"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1, '
     '"changes": {"options": {"tokens": 0}}}]}]',
     "/0/variants/0/changes/options/tokens: 0 is less than the minimum of 1"),
    ('[{"name": "e", "variants": [{"name": "a", "weight": 1, '
     '"changes": {"options": {"top_k": 1}}}]}]', "'top_k' was unexpected"),
    ('[{"name": "e", "tenants": [], "variants": [{"name": "a", "weight": 1}]}]',
     "/0/tenants: [] should be non-empty"),
    ('[{"name": "e", "enabled": "yes", "variants": [{"name": "a", "weight": 1}]}]',
     "/0/enabled: 'yes' is not of type 'boolean'"),
]


@pytest.mark.parametrize(("raw", "message"), BAD)
def test_bad_definitions_are_a_startup_error_naming_the_problem(raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"TIDEMARK_EXPERIMENTS": raw})
    assert str(caught.value).startswith("TIDEMARK_EXPERIMENTS ")
    assert message in str(caught.value)


def test_the_cli_refuses_to_start_with_a_bad_definition() -> None:
    env = {"PATH": "/usr/bin:/bin", "TIDEMARK_AUTH": "none",
           "TIDEMARK_EXPERIMENTS": '[{"name": "e", "variants": [{"name": "a", "weight": -2}]}]'}
    done = subprocess.run([sys.executable, "-m", "tidemark", "gateway", "--port", "0"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TIDEMARK_EXPERIMENTS /0/variants/0/weight: -2 is less than the minimum of 0" \
        in done.stderr


# --- what variants change ----------------------------------------------------------------


def identity(sub: str, tenant: str = "acme") -> Identity:
    return Identity(sub=sub, tenant=tenant, scopes=frozenset(), tier="free")


def test_overlapping_changes_the_first_experiment_in_definition_order_wins() -> None:
    defs = parse_experiments(orjson.dumps([
        {"name": "first", "variants": [{"name": "x", "weight": 1, "changes": {
            "heartbeatSeconds": 3, "options": {"tokens": 5}}}]},
        {"name": "second", "variants": [{"name": "y", "weight": 1, "changes": {
            "heartbeatSeconds": 9, "coalesceMs": 100,
            "options": {"tokens": 7, "tokens_per_second": 4}}}]}]).decode())
    assert defs.changes({"first": "x", "second": "y"}) == Changes(
        heartbeat_s=3.0, coalesce_ms=100, options={"tokens": 5, "tokens_per_second": 4})
    # Variants no longer defined change nothing.
    assert defs.changes({"first": "gone", "third": "z"}) == Changes()
    assert defs.changes({}) == Changes()
    assert defs.change_delivery and not define(experiment("e", 1)).change_delivery


def test_the_requests_own_options_win_over_the_variants() -> None:
    defs = parse_experiments(orjson.dumps([{"name": "opt", "variants": [
        {"name": "few", "weight": 1, "changes": {"options": {"tokens": 5,
                                                             "tokens_per_second": 50}}}]}]
                                          ).decode())
    got = assign_stream(defs, identity("alice"), {"tokens": 9})
    assert got.variants == {"opt": "few"}
    assert got.options == {"tokens": 9, "tokens_per_second": 50}
    assert assign_stream(Experiments(), identity("alice"), {"tokens": 9}) == ({}, {"tokens": 9})


def test_delivery_query_over_context_over_variant() -> None:
    batched = Changes(update_frequency="batched", coalesce_ms=700)
    plain = Delivery(interval_s=0.25)
    assert plain.resolve(None, batched) == Delivery(True, True, 0.7)
    assert plain.resolve(None, Changes()) == Delivery(False, True, 0.25)
    realtime_ctx = StreamContext(update_frequency="realtime")
    assert plain.resolve(realtime_ctx, batched) == Delivery(False, True, 0.7)
    assert Delivery(batched=False, interval_s=0.25).resolve(None, batched).batched is False
    assert Delivery(batched=True, interval_s=0.25).resolve(None, Changes(
        update_frequency="realtime")) == Delivery(True, True, 0.25)


def test_variants_are_read_from_a_first_event_only() -> None:
    def envelope(seq: int, data: dict[str, Any]) -> bytes:
        return Event(stream="s1", seq=seq, type=events.STATUS, ts=1, data=data).to_json()

    exp = {"delivery": "batched", "opt": "few"}
    assert variants_of_envelope(envelope(0, {"state": "queued", "experiments": exp})) == exp
    assert variants_of_envelope(envelope(0, {"state": "queued"})) == {}
    assert variants_of_envelope(envelope(3, {"state": "x", "experiments": exp})) == {}
    assert variants_of_envelope(b'{"seq":0,"data":{"experiments":5}}') == {}
    assert variants_of_envelope(b'{"seq":0,"data":{"experiments":') == {}  # not JSON


# --- the worker's announcement -----------------------------------------------------------


def job(experiments: dict[str, str]) -> Job:
    info = StreamInfo(stream_id="s1", namespace="default", topic="tidemark.default.events",
                      partition=0, first_offset=0, generator="demo", status="running",
                      created_at=0, updated_at=0, experiments=experiments)
    return Job(stream=info, query="q", options={"tokens": 6, "tokens_per_second": 100_000})


async def drafts(j: Job, start_seq: int) -> list[Draft]:
    return [d async for d in announced(j, start_seq, DemoGenerator().events)]


async def test_a_stream_in_an_experiment_starts_with_a_metadata_event_naming_its_variants(
        ) -> None:
    plain = await drafts(job({}), 1)
    assert plain == [d async for d in DemoGenerator().events(job({}), 1)]
    got = await drafts(job({"delivery": "batched"}), 1)
    assert got[0] == Draft(1, events.METADATA, {"experiments": {"delivery": "batched"}})
    assert [(d.type, d.data) for d in got[1:]] == [(d.type, d.data) for d in plain]
    assert [d.seq for d in got] == list(range(1, len(got) + 1))
    assert got[-1].type == events.RESULT


async def test_the_announced_stream_resumes_exactly_from_any_seq() -> None:
    j = job({"delivery": "batched"})
    whole = await drafts(j, 1)
    for start in range(1, len(whole) + 1):
        assert await drafts(j, start) == whole[start - 1:], start
