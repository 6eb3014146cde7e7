"""What ``tidemark gateway --processes N`` hands its children, and how N is read."""

from __future__ import annotations

import socket

import pytest

from eventlog.errors import ConfigError
from eventlog.settings import load_settings
from tidemark.supervise import reserve_port, settings_environ


def test_children_read_back_exactly_the_parents_settings() -> None:
    parent = load_settings({"TIDEMARK_NAMESPACE": "n1", "TIDEMARK_PARTITIONS": "3",
                            "TIDEMARK_HEARTBEAT_SECONDS": "2.5", "TIDEMARK_LISTEN_BACKLOG": "64",
                            "TIDEMARK_KAFKA_JARS": "/x/libs", "TIDEMARK_LOG_FORMAT": "json"})
    env = settings_environ(parent)
    assert all(name.startswith("TIDEMARK_") for name in env)
    assert load_settings(env) == parent


@pytest.mark.parametrize(("raw", "cores", "count"),
                         [("1", 8, 1), ("3", 2, 3), ("auto", 2, 2), ("auto", None, 1)])
def test_process_count(raw: str, cores: int | None, count: int) -> None:
    gateway = load_settings({"TIDEMARK_GATEWAY_PROCESSES": raw}).gateway
    assert gateway.process_count(cores) == count


@pytest.mark.parametrize(("name", "raw"), [("TIDEMARK_GATEWAY_PROCESSES", "0"),
                                           ("TIDEMARK_GATEWAY_PROCESSES", "-1"),
                                           ("TIDEMARK_GATEWAY_PROCESSES", "two"),
                                           ("TIDEMARK_LISTEN_BACKLOG", "0")])
def test_bad_values_are_config_errors(name: str, raw: str) -> None:
    with pytest.raises(ConfigError):
        load_settings({name: raw})


def test_port_zero_is_reserved_once_and_shared() -> None:
    """The parent's reservation picks the port; listeners with SO_REUSEPORT can join it,
    and it takes no connection itself (it never listens)."""
    reservation = reserve_port("127.0.0.1", 0)
    try:
        port = reservation.getsockname()[1]
        assert port != 0
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        with listener, socket.create_connection(("127.0.0.1", port), timeout=2):
            conn, _ = listener.accept()
            conn.close()
        with pytest.raises(OSError):  # a socket without SO_REUSEPORT cannot take the port
            with socket.socket() as other:
                other.bind(("127.0.0.1", port))
    finally:
        reservation.close()
