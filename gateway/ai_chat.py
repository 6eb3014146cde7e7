"""AI SDK chats answered through Tidemark: the routes a ``useChat`` / ``Chat`` frontend's
``DefaultChatTransport`` calls (ai 7), serving each answer's Tidemark stream in the AI
SDK's UI message stream protocol (docs/ai-sdk.md).

- ``POST /v1/ai/chat`` (the transport's ``api``): ``{id, messages, trigger, messageId}``
  (plus Tidemark's own ``generator`` and ``options``) creates a stream whose query is the
  last user message (earlier turns go to ``options.messages``), records it as the chat's
  latest answer, and answers that stream as a UI message stream from its first event.
- ``GET /v1/ai/chat/{chatId}/stream`` (the transport's resume): the chat's latest answer,
  replayed from its first event (live or finished: it comes from the log), or 204 when
  the chat has none.
- ``POST /v1/ai/chat/{chatId}/stop``: cancels the chat's latest answer (the AI SDK's
  ``stop()`` only aborts the client's fetch).

The chat id is mapped to its latest stream in the stream index (an alias record,
``eventlog.index.put_alias``, keyed by a hash of namespace, tenant, owner and chat id), so
any gateway resumes any chat, also after every gateway restarted, and a chat id names
only the caller's own chats.

Events become UI message chunks (``data: {json}`` lines, then ``data: [DONE]``): a
``start`` (``messageId`` = the stream id, so a replay rebuilds the same message),
``partial_result`` chunks as one text part (``text-start``, ``text-delta``...,
``text-end``), ``metadata`` as ``message-metadata``, ``status`` and ``progress`` as
``data-status`` / ``data-progress`` parts updated in place, other events as
``data-<type>`` parts, and the terminal event as ``finish`` (``result``), ``error`` then
``finish`` (``error``), or ``abort`` then ``finish`` (``other``, for ``cancelled``).
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import orjson
from aiohttp import web

from eventlog import index
from eventlog.index import StreamInfo
from gateway import auth, items, streaming
from gateway.auth import Identity
from gateway.problems import Problem
from gateway.routes import (
    VALIDATORS,
    _authorize,
    _deadline,
    _json,
    _json_body,
    _ready,
    cancel_stream,
    claim,
    make_stream,
    session_of,
)
from schemas import events

#: The header the AI SDK's own responses carry (``UI_MESSAGE_STREAM_HEADERS``).
PROTOCOL_HEADERS: Final = {"x-vercel-ai-ui-message-stream": "v1"}
DONE: Final = b"data: [DONE]\n\n"
#: The one text part of an answer.
TEXT_ID: Final = "text-0"
#: Earlier turns sent to the generator (``create_stream.json``: options.messages).
MAX_HISTORY: Final = 200
MAX_TURN_CHARS: Final = 100_000
#: The AI SDK's finish reasons (``FinishReason``); others are ``other``.
FINISH_REASONS: Final = frozenset({"stop", "length", "content-filter", "tool-calls", "error",
                                   "interrupted", "other"})
#: Events shown as a data part that each new one replaces (same type and id).
IN_PLACE: Final = frozenset({events.STATUS, events.PROGRESS})


def chat_key(namespace: str, identity: Identity, chat_id: str) -> str:
    """The index key of a chat's latest answer: the caller's own (tenant and owner are
    in it), never a stream id (``:`` is in no stream id)."""
    digest = hashlib.blake2b("\0".join((namespace, identity.tenant, identity.owner,
                                        chat_id)).encode(),
                             digest_size=16, person=b"tidemark-aichat").hexdigest()
    return f"ai-chat:{digest}"


def text_of(message: dict[str, Any]) -> str:
    """A UI message's text: its ``text`` parts joined."""
    return "".join(str(p.get("text", "")) for p in message["parts"] if p.get("type") == "text")


def turns(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """The query (the last message, the user's) and the earlier turns with text, as
    ``{role, content}`` (the last :data:`MAX_HISTORY`)."""
    last = messages[-1]
    query = text_of(last)
    if last["role"] != "user" or not query.strip():
        raise Problem(422, "the last message must be the user's, with text",
                      field=f"/messages/{len(messages) - 1}")
    history = [{"role": m["role"], "content": text_of(m)[:MAX_TURN_CHARS]}
               for m in messages[:-1] if text_of(m)]
    return query, history[-MAX_HISTORY:]


class UIMessageTransport(streaming.SseTransport):
    """The pipeline's SSE frames, re-encoded as UI message stream chunks (one object per
    answer: it remembers whether the text part is open)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers = {**streaming.SSE_HEADERS, **PROTOCOL_HEADERS}
        self.started = False
        self.text_open = False
        self.texted = False

    async def write(self, session: streaming.Session, data: bytes) -> None:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            out.append(chunk({"type": "start", "messageId": session.stream_id,
                              "messageMetadata": {"streamId": session.stream_id}}))
        for item in items.decode(data):
            if isinstance(item, items.Comment):
                out.append(b": " + item.text.encode() + b"\n\n")  # pings, closing notes
            else:
                out.extend(self.parts(item))
        await super().write(session, b"".join(out))

    def parts(self, item: items.Item) -> list[bytes]:
        """The chunks of one event (or in-band notice)."""
        if item.id is None:  # a reset notice: retention deleted the answer's start
            return [chunk({"type": "data-reset", "data": orjson.loads(item.data),
                           "transient": True})]
        envelope = orjson.loads(item.data)
        kind, data = item.event, envelope.get("data") or {}
        if kind == events.PARTIAL_RESULT:
            return [*self._open_text(), chunk({"type": "text-delta", "id": TEXT_ID,
                                               "delta": str(data.get("chunk", ""))})]
        if kind == events.METADATA:
            return [chunk({"type": "message-metadata", "messageMetadata": data})]
        if kind == events.RESULT:
            text = data.get("text")
            out = [] if self.texted or not isinstance(text, str) or not text else [
                *self._open_text(), chunk({"type": "text-delta", "id": TEXT_ID, "delta": text})]
            reason = str(data.get("finishReason", "stop")).replace("_", "-")
            return [*out, *self._close_text(),
                    chunk({"type": "finish", "finishReason": reason if reason in FINISH_REASONS
                           else "other", "messageMetadata": {"lastEventId": item.id}}), DONE]
        if kind == events.ERROR:
            text = f"{data.get('code', 'error')}: {data.get('message', '')}".rstrip(": ")
            return [*self._close_text(), chunk({"type": "error", "errorText": text}),
                    chunk({"type": "finish", "finishReason": "error",
                           "messageMetadata": {"lastEventId": item.id,
                                               "retryable": bool(data.get("retryable"))}}),
                    DONE]
        if kind == events.CANCELLED:
            return [*self._close_text(),
                    chunk({"type": "abort", "reason": str(data.get("reason", "cancelled"))}),
                    chunk({"type": "finish", "finishReason": "other",
                           "messageMetadata": {"lastEventId": item.id, "cancelled": True}}),
                    DONE]
        return [chunk({"type": f"data-{kind}", "id": kind if kind in IN_PLACE else item.id,
                       "data": data})]

    def _open_text(self) -> list[bytes]:
        if self.text_open:
            return []
        self.text_open = self.texted = True
        return [chunk({"type": "text-start", "id": TEXT_ID})]

    def _close_text(self) -> list[bytes]:
        if not self.text_open:
            return []
        self.text_open = False
        return [chunk({"type": "text-end", "id": TEXT_ID})]


def chunk(part: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(part) + b"\n\n"


def _chat_id(request: web.Request) -> str:
    chat_id = request.match_info["chat_id"]
    if not events.is_valid_stream_id(chat_id):
        raise Problem(400, "a chat id is 1 to 128 letters, digits, '_' or '-'",
                      parameter="chatId")
    return chat_id


async def _serve(request: web.Request, identity: Identity, stream_id: str,
                 ) -> web.StreamResponse:
    """The stream as a UI message stream, from its first event."""
    claim(request, identity, stream_id)
    session = await session_of(request, identity, stream_id, UIMessageTransport())
    return await streaming.serve(session, None)


async def _latest(request: web.Request, scope: str,
                  ) -> tuple[Identity, str, StreamInfo | None]:
    """The caller (holding ``scope``), the path's chat id, and the record of the chat's
    latest answer (None: it has none)."""
    identity = await _authorize(request, scope)
    chat_id = _chat_id(request)
    services = await _ready(request)
    assert services.lookup is not None
    latest = await services.lookup.alias(
        chat_key(services.settings.log.namespace, identity, chat_id))
    return identity, chat_id, latest


async def post_chat(request: web.Request) -> web.StreamResponse:
    identity = await _authorize(request, auth.CREATE)
    services = await _ready(request)
    body = await _json_body(request)
    validators = request.app[VALIDATORS]
    validators.check("ai_chat", body)
    query, history = turns(body["messages"])
    options = dict(body.get("options") or {})
    if history:
        options["messages"] = history
    create = validators.create_request({
        "query": query, "options": options,
        "generator": body.get("generator") or services.settings.gateway.ai_chat_generator})
    info = await make_stream(request, identity, services, create)
    assert services.producer is not None
    async with _deadline(services):
        await index.put_alias(services.producer, chat_key(
            services.settings.log.namespace, identity, body["id"]), info)
    return await _serve(request, identity, info.stream_id)


async def resume_chat(request: web.Request) -> web.StreamResponse:
    identity, _, latest = await _latest(request, auth.READ)
    if latest is None:
        return web.Response(status=204)  # the transport's "nothing to resume"
    return await _serve(request, identity, latest.stream_id)


async def stop_chat(request: web.Request) -> web.Response:
    identity, chat_id, latest = await _latest(request, auth.CANCEL)
    if latest is None:
        raise Problem(404, f"chat {chat_id!r} has no answer")
    claim(request, identity, latest.stream_id)
    answer, status = await cancel_stream(request, identity, latest.stream_id)
    return _json({"chat_id": chat_id, **answer}, status=status)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/ai/chat", post_chat)
    app.router.add_get("/v1/ai/chat/{chat_id}/stream", resume_chat)
    app.router.add_post("/v1/ai/chat/{chat_id}/stop", stop_chat)
