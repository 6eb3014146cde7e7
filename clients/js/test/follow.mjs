// Driven by tests/e2e/test_js_client.py: follows streams with the built SDK (dist/) and
// prints one JSON line per event, retry and end, as they happen.
// Usage: node test/follow.mjs '<json: {base, token, streams, transports?, lastEventId?,
//                                      options?}>'
import { TidemarkClient } from "../dist/index.js";

const cfg = JSON.parse(process.argv[2]);
const client = new TidemarkClient(cfg.base, { token: () => cfg.token, transports: cfg.transports, ...cfg.options });
const print = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

async function one(stream) {
  try {
    const events = client.follow(stream, {
      lastEventId: cfg.lastEventId ?? null,
      onOpen: (transport) => print({ stream, open: transport }),
      onRetry: (info) => print({ stream, retry: info }),
    });
    for await (const ev of events) {
      const data = ev.id === null ? ev.data
        : { stream: ev.stream, seq: ev.seq, type: ev.type, ts: ev.ts, data: ev.data };
      print({ stream, id: ev.id, type: ev.type, data, transport: ev.transport });
    }
    print({ stream, end: true });
  } catch (err) {
    print({ stream, error: err.name, status: err.status ?? null, detail: err.detail ?? err.message });
  }
}

await Promise.all(cfg.streams.map(one));
