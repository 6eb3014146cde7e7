"""Processes of the ``tenants`` scenario (``bench/scn_tenants.py``).

    python -m bench.tenants_load run --gateway URL --secret-file F --tenants T --users U \\
        --streams N --concurrency C [--go-file G] [--foreign-sample S]
    python -m bench.tenants_load topics [--namespace NS]
    python -m bench.tenants_load namespaces --prefix P --start A --stop B [--partitions 12]
    python -m bench.tenants_load delete --prefix P

``run`` is the load client: ``U`` users spread round-robin over ``T`` tenants, one HS256
token per (tenant, user) minted with ``gateway.auth.mint_token`` (scopes create, read and
publish). Stream ``j`` belongs to user ``j % U``. For every stream, ``C`` streams in
flight: ``POST /v1/streams`` (``external``), ``POST .../events`` with one ``result``,
``GET`` of the answer's ``events_url`` (which carries the stream's read token) until the
``result`` event (which must be the second event), and ``GET /v1/streams/{id}`` (which
must say ``completed``); a stream that fails a step is counted with the reason and not
taken further. Each request is timed. After the timed part, a sample of streams is asked
for with a token of another tenant and the answers' statuses counted (a stream of another
tenant answers 404, like one that does not exist). With ``--go-file`` the client mints its
tokens, prints ``READY`` and waits for that file to exist before the timed part, and after
it prints ``TIMED`` and waits for ``G.2`` before the 404 sample (so the harness samples CPU
at the timed part's edges).
The summary is one JSON line (``kind: "load"``).

``topics`` prints the broker's topics and partitions (in all, and of one namespace).
``namespaces`` creates the topics of namespaces ``P<A>`` .. ``P<B-1>`` one after the other
with ``eventlog.topics.ensure_topics`` (a ``LogSettings`` per namespace) and prints the
time taken; ``delete`` deletes every topic whose name starts with ``tidemark.P``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

SCOPE = "streams:create streams:read streams:publish"
OPS = ("create", "publish", "read", "status")
CREATE = {"generator": "external", "query": "bench tenants"}
RESULT = {"type": "result", "data": {"text": "done", "model": "bench-tenants"}}


def out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def quantile(sorted_values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values (nearest rank), or None for none."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize_ms(values_s: list[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of latencies given in seconds, as milliseconds."""
    v = sorted(values_s)
    def ms(x: float | None) -> float | None:
        return None if x is None else round(1000 * x, 2)
    return {"count": len(v), "p50_ms": ms(quantile(v, 0.50)), "p99_ms": ms(quantile(v, 0.99)),
            "max_ms": ms(v[-1] if v else None)}


def wait_file(path: Path, timeout_s: float = 3600.0) -> None:
    """Block until ``path`` exists (the harness's go signal), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} within {timeout_s:.0f}s")
        time.sleep(0.01)


def user_of(stream: int, users: int, tenants: int) -> tuple[str, str]:
    """(tenant, user) of stream number ``stream``: users round-robin over the tenants."""
    u = stream % users
    return f"t{u % tenants}", f"u{u}"


# run --------------------------------------------------------------------------------

class Load:
    def __init__(self, args: argparse.Namespace, tokens: dict[tuple[str, str], str]) -> None:
        self.args = args
        self.tokens = tokens
        self.lat: dict[str, list[float]] = {op: [] for op in OPS}
        self.errors: dict[str, dict[str, int]] = {op: {} for op in OPS}
        self.done = 0
        self.failed = 0
        self.ids: list[tuple[str, str, str]] = []

    def error(self, op: str, what: str) -> None:
        self.errors[op][what] = self.errors[op].get(what, 0) + 1

    async def _timed(self, op: str, coro: Any) -> Any:
        t0 = time.perf_counter()
        got = await coro
        self.lat[op].append(time.perf_counter() - t0)
        return got

    async def stream(self, http: aiohttp.ClientSession, j: int) -> None:
        base = self.args.gateway
        tenant, user = user_of(j, self.args.users, self.args.tenants)
        auth = {"Authorization": f"Bearer {self.tokens[(tenant, user)]}"}

        async def create() -> tuple[int, Any]:
            async with http.post(f"{base}/v1/streams", json=CREATE,
                                 headers=auth) as r:
                return r.status, await r.read()

        status, raw = await self._timed("create", create())
        if status != 201:
            self.error("create", str(status))
            self.failed += 1
            return
        body = orjson.loads(raw)
        sid, events_url = body["stream_id"], body["events_url"]

        async def publish() -> int:
            async with http.post(f"{base}/v1/streams/{sid}/events", json=RESULT,
                                 headers=auth) as r:
                await r.read()
                return r.status

        if (status := await self._timed("publish", publish())) != 200:
            self.error("publish", str(status))
            self.failed += 1
            return

        async def read() -> str:
            async with http.get(f"{base}{events_url}") as r:
                if r.status != 200:
                    return str(r.status)
                events, kind = 0, ""
                async for line in r.content:
                    line = line.rstrip(b"\r\n")
                    if line.startswith(b"event:"):
                        kind = line[6:].strip().decode()
                    elif not line and kind:
                        events += 1
                        if kind == "result":
                            return "ok" if events == 2 else f"result as event {events}"
                        kind = ""
                return f"ended after {events} events"

        if (what := await self._timed("read", read())) != "ok":
            self.error("read", what)
            self.failed += 1
            return

        async def status_of() -> tuple[int, Any]:
            async with http.get(f"{base}/v1/streams/{sid}", headers=auth) as r:
                return r.status, await r.read()

        status, raw = await self._timed("status", status_of())
        state = orjson.loads(raw).get("status") if status == 200 else None
        if state != "completed":
            self.error("status", f"{status} {state}")
            self.failed += 1
            return
        self.done += 1
        self.ids.append((sid, tenant, user))

    async def foreign(self, http: aiohttp.ClientSession, sample: int) -> dict[str, Any]:
        """Streams asked for by a user of another tenant: each must answer 404."""
        answers: dict[str, int] = {}
        for sid, tenant, _user in self.ids[:sample]:
            other = next((t, u) for (t, u) in self.tokens if t != tenant)
            headers = {"Authorization": f"Bearer {self.tokens[other]}"}
            async with http.get(f"{self.args.gateway}/v1/streams/{sid}",
                                headers=headers) as r:
                await r.read()
                answers[str(r.status)] = answers.get(str(r.status), 0) + 1
        return {"asked": min(sample, len(self.ids)), "answers": answers}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from gateway.auth import mint_token

    secret = (await asyncio.to_thread(Path(args.secret_file).read_text)).strip()
    t0 = time.perf_counter()
    tokens = {}
    for u in range(args.users):
        tenant, user = user_of(u, args.users, args.tenants)
        tokens[(tenant, user)] = mint_token(secret, sub=user, tenant=tenant, scope=SCOPE,
                                            ttl_s=7200)
    mint_s = time.perf_counter() - t0
    load = Load(args, tokens)
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        if args.go_file:
            out({"kind": "ready", "tokens": len(tokens), "mint_s": round(mint_s, 3)})
            print("READY", flush=True)
            await asyncio.to_thread(wait_file, Path(args.go_file))
        cpu0, w0 = cpu_seconds(), time.perf_counter()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for j in range(args.streams):
            queue.put_nowait(j)

        async def worker() -> None:
            while True:
                try:
                    j = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    await load.stream(http, j)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                    load.error("exception", type(exc).__name__)
                    load.failed += 1

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        wall = time.perf_counter() - w0
        cpu = cpu_seconds() - cpu0
        if args.go_file:
            print("TIMED", flush=True)
            await asyncio.to_thread(wait_file, Path(args.go_file + ".2"))
        foreign = (await load.foreign(http, args.foreign_sample)
                   if args.tenants > 1 and args.foreign_sample else None)
    requests = sum(len(v) for v in load.lat.values())
    return {"kind": "load", "tenants": args.tenants, "users": args.users,
            "tokens": len(tokens), "streams": args.streams, "concurrency": args.concurrency,
            "completed": load.done, "failed": load.failed, "errors": load.errors,
            "requests": requests, "wall_s": round(wall, 3),
            "requests_per_s": round(requests / wall, 1) if wall else None,
            "streams_per_s": round(load.done / wall, 1) if wall else None,
            "client_cpu_s": round(cpu, 3),
            "client_cpu_pct_of_core": round(100 * cpu / wall, 1) if wall else None,
            "ops": {op: {**summarize_ms(v), "per_s": round(len(v) / wall, 1) if wall else None}
                    for op, v in load.lat.items()},
            "foreign_tenant_status": foreign}


# topics -----------------------------------------------------------------------------

async def _admin() -> Any:
    from eventlog.clients import make_admin, started
    from eventlog.settings import load_settings

    settings = load_settings(os.environ)
    return settings, await started(lambda: make_admin(settings.kafka, role="bench-tenants"),
                                   settings.kafka, "bench admin")


async def broker_topics(admin: Any, namespace: str | None = None) -> dict[str, Any]:
    """The broker's topics and partitions, in all and of ``namespace``'s own topics."""
    names = sorted(await admin.list_topics())
    described = await admin.describe_topics(names) if names else []
    parts = {d["topic"]: len(d["partitions"]) for d in described}
    res: dict[str, Any] = {"topics": len(parts), "partitions": sum(parts.values())}
    if namespace is not None:
        mine = {t: n for t, n in parts.items() if t.startswith(f"tidemark.{namespace}.")}
        res["namespace"] = {"topics": sorted(mine), "partitions": sum(mine.values()),
                            "shared_index_partitions": parts.get("tidemark.streams", 0)}
    return res


async def topics(args: argparse.Namespace) -> dict[str, Any]:
    from eventlog.clients import stop_client

    _settings, admin = await _admin()
    try:
        return {"kind": "topics", **await broker_topics(admin, args.namespace)}
    finally:
        await stop_client(admin)


async def namespaces(args: argparse.Namespace) -> dict[str, Any]:
    from eventlog.clients import stop_client
    from eventlog.topics import ensure_topics

    settings, admin = await _admin()
    times = []
    try:
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for k in range(args.start, args.stop):
            log = dataclasses.replace(settings.log, namespace=f"{args.prefix}{k}",
                                      partitions=args.partitions)
            t = time.perf_counter()
            await ensure_topics(admin, log)
            times.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
        # A topic just created reaches the broker's metadata answers a little later:
        # count once every one of them is there with all its partitions.
        wanted = {f"tidemark.{args.prefix}{k}.{kind}": args.partitions
                  for k in range(args.stop) for kind in ("events", "jobs")}
        t1 = time.perf_counter()
        while True:
            names = set(await admin.list_topics())
            seen = ({d["topic"]: len(d["partitions"])
                     for d in await admin.describe_topics(sorted(set(wanted) & names))}
                    if names >= set(wanted) else {})
            if seen == wanted or time.perf_counter() - t1 > 120:
                break
            await asyncio.sleep(0.5)
        return {"kind": "namespaces", "created": args.stop - args.start,
                "wall_s": round(wall, 3), "client_cpu_s": round(cpu, 3),
                "per_namespace_ms": summarize_ms(times),
                "metadata_wait_s": round(time.perf_counter() - t1, 3),
                "all_in_metadata": seen == wanted,
                "broker": await broker_topics(admin)}
    finally:
        await stop_client(admin)


async def delete(args: argparse.Namespace) -> dict[str, Any]:
    from eventlog.clients import stop_client

    _settings, admin = await _admin()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(f"tidemark.{args.prefix}")]
        t0 = time.perf_counter()
        for i in range(0, len(names), 100):
            await admin.delete_topics(names[i:i + 100])
        return {"kind": "deleted", "topics": len(names),
                "wall_s": round(time.perf_counter() - t0, 3)}
    finally:
        await stop_client(admin)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tenants_load")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--gateway", required=True)
    r.add_argument("--secret-file", required=True)
    r.add_argument("--tenants", type=int, required=True)
    r.add_argument("--users", type=int, required=True)
    r.add_argument("--streams", type=int, required=True)
    r.add_argument("--concurrency", type=int, default=50)
    r.add_argument("--go-file", default="")
    r.add_argument("--foreign-sample", type=int, default=100)
    t = sub.add_parser("topics")
    t.add_argument("--namespace")
    n = sub.add_parser("namespaces")
    n.add_argument("--prefix", required=True)
    n.add_argument("--start", type=int, required=True)
    n.add_argument("--stop", type=int, required=True)
    n.add_argument("--partitions", type=int, default=12)
    d = sub.add_parser("delete")
    d.add_argument("--prefix", required=True)
    args = ap.parse_args(argv)
    import uvloop
    fn = {"run": run, "topics": topics, "namespaces": namespaces, "delete": delete}[args.cmd]
    out(uvloop.run(fn(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
