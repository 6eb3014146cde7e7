"""Launcher of a local multi-node Apache Kafka cluster in KRaft mode, on loopback.

Every node is a :class:`~eventlog.broker.LocalBroker` (broker and controller in one JVM)
with a :class:`~eventlog.broker.NodeLayout`: the controller quorum is static, made of all the
nodes, so the cluster stays writable while a majority of them runs. Node ``i`` keeps its
data in ``<data_dir>/node-<i>``; ``tidemark-cluster.json`` in ``data_dir`` remembers the
cluster id and every node's two ports, so a later start with the same directory comes back
as the same cluster (same cluster id, node ids and ports; nothing is reformatted). Without a
``data_dir`` the cluster lives in a temporary directory that :meth:`LocalCluster.stop`
removes.

One node can be stopped, killed and started again while the others run
(:meth:`LocalCluster.kill`, :meth:`LocalCluster.restart`); ``tidemark kafka --nodes N
--data-dir DIR --node I`` does the same from a shell, for a node whose launcher is gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiokafka.admin import AIOKafkaAdminClient

from eventlog.broker import (
    BrokerConfig,
    BrokerError,
    LocalBroker,
    NodeLayout,
    _free_ports,
    new_cluster_id,
)

__all__ = ["CLUSTER_STATE_FILE", "ClusterConfig", "LocalCluster"]

log = logging.getLogger(__name__)

CLUSTER_STATE_FILE = "tidemark-cluster.json"
"""Name of the file in ``data_dir`` that remembers the cluster id and every node's ports."""

_STATE_VERSION = 1
_HOST = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """How to run a :class:`LocalCluster` of ``nodes`` nodes (ids 1 to ``nodes``).

    ``port`` is node 1's PLAINTEXT port, node ``i`` listens on ``port + i - 1``; when ``None``
    the ports are the ones remembered in ``data_dir``, or free loopback ports. ``heap`` is each
    JVM's maximum heap.
    """

    jars_dir: Path
    nodes: int = 3
    data_dir: Path | None = None
    port: int | None = None
    heap: str = "512m"
    java: str = "java"
    start_timeout: float = 120.0


@dataclass(frozen=True, kw_only=True)
class _NodeState:
    node_id: int
    port: int
    controller_port: int


@dataclass(frozen=True, kw_only=True)
class _ClusterState:
    cluster_id: str
    nodes: tuple[_NodeState, ...]

    def voters(self) -> str:
        return ",".join(f"{n.node_id}@{_HOST}:{n.controller_port}" for n in self.nodes)


class LocalCluster:
    """``nodes`` KRaft nodes on loopback; clients connect to :attr:`bootstrap` (every node).

    Use as ``async with LocalCluster(ClusterConfig(jars_dir=..., nodes=3)) as cluster:``.
    """

    def __init__(self, config: ClusterConfig) -> None:
        if config.nodes < 2:
            raise BrokerError("a cluster has at least 2 nodes (one node: LocalBroker)")
        self._config = config
        self._dir: Path | None = None
        self._temp_dir: Path | None = None
        self._state: _ClusterState | None = None
        self._brokers: dict[int, LocalBroker] = {}

    # -- what it is ------------------------------------------------------------------------

    @property
    def cluster_id(self) -> str:
        return self._known().cluster_id

    @property
    def node_ids(self) -> list[int]:
        return [n.node_id for n in self._known().nodes]

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:<p1>,127.0.0.1:<p2>,..."``, every node's PLAINTEXT port."""
        return ",".join(f"{_HOST}:{n.port}" for n in self._known().nodes)

    @property
    def data_dir(self) -> Path | None:
        return self._dir

    def port(self, node_id: int) -> int:
        return self._node(node_id).port

    def pid(self, node_id: int) -> int | None:
        """The node's JVM process id while it runs (started by this object), else ``None``."""
        broker = self._brokers.get(node_id)
        return None if broker is None else broker.pid

    def log_file(self, node_id: int) -> Path:
        assert self._dir is not None
        return self._dir / f"node-{node_id}" / "broker.log"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, only: int | None = None) -> None:
        """Start every node (or only node ``only``) and wait until each answers.

        Nodes start together: a node answers only once a majority of the controller
        quorum runs. Raises :class:`BrokerError` when a node exits or does not answer
        within ``start_timeout``; the nodes started by this call are stopped again.
        """
        started = time.monotonic()
        self._prepare()
        if only is not None:
            self._node(only)  # raises for an unknown node id
        ids = [only] if only is not None else self.node_ids
        running = [i for i in ids if self.pid(i) is not None]
        if running:
            raise BrokerError(f"node(s) {running} already running")
        results = await asyncio.gather(*(self._start_node(i) for i in ids),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await asyncio.gather(*(self._brokers[i].stop(kill=True) for i in ids
                                   if i in self._brokers), return_exceptions=True)
            for exc in errors:
                if not isinstance(exc, Exception):
                    raise exc
            raise errors[0]
        log.info("Kafka cluster %s up at %s (nodes %s) after %.1f s", self.cluster_id,
                 self.bootstrap, ids, time.monotonic() - started)

    async def restart(self, node_id: int) -> None:
        """Start node ``node_id`` again (after :meth:`kill` or :meth:`stop_node`), alone."""
        await self.start(only=node_id)

    async def kill(self, node_id: int) -> None:
        """SIGKILL node ``node_id``'s JVM (no clean shutdown) and wait until it is gone."""
        await self.stop_node(node_id, kill=True)

    async def stop_node(self, node_id: int, *, kill: bool = False) -> None:
        """Stop one node: SIGTERM (a controlled shutdown) or, with ``kill``, SIGKILL."""
        self._node(node_id)
        broker = self._brokers.get(node_id)
        if broker is not None:
            await broker.stop(kill=kill)

    async def stop(self, *, timeout: float = 30.0) -> None:
        """Stop every node this object started (SIGTERM, SIGKILL after ``timeout``).

        The nodes shut down together (a lone survivor would wait for a quorum). A temporary
        data directory is removed afterwards.
        """
        try:
            await asyncio.gather(*(b.stop(timeout=timeout) for b in self._brokers.values()))
        finally:
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
                self._dir = None

    async def wait(self) -> dict[int, int]:
        """Wait until every node this object started has exited; their exit codes."""
        codes = await asyncio.gather(*(b.wait() for b in self._brokers.values()))
        return dict(zip(self._brokers, codes, strict=True))

    async def wait_any(self) -> tuple[int, int]:
        """Wait until one running node exits: ``(node id, exit code)``."""
        waits = {asyncio.ensure_future(b.wait()): i for i, b in self._brokers.items()
                 if b.pid is not None}
        if not waits:
            raise BrokerError("no node of this cluster is running")
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
        fut = next(iter(done))
        return waits[fut], fut.result()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- replication state (through the admin client) ------------------------------------

    async def describe(self, topics: list[str] | None = None) -> list[dict[str, Any]]:
        """The admin client's ``describe_topics`` of ``topics`` (default: every topic,
        the internal ones included)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000,
                                    client_id="tidemark-cluster-probe")
        await admin.start()
        try:
            names = topics if topics is not None else sorted(await admin.list_topics())
            described: list[dict[str, Any]] = await admin.describe_topics(names)
            return described
        finally:
            await admin.close()

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> the node id leading it (-1: no leader)."""
        (desc,) = await self.describe([topic])
        return {int(p["partition"]): int(p["leader"]) for p in desc["partitions"]}

    async def wait_in_sync(self, *, timeout: float = 120.0) -> float:
        """Wait until every partition of every topic has a leader and all its replicas in
        sync; return how long that took. Raises :class:`BrokerError` after ``timeout``."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        lagging: list[str] = []
        while loop.time() - begin < timeout:
            try:
                described = await self.describe()
            except Exception as exc:  # noqa: BLE001 -- any failure only means "not yet"
                lagging = [repr(exc)]
            else:
                lagging = [f"{t['topic']}/{p['partition']}" for t in described
                           for p in t["partitions"]
                           if p["leader"] < 0 or set(p["isr"]) != set(p["replicas"])]
                if not lagging:
                    return loop.time() - begin
            await asyncio.sleep(0.25)
        raise BrokerError(f"partitions not in sync after {timeout} s: {lagging[:10]}")

    # -- internals -------------------------------------------------------------------------

    def _known(self) -> _ClusterState:
        if self._state is None:
            self._prepare()
        assert self._state is not None
        return self._state

    def _node(self, node_id: int) -> _NodeState:
        for n in self._known().nodes:
            if n.node_id == node_id:
                return n
        raise BrokerError(f"no node {node_id} in this cluster (nodes {self.node_ids})")

    def _prepare(self) -> None:
        """Choose the directory and the cluster state (loaded, or new and saved)."""
        if self._state is not None:
            return
        cfg = self._config
        if cfg.data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="tidemark-kafka-cluster-"))
            data_dir = self._temp_dir
        else:
            data_dir = cfg.data_dir.resolve()
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BrokerError(f"cannot create cluster data dir {data_dir}: {exc}") from exc
        self._dir = data_dir
        state = _load_state(data_dir / CLUSTER_STATE_FILE)
        if state is None:
            free = _free_ports(2 * cfg.nodes)
            if cfg.port is None:
                ports = free[: cfg.nodes]
            else:
                ports = [cfg.port + i for i in range(cfg.nodes)]
            cports = [p for p in free if p not in ports][: cfg.nodes]
            if len(cports) < cfg.nodes:
                cports += [p for p in _free_ports(2 * cfg.nodes) if p not in ports + cports]
            state = _ClusterState(
                cluster_id=new_cluster_id(),
                nodes=tuple(_NodeState(node_id=i + 1, port=ports[i],
                                       controller_port=cports[i]) for i in range(cfg.nodes)))
            _save_state(data_dir / CLUSTER_STATE_FILE, state)
        else:
            if len(state.nodes) != cfg.nodes:
                raise BrokerError(
                    f"cluster data dir {data_dir} holds a {len(state.nodes)}-node cluster, "
                    f"not {cfg.nodes} nodes")
            if cfg.port is not None and cfg.port != state.nodes[0].port:
                raise BrokerError(
                    f"cluster data dir {data_dir} belongs to a cluster whose node 1 is on port "
                    f"{state.nodes[0].port}, but port {cfg.port} was asked for")
        self._state = state

    async def _start_node(self, node_id: int) -> None:
        state = self._known()
        assert self._dir is not None
        node = self._node(node_id)
        layout = NodeLayout(node_id=node_id, cluster_id=state.cluster_id, port=node.port,
                            controller_port=node.controller_port, voters=state.voters(),
                            brokers=len(state.nodes))
        cfg = self._config
        broker = LocalBroker(BrokerConfig(jars_dir=cfg.jars_dir, data_dir=self._dir /
                                          f"node-{node_id}", heap=cfg.heap, java=cfg.java,
                                          start_timeout=cfg.start_timeout), layout=layout)
        self._brokers[node_id] = broker
        await broker.start()


def _load_state(path: Path) -> _ClusterState | None:
    try:
        raw: Mapping[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot read cluster state {path}: {exc}") from exc
    try:
        nodes = tuple(_NodeState(node_id=int(n["node_id"]), port=int(n["port"]),
                                 controller_port=int(n["controller_port"]))
                      for n in raw["nodes"])
        return _ClusterState(cluster_id=str(raw["cluster_id"]), nodes=nodes)
    except (KeyError, TypeError, ValueError) as exc:
        raise BrokerError(f"malformed cluster state {path}: {exc!r}") from exc


def _save_state(path: Path, state: _ClusterState) -> None:
    body = {
        "version": _STATE_VERSION,
        "cluster_id": state.cluster_id,
        "nodes": [{"node_id": n.node_id, "port": n.port, "controller_port": n.controller_port}
                  for n in state.nodes],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
