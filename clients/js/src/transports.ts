/** The three ways to read a stream, each one connection attempt at a time.
 *
 * A transport is an async generator: it yields `open` once the connection has shown it
 * works (WebSocket open, first SSE byte, first long-poll answer) and each item as it
 * arrives, and returns what should happen next (an {@link Outcome}). The follow loop in
 * client.ts owns the position, de-duplication, backoff and fallback. */

import { ProtocolError, problemError, problemOf } from "./errors.js";
import { SseParser } from "./sse.js";

export type TransportName = "ws" | "sse" | "poll";
export const TRANSPORT_NAMES: readonly TransportName[] = ["ws", "sse", "poll"];

/** One event as a transport read it: `data` is the envelope (or the reset notice). */
export interface Item {
  id: string | null;
  event: string;
  data: unknown;
}

export type Signal = { kind: "open" } | { kind: "item"; item: Item };

export type Outcome =
  /** The stream has ended (204, close 1000, the answer holding the terminal event). */
  | { kind: "ended" }
  /** Connect again on the same transport: at once (`now`), after `afterMs`, or after a
   * backoff. */
  | { kind: "retry"; reason: string; now?: boolean; afterMs?: number }
  /** This transport does not get through here (an upgrade refused, a buffering proxy):
   * fall back to the next one, unless it has worked before. */
  | { kind: "unsupported"; reason: string }
  | { kind: "fatal"; error: Error };

/** The constructor of a WHATWG-style WebSocket (the browser's, Node's, or `ws`'s). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string) => WebSocketLike;

export interface TransportOptions {
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  connectTimeoutMs: number;
  pollWaitSeconds: number;
  maxQueuedEvents: number;
  fetch: typeof fetch;
  webSocket: () => Promise<WebSocketCtor>;
}

export interface Attempt {
  /** The stream's URL without the transport's last path segment: `.../v1/streams/{id}/`. */
  streamUrl: URL;
  position: string | null;
  token: string | null;
  params: Record<string, string>;
  signal: AbortSignal;
  options: TransportOptions;
}

const TERMINAL = new Set(["result", "error", "cancelled"]);

function urlOf(a: Attempt, segment: string, extra: Record<string, string> = {}): URL {
  const url = new URL(segment, a.streamUrl);
  for (const [k, v] of Object.entries({ ...a.params, ...extra })) url.searchParams.set(k, v);
  if (a.position !== null) url.searchParams.set("last_event_id", a.position);
  return url;
}

function headers(a: Attempt, accept: string): Record<string, string> {
  const h: Record<string, string> = { Accept: accept };
  if (a.token) h.Authorization = `Bearer ${a.token}`;
  return h;
}

/** The seconds of a `Retry-After` header (a number or an HTTP date), in ms. */
export function retryAfterMs(value: string | null): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** What to do about an HTTP answer that is not 200 or 204. */
async function refused(res: Response): Promise<Outcome> {
  const error = await problemOf(res);
  if (error.retriable) {
    return { kind: "retry", reason: error.message, afterMs: retryAfterMs(res.headers.get("Retry-After")) };
  }
  if (res.status >= 500 || res.status === 408) return { kind: "retry", reason: error.message };
  return { kind: "fatal", error };
}

/** A timer that aborts `ctrl` with a reason when it fires; re-armed per chunk. */
class Watchdog {
  fired: string | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  constructor(private readonly ctrl: AbortController) {}
  arm(ms: number, reason: string): void {
    this.stop();
    this.timer = setTimeout(() => {
      this.fired = reason;
      this.ctrl.abort();
    }, ms);
  }
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

function linked(signal: AbortSignal): AbortController {
  const ctrl = new AbortController();
  if (signal.aborted) ctrl.abort();
  else signal.addEventListener("abort", () => ctrl.abort(), { once: true });
  return ctrl;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Server-Sent Events over fetch streaming: headers and the no-byte deadline are ours. */
export async function* sse(a: Attempt): AsyncGenerator<Signal, Outcome> {
  const ctrl = linked(a.signal);
  const dog = new Watchdog(ctrl);
  const deadline = `no byte within ${a.options.firstByteTimeoutMs} ms (a proxy that buffers responses?)`;
  dog.arm(a.options.firstByteTimeoutMs, deadline);
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    let res: Response;
    try {
      res = await a.options.fetch(urlOf(a, "events"), {
        headers: headers(a, "text/event-stream"), signal: ctrl.signal, cache: "no-store",
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
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
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
        if (data === undefined) return { kind: "fatal", error: new ProtocolError(`not JSON: ${msg.data.slice(0, 80)}`) };
        yield { kind: "item", item: { id: msg.id, event: msg.event, data } };
        if (TERMINAL.has(msg.event) && msg.id !== null) return { kind: "ended" };
      }
    }
  } finally {
    dog.stop();
    ctrl.abort();
    reader?.cancel().catch(() => undefined);
  }
}

/** The WebSocket: one text frame per event; close codes say what comes next. */
export async function* ws(a: Attempt): AsyncGenerator<Signal, Outcome> {
  const Ctor = await a.options.webSocket();
  const url = urlOf(a, "ws", a.token ? { access_token: a.token } : {});
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const queue: Item[] = [];
  let opened = false;
  let behind = false;
  let closed: { code: number; reason: string } | null = null;
  let protocolError: Error | null = null;
  let wake: (() => void) | null = null;
  const poke = (): void => {
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
  const onAbort = (): void => {
    closed ??= { code: 1000, reason: "closed by the client" };
    sock.close(1000);
    poke();
  };
  a.signal.addEventListener("abort", onAbort, { once: true });
  sock.onopen = () => {
    opened = true;
    poke();
  };
  sock.onmessage = (ev) => {
    if (behind || closed) return;
    const obj = typeof ev.data === "string" ? parseJson(ev.data) : undefined;
    if (!obj || typeof obj !== "object") {
      protocolError = new ProtocolError("a WebSocket frame that is not a JSON object");
    } else if (!("op" in obj)) {  // answers to ops (acks) are not events
      const { id, event, data } = obj as { id: string | null; event: string; data: unknown };
      queue.push({ id, event, data });
      if (queue.length > a.options.maxQueuedEvents) {
        behind = true;  // bounded: drop the connection, resume from the last event read
        sock.close(1000);
      }
    }
    poke();
  };
  sock.onclose = (ev) => {
    closed ??= { code: ev.code, reason: ev.reason };
    poke();
  };
  sock.onerror = () => poke();
  try {
    let announced = false;
    for (;;) {
      if (opened && !announced) {
        announced = true;
        yield { kind: "open" };
      }
      while (queue.length) {
        const item = queue.shift() as Item;
        yield { kind: "item", item };
        if (TERMINAL.has(item.event) && item.id !== null) return { kind: "ended" };
      }
      if (protocolError) return { kind: "fatal", error: protocolError };
      if (behind) return { kind: "retry", reason: "this client fell behind", now: true };
      if (closed) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
    const { code, reason } = closed as { code: number; reason: string };
    if (a.signal.aborted) return { kind: "ended" };
    if (code === 1000) return { kind: "ended" };
    if (!opened) return { kind: "unsupported", reason: `the upgrade was refused (close ${code} before open)` };
    if (code >= 4000 && code < 5000) {
      const status = code - 4000;
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
    if (!closed || behind) sock.close(1000);
  }
}

interface PollAnswer {
  events: Item[];
  last_event_id: string | null;
  ended: boolean;
}

function isPollAnswer(body: unknown): body is PollAnswer {
  return !!body && typeof body === "object" && Array.isArray((body as PollAnswer).events)
    && typeof (body as PollAnswer).ended === "boolean";
}

/** Long-poll: one request per batch, each from the last answer's position. */
export async function* poll(a: Attempt): AsyncGenerator<Signal, Outcome> {
  let position = a.position;
  let opened = false;
  const wait = String(a.options.pollWaitSeconds);
  for (;;) {
    const ctrl = linked(a.signal);
    const dog = new Watchdog(ctrl);
    const limit = a.options.pollWaitSeconds * 1000 + a.options.firstByteTimeoutMs;
    dog.arm(limit, `no answer within ${limit} ms`);
    let body: unknown;
    try {
      const res = await a.options.fetch(urlOf({ ...a, position }, "poll", { wait }), {
        headers: headers(a, "application/json"), signal: ctrl.signal, cache: "no-store",
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
    // An answer with only a reset notice has no position: poll again from the earliest.
    position = body.last_event_id ?? (body.events.length ? null : position);
  }
}

export const TRANSPORTS: Record<TransportName, (a: Attempt) => AsyncGenerator<Signal, Outcome>> = {
  ws, sse, poll,
};

