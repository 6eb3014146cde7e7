"""Settings are read from a given TIDEMARK_* mapping, typed, and checked."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from eventlog.errors import ConfigError
from eventlog.settings import (
    AnalyticsSettings,
    AuthSettings,
    CacheSettings,
    DurableSettings,
    GatewaySettings,
    KafkaSettings,
    LimitSettings,
    LogSettings,
    OpenAISettings,
    Settings,
    WebhookSettings,
    WorkerSettings,
    env_names,
    load_settings,
)

LOGGER = "eventlog.settings"


def test_defaults() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.kafka.bootstrap == ""
    assert s.log.namespace == "default"
    assert s.log.partitions == 12  # fixed at creation; ARCHITECTURE.md's default
    assert s.log.retention_ms == 24 * 3600 * 1000  # 24 h
    assert s.gateway.heartbeat_s <= 15  # a `: ping` at least every 15 s
    assert s.gateway.retry_ms > 0
    assert s.gateway.tail_bytes > 0 and s.gateway.client_buffer_bytes > 0
    assert s.log_format == "text"


def test_values_are_parsed_to_their_types() -> None:
    s = load_settings({
        "TIDEMARK_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
        "TIDEMARK_NAMESPACE": "tenant-a_1",
        "TIDEMARK_PARTITIONS": "4",
        "TIDEMARK_PORT": "9000",
        "TIDEMARK_HEARTBEAT_SECONDS": "0.5",
        "TIDEMARK_SSE_RETRY_MS": "500",
        "TIDEMARK_KAFKA_CONNECT_TIMEOUT": "7",
        "TIDEMARK_KAFKA_JARS": "/opt/kafka/libs",
        "TIDEMARK_WORKER_MAX_JOBS": "3",
        "TIDEMARK_LOG_FORMAT": "json",
    })
    assert s.kafka.bootstrap == "k1:9092,k2:9092"
    assert s.log.namespace == "tenant-a_1"
    assert s.log.partitions == 4 and type(s.log.partitions) is int
    assert s.gateway.port == 9000 and type(s.gateway.port) is int
    assert s.gateway.heartbeat_s == 0.5 and type(s.gateway.heartbeat_s) is float
    assert s.gateway.retry_ms == 500
    assert s.kafka.connect_timeout_s == 7.0 and type(s.kafka.connect_timeout_s) is float
    assert s.kafka.jars_dir == Path("/opt/kafka/libs")
    assert isinstance(s.kafka.jars_dir, Path)
    assert s.worker.max_jobs == 3
    assert s.log_format == "json"
    # Untouched values keep their defaults.
    assert s.gateway.host == GatewaySettings().host
    assert s.log.retention_ms == LogSettings().retention_ms


def test_os_environ_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEMARK_PORT", "1234")
    monkeypatch.setenv("TIDEMARK_NAMESPACE", "from-os-environ")
    s = load_settings({})
    assert s.gateway.port == GatewaySettings().port
    assert s.log.namespace == "default"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("TIDEMARK_PORT", "eighty"),
        ("TIDEMARK_PORT", ""),
        ("TIDEMARK_PARTITIONS", "1.5"),
        ("TIDEMARK_SSE_RETRY_MS", "2s"),
        ("TIDEMARK_HEARTBEAT_SECONDS", "fast"),
        ("TIDEMARK_KAFKA_CONNECT_TIMEOUT", "1,5"),
    ],
)
def test_invalid_number_raises_config_error_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: raw})
    assert name in str(info.value)


def test_unknown_tidemark_name_is_reported_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        s = load_settings({"TIDEMARK_PROT": "9000", "TIDEMARK_PORT": "9001",
                           "PATH": "/bin", "HOME": "/root", "KAFKA_BOOTSTRAP": "x"})
    assert s.gateway.port == 9001
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # One warning, about the one unknown TIDEMARK_ name; other variables are not ours.
    assert len(warned) == 1, warned
    assert "TIDEMARK_PROT" in warned[0]


@pytest.mark.parametrize(
    "namespace",
    ["", "Default", "has space", "-lead", "_lead", "a.b", "a/b", "a" * 65, "t\u00e9",
     "abc\n", "\nabc"],
)
def test_invalid_namespace_raises_config_error(namespace: str) -> None:
    with pytest.raises(ConfigError):
        load_settings({"TIDEMARK_NAMESPACE": namespace})


@pytest.mark.parametrize("namespace", ["default", "t0", "0", "a-b_c", "a" * 64])
def test_valid_namespace(namespace: str) -> None:
    assert load_settings({"TIDEMARK_NAMESPACE": namespace}).log.namespace == namespace


@pytest.mark.parametrize(("name", "raw"), [("TIDEMARK_PARTITIONS", "0"),
                                           ("TIDEMARK_PARTITIONS", "10001"),
                                           ("TIDEMARK_LOG_FORMAT", "xml")])
def test_other_checked_values(name: str, raw: str) -> None:
    with pytest.raises(ConfigError):
        load_settings({name: raw})


def test_env_names_have_prefix_and_help() -> None:
    names = env_names()
    assert names
    for name, help_text in names.items():
        assert name.startswith("TIDEMARK_"), name
        assert isinstance(help_text, str) and help_text.strip(), name


def test_env_names_include_the_documented_variables() -> None:
    names = env_names()
    for name in ["TIDEMARK_KAFKA_BOOTSTRAP", "TIDEMARK_NAMESPACE", "TIDEMARK_PARTITIONS",
                 "TIDEMARK_HEARTBEAT_SECONDS", "TIDEMARK_SSE_RETRY_MS",
                 "TIDEMARK_SHUTDOWN_GRACE", "TIDEMARK_TAIL_BYTES",
                 "TIDEMARK_CLIENT_BUFFER_BYTES", "TIDEMARK_RETENTION_MS"]:
        assert name in names


def _all_fields() -> list[tuple[object, dataclasses.Field[object]]]:
    out: list[tuple[object, dataclasses.Field[object]]] = []
    for instance in (KafkaSettings(), LogSettings(), GatewaySettings(), WorkerSettings(),
                     AuthSettings(), LimitSettings(), AnalyticsSettings(), DurableSettings(),
                     OpenAISettings(), CacheSettings(), WebhookSettings(), Settings()):
        out.extend((instance, f) for f in dataclasses.fields(instance) if f.metadata)
    return out


def test_every_setting_has_a_listed_variable() -> None:
    names = env_names()
    section_fields = {"kafka", "log", "gateway", "worker", "auth", "limits", "analytics", "durable",
                      "openai", "cache", "webhooks"}
    for instance in (KafkaSettings(), LogSettings(), GatewaySettings(), WorkerSettings(),
                     AuthSettings(), LimitSettings(), AnalyticsSettings(), DurableSettings(),
                     OpenAISettings(), CacheSettings(), WebhookSettings(), Settings()):
        for f in dataclasses.fields(instance):
            if (isinstance(instance, Settings) and f.name in section_fields) or not f.init:
                continue
            assert f.metadata.get("env") in names, f"{type(instance).__name__}.{f.name}"


def test_every_listed_variable_is_known_and_round_trips_its_default(
        caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        str(f.metadata["env"]): str(getattr(instance, f.name)) for instance, f in _all_fields()
    }
    assert set(environ) == set(env_names())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert load_settings(environ) == Settings()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
