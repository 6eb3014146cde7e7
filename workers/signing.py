"""Webhook signers: the :class:`WebhookSigner` protocol of the ``tidemark.webhook_signers``
entry points, and the built-in ``standard`` one.

``standard`` follows the Standard Webhooks specification (standardwebhooks.com, version
1.0.0, "Signature scheme" and "Webhook headers"): the content signed is
``{webhook-id}.{webhook-timestamp}.{body}``, the signature HMAC-SHA256 keyed with the
base64-decoded part of the ``whsec_`` secret, sent as ``v1,<base64 signature>`` in
``webhook-signature``, beside ``webhook-id`` (the event id: the same on every attempt
and replay, the receiver's idempotency key) and ``webhook-timestamp`` (integer unix
seconds of this attempt, so a receiver refuses old replays).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final, Protocol, runtime_checkable

from eventlog.webhooks import secret_key

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"


@runtime_checkable
class WebhookSigner(Protocol):
    """Signs one delivery attempt. ``name`` is the entry point's name (a registration's
    ``signer``); :meth:`headers` returns the headers to send with ``body``. It must not
    block (no I/O): it runs on the delivery process's event loop."""

    name: str

    def headers(self, *, msg_id: str, timestamp: int, body: bytes,
                secret: str) -> dict[str, str]: ...


def standard_signature(*, msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class StandardSigner:
    """Standard Webhooks, symmetric (``v1``)."""

    name = "standard"

    def headers(self, *, msg_id: str, timestamp: int, body: bytes,
                secret: str) -> dict[str, str]:
        return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: standard_signature(msg_id=msg_id, timestamp=timestamp,
                                                     body=body, secret=secret)}
