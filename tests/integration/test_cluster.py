"""`tidemark kafka --nodes 3`: a 3-node KRaft cluster on loopback, as a user runs it.

Starts its own cluster (the suite's broker is a single node); run it under
`flock /tmp/tidemark-heavy.lock` with the other heavy tests (three JVMs).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from eventlog.cluster import CLUSTER_STATE_FILE
from eventlog.settings import LogSettings
from eventlog.topics import ensure_topics, events_topic, jobs_topic
from tests.procs import Proc, base_env

pytestmark = pytest.mark.integration

NODE_LINE = re.compile(r"^TIDEMARK_KAFKA_NODE=(\d+) pid=(\d+) port=(\d+)$")


def _lines(proc: Proc, count: int) -> tuple[dict[int, tuple[int, int]], str]:
    """Wait for the bootstrap line; the node lines before it: id -> (pid, port)."""
    proc.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", timeout=180)
    lines = proc.out.read_text().splitlines()
    nodes = {}
    for line in lines:
        m = NODE_LINE.match(line)
        if m:
            nodes[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
    assert len(nodes) == count, lines
    bootstrap = next(x for x in lines if x.startswith("TIDEMARK_KAFKA_BOOTSTRAP="))
    assert lines.index(bootstrap) == count, "the node lines come first"
    return nodes, bootstrap.split("=", 1)[1]


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    return admin


async def _brokers(bootstrap: str, want: int, timeout: float = 60.0) -> dict[str, Any]:
    """describe_cluster once it lists ``want`` brokers (a request to a node just killed
    fails until the client's metadata forgets it: ask again)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    admin = await _admin(bootstrap)
    try:
        while True:
            try:
                cluster: dict[str, Any] = await admin.describe_cluster()
            except KafkaError:
                if loop.time() > end:
                    raise
            else:
                if len(cluster["brokers"]) == want or loop.time() > end:
                    return cluster
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


@pytest.mark.timeout(300)
async def test_three_nodes_print_their_lines_replicate_topics_and_come_back(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "cluster"
    launcher = Proc("kafka", ["kafka", "--nodes", "3", "--data-dir", str(data_dir)],
                    base_env(), tmp_path)
    procs = [launcher]
    try:
        nodes, bootstrap = _lines(launcher, 3)
        assert sorted(nodes) == [1, 2, 3]
        ports = [nodes[i][1] for i in (1, 2, 3)]
        assert len(set(ports)) == 3
        assert bootstrap == ",".join(f"127.0.0.1:{p}" for p in ports)
        for pid, _ in nodes.values():
            os.kill(pid, 0)  # each JVM runs
        assert (data_dir / CLUSTER_STATE_FILE).is_file()
        cluster = await _brokers(bootstrap, 3)
        cluster_id = cluster["cluster_id"]
        assert sorted(b["node_id"] for b in cluster["brokers"]) == [1, 2, 3]

        # New topics (default settings): 3 replicas, min.insync.replicas 2.
        settings = LogSettings(namespace="c" + uuid.uuid4().hex[:10], partitions=3)
        topics = [events_topic(settings.namespace), jobs_topic(settings.namespace)]
        admin = await _admin(bootstrap)
        try:
            await ensure_topics(admin, settings)
            # The metadata of a topic just created reaches every node a moment later.
            for _ in range(150):
                described = await admin.describe_topics(topics)
                if all(len(d["partitions"]) == 3 for d in described):
                    break
                await asyncio.sleep(0.2)
            for desc in described:
                assert len(desc["partitions"]) == 3
                for p in desc["partitions"]:
                    assert sorted(p["replicas"]) == [1, 2, 3], desc
            (configs,) = await admin.describe_configs([
                ConfigResource(ConfigResourceType.TOPIC, topics[0])])
            values = {c[0]: c[1] for c in configs.resources[0][4]}
            assert values["min.insync.replicas"] == "2"
        finally:
            await admin.close()

        # A SIGKILLed node is started again alone, as the same node on the same port.
        os.kill(nodes[2][0], signal.SIGKILL)
        assert len((await _brokers(bootstrap, 2, timeout=30))["brokers"]) == 2
        assert launcher.alive, "the launcher keeps the other nodes running"
        lone = Proc("kafka-node2", ["kafka", "--nodes", "3", "--data-dir", str(data_dir),
                                    "--node", "2"], base_env(), tmp_path)
        procs.append(lone)
        again, lone_bootstrap = _lines(lone, 1)
        assert list(again) == [2] and again[2][1] == nodes[2][1]
        assert lone_bootstrap == bootstrap
        assert len((await _brokers(bootstrap, 3))["brokers"]) == 3

        # Everything stops on SIGTERM; a new launcher on the directory is the same cluster.
        assert lone.stop(timeout=90) == 0
        assert launcher.stop(timeout=90) == 0  # its nodes may wait 30 s for a quorum
        for pid, _ in nodes.values():
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        second = Proc("kafka-again", ["kafka", "--nodes", "3", "--data-dir", str(data_dir)],
                      base_env(), tmp_path)
        procs.append(second)
        renodes, rebootstrap = _lines(second, 3)
        assert rebootstrap == bootstrap
        assert {i: port for i, (_, port) in renodes.items()} == {
            i: port for i, (_, port) in nodes.items()}
        cluster = await _brokers(bootstrap, 3)
        assert cluster["cluster_id"] == cluster_id
        admin = await _admin(bootstrap)
        try:
            assert set(topics) <= set(await admin.list_topics())
        finally:
            await admin.close()
    finally:
        for proc in reversed(procs):
            proc.stop()


async def test_node_without_a_cluster_is_refused(tmp_path: Path) -> None:
    proc = Proc("kafka", ["kafka", "--node", "2"], base_env(), tmp_path)
    assert proc.popen.wait(60) == 1
    assert "--node needs --nodes" in proc.logs()
    proc = Proc("kafka", ["kafka", "--nodes", "3", "--node", "2"], base_env(), tmp_path)
    assert proc.popen.wait(60) == 1
    assert "give its --data-dir" in proc.logs()
