"""Launcher of a local redis-server for ``tidemark dev`` (the limits' shared store).

It runs Debian's ``redis-server`` (``make setup`` installs it) on a free loopback port,
keeping nothing on disk: dev limit counters and session lists start empty each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
from typing import Final

from schemas.errors import TidemarkError

log = logging.getLogger(__name__)

_HOST: Final = "127.0.0.1"
_START_TIMEOUT_S: Final = 10.0


class RedisServerError(TidemarkError):
    """The local redis-server could not be started."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRedis:
    """One redis-server child process; ``url`` once :meth:`start` returned."""

    def __init__(self, binary: str = "redis-server") -> None:
        self._binary = binary
        self._proc: asyncio.subprocess.Process | None = None
        self.url = ""

    @staticmethod
    def available(binary: str = "redis-server") -> bool:
        return shutil.which(binary) is not None

    async def started(self) -> bool:
        """Start; on failure log a warning and return False (dev runs without limits)."""
        try:
            await self.start()
        except (RedisServerError, OSError) as exc:
            log.warning("local redis-server did not start (%s); limits are off", exc)
            return False
        return True

    async def start(self) -> None:
        port = _free_port()
        self._proc = await asyncio.create_subprocess_exec(
            self._binary, "--port", str(port), "--bind", _HOST, "--save", "",
            "--appendonly", "no", "--loglevel", "warning",
            stdout=asyncio.subprocess.DEVNULL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_TIMEOUT_S
        while loop.time() < deadline:
            if self._proc.returncode is not None:
                raise RedisServerError(f"redis-server exited with {self._proc.returncode}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(_HOST, port)
                writer.close()
                await writer.wait_closed()
                self.url = f"redis://{_HOST}:{port}/0"
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise RedisServerError(f"redis-server did not listen on {port} in "
                               f"{_START_TIMEOUT_S:g}s")

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
