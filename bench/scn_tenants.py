"""The ``tenants`` scenario: what Tidemark's tenant mapping costs at 1,000 tenants.

The choice measured: tenants share a namespace's topics (``tidemark.<ns>.events``,
``.jobs`` and the compacted ``tidemark.streams``), the tenant and owner ride on every
stream (its id's tags, its first record's headers, its index record), and one gateway
serves every tenant. The alternative: a namespace per tenant.

1. **Shared topics, 1 tenant vs 1,000 tenants, same run.** Per mode, a fresh namespace and
   a fresh gateway with ``TIDEMARK_AUTH=jwt`` (a bench secret), then the load client
   (``bench.tenants_load run``, its own process) with the same users, streams and
   concurrency: per stream create (external), publish a ``result``, read the events with
   the stream's read token, ask the status. The modes run 1 tenant, 1,000 tenants, then 1
   tenant again (the repeat shows how much the figures drift within a run). Per mode:
   latency per operation, requests/s, the CPU of the gateway (µs per request), the broker
   and the client in the timed window, gateway RSS before and after, the broker's topics
   and partitions; the ratio 1,000 tenants / 1 tenant (the first 1-tenant run).
2. **The alternative on the broker.** The topics of K namespaces (12 partitions each, the
   default) are created in cumulative steps with ``eventlog.topics.ensure_topics``; per
   step the time to create them, then the broker's RSS, partitions, open files and memory
   maps (of the JVM), and its idle CPU. A least-squares line over the steps gives the
   figures at 1,000 tenants. The topics are deleted at the end.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cluster import Bench, Gateway, start_gateway
from bench.procs import PYTHON, Proc, Sample, fd_count, process_tree, rss_kb, window

TARGET_TENANTS = 1000
#: Partitions per broker that the usual Kafka sizing guidance stays under.
GUIDANCE_PARTITIONS = 4000
#: Topics a namespace of its own adds (events, jobs); the stream index topic
#: (``tidemark.streams``) is one for every namespace of the cluster.
TOPICS_PER_NAMESPACE = 2


@dataclass(frozen=True, kw_only=True)
class TenantsProfile:
    streams: int
    concurrency: int
    users: int
    tenants: tuple[int, ...]
    namespace_steps: tuple[int, ...]
    partitions: int = 12
    foreign_sample: int = 100
    #: Streams of an unmeasured 1-tenant run first (the broker's JVM and page cache warm
    #: up on it, so the first measured mode is not penalized).
    warmup_streams: int = 1000
    idle_window_s: float = 5.0
    load_timeout_s: float = 900.0


SHORT = TenantsProfile(streams=5000, concurrency=50, users=2000, tenants=(1, 1000, 1),
                       namespace_steps=(25, 50, 100))
FULL = TenantsProfile(streams=20000, concurrency=50, users=2000, tenants=(1, 1000, 1),
                      namespace_steps=(25, 50, 100, 150, 200))


def fit(points: list[tuple[float, float | None]]) -> dict[str, float] | None:
    """Least-squares line y = intercept + slope·x over the points with a y."""
    pts = [(x, y) for x, y in points if y is not None]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if not sxx:
        return None
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return {"intercept": my - slope * mx, "slope": slope, "points": n}


def at(line: dict[str, float] | None, x: float) -> float | None:
    return None if line is None else line["intercept"] + line["slope"] * x


def partitions_for(tenants: int, partitions: int = 12, *, index_per_namespace: bool = False,
                   ) -> int:
    """Partitions the broker holds with a namespace per tenant: each namespace's events and
    jobs topics, plus the cluster's one stream index (or one per namespace)."""
    per = (TOPICS_PER_NAMESPACE + (1 if index_per_namespace else 0)) * partitions
    return tenants * per + (0 if index_per_namespace else partitions)


def tenants_within(limit_partitions: int, partitions: int = 12) -> int:
    """The most tenants a namespace each whose partitions stay within ``limit_partitions``."""
    return max(0, (limit_partitions - partitions) // (TOPICS_PER_NAMESPACE * partitions))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or not b:
        return None
    return round(a / b, 2)


def _load(b: Bench, name: str, ns: str, args: list[str], **env: str) -> Proc:
    return b.reg.start(name, [PYTHON, "-m", "bench.tenants_load", *args], b.env(ns, **env))


def _result(b: Bench, proc: Proc, kind: str, timeout: float) -> dict[str, Any]:
    code = proc.wait_exit(timeout)
    try:
        found = [x for x in proc.json_lines() if x.get("kind") == kind]
        if code != 0 or not found:
            raise RuntimeError(f"{proc.name} failed ({code}):\n{proc.logs()}")
        return found[-1]
    finally:
        b.reg.stop(proc)


def _settled_rss_kb(pid_rss: Any, *, settle_s: float = 1.0, timeout: float = 30.0) -> int:
    """RSS once it has stopped changing by more than 1 % over ``settle_s``."""
    deadline = time.monotonic() + timeout
    last = pid_rss()
    while True:
        time.sleep(settle_s)
        now = pid_rss()
        if abs(now - last) <= 0.01 * max(last, 1) or time.monotonic() > deadline:
            return int(now)
        last = now


def _jvm(broker: Proc) -> int | None:
    """The broker's JVM (the broker process is a Python launcher and its java child)."""
    for pid in process_tree(broker.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"java" in cmd.split(b"\0")[0]:
            return pid
    return None


def _maps(pid: int) -> int:
    try:
        return len(Path(f"/proc/{pid}/maps").read_text().splitlines())
    except OSError:
        return 0


def _topics(b: Bench, ns: str) -> dict[str, Any]:
    return _result(b, _load(b, "tenants-topics", ns, ["topics", "--namespace", ns]), "topics", 120)


def _mode(b: Bench, tp: TenantsProfile, tenants: int, k: int, secret_file: Path,
          secret: str) -> dict[str, Any]:
    ns = b.namespace(f"t{k}")
    with b.reg.scope():
        gw: Gateway = start_gateway(b, f"gateway-tenants{k}", ns, TIDEMARK_AUTH="jwt",
                                    TIDEMARK_JWT_SECRET=secret)
        rss0 = _settled_rss_kb(gw.proc.rss_kb)
        broker_topics = _topics(b, ns)
        go = b.workdir / f"tenants-go-{k}"
        client = _load(b, f"tenants-load{k}", ns, [
            "run", "--gateway", gw.url, "--secret-file", str(secret_file),
            "--tenants", str(tenants), "--users", str(tp.users), "--streams", str(tp.streams),
            "--concurrency", str(tp.concurrency), "--go-file", str(go),
            "--foreign-sample", str(tp.foreign_sample)])
        client.wait_line("READY", 120)
        group: dict[str, Proc | list[Proc]] = {"gateway": gw.proc, "kafka": b.broker,
                                               "client": client}
        a = Sample.take(group)
        go.touch()
        client.wait_line("TIMED", tp.load_timeout_s)
        z = Sample.take(group)
        Path(f"{go}.2").touch()
        load = _result(b, client, "load", 300)
        rss1 = _settled_rss_kb(gw.proc.rss_kb)
    win = window(a, z)
    gw_cpu = win["processes"]["gateway"]["cpu_s"]
    return {"tenants": tenants, "namespace": ns, "load": load, "window": win,
            "gateway_rss_mb_before": round(rss0 / 1024, 1),
            "gateway_rss_mb_after": round(rss1 / 1024, 1),
            "gateway_cpu_us_per_request": (round(1e6 * gw_cpu / load["requests"], 1)
                                           if load["requests"] else None),
            "broker_cpu_s": win["processes"]["kafka"]["cpu_s"],
            "broker": broker_topics}


def shared(b: Bench, tp: TenantsProfile) -> dict[str, Any]:
    secret = secrets.token_urlsafe(48)
    secret_file = b.workdir / "tenants-secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    warmup = (_mode(b, dataclasses.replace(tp, streams=tp.warmup_streams), 1, 99,
                    secret_file, secret) if tp.warmup_streams else None)
    modes = [_mode(b, tp, n, k, secret_file, secret) for k, n in enumerate(tp.tenants)]
    ones = [m for m in modes if m["tenants"] == 1]
    many = next((m for m in modes if m["tenants"] > 1), None)
    out: dict[str, Any] = {"modes": modes, "warmup": warmup}
    if many is not None:
        out["ratio_of"] = f"{many['tenants']} tenants / 1 tenant"
        out["ratio_many_to_one"] = _ratios(many, ones[0])
        if len(ones) > 1:
            out["ratio_many_to_one_repeat"] = _ratios(many, ones[-1])
    return out


def _ratios(many: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Figures of ``many`` over those of ``ref`` (same run, same load)."""
    ratios: dict[str, Any] = {}
    for op in ("create", "publish", "read", "status"):
        for q in ("p50_ms", "p99_ms"):
            ratios[f"{op}_{q}"] = ratio(many["load"]["ops"][op][q],
                                        ref["load"]["ops"][op][q])
    ratios["requests_per_s"] = ratio(many["load"]["requests_per_s"],
                                     ref["load"]["requests_per_s"])
    ratios["gateway_cpu_us_per_request"] = ratio(many["gateway_cpu_us_per_request"],
                                                 ref["gateway_cpu_us_per_request"])
    ratios["gateway_rss_mb_after"] = ratio(many["gateway_rss_mb_after"],
                                           ref["gateway_rss_mb_after"])
    ratios["broker_cpu_s"] = ratio(many["broker_cpu_s"], ref["broker_cpu_s"])
    return ratios


def _broker_state(b: Bench) -> dict[str, Any]:
    jvm = _jvm(b.broker)
    return {"rss_mb": round(_settled_rss_kb(b.broker.rss_kb, settle_s=2.0) / 1024, 1),
            "jvm_rss_mb": round(rss_kb(jvm) / 1024, 1) if jvm else None,
            "jvm_open_files": fd_count(jvm) if jvm else None,
            "jvm_memory_maps": _maps(jvm) if jvm else None}


def alternative(b: Bench, tp: TenantsProfile) -> dict[str, Any]:
    prefix = b.namespace("k")
    ns = b.namespace("t0")
    steps: list[dict[str, Any]] = []
    base = _topics(b, ns)
    state = _broker_state(b)
    steps.append({"namespaces": 0, "broker_partitions": base["partitions"],
                  "broker_topics": base["topics"], **state})
    done = 0
    try:
        for k in tp.namespace_steps:
            proc = _load(b, f"tenants-ns{k}", ns, [
                "namespaces", "--prefix", prefix, "--start", str(done), "--stop", str(k),
                "--partitions", str(tp.partitions)])
            s0 = Sample.take({"kafka": b.broker})
            made = _result(b, proc, "namespaces", 1800)
            s1 = Sample.take({"kafka": b.broker})
            done = k
            state = _broker_state(b)
            i0 = Sample.take({"kafka": b.broker})
            time.sleep(tp.idle_window_s)
            i1 = Sample.take({"kafka": b.broker})
            idle = window(i0, i1)["processes"]["kafka"]
            steps.append({
                "namespaces": k, "created_now": made["created"], "create_s": made["wall_s"],
                "create_ms_per_namespace": made["per_namespace_ms"],
                "broker_cpu_s_creating": window(s0, s1)["processes"]["kafka"]["cpu_s"],
                "metadata_wait_s": made.get("metadata_wait_s"),
                "all_in_metadata": made.get("all_in_metadata"),
                "broker_partitions": made["broker"]["partitions"],
                "broker_topics": made["broker"]["topics"], **state,
                "broker_idle_cpu_pct_of_core": idle["cpu_pct_of_core"]})
    finally:
        deleted = _result(b, _load(b, "tenants-delete", ns, ["delete", "--prefix", prefix]),
                          "deleted", 600)
    return {"steps": steps, "deleted": deleted, "fit": fit_alternative(steps, tp.partitions)}


def fit_alternative(steps: list[dict[str, Any]], partitions: int = 12) -> dict[str, Any]:
    """Lines (broker partitions -> figure) over the steps, evaluated at 1,000 tenants."""
    target = partitions_for(TARGET_TENANTS, partitions)
    target_idx = partitions_for(TARGET_TENANTS, partitions, index_per_namespace=True)
    out: dict[str, Any] = {
        "how": "least-squares line over the steps (broker partitions -> figure)",
        "partitions_at_1000_tenants": target,
        "partitions_at_1000_tenants_index_per_namespace": target_idx,
        "tenants_within_guidance": tenants_within(GUIDANCE_PARTITIONS, partitions),
        "guidance_partitions": GUIDANCE_PARTITIONS}
    for key in ("jvm_rss_mb", "rss_mb", "jvm_open_files", "jvm_memory_maps",
                "broker_idle_cpu_pct_of_core"):
        line = fit([(s["broker_partitions"], s.get(key)) for s in steps
                    if key != "broker_idle_cpu_pct_of_core" or s["namespaces"]])
        out[key] = None if line is None else {
            "per_1000_partitions": round(1000 * line["slope"], 3),
            "intercept": round(line["intercept"], 1),
            "at_1000_tenants": round(at(line, target) or 0, 1),
            "at_1000_tenants_index_per_namespace": round(at(line, target_idx) or 0, 1)}
    made = [s for s in steps if s["namespaces"]]
    per_ns = [s["create_s"] / s["created_now"] for s in made if s.get("created_now")]
    if per_ns:
        mean = sum(per_ns) / len(per_ns)
        out["create_s_per_namespace_mean"] = round(mean, 3)
        out["create_s_at_1000_tenants"] = round(mean * TARGET_TENANTS, 1)
    return out


def tenants(b: Bench, profile_name: str) -> dict[str, Any]:
    tp = FULL if profile_name == "full" else SHORT
    res: dict[str, Any] = {"setup": {
        "what": "shared topics: one gateway (TIDEMARK_AUTH=jwt) per mode on a fresh "
                "namespace, the load client its own process; per stream: create (external), "
                "publish a result, read the events with the read token, status",
        "streams": tp.streams, "concurrency": tp.concurrency, "users": tp.users,
        "tenant_modes": list(tp.tenants), "namespace_steps": list(tp.namespace_steps),
        "partitions_per_topic": tp.partitions,
        "client": "bench.tenants_load run (Python aiohttp + uvloop, one process)",
        "cores": 2}}
    res["shared"] = shared(b, tp)
    res["alternative"] = alternative(b, tp)
    gws = [m["gateway_rss_mb_before"] for m in res["shared"]["modes"]]
    res["alternative"]["gateways_at_1000_tenants_rss_mb"] = round(
        TARGET_TENANTS * min(gws), 0) if gws else None
    return res
