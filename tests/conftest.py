"""Shared fixtures: one real Kafka broker per test session, and Tidemark processes.

The broker is, in order of preference: the one named by TIDEMARK_KAFKA_BOOTSTRAP; a
testcontainers Kafka when TIDEMARK_TEST_DOCKER=1 and a Docker engine answers; else a
local single-node KRaft broker started through `tidemark kafka` from the jars that
`make setup` fetched. If none can be had the tests that need it fail; none skip.

Under pytest-xdist (`make test` runs ``-n 2``) the controller starts that one broker and
hands its address to every worker, so a session still has one broker. Each test runs in a
Kafka namespace of its own, so tests share it safely. Tests are scheduled by module (a
module's fixtures start once), and the few that start clusters or load the machine on
purpose (:data:`HEAVY`) run one after the other on the same worker
(:func:`pytest_xdist_make_scheduler`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from eventlog.index import StreamIndex, StreamInfo
from eventlog.settings import load_settings
from tests.procs import Proc, auth_headers, base_env, free_port, wait_ready


def _docker_kafka() -> Iterator[str]:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


#: Modules that start brokers or clusters of their own, or load both cores for a minute:
#: under xdist they share one worker, so no two of them overlap.
HEAVY = frozenset({
    "tests/e2e/test_chaos.py", "tests/e2e/test_cluster_chaos.py",
    "tests/e2e/test_ds_conformance.py", "tests/e2e/test_fuzz.py",
    "tests/integration/test_cluster.py", "tests/integration/test_broker.py",
    "tests/e2e/test_broker_restart.py", "tests/e2e/test_ds_chaos.py",
    "tests/e2e/test_federation.py",
})
#: Modules that install the test plugin package (tests/plugins/tidemark_echo) into the
#: venv and uninstall it after: one worker, so one's uninstall never pulls it from under
#: the other.
PLUGIN_INSTALLERS = frozenset({"tests/e2e/test_plugins.py", "tests/e2e/test_content.py"})
_SHARED_BROKER: dict[str, Proc | str] = {}


def test_group(module: str) -> str:
    """The xdist group of a test module (its path from the repository's root)."""
    return ("heavy" if module in HEAVY else
            "plugin-install" if module in PLUGIN_INSTALLERS else module)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """xdist controller, with ``--dist loadgroup``: each :func:`test_group` goes whole to
    one worker. (xdist's own loadgroup reads ``xdist_group`` marks into node ids by
    assigning ``Item._nodeid``, which pytest 9.2 no longer reads: every test was scheduled
    alone.) The groups come from the node ids' paths, so no mark is needed."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid.split("::", 1)[0])

    return ByGroup(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist controller, once per worker: start the session's broker on the first call
    (unless one is given) and pass its address to the worker."""
    if "bootstrap" not in _SHARED_BROKER and not os.environ.get("TIDEMARK_KAFKA_BOOTSTRAP") \
            and os.environ.get("TIDEMARK_TEST_DOCKER") != "1":
        import tempfile

        logdir = Path(tempfile.mkdtemp(prefix="tidemark-test-kafka-"))
        broker = Proc("kafka", ["kafka", "--data-dir", str(logdir / "data")], base_env(),
                      logdir)
        _SHARED_BROKER["proc"] = broker
        _SHARED_BROKER["bootstrap"] = broker.wait_line(
            "TIDEMARK_KAFKA_BOOTSTRAP=", timeout=120).split("=", 1)[1]
    if "bootstrap" in _SHARED_BROKER:
        node.workerinput["tidemark_kafka_bootstrap"] = _SHARED_BROKER["bootstrap"]  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    broker = _SHARED_BROKER.pop("proc", None)
    if isinstance(broker, Proc):
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("TIDEMARK_KAFKA_BOOTSTRAP") or getattr(
        request.config, "workerinput", {}).get("tidemark_kafka_bootstrap")
    if given:
        yield given
        return
    if os.environ.get("TIDEMARK_TEST_DOCKER") == "1":
        yield from _docker_kafka()
        return
    logdir = tmp_path_factory.mktemp("kafka")
    broker = Proc("kafka", ["kafka", "--data-dir", str(logdir / "data")], base_env(), logdir)
    try:
        line = broker.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", timeout=120)
        yield line.split("=", 1)[1]
    finally:
        broker.stop()


class Cluster:
    """Tidemark processes of one test, in a namespace of their own."""

    def __init__(self, bootstrap: str, logdir: Path) -> None:
        self.bootstrap = bootstrap
        self.namespace = "t" + uuid.uuid4().hex[:12]
        self.logdir = logdir
        self.procs: list[Proc] = []
        self.env = base_env(
            TIDEMARK_KAFKA_BOOTSTRAP=bootstrap,
            TIDEMARK_NAMESPACE=self.namespace,
            TIDEMARK_PARTITIONS="4",
            TIDEMARK_HEARTBEAT_SECONDS="1",
            TIDEMARK_SSE_RETRY_MS="500",
            TIDEMARK_SHUTDOWN_GRACE="3",
        )

    async def gateway(self, **settings: str) -> str:
        """Start a gateway; return its base URL once /readyz answers 200."""
        port = free_port()
        n = sum(p.name.startswith("gateway") for p in self.procs)
        proc = Proc(f"gateway{n}", ["gateway", "--port", str(port)],
                    {**self.env, **settings}, self.logdir)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        await wait_ready(url, proc)
        return url

    def worker(self, **settings: str) -> Proc:
        n = sum(p.name.startswith("worker") for p in self.procs)
        proc = Proc(f"worker{n}", ["worker"], {**self.env, **settings}, self.logdir)
        self.procs.append(proc)
        line = proc.wait_line("Worker started")
        proc.metrics_url = line.rsplit(" ", 1)[1]
        return proc

    async def index_records(self, *stream_ids: str) -> list[StreamInfo | None]:
        """The streams' latest records in the namespace's stream index (what analytics
        read), read by an index reader of the test's own."""
        settings = load_settings(self.env)
        idx = StreamIndex(settings.kafka, namespace=settings.log.namespace)
        await idx.start()
        try:
            assert await idx.load(timeout=20)
            return [idx.get(sid) for sid in stream_ids]
        finally:
            await idx.stop()

    def webhooks(self, **settings: str) -> Proc:
        """Start a webhooks process (``tidemark webhooks``); return once it delivers."""
        n = sum(p.name.startswith("webhooks") for p in self.procs)
        proc = Proc(f"webhooks{n}", ["webhooks"], {**self.env, **settings}, self.logdir)
        self.procs.append(proc)
        line = proc.wait_line("Webhooks started")
        proc.metrics_url = line.rsplit(" ", 1)[1]
        return proc

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
async def cluster(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(kafka_bootstrap, tmp_path)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No connection limit: tests hold hundreds of SSE connections at once.
    # Every request carries the test user's token (auth is on, as by default).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     headers=auth_headers()) as session:
        yield session


# --- Redis: the limits' and session lists' shared store, one per test session ---------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server started for the session (tests that kill Redis start their
    own with ``tests.procs.start_redis``)."""
    from tests.procs import start_redis

    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.stop()
