"""The webhook routes: a tenant registers, lists and deletes its webhooks, lists their
dead letters and replays one (docs/webhooks.md). Every route needs ``webhooks:manage``
(or ``admin``) and sees the caller's tenant only: another tenant's webhook or dead
letter answers 404, exactly like one that does not exist.

Registrations and dead letters live in Kafka only (``eventlog.webhooks``); this gateway
reads their topics up to the end on each request (:class:`WebhookStore`, started at the
first webhook request), so what one gateway wrote is seen through every other. The
``tidemark webhooks`` processes deliver (``workers.webhooks``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from eventlog import plugins
from eventlog.errors import KafkaUnavailable
from eventlog.settings import Settings
from eventlog.targets import check_url
from eventlog.topics import webhooks_dlq_topic, webhooks_replay_topic, webhooks_topic
from eventlog.webhooks import (
    DEAD_LETTER_ID_PATTERN,
    DEFAULT_SIGNER,
    WEBHOOK_ID_PATTERN,
    DeadLetter,
    TopicView,
    Webhook,
    new_secret,
    new_webhook_id,
    put,
    secret_key,
    webhook_key,
)
from gateway import auth
from gateway.audit import AUDIT
from gateway.problems import Problem
from gateway.routes import VALIDATORS, _authorize, _deadline, _json, _json_body, _ready
from gateway.services import Services
from schemas.validation import InvalidInput

PATH: Final = "/v1/webhooks"
_WEBHOOK_RE: Final = re.compile(WEBHOOK_ID_PATTERN)
_DEAD_LETTER_RE: Final = re.compile(DEAD_LETTER_ID_PATTERN)
_REGISTRY_MAX: Final = 1_000_000


class WebhookStore:
    """This gateway's views of the registrations and the dead letters (started once,
    at the first request that needs them) and the writes."""

    def __init__(self, settings: Settings) -> None:
        ns = settings.log.namespace
        self.settings = settings
        self.topic = webhooks_topic(ns)
        self.dlq_topic = webhooks_dlq_topic(ns)
        self.replay_topic = webhooks_replay_topic(ns)
        self.registry = TopicView(settings.kafka, self.topic, Webhook.from_json,
                                  role="gateway-webhooks", max_entries=_REGISTRY_MAX)
        self.dead_letters = TopicView(settings.kafka, self.dlq_topic, DeadLetter.from_json,
                                      role="gateway-dead-letters",
                                      max_entries=settings.webhooks.dlq_view_max)
        self._lock = asyncio.Lock()
        self._started = False

    async def current(self, *views: TopicView[Any]) -> None:
        """Start the views if need be, then read ``views`` up to their topics' ends."""
        async with self._lock:
            if not self._started:
                await self.registry.start()
                await self.dead_letters.start()
                self._started = True
        wait = self.settings.gateway.index_wait_s
        for view in views:
            if not await view.catch_up(timeout=wait):
                raise KafkaUnavailable(f"could not read {self.topic} up to its end in {wait:g}s")

    async def close(self) -> None:
        await self.registry.stop()
        await self.dead_letters.stop()

    def webhooks_of(self, tenant: str) -> list[Webhook]:
        return sorted((w for w in self.registry if w.tenant == tenant),
                      key=lambda w: (w.created_ms, w.id))

    def webhook(self, tenant: str, webhook_id: str) -> Webhook:
        """The tenant's webhook, else 404 (also for another tenant's)."""
        found = (self.registry.get(webhook_key(tenant, webhook_id))
                 if _WEBHOOK_RE.match(webhook_id) else None)
        if found is None:
            raise Problem(404, f"no webhook {webhook_id!r}")
        return found


STORE = web.AppKey("webhook_store", WebhookStore)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[STORE].close()


async def _services(request: web.Request) -> tuple[auth.Identity, Services, WebhookStore]:
    identity = await _authorize(request, auth.WEBHOOKS)
    return identity, await _ready(request), request.app[STORE]


def _created(body: dict[str, Any], identity: auth.Identity) -> Webhook:
    secret = body.get("secret") or new_secret()
    try:
        secret_key(secret)
    except ValueError as exc:
        raise InvalidInput(str(exc), pointer="/secret") from exc
    return Webhook(id=new_webhook_id(), tenant=identity.tenant, url=body["url"],
                   event_types=tuple(body["eventTypes"]), secret=secret,
                   signer=body.get("signer", DEFAULT_SIGNER),
                   created_ms=int(time.time() * 1000),
                   description=body.get("description", ""))


async def create_webhook(request: web.Request) -> web.Response:
    identity, services, store = await _services(request)
    body = await _json_body(request)
    request.app[VALIDATORS].check("webhook_create", body)
    webhook = _created(body, identity)
    signers = plugins.selected_names(plugins.WEBHOOK_SIGNERS, services.settings.plugin_allow)
    if webhook.signer not in signers:
        raise InvalidInput(f"unknown webhook signer {webhook.signer!r}; known: "
                           f"{', '.join(sorted(signers)) or 'none'}", pointer="/signer")
    await check_url(webhook.url, services.settings.webhooks.allow_list)
    async with _deadline(services):
        await store.current(store.registry)
        limit = services.settings.webhooks.max_per_tenant
        if len(store.webhooks_of(identity.tenant)) >= limit:
            raise Problem(409, f"this tenant has {limit} webhooks already "
                          "(TIDEMARK_WEBHOOK_MAX_PER_TENANT): delete one first")
        assert services.producer is not None
        await put(services.producer, store.topic, webhook.key, webhook.to_json())
    request.app[AUDIT].record(request, "webhook-create", outcome="ok", webhook=webhook.id)
    return _json({**webhook.public(), "secret": webhook.secret}, status=201,
                 headers={"Location": f"{PATH}/{webhook.id}"})


async def list_webhooks(request: web.Request) -> web.Response:
    identity, services, store = await _services(request)
    async with _deadline(services):
        await store.current(store.registry)
    return _json({"webhooks": [w.public() for w in store.webhooks_of(identity.tenant)]})


async def delete_webhook(request: web.Request) -> web.Response:
    identity, services, store = await _services(request)
    async with _deadline(services):
        await store.current(store.registry)
        webhook = store.webhook(identity.tenant, request.match_info["id"])
        assert services.producer is not None
        await put(services.producer, store.topic, webhook.key, None)
    request.app[AUDIT].record(request, "webhook-delete", outcome="ok", webhook=webhook.id)
    return web.Response(status=204)


def _letters(store: WebhookStore, webhook: Webhook) -> list[DeadLetter]:
    return sorted((d for d in store.dead_letters
                   if d.tenant == webhook.tenant and d.webhook == webhook.id),
                  key=lambda d: (d.failed_ms, d.id))


async def list_dead_letters(request: web.Request) -> web.Response:
    identity, services, store = await _services(request)
    async with _deadline(services):
        await store.current(store.registry, store.dead_letters)
    webhook = store.webhook(identity.tenant, request.match_info["id"])
    letters = _letters(store, webhook)
    newest = letters[-services.settings.webhooks.dlq_list_max:]
    return _json({"webhook": webhook.id, "deadLetters": [d.public() for d in newest],
                  "truncated": len(newest) < len(letters)})


async def replay_dead_letter(request: web.Request) -> web.Response:
    identity, services, store = await _services(request)
    async with _deadline(services):
        await store.current(store.registry, store.dead_letters)
        webhook = store.webhook(identity.tenant, request.match_info["id"])
        letter_id = request.match_info["letter"]
        letter = (store.dead_letters.get(letter_id)
                  if _DEAD_LETTER_RE.match(letter_id) else None)
        if letter is None or letter.tenant != webhook.tenant or letter.webhook != webhook.id:
            raise Problem(404, f"no dead letter {letter_id!r} of webhook {webhook.id!r}")
        assert services.producer is not None
        await put(services.producer, store.replay_topic, letter.id, letter.to_json())
    request.app[AUDIT].record(request, "webhook-replay", outcome="ok", webhook=webhook.id,
                              dead_letter=letter.id)
    return _json({"deadLetter": letter.id, "eventId": letter.event_id, "replay": "queued"},
                 status=202)


def add_routes(app: web.Application, settings: Settings) -> None:
    app[STORE] = WebhookStore(settings)
    app.cleanup_ctx.append(_store_ctx)
    app.router.add_post(PATH, create_webhook)
    app.router.add_get(PATH, list_webhooks)
    app.router.add_delete(PATH + "/{id}", delete_webhook)
    app.router.add_get(PATH + "/{id}/dead-letters", list_dead_letters)
    app.router.add_post(PATH + "/{id}/dead-letters/{letter}/replay", replay_dead_letter)
