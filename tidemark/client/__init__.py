"""``tidemark.client``: the Python client SDK of a Tidemark gateway (HTTP, aiohttp).

Creates streams, follows them over WebSocket, SSE or long-poll with automatic resume
and transport fallback, cancels them and sends input. It talks to gateways over the wire
only (no Kafka, nothing of ``gateway/`` or ``workers/``); backend services that write
events straight to Kafka use ``workers.publisher`` instead. See docs/transports.md,
"Client SDKs".
"""

from tidemark.client.backoff import Backoff
from tidemark.client.client import Client, Created, EventSource, TokenSource
from tidemark.client.errors import (
    BadRequest,
    ClientError,
    Forbidden,
    Gone,
    NotFound,
    NoTransport,
    ProblemError,
    RetriesExhausted,
    Unauthorized,
)
from tidemark.client.events import Item, Reset, StreamEvent

__all__ = [
    "Backoff", "BadRequest", "Client", "ClientError", "Created", "EventSource", "Forbidden",
    "Gone", "Item", "NoTransport", "NotFound", "ProblemError", "Reset", "RetriesExhausted",
    "StreamEvent", "TokenSource", "Unauthorized",
]
