"""``tidemark gateway --processes N``: N gateway processes on one port, supervised.

Each child is a full gateway (``tidemark gateway --supervised``: its own Kafka clients
and tail consumer) that binds the same host:port with ``SO_REUSEPORT``, so
the kernel spreads new connections over the children. The parent holds no connection
and no Kafka client; it

- reserves the port first (a socket bound with ``SO_REUSEPORT`` that never listens, so
  it takes no connection): with ``--port 0`` the kernel picks one port there and every
  child is given it; the reservation also makes a port that something else holds fail
  at once, before any child starts;
- passes the settings it read down to the children as ``TIDEMARK_*`` variables (the
  children read them like any process; the parent reads the environment only through
  ``load_settings``);
- prints ``Gateway listening on http://H:P/`` once every child listens, and
  ``Gateway ready: N processes`` once every child has reached Kafka;
- restarts a child that exits on its own (the others keep serving meanwhile; the dead
  child's clients resume on them): at once if it had run ``STABLE_S``, else after a
  backoff doubling from ``BACKOFF_FIRST_S`` to ``BACKOFF_MAX_S``. After
  ``MAX_QUICK_FAILURES`` quick failures in a row (over all children) the parent stops
  every child and exits 1, and so it does if a child exits before it ever listened (a
  bad port, say);
- on SIGTERM/SIGINT forwards SIGTERM to every child (each drains as a single gateway
  does) and exits once they have exited; a child still running after
  ``TIDEMARK_SHUTDOWN_GRACE`` plus ``KILL_MARGIN_S`` is killed.

Children run in their own process group (a signal to the parent's group reaches them
once, through the parent) and get SIGTERM, so they drain, if the parent is killed
(``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from eventlog.settings import Settings

log = logging.getLogger(__name__)

LISTENING: Final = "Gateway listening on "
READY: Final = "Gateway ready"
#: A child that has run this long before it exits is restarted at once (backoff reset).
STABLE_S: Final = 30.0
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 10.0
MAX_QUICK_FAILURES: Final = 10
KILL_MARGIN_S: Final = 5.0


def settings_environ(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``TIDEMARK_*`` variables that :func:`load_settings` reads back."""
    out: dict[str, str] = {}
    sections = [getattr(settings, f.name) for f in dataclasses.fields(settings)
                if dataclasses.is_dataclass(getattr(settings, f.name))]
    for obj in (*sections, settings):
        for f in dataclasses.fields(obj):
            name = f.metadata.get("env")
            if name is not None:
                out[name] = str(getattr(obj, f.name))
    return out


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT that never listens (see above)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:
    """In a child, before exec: be killed (SIGTERM, so it still drains) if the parent dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class _Child:
    slot: int
    proc: asyncio.subprocess.Process
    started: float
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    """Runs and watches ``count`` gateway children on one port (see the module doc)."""

    def __init__(self, settings: Settings, count: int, *, base_env: Mapping[str, str]) -> None:
        self.settings = settings
        self.count = count
        self._base_env = {k: v for k, v in base_env.items() if not k.startswith("TIDEMARK_")}
        self._children: dict[int, _Child] = {}
        self._quick_failures = 0
        #: Every child's stdout reader (a restarted child's old one runs out by itself).
        self._readers: set[asyncio.Task[None]] = set()

    def _env(self, port: int) -> dict[str, str]:
        env = dict(self._base_env)
        env.update(settings_environ(self.settings))
        env["TIDEMARK_PORT"] = str(port)
        env["TIDEMARK_GATEWAY_PROCESSES"] = "1"
        return env

    async def _spawn(self, slot: int, port: int) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tidemark", "gateway", "--supervised",
            env=self._env(port), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, start_new_session=True,
            preexec_fn=_die_with_parent)
        child = _Child(slot, proc, asyncio.get_running_loop().time())
        reader = asyncio.create_task(self._read(child), name=f"gateway-child-{slot}-out")
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        self._children[slot] = child
        log.info("gateway process %s started (pid %s)", slot, proc.pid)
        return child

    async def _read(self, child: _Child) -> None:
        """Forward the child's stdout, noting its listening and ready lines."""
        stream = child.proc.stdout
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            if text.startswith(LISTENING):
                child.listening.set()
            elif text.startswith(READY):
                child.ready.set()
                log.info("gateway process %s (pid %s) is ready", child.slot, child.proc.pid)
            else:
                _out(text)

    async def run(self, stop: asyncio.Event) -> int:
        """Start the children, watch them until ``stop`` is set, then drain them all."""
        gw = self.settings.gateway
        reservation = reserve_port(gw.host, gw.port)
        announce: asyncio.Task[None] | None = None
        try:
            port: int = reservation.getsockname()[1]
            for slot in range(self.count):
                await self._spawn(slot, port)
            code = await self._start_up(stop)
            if code is not None:
                return code
            _out(f"{LISTENING}http://{gw.host}:{port}/")
            announce = asyncio.create_task(self._announce_ready(port), name="gateway-ready")
            return await self._watch(stop, port)
        finally:
            if announce is not None:
                announce.cancel()
            await self._stop_all()
            reservation.close()

    async def _start_up(self, stop: asyncio.Event) -> int | None:
        """Wait until every child listens; an exit code if one exited first (1) or a stop
        came first (0)."""
        children = list(self._children.values())
        waits = [asyncio.ensure_future(c.listening.wait()) for c in children]
        exits = [asyncio.ensure_future(c.proc.wait()) for c in children]
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not all(c.listening.is_set() for c in children):
                await asyncio.wait([*waits, *exits, stopped],
                                   return_when=asyncio.FIRST_COMPLETED)
                if stopped.done():
                    return 0
                dead = [c for c in children if c.proc.returncode is not None]
                if dead:
                    log.error("gateway process %s exited with %s before it listened; "
                              "stopping", dead[0].slot, dead[0].proc.returncode)
                    return 1
        finally:
            for fut in [*waits, *exits, stopped]:
                fut.cancel()
        return None

    async def _announce_ready(self, port: int) -> None:
        """Print the ready line once every child (as now running) has reached Kafka."""
        while waiting := [c for c in self._children.values() if not c.ready.is_set()]:
            # A child restarted meanwhile is a new _Child: look again now and then.
            waits = [asyncio.ensure_future(c.ready.wait()) for c in waiting]
            try:
                await asyncio.wait(waits, timeout=1.0, return_when=asyncio.ALL_COMPLETED)
            finally:
                for fut in waits:
                    fut.cancel()
        _out(f"{READY}: {self.count} processes on port {port}")

    async def _watch(self, stop: asyncio.Event, port: int) -> int:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_FIRST_S
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                exits = {asyncio.ensure_future(c.proc.wait()): c
                         for c in self._children.values()}
                try:
                    await asyncio.wait([*exits, stopped], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for fut in exits:
                        fut.cancel()
                if stopped.done():
                    return 0
                for child in [c for c in self._children.values()
                              if c.proc.returncode is not None]:
                    ran = loop.time() - child.started
                    if ran >= STABLE_S:
                        self._quick_failures, backoff = 0, BACKOFF_FIRST_S
                    else:
                        self._quick_failures += 1
                    if self._quick_failures >= MAX_QUICK_FAILURES:
                        log.error("gateway processes keep exiting (%s quick failures in a "
                                  "row); stopping", self._quick_failures)
                        return 1
                    log.warning("gateway process %s (pid %s) exited with %s after %.1f s; "
                                "starting it again in %.1f s", child.slot, child.proc.pid,
                                child.proc.returncode, ran, backoff if ran < STABLE_S else 0)
                    if ran < STABLE_S:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(asyncio.shield(stopped), backoff)
                        backoff = min(BACKOFF_MAX_S, backoff * 2)
                        if stopped.done():
                            return 0
                    await self._spawn(child.slot, port)
        finally:
            stopped.cancel()

    async def _stop_all(self) -> None:
        """SIGTERM to every child; SIGKILL to those still running after the grace."""
        children = list(self._children.values())
        for child in children:
            if child.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = self.settings.gateway.shutdown_grace_s + KILL_MARGIN_S
        waits = [asyncio.ensure_future(c.proc.wait()) for c in children]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=deadline)
            for fut in pending:
                fut.cancel()
        for child in children:
            if child.proc.returncode is None:
                log.error("gateway process %s (pid %s) did not stop in %.0f s; killing it",
                          child.slot, child.proc.pid, deadline)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
        if self._readers:
            await asyncio.wait(list(self._readers), timeout=KILL_MARGIN_S)
        for reader in list(self._readers):
            reader.cancel()
