"""The local KRaft broker launcher: persistence across restarts, and its errors.

Needs the Kafka jars (``make setup`` fetches them into ``.cache/kafka/libs``; the
``TIDEMARK_TEST_KAFKA_JARS`` environment variable points elsewhere) and a Java 17+ runtime.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from eventlog.broker import STATE_FILE, BrokerConfig, BrokerError, LocalBroker, find_jars

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jars_dir() -> Path:
    path = Path(os.environ.get("TIDEMARK_TEST_KAFKA_JARS") or REPO / ".cache" / "kafka" / "libs")
    try:
        find_jars(path)
    except BrokerError as exc:
        pytest.fail(
            f"{exc} (or set TIDEMARK_TEST_KAFKA_JARS to a directory holding them)",
            pytrace=False,
        )
    return path


async def test_topics_and_records_survive_a_restart(jars_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    topic = "tidemark.test.restart"

    first = LocalBroker(BrokerConfig(jars_dir=jars_dir, data_dir=data_dir))
    await first.start()
    try:
        assert first.pid is not None
        assert (data_dir / STATE_FILE).is_file()
        admin = AIOKafkaAdminClient(bootstrap_servers=first.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=first.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(topic, f"record-{i}".encode(), key=b"k")
        finally:
            await producer.stop()
    finally:
        await first.stop()
    assert first.pid is None
    bootstrap = first.bootstrap

    second = LocalBroker(BrokerConfig(jars_dir=jars_dir, data_dir=data_dir))
    async with second:
        assert second.bootstrap == bootstrap
        consumer = AIOKafkaConsumer(
            bootstrap_servers=second.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            records = []
            while len(records) < 3:
                batch = await consumer.getmany(tp, timeout_ms=5000, max_records=10)
                assert batch, "no records fetched after the restart"
                records.extend(batch[tp])
        finally:
            await consumer.stop()
    assert [r.offset for r in records] == [0, 1, 2]
    assert [r.value for r in records] == [b"record-0", b"record-1", b"record-2"]


async def test_a_port_other_than_the_remembered_one_is_an_error(
    jars_dir: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "kafka"
    async with LocalBroker(BrokerConfig(jars_dir=jars_dir, data_dir=data_dir)) as broker:
        remembered = broker.port
    other = remembered + 1 if remembered < 65535 else remembered - 1

    clash = LocalBroker(BrokerConfig(jars_dir=jars_dir, data_dir=data_dir, port=other))
    with pytest.raises(BrokerError, match=rf"port {remembered}\b.*port {other}\b"):
        await clash.start()
    assert clash.pid is None

    # The remembered port, given explicitly, is fine (and needs no reformatting).
    async with LocalBroker(
        BrokerConfig(jars_dir=jars_dir, data_dir=data_dir, port=remembered)
    ) as again:
        assert again.bootstrap == f"127.0.0.1:{remembered}"


async def test_a_port_held_by_another_process_is_refused_clearly(jars_dir: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Long enough for the storage format on a busy machine; the port wait is what fails.
        broker = LocalBroker(BrokerConfig(jars_dir=jars_dir, port=port, start_timeout=8.0))
        with pytest.raises(BrokerError, match=f"port {port} is still in use"):
            await broker.start()
    assert broker.pid is None
    assert broker.data_dir is None  # the temporary directory is gone


async def test_a_temporary_data_dir_is_removed_on_stop(jars_dir: Path) -> None:
    broker = LocalBroker(BrokerConfig(jars_dir=jars_dir))
    await broker.start()
    try:
        data_dir = broker.data_dir
        assert data_dir is not None and data_dir.is_dir()
    finally:
        await broker.stop(kill=True)
    assert not data_dir.exists()


def test_find_jars_on_an_empty_dir_fails(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=r"Kafka jars not found in .*make setup"):
        find_jars(tmp_path)
    with pytest.raises(BrokerError, match="Kafka jars not found"):
        find_jars(tmp_path / "missing")


def test_find_jars_finds_the_kafka_jar(jars_dir: Path) -> None:
    assert find_jars(jars_dir).name.startswith("kafka_2.13-")
