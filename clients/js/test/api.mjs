// Driven by tests/e2e/test_js_client.py: the SDK's calls besides follow, against a real
// gateway; prints one JSON line per step.
// Usage: node test/api.mjs '<json: {base, token}>'
import { TidemarkClient, ProblemError } from "../dist/index.js";

const cfg = JSON.parse(process.argv[2]);
const client = new TidemarkClient(cfg.base, { token: cfg.token });
const print = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

// Cancel: a long demo stream, cancelled after its first events; it ends with `cancelled`.
const long = await client.create({ query: "cancel me", options: { tokens: 1000, tokens_per_second: 20 } });
const seen = [];
for await (const ev of client.follow(long.stream_id)) {
  seen.push(ev.type);
  if (seen.length === 3) print({ cancel: await client.cancel(long.stream_id) });
}
print({ cancelled: long.stream_id, types: seen });

// Talk back: an external stream takes input; it arrives as an `input` event.
const ext = await client.create({ query: "talk to me", generator: "external" });
const ack = await client.sendInput(ext.stream_id, { answer: "yes", n: 1 });
print({ input: ack });
const ctrl = new AbortController();
for await (const ev of client.follow(ext.stream_id, { signal: ctrl.signal })) {
  if (ev.type === "input") {
    print({ stream: ext.stream_id, inputEvent: { id: ev.id, seq: ev.seq, data: ev.data } });
    ctrl.abort();
  }
}

// Refusals of the other calls are typed too.
try {
  await client.cancel("no-such-stream");
} catch (err) {
  print({ refused: err.name, isProblem: err instanceof ProblemError, status: err.status, detail: err.detail });
}
print({ done: true });
