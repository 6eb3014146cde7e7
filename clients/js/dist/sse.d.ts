/** An incremental text/event-stream parser (the WHATWG "event stream interpretation"). */
/** One dispatched SSE event. */
export interface SseMessage {
    id: string | null;
    event: string;
    data: string;
}
/** Feed it decoded text as it arrives; it returns the events each chunk completed. */
export declare class SseParser {
    private readonly maxLine;
    private buffer;
    private data;
    private event;
    /** The event's own id: an event without an `id:` line (a reset notice) has none. */
    private id;
    /** Bounded: a line longer than this is a protocol error (a gateway line is far shorter). */
    constructor(maxLine?: number);
    push(text: string): SseMessage[];
    private line;
}
