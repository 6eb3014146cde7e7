// Starts the reference Durable Streams server (@durable-streams/server, in memory)
// on 127.0.0.1 and the port given as the first argument; prints its URL once listening.
import { DurableStreamTestServer } from "@durable-streams/server"

const port = Number(process.argv[2] ?? "4437")
const server = new DurableStreamTestServer({ port, host: "127.0.0.1" })
await server.start()
console.log(`REFERENCE_URL=http://127.0.0.1:${port}`)
const stop = async () => { await server.stop(); process.exit(0) }
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
