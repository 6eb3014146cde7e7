"""Launcher of a local single-node Apache Kafka broker in KRaft mode.

The broker runs from the jars that ``deploy/kafka/pom.xml`` fetches (``make setup`` puts them
in ``.cache/kafka/libs``); no Kafka distribution or Docker is needed, only a Java 17+ runtime.

With a ``data_dir`` the broker is persistent: the first start formats the storage and writes
``tidemark-broker.json`` (cluster id and both ports) into the directory; later starts with the
same directory reuse that cluster id and those ports and do not reformat, so topics, records and
committed offsets survive a restart, and clients that knew ``127.0.0.1:<port>`` reconnect on
their own. Without a ``data_dir`` the broker lives in a fresh temporary directory that
:meth:`LocalBroker.stop` removes.

A :class:`LocalBroker` given a :class:`NodeLayout` is instead one node of a multi-node
cluster (``eventlog/cluster.py``): the layout fixes its node id, ports, cluster id and the
controller quorum, the cluster keeps the state file, and the internal topics get the
cluster's replication.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import io
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from aiokafka.admin import AIOKafkaAdminClient

from eventlog.errors import TidemarkError

__all__ = ["BrokerConfig", "BrokerError", "LocalBroker", "NodeLayout", "find_jars"]

log = logging.getLogger(__name__)

STATE_FILE = "tidemark-broker.json"
"""Name of the file in ``data_dir`` that remembers the cluster id and the ports."""

_STATE_VERSION = 1
_HOST = "127.0.0.1"
_SERVER_PROPERTIES = "server.properties"
_LOG4J_CONFIG = "log4j2.properties"
_BROKER_LOG = "broker.log"
_CONSOLE_LOG = "broker.out"
_LOG_DIRS = "logs"
_KAFKA_JAR = re.compile(r"^kafka_2\.13-(\d[^/]*)\.jar$")
_HEAP = re.compile(r"^(\d+)([kKmMgG]?)$")
_MIN_XMS = 256 * 1024 * 1024
_TAIL_LINES = 40
_TAIL_BYTES = 64 * 1024


class BrokerError(TidemarkError):
    """The local broker could not be set up, started or stopped."""


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    """How to run a :class:`LocalBroker`.

    ``port`` is the PLAINTEXT port; when ``None`` it is the one remembered in ``data_dir``, or a
    free loopback port. ``heap`` is the JVM's maximum heap (``-Xmx``), e.g. ``"512m"``.
    """

    jars_dir: Path
    data_dir: Path | None = None
    port: int | None = None
    heap: str = "512m"
    java: str = "java"
    start_timeout: float = 60.0


@dataclass(frozen=True, kw_only=True)
class _State:
    cluster_id: str
    port: int
    controller_port: int


@dataclass(frozen=True, kw_only=True)
class NodeLayout:
    """One node of a multi-node KRaft cluster, as its cluster fixed it.

    ``voters`` is the static controller quorum (``"1@127.0.0.1:p1,2@127.0.0.1:p2,..."``);
    ``brokers`` is the size of the cluster: the internal topics get replication factor
    ``min(3, brokers)`` and, with three or more, two replicas in sync.
    """

    node_id: int
    cluster_id: str
    port: int
    controller_port: int
    voters: str
    brokers: int


def find_jars(jars_dir: Path) -> Path:
    """Return the ``kafka_2.13-<version>.jar`` in ``jars_dir``.

    Raises :class:`BrokerError` when there is none (or more than one version).
    """
    found = sorted(p for p in _list_dir(jars_dir) if _KAFKA_JAR.match(p.name))
    if not found:
        raise BrokerError(f"Kafka jars not found in {jars_dir}; run `make setup`")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise BrokerError(f"more than one Kafka version in {jars_dir} ({names}); run `make setup`")
    return found[0]


def _list_dir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise BrokerError(f"cannot read Kafka jars directory {path}: {exc}") from exc


def new_cluster_id() -> str:
    """A random Kafka cluster id: 16 bytes in URL-safe base64 without padding (22 chars)."""
    while True:
        cid = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")
        if not cid.startswith("-"):  # Kafka's Uuid.randomUuid avoids these as well
            return cid


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all held open at once so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((_HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _heap_bytes(heap: str) -> int:
    m = _HEAP.match(heap.strip())
    if m is None:
        raise BrokerError(f"invalid heap size {heap!r}; expected e.g. '512m' or '1g'")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(m.group(1)) * scale


def _server_properties(data_dir: Path, state: _State, layout: NodeLayout | None = None) -> str:
    port, cport = state.port, state.controller_port
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1 if layout is None else layout.node_id,
        "controller.quorum.voters": f"1@{_HOST}:{cport}" if layout is None else layout.voters,
        "listeners": f"PLAINTEXT://{_HOST}:{port},CONTROLLER://{_HOST}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{_HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / _LOG_DIRS),
        # One node: every internal topic has one replica and needs one in sync.
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 6,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 6,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "share.coordinator.state.topic.num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "num.partitions": 1,
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        # Small and quick: modest segments, frequent retention and transaction clean-ups.
        "log.segment.bytes": 16 * 1024 * 1024,
        "log.retention.check.interval.ms": 5000,
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        "log.cleaner.threads": 1,
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": 5000,
        "transaction.remove.expired.transaction.cleanup.interval.ms": 10000,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "background.threads": 4,
    }
    if layout is not None and layout.brokers > 1:
        props.update(_cluster_properties(layout.brokers))
    lines = [f"# Written by Tidemark ({__name__}); rewritten on every start.\n"]
    lines.extend(f"{key}={value}\n" for key, value in props.items())
    return "".join(lines)


def _cluster_properties(brokers: int) -> dict[str, object]:
    """What a node of a ``brokers``-node cluster sets beyond a single node's properties."""
    rf = min(3, brokers)
    isr = 2 if rf >= 3 else 1
    return {
        # Internal topics (offsets, transactions, share state) replicated like the data.
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        # A SIGKILLed node is fenced (its partitions get new leaders, it leaves the ISRs)
        # after 3 s without a heartbeat, not the default 9 s.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
        "replica.lag.time.max.ms": 10000,
        "num.replica.fetchers": 1,
    }


def _log4j_config(data_dir: Path) -> str:
    return log4j_file_config("tidemark-broker", data_dir / _BROKER_LOG, "WARN")


def log4j_file_config(name: str, log_file: Path, level: str) -> str:
    """A log4j2 configuration that writes ``level`` and above to ``log_file`` only (the
    broker's, and MirrorMaker's: ``eventlog.mirror``)."""
    path = str(log_file).replace("\\", "/")
    return (
        f"# Written by Tidemark: {level} and above go to {log_file.name} only.\n"
        "status = warn\n"
        "shutdownHook = disable\n"
        f"name = {name}\n"
        "appender.file.type = File\n"
        "appender.file.name = FILE\n"
        f"appender.file.fileName = {path}\n"
        "appender.file.append = true\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        f"rootLogger.level = {level}\n"
        "rootLogger.appenderRef.file.ref = FILE\n"
    )


def _tail(path: Path, start: int = 0) -> str:
    """The last lines of ``path`` written after byte offset ``start``."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - _TAIL_BYTES) if start <= size else 0)
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-_TAIL_LINES:])


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class LocalBroker:
    """A KRaft Kafka broker (broker and controller in one JVM) on loopback: a single-node
    cluster, or with a ``layout`` one node of a larger one.

    Use as ``async with LocalBroker(BrokerConfig(jars_dir=...)) as broker:`` and connect clients
    to ``broker.bootstrap``.
    """

    def __init__(self, config: BrokerConfig, *, layout: NodeLayout | None = None) -> None:
        if layout is not None and config.data_dir is None:
            raise BrokerError("a cluster node needs its own data_dir")
        self._config = config
        self._layout = layout
        self._proc: asyncio.subprocess.Process | None = None
        self._state: _State | None = None
        self._dir: Path | None = None
        self._temp_dir: Path | None = None
        self._console: io.BufferedWriter | None = None  # the JVM's stdout and stderr
        self._log_start = 0  # sizes of broker.log and broker.out when the JVM started
        self._console_start = 0

    @property
    def config(self) -> BrokerConfig:
        return self._config

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:<port>"``; known once :meth:`start` has chosen the port."""
        if self._state is None:
            if self._config.port is not None:
                return f"{_HOST}:{self._config.port}"
            raise BrokerError("the broker's port is not known before start()")
        return f"{_HOST}:{self._state.port}"

    @property
    def port(self) -> int:
        """The PLAINTEXT port (see :attr:`bootstrap`)."""
        return int(self.bootstrap.rsplit(":", 1)[1])

    @property
    def data_dir(self) -> Path | None:
        """The directory the broker runs in (the temporary one when none was configured)."""
        return self._dir

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs, else ``None``."""
        if self._proc is None or self._proc.returncode is not None:
            return None
        return self._proc.pid

    @property
    def log_file(self) -> Path | None:
        """The broker's log4j log (WARN and above)."""
        return None if self._dir is None else self._dir / _BROKER_LOG

    async def start(self) -> None:
        """Format the storage if needed, start the JVM and wait until the broker answers.

        Raises :class:`BrokerError`, with the tail of the broker's log, when the JVM exits or
        ``start_timeout`` passes before the broker answers a metadata request.
        """
        if self._proc is not None and self._proc.returncode is None:
            raise BrokerError(f"the broker is already running (pid {self._proc.pid})")
        started = time.monotonic()
        jars_dir = self._config.jars_dir.resolve()
        find_jars(jars_dir)
        heap = _heap_bytes(self._config.heap)
        try:
            data_dir, state, fresh = self._prepare()
            if fresh:
                await self._format(jars_dir, data_dir, state)
                if self._layout is None:  # a cluster keeps its nodes' state itself
                    self._save_state(data_dir, state)
            await self._spawn(jars_dir, data_dir, heap)
            await self._wait_ready(started)
        except BaseException:
            await self._abort()
            raise
        log.info(
            "Kafka broker up at %s (pid %s, data %s) after %.1f s",
            self.bootstrap, self.pid, data_dir, time.monotonic() - started,
        )

    async def stop(
        self,
        *,
        kill: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Stop the JVM: SIGTERM (a clean shutdown), or SIGKILL when ``kill``.

        When it has not exited ``timeout`` seconds after SIGTERM it gets SIGKILL. A temporary
        data directory is removed afterwards. Stopping a stopped broker does nothing.
        """
        proc = self._proc
        try:
            if proc is not None and proc.returncode is None:
                sig = signal.SIGKILL if kill else signal.SIGTERM
                log.info("stopping Kafka broker (pid %s) with %s", proc.pid, sig.name)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    log.warning(
                        "Kafka broker (pid %s) still running %s s after SIGTERM; killing it",
                        proc.pid, timeout,
                    )
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
                log.info("Kafka broker (pid %s) exited with %s", proc.pid, proc.returncode)
        finally:
            self._cleanup()

    async def wait(self) -> int:
        """Wait for the JVM to exit and return its exit code."""
        if self._proc is None:
            raise BrokerError("the broker was not started")
        return await self._proc.wait()

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

    # -- start, step by step ---------------------------------------------------------------

    def _prepare(self) -> tuple[Path, _State, bool]:
        """Choose the directory and the state; ``fresh`` says the storage needs formatting."""
        if self._config.data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="tidemark-kafka-"))
            data_dir = self._temp_dir
        else:
            data_dir = self._config.data_dir.resolve()
            try:
                data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BrokerError(f"cannot create broker data dir {data_dir}: {exc}") from exc
        self._dir = data_dir
        fresh = not (data_dir / _LOG_DIRS / "meta.properties").exists()
        layout = self._layout
        state = None if layout is not None else self._load_state(data_dir)
        if layout is not None:
            state = _State(cluster_id=layout.cluster_id, port=layout.port,
                           controller_port=layout.controller_port)
            formatted = self._formatted_cluster_id(data_dir)
            if formatted is not None and formatted != layout.cluster_id:
                raise BrokerError(
                    f"node data dir {data_dir} belongs to cluster {formatted}, "
                    f"not {layout.cluster_id}")
        elif state is None:
            cluster_id = self._formatted_cluster_id(data_dir) or new_cluster_id()
            if self._config.port is None:
                port, cport = _free_ports(2)
            else:
                port = self._config.port
                cport = next(p for p in _free_ports(2) if p != port)
            state = _State(cluster_id=cluster_id, port=port, controller_port=cport)
            if not fresh:  # formatted, but the state file is lost: remember what we chose
                self._save_state(data_dir, state)
        elif self._config.port is not None and self._config.port != state.port:
            raise BrokerError(
                f"broker data dir {data_dir} belongs to a broker on port {state.port}, "
                f"but port {self._config.port} was asked for; use port {state.port} or "
                "another data dir"
            )
        self._state = state
        (data_dir / _SERVER_PROPERTIES).write_text(
            _server_properties(data_dir, state, layout), encoding="utf-8"
        )
        (data_dir / _LOG4J_CONFIG).write_text(_log4j_config(data_dir), encoding="utf-8")
        return data_dir, state, fresh

    @staticmethod
    def _load_state(data_dir: Path) -> _State | None:
        path = data_dir / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BrokerError(f"cannot read broker state {path}: {exc}") from exc
        try:
            return _State(
                cluster_id=str(raw["cluster_id"]),
                port=int(raw["port"]),
                controller_port=int(raw["controller_port"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BrokerError(f"malformed broker state {path}: {exc!r}") from exc

    @staticmethod
    def _save_state(data_dir: Path, state: _State) -> None:
        path = data_dir / STATE_FILE
        body = {
            "version": _STATE_VERSION,
            "cluster_id": state.cluster_id,
            "port": state.port,
            "controller_port": state.controller_port,
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @staticmethod
    def _formatted_cluster_id(data_dir: Path) -> str | None:
        """The cluster id in an already formatted log dir, if any."""
        try:
            text = (data_dir / _LOG_DIRS / "meta.properties").read_text(encoding="utf-8")
        except OSError:
            return None
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "cluster.id":
                return value.strip()
        return None

    def _java_args(self, jars_dir: Path, data_dir: Path, heap: int) -> list[str]:
        return [
            self._config.java,
            f"-Xmx{self._config.heap.strip()}",
            f"-Xms{min(heap, _MIN_XMS)}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={data_dir / _LOG4J_CONFIG}",
            "-cp",
            f"{jars_dir}{os.sep}*",
        ]

    async def _format(self, jars_dir: Path, data_dir: Path, state: _State) -> None:
        args = [
            *self._java_args(jars_dir, data_dir, _heap_bytes("256m")),
            "kafka.tools.StorageTool",
            "format",
            "-t",
            state.cluster_id,
            "-c",
            str(data_dir / _SERVER_PROPERTIES),
        ]
        log.info("formatting Kafka storage in %s (cluster id %s)", data_dir, state.cluster_id)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=data_dir,
            )
        except OSError as exc:
            raise BrokerError(f"cannot run {self._config.java!r}: {exc}") from exc
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self._config.start_timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise BrokerError(
                f"formatting Kafka storage in {data_dir} took over "
                f"{self._config.start_timeout} s"
            ) from None
        if proc.returncode != 0:
            text = out.decode("utf-8", "replace").strip()
            raise BrokerError(
                f"formatting Kafka storage in {data_dir} failed (exit {proc.returncode}):\n"
                f"{text}\n{_tail(data_dir / _BROKER_LOG)}".rstrip()
            )

    async def _spawn(self, jars_dir: Path, data_dir: Path, heap: int) -> None:
        assert self._state is not None
        await _wait_port_free(self._state.port, timeout=min(15.0, self._config.start_timeout))
        args = [
            *self._java_args(jars_dir, data_dir, heap),
            "kafka.Kafka",
            str(data_dir / _SERVER_PROPERTIES),
        ]
        self._log_start = _file_size(data_dir / _BROKER_LOG)
        self._console_start = _file_size(data_dir / _CONSOLE_LOG)
        self._console = (data_dir / _CONSOLE_LOG).open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=self._console,
                stderr=asyncio.subprocess.STDOUT,
                cwd=data_dir,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise BrokerError(f"cannot run {self._config.java!r}: {exc}") from exc
        log.debug("started Kafka broker JVM (pid %s): %s", self._proc.pid, args)

    async def _wait_ready(self, started: float) -> None:
        assert self._proc is not None
        remaining = self._config.start_timeout - (time.monotonic() - started)
        exited = asyncio.ensure_future(self._proc.wait())
        ready = asyncio.ensure_future(self._poll_ready())
        try:
            done, _ = await asyncio.wait(
                {exited, ready}, timeout=max(remaining, 0.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (exited, ready):
                task.cancel()
            await asyncio.gather(exited, ready, return_exceptions=True)
        if ready in done and not ready.cancelled() and ready.exception() is None:
            return
        if exited in done:
            why = f"the Kafka broker exited with {self._proc.returncode} while starting"
        else:
            why = f"the Kafka broker did not answer within {self._config.start_timeout} s"
        where = "" if self._temp_dir is not None else f" ({self.log_file})"
        raise BrokerError(f"{why}; its log{where} ends with:\n{self._log_tail()}")

    async def _poll_ready(self) -> None:
        """Return once the PLAINTEXT port accepts connections and answers a metadata request."""
        assert self._state is not None
        port = self._state.port
        while True:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(_HOST, port), 2.0)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if await self._answers(self.bootstrap):
                return
            await asyncio.sleep(0.2)

    @staticmethod
    async def _answers(bootstrap: str) -> bool:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=5000, client_id="tidemark-broker-probe"
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster.get("brokers"))
        except Exception as exc:  # noqa: BLE001 -- any failure only means "not yet"
            log.debug("Kafka broker at %s not ready yet: %r", bootstrap, exc)
            return False
        finally:
            await admin.close()

    def _log_tail(self) -> str:
        if self._dir is None:
            return ""
        parts = [
            _tail(self._dir / _BROKER_LOG, self._log_start),
            _tail(self._dir / _CONSOLE_LOG, self._console_start),
        ]
        return "\n".join(p for p in parts if p) or "(empty)"

    async def _abort(self) -> None:
        """Undo a failed start: kill the JVM, close files, remove a temporary directory."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
            self._dir = None


def _die_with_parent() -> None:
    """In the JVM child, before exec: be killed when the launching process dies, so a
    broker never outlives (and blocks the port and data dir of) a killed launcher."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


async def _wait_port_free(port: int, *, timeout: float) -> None:
    """Wait until nothing listens on the port (an earlier broker still going away)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((_HOST, port))
                return
            except OSError:
                if loop.time() > deadline:
                    raise BrokerError(
                        f"port {port} is still in use (another broker on this data dir?)"
                    ) from None
        await asyncio.sleep(0.1)
