"""The ``openai`` generator: an answer streamed from an OpenAI-compatible chat-completions
endpoint (``TIDEMARK_OPENAI_URL``, ``_MODEL``, ``_API_KEY``; vLLM, llama.cpp's server,
Ollama or a hosted API).

Events: seq 1 ``status`` running, seq 2 ``metadata`` ``{model, query, backend}``, then a
``partial_result`` per non-empty ``delta.content`` of choice 0, a ``metadata``
``{model, usage}`` when the upstream sent usage (``stream_options.include_usage``), and
``result`` ``{text, model, finishReason}``. Failures end the stream with ``error``:

- 429 or 5xx, or no answer, before the first token: retried up to
  ``TIDEMARK_OPENAI_RETRIES`` times (Retry-After honoured, at most
  ``TIDEMARK_OPENAI_MAX_RETRY_AFTER`` s), then ``upstream_rate_limited`` /
  ``upstream_unavailable``, ``retryable: true``;
- any other 4xx: ``upstream_rejected``, ``retryable: false``;
- a disconnect, a silence longer than ``TIDEMARK_OPENAI_READ_TIMEOUT`` or an ``error``
  object after the first token: ``upstream_disconnected`` / ``upstream_timeout`` /
  ``upstream_error``, ``retryable: true`` (the text so far stays in the log).

Takeover. A model's answer cannot be replayed: asked again, it says something else. Seqs
1 and 2 are the same for every run, so a worker that takes the stream over before any
token was committed (``start_seq`` <= 3) asks the upstream afresh and writes what the
log lacks. Once tokens are in the log it does not ask again (the new answer would not
continue the committed text, and "continue this assistant message" is not part of the
chat-completions API): it ends the stream with ``error`` ``generation_interrupted``,
``retryable: true``, at ``start_seq`` (docs/plugins.md).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
import orjson

from eventlog.jobs import Job
from eventlog.settings import OpenAISettings, Settings
from schemas import events
from workers.generators import Draft

log = logging.getLogger(__name__)

NAME: Final = "openai"
#: The last seq that is the same for every run (status, metadata): a takeover at or
#: before the first token's seq asks the upstream afresh.
FIRST_TOKEN_SEQ: Final = 3
#: How much of an upstream's error body a message quotes.
QUOTE_CHARS: Final = 300
#: Backoff before a retry when the upstream names no Retry-After: base * 2 ** attempt.
BACKOFF_BASE_S: Final = 0.5


class _Failure(Exception):
    """Why an attempt ended without an answer: the ``error`` event's data, and whether
    the attempt may be made again (before the first token) and after how long."""

    def __init__(self, code: str, message: str, *, retryable: bool,
                 again: bool = False, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.data = {"code": code, "message": message[:4096], "retryable": retryable}
        self.again = again
        self.wait_s = wait_s


@dataclass
class _Answer:
    """What the stream has taken so far."""

    text: list[str] = field(default_factory=list)
    size: int = 0
    tokens: int = 0
    model: str = ""
    finish: str | None = None
    usage: dict[str, Any] | None = None
    done: bool = False


def messages_of(job: Job) -> list[dict[str, str]]:
    """The chat sent upstream: the job's ``options.messages`` (earlier turns), then its
    query as the last user message."""
    history = job.options.get("messages") or []
    out = [{"role": str(m["role"]), "content": str(m["content"])} for m in history]
    out.append({"role": "user", "content": job.query})
    return out


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


async def sse_data(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event of a response body (its ``data:`` lines
    joined with newlines); comments and other fields are skipped."""
    lines: list[str] = []
    while True:
        raw = await content.readline()
        if not raw:
            break
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    if lines:
        yield "\n".join(lines)


def _quote(body: bytes) -> str:
    """An upstream error body as a message: its ``error.message`` if it is JSON."""
    try:
        obj = orjson.loads(body)
        message = obj.get("error", {}).get("message") if isinstance(obj, dict) else None
        if isinstance(message, str):
            return message[:QUOTE_CHARS]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return body[:QUOTE_CHARS].decode("utf-8", errors="replace")


class OpenAIGenerator:
    name = NAME
    takes_settings: Literal[True] = True

    def __init__(self, settings: Settings) -> None:
        self._cfg: OpenAISettings = settings.openai

    def body(self, job: Job) -> dict[str, Any]:
        """The chat-completions request for ``job``."""
        body: dict[str, Any] = {"model": self._cfg.model, "messages": messages_of(job),
                                "stream": True, "stream_options": {"include_usage": True}}
        for option in ("max_tokens", "temperature"):
            if job.options.get(option) is not None:
                body[option] = job.options[option]
        return body

    async def events(self, job: Job, start_seq: int) -> AsyncIterator[Draft]:
        cfg = self._cfg
        if start_seq > FIRST_TOKEN_SEQ:
            yield Draft(start_seq, events.ERROR, {
                "code": "generation_interrupted", "retryable": True,
                "message": "the worker streaming this answer stopped after "
                           f"{start_seq - FIRST_TOKEN_SEQ} chunks; a model's answer cannot "
                           "be resumed, so it ends here: ask again for a new one"})
            return
        opening = [
            (events.STATUS, {"state": "running", "message": "asking the model"}),
            (events.METADATA, {"model": cfg.model, "query": job.query, "backend": NAME})]
        for seq, (kind, data) in enumerate(opening, start=1):
            if seq >= start_seq:
                yield Draft(seq, kind, data)
        seq = FIRST_TOKEN_SEQ
        if not cfg.url or not cfg.model:
            yield Draft(seq, events.ERROR, {
                "code": "openai_not_configured", "retryable": False,
                "message": "this worker has no TIDEMARK_OPENAI_URL or TIDEMARK_OPENAI_MODEL"})
            return
        answer = _Answer(model=cfg.model)
        timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s,
                                        sock_read=cfg.read_timeout_s)
        headers = {"Accept": "text/event-stream"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        url = cfg.url.rstrip("/") + "/chat/completions"
        body = self.body(job)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
            attempt = index = 0
            while True:
                try:
                    async for chunk in self._attempt(http, url, body, answer, attempt):
                        yield Draft(seq, events.PARTIAL_RESULT, {
                            "chunk": chunk, "chunkIndex": index, "isComplete": False})
                        seq += 1
                        index += 1
                    break
                except _Failure as failure:
                    if failure.again and answer.tokens == 0 and attempt < cfg.retries:
                        log.warning("stream %s: upstream attempt %s failed (%s); retrying "
                                    "in %.2f s", job.stream_id, attempt + 1,
                                    failure.data["code"], failure.wait_s)
                        await asyncio.sleep(failure.wait_s)
                        attempt += 1
                        continue
                    yield Draft(seq, events.ERROR, failure.data)
                    return
        if answer.usage is not None:
            yield Draft(seq, events.METADATA, {"model": answer.model, "usage": answer.usage})
            seq += 1
        yield Draft(seq, events.RESULT, {"text": "".join(answer.text), "model": answer.model,
                                         "finishReason": answer.finish or "stop",
                                         "tokens": answer.tokens})

    def _backoff(self, attempt: int, asked: float | None) -> float:
        wait = BACKOFF_BASE_S * 2 ** attempt if asked is None else asked
        return min(wait, self._cfg.max_retry_after_s)

    async def _attempt(self, http: aiohttp.ClientSession, url: str, body: dict[str, Any],
                       answer: _Answer, attempt: int) -> AsyncIterator[str]:
        """One request: yields each text delta; raises :class:`_Failure` unless the
        answer finished."""
        try:
            async with http.post(url, data=orjson.dumps(body),
                                 headers={"Content-Type": "application/json"}) as resp:
                if resp.status != 200:
                    raise self._refused(resp.status, await resp.content.read(64 * 1024),
                                        resp.headers.get("Retry-After"), attempt)
                async for payload in sse_data(resp.content):
                    if payload.strip() == "[DONE]":
                        answer.done = True
                        return
                    for text in self._take(payload, answer):
                        yield text
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            raise _Failure("upstream_timeout", f"the model sent nothing for "
                           f"{self._cfg.read_timeout_s:g} s", retryable=True,
                           again=True, wait_s=self._backoff(attempt, None)) from exc
        except aiohttp.ClientError as exc:
            code, what = (("upstream_disconnected", "the connection to the model broke")
                          if answer.tokens else
                          ("upstream_unavailable", "the model's endpoint did not answer"))
            raise _Failure(code, f"{what}: {type(exc).__name__}", retryable=True,
                           again=True, wait_s=self._backoff(attempt, None)) from exc
        except ValueError as exc:  # a line longer than the reader's limit
            raise _Failure("upstream_protocol", f"the model's stream is not readable: {exc}",
                           retryable=True) from exc
        if answer.finish is None:
            # The body ended with neither [DONE] nor a finish_reason: cut off.
            raise _Failure("upstream_disconnected", "the model's stream ended before the "
                           "answer finished", retryable=True, again=True,
                           wait_s=self._backoff(attempt, None))

    def _refused(self, status: int, body: bytes, after: str | None, attempt: int,
                 ) -> _Failure:
        message = f"the model's endpoint answered {status}: {_quote(body)}"
        if status == 429:
            return _Failure("upstream_rate_limited", message, retryable=True, again=True,
                            wait_s=self._backoff(attempt, retry_after(after)))
        if status >= 500:
            return _Failure("upstream_unavailable", message, retryable=True, again=True,
                            wait_s=self._backoff(attempt, retry_after(after)))
        return _Failure("upstream_rejected", message, retryable=False)

    def _take(self, payload: str, answer: _Answer) -> list[str]:
        """The text deltas of one chunk; its finish reason, usage and model go into
        ``answer``."""
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise _Failure("upstream_protocol", "the model sent a chunk that is not JSON",
                           retryable=True) from exc
        if not isinstance(obj, dict):
            raise _Failure("upstream_protocol", "the model sent a chunk that is not an "
                           "object", retryable=True)
        if obj.get("error") is not None:
            raise _Failure("upstream_error", "the model failed mid-answer: "
                           f"{_quote(orjson.dumps(obj))}", retryable=True)
        if isinstance(obj.get("model"), str) and obj["model"]:
            answer.model = obj["model"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            answer.usage = {
                camel: usage[snake] for snake, camel in (
                    ("prompt_tokens", "promptTokens"), ("completion_tokens", "completionTokens"),
                    ("total_tokens", "totalTokens")) if isinstance(usage.get(snake), int)}
        out = []
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                answer.size += len(content.encode())
                if answer.size > self._cfg.max_answer_bytes:
                    raise _Failure("answer_too_long", "the answer is longer than "
                                   f"{self._cfg.max_answer_bytes} bytes", retryable=False)
                answer.text.append(content)
                answer.tokens += 1
                out.append(content)
            if isinstance(choice.get("finish_reason"), str):
                answer.finish = choice["finish_reason"]
        return out
