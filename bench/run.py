"""Tidemark's benchmark: ``python -m bench.run [--full] [--out bench/results/latest.json]``.

Starts everything on this machine, each in its own process: a local Kafka broker
(``python -m tidemark kafka``), gateway processes (``python -m tidemark gateway``, and
the baseline ``bench.baseline_gateway``), the publisher (``bench.publisher``) and a
swarm of Go SSE clients (``bench/sseclient``). Runs the scenarios of issue 3, writes
every figure with its setup to the results file and prints Markdown tables.

The short profile (the default, ``make bench``) takes a few minutes on 2 cores;
``--full`` runs the large figures (10,000+ connections, rates up to 30,000 events/s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    report,
    scenarios,
    scn_batch,
    scn_cache,
    scn_compression,
    scn_content,
    scn_durable,
    scn_history,
    scn_priority,
    scn_storm,
    scn_tenants,
    scn_warmup,
    scn_worker_path,
    swarm,
)
from bench.cluster import Bench, start_broker
from bench.procs import REPO, Registry, raise_fd_limit

SCENARIOS = ("connections", "delivery", "first_resume", "side_by_side", "worker_path",
             "storm", "processes", "history", "priority", "tenants", "compression", "durable",
             "cache", "content", "batch", "warmup")


def _meta(profile: str, fd: tuple[int, int]) -> dict[str, Any]:
    mem_kb = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines()
                  if x.startswith("MemTotal:"))
    jars = sorted(p.name for p in (REPO / ".cache/kafka/libs").glob("kafka_2.13-*.jar"))
    kafka = jars[0].removeprefix("kafka_2.13-").removesuffix(".jar") if jars else "?"
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False,
                        timeout=30).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            capture_output=True, check=False, timeout=30).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "gateway", "eventlog",
                            "schemas", "tidemark"], cwd=REPO, text=True, capture_output=True,
                           check=False, timeout=30).stdout.strip()
    import aiohttp
    import aiokafka
    return {
        "profile": profile, "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(), "go": go,
        "kafka": kafka, "aiokafka": aiokafka.__version__, "aiohttp": aiohttp.__version__,
        "stack": f"Kafka {kafka} single-node KRaft broker, aiokafka {aiokafka.__version__}, "
                 f"aiohttp {aiohttp.__version__} + uvloop, Python {platform.python_version()}",
        "client": "bench/sseclient (Go, one goroutine and socket per connection)",
        "git_commit": commit, "uncommitted_server_changes": bool(dirty),
        "open_files_limit": {"soft": fd[0], "hard": fd[1]},
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def _run(name: str, fn: Callable[[], Any], results: dict[str, Any]) -> None:
    sys.stderr.write(f"bench: {name} ...\n")
    t0 = time.monotonic()
    try:
        out = fn()
    except Exception as exc:  # noqa: BLE001 - one scenario's failure is recorded, not fatal
        traceback.print_exc()
        out = {name: {"error": f"{type(exc).__name__}: {exc}"[-3000:]}}
    took = round(time.monotonic() - t0, 1)
    for key, value in out.items():
        value.setdefault("wall_s", took)
        results["scenarios"][key] = value
    sys.stderr.write(f"bench: {name} done in {took} s\n")


def _rev(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, text=True,
                          capture_output=True, check=True, timeout=30).stdout.strip()


def _snapshot(rev: str, dest: Path) -> Path:
    """The tree of ``rev`` in ``dest`` (read-only use of git), with this checkout's bench/."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=REPO,
                             capture_output=True, check=True, timeout=120).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
    shutil.rmtree(dest / "bench", ignore_errors=True)
    shutil.copytree(REPO / "bench", dest / "bench",
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    return dest


def _ensure_broker(b: Bench, results: dict[str, Any], before: str) -> None:
    """A broker that exited (killed from outside, say) is replaced, and that is noted."""
    if b.broker.alive:
        return
    note = (f"the Kafka broker had exited (code {b.broker.popen.returncode}) before "
            f"'{before}'; a new one was started")
    sys.stderr.write(f"bench: {note}\n")
    results.setdefault("incidents", []).append(note)
    b.reg.stop(b.broker)
    b.broker, b.bootstrap = start_broker(b.reg, b.workdir / f"kafka-data-{before}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the large figures (takes longer)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    ap.add_argument("--keep", action="store_true", help="keep logs and broker data")
    ap.add_argument("--set", action="append", default=[], metavar="TIDEMARK_X=VALUE",
                    help="an extra setting for every Tidemark gateway (repeatable); the "
                    "results record it")
    ap.add_argument("--at", metavar="REV", help="run the servers from this git revision "
                    "(a `git archive` snapshot, with this checkout's bench/) instead of the "
                    "working tree")
    ap.add_argument("--history-sizes", default="", metavar="N,N,...",
                    help="cumulative stream counts of the history scenario's steps "
                    "(default: 25000,50000,100000; --full: 250000,500000,1000000)")
    ap.add_argument("--compression-modes", default=",".join(scn_compression.MODES),
                    metavar="MODE,...", help="the compression scenario's modes (default: "
                    "all)")
    args = ap.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios: {sorted(unknown)}")
    profile = scenarios.FULL if args.full else scenarios.SHORT
    if args.no_profile:
        profile = scenarios.Profile(**{**profile.__dict__, "profile_s": 0.0})
    storm_profile = scn_storm.FULL if args.full else scn_storm.SHORT

    settings = dict(x.split("=", 1) for x in args.set)
    if any(not k.startswith("TIDEMARK_") for k in settings):
        ap.error("--set takes TIDEMARK_NAME=VALUE")
    history_sizes = tuple(int(x) for x in args.history_sizes.split(",") if x.strip())
    fd = raise_fd_limit()
    run_id = secrets.token_hex(3)
    workdir = REPO / ".cache" / "bench" / f"run-{run_id}"
    logdir = workdir / "logs"
    logdir.mkdir(parents=True)
    src = _snapshot(args.at, workdir / "src") if args.at else REPO
    reg = Registry(logdir, cwd=src)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(profile.name, fd), "scenarios": {}}
    results["meta"]["workdir"] = str(workdir)
    results["meta"]["gateway_settings"] = settings
    if args.at:
        results["meta"]["servers_from"] = f"git revision {args.at} ({_rev(args.at)})"
        results["meta"]["uncommitted_server_changes"] = False
    else:
        results["meta"]["servers_from"] = "working tree"
    sys.stderr.write(f"bench: {profile.name} profile, logs in {logdir}\n")
    try:
        client = swarm.build(REPO / ".cache" / "bench")
        broker, bootstrap = start_broker(reg, workdir / "kafka-data")
        b = Bench(reg=reg, bootstrap=bootstrap, workdir=workdir, client=client,
                  run_id=run_id, broker=broker, gateway_settings=settings)
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "connections": lambda: {"connections": scenarios.connections(b, profile)},
            "delivery": lambda: {"delivery": scenarios.delivery(b, profile)},
            "first_resume": lambda: scenarios.first_and_resume(b, profile),
            "side_by_side": lambda: {"side_by_side": scenarios.side_by_side(b, profile)},
            "worker_path": lambda: {"worker_path": scn_worker_path.worker_path(b, profile)},
            "storm": lambda: {"storm": scn_storm.storm(b, storm_profile,
                                                       profile=profile.profile_s > 0)},
            "processes": lambda: {"processes": scn_storm.processes(b, storm_profile, profile)},
            "history": lambda: {"history": scn_history.history(b, profile.name, history_sizes)},
            "priority": lambda: {"priority": scn_priority.priority(b)},
            "cache": lambda: {"cache": scn_cache.cache(b)},
            "tenants": lambda: {"tenants": scn_tenants.tenants(b, profile.name)},
            "compression": lambda: {"compression": scn_compression.compression(
                b, profile.name, tuple(args.compression_modes.split(",")))},
            "batch": lambda: {"batch": scn_batch.batch(b)},
            "durable": lambda: {"durable": scn_durable.durable(
                b, scn_durable.FULL if args.full else scn_durable.SHORT)},
            "content": lambda: {"content": scn_content.content(profile.name)},
            "warmup": lambda: {"warmup": scn_warmup.warmup(b)},
        }
        for name in SCENARIOS:
            if name in only:
                _ensure_broker(b, results, name)
                _run(name, steps[name], results)
    except (Exception, KeyboardInterrupt, SystemExit) as exc:  # noqa: BLE001 - recorded
        results["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
        traceback.print_exc()
    finally:
        reg.stop_all()
        results["meta"]["wall_s"] = round(time.monotonic() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        if not args.keep:
            for data in workdir.glob("kafka-data*"):
                with contextlib.suppress(OSError):
                    scenarios.cleanup_workdir(data)
    print(report.render(results))
    print(f"\nResults: {args.out}")
    return 1 if results.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
