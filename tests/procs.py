"""Real Tidemark processes for tests: `python -m tidemark <command>` as subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """A ``/metrics`` page: each series (name and labels as written) and its value."""
    async with http.get(url) as resp:
        text = await resp.text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """One tidemark process; its stdout and stderr go to files under ``logdir``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logdir: Path, *,
                 argv: list[str] | None = None) -> None:
        self.name = name
        self.metrics_url = ""
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(
                argv or [sys.executable, "-m", "tidemark", *args], stdout=out, stderr=err,
                env=env, cwd=REPO, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def logs(self, lines: int = 40) -> str:
        text = self.out.read_text(errors="replace") + self.err.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_line(self, prefix: str, timeout: float = 90.0) -> str:
        """The first stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.out.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
            if not self.alive:
                raise AssertionError(f"{self.name} exited early:\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.name} printed no {prefix!r} in {timeout}s:\n{self.logs()}")

    def send(self, sig: int) -> None:
        """Signal the process's whole group (a broker's JVM goes with its launcher)."""
        if self.alive:
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.send(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            return self.popen.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


#: The HS256 key of every gateway the tests start (auth is on, as by default).
TEST_SECRET = "tidemark-test-suite-secret-0123456789abcdef"
ALL_SCOPES = "streams:create streams:read streams:publish streams:cancel"


def token(*, sub: str = "tester", tenant: str = "default", scope: str = ALL_SCOPES,
          ttl_s: float = 3600, **claims: Any) -> str:
    """A bearer token for the test gateways (``gateway.auth.mint_token``)."""
    from gateway.auth import mint_token

    return mint_token(TEST_SECRET, sub=sub, tenant=tenant, scope=scope, ttl_s=ttl_s, **claims)


def auth_headers(**claims: Any) -> dict[str, str]:
    """``Authorization: Bearer`` for a test user (default: ``tester`` of tenant
    ``default`` with every scope but admin)."""
    return {"Authorization": f"Bearer {token(**claims)}"}


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMARK_")}
    env["TIDEMARK_JWT_SECRET"] = TEST_SECRET
    env.update(settings)
    return env


def checkout_entry_points(where: Path) -> dict[str, str]:
    """Settings for processes that must see this checkout's own entry points (the
    ``[project.entry-points]`` of its pyproject.toml), also when the venv's editable
    install was made from an older one: a ``tidemark`` dist-info with them in ``where``,
    put first on ``PYTHONPATH``. The same distribution name, so a venv that already has
    them lists each once (``eventlog.plugins`` keys them by name and distribution)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    info = where / f"tidemark-{project['version']}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: tidemark\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()) + "\n"
        for group, eps in project.get("entry-points", {}).items()))
    path = os.pathsep.join(p for p in (str(where), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


async def wait_ready(url: str, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not proc.alive:
                raise AssertionError(f"{proc.name} exited:\n{proc.logs()}")
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await _sleep(0.1)
    raise AssertionError(f"{proc.name} not ready in {timeout}s:\n{proc.logs()}")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


HAPROXY_CONFIG = """\
global
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    option redispatch
    retries 3
frontend tidemark
    bind 127.0.0.1:{port}
{rules}    default_backend gateways
backend gateways
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 300ms fall 2 rise 1
{servers}
"""


def start_haproxy(gateways: list[str], logdir: Path, *, rules: str = "",
                  name: str = "haproxy") -> tuple[Proc, str]:
    """A real load balancer: round robin, no stickiness, health checks on /readyz.
    ``rules``: frontend lines to add (e.g. ``http-request deny ...``)."""
    port = free_port()
    servers = "\n".join(f"    server gw{i} {url.removeprefix('http://')} check"
                        for i, url in enumerate(gateways))
    config = logdir / f"{name}.cfg"
    frontend = "".join(f"    {line}\n" for line in rules.splitlines())
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers, rules=frontend))
    proc = Proc(name, [], base_env(), logdir, argv=["haproxy", "-db", "-f", str(config)])
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


async def run_node(script: Path, cfg: Any, *, timeout: float = 60.0,
                   on_line: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
                   ) -> list[dict[str, Any]]:
    """Run a Node script with ``cfg`` as its JSON argument; it prints JSON lines, which are
    returned (``on_line`` sees each one as it comes). Fails if it exits non-zero or runs
    past ``timeout``. Output goes through files, read as it grows: no pipe to deadlock."""
    import asyncio
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc = Proc(script.stem, [], base_env(), Path(tmp),
                    argv=["node", str(script), json.dumps(cfg)])
        lines: list[dict[str, Any]] = []
        done = 0
        deadline = time.monotonic() + timeout
        try:
            while True:
                exited = not proc.alive
                text = proc.out.read_text(errors="replace")
                complete = text[:text.rfind("\n") + 1]
                for line in complete[done:].splitlines():
                    lines.append(json.loads(line))
                    if on_line is not None:
                        await on_line(lines[-1])
                done = len(complete)
                if exited:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{script.name} still running after {timeout}s: "
                                         f"{lines}\n{proc.logs()}")
                await asyncio.sleep(0.05)
        finally:
            rc = proc.stop(signal.SIGKILL)
        assert rc == 0, f"{script.name} exited {rc}:\n{proc.err.read_text()}\n{lines}"
        return lines


def wait_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Wait until something listens on 127.0.0.1:``port`` (fail if ``proc`` exits)."""
    for _ in range(int(timeout / 0.05)):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not proc.alive:
            raise AssertionError(f"{proc.name} exited:\n{proc.logs()}")
        time.sleep(0.05)
    raise AssertionError(f"{proc.name} did not listen on {port}:\n{proc.logs()}")


def start_redis(logdir: Path, port: int | None = None) -> tuple[Proc, str]:
    """A real redis-server (Debian's) on ``port`` (default: a free one) on loopback,
    keeping nothing on disk."""
    port = port or free_port()
    proc = Proc("redis", [], base_env(), logdir, argv=[
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(logdir)])
    wait_port(port, proc)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_broker(logdir: Path, name: str = "kafka") -> tuple[Proc, str]:
    """``tidemark kafka`` with its data in ``logdir/kafka-data``; started again with the
    same ``logdir`` it comes back as the same broker on the same listener. Returns the
    process and its bootstrap address."""
    proc = Proc(name, ["kafka", "--data-dir", str(logdir / "kafka-data")], base_env(), logdir)
    return proc, proc.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", 120).split("=", 1)[1]


def start_reference(logdir: Path) -> tuple[Proc, str]:
    """The Durable Streams reference Node server (``@durable-streams/server``, in memory,
    ``conformance/reference-server.mjs``) on a free port; the process and its URL."""
    port = free_port()
    proc = Proc("reference", [], base_env(), logdir, argv=[
        shutil.which("node") or "node", str(REPO / "conformance" / "reference-server.mjs"),
        str(port)])
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


class Gateways:
    """``count`` gateways with the same settings, each on a port of its own that it keeps
    across restarts, optionally behind HAProxy (round robin, no stickiness): the set-up of
    the Durable Streams conformance run, its chaos run and its lease benchmark."""

    def __init__(self, env: dict[str, str], logdir: Path, count: int = 2) -> None:
        self.env = env
        self.logdir = logdir
        self.ports = [free_port() for _ in range(count)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.procs: list[Proc] = []
        self.haproxy: Proc | None = None
        self.balancer = ""
        self._started = 0

    def start(self, i: int) -> Proc:
        """Start gateway ``i`` (not waiting for it); the current process of slot ``i`` is
        ``self.procs[i]``."""
        name = f"gateway{i}" if self._started < len(self.ports) else \
            f"gateway{i}-{self._started}"
        self._started += 1
        proc = Proc(name, ["gateway", "--port", str(self.ports[i])], self.env, self.logdir)
        if i < len(self.procs):
            self.procs[i] = proc
        else:
            self.procs.append(proc)
        return proc

    async def start_all(self, *, haproxy: bool = True) -> None:
        for i in range(len(self.ports)):
            self.start(i)
        for url, proc in zip(self.urls, self.procs, strict=True):
            await wait_ready(url, proc)
        if haproxy:
            self.haproxy, self.balancer = start_haproxy(self.urls, self.logdir)

    async def restart(self, i: int) -> None:
        """Start gateway ``i`` again (its old process must be gone) and wait until ready."""
        await wait_ready(self.urls[i], self.start(i))

    def exited(self) -> list[str]:
        """The logs of every gateway that exited when nobody stopped it."""
        return [f"{p.name} exited:\n{p.logs()}" for p in self.procs if not p.alive]

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for proc in self.procs:
            proc.stop()


@contextlib.contextmanager
def run_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """Where a long run (chaos) puts its processes' logs: ``keep`` (made if missing, kept),
    else a temporary directory removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
