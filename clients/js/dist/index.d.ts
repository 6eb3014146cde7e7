/** @tidemark/client: follow Tidemark streams from browsers and Node (docs/transports.md). */
export * from "./client.js";
export * from "./errors.js";
export type { TransportName, WebSocketCtor, WebSocketLike } from "./transports.js";
export { TRANSPORT_NAMES } from "./transports.js";
export { SseParser, type SseMessage } from "./sse.js";
export * from "./schema.js";
