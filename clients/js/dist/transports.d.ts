/** The three ways to read a stream, each one connection attempt at a time.
 *
 * A transport is an async generator: it yields `open` once the connection has shown it
 * works (WebSocket open, first SSE byte, first long-poll answer) and each item as it
 * arrives, and returns what should happen next (an {@link Outcome}). The follow loop in
 * client.ts owns the position, de-duplication, backoff and fallback. */
export type TransportName = "ws" | "sse" | "poll";
export declare const TRANSPORT_NAMES: readonly TransportName[];
/** One event as a transport read it: `data` is the envelope (or the reset notice). */
export interface Item {
    id: string | null;
    event: string;
    data: unknown;
}
export type Signal = {
    kind: "open";
} | {
    kind: "item";
    item: Item;
};
export type Outcome = 
/** The stream has ended (204, close 1000, the answer holding the terminal event). */
{
    kind: "ended";
}
/** Connect again on the same transport: at once (`now`), after `afterMs`, or after a
 * backoff. */
 | {
    kind: "retry";
    reason: string;
    now?: boolean;
    afterMs?: number;
}
/** This transport does not get through here (an upgrade refused, a buffering proxy):
 * fall back to the next one, unless it has worked before. */
 | {
    kind: "unsupported";
    reason: string;
} | {
    kind: "fatal";
    error: Error;
};
/** The constructor of a WHATWG-style WebSocket (the browser's, Node's, or `ws`'s). */
export interface WebSocketLike {
    readonly readyState: number;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
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
/** The seconds of a `Retry-After` header (a number or an HTTP date), in ms. */
export declare function retryAfterMs(value: string | null): number | undefined;
/** Server-Sent Events over fetch streaming: headers and the no-byte deadline are ours. */
export declare function sse(a: Attempt): AsyncGenerator<Signal, Outcome>;
/** The WebSocket: one text frame per event; close codes say what comes next. */
export declare function ws(a: Attempt): AsyncGenerator<Signal, Outcome>;
/** Long-poll: one request per batch, each from the last answer's position. */
export declare function poll(a: Attempt): AsyncGenerator<Signal, Outcome>;
export declare const TRANSPORTS: Record<TransportName, (a: Attempt) => AsyncGenerator<Signal, Outcome>>;
