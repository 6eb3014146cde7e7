var __defProp = Object.defineProperty;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

// src/errors.ts
var TidemarkError = class extends Error {
  constructor(message, options) {
    super(message, options);
    /** Whether the same request may succeed later (the SDK retries these itself). */
    __publicField(this, "retriable", false);
    this.name = new.target.name;
  }
};
var ProblemError = class extends TidemarkError {
  constructor(status, detail, problem = {}) {
    super(`${status}: ${detail}`);
    __publicField(this, "status");
    __publicField(this, "detail");
    __publicField(this, "problem");
    __publicField(this, "retriable");
    this.status = status;
    this.detail = detail;
    this.problem = problem;
    this.retriable = status === 429 || status === 503;
  }
};
var BadRequestError = class extends ProblemError {
};
var UnauthorizedError = class extends ProblemError {
};
var ForbiddenError = class extends ProblemError {
};
var NotFoundError = class extends ProblemError {
};
var GoneError = class extends ProblemError {
};
var BY_STATUS = {
  400: BadRequestError,
  401: UnauthorizedError,
  403: ForbiddenError,
  404: NotFoundError,
  410: GoneError
};
function problemError(status, detail, problem = {}) {
  const Cls = BY_STATUS[status] ?? ProblemError;
  return new Cls(status, detail || `HTTP ${status}`, problem);
}
var RetriesExhaustedError = class extends TidemarkError {
  constructor(attempts, lastReason, cause) {
    super(`gave up after ${attempts} attempts without progress: ${lastReason}`, { cause });
    __publicField(this, "attempts");
    __publicField(this, "lastReason");
    this.attempts = attempts;
    this.lastReason = lastReason;
  }
};
var ProtocolError = class extends TidemarkError {
};
async function problemOf(res) {
  let problem = {};
  try {
    const text = await res.text();
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed === "object") problem = parsed;
  } catch {
  }
  const detail = typeof problem.detail === "string" ? problem.detail : typeof problem.title === "string" ? problem.title : `HTTP ${res.status} ${res.statusText}`;
  return problemError(res.status, detail, problem);
}

// src/sse.ts
var SseParser = class {
  /** Bounded: a line longer than this is a protocol error (a gateway line is far shorter). */
  constructor(maxLine = 4 * 1024 * 1024) {
    this.maxLine = maxLine;
    __publicField(this, "buffer", "");
    __publicField(this, "data", []);
    __publicField(this, "event", "");
    /** The event's own id: an event without an `id:` line (a reset notice) has none. */
    __publicField(this, "id", null);
  }
  push(text) {
    this.buffer += text;
    const out = [];
    let start = 0;
    for (; ; ) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      let end;
      if (cr < 0 && lf < 0) break;
      if (cr < 0 || lf >= 0 && lf < cr) end = lf;
      else {
        if (cr === this.buffer.length - 1) break;
        end = cr;
      }
      const line = this.buffer.slice(start, end);
      start = end + (this.buffer[end] === "\r" && this.buffer[end + 1] === "\n" ? 2 : 1);
      const msg = this.line(line);
      if (msg) out.push(msg);
    }
    this.buffer = this.buffer.slice(start);
    if (this.buffer.length > this.maxLine) throw new Error("an SSE line is too long");
    return out;
  }
  line(line) {
    if (line === "") {
      const msg = this.data.length ? { id: this.id, event: this.event || "message", data: this.data.join("\n") } : null;
      this.data = [];
      this.event = "";
      this.id = null;
      return msg;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    return null;
  }
};

// src/transports.ts
var TRANSPORT_NAMES = ["ws", "sse", "poll"];
var TERMINAL = /* @__PURE__ */ new Set(["result", "error", "cancelled"]);
function urlOf(a, segment, extra = {}) {
  const url = new URL(segment, a.streamUrl);
  for (const [k, v] of Object.entries({ ...a.params, ...extra })) url.searchParams.set(k, v);
  if (a.position !== null) url.searchParams.set("last_event_id", a.position);
  return url;
}
function headers(a, accept) {
  const h = { Accept: accept };
  if (a.token) h.Authorization = `Bearer ${a.token}`;
  return h;
}
function retryAfterMs(value) {
  if (!value) return void 0;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1e3;
  const date = Date.parse(value);
  return Number.isNaN(date) ? void 0 : Math.max(0, date - Date.now());
}
async function refused(res) {
  const error = await problemOf(res);
  if (error.retriable) {
    return { kind: "retry", reason: error.message, afterMs: retryAfterMs(res.headers.get("Retry-After")) };
  }
  if (res.status >= 500 || res.status === 408) return { kind: "retry", reason: error.message };
  return { kind: "fatal", error };
}
var Watchdog = class {
  constructor(ctrl) {
    this.ctrl = ctrl;
    __publicField(this, "fired", null);
    __publicField(this, "timer");
  }
  arm(ms, reason) {
    this.stop();
    this.timer = setTimeout(() => {
      this.fired = reason;
      this.ctrl.abort();
    }, ms);
  }
  stop() {
    if (this.timer !== void 0) clearTimeout(this.timer);
    this.timer = void 0;
  }
};
function linked(signal) {
  const ctrl = new AbortController();
  if (signal.aborted) ctrl.abort();
  else signal.addEventListener("abort", () => ctrl.abort(), { once: true });
  return ctrl;
}
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return void 0;
  }
}
async function* sse(a) {
  const ctrl = linked(a.signal);
  const dog = new Watchdog(ctrl);
  const deadline = `no byte within ${a.options.firstByteTimeoutMs} ms (a proxy that buffers responses?)`;
  dog.arm(a.options.firstByteTimeoutMs, deadline);
  let reader;
  try {
    let res;
    try {
      res = await a.options.fetch(urlOf(a, "events"), {
        headers: headers(a, "text/event-stream"),
        signal: ctrl.signal,
        cache: "no-store"
      });
    } catch (exc) {
      if (dog.fired) return { kind: "unsupported", reason: dog.fired };
      if (a.signal.aborted) throw exc;
      return { kind: "retry", reason: `cannot connect: ${String(exc)}` };
    }
    if (res.status === 204) return { kind: "ended" };
    if (res.status !== 200) return await refused(res);
    if (!(res.headers.get("Content-Type") ?? "").startsWith("text/event-stream") || !res.body) {
      return { kind: "unsupported", reason: `not an event stream: ${res.headers.get("Content-Type")}` };
    }
    reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    let opened = false;
    for (; ; ) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (exc) {
        if (dog.fired === deadline) return { kind: "unsupported", reason: deadline };
        if (dog.fired) return { kind: "retry", reason: dog.fired, now: true };
        if (a.signal.aborted) throw exc;
        return { kind: "retry", reason: `connection lost: ${String(exc)}` };
      }
      if (chunk.done) return { kind: "retry", reason: "the response ended", now: true };
      if (!opened) {
        opened = true;
        yield { kind: "open" };
      }
      dog.arm(a.options.idleTimeoutMs, `no byte for ${a.options.idleTimeoutMs} ms`);
      for (const msg of parser.push(decoder.decode(chunk.value, { stream: true }))) {
        const data = parseJson(msg.data);
        if (data === void 0) return { kind: "fatal", error: new ProtocolError(`not JSON: ${msg.data.slice(0, 80)}`) };
        yield { kind: "item", item: { id: msg.id, event: msg.event, data } };
        if (TERMINAL.has(msg.event) && msg.id !== null) return { kind: "ended" };
      }
    }
  } finally {
    dog.stop();
    ctrl.abort();
    reader?.cancel().catch(() => void 0);
  }
}
async function* ws(a) {
  const Ctor = await a.options.webSocket();
  const url = urlOf(a, "ws", a.token ? { access_token: a.token } : {});
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const queue = [];
  let opened = false;
  let behind = false;
  let closed = null;
  let protocolError = null;
  let wake = null;
  const poke = () => {
    wake?.();
    wake = null;
  };
  const sock = new Ctor(url.toString());
  const timer = setTimeout(() => {
    if (!opened && !closed) {
      closed = { code: 1006, reason: `not open within ${a.options.connectTimeoutMs} ms` };
      sock.close();
      poke();
    }
  }, a.options.connectTimeoutMs);
  const onAbort = () => {
    closed ?? (closed = { code: 1e3, reason: "closed by the client" });
    sock.close(1e3);
    poke();
  };
  a.signal.addEventListener("abort", onAbort, { once: true });
  sock.onopen = () => {
    opened = true;
    poke();
  };
  sock.onmessage = (ev) => {
    if (behind || closed) return;
    const obj = typeof ev.data === "string" ? parseJson(ev.data) : void 0;
    if (!obj || typeof obj !== "object") {
      protocolError = new ProtocolError("a WebSocket frame that is not a JSON object");
    } else if (!("op" in obj)) {
      const { id, event, data } = obj;
      queue.push({ id, event, data });
      if (queue.length > a.options.maxQueuedEvents) {
        behind = true;
        sock.close(1e3);
      }
    }
    poke();
  };
  sock.onclose = (ev) => {
    closed ?? (closed = { code: ev.code, reason: ev.reason });
    poke();
  };
  sock.onerror = () => poke();
  try {
    let announced = false;
    for (; ; ) {
      if (opened && !announced) {
        announced = true;
        yield { kind: "open" };
      }
      while (queue.length) {
        const item = queue.shift();
        yield { kind: "item", item };
        if (TERMINAL.has(item.event) && item.id !== null) return { kind: "ended" };
      }
      if (protocolError) return { kind: "fatal", error: protocolError };
      if (behind) return { kind: "retry", reason: "this client fell behind", now: true };
      if (closed) break;
      await new Promise((resolve) => {
        wake = resolve;
      });
    }
    const { code, reason } = closed;
    if (a.signal.aborted) return { kind: "ended" };
    if (code === 1e3) return { kind: "ended" };
    if (!opened) return { kind: "unsupported", reason: `the upgrade was refused (close ${code} before open)` };
    if (code >= 4e3 && code < 5e3) {
      const status = code - 4e3;
      const error = problemError(status, reason);
      if (error.retriable) return { kind: "retry", reason: error.message };
      return { kind: "fatal", error };
    }
    if (code === 1003 || code === 1009) {
      return { kind: "fatal", error: new ProtocolError(`close ${code}: ${reason}`) };
    }
    const now = code === 1001 || code === 1013;
    return { kind: "retry", reason: `close ${code}${reason ? `: ${reason}` : ""}`, now };
  } finally {
    clearTimeout(timer);
    a.signal.removeEventListener("abort", onAbort);
    sock.onopen = sock.onmessage = sock.onclose = sock.onerror = null;
    if (!closed || behind) sock.close(1e3);
  }
}
function isPollAnswer(body) {
  return !!body && typeof body === "object" && Array.isArray(body.events) && typeof body.ended === "boolean";
}
async function* poll(a) {
  let position = a.position;
  let opened = false;
  const wait = String(a.options.pollWaitSeconds);
  for (; ; ) {
    const ctrl = linked(a.signal);
    const dog = new Watchdog(ctrl);
    const limit = a.options.pollWaitSeconds * 1e3 + a.options.firstByteTimeoutMs;
    dog.arm(limit, `no answer within ${limit} ms`);
    let body;
    try {
      const res = await a.options.fetch(urlOf({ ...a, position }, "poll", { wait }), {
        headers: headers(a, "application/json"),
        signal: ctrl.signal,
        cache: "no-store"
      });
      if (res.status === 204) return { kind: "ended" };
      if (res.status !== 200) return await refused(res);
      body = parseJson(await res.text());
    } catch (exc) {
      if (a.signal.aborted) throw exc;
      return { kind: "retry", reason: dog.fired ?? `cannot connect: ${String(exc)}` };
    } finally {
      dog.stop();
    }
    if (!isPollAnswer(body)) return { kind: "unsupported", reason: "not a long-poll answer" };
    if (!opened) {
      opened = true;
      yield { kind: "open" };
    }
    for (const item of body.events) {
      yield { kind: "item", item };
    }
    if (body.ended) return { kind: "ended" };
    position = body.last_event_id ?? (body.events.length ? null : position);
  }
}
var TRANSPORTS = {
  ws,
  sse,
  poll
};

// src/client.ts
var TERMINAL2 = /* @__PURE__ */ new Set(["result", "error", "cancelled"]);
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
async function defaultWebSocket() {
  const global = globalThis.WebSocket;
  if (global) return global;
  const mod = await import("ws");
  return mod.WebSocket;
}
var TidemarkClient = class {
  constructor(baseUrl = "", options = {}) {
    __publicField(this, "baseUrl");
    __publicField(this, "transports");
    __publicField(this, "token");
    __publicField(this, "options");
    __publicField(this, "maxRetries");
    __publicField(this, "backoffBaseMs");
    __publicField(this, "backoffMaxMs");
    __publicField(this, "maxRetryAfterMs");
    __publicField(this, "fetch");
    /** The transport that worked last (an index into `transports`): remembered for every
     * later follow of this client. */
    __publicField(this, "preferred", 0);
    /** Transports that have connected at least once: a later failure of theirs is a
     * network problem, not a refusal, and makes no fallback. */
    __publicField(this, "proven", /* @__PURE__ */ new Set());
    const here = globalThis.location?.href;
    this.baseUrl = new URL(String(baseUrl) || "/", here);
    if (!this.baseUrl.pathname.endsWith("/")) this.baseUrl.pathname += "/";
    this.token = options.token ?? null;
    this.transports = options.transports?.length ? [...options.transports] : [...TRANSPORT_NAMES];
    for (const t of this.transports) {
      if (!TRANSPORTS[t]) throw new TypeError(`unknown transport ${String(t)}`);
    }
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    const ws2 = options.WebSocket;
    this.options = {
      firstByteTimeoutMs: options.firstByteTimeoutMs ?? 5e3,
      idleTimeoutMs: options.idleTimeoutMs ?? 45e3,
      connectTimeoutMs: options.connectTimeoutMs ?? 1e4,
      pollWaitSeconds: options.pollWaitSeconds ?? 25,
      maxQueuedEvents: options.maxQueuedEvents ?? 1e4,
      fetch: this.fetch,
      webSocket: ws2 ? () => Promise.resolve(ws2) : defaultWebSocket
    };
    this.maxRetries = options.maxRetries ?? 10;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 15e3;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 6e4;
  }
  /** The transport that the next follow starts with. */
  get transport() {
    return this.transports[this.preferred];
  }
  async bearer(source) {
    const s = source === void 0 ? this.token : source;
    return typeof s === "function" ? await s() : s;
  }
  url(path) {
    return new URL(path.replace(/^\//, ""), this.baseUrl);
  }
  async request(method, path, body) {
    const headers2 = { Accept: "application/json" };
    const token = await this.bearer(void 0);
    if (token) headers2.Authorization = `Bearer ${token}`;
    if (body !== void 0) headers2["Content-Type"] = "application/json";
    const res = await this.fetch(this.url(path), {
      method,
      headers: headers2,
      body: body === void 0 ? void 0 : JSON.stringify(body)
    });
    if (!res.ok) throw await problemOf(res);
    return await res.json();
  }
  /** `POST /v1/streams`: a new stream (and its generation job). */
  create(request) {
    const body = typeof request === "string" ? { query: request } : request;
    return this.request("POST", "v1/streams", body);
  }
  /** `GET /v1/streams/{id}`: the stream's status. */
  status(streamId) {
    return this.request("GET", `v1/streams/${encodeURIComponent(streamId)}`);
  }
  /** `POST /v1/streams/{id}/cancel`: the stream then ends with `cancelled`. */
  cancel(streamId) {
    return this.request("POST", `v1/streams/${encodeURIComponent(streamId)}/cancel`);
  }
  /** `POST /v1/streams/{id}/input`: talk back; the data comes back as an `input` event. */
  sendInput(streamId, data) {
    return this.request("POST", `v1/streams/${encodeURIComponent(streamId)}/input`, { data });
  }
  /** The stream's events, each once, in order, until it ends: resumes after every
   * dropped connection from the last event, falls back to the next transport when one
   * does not get through, and throws a {@link TidemarkError} when it cannot go on. */
  async *follow(streamId, options = {}) {
    const ctrl = new AbortController();
    const outer = options.signal;
    const onAbort = () => ctrl.abort();
    outer?.addEventListener("abort", onAbort, { once: true });
    if (outer?.aborted) ctrl.abort();
    const params = {};
    if (options.updateFrequency) params.update_frequency = options.updateFrequency;
    if (options.includeMetadata !== void 0) params.include_metadata = String(options.includeMetadata);
    const streamUrl = this.url(`v1/streams/${encodeURIComponent(streamId)}/`);
    let position = options.lastEventId ?? null;
    let lastSeq = -1;
    let failures = 0;
    let index = this.preferred;
    try {
      for (; ; ) {
        if (ctrl.signal.aborted) return;
        const transport = this.transports[index];
        const attempt = {
          streamUrl,
          position,
          token: await this.bearer(options.token),
          params,
          signal: ctrl.signal,
          options: this.options
        };
        const gen = TRANSPORTS[transport](attempt);
        let outcome;
        try {
          for (; ; ) {
            const step = await gen.next();
            if (step.done) {
              outcome = step.value;
              break;
            }
            const signal = step.value;
            if (signal.kind === "open") {
              this.proven.add(transport);
              this.preferred = index;
              options.onOpen?.(transport);
              continue;
            }
            const event = this.toEvent(signal.item, transport, lastSeq);
            if (event === null) continue;
            failures = 0;
            if (event.id === null) {
              position = null;
              lastSeq = -1;
            } else {
              position = event.id;
              lastSeq = event.seq;
            }
            yield event;
            if (event.id !== null && TERMINAL2.has(event.type)) return;
          }
        } finally {
          await gen.return(void 0).catch(() => void 0);
        }
        if (ctrl.signal.aborted || outcome.kind === "ended") return;
        if (outcome.kind === "fatal") throw outcome.error;
        let fellBack = false;
        if (outcome.kind === "unsupported" && !this.proven.has(transport) && index < this.transports.length - 1) {
          index += 1;
          fellBack = true;
        }
        let delayMs = 0;
        if (!fellBack) {
          failures += 1;
          if (failures > this.maxRetries) throw new RetriesExhaustedError(failures - 1, outcome.reason);
          delayMs = this.delay(outcome, failures);
        }
        options.onRetry?.({ transport, attempt: failures, delayMs, reason: outcome.reason, fellBack });
        await sleep(delayMs, ctrl.signal);
      }
    } finally {
      outer?.removeEventListener("abort", onAbort);
      ctrl.abort();
    }
  }
  delay(outcome, failures) {
    if (outcome.kind === "retry" && outcome.afterMs !== void 0) {
      return Math.min(outcome.afterMs, this.maxRetryAfterMs);
    }
    if (outcome.kind === "retry" && outcome.now && failures === 1) return 0;
    const ceiling = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** (failures - 1));
    return Math.random() * ceiling;
  }
  toEvent(item, transport, lastSeq) {
    if (item.id === null) {
      return { id: null, type: "reset", data: item.data, transport };
    }
    const env = item.data;
    if (typeof env?.seq !== "number") throw new TidemarkError(`an event without an envelope: ${item.id}`);
    if (env.seq <= lastSeq) return null;
    return {
      id: item.id,
      type: item.event,
      seq: env.seq,
      ts: env.ts,
      stream: env.stream,
      data: env.data,
      transport
    };
  }
  /** An `EventSource`-like object over {@link follow}. */
  eventSource(streamId, options = {}) {
    return new TidemarkEventSource(this, streamId, options);
  }
};
var _TidemarkEventSource = class _TidemarkEventSource {
  constructor(client, streamId, options = {}) {
    __publicField(this, "readyState", 0);
    __publicField(this, "lastEventId", "");
    __publicField(this, "transport", null);
    __publicField(this, "onopen", null);
    __publicField(this, "onerror", null);
    __publicField(this, "onretry", null);
    __publicField(this, "onmessage", null);
    /** Called once the stream has ended (its terminal event, or 204 / close 1000). */
    __publicField(this, "onend", null);
    __publicField(this, "listeners", /* @__PURE__ */ new Map());
    __publicField(this, "ctrl", new AbortController());
    void this.run(client, streamId, options);
  }
  addEventListener(type, fn) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(fn);
  }
  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  close() {
    this.readyState = _TidemarkEventSource.CLOSED;
    this.ctrl.abort();
  }
  async run(client, streamId, options) {
    try {
      const events = client.follow(streamId, {
        ...options,
        signal: this.ctrl.signal,
        onOpen: (t) => {
          this.readyState = _TidemarkEventSource.OPEN;
          this.transport = t;
          options.onOpen?.(t);
          this.onopen?.(t);
        },
        onRetry: (info) => {
          if (this.readyState !== _TidemarkEventSource.CLOSED) this.readyState = _TidemarkEventSource.CONNECTING;
          options.onRetry?.(info);
          this.onretry?.(info);
        }
      });
      for await (const event of events) {
        if (this.readyState === _TidemarkEventSource.CLOSED) return;
        if (event.id !== null) this.lastEventId = event.id;
        const data = event.id === null ? event.data : {
          stream: event.stream,
          seq: event.seq,
          type: event.type,
          ts: event.ts,
          data: event.data
        };
        const msg = {
          type: event.type,
          data: JSON.stringify(data),
          lastEventId: this.lastEventId,
          event
        };
        for (const fn of [...this.listeners.get(event.type) ?? []]) fn(msg);
        this.onmessage?.(msg);
      }
      if (this.readyState !== _TidemarkEventSource.CLOSED) {
        this.readyState = _TidemarkEventSource.CLOSED;
        this.onend?.();
      }
    } catch (error) {
      if (this.readyState === _TidemarkEventSource.CLOSED) return;
      this.readyState = _TidemarkEventSource.CLOSED;
      this.onerror?.({ type: "error", error: error instanceof Error ? error : new Error(String(error)) });
    }
  }
};
__publicField(_TidemarkEventSource, "CONNECTING", 0);
__publicField(_TidemarkEventSource, "OPEN", 1);
__publicField(_TidemarkEventSource, "CLOSED", 2);
var TidemarkEventSource = _TidemarkEventSource;

// src/schema.ts
var EVENT_TYPES = ["status", "progress", "partial_result", "metadata", "result", "error", "cancelled", "input"];
var TERMINAL_TYPES = ["result", "error", "cancelled"];
export {
  BadRequestError,
  EVENT_TYPES,
  ForbiddenError,
  GoneError,
  NotFoundError,
  ProblemError,
  ProtocolError,
  RetriesExhaustedError,
  SseParser,
  TERMINAL_TYPES,
  TRANSPORT_NAMES,
  TidemarkClient,
  TidemarkError,
  TidemarkEventSource,
  UnauthorizedError,
  problemError,
  problemOf
};
