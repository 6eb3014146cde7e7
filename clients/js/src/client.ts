/** `TidemarkClient`: create streams and follow them, exactly once and in order, over the
 * WebSocket, SSE or long-poll, resuming and falling back on its own (docs/transports.md). */

import type { CreateStreamRequest, Envelope, EventDataMap, ResetData } from "./schema.js";
import { RetriesExhaustedError, TidemarkError, problemOf } from "./errors.js";
import {
  type Attempt, type Item, type Outcome, type TransportName, type TransportOptions,
  type WebSocketCtor, TRANSPORTS, TRANSPORT_NAMES,
} from "./transports.js";

/** A bearer token, or a function that gives one (asked again on every connection). */
export type TokenSource = string | null | (() => string | null | Promise<string | null>);

export interface ClientOptions {
  token?: TokenSource;
  /** The transports to try, in order (default: `["ws", "sse", "poll"]`). */
  transports?: TransportName[];
  /** An SSE response (or a WebSocket upgrade) that gives no byte within this is taken
   * for a buffering proxy: the next transport is tried (default 5000). */
  firstByteTimeoutMs?: number;
  /** An SSE response that gives no byte for this long is dropped and resumed (the gateway
   * pings every 15 s; default 45000). */
  idleTimeoutMs?: number;
  /** A WebSocket that is not open within this counts as refused (default 10000). */
  connectTimeoutMs?: number;
  /** The long-poll `wait` (s; default 25, the gateway's bound is 30). */
  pollWaitSeconds?: number;
  /** Connection attempts in a row without a new event before giving up (default 10). */
  maxRetries?: number;
  /** Full-jitter backoff: attempt n waits a random time in [0, min(max, base * 2^n)]. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Longest `Retry-After` honoured (default 60000). */
  maxRetryAfterMs?: number;
  /** Events a WebSocket may hold for a slow reader before it is dropped and resumed. */
  maxQueuedEvents?: number;
  fetch?: typeof fetch;
  /** A WebSocket constructor (default: the global one, else the `ws` package in Node). */
  WebSocket?: WebSocketCtor;
}

/** One event of a stream, typed by its `type`. */
export type StreamEvent<K extends keyof EventDataMap = keyof EventDataMap> = {
  [T in K]: {
    /** Its position: give it as `lastEventId` to resume after it. */
    id: string;
    type: T;
    seq: number;
    ts: number;
    stream: string;
    data: EventDataMap[T];
    /** The transport that delivered it. */
    transport: TransportName;
  };
}[K];

/** The in-band notice that the position was older than the log (or of another topic
 * epoch): the stream goes on from its earliest held event. */
export interface ResetNotice {
  id: null;
  type: "reset";
  data: ResetData;
  transport: TransportName;
}

export type TidemarkEvent = StreamEvent | ResetNotice;

export interface FollowOptions {
  /** Resume strictly after this event id. */
  lastEventId?: string | null;
  /** This stream's token (e.g. the `read_token` of the create answer) instead of the
   * client's. */
  token?: TokenSource;
  /** `?update_frequency=` / `?include_metadata=` (docs/context.md). */
  updateFrequency?: "realtime" | "batched";
  includeMetadata?: boolean;
  signal?: AbortSignal;
  /** Called when a connection proves itself (and which transport it is). */
  onOpen?: (transport: TransportName) => void;
  /** Called before each reconnect: why, and how long it waits. */
  onRetry?: (info: RetryInfo) => void;
}

export interface RetryInfo {
  transport: TransportName;
  attempt: number;
  delayMs: number;
  reason: string;
  /** The transport fell back to the next one. */
  fellBack: boolean;
}

export interface CreateStreamResponse {
  stream_id: string;
  events_url: string;
  status_url: string;
  read_token?: string;
  read_token_expires_at?: string;
  urls?: { sse: string; ws: string; poll: string };
  experiments?: Record<string, string>;
  [k: string]: unknown;
}

export interface InputAck {
  seq: number;
  id: string;
}

const TERMINAL = new Set(["result", "error", "cancelled"]);

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

async function defaultWebSocket(): Promise<WebSocketCtor> {
  const global = (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  if (global) return global;
  // Node before 22 has no global WebSocket: the `ws` package (an optional dependency).
  const mod = (await import("ws")) as unknown as { WebSocket: WebSocketCtor };
  return mod.WebSocket;
}

export class TidemarkClient {
  readonly baseUrl: URL;
  readonly transports: readonly TransportName[];
  private readonly token: TokenSource;
  private readonly options: TransportOptions;
  private readonly maxRetries: number;
  private readonly backoffBaseMs: number;
  private readonly backoffMaxMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly fetch: typeof fetch;
  /** The transport that worked last (an index into `transports`): remembered for every
   * later follow of this client. */
  private preferred = 0;
  /** Transports that have connected at least once: a later failure of theirs is a
   * network problem, not a refusal, and makes no fallback. */
  private readonly proven = new Set<TransportName>();

  constructor(baseUrl: string | URL = "", options: ClientOptions = {}) {
    const here = (globalThis as { location?: { href: string } }).location?.href;
    this.baseUrl = new URL(String(baseUrl) || "/", here);
    if (!this.baseUrl.pathname.endsWith("/")) this.baseUrl.pathname += "/";
    this.token = options.token ?? null;
    this.transports = options.transports?.length ? [...options.transports] : [...TRANSPORT_NAMES];
    for (const t of this.transports) {
      if (!TRANSPORTS[t]) throw new TypeError(`unknown transport ${String(t)}`);
    }
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    const ws = options.WebSocket;
    this.options = {
      firstByteTimeoutMs: options.firstByteTimeoutMs ?? 5000,
      idleTimeoutMs: options.idleTimeoutMs ?? 45000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10000,
      pollWaitSeconds: options.pollWaitSeconds ?? 25,
      maxQueuedEvents: options.maxQueuedEvents ?? 10000,
      fetch: this.fetch,
      webSocket: ws ? () => Promise.resolve(ws) : defaultWebSocket,
    };
    this.maxRetries = options.maxRetries ?? 10;
    this.backoffBaseMs = options.backoffBaseMs ?? 500;
    this.backoffMaxMs = options.backoffMaxMs ?? 15000;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 60000;
  }

  /** The transport that the next follow starts with. */
  get transport(): TransportName {
    return this.transports[this.preferred] as TransportName;
  }

  private async bearer(source: TokenSource | undefined): Promise<string | null> {
    const s = source === undefined ? this.token : source;
    return typeof s === "function" ? await s() : s;
  }

  private url(path: string): URL {
    return new URL(path.replace(/^\//, ""), this.baseUrl);
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    const token = await this.bearer(undefined);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await this.fetch(this.url(path), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw await problemOf(res);
    return (await res.json()) as T;
  }

  /** `POST /v1/streams`: a new stream (and its generation job). */
  create(request: CreateStreamRequest | string): Promise<CreateStreamResponse> {
    const body = typeof request === "string" ? { query: request } : request;
    return this.request("POST", "v1/streams", body);
  }

  /** `GET /v1/streams/{id}`: the stream's status. */
  status(streamId: string): Promise<Record<string, unknown>> {
    return this.request("GET", `v1/streams/${encodeURIComponent(streamId)}`);
  }

  /** `POST /v1/streams/{id}/cancel`: the stream then ends with `cancelled`. */
  cancel(streamId: string): Promise<Record<string, unknown>> {
    return this.request("POST", `v1/streams/${encodeURIComponent(streamId)}/cancel`);
  }

  /** `POST /v1/streams/{id}/input`: talk back; the data comes back as an `input` event. */
  sendInput(streamId: string, data: Record<string, unknown>): Promise<InputAck> {
    return this.request("POST", `v1/streams/${encodeURIComponent(streamId)}/input`, { data });
  }

  /** The stream's events, each once, in order, until it ends: resumes after every
   * dropped connection from the last event, falls back to the next transport when one
   * does not get through, and throws a {@link TidemarkError} when it cannot go on. */
  async *follow(streamId: string, options: FollowOptions = {}): AsyncGenerator<TidemarkEvent, void> {
    const ctrl = new AbortController();
    const outer = options.signal;
    const onAbort = (): void => ctrl.abort();
    outer?.addEventListener("abort", onAbort, { once: true });
    if (outer?.aborted) ctrl.abort();
    const params: Record<string, string> = {};
    if (options.updateFrequency) params.update_frequency = options.updateFrequency;
    if (options.includeMetadata !== undefined) params.include_metadata = String(options.includeMetadata);
    const streamUrl = this.url(`v1/streams/${encodeURIComponent(streamId)}/`);
    let position = options.lastEventId ?? null;
    let lastSeq = -1;
    let failures = 0;
    let index = this.preferred;
    try {
      for (;;) {
        if (ctrl.signal.aborted) return;
        const transport = this.transports[index] as TransportName;
        const attempt: Attempt = {
          streamUrl, position, token: await this.bearer(options.token), params,
          signal: ctrl.signal, options: this.options,
        };
        const gen = TRANSPORTS[transport](attempt);
        let outcome: Outcome;
        try {
          for (;;) {
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
            if (event === null) continue;  // a repeat (defence in depth: seq not above the last)
            failures = 0;
            if (event.id === null) {
              // The server goes on from its earliest held event: every seq is new again.
              position = null;
              lastSeq = -1;
            } else {
              position = event.id;
              lastSeq = event.seq;
            }
            yield event;
            if (event.id !== null && TERMINAL.has(event.type)) return;
          }
        } finally {
          await gen.return(undefined as never).catch(() => undefined);
        }
        if (ctrl.signal.aborted || outcome.kind === "ended") return;
        if (outcome.kind === "fatal") throw outcome.error;
        let fellBack = false;
        if (outcome.kind === "unsupported" && !this.proven.has(transport)
            && index < this.transports.length - 1) {
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

  private delay(outcome: Outcome, failures: number): number {
    if (outcome.kind === "retry" && outcome.afterMs !== undefined) {
      return Math.min(outcome.afterMs, this.maxRetryAfterMs);
    }
    if (outcome.kind === "retry" && outcome.now && failures === 1) return 0;
    const ceiling = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** (failures - 1));
    return Math.random() * ceiling;  // full jitter
  }

  private toEvent(item: Item, transport: TransportName, lastSeq: number): TidemarkEvent | null {
    if (item.id === null) {
      return { id: null, type: "reset", data: item.data as ResetData, transport };
    }
    const env = item.data as Envelope;
    if (typeof env?.seq !== "number") throw new TidemarkError(`an event without an envelope: ${item.id}`);
    if (env.seq <= lastSeq) return null;
    return {
      id: item.id, type: item.event, seq: env.seq, ts: env.ts, stream: env.stream,
      data: env.data, transport,
    } as StreamEvent;
  }

  /** An `EventSource`-like object over {@link follow}. */
  eventSource(streamId: string, options: FollowOptions = {}): TidemarkEventSource {
    return new TidemarkEventSource(this, streamId, options);
  }
}

/** What listeners of an event type get: `data` is the envelope's JSON text (the notice's,
 * for `reset`), as an `EventSource`'s `MessageEvent` has it, and `event` the typed event. */
export interface TidemarkMessageEvent {
  type: string;
  data: string;
  lastEventId: string;
  event: TidemarkEvent;
}

export interface TidemarkErrorEvent {
  type: "error";
  error: Error;
}

type Listener = (ev: TidemarkMessageEvent) => void;

/** Like a browser `EventSource` (`addEventListener(type, fn)`, `onopen`, `onerror`,
 * `close()`, `readyState`), with this SDK's resume, fallback and typed errors.
 *
 * Unlike `EventSource`, `onerror` is called only when the SDK gives up (a refused
 * request, retries exhausted), with the error; reconnects are silent (`onretry`). The
 * stream's own `error` events go to `addEventListener("error", fn)` like any type. */
export class TidemarkEventSource {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;
  readyState = 0;
  lastEventId = "";
  transport: TransportName | null = null;
  onopen: ((transport: TransportName) => void) | null = null;
  onerror: ((ev: TidemarkErrorEvent) => void) | null = null;
  onretry: ((info: RetryInfo) => void) | null = null;
  onmessage: Listener | null = null;
  /** Called once the stream has ended (its terminal event, or 204 / close 1000). */
  onend: (() => void) | null = null;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly ctrl = new AbortController();

  constructor(client: TidemarkClient, streamId: string, options: FollowOptions = {}) {
    void this.run(client, streamId, options);
  }

  addEventListener(type: string, fn: Listener): void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn);
  }

  removeEventListener(type: string, fn: Listener): void {
    this.listeners.get(type)?.delete(fn);
  }

  close(): void {
    this.readyState = TidemarkEventSource.CLOSED;
    this.ctrl.abort();
  }

  private async run(client: TidemarkClient, streamId: string, options: FollowOptions): Promise<void> {
    try {
      const events = client.follow(streamId, {
        ...options,
        signal: this.ctrl.signal,
        onOpen: (t) => {
          this.readyState = TidemarkEventSource.OPEN;
          this.transport = t;
          options.onOpen?.(t);
          this.onopen?.(t);
        },
        onRetry: (info) => {
          if (this.readyState !== TidemarkEventSource.CLOSED) this.readyState = TidemarkEventSource.CONNECTING;
          options.onRetry?.(info);
          this.onretry?.(info);
        },
      });
      for await (const event of events) {
        if (this.readyState === TidemarkEventSource.CLOSED) return;
        if (event.id !== null) this.lastEventId = event.id;
        const data = event.id === null ? event.data : {
          stream: event.stream, seq: event.seq, type: event.type, ts: event.ts, data: event.data,
        };
        const msg: TidemarkMessageEvent = {
          type: event.type, data: JSON.stringify(data), lastEventId: this.lastEventId, event,
        };
        for (const fn of [...(this.listeners.get(event.type) ?? [])]) fn(msg);
        this.onmessage?.(msg);
      }
      if (this.readyState !== TidemarkEventSource.CLOSED) {
        this.readyState = TidemarkEventSource.CLOSED;
        this.onend?.();
      }
    } catch (error) {
      if (this.readyState === TidemarkEventSource.CLOSED) return;
      this.readyState = TidemarkEventSource.CLOSED;
      this.onerror?.({ type: "error", error: error instanceof Error ? error : new Error(String(error)) });
    }
  }
}
