"""``python -m bench.storm_pair``: only the one-process resume storm of ``storm``, against
one Tidemark gateway and the bare aiohttp server, side by side, several rounds.

The same set-up as ``bench.run --only storm`` (``bench.scn_storm``: a fresh broker, K
streams with M events written while the gateway runs, each client resuming from a random
event of a random stream), but without the ``--processes 2`` storm and the fixed-rate
one, so one measurement takes a minute or two. Rounds alternate which server goes first
(bare, tidemark; tidemark, bare; ...) against the same two servers, so a busy moment of
the shared machine does not fall on one side only. Prints one line per storm and the
ratio per round; writes everything to ``--out`` (default
``.cache/bench/storm-pair.json``).

    flock /tmp/tidemark-heavy.lock .venv/bin/python -m bench.storm_pair --clients 5000
    flock /tmp/tidemark-heavy.lock .venv/bin/python -m bench.storm_pair --clients 15000 \\
        --rounds 1 --profile 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench import swarm
from bench.cluster import Bench, start_broker, start_gateway
from bench.procs import REPO, Registry, raise_fd_limit
from bench.scn_storm import SHORT, StormProfile, resume_targets, start_bare, storm_once

#: Kernel counters (``/proc/net/netstat``, TcpExt) of what happens to SYNs at a full
#: queue; machine-wide, so other work on the machine adds to them.
SYN_COUNTERS = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesRecv",
                "SyncookiesFailed")


def tcp_ext() -> dict[str, int]:
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=False))
            return {k: table.get(k, 0) for k in SYN_COUNTERS}
    return {}


def kernel_limits() -> dict[str, int]:
    """The kernel's caps on a listener's queues (accept: ``somaxconn``; half-open:
    ``tcp_max_syn_backlog``) and whether SYN cookies stand in when they overflow."""
    out = {}
    for name in ("net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog",
                 "net/ipv4/tcp_syncookies"):
        out[name.rsplit("/", 1)[1]] = int(Path(f"/proc/sys/{name}").read_text())
    return out


def proc_stat(pid: int) -> dict[str, float]:
    """A server's user and system CPU seconds and minor page faults so far (its
    ``/proc/<pid>/stat``): a storm's memory growth shows as faults and system time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {"utime_s": int(fields[11]) / tick, "stime_s": int(fields[12]) / tick,
            "minflt": int(fields[7])}


def _line(name: str, x: dict[str, Any]) -> str:
    cpu = x["window"]["processes"]["server"]["cpu_s"]
    return (f"{name:9} connected {x['established']:>6} failed {x['failed']:>4} "
            f"wrong-seq {x['first_seq_mismatch']:>3} all-1st {x['all_first_events_s']} s "
            f"accept {x['accept_rate_per_s']} conn/s server-cpu {cpu:.2f} s "
            f"client-cpu {x['client_cpu_s']} s other {x['other_processes_cpu_s']} s "
            f"syn {x.get('syn', {})} proc {x.get('proc', {})}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storm_pair", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                    help="py-spy the gateway for this long during its first storm")
    ap.add_argument("--set", action="append", default=[], metavar="TIDEMARK_X=VALUE",
                    help="an extra setting for the gateway (repeatable)")
    ap.add_argument("--backlog", type=int, default=4096,
                    help="both servers' accept backlog (the kernel caps it at "
                         "net.core.somaxconn)")
    ap.add_argument("--out", type=Path, default=REPO / ".cache" / "bench" / "storm-pair.json")
    args = ap.parse_args(argv)
    settings = {"TIDEMARK_LISTEN_BACKLOG": str(args.backlog),
                **dict(x.split("=", 1) for x in args.set)}
    p = StormProfile(**{**SHORT.__dict__, "name": "pair", "clients": args.clients})
    raise_fd_limit()
    run_id = secrets.token_hex(3)
    workdir = REPO / ".cache" / "bench" / f"run-{run_id}"
    (workdir / "logs").mkdir(parents=True)
    reg = Registry(workdir / "logs")
    results: dict[str, Any] = {"clients": args.clients, "settings": settings,
                               "kernel": kernel_limits(),
                               "workdir": str(workdir), "rounds": []}
    try:
        client = swarm.build(REPO / ".cache" / "bench")
        broker, bootstrap = start_broker(reg, workdir / "kafka-data")
        b = Bench(reg=reg, bootstrap=bootstrap, workdir=workdir, client=client,
                  run_id=run_id, broker=broker, gateway_settings=settings)
        ns = b.namespace("sp")
        gw = start_gateway(b, "gateway-storm", ns)
        bare, bare_url = start_bare(b, args.backlog)
        tm_lines, bare_lines = resume_targets(b, p, ns, [gw], bare_url, random.Random(p.seed))
        time.sleep(2)
        servers = {"bare": (bare, bare_lines), "tidemark": (gw.proc, tm_lines)}
        for r in range(args.rounds):
            order = ("bare", "tidemark") if r % 2 == 0 else ("tidemark", "bare")
            got: dict[str, Any] = {}
            for name in order:
                proc, lines = servers[name]
                prof = args.profile if (name == "tidemark" and r == 0) else 0.0
                before, stat0 = tcp_ext(), proc_stat(proc.pid)
                got[name] = storm_once(b, p, f"storm-{name}-{r}", proc, lines,
                                       profile_s=prof)
                after, stat1 = tcp_ext(), proc_stat(proc.pid)
                got[name]["proc"] = {k: round(stat1[k] - stat0[k], 2) for k in stat1}
                got[name]["syn"] = {k: after[k] - before[k] for k in after if after[k] - before[k]}
                sys.stdout.write(f"round {r} {_line(name, got[name])}\n")
                sys.stdout.flush()
                time.sleep(3)  # the storm's connections are gone
            ratio = got["tidemark"]["accept_rate_per_s"] / got["bare"]["accept_rate_per_s"]
            got["accept_ratio"] = round(ratio, 3)
            sys.stdout.write(f"round {r} accept rate tidemark / bare: {ratio:.3f}\n")
            results["rounds"].append(got)
        prof = results["rounds"][0]["tidemark"].get("profile") if results["rounds"] else None
        if prof and prof.get("before_headers"):
            bh = prof["before_headers"]
            sys.stdout.write(json.dumps({k: bh[k] for k in (
                "samples", "handler_before_headers_pct", "handler_later_phases_pct",
                "outside_handler_pct")}) + "\n")
    finally:
        reg.stop_all()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    sys.stdout.write(f"results: {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
