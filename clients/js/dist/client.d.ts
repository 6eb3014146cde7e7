/** `TidemarkClient`: create streams and follow them, exactly once and in order, over the
 * WebSocket, SSE or long-poll, resuming and falling back on its own (docs/transports.md). */
import type { CreateStreamRequest, EventDataMap, ResetData } from "./schema.js";
import { type TransportName, type WebSocketCtor } from "./transports.js";
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
    urls?: {
        sse: string;
        ws: string;
        poll: string;
    };
    experiments?: Record<string, string>;
    [k: string]: unknown;
}
export interface InputAck {
    seq: number;
    id: string;
}
export declare class TidemarkClient {
    readonly baseUrl: URL;
    readonly transports: readonly TransportName[];
    private readonly token;
    private readonly options;
    private readonly maxRetries;
    private readonly backoffBaseMs;
    private readonly backoffMaxMs;
    private readonly maxRetryAfterMs;
    private readonly fetch;
    /** The transport that worked last (an index into `transports`): remembered for every
     * later follow of this client. */
    private preferred;
    /** Transports that have connected at least once: a later failure of theirs is a
     * network problem, not a refusal, and makes no fallback. */
    private readonly proven;
    constructor(baseUrl?: string | URL, options?: ClientOptions);
    /** The transport that the next follow starts with. */
    get transport(): TransportName;
    private bearer;
    private url;
    private request;
    /** `POST /v1/streams`: a new stream (and its generation job). */
    create(request: CreateStreamRequest | string): Promise<CreateStreamResponse>;
    /** `GET /v1/streams/{id}`: the stream's status. */
    status(streamId: string): Promise<Record<string, unknown>>;
    /** `POST /v1/streams/{id}/cancel`: the stream then ends with `cancelled`. */
    cancel(streamId: string): Promise<Record<string, unknown>>;
    /** `POST /v1/streams/{id}/input`: talk back; the data comes back as an `input` event. */
    sendInput(streamId: string, data: Record<string, unknown>): Promise<InputAck>;
    /** The stream's events, each once, in order, until it ends: resumes after every
     * dropped connection from the last event, falls back to the next transport when one
     * does not get through, and throws a {@link TidemarkError} when it cannot go on. */
    follow(streamId: string, options?: FollowOptions): AsyncGenerator<TidemarkEvent, void>;
    private delay;
    private toEvent;
    /** An `EventSource`-like object over {@link follow}. */
    eventSource(streamId: string, options?: FollowOptions): TidemarkEventSource;
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
export declare class TidemarkEventSource {
    static readonly CONNECTING = 0;
    static readonly OPEN = 1;
    static readonly CLOSED = 2;
    readyState: number;
    lastEventId: string;
    transport: TransportName | null;
    onopen: ((transport: TransportName) => void) | null;
    onerror: ((ev: TidemarkErrorEvent) => void) | null;
    onretry: ((info: RetryInfo) => void) | null;
    onmessage: Listener | null;
    /** Called once the stream has ended (its terminal event, or 204 / close 1000). */
    onend: (() => void) | null;
    private readonly listeners;
    private readonly ctrl;
    constructor(client: TidemarkClient, streamId: string, options?: FollowOptions);
    addEventListener(type: string, fn: Listener): void;
    removeEventListener(type: string, fn: Listener): void;
    close(): void;
    private run;
}
export {};
