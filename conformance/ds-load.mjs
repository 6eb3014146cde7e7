// Writers and live followers of Durable Streams through the official client
// (@durable-streams/client): the driver of the chaos run (tests/ds_chaos.py) and of the
// benchmark's Durable Streams scenario (bench/scn_durable.py).
//
//   node ds-load.mjs <config.json>
//
// Config (JSON): {
//   "url": "http://host:port/ds/v1/stream",   // streams are <url>/<prefix>-<i>
//   "prefix": "chaos-1a2b", "streams": 2,
//   "token": "...",                  // optional: Authorization: Bearer
//   "mode": "chaos" | "append" | "fanout",
//   "seconds": 20,                   // how long writers write (after the followers connect)
//   "writers": 2, "rate": 20,        // per stream; appends/s per writer (chaos, fanout)
//   "followers": 2, "live": ["sse", "long-poll"],   // per stream; live modes, round robin
//   "drain_seconds": 30,             // after the writers stop: wait for followers this long
//   "retry_seconds": 120             // chaos: how long one request is retried
// }
// chaos: each writer is an IdempotentProducer (its own Producer-Id) appending {"w", "i"} JSON
//   messages; every follower reads the stream from its start with stream() live, resumes
//   from its last batch offset when a session ends; the JSON report lists what each
//   writer appended and every item each follower saw, in order.
// append: closed-loop writers (DurableStream.append, one POST per append, no batching):
//   appends/s and per-append latency.
// fanout: one IdempotentProducer per stream appends {"t": Date.now()} at `rate`; followers
//   measure Date.now() - t per delivered item.
// Lines on stdout: "READY" (followers connected, writing starts), "DONE" (writing ended),
// then the report as one JSON line starting with "REPORT ".
import { readFileSync } from "node:fs"
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client"

const cfg = JSON.parse(readFileSync(process.argv[2], "utf8"))
const headers = cfg.token ? { Authorization: `Bearer ${cfg.token}` } : {}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const retrySeconds = cfg.retry_seconds ?? 120

// A fetch that retries network errors and 5xx answers (a killed gateway, a broker that is
// restarting) with a bounded backoff: the IdempotentProducer itself does not retry them,
// and its Producer-Id/-Epoch/-Seq make every retry safe (the server answers 204 to one
// it already has). Bounded: each attempt 15 s, all attempts `retry_seconds`.
let retries = 0
async function retryingFetch(url, init) {
  const deadline = Date.now() + retrySeconds * 1000
  let delay = 50
  for (;;) {
    try {
      const res = await fetch(url, { ...init, signal: AbortSignal.timeout(15000) })
      if (res.status < 500 || Date.now() > deadline) return res
      await res.arrayBuffer().catch(() => {})
    } catch (err) {
      if (Date.now() > deadline) throw err
    }
    retries++
    await sleep(delay + Math.random() * delay)
    delay = Math.min(delay * 2, 1000)
  }
}

async function create(url) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await DurableStream.create({ url, headers, contentType: "application/json",
                                          fetch: retryingFetch })
    } catch (err) {
      if (attempt >= 20) throw err
      await sleep(250)
    }
  }
}

function percentiles(values) {
  if (!values.length) return { count: 0 }
  const v = Float64Array.from(values).sort()
  const at = (q) => v[Math.min(v.length - 1, Math.floor(q * v.length))]
  return { count: v.length, p50_ms: at(0.5), p95_ms: at(0.95), p99_ms: at(0.99),
           max_ms: v[v.length - 1] }
}

// A live follower: reads from the start, resumes from its last offset whenever a session
// ends (a gateway killed under it, a server that ends an SSE response), until stopped.
function follow(url, live, stop, onItems) {
  const f = { live, sessions: 0, errors: [], offset: "-1", connected: false }
  f.done = (async () => {
    while (!stop.signal.aborted) {
      f.sessions++
      try {
        const res = await stream({ url, headers, offset: f.offset, live, json: true,
                                   signal: stop.signal,
                                   backoffOptions: { initialDelay: 100, maxDelay: 1000,
                                                     multiplier: 1.5, maxRetries: 600 } })
        f.connected = true
        res.subscribeJson((batch) => {
          onItems(batch.items)
          f.offset = batch.offset
        })
        await res.closed
      } catch (err) {
        if (stop.signal.aborted) break
        if (f.errors.length < 20) f.errors.push(String(err).slice(0, 300))
        await sleep(200)
      }
    }
  })()
  return f
}

async function chaos() {
  const stop = new AbortController()
  const streams = []
  for (let s = 0; s < cfg.streams; s++) {
    const url = `${cfg.url}/${cfg.prefix}-${s}`
    const handle = await create(url)
    const st = { path: `${cfg.prefix}-${s}`, writers: [], followers: [] }
    for (let k = 0; k < cfg.followers; k++) {
      const items = []
      const f = follow(url, cfg.live[k % cfg.live.length], stop, (got) => items.push(...got))
      f.items = items
      st.followers.push(f)
    }
    for (let k = 0; k < cfg.writers; k++) {
      const w = { id: `w${k}`, appended: 0, errors: [] }
      w.producer = new IdempotentProducer(handle, w.id, {
        fetch: retryingFetch, lingerMs: 5, maxInFlight: 5,
        onError: (err) => { if (w.errors.length < 20) w.errors.push(String(err).slice(0, 300)) },
      })
      st.writers.push(w)
    }
    streams.push(st)
  }
  while (!streams.every((st) => st.followers.every((f) => f.connected))) await sleep(50)
  console.log("READY")
  const end = Date.now() + cfg.seconds * 1000
  const period = 1000 / cfg.rate
  await Promise.all(streams.flatMap((st) => st.writers.map(async (w) => {
    let next = Date.now()
    while (Date.now() < end) {
      w.producer.append(JSON.stringify({ w: w.id, i: w.appended }))
      w.appended++
      next += period
      await sleep(Math.max(0, next - Date.now()))
    }
  })))
  console.log("DONE")
  await Promise.all(streams.flatMap((st) => st.writers.map(async (w) => {
    try { await w.producer.flush() } catch (err) { w.errors.push(`flush: ${err}`) }
    await w.producer.detach().catch(() => {})
  })))
  const drainEnd = Date.now() + (cfg.drain_seconds ?? 30) * 1000
  for (const st of streams) {
    const total = st.writers.reduce((n, w) => n + w.appended, 0)
    while (Date.now() < drainEnd && st.followers.some((f) => f.items.length < total)) {
      await sleep(100)
    }
  }
  await sleep(500)  // anything repeated after the last expected item shows up too
  stop.abort()
  await Promise.all(streams.flatMap((st) => st.followers.map((f) => f.done)))
  return {
    retries,
    streams: streams.map((st) => ({
      path: st.path,
      writers: st.writers.map((w) => ({ id: w.id, appended: w.appended, errors: w.errors })),
      followers: st.followers.map((f) => ({ live: f.live, sessions: f.sessions,
                                            errors: f.errors,
                                            items: f.items.map((x) => [x.w, x.i]) })),
    })),
  }
}

async function append() {
  const body = JSON.stringify({ pad: "x".repeat(Math.max(0, (cfg.bytes ?? 100) - 10)) })
  const handles = []
  for (let s = 0; s < cfg.streams; s++) handles.push(await create(`${cfg.url}/${cfg.prefix}-${s}`))
  const took = []
  let failed = 0
  const run = async (handle, until, record) => {
    while (Date.now() < until) {
      const t0 = performance.now()
      try {
        await handle.append(body)
        if (record) took.push(performance.now() - t0)
      } catch { failed++ }
    }
  }
  await Promise.all(handles.map((h) => run(h, Date.now() + 2000, false)))  // warm-up
  const cpu0 = process.cpuUsage()
  console.log("READY")
  const t0 = performance.now()
  await Promise.all(handles.map((h) => run(h, Date.now() + cfg.seconds * 1000, true)))
  const wall = (performance.now() - t0) / 1000
  console.log("DONE")
  const cpu = process.cpuUsage(cpu0)
  return { writers: handles.length, appends: took.length, failed,
           appends_per_s: took.length / wall, latency: percentiles(took),
           client_cpu_s: (cpu.user + cpu.system) / 1e6, wall_s: wall }
}

async function fanout() {
  const stop = new AbortController()
  const lat = []
  let delivered = 0
  const streams = []
  for (let s = 0; s < cfg.streams; s++) {
    const url = `${cfg.url}/${cfg.prefix}-${s}`
    const handle = await create(url)
    const followers = []
    for (let k = 0; k < cfg.followers; k++) {
      followers.push(follow(url, cfg.live[k % cfg.live.length], stop, (items) => {
        const now = Date.now()
        for (const x of items) { if (x.t) { lat.push(now - x.t); delivered++ } }
      }))
      if (k % 100 === 99) await sleep(20)
    }
    const producer = new IdempotentProducer(handle, "bench", { fetch: retryingFetch,
                                                               lingerMs: 0 })
    streams.push({ followers, producer, appended: 0 })
  }
  const connectDeadline = Date.now() + 60000
  while (Date.now() < connectDeadline &&
         !streams.every((st) => st.followers.every((f) => f.connected))) await sleep(50)
  const connected = streams.reduce((n, st) => n + st.followers.filter((f) => f.connected).length, 0)
  await sleep(1000)
  const cpu0 = process.cpuUsage()
  console.log("READY")
  const end = Date.now() + cfg.seconds * 1000
  const period = 1000 / cfg.rate
  await Promise.all(streams.map(async (st) => {
    let next = Date.now()
    while (Date.now() < end) {
      st.producer.append(JSON.stringify({ t: Date.now() }))
      st.appended++
      next += period
      await sleep(Math.max(0, next - Date.now()))
    }
    await st.producer.flush()
  }))
  const appended = streams.reduce((n, st) => n + st.appended, 0)
  const expected = streams.reduce((n, st) => n + st.appended * st.followers.length, 0)
  const drainEnd = Date.now() + (cfg.drain_seconds ?? 10) * 1000
  while (Date.now() < drainEnd && delivered < expected) await sleep(50)
  console.log("DONE")
  const cpu = process.cpuUsage(cpu0)
  stop.abort()
  await Promise.all(streams.flatMap((st) => st.followers.map((f) => f.done)))
  return { readers: streams.reduce((n, st) => n + st.followers.length, 0), connected,
           appended, expected_deliveries: expected, delivered,
           sessions: streams.reduce((n, st) => n + st.followers.reduce((m, f) => m + f.sessions, 0), 0),
           latency: percentiles(lat), client_cpu_s: (cpu.user + cpu.system) / 1e6 }
}

const modes = { chaos, append, fanout }
const report = await modes[cfg.mode]()
console.log(`REPORT ${JSON.stringify(report)}`)
process.exit(0)
