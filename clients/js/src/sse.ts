/** An incremental text/event-stream parser (the WHATWG "event stream interpretation"). */

/** One dispatched SSE event. */
export interface SseMessage {
  id: string | null;
  event: string;
  data: string;
}

/** Feed it decoded text as it arrives; it returns the events each chunk completed. */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  /** The event's own id: an event without an `id:` line (a reset notice) has none. */
  private id: string | null = null;
  /** Bounded: a line longer than this is a protocol error (a gateway line is far shorter). */
  constructor(private readonly maxLine = 4 * 1024 * 1024) {}

  push(text: string): SseMessage[] {
    this.buffer += text;
    const out: SseMessage[] = [];
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      let end: number;
      if (cr < 0 && lf < 0) break;
      if (cr < 0 || (lf >= 0 && lf < cr)) end = lf;
      else {
        // A lone CR at the end of the chunk may be the first half of CRLF.
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

  private line(line: string): SseMessage | null {
    if (line === "") {
      // An event without data lines is not dispatched (WHATWG).
      const msg = this.data.length
        ? { id: this.id, event: this.event || "message", data: this.data.join("\n") }
        : null;
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
}
