"""Markdown tables of the ``storm`` and ``processes`` scenarios (bench/scn_storm.py)."""

from __future__ import annotations

from typing import Any

from bench.markdown import fmt as _f
from bench.markdown import table as _table


def _cpu(x: dict[str, Any], name: str) -> str:
    p = x.get("window", {}).get("processes", {}).get(name)
    return "-" if p is None else f"{p['cpu_s']:.1f} s ({p['cpu_pct_of_core']:.0f}%)"


def _storm_rows(pair: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name in ("bare", "tidemark", "tidemark_processes"):
        x = pair.get(name)
        if not x:
            continue
        label = f"tidemark --processes {x['processes']}" if "processes" in x else name
        rows.append([label, _f(x["connections"]), _f(x["established"]), _f(x["failed"]),
                     _f(x["got_first_event"]), _f(x["first_seq_mismatch"]),
                     _f(x["all_first_events_s"], 2), _f(x["all_headers_s"], 2),
                     _f(x["accept_rate_per_s"], 0),
                     _f(x["request_to_first_event_ms"].get("p50_ms")),
                     _f(x["request_to_first_event_ms"].get("p99_ms")),
                     _cpu(x, "server"), f"{_f(x['server_rss_mb_held'])} MB", _cpu(x, "kafka"),
                     f"{x['client_cpu_s']:.1f} s ({_f(x['client_cpu_pct_of_core'], 0)}%)",
                     _f(x["client_processes"]), f"{_f(x.get('other_processes_cpu_s'))} s"])
    return rows


_HEAD = ["server", "connections", "connected", "failed", "got 1st event", "wrong 1st seq",
         "all 1st events (s)", "all headers (s)", "accept rate conn/s",
         "request→1st event p50 ms", "p99 ms", "server CPU", "server RSS held",
         "broker CPU", "clients CPU", "client procs", "other procs CPU"]


def render(sc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    st = sc.get("storm", {})
    if st:
        setup = st.get("setup", {})
        lines += [f"### Reconnect storm ({setup.get('what', '')})", ""]
        if st.get("error"):
            lines += [f"**error:** `{st['error'][-300:]}`", ""]
        if setup.get("short_profile_note"):
            lines += [f"*{setup['short_profile_note']}*", ""]
        for key, title in (("resume_storm", "All at once, each with its own Last-Event-ID"),
                           ("fixed_rate", f"One quiet stream, {_f(setup.get('rate_per_s'))} "
                            "connections/s")):
            pair = st.get(key)
            if not pair:
                continue
            lines += [f"{title}:", ""]
            lines += _table(_HEAD, _storm_rows(pair))
            lines.append("")
            for rk in ("ratio", "ratio_processes"):
                r = pair.get(rk)
                if r:
                    lines += [f"{r['definition'].split(',')[0]}: accept rate "
                              f"**{_f(r.get('accept_rate'), 2)}**, time to all first events "
                              f"{_f(r.get('all_first_events_s'), 2)}, server CPU "
                              f"{_f(r.get('server_cpu_s'), 2)}.", ""]
        prof = st.get("resume_storm", {}).get("tidemark", {}).get("profile", {})
        bh = prof.get("before_headers")
        if bh:
            later = ", ".join(f"{k} {v}%" for k, v in bh["handler_later_phases_pct"].items())
            lines += [f"Gateway profile during the storm (py-spy, {bh['samples']} samples, "
                      f"thread busy {_f(100 * (prof.get('busy_share_of_thread') or 0), 0)}%): "
                      f"SSE handler before the headers {bh['handler_before_headers_pct']}%; "
                      f"then {later}; outside the handler (accept, HTTP parsing, routing, "
                      f"the loop) {bh['outside_handler_pct']}%.", ""]
            lines += _table(["before the headers (inclusive)", "share of all samples"],
                            [[x["function"].replace("|", "/"), f"{x['pct']}%"]
                             for x in bh["before_headers_inclusive"][:15]])
            lines += [""]
            lines += _table(["outside the handler (innermost non-asyncio frame)", "share"],
                            [[x["function"].replace("|", "/"), f"{x['pct']}%"]
                             for x in bh["outside_handler_top"][:8]])
            lines += [""]
    pr = sc.get("processes", {})
    if pr:
        lines += [f"### Gateway processes ({pr.get('setup', {}).get('what', '')})", ""]
        rows = []
        for run in pr.get("runs", []):
            if run.get("error"):
                rows.append([_f(run["processes"]), "error: " + run["error"][-120:]] + ["-"] * 8)
                continue
            for s in run.get("steps", []):
                lat = s.get("latency_ms", {})
                rows.append([_f(run["processes"]), _f(s["setup"]["target_events_per_s"]),
                             _f(s.get("delivered_events_per_s"), 0), _f(lat.get("p50_ms")),
                             _f(lat.get("p99_ms")), _cpu(s, "gateway"),
                             _f(s.get("gateway_cpu_us_per_event")), _cpu(s, "kafka"),
                             _cpu(s, "publisher"), _cpu(s, "clients"),
                             f"{_f(s.get('window', {}).get('other_processes_cpu_s'))} s"])
        lines += _table(["processes", "target ev/s", "delivered ev/s", "p50 ms", "p99 ms",
                         "gateway CPU (all processes)", "gateway µs/event", "broker CPU",
                         "publisher CPU", "clients CPU", "other procs CPU"], rows)
        hrows = []
        for run in pr.get("runs", []):
            h = run.get("hold")
            if not h:
                continue
            spread = ", ".join(_f(p["fds"]) for p in h.get("per_process", []))
            hrows.append([_f(run["processes"]), f"{_f(h.get('held'))} / {_f(h.get('target'))}",
                          _f(h.get("failed")), f"{_f(h.get('rss_mb'))} MB",
                          f"{_f(h.get('rss_per_connection_kb'))} KB", spread,
                          _f(h.get("setup_s"))])
        if hrows:
            lines += ["", "Connections held (a fresh gateway, idle connections):", ""]
            lines += _table(["processes", "held / target", "failed", "gateway RSS (all)",
                             "RSS/conn (minus idle)", "open fds per process", "setup s"],
                            hrows)
        lines.append("")
    return lines
