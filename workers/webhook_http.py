"""One webhook delivery over HTTP: sign, POST, judge the answer; retried with bounded
exponential backoff and full jitter.

The client connects only to addresses that pass ``eventlog.targets`` at connection
time (:class:`GuardedResolver`; an IP literal is checked before the request), follows
no redirect (a 3xx is a failure, as Standard Webhooks says), does not read proxy
settings from the environment, and gives each attempt ``TIDEMARK_WEBHOOK_TIMEOUT``. A
2xx answer is a success; anything else (another status, a timeout, a refused or
reset connection) is a failed attempt. ``Retry-After`` (seconds) lengthens the next
backoff, capped at ``TIDEMARK_WEBHOOK_RETRY_MAX``.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from eventlog.settings import WebhookSettings
from eventlog.targets import (
    AllowList,
    UnsafeTarget,
    check_address,
    literal,
    split_target,
)
from eventlog.webhooks import Webhook
from workers.signing import WebhookSigner

log = logging.getLogger(__name__)

USER_AGENT: Final = "Tidemark-Webhooks/1"
#: Most bytes of an answer's body read (then the connection is released).
_ANSWER_BYTES: Final = 4096


def backoff(attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None = None,
            rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): full jitter
    over ``min(max_s, base_s * 2**(attempt-1))``, and at least ``Retry-After`` (capped
    at ``max_s``)."""
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 60))
    delay = rng(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(max_s, retry_after_s))
    return delay


class GuardedResolver(AbstractResolver):
    """Resolves through the system resolver and refuses a host any of whose addresses
    is not allowed (the connection is then refused: aiohttp raises a connector error)."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower().rstrip(".") in self._allow.hosts:
            return results
        for result in results:
            address = literal(result["host"].split("%", 1)[0])
            if address is None:
                raise OSError(f"{host} resolved to {result['host']!r}")
            try:
                check_address(address, self._allow, host)
            except UnsafeTarget as exc:
                raise OSError(str(exc)) from exc
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to."""

    ok: bool
    #: Why it failed ("" when ``ok``), for the logs and the dead letter.
    reason: str = ""
    retry_after_s: float | None = None


class Sender:
    """The HTTP side of the webhooks process: one client session, many attempts."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self._settings.allow_list), use_dns_cache=False,
            limit=max(100, self._settings.concurrency * 16), limit_per_host=0)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def attempt(self, webhook: Webhook, signer: WebhookSigner, *, msg_id: str,
                      body: bytes) -> Attempt:
        """POST ``body`` to the webhook once, signed now."""
        assert self._session is not None, "start() first"
        try:
            host, _ = split_target(webhook.url)
            address = literal(host)
            if address is not None:  # aiohttp does not resolve (nor we guard) a literal
                check_address(address, self._settings.allow_list, host)
        except UnsafeTarget as exc:
            return Attempt(False, f"refused target: {exc}")
        headers = {"Content-Type": "application/json",
                   **signer.headers(msg_id=msg_id, timestamp=int(time.time()), body=body,
                                    secret=webhook.secret)}
        try:
            async with self._session.post(webhook.url, data=body, headers=headers,
                                          allow_redirects=False) as resp:
                await resp.content.read(_ANSWER_BYTES)
                if 200 <= resp.status < 300:
                    return Attempt(True)
                return Attempt(False, f"answered {resp.status}",
                               _retry_after(resp.headers.get("Retry-After")))
        except TimeoutError:
            return Attempt(False, f"no answer within {self._settings.timeout_s:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(False, f"{type(exc).__name__}: {exc}"[:500])


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())

