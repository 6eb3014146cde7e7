"""``tidemark mirror``: Apache Kafka's MirrorMaker 2, run as a dedicated MirrorMaker
cluster node that copies a namespace's events topic from its home cluster to another
(docs/federation.md).

Nothing here copies records: MirrorMaker 2 does (``org.apache.kafka.connect.mirror
.MirrorMaker`` from the jars ``deploy/mirror/pom.xml`` fetches into ``.cache/mirror/libs``).
This module writes its configuration and runs it:

- ``IdentityReplicationPolicy``: the copy keeps the topic's name, so the other cluster's
  gateways serve it with the same namespace and settings (plus ``TIDEMARK_MIRROR_OF``).
  A namespace has one home cluster, where it is written; the others hold read-only
  copies (no cycles to break, which is why the default policy renames topics).
- Only the events topic (``tidemark.<ns>.events``): a stream, its first event and its
  context are all there, and nothing else is needed to serve it. Jobs stay home, where
  the workers are.
- The source consumer reads ``read_committed``: a worker's aborted transaction (a
  takeover) must not be copied, or the copy would serve events the home never served.
- Partitions and order are kept; record timestamps are kept (the copy is found by time:
  ``gateway.lookup``); offsets are not (MirrorMaker writes only the records, and the
  home's transaction markers take offsets). Hence event ids of codec version 2 carry the
  event's seq (``schemas.eventid``), which is what a reader of the copy resumes from.
  MirrorMaker may write a record twice after its own crash (at-least-once); the gateway
  skips a seq the client has (``gateway.streaming.Cursor``), so clients see it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from eventlog.broker import log4j_file_config
from eventlog.errors import ConfigError
from eventlog.topics import events_topic

log = logging.getLogger(__name__)

MAIN_CLASS: Final = "org.apache.kafka.connect.mirror.MirrorMaker"
_ALIAS: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_MIRROR_JAR: Final = re.compile(r"^connect-mirror-\d[^/]*\.jar$")


@dataclass(frozen=True, slots=True)
class Side:
    """One cluster: its alias (MirrorMaker's name for it) and bootstrap servers."""

    alias: str
    bootstrap: str

    @classmethod
    def parse(cls, text: str) -> Side:
        """``ALIAS=host:port[,host:port...]``."""
        alias, sep, bootstrap = text.partition("=")
        if not sep or _ALIAS.fullmatch(alias) is None or not bootstrap.strip():
            raise ConfigError(f"{text!r} is not ALIAS=host:port (alias: a letter, then up "
                              "to 31 letters, digits, _ or -)")
        return cls(alias, bootstrap.strip())


def properties(home: Side, copy: Side, namespace: str, *, replication_factor: int = 1,
               refresh_s: int = 5) -> str:
    """The ``mm2.properties`` that copies ``namespace``'s events topic from ``home`` to
    ``copy``."""
    if home.alias == copy.alias:
        raise ConfigError("the home and the copy need different aliases")
    topic = re.escape(events_topic(namespace))
    rf = str(replication_factor)
    lines = {
        "clusters": f"{home.alias}, {copy.alias}",
        f"{home.alias}.bootstrap.servers": home.bootstrap,
        f"{copy.alias}.bootstrap.servers": copy.bootstrap,
        f"{home.alias}->{copy.alias}.enabled": "true",
        f"{home.alias}->{copy.alias}.topics": topic,
        f"{copy.alias}->{home.alias}.enabled": "false",
        "replication.policy.class":
            "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        # A worker's aborted transaction is not copied.
        "consumer.isolation.level": "read_committed",
        f"{home.alias}->{copy.alias}.consumer.isolation.level": "read_committed",
        # Records go on as they come (a reader follows them live through the copy).
        "producer.linger.ms": "0",
        "refresh.topics.interval.seconds": str(refresh_s),
        "sync.topic.configs.enabled": "true",
        "sync.topic.acls.enabled": "false",
        # Tidemark resumes by seq, not by translated group offsets (the checkpoint
        # connector still runs: MirrorMaker refuses to configure it disabled).
        "sync.group.offsets.enabled": "false",
        "emit.heartbeats.enabled": "true",
        "tasks.max": "1",
        "replication.factor": rf,
        "offset-syncs.topic.replication.factor": rf,
        "heartbeats.topic.replication.factor": rf,
        "checkpoints.topic.replication.factor": rf,
        "offset.storage.replication.factor": rf,
        "status.storage.replication.factor": rf,
        "config.storage.replication.factor": rf,
        "offset.flush.interval.ms": "1000",
    }
    return "".join(f"{k} = {v}\n" for k, v in lines.items())


def find_mirror_jars(jars_dir: Path) -> Path:
    """The directory of MirrorMaker 2's jars; :class:`ConfigError` when they are not
    there."""
    try:
        found = [p for p in jars_dir.iterdir() if _MIRROR_JAR.match(p.name)]
    except OSError:
        found = []
    if not found:
        raise ConfigError(f"MirrorMaker 2 jars not found in {jars_dir}; run `make setup`")
    return jars_dir


def prepare(home: Side, copy: Side, namespace: str, *, work_dir: Path, jars_dir: Path,
            java: str = "java", heap: str = "256m") -> list[str]:
    """Write MirrorMaker's configuration into ``work_dir``; the command that runs it."""
    jars = find_mirror_jars(jars_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "mm2.properties"
    config.write_text(properties(home, copy, namespace))
    log4j = work_dir / "log4j2.properties"
    log4j.write_text(log4j_file_config("tidemark-mirror", work_dir / "mirror.log", "WARN"))
    return [java, f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{jars}{os.sep}*", MAIN_CLASS,
            str(config), "--clusters", copy.alias]


async def run_mirror(args: list[str], *, work_dir: Path,
                     started: Callable[[int], None]) -> int:
    """Run MirrorMaker 2 (``args`` from :func:`prepare`) until SIGTERM/SIGINT (then stop
    it) or until it exits; ``started`` gets its pid."""
    with (work_dir / "mirror.out").open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT, cwd=work_dir)
    started(proc.pid)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exited = asyncio.ensure_future(proc.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(exited), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await exited
        code = proc.returncode or 0
        if not stop.is_set():
            log.error("MirrorMaker 2 exited (%s); see %s", code, work_dir / "mirror.log")
            return code or 1
        return 0
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
