// The /dashboard page: follows GET /v1/analytics/live and draws the analytics document
// (docs/api.md) with uPlot. No inline script (the page's CSP is script-src 'self').
//
// The admin token comes from the URL fragment (#token=..., never sent to a server; removed
// from the address bar at once) or the paste field. It is kept in sessionStorage and set as
// the tidemark_token cookie with Path=/v1/analytics and SameSite=Strict, so the browser sends
// it to the analytics routes only, and never in a URL (EventSource cannot set headers; a
// query parameter would end up in proxy logs).
"use strict";

(function () {
  const STORE_KEY = "tidemark.dashboard.token";
  const COOKIE = "tidemark_token";
  const COOKIE_PATH = "/v1/analytics";
  // Points kept per history chart (one per live document, every few seconds).
  const HISTORY_MAX = 240;
  const RETRY_MS = 5000;
  const COLORS = ["#1f5fbf", "#1a7a43", "#b42318", "#8a5a00", "#6b3fa0", "#0e6e7a",
                  "#a3367a", "#4f5b6d"];
  const TOKEN_RE = /^[A-Za-z0-9._~+/=-]+$/;

  const $ = (id) => document.getElementById(id);
  const charts = new Map();  // name -> {plot, labels}
  let source = null;         // the EventSource
  let retryTimer = null;
  let history = [];          // [{t, doc-window}] of the chosen window, newest last
  let lastDoc = null;
  let generation = 0;        // of connect(): a newer call makes an older one give up

  // --- formatting (the e2e test reads these texts) ---------------------------------------
  const dash = "\u2014";
  const count = (n) => (n === null || n === undefined ? dash : String(n));
  const rate = (r) => (r === null || r === undefined ? dash : (r * 100).toFixed(1) + " %");
  // Milliseconds with three significant digits or so (a memory resume takes a few µs).
  const ms = (v) => (v === null || v === undefined ? dash
    : v.toFixed(v >= 100 ? 0 : v >= 1 ? 1 : 2) + " ms");
  const clock = (t) => (t === null || t === undefined ? dash
    : new Date(t).toISOString().slice(11, 19) + " UTC");

  // --- the token ---------------------------------------------------------------------------
  function tokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = params.get("token");
    if (token !== null) {
      dropFragment();
    }
    return token;
  }

  function dropFragment() {
    window.history.replaceState(null, "", location.pathname + location.search);
  }

  function setCookie(token) {
    const secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = COOKIE + "=" + token + "; Path=" + COOKIE_PATH +
      "; SameSite=Strict" + secure;
  }

  function clearCookie() {
    document.cookie = COOKIE + "=; Path=" + COOKIE_PATH + "; Max-Age=0; SameSite=Strict";
  }

  function useToken(token) {
    token = (token || "").trim();
    if (!TOKEN_RE.test(token)) {
      showAuthError("That is not a token: a JWT has only letters, digits and . _ - characters.");
      return false;
    }
    sessionStorage.setItem(STORE_KEY, token);
    setCookie(token);
    return true;
  }

  function forget() {
    sessionStorage.removeItem(STORE_KEY);
    clearCookie();
    stop();
    $("board").hidden = true;
    $("disconnect").hidden = true;
    $("auth").hidden = false;
    setStatus("idle", "Not connected.");
  }

  // --- the connection ----------------------------------------------------------------------
  function windowName() {
    return $("window").value;
  }

  function setStatus(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text;
  }

  function showAuthError(text) {
    $("auth-error-text").textContent = text;
    $("auth-error").hidden = false;
    $("auth").hidden = false;
    $("board").hidden = true;
    setStatus("error", "Not connected: " + text);
  }

  function stop() {
    if (source !== null) {
      source.close();
      source = null;
    }
    if (retryTimer !== null) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
  }

  function retryLater(why) {
    stop();
    setStatus("error", why + " Retrying in " + RETRY_MS / 1000 + " s.");
    retryTimer = setTimeout(connect, RETRY_MS);
  }

  // A GET /v1/analytics first: an EventSource cannot see a 401 or 403 (it only closes),
  // this request can, and its answer fills the page at once.
  async function connect() {
    stop();
    const gen = ++generation;
    setStatus("connecting", "Connecting\u2026");
    let query = "?window=" + encodeURIComponent(windowName());
    // An operator's /dashboard?tenant=<t> (or *) asks for that tenant's figures.
    const tenant = new URLSearchParams(location.search).get("tenant");
    if (tenant !== null && tenant !== "") {
      query += "&tenant=" + encodeURIComponent(tenant);
    }
    let resp;
    try {
      resp = await fetch("/v1/analytics" + query,
                         {credentials: "same-origin", cache: "no-store"});
    } catch (err) {
      if (gen === generation) {
        retryLater("The gateway did not answer.");
      }
      return;
    }
    if (gen !== generation) {
      return;  // the window changed, or the token, meanwhile
    }
    if (resp.status === 401 || resp.status === 403) {
      const detail = await problemDetail(resp);
      forgetTokenOnly();
      showAuthError((resp.status === 401
        ? "The gateway refused the token (401): "
        : "The token may not read analytics (403, it needs the admin scope): ") + detail);
      return;
    }
    if (!resp.ok) {
      retryLater("GET /v1/analytics answered " + resp.status + ": " +
                 await problemDetail(resp) + ".");
      return;
    }
    $("auth-error").hidden = true;
    $("auth").hidden = true;
    $("disconnect").hidden = false;
    const doc = await resp.json();
    if (gen !== generation) {
      return;
    }
    render(doc);
    source = new EventSource("/v1/analytics/live" + query);
    source.addEventListener("analytics", (e) => render(JSON.parse(e.data)));
    source.addEventListener("open", () => {
      // Responses of the feed end after TIDEMARK_MAX_RESPONSE_SECONDS; the browser opens
      // the next one by itself. Counted, for whoever wonders whether it did.
      const el = $("connection");
      el.dataset.opens = String(Number(el.dataset.opens || 0) + 1);
      liveStatus();
    });
    source.onerror = () => {
      // A plain Event on connection loss; the browser reconnects by itself unless the
      // answer was not an event stream (then readyState is CLOSED): ask again to see why.
      if (source !== null && source.readyState === EventSource.CLOSED) {
        stop();
        setStatus("connecting", "The live feed closed; asking again\u2026");
        retryTimer = setTimeout(connect, 1000);
      } else {
        setStatus("connecting", "Connection lost; reconnecting\u2026");
      }
    };
  }

  function forgetTokenOnly() {
    sessionStorage.removeItem(STORE_KEY);
    clearCookie();
  }

  async function problemDetail(resp) {
    try {
      const body = await resp.json();
      return String(body.detail || body.title || resp.statusText);
    } catch (err) {
      return resp.statusText || "no detail";
    }
  }

  function liveStatus() {
    if (lastDoc !== null) {
      setStatus("live", "Live \u00b7 updated " + clock(lastDoc.generated_at));
    }
  }

  // --- rendering ---------------------------------------------------------------------------
  function render(doc) {
    const name = windowName();
    const w = doc.windows[name] || doc.windows[Object.keys(doc.windows)[0]];
    if (!w) {
      return;
    }
    lastDoc = doc;
    $("board").hidden = false;
    $("board").dataset.generatedAt = String(doc.generated_at);
    liveStatus();
    $("scope").textContent = "(tenant " + (doc.tenant === "*" ? "all" : doc.tenant) +
      ", last " + name + ")";

    const s = w.streams;
    const fe = w.first_event_ms;
    $("fig-created").textContent = count(s.created);
    $("fig-completed").textContent = count(s.completed);
    $("fig-failed").textContent = count(s.failed);
    $("fig-cancelled").textContent = count(s.cancelled);
    $("fig-success-rate").textContent = rate(s.success_rate);
    $("fig-failure-rate").textContent = rate(s.failure_rate);
    $("fig-first-p50").textContent = ms(fe.p50);
    $("fig-first-p99").textContent = ms(fe.p99);
    $("fig-active-streams").textContent = count(doc.active.streams);
    $("fig-connections").textContent = count(doc.active.connections);
    $("fig-cutoffs").textContent = count(w.cutoffs);
    $("fig-as-of").textContent = clock(doc.as_of);
    // How far the newest folded record trails the document: a few intervals when all is well.
    $("fig-data-age").textContent = doc.as_of === null || doc.as_of === undefined ? dash
      : ((doc.generated_at - doc.as_of) / 1000).toFixed(1) + " s";

    history.push({t: doc.generated_at, w: w});
    if (history.length > HISTORY_MAX) {
      history.splice(0, history.length - HISTORY_MAX);
    }
    drawSeries(w.series || []);
    drawHistory();
    fillResume(w.resume_ms || {});
    fillVariants(w.variants || {});
    fillUsage(w.usage || {tenants: [], users: []});
    fillRecent(doc.recent || {streams: [], errors: []});
  }

  function drawSeries(series) {
    const x = series.map((b) => b.t / 1000);
    const col = (k) => series.map((b) => (b[k] === undefined ? null : b[k]));
    plot("streams", ["created", "completed", "failed", "cancelled"],
         [x, col("created"), col("completed"), col("failed"), col("cancelled")]);
    const success = series.map((b) => {
      const ended = b.completed + b.failed + b.cancelled;
      return ended > 0 ? (100 * b.completed) / ended : null;
    });
    plot("success", ["success rate"], [x, success]);
    plot("first", ["p50", "p99"], [x, col("first_event_p50"), col("first_event_p99")]);
    plot("active", ["active streams", "connections"],
         [x, col("active_streams"), col("connections")]);
  }

  function drawHistory() {
    const x = history.map((h) => h.t / 1000);
    const sources = new Set();
    const variants = new Set();
    for (const h of history) {
      Object.keys(h.w.resume_ms || {}).forEach((k) => sources.add(k));
      for (const [exp, vs] of Object.entries(h.w.variants || {})) {
        Object.keys(vs).forEach((v) => variants.add(exp + "=" + v));
      }
    }
    const srcs = [...sources].sort();
    const labels = [];
    const data = [x];
    for (const src of srcs) {
      for (const p of ["p50", "p99"]) {
        labels.push(src + " " + p);
        data.push(history.map((h) => {
          const r = (h.w.resume_ms || {})[src];
          return r && r[p] !== undefined ? r[p] : null;
        }));
      }
    }
    plot("resume", labels, data);
    plot("cutoffs", ["cut-offs"], [x, history.map((h) => h.w.cutoffs)]);
    const keys = [...variants].sort();
    plot("variants", keys, [x, ...keys.map((key) => history.map((h) => {
      const [exp, v] = key.split("=");
      const fig = ((h.w.variants || {})[exp] || {})[v];
      const r = fig && fig.streams ? fig.streams.success_rate : null;
      return r === null || r === undefined ? null : 100 * r;
    }))]);
  }

  function plot(name, labels, data) {
    const el = $("chart-" + name);
    const key = labels.join("\u0000");
    let chart = charts.get(name);
    if (chart === undefined || chart.key !== key) {
      if (chart !== undefined) {
        chart.plot.destroy();
      }
      const fg = getComputedStyle(document.body).color;
      const opts = {
        width: Math.max(el.clientWidth, 300),
        height: 200,
        // A little room at both ends, so that the newest bucket's point is whole.
        scales: {x: {time: true, range: (u, min, max) => {
          const pad = Math.max((max - min) * 0.02, 1);
          return [min - pad, max + pad];
        }}},
        // The axes in UTC, as every time written on the page.
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
        legend: {live: false},
        series: [{}, ...labels.map((label, i) => ({
          label: label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
          points: {show: true, size: 6},
        }))],
        axes: [{stroke: fg, grid: {stroke: "#e4e7ec"}},
               {stroke: fg, grid: {stroke: "#e4e7ec"}, size: 50}],
      };
      chart = {plot: new uPlot(opts, data, el), key: key};
      charts.set(name, chart);
    } else {
      chart.plot.setData(data);
    }
    el.dataset.series = labels.join(",");
    el.dataset.points = String(data[0].length);
    describe(el, labels, data);
  }

  // The chart in words, for screen readers: each series' newest value.
  function describe(el, labels, data) {
    let desc = document.getElementById(el.id + "-desc");
    if (desc === null) {
      desc = document.createElement("p");
      desc.id = el.id + "-desc";
      desc.className = "sr-only";
      el.after(desc);
      el.setAttribute("aria-describedby", desc.id);
    }
    if (labels.length === 0 || data[0].length === 0) {
      desc.textContent = "No data yet.";
      return;
    }
    const newest = labels.map((label, i) => {
      const values = data[i + 1].filter((v) => v !== null && v !== undefined);
      const v = values.length ? values[values.length - 1] : null;
      return label + " " + (v === null ? "none" : Number(v.toFixed(2)));
    });
    desc.textContent = data[0].length + " points; newest: " + newest.join(", ") + ".";
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      const [text, cls, status] = Array.isArray(cell) ? cell : [cell];
      td.textContent = text;
      if (cls) {
        td.className = cls;
      }
      if (status) {
        td.dataset.status = status;
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function fill(tableId, rows, columns, emptyText) {
    const body = $(tableId).tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = columns;
      td.className = "empty";
      td.textContent = emptyText;
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    rows.forEach((r) => body.appendChild(row(r)));
  }

  function fillResume(resume) {
    const rows = Object.keys(resume).sort().map((src) => {
      const r = resume[src];
      return [src, count(r.count), ms(r.p50), ms(r.p90), ms(r.p99)];
    });
    fill("resume-table", rows, 5, "No resumes in the window.");
  }

  function fillVariants(variants) {
    const rows = [];
    for (const exp of Object.keys(variants).sort()) {
      for (const v of Object.keys(variants[exp]).sort()) {
        const f = variants[exp][v];
        const s = f.streams || {};
        const fe = f.first_event_ms || {};
        rows.push([exp, v, count(s.created), rate(s.success_rate), rate(s.failure_rate),
                   ms(fe.p50), ms(fe.p99), count(f.cutoffs)]);
      }
    }
    fill("variants-table", rows, 8, "No streams with A/B variants in the window.");
  }

  function fillUsage(usage) {
    fill("tenants-table", (usage.tenants || []).map((u) =>
      [u.tenant, count(u.streams), count(u.events)]), 3, "No streams in the window.");
    fill("users-table", (usage.users || []).map((u) =>
      [u.tenant, u.user, count(u.streams), count(u.events)]), 4, "No streams in the window.");
  }

  function fillRecent(recent) {
    fill("recent-streams", (recent.streams || []).map((s) => [
      [s.stream, "id"], [s.status, "status", s.status], s.tenant, s.owner || dash,
      s.generator, clock(s.created_at), clock(s.updated_at),
      Object.entries(s.experiments || {}).map(([k, v]) => k + "=" + v).join(", ") || dash,
    ]), 8, "No streams yet.");
    fill("recent-errors", (recent.errors || []).map((e) => [
      clock(e.ts), [e.stream, "id"], e.tenant, e.code, e.message,
      e.retryable ? "yes" : "no",
    ]), 6, "No errors.");
  }

  function resize() {
    for (const [name, chart] of charts) {
      const el = $("chart-" + name);
      chart.plot.setSize({width: Math.max(el.clientWidth, 300), height: 200});
    }
  }

  // --- start -------------------------------------------------------------------------------
  function start() {
    $("auth-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const field = $("token");
      if (useToken(field.value)) {
        field.value = "";
        connect();
      }
    });
    $("disconnect").addEventListener("click", forget);
    $("window").addEventListener("change", () => {
      history = [];
      if (sessionStorage.getItem(STORE_KEY) !== null) {
        connect();
      }
    });
    window.addEventListener("resize", resize);
    const given = tokenFromFragment();
    const token = given !== null ? given : sessionStorage.getItem(STORE_KEY);
    if (token !== null && useToken(token)) {
      connect();
    }
  }

  start();
})();
