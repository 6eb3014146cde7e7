"""Webhooks in the log: registrations, dead letters and replay requests, and a view of a
compacted topic read up to its end on demand.

- A registration (:class:`Webhook`) is a record of ``tidemark.<ns>.webhooks`` keyed
  ``<tenant>/<webhook id>``; deleting one writes a tombstone. The record holds the
  signing secret: nothing but the gateway's create answer and the delivery process ever
  shows it, and the topic should be readable by Tidemark's processes only (Kafka ACLs).
- A dead letter (:class:`DeadLetter`) is a delivery whose attempts ran out, a record of
  ``tidemark.<ns>.webhooks.dlq`` keyed by its id (a hash of tenant, webhook and event
  id: a delivery that fails again overwrites its own entry); a replay that delivered it
  writes a tombstone.
- A replay request is the dead letter itself, written to ``tidemark.<ns>.webhooks.replay``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from eventlog.clients import make_consumer, partitions_of, started, stop_client
from eventlog.settings import KafkaSettings

log = logging.getLogger(__name__)

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: The Standard Webhooks bounds of a symmetric secret, in bytes.
SECRET_MIN_BYTES: Final = 24
SECRET_MAX_BYTES: Final = 64
WEBHOOK_ID_PATTERN: Final = r"^wh_[0-9a-f]{24}$(?!\n)"
DEAD_LETTER_ID_PATTERN: Final = r"^dl_[0-9a-f]{32}$(?!\n)"
#: The signer of a registration that names none.
DEFAULT_SIGNER: Final = "standard"


def new_webhook_id() -> str:
    return "wh_" + secrets.token_hex(12)


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; ValueError if it is not one or its
    key is not 24 to 64 bytes long."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the secret after {SECRET_PREFIX} is not base64") from exc
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise ValueError(f"the secret's key must be {SECRET_MIN_BYTES} to "
                         f"{SECRET_MAX_BYTES} bytes, not {len(key)}")
    return key


@dataclass(frozen=True, kw_only=True, slots=True)
class Webhook:
    """One registration: which events of a tenant go where, signed how."""

    id: str
    tenant: str
    url: str
    #: The event types it receives.
    event_types: tuple[str, ...]
    secret: str
    signer: str = DEFAULT_SIGNER
    #: When it was registered (ms since the epoch): events written before are not sent.
    created_ms: int
    description: str = ""

    @property
    def key(self) -> str:
        return webhook_key(self.tenant, self.id)

    def wants(self, event_type: str, timestamp_ms: int) -> bool:
        return timestamp_ms >= self.created_ms and event_type in self.event_types

    def public(self) -> dict[str, Any]:
        """What the API shows (never the secret)."""
        return {"id": self.id, "url": self.url, "eventTypes": list(self.event_types),
                "signer": self.signer, "description": self.description,
                "createdAt": self.created_ms}

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Webhook:
        obj = orjson.loads(raw)
        obj["event_types"] = tuple(obj["event_types"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


def webhook_key(tenant: str, webhook_id: str) -> str:
    return f"{tenant}/{webhook_id}"


def dead_letter_id(tenant: str, webhook_id: str, event_id: str) -> str:
    digest = hashlib.blake2b(f"{tenant}\0{webhook_id}\0{event_id}".encode(), digest_size=16,
                             person=b"tidemark-dlq").hexdigest()
    return "dl_" + digest


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadLetter:
    """A delivery whose attempts ran out (or that found its webhook's queue full)."""

    id: str
    tenant: str
    webhook: str
    event_id: str
    stream: str
    type: str
    #: The body that was sent (the JSON payload, as text): a replay sends it again.
    payload: str
    reason: str
    attempts: int
    failed_ms: int
    #: How many replays of it failed too.
    replays: int = 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "webhook": self.webhook, "eventId": self.event_id,
                "stream": self.stream, "type": self.type, "reason": self.reason,
                "attempts": self.attempts, "failedAt": self.failed_ms,
                "replays": self.replays, "payload": orjson.loads(self.payload)}

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> DeadLetter:
        obj = orjson.loads(raw)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})


async def put(producer: AIOKafkaProducer, topic: str, key: str, value: bytes | None) -> None:
    """Write a record (None: a tombstone) and wait until the broker has it."""
    await (await producer.send(topic, value, key=key.encode()))


T = TypeVar("T")


class TopicView(Generic[T]):
    """The latest value of each key of a (compacted) topic, read up to the topic's end
    whenever :meth:`catch_up` is called (no background task). Holds at most
    ``max_entries`` keys: past it the least recently written are forgotten."""

    def __init__(self, kafka: KafkaSettings, topic: str, decode: Callable[[bytes], T], *,
                 role: str, max_entries: int) -> None:
        self._kafka = kafka
        self._topic = topic
        self._decode = decode
        self._role = role
        self._max = max_entries
        self._values: dict[str, T] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._lock = asyncio.Lock()
        #: Goes up with every record applied (a reader may rebuild what it derives).
        self.version = 0

    async def start(self) -> None:
        self._consumer = consumer = await started(
            lambda: make_consumer(self._kafka, role=self._role), self._kafka,
            f"{self._role} start")
        self._tps = [TopicPartition(self._topic, p)
                     for p in await partitions_of(consumer, self._topic)]
        consumer.assign(self._tps)
        await consumer.seek_to_beginning(*self._tps)

    async def stop(self) -> None:
        if self._consumer is not None:
            await stop_client(self._consumer)
            self._consumer = None

    async def catch_up(self, *, timeout: float) -> bool:
        """Apply every record written before this call; False if that took longer
        than ``timeout`` (what was read is applied)."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        async with self._lock:
            ends = await consumer.end_offsets(self._tps)

            async def read() -> None:
                while True:
                    behind = [tp for tp, end in ends.items()
                              if await consumer.position(tp) < end]
                    if not behind:
                        return
                    batches = await consumer.getmany(*behind, timeout_ms=100,
                                                     max_records=2000)
                    for records in batches.values():
                        for rec in records:
                            self._apply(rec.key, rec.value)

            try:
                await asyncio.wait_for(read(), timeout)
            except TimeoutError:
                return False
            return True

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = key.decode("utf-8", "replace")
        self.version += 1
        self._values.pop(name, None)
        if value is None:
            return
        try:
            self._values[name] = self._decode(value)
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
            log.warning("unreadable record %s of %s: %s", name, self._topic, exc)
            return
        while len(self._values) > self._max:
            self._values.pop(next(iter(self._values)))

    def get(self, key: str) -> T | None:
        return self._values.get(key)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._values.values()))

    def __len__(self) -> int:
        return len(self._values)
