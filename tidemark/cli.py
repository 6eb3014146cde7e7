"""``tidemark kafka|gateway|worker|webhooks|dev``: start Tidemark's processes; ``tidemark
token`` mints a bearer token for testing; ``tidemark plugins`` lists the installed
plugins."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventlog import tracing
from eventlog.broker import BrokerConfig, BrokerError, LocalBroker
from eventlog.cluster import ClusterConfig, LocalCluster
from eventlog.mirror import Side, prepare, run_mirror
from eventlog.settings import (
    Settings,
    TraceSettings,
    env_names,
    load_settings,
    load_trace_settings,
    otel_env_names,
)
from eventlog.topics import events_topic
from schemas.errors import TidemarkError
from tidemark.logs import setup_logging
from tidemark.redis_server import LocalRedis

if TYPE_CHECKING:
    from aiohttp import web

    from workers.runner import Worker

log = logging.getLogger("tidemark")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_DEV_RESTARTS = 20


def _jars_dir(settings: Settings, path: Path | None = None) -> Path:
    """The broker jars (or ``path``): as set, else where `make setup` puts them in this
    checkout."""
    path = settings.kafka.jars_dir if path is None else path
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _until_signal(*others: Awaitable[object]) -> None:
    """Wait for SIGTERM or SIGINT (or for any of ``others`` to finish)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait()), *map(asyncio.ensure_future, others)]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for fut in done:
            if fut is not waits[0] and fut.exception() is not None:
                raise fut.exception()  # type: ignore[misc]
    finally:
        for fut in waits[:1]:
            fut.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_kafka(settings: Settings, data_dir: Path | None, port: int | None,
                    nodes: int = 1, node: int | None = None) -> int:
    """``tidemark kafka``: one broker, or with ``nodes`` > 1 a KRaft cluster (all of its
    nodes, or with ``node`` only that one of the cluster kept in ``data_dir``)."""
    if nodes < 1:
        raise BrokerError(f"--nodes must be at least 1, not {nodes}")
    if nodes > 1:
        return await _run_cluster(settings, data_dir, port, nodes, node)
    if node is not None:
        raise BrokerError("--node needs --nodes N (N >= 2) and the cluster's --data-dir")
    broker = LocalBroker(BrokerConfig(jars_dir=_jars_dir(settings), data_dir=data_dir,
                                      port=port))
    await broker.start()
    _out(f"TIDEMARK_KAFKA_BOOTSTRAP={broker.bootstrap}")
    try:
        exited = asyncio.ensure_future(broker.wait())
        await _until_signal(exited)
        if exited.done():
            log.error("the broker exited with code %s", exited.result())
            return 1
    finally:
        await broker.stop()
    return 0


async def _run_cluster(settings: Settings, data_dir: Path | None, port: int | None,
                       nodes: int, node: int | None) -> int:
    if node is not None and data_dir is None:
        raise BrokerError("--node starts one node of an existing cluster: give its --data-dir")
    cluster = LocalCluster(ClusterConfig(jars_dir=_jars_dir(settings), nodes=nodes,
                                         data_dir=data_dir, port=port))
    await cluster.start(only=node)
    try:
        for i in [node] if node is not None else cluster.node_ids:
            _out(f"TIDEMARK_KAFKA_NODE={i} pid={cluster.pid(i)} port={cluster.port(i)}")
        _out(f"TIDEMARK_KAFKA_BOOTSTRAP={cluster.bootstrap}")
        while True:
            exited = asyncio.ensure_future(cluster.wait_any())
            await _until_signal(exited)
            if not exited.done():
                exited.cancel()
                return 0
            i, code = exited.result()
            again = f"tidemark kafka --nodes {nodes} --data-dir {cluster.data_dir} --node {i}"
            log.warning("Kafka node %s exited with code %s; start it again with `%s`",
                        i, code, again)
            if not any(cluster.pid(n) is not None for n in cluster.node_ids):
                log.error("every Kafka node of this launcher has exited")
                return 1
    finally:
        await cluster.stop()


@contextlib.asynccontextmanager
async def _traced(traces: TraceSettings, service_name: str) -> AsyncIterator[None]:
    """Tracing on for the block if ``traces`` say so; what is queued is exported at
    its end (off the event loop)."""
    if not tracing.setup(traces, service_name=service_name):
        yield
        return
    try:
        yield
    finally:
        await asyncio.to_thread(tracing.shutdown)


async def run_gateway(settings: Settings, *, supervised: bool = False,
                      dev: bool = False, traces: TraceSettings | None = None) -> int:
    """One gateway process; ``supervised``: a child of :func:`run_gateways`, sharing its
    port with its siblings (``SO_REUSEPORT``); ``dev``: with the demo page's token
    endpoint (``tidemark dev`` only); ``traces``: the ``OTEL_*`` settings (service name
    ``tidemark-gateway``)."""
    async with _traced(traces or TraceSettings(), "tidemark-gateway"):
        return await _run_gateway(settings, supervised=supervised, dev=dev)


#: Net allocations of tracked objects between two young collections of a gateway
#: (CPython's default is 700). See :func:`_tune_gc`.
GC_YOUNG_THRESHOLD = 5_000


def _tune_gc() -> None:
    """The gateway's garbage collector: what is loaded at start lives as long as the
    process, so it is frozen out of the collector's full passes (shorter pauses); and
    young collections run every :data:`GC_YOUNG_THRESHOLD` allocations instead of 700.

    Why: a full collection runs once the objects that survived since the last one
    exceed a quarter of those it saw then. Every open SSE response holds some 60
    tracked objects (its tasks, coroutines, request, response), so a reconnect storm
    grows the live set from tens of thousands to hundreds of thousands of objects
    within seconds, and at the default rate that meant a full pass per 25 % of growth:
    7 passes of 0.1-0.25 s each during a 5,000-client storm, a quarter of the
    gateway's CPU (measured with ``bench.storm_pair``). With 5,000 a full pass needs
    500,000 surviving allocations (10 middle-generation passes). Cyclic garbage that
    dies young is still collected by the young passes (each about a millisecond);
    what lived long enough to reach the old generation (the cycles of a closed
    connection) waits longer for a full pass: about 500,000 allocations' worth at
    most, where the default waited for 70,000. (20,000 was tried: a second 15,000-client
    storm on the same process then failed 1,104 connections and took 11.3 s of CPU
    against 8.2 s for the first, likely the first storm's garbage collected in one
    pass during it; and a slow-client memory test grew past its 16 MiB bound.)
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def _run_gateway(settings: Settings, *, supervised: bool, dev: bool) -> int:
    from aiohttp import web

    from gateway.app import SERVICES_TASK, create_app
    from gateway.hardening import server_options
    from gateway.services import SERVICES
    from tidemark.supervise import LISTENING, READY

    app = create_app(settings, dev=dev)
    _mount_durable(app, settings)
    gw = settings.gateway
    runner = web.AppRunner(app, shutdown_timeout=gw.shutdown_grace_s, access_log=None,
                           **server_options(gw))
    await runner.setup()
    site = web.TCPSite(runner, gw.host, gw.port, reuse_address=True,
                       reuse_port=supervised or None, backlog=gw.listen_backlog)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else gw.port
    if gw.client_send_buffer_bytes:
        from gateway.streaming import bound_listeners
        server = getattr(site, "_server", None)  # aiohttp names no public accessor
        app[SERVICES].listener_send_buffer = bound_listeners(
            getattr(server, "sockets", ()), gw.client_send_buffer_bytes)
    _tune_gc()
    _out(f"{LISTENING}http://{gw.host}:{port}/")

    async def announce_ready() -> None:
        await app[SERVICES].ready.wait()
        _out(f"{READY}: pid {os.getpid()}")

    announce = asyncio.create_task(announce_ready(), name="gateway-ready")
    code = 0
    try:
        services_task: asyncio.Task[None] = app[SERVICES_TASK]
        await _until_signal(services_task)
    except Exception:  # noqa: BLE001 - logged by the services task; exit non-zero
        code = 1
    finally:
        log.info("gateway stopping")
        announce.cancel()
        await runner.cleanup()
    return code


def _mount_durable(app: Any, settings: Settings) -> None:
    """The Durable Streams surface on the gateway's app, authorized by the gateway's
    tokens: ``durable`` and ``gateway`` never import each other; this composes them."""

    from durable.app import mount
    from durable.routes import DS_LOG
    from gateway.auth import AUTHENTICATOR, QUERY, authorize
    from gateway.errors import Unauthenticated
    from gateway.services import READY_CHECKS

    def ds_authorize(request: web.Request, scope: str) -> str:
        # A Durable Streams write may be a plain cross-site form post (text/plain needs
        # no CORS preflight): a cookie alone does not authorize one.
        if (request.app[AUTHENTICATOR].enabled and request.method not in ("GET", "HEAD")
                and "Authorization" not in request.headers and QUERY not in request.query):
            raise Unauthenticated("a bearer token is required", error="invalid_request")
        return authorize(request, scope).tenant

    mount(app, settings, ds_authorize)
    if DS_LOG in app:  # mounted (TIDEMARK_DS_BASE_PATH not empty)
        app[READY_CHECKS].append(app[DS_LOG].not_ready)


async def run_gateways(settings: Settings, count: int) -> int:
    """``count`` supervised gateway processes on one port (see ``tidemark.supervise``)."""
    from tidemark.supervise import Supervisor

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Supervisor(settings, count, base_env=os.environ).run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_worker(settings: Settings, traces: TraceSettings | None = None) -> int:
    """A worker; ``traces``: the ``OTEL_*`` settings (service name ``tidemark-worker``)."""
    async with _traced(traces or TraceSettings(), "tidemark-worker"):
        return await _run_worker(settings)


async def _run_worker(settings: Settings) -> int:
    from eventlog.statsd import pushing
    from workers.plugins import load_generators, load_processors
    from workers.runner import Worker

    generators, report = load_generators(settings.plugin_allow, settings=settings)
    processors, _ = load_processors(settings.plugin_allow, settings=settings)
    missing = settings.worker.content_policy.processors - set(processors)
    if missing:
        log.error("TIDEMARK_CONTENT_POLICY names processors that are not loaded (%s): the "
                  "streams of tenants whose policy names one fail with processor_unavailable",
                  ", ".join(sorted(missing)))
    if not generators:
        log.error("no generator plugin loaded (is Tidemark installed? `tidemark plugins` "
                  "lists them): every job will fail with unknown_generator")
    log.info("generators: %s", ", ".join(sorted(generators)) or "none")
    log.info("content processors: %s", ", ".join(sorted(processors)) or "none")
    # A plugin's distribution version is its generator's version (unless the generator
    # or TIDEMARK_CACHE_GENERATOR_VERSIONS says otherwise): part of its cache key.
    worker = Worker(settings, generators,
                    versions={r.plugin.name: r.plugin.version for r in report},
                    processors=processors)
    ws = settings.worker
    metrics, port = await worker.metrics.serve(
        ws.metrics_host, ws.metrics_port, auth=settings.auth,
        operators=settings.operators_tenant,
        instance=f"{socket.gethostname()}:{os.getpid()}")
    async with pushing(worker.metrics.registry, settings.statsd_config):
        return await _work(settings, worker, metrics, port)


async def _work(settings: Settings, worker: Worker, metrics: web.AppRunner, port: int) -> int:
    """Run ``worker`` (and the index janitor) until a signal; its metrics are served."""
    from eventlog.janitor import run_janitor

    ws = settings.worker
    task = asyncio.create_task(worker.run(), name="worker")
    # Tombstones in the stream index for streams retention has deleted: swept by the
    # worker that owns jobs partition 0.
    janitor = asyncio.create_task(run_janitor(
        settings, active=lambda: any(tp.partition == 0 for tp in worker.partitions)),
        name="index-janitor")
    _out(f"Worker started; metrics on http://{ws.metrics_host}:{port}/metrics")
    try:
        await _until_signal(task)
    finally:
        for part in (janitor, task):
            part.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await part
        await metrics.cleanup()
    return 0


async def run_webhooks(settings: Settings) -> int:
    """The webhooks process: delivers events to the registered webhooks (``workers.webhooks``)."""
    from eventlog.statsd import pushing
    from workers.metrics import serve_metrics
    from workers.plugins import load_signers
    from workers.webhooks import STARTED, Deliverer

    signers, _ = load_signers(settings.plugin_allow, settings=settings)
    if not signers:
        log.error("no webhook signer plugin loaded (`tidemark plugins` lists them): every "
                  "delivery will be a dead letter")
    log.info("webhook signers: %s", ", ".join(sorted(signers)) or "none")
    deliverer = Deliverer(settings, signers)
    wh = settings.webhooks
    metrics, port = await serve_metrics(deliverer.metrics.registry, wh.metrics_host,
                                        wh.metrics_port)
    task = asyncio.create_task(deliverer.run(), name="webhooks")

    async def announce() -> None:
        await deliverer.started.wait()
        _out(f"{STARTED}; metrics on http://{wh.metrics_host}:{port}/metrics")

    announcer = asyncio.create_task(announce(), name="webhooks-started")
    try:
        async with pushing(deliverer.metrics.registry, settings.statsd_config):
            await _until_signal(task)
    finally:
        for part in (announcer, task):
            part.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await part
        await metrics.cleanup()
    return 0


async def run_dev(settings: Settings, data_dir: Path) -> int:
    """A local broker (unless one is set), one worker, one webhooks process and one
    gateway, until Ctrl-C;
    also a local redis-server for the limits unless TIDEMARK_REDIS_URL is set (if it is
    not installed or does not start, the gateway runs with limits off and warns).

    A worker or gateway that exits (say, killed to watch clients resume) is started
    again after a second, up to ``_DEV_RESTARTS`` times.
    """
    broker: LocalBroker | None = None
    env = dict(os.environ)
    gateway_args: list[str] = []
    if settings.auth.mode == "jwt" and not (settings.auth.jwt_secret
                                            or settings.auth.jwt_public_key_file):
        # A secret for this run: the demo page gets its token from /dev/token, and
        # `TIDEMARK_JWT_SECRET=... tidemark token ...` mints more.
        env["TIDEMARK_JWT_SECRET"] = secrets.token_urlsafe(32)
        _out(f"TIDEMARK_JWT_SECRET={env['TIDEMARK_JWT_SECRET']}")
    if settings.auth.mode == "jwt":
        gateway_args.append("--dev-token-endpoint")
    if not settings.kafka.bootstrap:
        broker = LocalBroker(BrokerConfig(jars_dir=_jars_dir(settings), data_dir=data_dir))
        await broker.start()
        env["TIDEMARK_KAFKA_BOOTSTRAP"] = broker.bootstrap
        log.info("local Kafka broker at %s (data in %s)", broker.bootstrap, data_dir)
    redis = None if settings.limits.redis_url or not LocalRedis.available() else LocalRedis()
    if redis is not None and await redis.started():
        env["TIDEMARK_REDIS_URL"] = redis.url
        log.info("local redis-server at %s (limits and session lists)", redis.url)
    children: dict[str, asyncio.subprocess.Process] = {}

    async def supervise(role: str) -> None:
        for attempt in range(_DEV_RESTARTS + 1):
            if attempt:
                log.warning("%s exited with %s; starting it again", role,
                            children[role].returncode)
                await asyncio.sleep(1.0)
            extra = gateway_args if role == "gateway" else []
            children[role] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tidemark", role, *extra, env=env)
            await children[role].wait()
        log.error("%s keeps exiting; stopping", role)

    tasks = [asyncio.create_task(supervise(role))
             for role in ("worker", "webhooks", "gateway")]
    try:
        _out(f"Demo: http://{settings.gateway.host}:{settings.gateway.port}/")
        _dev_dashboard(settings, env.get("TIDEMARK_JWT_SECRET", ""))
        await _until_signal(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for child in children.values():
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for child in children.values():
            try:
                await asyncio.wait_for(child.wait(), 15)
            except TimeoutError:
                child.kill()
                await child.wait()
        if broker is not None:
            await broker.stop()
        if redis is not None:
            await redis.stop()
    return 0


def _gateway_command(settings: Settings, *, supervised: bool, dev: bool = False,
                     traces: TraceSettings | None = None) -> Coroutine[Any, Any, int]:
    count = settings.gateway.process_count(os.cpu_count())
    if supervised or count == 1:
        return run_gateway(settings, supervised=supervised, dev=dev, traces=traces)
    return run_gateways(settings, count)


def _dev_dashboard(settings: Settings, secret: str) -> None:
    """``tidemark dev``: print the dashboard's address with an admin token of the default
    tenant in its fragment (12 h), when this run's tokens are HS256 with ``secret``."""
    from gateway.auth import ADMIN, mint_token

    if settings.auth.mode != "jwt" or not secret:
        return
    admin = mint_token(secret, sub="dev-operator", tenant=settings.auth.default_tenant,
                       scope=ADMIN, ttl_s=12 * 3600,
                       audience=settings.auth.jwt_audience or None)
    gw = settings.gateway
    _out(f"Dashboard: http://{gw.host}:{gw.port}/dashboard#token={admin}")


def _token(settings: Settings, args: argparse.Namespace) -> int:
    """``tidemark token``: print a bearer token signed with ``TIDEMARK_JWT_SECRET``."""
    from gateway.auth import mint_token

    if not settings.auth.jwt_secret:
        sys.stderr.write("tidemark token: set TIDEMARK_JWT_SECRET (the gateways' HS256 key)\n")
        return 2
    limits: dict[str, int] = {}
    if args.max_concurrent_streams is not None:
        limits["maxConcurrentStreams"] = args.max_concurrent_streams
    if args.requests_per_minute is not None:
        limits["requestsPerMinute"] = args.requests_per_minute
    _out(mint_token(settings.auth.jwt_secret, sub=args.sub, tenant=args.tenant,
                    scope=args.scope, ttl_s=args.ttl, tier=args.tier, limits=limits or None,
                    stream=args.stream,
                    audience=args.audience or settings.auth.jwt_audience or None))
    return 0


def _plugins(settings: Settings, as_json: bool) -> int:
    """``tidemark plugins``: every group's installed plugins, with their load status (the
    generators, processors and webhook signers are loaded, as a worker and a webhooks process
    would)."""
    import orjson

    from eventlog.plugins import GENERATORS, GROUPS, PROCESSORS, WEBHOOK_SIGNERS, discover
    from workers.plugins import REFUSED, Status, load_generators, load_processors, load_signers

    rows: list[Status] = []
    for group in GROUPS:
        if group == GENERATORS:
            rows += load_generators(settings.plugin_allow, settings=settings)[1]
            continue
        if group == PROCESSORS:
            rows += load_processors(settings.plugin_allow, settings=settings)[1]
            continue
        if group == WEBHOOK_SIGNERS:
            rows += load_signers(settings.plugin_allow, settings=settings)[1]
            continue
        rows += [Status(plugin=p, state=REFUSED if p.refused else "not loaded",
                        reason=p.refused or "this Tidemark has no loader for the group yet")
                 for p in discover(group, settings.plugin_allow)]
    listed = [{"group": r.plugin.group, "name": r.plugin.name, "distribution": r.plugin.dist,
               "version": r.plugin.version, "object": r.plugin.value, "status": r.state,
               "reason": r.reason} for r in rows]
    if as_json:
        _out(orjson.dumps({"plugins": listed}, option=orjson.OPT_INDENT_2).decode())
        return 0
    for group in GROUPS:
        _out(f"{group}:")
        mine = [row for row in listed if row["group"] == group]
        for row in mine:
            reason = f" ({row['reason']})" if row["reason"] else ""
            _out(f"  {row['name']:16} {row['distribution']} {row['version']:10} "
                 f"{row['object']:40} {row['status']}{reason}")
        if not mine:
            _out("  (none installed)")
    return 0


async def _mirror(settings: Settings, args: argparse.Namespace) -> int:
    """``tidemark mirror``: MirrorMaker 2 copying this namespace's events topic."""
    home, copy = Side.parse(args.home), Side.parse(args.copy)
    work = args.work_dir or PROJECT_ROOT / ".cache" / "mirror" / f"{home.alias}-{copy.alias}"
    command = prepare(home, copy, settings.log.namespace, work_dir=work.resolve(),
                      jars_dir=_jars_dir(settings, settings.kafka.mirror_jars_dir).resolve())
    topic = events_topic(settings.log.namespace)
    return await run_mirror(command, work_dir=work, started=lambda pid: _out(
        f"Mirror started: {home.alias} -> {copy.alias}, topic {topic}; MirrorMaker 2 pid "
        f"{pid}, log {work / 'mirror.log'}"))


def _parser() -> argparse.ArgumentParser:
    variables = "\n".join(f"  {k:32} {v}" for k, v in sorted(
        {**env_names(), **otel_env_names()}.items()))
    parser = argparse.ArgumentParser(
        prog="tidemark", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Resumable Server-Sent Event streams on Apache Kafka.",
        epilog=f"settings (environment variables):\n{variables}")
    sub = parser.add_subparsers(dest="command", required=True)
    kafka = sub.add_parser("kafka", help="run a local KRaft broker, or a cluster of them")
    kafka.add_argument("--data-dir", type=Path, help="keep the broker's data here "
                       "(a restart comes back as the same broker or cluster)")
    kafka.add_argument("--port", type=int, help="listener port (default: a free one); with "
                       "--nodes N, node i listens on PORT+i-1")
    kafka.add_argument("--nodes", type=int, default=1, help="nodes of a KRaft cluster on "
                       "loopback, each broker and controller (default 1: a single broker)")
    kafka.add_argument("--node", type=int, help="with --nodes and --data-dir: start only this "
                       "node of the cluster kept there (one that was killed)")
    gateway = sub.add_parser("gateway", help="run an SSE gateway")
    gateway.add_argument("--host", help="listen address (TIDEMARK_HOST)")
    gateway.add_argument("--port", type=int, help="listen port (TIDEMARK_PORT)")
    gateway.add_argument(
        "--processes", metavar="N|auto",
        help="run N gateway processes on one port with SO_REUSEPORT, supervised by this "
        "one; auto: one per core (TIDEMARK_GATEWAY_PROCESSES, default 1)")
    # A child of a --processes supervisor (binds with SO_REUSEPORT); not for direct use.
    gateway.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    # `tidemark dev` only: the demo page's token endpoint.
    gateway.add_argument("--dev-token-endpoint", action="store_true", help=argparse.SUPPRESS)
    token = sub.add_parser(
        "token", help="print a bearer token signed with TIDEMARK_JWT_SECRET (for testing)")
    token.add_argument("--sub", required=True, help="the user")
    token.add_argument("--tenant", default="default", help="the tenant (default: default)")
    token.add_argument("--scope", default="streams:create streams:read streams:publish "
                       "streams:cancel", help="space-separated scopes (default: all but admin)")
    token.add_argument("--tier", help="the user's tier (default: TIDEMARK_DEFAULT_TIER)")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (default 3600)")
    token.add_argument("--max-concurrent-streams", type=int,
                       help="limits.maxConcurrentStreams (overrides the tier's)")
    token.add_argument("--requests-per-minute", type=int,
                       help="limits.requestsPerMinute (overrides the tier's)")
    token.add_argument("--stream", help="a read token for this one stream")
    token.add_argument("--audience", help="the aud claim (default: TIDEMARK_JWT_AUDIENCE)")
    mirror = sub.add_parser(
        "mirror", help="copy the namespace's events topic to another cluster with "
        "MirrorMaker 2 (docs/federation.md)")
    mirror.add_argument("--from", dest="home", required=True, metavar="ALIAS=BOOTSTRAP",
                        help="the namespace's home cluster, e.g. A=10.0.0.1:9092")
    mirror.add_argument("--to", dest="copy", required=True, metavar="ALIAS=BOOTSTRAP",
                        help="the cluster that gets the copy, e.g. B=10.1.0.1:9092")
    mirror.add_argument("--work-dir", type=Path, help="MirrorMaker's configuration and log "
                        "(default .cache/mirror/<from>-<to>)")
    sub.add_parser("worker", help="run a generation worker")
    sub.add_parser("webhooks", help="run a webhook delivery process (docs/webhooks.md)")
    plugins = sub.add_parser("plugins", help="list the installed plugins and their status")
    plugins.add_argument("--json", action="store_true", help="as a JSON document")
    dev = sub.add_parser("dev", help="broker + gateway + worker + webhooks on loopback")
    dev.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".cache" / "dev-kafka",
                     help="the local broker's data (kept across runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(os.environ)
        traces = load_trace_settings(os.environ)
    except TidemarkError as exc:
        sys.stderr.write(f"tidemark: {exc}\n")
        return 2
    if args.command == "gateway" and (args.host or args.port is not None or args.processes):
        try:
            settings = dataclasses.replace(settings, gateway=dataclasses.replace(
                settings.gateway, host=args.host or settings.gateway.host,
                port=settings.gateway.port if args.port is None else args.port,
                processes=args.processes or settings.gateway.processes))
        except TidemarkError as exc:
            sys.stderr.write(f"tidemark: --processes: {exc}\n")
            return 2
    if args.command == "token":
        return _token(settings, args)
    if args.command == "plugins":
        setup_logging(level="CRITICAL", fmt=settings.log_format, role=args.command,
                      levels="")
        return _plugins(settings, args.json)
    setup_logging(level=settings.log_level, fmt=settings.log_format, role=args.command,
                  levels=settings.log_levels)
    commands: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {
        "kafka": lambda: run_kafka(settings, args.data_dir, args.port, args.nodes, args.node),
        "gateway": lambda: _gateway_command(settings, supervised=args.command == "gateway"
                                            and args.supervised,
                                            dev=args.command == "gateway"
                                            and args.dev_token_endpoint, traces=traces),
        "worker": lambda: run_worker(settings, traces),
        "webhooks": lambda: run_webhooks(settings),
        "mirror": lambda: _mirror(settings, args),
        "dev": lambda: run_dev(settings, args.data_dir),
    }
    try:
        import uvloop

        return uvloop.run(commands[args.command]())
    except ImportError:
        return asyncio.run(commands[args.command]())
    except (BrokerError, TidemarkError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 130
