"""Kafka topic ids, which aiokafka 0.14 does not expose.

A topic's id is the UUID Kafka gives it at creation. Deleting a topic and creating
it again under the same name gives a new id, so a hash of the id (the *topic epoch*)
tells a reader that offsets it remembers belong to an earlier topic of that name.

aiokafka's Metadata classes stop at v5, before topic ids (added in v10). This module
defines Metadata v12 (API key 3, the version Kafka 4.x clients use before v13's
top-level error code) with aiokafka's own protocol framework and sends it through
an already-bootstrapped :class:`aiokafka.AIOKafkaClient`. The layout follows
Kafka's ``MetadataRequest.json`` / ``MetadataResponse.json``, v12 (checked against
Kafka 4.4's own protocol documentation)::

    Metadata Request (Version: 12) => ?[topics] allow_auto_topic_creation
                                      include_topic_authorized_operations TAG_BUFFER
      topics => topic_id name TAG_BUFFER
        topic_id => UUID
        name => COMPACT_NULLABLE_STRING
      allow_auto_topic_creation => BOOLEAN
      include_topic_authorized_operations => BOOLEAN

    Metadata Response (Version: 12) => throttle_time_ms [brokers] cluster_id
                                       controller_id [topics] TAG_BUFFER
      throttle_time_ms => INT32
      brokers => node_id host port rack TAG_BUFFER
        node_id => INT32
        host => COMPACT_STRING
        port => INT32
        rack => COMPACT_NULLABLE_STRING
      cluster_id => COMPACT_NULLABLE_STRING
      controller_id => INT32
      topics => error_code name topic_id is_internal [partitions]
                topic_authorized_operations TAG_BUFFER
        error_code => INT16
        name => COMPACT_NULLABLE_STRING
        topic_id => UUID
        is_internal => BOOLEAN
        partitions => error_code partition_index leader_id leader_epoch
                      [replica_nodes] [isr_nodes] [offline_replicas] TAG_BUFFER
          error_code => INT16
          partition_index => INT32
          leader_id => INT32
          leader_epoch => INT32
          replica_nodes => INT32
          isr_nodes => INT32
          offline_replicas => INT32
        topic_authorized_operations => INT32

Request header v2 and response header v1 (both flexible), as for every flexible
version; ``FLEXIBLE_VERSION = True`` makes aiokafka use them.
"""

from __future__ import annotations

import hashlib
import logging
import random
import uuid
from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any, Final

from aiokafka.errors import (
    IncompatibleBrokerVersion,
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from eventlog.errors import KafkaUnavailable, TidemarkError

if TYPE_CHECKING:
    import aiokafka

__all__ = ["TopicIdUnavailable", "fetch_topic_ids", "topic_epoch"]

log = logging.getLogger(__name__)

METADATA_API_KEY: Final = 3
METADATA_TOPIC_ID_VERSION: Final = 12

# Kafka error codes this module tells apart (see Kafka's Errors.java).
_NONE: Final = 0
_UNKNOWN_TOPIC_OR_PARTITION: Final = 3
_INVALID_TOPIC: Final = 17
_TOPIC_AUTHORIZATION_FAILED: Final = 29

_ZERO_UUID: Final = uuid.UUID(int=0)


class TopicIdUnavailable(TidemarkError):
    """The broker cannot report topic ids: it does not support Metadata v12."""


class _Uuid(AbstractType):  # type: ignore[misc]  # aiokafka ships no type hints
    """Kafka's ``uuid`` wire type: 16 raw bytes, most significant first."""

    @classmethod
    def encode(cls, value: uuid.UUID) -> bytes:
        return value.bytes

    @classmethod
    def decode(cls, data: BytesIO) -> uuid.UUID:
        raw = data.read(16)
        if len(raw) != 16:
            raise ValueError("Buffer underrun decoding UUID")
        return uuid.UUID(bytes=raw)

    @classmethod
    def repr(cls, value: uuid.UUID) -> str:
        return str(value)


class MetadataResponse_v12(Response):  # type: ignore[misc]
    API_KEY = METADATA_API_KEY
    API_VERSION = METADATA_TOPIC_ID_VERSION
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class MetadataRequest_v12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = METADATA_API_KEY
    API_VERSION = METADATA_TOPIC_ID_VERSION
    RESPONSE_TYPE = MetadataResponse_v12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", _Uuid),
                ("name", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class TopicIdMetadataRequest(Request[MetadataRequest_v12]):  # type: ignore[misc]
    """Metadata by topic name, at a version whose response carries topic ids.

    Only v12 is offered, so :meth:`prepare` fails (``IncompatibleBrokerVersion`` or
    ``NotImplementedError``) on a broker whose Metadata range excludes it.
    """

    API_KEY = METADATA_API_KEY

    def __init__(self, topics: Sequence[str]) -> None:
        # Never null: a null array asks for every topic in the cluster.
        self._topics = list(topics)

    def build(self, request_struct_class: type[MetadataRequest_v12]) -> MetadataRequest_v12:
        return request_struct_class(
            [(_ZERO_UUID, name, {}) for name in self._topics],
            False,  # allow_auto_topic_creation: looking must never create
            False,  # include_topic_authorized_operations
            {},
        )


def topic_epoch(topic_id: uuid.UUID) -> str:
    """Short stable hash of a topic id: 8 lowercase hex chars.

    The first 4 bytes of the SHA-256 of the id's 16 bytes.
    """
    return hashlib.sha256(topic_id.bytes).digest()[:4].hex()


async def fetch_topic_ids(
    client: aiokafka.AIOKafkaClient, topics: Sequence[str]
) -> dict[str, uuid.UUID]:
    """Topic name -> topic id for the named topics that exist.

    ``client`` is an already-bootstrapped ``AIOKafkaClient`` (an admin client's or
    a consumer's ``_client``). Topics that do not exist are absent from the result,
    and so are topics the broker will not describe (not authorized, invalid name);
    the request never auto-creates a topic.

    Raises :class:`TopicIdUnavailable` if the broker does not support Metadata v12,
    and :class:`~eventlog.errors.KafkaUnavailable` if no broker answers.
    """
    if isinstance(topics, str):
        raise TypeError("topics must be a sequence of topic names, not a str")
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return {}
    response = await _send_to_any_broker(client, TopicIdMetadataRequest(wanted))
    return _topic_ids_from(response, set(wanted))


async def _send_to_any_broker(
    client: aiokafka.AIOKafkaClient, request: TopicIdMetadataRequest
) -> Any:
    node_ids = [broker.nodeId for broker in client.cluster.brokers()]
    if not node_ids:
        raise KafkaUnavailable("no Kafka broker is known to the client")
    random.shuffle(node_ids)
    last_error: Exception | None = None
    for node_id in node_ids:
        try:
            return await client.send(node_id, request)
        except (IncompatibleBrokerVersion, NotImplementedError) as exc:
            raise TopicIdUnavailable(
                f"Kafka broker {node_id} does not support Metadata "
                f"v{METADATA_TOPIC_ID_VERSION}, so topic ids are unavailable"
            ) from exc
        except (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError) as exc:
            log.warning("Metadata request to Kafka broker %s failed: %r", node_id, exc)
            last_error = exc
    raise KafkaUnavailable(
        f"no Kafka broker answered the topic id request (tried {len(node_ids)})"
    ) from last_error


def _topic_ids_from(response: Any, wanted: set[str]) -> dict[str, uuid.UUID]:
    ids: dict[str, uuid.UUID] = {}
    for error_code, name, topic_id, *_rest in response.topics:
        if name not in wanted:
            continue
        if error_code in (_UNKNOWN_TOPIC_OR_PARTITION, _INVALID_TOPIC):
            continue
        if error_code == _TOPIC_AUTHORIZATION_FAILED:
            log.warning("Not authorized to describe Kafka topic %s; no topic id", name)
            continue
        if topic_id == _ZERO_UUID:
            log.warning("Kafka reported no topic id for %s (error code %s)", name, error_code)
            continue
        if error_code != _NONE:
            # E.g. LEADER_NOT_AVAILABLE just after creation: the id is still valid.
            log.debug("Kafka topic %s has error code %s; id %s", name, error_code, topic_id)
        ids[name] = topic_id
    return ids
