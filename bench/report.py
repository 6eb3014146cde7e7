"""The Markdown tables that ``bench.run`` prints from a results dict."""

from __future__ import annotations

from typing import Any

from bench import (
    report_storm,
    report_tenants,
    scn_batch,
    scn_cache,
    scn_compression,
    scn_content,
    scn_durable,
    scn_priority,
    scn_warmup,
)
from bench.markdown import fmt as _f
from bench.markdown import table as _table


def _ms(h: dict[str, Any] | None, key: str) -> str:
    if not h or not h.get("count"):
        return "-"
    return _f(h.get(key), 1 if (h.get(key) or 0) >= 10 else 2)


def _cpu(win: dict[str, Any], name: str) -> str:
    p = win.get("processes", {}).get(name)
    return "-" if p is None else f"{p['cpu_pct_of_core']:.0f}%"


def _error(section: dict[str, Any]) -> list[str]:
    return [f"**error:** `{section['error'][-300:]}`", ""] if section.get("error") else []


def render(res: dict[str, Any]) -> str:
    meta = res.get("meta", {})
    sc = res.get("scenarios", {})
    lines = [f"## Tidemark benchmark — {meta.get('profile')} profile, {meta.get('date')}", "",
             f"Machine: {meta.get('cores')} cores, {meta.get('memory_gib')} GiB, shared by the "
             "Kafka broker, the gateway, the publisher(s) and the client processes. "
             f"Client: {meta.get('client')}. {meta.get('stack')}. CPU is % of one core over the"
             " measured window.", ""]

    c = sc.get("connections", {})
    if c:
        lines += ["### 1. Concurrent connections (one gateway process, one idle stream per "
                  f"connection, `: ping` every {c.get('setup', {}).get('heartbeat_s')} s)", ""]
        lines += _error(c)
        idle = c.get("gateway_idle", {})
        rows = []
        for s in c.get("steps", []):
            w = s.get("window", {})
            rows.append([_f(s["connections_attempted"]), _f(s.get("connections_held")),
                         _f(s.get("connections_failed")), f"{_f(s.get('gateway_rss_mb'))} MB",
                         f"{_f(s.get('rss_per_connection_kb'))} KB",
                         f"{_f(s.get('heartbeats_in_hold'))} "
                         f"(≥ {_f(s.get('heartbeats_min_expected'))})",
                         _ms(s.get("connect_to_first_event_ms"), "p99_ms"),
                         _cpu(w, "gateway"), _cpu(w, "clients"), _f(s.get("client_processes"))])
        lines += _table(["connections", "held", "failed", "gateway RSS", "RSS/conn (minus idle)",
                         "pings in hold (min expected)", "connect→1st event p99 ms",
                         "gateway CPU (idle hold)", "clients CPU", "client procs"], rows)
        lines += ["", f"Idle gateway ({_f(idle.get('index_streams'))} streams created before it "
                  "started): "
                  f"{_f(idle.get('rss_mb'))} MB. Highest held: **{_f(c.get('highest_held'))}**.",
                  ""]

    d = sc.get("delivery", {})
    if d:
        st = d.get("setup", {})
        lines += [f"### 2. Delivery latency ({_f(st.get('streams'))} streams, one connection "
                  f"each, {st.get('payload_bytes')} B records, {st.get('measure_s')} s windows)",
                  ""]
        lines += _error(d)
        rows = []
        for s in d.get("steps", []):
            w, lat = s.get("window", {}), s.get("latency_ms", {})
            rows.append([_f(s["setup"]["target_events_per_s"]),
                         _f(s.get("published_events_per_s"), 0),
                         _f(s.get("delivered_events_per_s"), 0), _ms(lat, "p50_ms"),
                         _ms(lat, "p95_ms"), _ms(lat, "p99_ms"), _ms(lat, "max_ms"),
                         _cpu(w, "gateway"), _f(s.get("gateway_cpu_us_per_event")),
                         _cpu(w, "kafka"), _cpu(w, "publisher"), _cpu(w, "clients"),
                         f"{_f(w.get('other_processes_cpu_s'))} s",
                         _f((s.get("gateway_gc") or {}).get("longest_pause_ms"))])
        lines += _table(["target ev/s", "published ev/s", "delivered ev/s", "p50 ms", "p95 ms",
                         "p99 ms", "max ms", "gateway CPU", "gateway µs/event", "broker CPU",
                         "publisher CPU", "clients CPU", "other procs CPU",
                         "gateway longest GC pause ms"], rows)
        lines += ["", "Highest total events/s delivered by one gateway process with p99 < "
                  f"100 ms: **{_f(d.get('highest_events_per_s_p99_under_100ms'), 0)}** "
                  f"(step {_f(d.get('highest_step_target'))} ev/s).", ""]
        prof = d.get("profile")
        if prof:
            lines += _profile(prof)

    f = sc.get("first_event", {})
    if f:
        lines += ["### 3. First-event latency (POST /v1/streams external, then GET events at "
                  "once)", ""]
        lines += _error(f)
        rows = [[_f(r["concurrency"]), _f(r["streams"]), _f(r["ok"]), _f(r["failed"]),
                 _ms(r["post_to_first_event_ms"], "p50_ms"),
                 _ms(r["post_to_first_event_ms"], "p99_ms"),
                 _ms(r["post_ms"], "p50_ms"), _ms(r["get_to_first_event_ms"], "p50_ms"),
                 _cpu(r.get("window", {}), "gateway")]
                for r in f.get("runs", [])]
        lines += _table(["concurrency", "streams", "ok", "failed", "POST→1st event p50 ms",
                         "p99 ms", "POST alone p50 ms", "GET→1st event p50 ms", "gateway CPU"],
                        rows)
        lines.append("")

    r = sc.get("resume", {})
    if r:
        lines += [f"### 4. Resume latency ({r.get('setup', {}).get('what', '')})", ""]
        lines += _error(r)
        rows = [[x["source"], _f(x["concurrency"]), _f(x["resumes"]), _f(x["ok"]),
                 _f(x["first_seq_mismatch"]),
                 _ms(x["reconnect_to_first_missed_event_ms"], "p50_ms"),
                 _ms(x["reconnect_to_first_missed_event_ms"], "p99_ms"),
                 ", ".join(f"{k} {int(v)}" for k, v in
                           x["backlog_events_served_by_source"].items())]
                for x in r.get("runs", [])]
        lines += _table(["served from", "concurrency", "resumes", "ok", "wrong first event",
                         "p50 ms", "p99 ms", "backlog events served (gateway metric)"], rows)
        lines.append("")

    s = sc.get("side_by_side", {})
    if s:
        st = s.get("setup", {})
        lines += [f"### 5. Side by side ({_f(st.get('streams'))} streams, "
                  f"{_f(st.get('events_per_s'))} ev/s, {st.get('payload_bytes')} B; then idle "
                  f"connections added up to {_f(st.get('hold_target'))})", ""]
        lines += _error(s)
        rows = []
        for name, t in s.get("targets", {}).items():
            dl = t.get("delivery", {})
            h = t.get("hold", {})
            if "delivery" not in t:
                rows.append([name, "error: " + str(t.get("error", "?"))[-160:].replace("|", "/")]
                            + ["-"] * 9)
                continue
            lat = dl.get("latency_ms", {})
            rows.append([name, _f(t.get("connections")), _f(dl.get("delivered_events_per_s"), 0),
                         _ms(lat, "p50_ms"), _ms(lat, "p99_ms"),
                         _f(dl.get("gateway_cpu_us_per_event")),
                         _f(dl.get("broker_cpu_us_per_event")),
                         f"{_f(t.get('rss_per_connection_kb'))} KB",
                         _f(t.get("fds_per_connection"), 2),
                         f"{_f(h.get('held'))} / {_f(h.get('target'))}"
                         + (" (err)" if h.get("error") or h.get("dial_error") else ""),
                         f"{_f(h.get('rss_per_connection_kb'))} KB"])
        lines += _table(["target", "connections", "delivered ev/s", "p50 ms", "p99 ms",
                         "gateway CPU µs/event", "broker CPU µs/event", "RSS/conn",
                         "fds/conn", "held / target", "RSS/conn at hold"], rows)
        ratios = s.get("ratios", {})
        rrows = [[k, *(_f(v.get(x), 2) for x in ("held", "gateway_cpu_us_per_event",
                                                  "broker_cpu_us_per_event", "p99_ms",
                                                  "rss_per_connection_kb"))]
                 for k, v in ratios.items() if isinstance(v, dict)]
        if rrows:
            lines += ["", "Ratios, other / Tidemark (shared topic):", ""]
            lines += _table(["target", "connections held", "gateway CPU per event",
                             "broker CPU per event", "p99 latency", "RSS per connection"], rrows)
        lines.append("")
    w = sc.get("worker_path", {})
    if w:
        lines += _worker_path(w)
    lines += report_storm.render(sc)
    h = sc.get("history", {})
    if h:
        lines += _history(h)
    if sc.get("priority"):
        lines += scn_priority.render(sc["priority"])
    if sc.get("cache"):
        lines += scn_cache.render(sc["cache"])
    if sc.get("warmup"):
        lines += scn_warmup.render(sc["warmup"])
    if sc.get("batch"):
        lines += scn_batch.render(sc["batch"])
    lines += report_tenants.render(sc)
    lines += scn_compression.render(sc)
    lines += scn_durable.render(sc)
    lines += scn_content.render(sc)
    lines.append(f"Wall time: {_f(meta.get('wall_s'))} s.")
    return "\n".join(lines)


def _req(check: dict[str, Any], kind: str) -> str:
    q = (check.get("request_ms") or {}).get(kind) or {}
    return f"{_f(q.get('p50'))} / {_f(q.get('p99'))}" if q.get("p50") is not None else "-"


def _history(h: dict[str, Any]) -> list[str]:
    st = h.get("setup", {})
    tg = st.get("targets", {})
    lines = ["### 6. History (finished streams accumulate in one namespace; gateways A and "
             "A-notail run throughout, a new gateway B starts after each step)", ""]
    lines += _error(h)
    a, n = h.get("gateway_a", {}), h.get("gateway_a_notail", {})
    if a:
        lines += [f"Gateway A at start (empty namespace, creates its topics): ready "
                  f"{_f(a.get('ready_s'), 2)} s after its process started, RSS "
                  f"{_f(a.get('rss_mb'))} MB; A-notail (`TIDEMARK_TAIL_BYTES=1`): ready "
                  f"{_f(n.get('ready_s'), 2)} s, RSS {_f(n.get('rss_mb'))} MB.", ""]
    wrows = []
    for s in h.get("steps", []):
        for w in s.get("writes", []):
            win = w.get("window", {})
            wrows.append([_f(s.get("streams")), w["path"], _f(w["streams"]),
                          _f(w.get("writer_processes")), _f(w.get("concurrency_per_process")),
                          _f(w.get("streams_per_s"), 0),
                          ", ".join(_f(x, 1) for x in w.get("writer_cpu_s", [])),
                          _cpu(win, "writers"), _cpu(win, "kafka"), _cpu(win, "gateway_a"),
                          _cpu(win, "gateway_anotail"),
                          f"{_f(win.get('other_processes_cpu_s'))} s of "
                          f"{_f(win.get('seconds'))} s",
                          _f(((w.get("finish_ms") or [{}])[0] or {}).get("p50"), 1)])
    if wrows:
        lines += _table(["after step", "write path", "streams", "writer procs",
                         "in flight / proc", "streams/s", "writer CPU s", "writers CPU",
                         "broker CPU", "gateway A CPU", "A-notail CPU", "other procs CPU",
                         "finish p50 ms"], wrows)
        lines.append("")
    rows = []
    for s in h.get("steps", []):
        ga, gn, gb = s.get("gateway_a", {}), s.get("gateway_a_notail", {}), s.get("gateway_b", {})
        ch = s.get("checks", {})
        ca, cb = ch.get("a", {}), ch.get("b", {})
        rows.append([_f(s.get("streams")), f"{_f(ga.get('growth_mb'))} MB",
                     f"{_f(gn.get('growth_mb'))} MB", _f(gn.get("growth_bytes_per_stream"), 0),
                     f"{_f(gb.get('ready_s'), 2)} s", _f(gb.get("ready_ratio_to_ref"), 2),
                     _f(gb.get("cpu_s_to_ready"), 2), f"{_f(gb.get('rss_mb_settled'))} MB",
                     f"{_f(gb.get('rss_growth_mb_over_ref'))} MB",
                     _f(sum((s.get("topic_records") or {}).values())),
                     f"{_f(ca.get('passed'))} / {_f(ca.get('sample'))}" if ca else "-",
                     f"{_f(cb.get('passed'))} / {_f(cb.get('sample'))}" if cb else "-",
                     _req(ca, "status"), _req(cb, "status"), _req(cb, "replay"),
                     _f((s.get("sdk_open_stream") or {}).get("open_stream_s"), 2)])
    lines += _table(["finished streams", "A RSS growth", "A-notail RSS growth",
                     "A-notail bytes/stream", "B start→ready", "B ready / B at 0",
                     "B CPU s to ready", "B RSS", "B RSS minus B at 0", "records in all topics",
                     "checks via A", "checks via B", "status ms via A p50/p99",
                     "status ms via B p50/p99", "replay ms via B p50/p99",
                     "SDK open_stream s"], rows)
    fit = h.get("fit", {})
    if fit:
        def one(key: str, unit: str) -> str:
            f = fit.get(key) or {}
            return (f"{_f(f.get('at_target'), 2)} {unit} "
                    f"(+{_f(f.get('per_million'), 2)} {unit} per million)") if f else "-"
        lines += ["", f"Linear fit over the steps, at {_f(tg.get('streams'))} streams: A's "
                  f"growth {one('gateway_a_growth_mb', 'MB')}, A-notail's "
                  f"{one('gateway_a_notail_growth_mb', 'MB')} (goal < "
                  f"{_f(tg.get('growth_mb'))} MB); B start→ready "
                  f"{one('gateway_b_ready_s', 's')} (goal < {_f(tg.get('ready_s'))} s); B RSS "
                  f"{one('gateway_b_rss_mb', 'MB')}. A's growth includes its memory tail, "
                  "which is bounded (`TIDEMARK_TAIL_BYTES` per partition), so the line "
                  "overstates it past the point where the tail is full. A check passes when "
                  "the status is completed with a terminal_event_id, the events with "
                  "Last-Event-ID = that id answer 204, and a replay without it gives seq 0 to "
                  "the terminal event once each."]
    lines.append("")
    return lines


def _profile(prof: dict[str, Any]) -> list[str]:
    if prof.get("error"):
        return [f"Profile: error `{prof['error']}`", ""]
    st = prof.get("setup", {})
    lines = [f"Gateway CPU profile (py-spy, {_f(st.get('events_per_s'))} ev/s to "
             f"{_f(st.get('connections'))} connections, {st.get('seconds')} s; thread busy "
             f"{_f(100 * (prof.get('busy_share_of_thread') or 0), 0)}% of the time):", ""]
    pk = ", ".join(f"{x['package']} {x['pct']}%" for x in prof.get("self_by_package", [])[:8])
    lines += [f"Self time by package: {pk}.", ""]
    rows = [[x["function"].replace("|", "/"), f"{x['pct']}%"]
            for x in prof.get("self_top", [])[:10]]
    lines += _table(["top self-time functions", "share"], rows)
    lines.append("")
    return lines


def _worker_path(w: dict[str, Any]) -> list[str]:
    st = w.get("setup", {})
    rate = _f(st.get("tokens_per_second_per_stream"))
    lines = [f"### 6. Generated-token path (demo streams x {rate} tokens/s, "
             f"{st.get('workers')} workers, 1 gateway, latency from the envelope's "
             f"`ts` to receipt; {st.get('worker_settings')})", ""]
    lines += _error(w)
    by_n: dict[Any, list[dict[str, Any]]] = {}
    for row in [*w.get("steps", []), *w.get("reference", [])]:
        by_n.setdefault(row.get("setup", {}).get("streams"), []).append(row)
    rows = []
    for n in sorted(k for k in by_n if k is not None):
        for x in by_n[n]:
            su, win = x.get("setup", {}), x.get("window", {})
            if x.get("error"):
                rows.append([_f(n), x.get("path", "?"), "error: " + str(x["error"])[-120:]
                             .replace("|", "/").replace("\n", " ")] + ["-"] * 14)
                continue
            lat, comp = x.get("latency_ms", {}), x.get("completion")
            workers = x.get("workers", [])
            per_ev = x.get("cpu_us_per_event_written", {})
            done = "-" if comp is None else (
                "yes" if comp["all_delivered"] else
                f"no ({_f(comp['results_received'])}/{_f(comp['connections'])})")
            rows.append([
                _f(n), x.get("path", "?"), _f(su.get("followers_per_stream")),
                _f(x.get("expected_tokens_per_s"), 0), _f(x.get("delivered_tokens_per_s"), 0),
                _ms(lat, "p50_ms"), _ms(lat, "p95_ms"), _ms(lat, "p99_ms"), _ms(lat, "max_ms"),
                done, _f(x.get("transactions_per_s"), 0) if workers else "-",
                " / ".join(f"{wk['cpu_pct_of_core']:.0f}% ({_f(wk['cpu_us_per_event'])} µs)"
                           for wk in workers) or "-",
                f"{_cpu(win, 'gateway')} ({_f(per_ev.get('gateway'))} µs)",
                f"{_cpu(win, 'kafka')} ({_f(per_ev.get('kafka'))} µs)",
                f"{_cpu(win, 'clients')} ({_f(per_ev.get('clients'))} µs)",
                _cpu(win, "publisher") if "publisher" in win.get("processes", {}) else "-",
                f"{_f(win.get('other_processes_cpu_s'))} s"])
    lines += _table(["streams", "path", "followers", "expected tokens/s", "delivered tokens/s",
                     "p50 ms", "p95 ms", "p99 ms", "max ms", "all delivered", "txn/s",
                     "workers CPU (µs/event)", "gateway CPU (µs/event)",
                     "broker CPU (µs/event)", "clients CPU (µs/event)", "publisher CPU",
                     "other procs CPU"], rows)
    lines += ["", "µs/event: the process's CPU in the window per event written (workers: per "
              "event each wrote). \"hub only\" rows are the reference (non-transactional "
              "publisher straight to Kafka): not the user path.",
              f"Most concurrent generated streams with p99 < 100 ms and all delivered: "
              f"**{_f(w.get('most_streams_p99_under_100ms_all_delivered'))}**.", ""]
    return lines
