// The AI SDK's own client code (the `ai` package's AbstractChat and DefaultChatTransport,
// as useChat runs them) against Tidemark's AI SDK routes (gateway/ai_chat.py). Driven by
// tests/e2e/test_ai_sdk.py with one JSON argument; prints one JSON line per step:
//   {"step": "text", "chat", "length"}   each time the answer's text grows
//   {"step": "sent" | "resumed" | "late" | "none" | "stopped", "chat", "status",
//    "error", "messages", ...}
import { AbstractChat, DefaultChatTransport } from "ai";

const cfg = JSON.parse(process.argv[2]);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The chat state a UI framework keeps (as @ai-sdk/react's does), reporting text growth. */
class State {
  constructor(chatId, messages = []) {
    this.chatId = chatId;
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
    this.length = 0;
  }
  pushMessage = (m) => { this.messages = [...this.messages, m]; this.report(); };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (i, m) => {
    this.messages = [...this.messages.slice(0, i), structuredClone(m), ...this.messages.slice(i + 1)];
    this.report();
  };
  snapshot = (x) => structuredClone(x);
  report() {
    const last = this.messages.at(-1);
    if (last?.role !== "assistant") return;
    const length = textOf(last).length;
    if (length !== this.length) {
      this.length = length;
      print({ step: "text", chat: this.chatId, length });
    }
  }
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new State(init.id, messages) });
  }
}

const textOf = (m) => m.parts.filter((p) => p.type === "text").map((p) => p.text).join("");
const headers = { Authorization: `Bearer ${cfg.token}` };
const transport = (options) => new DefaultChatTransport({
  api: `${cfg.base}/v1/ai/chat`, headers, body: { generator: "demo", options },
});

function newChat(id, options, messages = []) {
  const finishes = [];
  const chat = new Chat({
    id, messages, transport: transport(options),
    onFinish: ({ finishReason, isError, isAbort }) => finishes.push({ finishReason, isError, isAbort }),
  });
  chat.finishes = finishes;
  return chat;
}

const report = (step, chat, extra = {}) => print({
  step, chat: chat.id, status: chat.status, error: chat.error ? String(chat.error) : null,
  messages: chat.messages, finishes: chat.finishes, ...extra,
});

// 1. Ask; the test SIGKILLs the gateway serving the answer while it streams.
const chat = newChat(cfg.chatId, cfg.options);
await chat.sendMessage({ text: cfg.query });
report("sent", chat);

// 2. Resume (what useChat({resume: true}) does on reload), through the load balancer,
//    until the answer has finished; a try that meets the dead gateway is tried again.
let tries = 0;
while (tries < 30 && !chat.finishes.some((f) => f.finishReason && !f.isError)) {
  tries += 1;
  await chat.resumeStream();
  if (chat.status === "error") await sleep(200);
}
report("resumed", chat, { tries });

// 3. Resume after the end, from a fresh page (only the user's message is known).
const late = newChat(cfg.chatId, cfg.options, [chat.messages[0]]);
await late.resumeStream();
report("late", late);

// 4. A chat with no answer: 204, nothing to resume.
const none = newChat(cfg.emptyChatId, cfg.options);
await none.resumeStream();
report("none", none);

// 5. Stop: the app's stop button calls the stop route, then chat.stop().
const stopping = newChat(cfg.stopChatId, cfg.slowOptions);
const sending = stopping.sendMessage({ text: cfg.query });
while (!stopping.messages.some((m) => m.role === "assistant" && textOf(m).length > 0)) {
  await sleep(20);
}
const stop = await fetch(`${cfg.base}/v1/ai/chat/${cfg.stopChatId}/stop`, { method: "POST", headers });
const stopAnswer = await stop.json();
// Let the cancel reach the stream before the client lets go, as a user watching would.
const until = Date.now() + 10000;
while (!stopping.finishes.length && Date.now() < until) await sleep(50);
await stopping.stop();
await sending;
report("stopped", stopping, { stopStatus: stop.status, stopAnswer });
