"""Starting the benchmark's servers (broker, Tidemark or baseline gateways) and
driving the publisher, each as a separate process."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, REPO, Proc, Registry, base_env, free_port


@dataclass
class Bench:
    """What every scenario needs: the registry, the broker, where files go."""

    reg: Registry
    bootstrap: str
    workdir: Path
    client: Path
    run_id: str
    broker: Proc
    errors: list[str] = field(default_factory=list)
    #: Extra settings for every Tidemark gateway (``bench.run --set``), for experiments.
    gateway_settings: dict[str, str] = field(default_factory=dict)

    def namespace(self, tag: str) -> str:
        return f"bench{self.run_id}{tag}"

    def env(self, namespace: str, **settings: str) -> dict[str, str]:
        # The scenarios' clients carry no tokens: gateways run here without auth, unless a
        # scenario sets TIDEMARK_AUTH itself (``tenants`` does).
        return base_env(**{"TIDEMARK_KAFKA_BOOTSTRAP": self.bootstrap,
                           "TIDEMARK_NAMESPACE": namespace, "TIDEMARK_LOG_LEVEL": "WARNING",
                           "TIDEMARK_AUTH": "none", **settings})


def start_broker(reg: Registry, data_dir: Path, timeout: float = 120) -> tuple[Proc, str]:
    jars = REPO / ".cache" / "kafka" / "libs"
    proc = reg.start("kafka", [PYTHON, "-m", "bench.serve", "kafka", "--data-dir",
                               str(data_dir)], base_env(TIDEMARK_KAFKA_JARS=str(jars)))
    line = proc.wait_line("TIDEMARK_KAFKA_BOOTSTRAP=", timeout)
    return proc, line.split("=", 1)[1].strip()


def request(url: str, *, method: str = "GET", body: Any = None, timeout: float = 10,
            ) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def prometheus(url: str) -> dict[str, float]:
    """``/metrics`` as {"name{labels}": value}."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line and not line.startswith("#"):
                    name, _, value = line.rpartition(" ")
                    out[name] = float(value)
    return out


@dataclass
class Gateway:
    proc: Proc
    url: str
    kind: str
    namespace: str

    def ready(self) -> dict[str, Any]:
        status, body = request(self.url + "/readyz", timeout=10)
        return body if status == 200 and isinstance(body, dict) else {}


def start_gateway(bench: Bench, name: str, namespace: str, *, kind: str = "tidemark",
                  timeout: float = 90, args: Sequence[str] = (), **settings: str) -> Gateway:
    """A Tidemark gateway (``tidemark gateway`` through ``bench.serve``) or the baseline;
    ``args`` go on the gateway's command line (``--processes 2``, say)."""
    port = free_port()
    module = "bench.serve" if kind == "tidemark" else "bench.baseline_gateway"
    argv = [PYTHON, "-m", module, *(["gateway"] if kind == "tidemark" else []),
            "--port", str(port), *args]
    if kind == "tidemark":
        settings = {**bench.gateway_settings, **settings}
    proc = bench.reg.start(name, argv, bench.env(namespace, **settings))
    gw = Gateway(proc, f"http://127.0.0.1:{port}", kind, namespace)

    def ready() -> bool:
        try:
            return bool(gw.ready())
        except OSError:
            return False
    proc.wait_for("readiness (/readyz 200)", ready, timeout)
    return gw


def unknown_settings(gw: Gateway) -> list[str]:
    """Settings the gateway reported as unknown (and ignored) at start."""
    text = gw.proc.err.read_text(errors="replace") if gw.proc.err.exists() else ""
    return [line for line in text.splitlines() if "unknown setting" in line]


def _publisher(bench: Bench, name: str, namespace: str, args: list[str]) -> Proc:
    return bench.reg.start(name, [PYTHON, "-m", "bench.publisher", *args], bench.env(namespace))


def _last_json(proc: Proc, kind: str) -> dict[str, Any] | None:
    found = [x for x in proc.json_lines() if x.get("kind") == kind]
    return found[-1] if found else None


def create_streams(bench: Bench, namespace: str, n: int, *, tag: str, via: str = "kafka",
                   gateway: Gateway | None = None, timeout: float = 300,
                   ) -> tuple[Path, list[dict[str, Any]], dict[str, Any]]:
    """Create ``n`` external streams; the streams file, its rows, and the summary."""
    path = bench.workdir / f"streams-{tag}.jsonl"
    args = ["create", "--n", str(n), "--out", str(path), "--via", via,
            "--prefix", f"{tag}{bench.run_id}x"]
    if gateway is not None:
        args += ["--gateway", gateway.url, "--concurrency", "20"]
    proc = _publisher(bench, f"create-{tag}", namespace, args)
    code = proc.wait_exit(timeout)
    try:
        if code != 0:
            raise RuntimeError(f"creating {n} streams failed ({code}):\n{proc.logs()}")
        summary = _last_json(proc, "created") or {}
    finally:
        bench.reg.stop(proc)
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return path, rows, summary


class Publisher:
    """A running ``bench.publisher publish`` process (one shard of the streams)."""

    def __init__(self, bench: Bench, namespace: str, streams: Path, state: Path, *,
                 rate: float, duration: float, payload: int, shard: str = "0/1",
                 name: str = "publisher", tokens: bool = False) -> None:
        self.proc = _publisher(bench, name, namespace, [
            "publish", "--streams", str(streams), "--state", str(state), "--rate", str(rate),
            "--duration", str(duration), "--payload", str(payload), "--shard", shard,
            *(["--tokens"] if tokens else [])])
        self.bench = bench

    def wait_started(self, timeout: float = 60) -> None:
        self.proc.wait_line("PUBLISHING", timeout)

    def result(self, timeout: float) -> dict[str, Any]:
        self.proc.wait_exit(timeout)
        try:
            res = _last_json(self.proc, "publisher")
            if res is None:
                raise RuntimeError(f"publisher gave no summary:\n{self.proc.logs()}")
            return res
        finally:
            self.bench.reg.stop(self.proc)


def publishers(bench: Bench, namespace: str, streams: Path, state_dir: Path, *, rate: float,
               duration: float, payload: int, shards: int) -> list[Publisher]:
    """``shards`` publisher processes splitting the streams; ``state_dir`` keeps each
    stream's next seq across runs."""
    return [Publisher(bench, namespace, streams, state_dir,
                      rate=rate / shards, duration=duration, payload=payload,
                      shard=f"{i}/{shards}", name=f"publisher{i}")
            for i in range(shards)]


def seed(bench: Bench, namespace: str, streams: Path, state: Path, *, count: int,
         payload: int, tag: str, timeout: float = 120) -> dict[str, Any]:
    out = bench.workdir / f"offsets-{tag}.json"
    proc = _publisher(bench, f"seed-{tag}", namespace, [
        "seed", "--streams", str(streams), "--state", str(state), "--count", str(count),
        "--payload", str(payload), "--out", str(out)])
    code = proc.wait_exit(timeout)
    try:
        if code != 0:
            raise RuntimeError(f"seeding failed ({code}):\n{proc.logs()}")
    finally:
        bench.reg.stop(proc)
    offsets: dict[str, Any] = json.loads(out.read_text())
    return offsets


def events_url(gw: Gateway, stream_id: str) -> str:
    return f"{gw.url}/v1/streams/{stream_id}/events"


def wait_until(test: Any, timeout: float, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = test()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)
