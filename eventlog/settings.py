"""Typed settings, read once from ``TIDEMARK_*`` environment variables.

Each field names its variable in ``metadata["env"]``; :func:`load_settings` is the
only code that reads the environment, and it reports names it does not know.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

import orjson

from eventlog import loglevels
from eventlog.contentpolicy import ContentPolicy, parse_policy
from eventlog.errors import ConfigError
from eventlog.experiments import Experiments, parse_experiments
from eventlog.plugins import AllowListError, parse_allow
from eventlog.statsd import FLAVORS as STATSD_FLAVORS
from eventlog.statsd import StatsdConfig, parse_address, parse_tags
from eventlog.targets import AllowList, parse_allow_list
from eventlog.targets import AllowListError as TargetAllowListError

log = logging.getLogger(__name__)

PREFIX: Final = "TIDEMARK_"
PLACEMENTS: Final = ("partitioned", "topic-per-stream")
NAMESPACE_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$(?!\n)"


def _env(name: str, default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"env": PREFIX + name, "help": help_text})


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    bootstrap: str = _env("KAFKA_BOOTSTRAP", "", "Kafka bootstrap servers, host:port[,host:port]")
    client_id: str = _env("KAFKA_CLIENT_ID", "tidemark", "client.id prefix of every Kafka client")
    request_timeout_ms: int = _env("KAFKA_REQUEST_TIMEOUT_MS", 15_000, "Kafka request timeout")
    connect_timeout_s: float = _env(
        "KAFKA_CONNECT_TIMEOUT", 60.0, "how long a process waits for Kafka at start")
    jars_dir: Path = _env(  # noqa: RUF009 (Path is immutable)
        "KAFKA_JARS", Path(".cache/kafka/libs"), "where `make setup` put the broker's jars")
    mirror_jars_dir: Path = _env(  # noqa: RUF009 (Path is immutable)
        "MIRROR_JARS", Path(".cache/mirror/libs"),
        "where `make setup` put MirrorMaker 2's jars (`tidemark mirror`)")


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    namespace: str = _env("NAMESPACE", "default", "the namespace (tenant) this process serves")
    partitions: int = _env("PARTITIONS", 12, "partitions of new events/jobs/index topics")
    replication_factor: str = _env(
        "REPLICATION_FACTOR", "auto", "replication factor of new topics; auto: "
        "min(3, brokers in the cluster)")
    min_insync_replicas: str = _env(
        "MIN_INSYNC_REPLICAS", "auto", "min.insync.replicas of new topics; auto: 2 when "
        "their replication factor is 3 or more, else the broker's default")
    retention_ms: int = _env("RETENTION_MS", 86_400_000, "retention of the events topic")
    placement: str = _env(
        "PLACEMENT", "partitioned", "partitioned (default) or topic-per-stream (benchmarks)")
    mirror_of: str = _env(
        "MIRROR_OF", "", "the alias of the namespace's home cluster when this cluster holds a "
        "MirrorMaker 2 copy of its events topic: gateways serve its streams read-only and "
        "find them by time, not offset (docs/federation.md); empty: this is its home")
    janitor_interval_s: float = _env(
        "JANITOR_INTERVAL", 0.0, "seconds between workers' sweeps that tombstone index "
        "records of streams retention deleted (0: a quarter of the retention, <= 1 h)")


    def __post_init__(self) -> None:
        for name, value in (("REPLICATION_FACTOR", self.replication_factor),
                            ("MIN_INSYNC_REPLICAS", self.min_insync_replicas)):
            if value != "auto" and not (value.isdigit() and 1 <= int(value) <= 32):
                raise ConfigError(f"TIDEMARK_{name} must be auto or 1 to 32")
        if (self.replication_factor != "auto" and self.min_insync_replicas != "auto"
                and int(self.min_insync_replicas) > int(self.replication_factor)):
            raise ConfigError("TIDEMARK_MIN_INSYNC_REPLICAS must not exceed "
                              "TIDEMARK_REPLICATION_FACTOR")

    def replication(self, brokers: int) -> tuple[int, int | None]:
        """``(replication factor, min.insync.replicas or None: the broker's default)`` of a
        new topic on a cluster of ``brokers`` brokers."""
        rf = min(3, max(1, brokers)) if self.replication_factor == "auto" \
            else int(self.replication_factor)
        if self.min_insync_replicas != "auto":
            return rf, int(self.min_insync_replicas)
        return rf, (2 if rf >= 3 else None)


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    host: str = _env("HOST", "127.0.0.1", "gateway listen address")
    port: int = _env("PORT", 8080, "gateway listen port (0: any free port)")
    heartbeat_s: float = _env("HEARTBEAT_SECONDS", 15.0, "interval of `: ping` comments")
    retry_ms: int = _env("SSE_RETRY_MS", 2_000, "the `retry:` reconnect delay sent to clients")
    tail_bytes: int = _env(
        "TAIL_BYTES", 16 * 1024 * 1024,
        "memory for recent events per partition (their bytes and what holding them costs)")
    client_buffer_bytes: int = _env(
        "CLIENT_BUFFER_BYTES", 1024 * 1024, "pending bytes per client before it is cut off")
    client_write_timeout_s: float = _env(
        "CLIENT_WRITE_TIMEOUT", 10.0, "a client whose socket takes no data this long is dropped")
    max_response_s: float = _env(
        "MAX_RESPONSE_SECONDS", 3600.0,
        "an SSE response is ended cleanly after this long; the client resumes (0: never)")
    idle_timeout_s: float = _env(
        "IDLE_TIMEOUT", 600.0,
        "an SSE response with no event this long is ended cleanly (0: never)")
    poll_max_wait_s: float = _env(
        "POLL_MAX_WAIT", 30.0, "longest wait of a long-poll request for its next event (s)")
    poll_max_events: int = _env(
        "POLL_MAX_EVENTS", 1000, "most events in one long-poll answer")
    poll_max_bytes: int = _env(
        "POLL_MAX_BYTES", 1024 * 1024, "most envelope bytes in one long-poll answer (one "
        "larger event still goes alone)")
    ai_chat_generator: str = _env(
        "AI_CHAT_GENERATOR", "demo", "generator of the AI SDK chat route's answers when "
        "the request names none (docs/ai-sdk.md)")
    input_max_bytes: int = _env(
        "INPUT_MAX_BYTES", 64 * 1024, "largest `data` of an input event (its JSON bytes), "
        "over HTTP or the WebSocket")
    compression: str = _env(
        "COMPRESSION", "gzip,br", "content codings of SSE and long-poll answers, in the "
        "server's order of preference at equal q (gzip, br; off or empty: none)")
    compression_level: int = _env(
        "COMPRESSION_LEVEL", 6, "gzip level (1-9) of SSE and long-poll answers")
    brotli_quality: int = _env(
        "BROTLI_QUALITY", 3, "brotli quality (0-11) of SSE and long-poll answers")
    compression_window_bits: int = _env(
        "COMPRESSION_WINDOW_BITS", 12, "log2 of each compressed connection's window (gzip and "
        "the WebSocket 9-15, brotli 10 at least): its memory and how far back it finds repeats")
    ws_compression: bool = _env(
        "WS_COMPRESSION", True, "permessage-deflate on the WebSocket, for clients that offer it")
    input_wait_s: float = _env(
        "INPUT_WAIT_SECONDS", 10.0, "longest wait of an input request to a generated stream "
        "for its worker to write the input event (then 504)")
    input_pending: int = _env(
        "INPUT_PENDING", 8, "most inputs to one generated stream that one gateway waits "
        "for at once (then 429)")
    catchup_readers: int = _env("CATCHUP_READERS", 8, "concurrent catch-up reads from Kafka")
    max_body_bytes: int = _env("MAX_BODY_BYTES", 1024 * 1024, "largest accepted request body")
    request_timeout_s: float = _env(
        "REQUEST_TIMEOUT", 10.0, "deadline of create, publish and cancel requests")
    ready_wait_s: float = _env(
        "READY_WAIT", 10.0, "how long a request waits for a starting gateway to reach Kafka")
    index_wait_s: float = _env(
        "INDEX_WAIT", 3.0, "how long a lookup waits for this gateway to catch up with the "
        "log (or, for ids without a location, the stream index)")
    lookup_cache_streams: int = _env(
        "LOOKUP_CACHE_STREAMS", 10_000,
        "streams whose place in the log a gateway remembers (a bounded cache)")
    shutdown_grace_s: float = _env("SHUTDOWN_GRACE", 5.0, "drain deadline on SIGTERM")
    listen_backlog: int = _env(
        "LISTEN_BACKLOG", 4096,
        "accept queue of the listening socket (the kernel caps it at net.core.somaxconn)")
    processes: str = _env(
        "GATEWAY_PROCESSES", "1",
        "gateway processes sharing the port (SO_REUSEPORT); auto: one per core")
    batch_interval_ms: int = _env(
        "BATCH_INTERVAL_MS", 250, "how often a subscriber with updateFrequency=batched gets "
        "its coalesced partial results")
    lag_coalesce: bool = _env(
        "LAG_COALESCE", True, "a subscriber that falls behind (its buffer overflowed) gets "
        "its partial results coalesced as updateFrequency=batched does, for the rest of its "
        "connection (false: every event as it is until it is cut off)")
    slow_socket_s: float = _env(
        "SLOW_SOCKET_SECONDS", 1.0, "a subscriber whose socket has held data it could not "
        "send for this long (a steadily slow reader) is coalesced as one that falls behind "
        "is, before its live buffer overflows or the write watchdog cuts it off (0: only "
        "on overflow)")
    client_send_buffer_bytes: int = _env(
        "CLIENT_SEND_BUFFER_BYTES", 128 * 1024, "SO_SNDBUF of each streaming client's "
        "socket (the kernel doubles it), so the kernel does not hide a slow reader's lag "
        "in megabytes of send buffer (0: the kernel's own autotuning)")
    experiments_json: str = _env(
        "EXPERIMENTS", "", "the A/B experiments: a JSON array of {name, variants: [{name, "
        "weight, changes}], tenants?, enabled?} (docs/experiments.md; unset: none)")
    experiments: Experiments = field(init=False, repr=False)
    max_header_bytes: int = _env(
        "MAX_HEADER_BYTES", 8190, "longest request header line (and request line) accepted")
    max_url_bytes: int = _env("MAX_URL_BYTES", 4096, "longest request target accepted")
    body_timeout_s: float = _env(
        "BODY_TIMEOUT", 10.0, "a request body must arrive within this long (slow bodies: 408); "
        "also how long a request's headers may take, and an idle keep-alive connection lasts")
    cors_origins: str = _env(
        "CORS_ORIGINS", "", "origins allowed to call the API from a browser, comma-separated "
        "(unset: none; * : any)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "experiments", parse_experiments(self.experiments_json))
        if self.listen_backlog < 1:
            raise ConfigError("TIDEMARK_LISTEN_BACKLOG must be at least 1")
        if self.poll_max_wait_s < 0 or self.poll_max_events < 1 or self.poll_max_bytes < 1:
            raise ConfigError("TIDEMARK_POLL_MAX_WAIT must be >= 0, TIDEMARK_POLL_MAX_EVENTS "
                              "and TIDEMARK_POLL_MAX_BYTES >= 1")
        codings = [c.strip() for c in self.compression.lower().split(",") if c.strip()]
        if codings != ["off"] and (not set(codings) <= {"gzip", "br"}
                                   or len(set(codings)) != len(codings)):
            raise ConfigError("TIDEMARK_COMPRESSION must be off or a list of gzip and br")
        if not (1 <= self.compression_level <= 9 and 0 <= self.brotli_quality <= 11
                and 9 <= self.compression_window_bits <= 15):
            raise ConfigError("TIDEMARK_COMPRESSION_LEVEL must be 1 to 9, "
                              "TIDEMARK_BROTLI_QUALITY 0 to 11, "
                              "TIDEMARK_COMPRESSION_WINDOW_BITS 9 to 15")
        if self.processes != "auto" and not (
                self.processes.isdigit() and 1 <= int(self.processes) <= 256):
            raise ConfigError("TIDEMARK_GATEWAY_PROCESSES must be auto or 1 to 256")
        if self.slow_socket_s < 0 or self.client_send_buffer_bytes < 0:
            raise ConfigError("TIDEMARK_SLOW_SOCKET_SECONDS and "
                              "TIDEMARK_CLIENT_SEND_BUFFER_BYTES must be >= 0")

    def process_count(self, cores: int | None) -> int:
        """How many gateway processes to run: ``processes``, with auto = ``cores``."""
        if self.processes == "auto":
            return max(1, cores or 1)
        return int(self.processes)


AUTH_MODES: Final = ("jwt", "none")
TENANT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$(?!\n)"
_DEFAULT_TIERS: Final = (
    '{"free": {"maxConcurrentStreams": 10, "requestsPerMinute": 600},'
    ' "premium": {"maxConcurrentStreams": 100, "requestsPerMinute": 6000, "priority": true}}')


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    mode: str = _env(
        "AUTH", "jwt", "jwt (default): every request needs a bearer token; none: anyone "
        "may do anything (set on purpose; logged as a warning)")
    jwt_secret: str = _env(
        "JWT_SECRET", "", "HS256 key of bearer tokens, and the key of the read tokens a "
        "gateway issues")
    jwt_public_key_file: str = _env(
        "JWT_PUBLIC_KEY_FILE", "", "RS256/ES256 verification keys: a PEM file or a local "
        "JWKS file (never fetched from a URL)")
    jwt_audience: str = _env("JWT_AUDIENCE", "", "required `aud` of bearer tokens (unset: any)")
    jwt_leeway_s: float = _env("JWT_LEEWAY", 5.0, "clock skew allowed on exp and nbf")
    read_token_ttl_s: int = _env(
        "READ_TOKEN_TTL", 3600, "lifetime of the read_token of POST /v1/streams")
    default_tenant: str = _env(
        "DEFAULT_TENANT", "default", "the tenant of streams made before tenants existed, "
        "and of every request under TIDEMARK_AUTH=none")
    audit_log: str = _env(
        "AUDIT_LOG", "", "file the audit log's JSON lines go to (unset: the process log)")

    def __post_init__(self) -> None:
        if self.mode not in AUTH_MODES:
            raise ConfigError(f"TIDEMARK_AUTH must be one of {', '.join(AUTH_MODES)}")
        if not re.match(TENANT_PATTERN, self.default_tenant):
            raise ConfigError(f"TIDEMARK_DEFAULT_TENANT must match {TENANT_PATTERN}")
        if self.read_token_ttl_s < 1:
            raise ConfigError("TIDEMARK_READ_TOKEN_TTL must be at least 1")


@dataclass(frozen=True, slots=True)
class Tier:
    """Per-user defaults of one tier (a token's ``limits`` claim overrides them)."""

    name: str
    #: 0: no limit.
    max_concurrent_streams: int
    requests_per_minute: int
    #: Jobs of this tier's users start before those of tiers without it.
    priority: bool = False


def parse_tiers(raw: str) -> Mapping[str, Tier]:
    """``{"<tier>": {"maxConcurrentStreams": n, "requestsPerMinute": n, "priority": b}}``."""
    try:
        obj = orjson.loads(raw)
        tiers = {
            str(name): Tier(name=str(name),
                            max_concurrent_streams=_count(spec.get("maxConcurrentStreams", 0)),
                            requests_per_minute=_count(spec.get("requestsPerMinute", 0)),
                            priority=bool(spec.get("priority", False)))
            for name, spec in obj.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(f"TIDEMARK_TIERS is not a valid tier table: {exc}") from exc
    return MappingProxyType(tiers)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count (an integer >= 0)")
    return value


@dataclass(frozen=True, kw_only=True)
class LimitSettings:
    redis_url: str = _env(
        "REDIS_URL", "", "the Redis/Valkey that holds limit counters and session lists, "
        "shared by every gateway (unset: limits are off, logged as a warning)")
    tiers_json: str = _env("TIERS", _DEFAULT_TIERS, "tiers and their per-user defaults (JSON)")
    default_tier: str = _env("DEFAULT_TIER", "free", "the tier of tokens without `tier`")
    tenant_max_active_streams: int = _env(
        "TENANT_MAX_ACTIVE_STREAMS", 0, "active streams per tenant (0: no limit)")
    tenant_publish_bytes_per_s: int = _env(
        "TENANT_PUBLISH_BYTES_PER_SECOND", 0, "published bytes per second per tenant "
        "(0: no limit)")
    global_max_active_streams: int = _env(
        "GLOBAL_MAX_ACTIVE_STREAMS", 0, "active streams in all (0: no limit)")
    global_publish_bytes_per_s: int = _env(
        "GLOBAL_PUBLISH_BYTES_PER_SECOND", 0, "published bytes per second in all (0: no limit)")
    active_stream_ttl_s: float = _env(
        "ACTIVE_STREAM_TTL", 3600.0, "a stream stops counting against the active-stream "
        "limits after this long even if its end was never seen")
    batch_max_queries: int = _env(
        "BATCH_MAX_QUERIES", 100, "most queries one POST /v1/batches takes (each distinct "
        "one is a child stream that counts against the active-stream limits)")
    batch_max_concurrency: int = _env(
        "BATCH_MAX_CONCURRENCY", 20, "most children of one batch generating at once (the "
        "default and the ceiling of its strategy's maxConcurrency)")
    tiers: Mapping[str, Tier] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", parse_tiers(self.tiers_json))
        if self.active_stream_ttl_s <= 0:
            raise ConfigError("TIDEMARK_ACTIVE_STREAM_TTL must be positive")
        if not 1 <= self.batch_max_queries <= 10_000:
            raise ConfigError("TIDEMARK_BATCH_MAX_QUERIES must be from 1 to 10000")
        if self.batch_max_concurrency < 1:
            raise ConfigError("TIDEMARK_BATCH_MAX_CONCURRENCY must be at least 1")
        if self.default_tier not in self.tiers:
            raise ConfigError(f"TIDEMARK_DEFAULT_TIER {self.default_tier!r} is not in "
                              "TIDEMARK_TIERS")


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    max_jobs: int = _env("WORKER_MAX_JOBS", 1000, "streams one worker generates at once")
    linger_ms: int = _env(
        "WORKER_LINGER_MS", 10,
        "longest wait of an event for its transaction to start (more gather meanwhile)")
    batch_events: int = _env("WORKER_BATCH_EVENTS", 500, "most events in one transaction")
    metrics_host: str = _env("WORKER_METRICS_HOST", "127.0.0.1", "worker /metrics address")
    metrics_port: int = _env("WORKER_METRICS_PORT", 0, "worker /metrics port (0: a free one)")
    priority_reserve: float = _env(
        "WORKER_PRIORITY_RESERVE", 0.1, "share of a worker's job slots that only jobs of "
        "priority tiers may take")
    stream_inputs: int = _env(
        "WORKER_STREAM_INPUTS", 100, "most inputs one generated stream takes (later ones "
        "are dropped with a warning)")
    content_policy_json: str = _env(
        "CONTENT_POLICY", "", "the content processors each tenant's generated streams go "
        "through, JSON {\"default\": [...], \"tenants\": {\"<tenant>\": [...]}} "
        "(schemas/json/content_policy.json, docs/content.md; empty: none)")
    content_policy: ContentPolicy = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_policy", parse_policy(self.content_policy_json))
        if not 0 <= self.priority_reserve <= 1:
            raise ConfigError("TIDEMARK_WORKER_PRIORITY_RESERVE must be a share from 0 to 1")


@dataclass(frozen=True, kw_only=True)
class CacheSettings:
    """The similar-query cache (docs/cache.md): workers answer a new stream from a
    completed one whose query is the same or close enough."""

    enabled: bool = _env(
        "CACHE", False, "on: workers answer a query that is the same as (or similar to) "
        "one answered recently, in the same tenant and scope, by replaying that stream")
    threshold: float = _env(
        "CACHE_THRESHOLD", 0.85, "least cosine similarity of two queries' embeddings for "
        "a hit (exact normalised matches need none)")
    ttl_s: float = _env(
        "CACHE_TTL", 3600.0, "seconds a completed stream serves as a cached answer")
    max_entries: int = _env(
        "CACHE_MAX_ENTRIES", 100_000, "cached answers each worker indexes (the oldest "
        "beyond it are forgotten)")
    hot_bytes: int = _env(
        "CACHE_HOT_BYTES", 32 * 1024 * 1024, "memory for the events of the most "
        "recently replayed answers (the others are read again from Kafka)")
    pacing: str = _env(
        "CACHE_PACING", "instant", "replay pacing when the creator names none: instant "
        "or original (the source's own gaps between events)")
    replay_max_gap_s: float = _env(
        "CACHE_REPLAY_MAX_GAP", 5.0, "longest wait between two events of a replay at "
        "the original pace")
    generator_versions: str = _env(
        "CACHE_GENERATOR_VERSIONS", "", "generator versions over the generators' own, "
        "e.g. demo=2,summarise=2026-12 (a changed version invalidates their cached "
        "answers)")
    warmup: bool = _env(
        "WARMUP", False, "on (with TIDEMARK_CACHE): workers learn each tenant's queries from "
        "the jobs topics and, after each new query, pre-generate the likely next ones "
        "into the cache (docs/cache.md, \"Predictive warm-up\")")
    warmup_budget: int = _env(
        "WARMUP_BUDGET", 10, "streams the warm-up may pre-generate per tenant per minute")
    warmup_top: int = _env(
        "WARMUP_TOP", 2, "predictions pre-generated after each query (at most)")
    warmup_min_share: float = _env(
        "WARMUP_MIN_SHARE", 0.2, "least share of a query's follow-ups (or of the hour's "
        "queries) a prediction must have to be pre-generated")
    warmup_session_gap_s: float = _env(
        "WARMUP_SESSION_GAP", 1800.0, "a user's queries this close in time are one session "
        "(a query followed within it counts as a follow-up)")

    def __post_init__(self) -> None:
        if not (0 <= self.warmup_budget <= 10_000 and 0 <= self.warmup_top <= 20
                and 0 <= self.warmup_min_share <= 1 and self.warmup_session_gap_s > 0):
            raise ConfigError("TIDEMARK_WARMUP_BUDGET must be 0 to 10000, TIDEMARK_WARMUP_TOP "
                              "0 to 20, TIDEMARK_WARMUP_MIN_SHARE 0 to 1 and "
                              "TIDEMARK_WARMUP_SESSION_GAP positive")
        if self.warmup and not self.enabled:
            raise ConfigError("TIDEMARK_WARMUP=on needs TIDEMARK_CACHE=on (it pre-generates "
                              "into the cache)")
        if not 0 < self.threshold <= 1:
            raise ConfigError("TIDEMARK_CACHE_THRESHOLD must be above 0 and at most 1")
        if self.ttl_s <= 0 or self.replay_max_gap_s < 0:
            raise ConfigError("TIDEMARK_CACHE_TTL must be positive and "
                              "TIDEMARK_CACHE_REPLAY_MAX_GAP not negative")
        if self.max_entries < 1 or self.hot_bytes < 0:
            raise ConfigError("TIDEMARK_CACHE_MAX_ENTRIES must be 1 or more and "
                              "TIDEMARK_CACHE_HOT_BYTES not negative")
        if self.pacing not in ("instant", "original"):
            raise ConfigError("TIDEMARK_CACHE_PACING must be instant or original")
        self.versions  # noqa: B018 - parsed here so a bad value fails at start

    @property
    def versions(self) -> dict[str, str]:
        """``TIDEMARK_CACHE_GENERATOR_VERSIONS`` parsed: generator name -> version."""
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in self.generator_versions.split(","))):
            name, sep, version = part.partition("=")
            if not sep or not re.match(r"^[a-z][a-z0-9_-]{0,63}$(?!\n)", name.strip()) \
                    or not version.strip():
                raise ConfigError("TIDEMARK_CACHE_GENERATOR_VERSIONS must be "
                                  f"name=version[,name=version...], not {part!r}")
            out[name.strip()] = version.strip()
        return out


@dataclass(frozen=True, kw_only=True)
class AnalyticsSettings:
    interval_s: float = _env(
        "ANALYTICS_INTERVAL", 5.0, "how often each gateway publishes what it observed to "
        "the analytics topic (seconds)")
    live_interval_s: float = _env(
        "ANALYTICS_LIVE_INTERVAL", 5.0, "how often GET /v1/analytics/live sends a new "
        "document (seconds)")
    operator_tenant: str = _env(
        "OPERATOR_TENANT", "", "the operators' tenant: its admins see every tenant's "
        "analytics and set log levels (unset: TIDEMARK_DEFAULT_TENANT)")
    recent: int = _env(
        "ANALYTICS_RECENT", 20, "newest streams and errors listed in the analytics document")
    top_users: int = _env(
        "ANALYTICS_TOP_USERS", 20, "users listed per window (the top ones by streams)")

    def __post_init__(self) -> None:
        if not (0.05 <= self.interval_s <= 3600 and 0.05 <= self.live_interval_s <= 3600):
            raise ConfigError("TIDEMARK_ANALYTICS_INTERVAL and TIDEMARK_ANALYTICS_LIVE_INTERVAL "
                              "must be from 0.05 to 3600 seconds")
        if self.operator_tenant and not re.match(TENANT_PATTERN, self.operator_tenant):
            raise ConfigError(f"TIDEMARK_OPERATOR_TENANT must match {TENANT_PATTERN}")
        if not (1 <= self.recent <= 1000 and 1 <= self.top_users <= 1000):
            raise ConfigError("TIDEMARK_ANALYTICS_RECENT and TIDEMARK_ANALYTICS_TOP_USERS "
                              "must be from 1 to 1000")


@dataclass(frozen=True, kw_only=True)
class DurableSettings:
    """The Durable Streams surface (package ``durable``), mounted on every gateway."""

    base_path: str = _env(
        "DS_BASE_PATH", "/ds", "where the Durable Streams protocol is mounted: streams are "
        "<base>/v1/stream/<path> (empty: not mounted)")
    long_poll_timeout_s: float = _env(
        "DS_LONG_POLL_TIMEOUT", 20.0, "how long a live=long-poll read waits for data")
    sse_max_s: float = _env(
        "DS_SSE_MAX_SECONDS", 60.0, "a live=sse response ends after this long; the client "
        "resumes from its last streamNextOffset")
    max_chunk_bytes: int = _env(
        "DS_MAX_CHUNK_BYTES", 1024 * 1024, "most bytes of stream data in one read response")
    cache_bytes: int = _env(
        "DS_CACHE_BYTES", 256 * 1024 * 1024, "stream bytes a gateway keeps in memory; older "
        "records are read again from Kafka when asked for")
    retention_ms: int = _env(
        "DS_RETENTION_MS", -1, "retention.ms of the tidemark.<ns>.ds topic (-1: forever; "
        "the log is the store of every stream's bytes and metadata)")
    max_append_bytes: int = _env(
        "DS_MAX_APPEND_BYTES", 1_000_000, "largest body of one create or append (413 "
        "above); one Kafka record, so below the broker's message.max.bytes")
    catchup_wait_s: float = _env(
        "DS_CATCHUP_WAIT", 5.0, "how long a request waits for this gateway to read a "
        "partition up to its end (read-your-writes) before it answers 503")
    write_batch: int = _env(
        "DS_WRITE_BATCH", 64, "most writes to one partition checked and committed in one "
        "Kafka transaction (group commit; 1: a transaction per write)")
    write_linger_ms: int = _env(
        "DS_WRITE_LINGER_MS", 0, "how long a partition's committer waits for more writes "
        "before a transaction that is not full (0: it takes what waits at once)")

    def __post_init__(self) -> None:
        if self.base_path and (not self.base_path.startswith("/")
                               or self.base_path.endswith("/")):
            raise ConfigError("TIDEMARK_DS_BASE_PATH must start and not end with /")
        if self.max_chunk_bytes < 1024 or self.cache_bytes < self.max_chunk_bytes:
            raise ConfigError("TIDEMARK_DS_MAX_CHUNK_BYTES must be >= 1024 and "
                              "<= TIDEMARK_DS_CACHE_BYTES")
        if self.write_batch < 1 or self.write_linger_ms < 0:
            raise ConfigError("TIDEMARK_DS_WRITE_BATCH must be >= 1 and "
                              "TIDEMARK_DS_WRITE_LINGER_MS >= 0")


@dataclass(frozen=True, kw_only=True)
class OpenAISettings:
    """The ``openai`` generator's upstream: any OpenAI-compatible chat-completions
    endpoint (docs/generators.md)."""

    url: str = _env(
        "OPENAI_URL", "", "base URL of an OpenAI-compatible API, e.g. "
        "http://127.0.0.1:8000/v1 (the generator POSTs to <url>/chat/completions; empty: "
        "every openai stream ends with error openai_not_configured)")
    model: str = _env("OPENAI_MODEL", "", "the model name sent upstream")
    api_key: str = field(default="", repr=False, metadata={
        "env": PREFIX + "OPENAI_API_KEY",
        "help": "bearer key sent upstream (empty: no Authorization header); never logged"})
    connect_timeout_s: float = _env(
        "OPENAI_CONNECT_TIMEOUT", 10.0, "longest wait to connect and for the response "
        "headers (seconds)")
    read_timeout_s: float = _env(
        "OPENAI_READ_TIMEOUT", 60.0, "longest silence between two chunks of an answer "
        "(seconds); past it the stream ends with a retryable error")
    retries: int = _env(
        "OPENAI_RETRIES", 3, "retries of a request answered 429 or 5xx, or not answered, "
        "before its first token (0 to 10)")
    max_retry_after_s: float = _env(
        "OPENAI_MAX_RETRY_AFTER", 30.0, "longest wait before a retry, whatever the "
        "upstream's Retry-After asks (seconds)")
    max_answer_bytes: int = _env(
        "OPENAI_MAX_ANSWER_BYTES", 1_000_000, "longest answer text kept for the result "
        "event; past it the stream ends with error answer_too_long")

    def __post_init__(self) -> None:
        if not 0 <= self.retries <= 10:
            raise ConfigError("TIDEMARK_OPENAI_RETRIES must be from 0 to 10")
        if min(self.connect_timeout_s, self.read_timeout_s) <= 0 or self.max_retry_after_s < 0:
            raise ConfigError("TIDEMARK_OPENAI_CONNECT_TIMEOUT and TIDEMARK_OPENAI_READ_TIMEOUT "
                              "must be positive, TIDEMARK_OPENAI_MAX_RETRY_AFTER >= 0")
        if not 1024 <= self.max_answer_bytes <= 10_000_000:
            raise ConfigError("TIDEMARK_OPENAI_MAX_ANSWER_BYTES must be from 1024 to 10000000")


@dataclass(frozen=True, kw_only=True)
class WebhookSettings:
    """Webhooks (docs/webhooks.md): registrations at the gateways, deliveries by the
    ``tidemark webhooks`` process."""

    allow: str = _env(
        "WEBHOOK_ALLOW", "", "hosts and CIDRs a webhook may target although they are not "
        "public (loopback, private, link-local ...), comma-separated; unset: public "
        "addresses only")
    timeout_s: float = _env(
        "WEBHOOK_TIMEOUT", 15.0, "deadline of one delivery attempt (connect, send, answer)")
    max_attempts: int = _env(
        "WEBHOOK_MAX_ATTEMPTS", 8, "attempts of one delivery before it goes to the "
        "dead-letter topic")
    retry_base_s: float = _env(
        "WEBHOOK_RETRY_BASE", 1.0, "backoff after the first failed attempt (doubling "
        "after each, full jitter)")
    retry_max_s: float = _env(
        "WEBHOOK_RETRY_MAX", 300.0, "longest backoff between two attempts (also caps a "
        "Retry-After)")
    concurrency: int = _env(
        "WEBHOOK_CONCURRENCY", 4, "deliveries in flight per webhook (each stream's "
        "events stay in order)")
    queue: int = _env(
        "WEBHOOK_QUEUE", 1000, "deliveries waiting per webhook; past it new ones go "
        "straight to the dead-letter topic")
    in_flight: int = _env(
        "WEBHOOK_IN_FLIGHT", 10_000, "deliveries waiting in one webhooks process in all; "
        "past it the process stops fetching until some finish")
    max_per_tenant: int = _env(
        "WEBHOOK_MAX_PER_TENANT", 50, "webhooks one tenant may register")
    dlq_list_max: int = _env(
        "WEBHOOK_DLQ_LIST_MAX", 100, "dead letters one listing returns (the newest)")
    dlq_view_max: int = _env(
        "WEBHOOK_DLQ_VIEW_MAX", 100_000, "dead letters a gateway keeps in memory for the "
        "listing (the oldest are forgotten first)")
    metrics_host: str = _env("WEBHOOK_METRICS_HOST", "127.0.0.1",
                             "webhooks process /metrics address")
    metrics_port: int = _env("WEBHOOK_METRICS_PORT", 0,
                             "webhooks process /metrics port (0: a free one)")

    allow_list: AllowList = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "allow_list", parse_allow_list(self.allow))
        except TargetAllowListError as exc:
            raise ConfigError(f"TIDEMARK_WEBHOOK_ALLOW: {exc}") from exc
        if not (self.timeout_s > 0 and self.retry_base_s > 0
                and self.retry_max_s >= self.retry_base_s):
            raise ConfigError("TIDEMARK_WEBHOOK_TIMEOUT and TIDEMARK_WEBHOOK_RETRY_BASE must "
                              "be positive, TIDEMARK_WEBHOOK_RETRY_MAX >= the base")
        if not (1 <= self.max_attempts <= 100 and 1 <= self.concurrency <= 64
                and self.queue >= self.concurrency and self.in_flight >= 1
                and self.max_per_tenant >= 1 and self.dlq_list_max >= 1
                and self.dlq_view_max >= 1):
            raise ConfigError("TIDEMARK_WEBHOOK_MAX_ATTEMPTS must be 1 to 100, "
                              "TIDEMARK_WEBHOOK_CONCURRENCY 1 to 64, TIDEMARK_WEBHOOK_QUEUE "
                              ">= the concurrency, the other counts >= 1")


@dataclass(frozen=True, kw_only=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    log: LogSettings = field(default_factory=LogSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    durable: DurableSettings = field(default_factory=DurableSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    log_format: str = _env("LOG_FORMAT", "text", "log output: text or json")
    log_level: str = _env("LOG_LEVEL", "INFO", "log level")
    log_levels: str = _env(
        "LOG_LEVELS", "", "per-module log levels, e.g. gateway.hub=DEBUG,workers=INFO "
        "(changeable on a running process: PUT /v1/admin/log-levels)")
    metrics_tenants: int = _env(
        "METRICS_TENANTS", 20, "tenants that get their own label in per-tenant metrics; "
        "the ones seen after them count as tenant=\"other\"")

    statsd: str = _env(
        "STATSD", "", "host:port of a StatsD or DogStatsD server to push this process's "
        "metrics to over UDP (docs/operations.md, \"StatsD\"); empty: off")
    statsd_flavor: str = _env(
        "STATSD_FLAVOR", "statsd", "statsd (labels become name parts) or dogstatsd "
        "(labels become tags)")
    statsd_prefix: str = _env(
        "STATSD_PREFIX", "tidemark", "what the metrics' tidemark_ prefix becomes (then a "
        "dot); empty: none")
    statsd_interval_s: float = _env(
        "STATSD_INTERVAL", 10.0, "seconds between two pushes (counters go as what they "
        "grew by in between)")
    statsd_tags: str = _env(
        "STATSD_TAGS", "", "tags on every metric, k:v comma-separated (dogstatsd only)")
    statsd_max_packet: int = _env(
        "STATSD_MAX_PACKET", 1432, "largest datagram sent, in bytes (lines are packed "
        "into datagrams up to it)")

    @property
    def statsd_config(self) -> StatsdConfig | None:
        """Where to push metrics (``TIDEMARK_STATSD*``), or None: off."""
        if not self.statsd:
            return None
        host, port = parse_address(self.statsd)
        return StatsdConfig(host=host, port=port, flavor=self.statsd_flavor,
                            prefix=self.statsd_prefix, interval_s=self.statsd_interval_s,
                            tags=parse_tags(self.statsd_tags),
                            max_packet=self.statsd_max_packet)

    @property
    def operators_tenant(self) -> str:
        """The operators' tenant: its admins see every tenant's analytics and set a
        process's log levels (``TIDEMARK_OPERATOR_TENANT``, else the default tenant)."""
        return self.analytics.operator_tenant or self.auth.default_tenant
    lag_sample_s: float = _env(
        "LAG_SAMPLE_SECONDS", 5.0, "how often consumer lag per partition is sampled")
    plugins: str = _env(
        "PLUGINS", "", "allow-list of plugins (generators, built-in ones too): "
        "comma-separated name or name@distribution; empty: every installed one "
        "(docs/plugins.md)")

    @property
    def plugin_allow(self) -> frozenset[str]:
        """``TIDEMARK_PLUGINS`` parsed (empty: every installed plugin)."""
        return parse_allow(self.plugins)

    def __post_init__(self) -> None:
        if not re.match(NAMESPACE_PATTERN, self.log.namespace):
            raise ConfigError(f"TIDEMARK_NAMESPACE must match {NAMESPACE_PATTERN}")
        if self.log.placement not in PLACEMENTS:
            raise ConfigError(f"TIDEMARK_PLACEMENT must be one of {', '.join(PLACEMENTS)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError("TIDEMARK_LOG_FORMAT must be text or json")
        if self.log.partitions < 1 or self.log.partitions > 10_000:
            raise ConfigError("TIDEMARK_PARTITIONS must be between 1 and 10000")
        try:
            loglevels.parse(self.log_levels)
        except loglevels.LogLevelError as exc:
            raise ConfigError(f"TIDEMARK_LOG_LEVELS: {exc}") from exc
        if self.metrics_tenants < 0:
            raise ConfigError("TIDEMARK_METRICS_TENANTS must be 0 or more")
        if self.lag_sample_s <= 0:
            raise ConfigError("TIDEMARK_LAG_SAMPLE_SECONDS must be positive")
        self._check_statsd()
        try:
            parse_allow(self.plugins)
        except AllowListError as exc:
            raise ConfigError(f"TIDEMARK_PLUGINS: {exc}") from exc

    def _check_statsd(self) -> None:
        if self.statsd_flavor not in STATSD_FLAVORS:
            raise ConfigError("TIDEMARK_STATSD_FLAVOR must be statsd or dogstatsd")
        if self.statsd and self.statsd_prefix and not re.fullmatch(
                r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", self.statsd_prefix):
            raise ConfigError("TIDEMARK_STATSD_PREFIX must be dot-separated words")
        if not (0 < self.statsd_interval_s <= 3600 and 512 <= self.statsd_max_packet <= 65000):
            raise ConfigError("TIDEMARK_STATSD_INTERVAL must be over 0 and at most 3600 s, "
                              "TIDEMARK_STATSD_MAX_PACKET 512 to 65000 bytes")
        if self.statsd_tags and self.statsd_flavor != "dogstatsd":
            raise ConfigError("TIDEMARK_STATSD_TAGS needs TIDEMARK_STATSD_FLAVOR=dogstatsd "
                              "(plain StatsD has no tags)")
        try:
            if self.statsd:
                parse_address(self.statsd)
            parse_tags(self.statsd_tags)
        except ValueError as exc:
            raise ConfigError(f"TIDEMARK_STATSD: {exc}") from exc


OTEL_EXPORTERS: Final = ("otlp", "none")


def _otel(name: str, default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"env": name, "help": help_text})


@dataclass(frozen=True, kw_only=True)
class TraceSettings:
    """The standard ``OTEL_*`` variables that Tidemark reads itself (``eventlog.tracing``).

    Tracing is on when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_ENDPOINT``), unless ``OTEL_SDK_DISABLED=true`` or
    ``OTEL_TRACES_EXPORTER=none``. Everything else (``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``
    and ``_TIMEOUT``) the OpenTelemetry SDK and its exporter read themselves. Loaded by
    :func:`load_trace_settings`, apart from :class:`Settings`: these names are not
    ``TIDEMARK_*`` ones, and a gateway supervisor's children inherit them as they are.
    """

    sdk_disabled: bool = _otel("OTEL_SDK_DISABLED", False, "true: no traces whatever else says")
    exporter: str = _otel(
        "OTEL_TRACES_EXPORTER", "otlp", "otlp (default) or none (tracing off)")
    endpoint: str = _otel(
        "OTEL_EXPORTER_OTLP_ENDPOINT", "", "OTLP/HTTP base URL; spans go to <url>/v1/traces "
        "(set: tracing on)")
    traces_endpoint: str = _otel(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", "OTLP/HTTP URL of spans, used as it is "
        "(set: tracing on; wins over OTEL_EXPORTER_OTLP_ENDPOINT)")
    service_name: str = _otel(
        "OTEL_SERVICE_NAME", "", "service.name of the spans (default: tidemark-gateway or "
        "tidemark-worker)")

    def __post_init__(self) -> None:
        if self.exporter.strip().lower() not in OTEL_EXPORTERS:
            raise ConfigError("OTEL_TRACES_EXPORTER must be otlp or none (the exporter "
                              "Tidemark ships is OTLP over HTTP)")

    @property
    def enabled(self) -> bool:
        return bool(self.endpoint or self.traces_endpoint) and not self.sdk_disabled \
            and self.exporter.strip().lower() != "none"

    @property
    def spans_url(self) -> str:
        """Where spans are sent (OTLP/HTTP), as the OTLP exporter specification says."""
        if self.traces_endpoint:
            return self.traces_endpoint
        return self.endpoint.rstrip("/") + "/v1/traces"


_S = TypeVar("_S")


def _parse(raw: str, kind: Any, name: str) -> Any:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (Path, "Path"):
            return Path(raw)
        if kind in (bool, "bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind}") from exc
    return raw


def _section(cls: type[_S], environ: Mapping[str, str], known: set[str]) -> _S:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get("env")
        if name is None:
            continue
        known.add(name)
        if name in environ:
            values[f.name] = _parse(environ[name], f.type, name)
    return cls(**values)


def env_names() -> dict[str, str]:
    """Every variable Tidemark reads, with its help text (for docs and `--help`)."""
    out: dict[str, str] = {}
    for cls in (KafkaSettings, LogSettings, GatewaySettings, WorkerSettings, AuthSettings,
                LimitSettings, AnalyticsSettings, DurableSettings, OpenAISettings,
                CacheSettings, WebhookSettings, Settings):
        for f in dataclasses.fields(cls):
            if "env" in f.metadata:
                out[f.metadata["env"]] = f.metadata["help"]
    return out


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping; warn about unknown TIDEMARK_* names."""
    known: set[str] = set()
    kafka = _section(KafkaSettings, environ, known)
    log_settings = _section(LogSettings, environ, known)
    gateway = _section(GatewaySettings, environ, known)
    worker = _section(WorkerSettings, environ, known)
    auth = _section(AuthSettings, environ, known)
    limits = _section(LimitSettings, environ, known)
    analytics = _section(AnalyticsSettings, environ, known)
    durable = _section(DurableSettings, environ, known)
    openai = _section(OpenAISettings, environ, known)
    cache = _section(CacheSettings, environ, known)
    webhooks = _section(WebhookSettings, environ, known)
    top = _section(Settings, environ, known)
    unknown = sorted(k for k in environ if k.startswith(PREFIX) and k not in known)
    for name in unknown:
        log.warning("unknown setting %s is ignored", name)
    return dataclasses.replace(top, kafka=kafka, log=log_settings, gateway=gateway,
                               worker=worker, auth=auth, limits=limits,
                               analytics=analytics, durable=durable, openai=openai,
                               cache=cache, webhooks=webhooks)


def otel_env_names() -> dict[str, str]:
    """The ``OTEL_*`` variables Tidemark reads itself, with their help text."""
    return {f.metadata["env"]: f.metadata["help"] for f in dataclasses.fields(TraceSettings)}


def load_trace_settings(environ: Mapping[str, str]) -> TraceSettings:
    """:class:`TraceSettings` from an environment mapping (an empty value counts as
    unset, as the OpenTelemetry specification says)."""
    known: set[str] = set()
    return _section(TraceSettings, {k: v for k, v in environ.items() if v != ""}, known)
