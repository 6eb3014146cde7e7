// Writers and live followers of Durable Streams through the official client
// (@durable-streams/client): the driver of the chaos run (tests/ds_chaos.py) and the
// writer of the benchmark's Durable Streams fan-out (bench/scn_durable.py).
//
//   node ds-load.mjs <config.json>
//
// Config (JSON): {
//   "url": "http://host:port/ds/v1/stream",   // streams are <url>/<prefix>-<i>
//   "prefix": "chaos-1a2b", "streams": 2,
//   "token": "...",                  // optional: Authorization: Bearer
//   "mode": "chaos" | "write",
//   "seconds": 20,                   // how long writers write (after the followers connect)
//   "writers": 2, "rate": 20,        // per stream; appends/s per writer
//   "followers": 2, "live": ["sse", "long-poll"],   // per stream; live modes, round robin
//   "drain_seconds": 30,             // after the writers stop: wait for followers this long
//   "retry_seconds": 120             // chaos: how long one request is retried
// }
// chaos: each writer is an IdempotentProducer (its own Producer-Id) appending {"w", "i"} JSON
//   messages; every follower reads the stream from its start with stream() live, resumes
//   from its last batch offset when a session ends; the JSON report lists what each
//   writer appended and every item each follower saw, in order.
// write: one IdempotentProducer per stream appends 3 warm-up messages, then (after READY)
//   {"bench_ns": <unix ns>} at `rate` (the benchmark's fan-out writer; its readers are
//   bench/sseclient).
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

// The benchmark's writer: one IdempotentProducer (linger 0) per stream appends
// {"bench_ns": <unix ns>} at `rate` for `seconds`; readers (bench/sseclient) take their
// latency from it.
async function write() {
  const streams = []
  for (let s = 0; s < cfg.streams; s++) {
    const handle = new DurableStream({ url: `${cfg.url}/${cfg.prefix}-${s}`, headers,
                                       contentType: "application/json" })
    const producer = new IdempotentProducer(handle, "bench", { fetch: retryingFetch,
                                                               lingerMs: 0 })
    streams.push({ producer, appended: 0, errors: [] })
  }
  // Warm-up (connections, the server's first write to the stream): messages without
  // bench_ns, which the readers do not time.
  for (let k = 0; k < 3; k++) {
    for (const st of streams) st.producer.append(`{"warmup":${k}}`)
    await Promise.all(streams.map((st) => st.producer.flush()))
    await sleep(100)
  }
  await sleep(500)
  const cpu0 = process.cpuUsage()
  console.log("READY")
  await sleep(1000)  // the harness restarts the readers' counts meanwhile
  const end = Date.now() + cfg.seconds * 1000
  const period = 1000 / cfg.rate
  await Promise.all(streams.map(async (st) => {
    let next = Date.now()
    while (Date.now() < end) {
      const ns = Math.round((performance.timeOrigin + performance.now()) * 1e6)
      st.producer.append(`{"bench_ns":${ns}}`)
      st.appended++
      next += period
      await sleep(Math.max(0, next - Date.now()))
    }
    try { await st.producer.flush() } catch (err) { st.errors.push(String(err)) }
  }))
  const cpu = process.cpuUsage(cpu0)
  console.log("DONE")
  await sleep(1500)  // the harness samples every process's CPU while this one still runs
  return { appended: streams.reduce((n, st) => n + st.appended, 0),
           errors: streams.flatMap((st) => st.errors).slice(0, 10),
           client_cpu_s: (cpu.user + cpu.system) / 1e6 }
}

const modes = { chaos, write }
const report = await modes[cfg.mode]()
// Exit once the report is written: process.exit() right after a write to a pipe cuts off
// what the pipe has not taken yet (a long run's report is megabytes).
process.stdout.write(`REPORT ${JSON.stringify(report)}\n`, () => process.exit(0))
