"""Markdown tables of the ``tenants`` scenario (bench/scn_tenants.py)."""

from __future__ import annotations

from typing import Any

from bench.markdown import cpu_cell as _cpu
from bench.markdown import fmt as _f
from bench.markdown import table as _table

OPS = ("create", "publish", "read", "status")


def _pair(op: dict[str, Any] | None) -> str:
    if not op or not op.get("count"):
        return "-"
    return f"{_f(op.get('p50_ms'), 1)} / {_f(op.get('p99_ms'), 1)}"


def mode_row(m: dict[str, Any]) -> list[str]:
    """One row of the shared-topics table."""
    load = m.get("load", {})
    ops = load.get("ops", {})
    broker = m.get("broker", {})
    ns = broker.get("namespace", {})
    win = m.get("window", {})
    ns_parts = ns.get("partitions", 0) + ns.get("shared_index_partitions", 0)
    return [_f(m.get("tenants")), f"{_f(load.get('completed'))} / {_f(load.get('failed'))}",
            *[_pair(ops.get(op)) for op in OPS],
            _f(load.get("requests_per_s"), 0), _f(m.get("gateway_cpu_us_per_request"), 0),
            _cpu(win, "gateway"),
            f"{_f(m.get('gateway_rss_mb_before'))} → {_f(m.get('gateway_rss_mb_after'))} MB",
            _cpu(win, "kafka"), _cpu(win, "client"),
            f"{len(ns.get('topics', [])) + 1} / {_f(ns_parts)}",
            f"{_f(broker.get('topics'))} / {_f(broker.get('partitions'))}"]


def step_row(s: dict[str, Any]) -> list[str]:
    """One row of the namespace-per-tenant table."""
    per = s.get("create_ms_per_namespace") or {}
    return [_f(s.get("namespaces")), _f(s.get("broker_topics")), _f(s.get("broker_partitions")),
            "-" if s.get("create_s") is None else
            f"{_f(s['create_s'], 1)} s ({_f(per.get('p50_ms'), 0)} ms p50)",
            _f(s.get("broker_cpu_s_creating"), 1), f"{_f(s.get('jvm_rss_mb'))} MB",
            _f(s.get("jvm_open_files")), _f(s.get("jvm_memory_maps")),
            _f(s.get("broker_idle_cpu_pct_of_core"), 1)]


def render(sc: dict[str, Any]) -> list[str]:
    t = sc.get("tenants")
    if not t:
        return []
    lines = ["### Tenants: shared topics at 1 and 1,000 tenants, and a namespace per tenant", ""]
    if t.get("error"):
        lines += [f"**error:** `{t['error'][-300:]}`", ""]
    setup = t.get("setup", {})
    sh = t.get("shared", {})
    if sh:
        lines += [f"One gateway (`TIDEMARK_AUTH=jwt`) per mode on a fresh namespace; "
                  f"{_f(setup.get('streams'))} streams, {_f(setup.get('concurrency'))} in "
                  f"flight, {_f(setup.get('users'))} users spread over the tenants; client: "
                  f"{setup.get('client')}. Latency p50 / p99 ms.", ""]
        lines += _table(["tenants", "completed / failed", "create", "publish",
                         "read (to result)", "status", "req/s", "gateway µs/req",
                         "gateway CPU", "gateway RSS", "broker CPU", "client CPU",
                         "namespace topics / partitions",
                         "broker topics / partitions (run so far)"],
                        [mode_row(m) for m in sh.get("modes", [])])
        lines.append("")
        for key, which in (("ratio_many_to_one", "the first 1-tenant run"),
                           ("ratio_many_to_one_repeat", "the 1-tenant run after it")):
            r = sh.get(key) or {}
            if r:
                lines += [f"Ratio {sh.get('ratio_of')} ({which}): " + ", ".join(
                    f"{k} {_f(v, 2)}" for k, v in r.items()), ""]
        for m in sh.get("modes", []):
            f = m.get("load", {}).get("foreign_tenant_status")
            if f:
                lines += [f"Another tenant's token on {f['asked']} streams "
                          f"({_f(m['tenants'])} tenants): answers {f['answers']}.", ""]
    alt = t.get("alternative", {})
    if alt:
        lines += ["Namespace per tenant: the topics of K namespaces created on the broker "
                  "(12 partitions per topic):", ""]
        lines += _table(["namespaces", "broker topics", "broker partitions", "create",
                         "broker CPU creating (s)", "JVM RSS", "JVM open files",
                         "JVM memory maps", "broker idle CPU %"],
                        [step_row(s) for s in alt.get("steps", [])])
        fit = alt.get("fit", {})
        if fit:
            def f1(key: str) -> str:
                v = fit.get(key) or {}
                return (f"{_f(v.get('at_1000_tenants'))} "
                        f"({_f(v.get('per_1000_partitions'), 2)} per 1,000 partitions)")
            lines += ["", f"Linear fit at 1,000 tenants "
                      f"({_f(fit.get('partitions_at_1000_tenants'))} partitions): JVM RSS "
                      f"{f1('jvm_rss_mb')} MB, open files {f1('jvm_open_files')}, memory maps "
                      f"{f1('jvm_memory_maps')}; creating them "
                      f"~{_f(fit.get('create_s_at_1000_tenants'))} s. "
                      f"~{_f(fit.get('guidance_partitions'))} partitions per broker is reached "
                      f"at {_f(fit.get('tenants_within_guidance'))} tenants. "
                      f"One gateway per namespace: ~"
                      f"{_f(alt.get('gateways_at_1000_tenants_rss_mb'), 0)} MB of idle "
                      "gateways at 1,000 tenants.", ""]
    return lines
