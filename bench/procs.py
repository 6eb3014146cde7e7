"""Child processes of the benchmark, and their CPU time, RSS and open files from /proc.

Every child runs in its own process group with stdout/stderr in files; the registry
stops them all (SIGTERM to the group, then SIGKILL to what is left of the tree) on
exit, error or signal.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> tuple[int, int]:
    """Soft open-files limit up to the hard one (``ulimit -n $(ulimit -Hn)``), never above."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime in ticks) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += st[1]
    return total / CLK_TCK


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


class Proc:
    """One child process in its own process group, output in ``logdir``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path,
                 cwd: Path = REPO) -> None:
        self.name = name
        self.argv = argv
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd,
                                          start_new_session=True)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self._cpu = 0.0

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> list[int]:
        return process_tree(self.pid) if self.alive else []

    def cpu(self) -> float:
        """CPU seconds of the process tree (the last seen value once it has exited)."""
        if self.alive:
            self._cpu = max(self._cpu, cpu_seconds(self.pids()))
        return self._cpu

    def rss_kb(self) -> int:
        return sum(rss_kb(p) for p in self.pids())

    def fds(self) -> int:
        return sum(fd_count(p) for p in self.pids())

    def stdout_lines(self) -> list[str]:
        try:
            return self.out.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def json_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout_lines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    def logs(self, lines: int = 30) -> str:
        text = ""
        for path in (self.out, self.err):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(self, what: str, test: Callable[[], Any], timeout: float) -> Any:
        """Poll ``test`` until it returns something true; fail if the process dies."""
        deadline = time.monotonic() + timeout
        while True:
            got = test()
            if got:
                return got
            if not self.alive:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}) before "
                                   f"{what}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {what} in {timeout:.0f}s:\n{self.logs()}")
            time.sleep(0.05)

    def wait_line(self, prefix: str, timeout: float) -> str:
        def test() -> str | None:
            return next((x for x in self.stdout_lines() if x.startswith(prefix)), None)
        line: str = self.wait_for(f"line {prefix!r}", test, timeout)
        return line

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM to the process group, then SIGKILL to every process of the tree."""
        if not self.alive:
            return self.popen.returncode
        tree = self.pids()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        code = self.wait_exit(timeout)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if code is None:
            code = self.popen.wait(10)
        return code


class Registry:
    """Every child the benchmark started; stops them all, newest first."""

    def __init__(self, logdir: Path, cwd: Path = REPO) -> None:
        self.logdir = logdir
        self.cwd = cwd
        self.procs: list[Proc] = []
        self._names: dict[str, int] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        """Start a child in the registry's source tree (``cwd``, first on its path)."""
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        env = {**env, "PYTHONPATH": str(self.cwd)}
        proc = Proc(name if n == 0 else f"{name}.{n}", argv, env, self.logdir, self.cwd)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 10.0) -> int:
        code = proc.stop(timeout)
        if proc in self.procs:
            self.procs.remove(proc)
        return code

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        self.procs.clear()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Stop every process started inside the block when it ends."""
        before = set(map(id, self.procs))
        try:
            yield
        finally:
            for proc in reversed([p for p in self.procs if id(p) not in before]):
                with contextlib.suppress(Exception):
                    self.stop(proc)


def base_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMARK_")}
    env.update(settings)
    return env


PYTHON = sys.executable


Group = Proc | list[Proc]


def _members(group: Group) -> list[Proc]:
    return group if isinstance(group, list) else [group]


@dataclass
class Sample:
    """CPU seconds and RSS of named processes (or groups of processes, summed), and the
    machine's busy CPU, at one time."""

    at: float
    cpu: dict[str, float]
    rss_kb: dict[str, int]
    count: dict[str, int]
    system_busy: float

    @classmethod
    def take(cls, procs: dict[str, Group]) -> Sample:
        return cls(time.monotonic(),
                   {k: sum(p.cpu() for p in _members(g)) for k, g in procs.items()},
                   {k: sum(p.rss_kb() for p in _members(g)) for k, g in procs.items()},
                   {k: len(_members(g)) for k, g in procs.items()},
                   system_cpu()[0])


def window(a: Sample, b: Sample) -> dict[str, Any]:
    """Per process (group): CPU seconds in [a, b], share of one core, RSS at b; and the
    CPU that other processes on the machine used meanwhile (noise)."""
    secs = b.at - a.at
    procs = {}
    ours = 0.0
    for name in b.cpu:
        used = b.cpu[name] - a.cpu.get(name, b.cpu[name])
        ours += used
        procs[name] = {"processes": b.count[name], "cpu_s": round(used, 3),
                       "cpu_pct_of_core": round(100 * used / secs, 1) if secs else 0.0,
                       "rss_mb": round(b.rss_kb[name] / 1024, 1)}
    busy = b.system_busy - a.system_busy
    return {"seconds": round(secs, 3), "processes": procs,
            "machine_busy_cpu_s": round(busy, 3),
            "other_processes_cpu_s": round(max(0.0, busy - ours), 3)}
