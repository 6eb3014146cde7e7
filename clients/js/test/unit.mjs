// Driven by tests/unit/test_js_client_build.py: the SDK's pure parts, from dist/ (no
// network). Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { SseParser, problemError, NotFoundError, GoneError, ProblemError, TidemarkError } from "../dist/index.js";

// SSE: events split anywhere (mid-line, mid-CRLF), comments, multi-line data, no id.
const wire = ": ping\r\nretry: 500\r\n\r\nid: 1-a-0-5\r\nevent: status\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n" +
  "event: reset\ndata: {\"reason\":\"retention\"}\n\n:x\rid: 2\revent: result\rdata: {}\r\r";
for (let cut = 1; cut < wire.length; cut++) {
  const p = new SseParser();
  const got = [...p.push(wire.slice(0, cut)), ...p.push(wire.slice(cut)), ...p.push("\n")];
  assert.deepEqual(got, [
    { id: "1-a-0-5", event: "status", data: "{\"a\":\n1}" },
    { id: null, event: "reset", data: "{\"reason\":\"retention\"}" },
    { id: "2", event: "result", data: "{}" },
  ], `cut at ${cut}`);
}
assert.throws(() => new SseParser(16).push("data: " + "x".repeat(32)), /too long/);

// Errors: typed by status, the detail kept, retriable only for 429 and 503.
const e404 = problemError(404, "no stream s1-x");
assert.ok(e404 instanceof NotFoundError && e404 instanceof ProblemError && e404 instanceof TidemarkError);
assert.equal(e404.detail, "no stream s1-x");
assert.equal(e404.name, "NotFoundError");
assert.ok(problemError(410, "gone") instanceof GoneError);
assert.equal(problemError(409, "x").constructor, ProblemError);
assert.deepEqual([429, 503, 400, 500].map((s) => problemError(s, "").retriable), [true, true, false, false]);
process.stdout.write("{\"ok\": true}\n");
