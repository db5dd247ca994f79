"""The deployment files (Dockerfile, compose.yaml, deploy/) checked against the code they deploy.

No Docker engine or cluster runs on the development machines, so nothing here builds the image or
applies a manifest. Every fact those files repeat from the code is read back from the code instead:
the listen port and drain timeout from the container configs loaded by the real loader (inside a copy
of the image's file tree made from the Dockerfile's own COPY lines), the probe paths from the running
service, the command from the real `hotline` parser, the environment variables from what the code reads.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from agent.config.settings import Settings, load_settings
from agent.web.client_address import TrustedProxies
from agent.worker.serve import uvicorn_config
from tests.agent.conftest import REPO, Service
from tests.agent.deploy_files import (
    InImage,
    Stage,
    build_image_tree,
    dockerfile_stages,
    env_read_by_code,
    image_workdir,
    load_in_image,
    seconds,
)

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = REPO / "compose.yaml"
HAPROXY = DEPLOY / "compose" / "haproxy.cfg"
ENV_EXAMPLE = DEPLOY / "compose" / "hotline.env.example"
HOTLINE = Path(sys.executable).with_name("hotline")
# Config keys the environment overrides: the tests read the files' own values.
OVERRIDES = ("HOTLINE_STORAGE_URL", "HOTLINE_REDIS_URL", "HOTLINE_LLM_BASE_URL")
# After the drain uvicorn itself may take this long to close (read from agent/worker/serve.py).
UVICORN_SHUTDOWN_S = int(
    re.findall(r"timeout_graceful_shutdown=(\d+)", (REPO / "agent" / "worker" / "serve.py").read_text())[0]
)
MARGIN_S = 10  # the rest of a stop: signal delivery, closing the store, slack
LONGEST_CALL_S = 3600  # balancers must keep a call's socket open at least this long


# ------------------------------------------------------------------------------------------ Dockerfile


@pytest.fixture(scope="module")
def image() -> Stage:
    """The runtime stage: what `docker run` runs."""
    return dockerfile_stages()[-1]


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def image_config(image: Stage, tmp_path: Path, no_overrides: None) -> InImage:
    """The image's own config.yaml (HOTLINE_CONFIG), loaded by the real loader inside the image's tree."""
    root = build_image_tree(image, tmp_path / "image")
    return load_in_image(root, image.env()["HOTLINE_CONFIG"])


@pytest.fixture
def image_settings(image_config: InImage) -> Settings:
    return image_config.settings


def test_image_is_python_311_slim_bookworm_and_multi_stage() -> None:
    stages = dockerfile_stages()
    assert [s.base for s in stages] == ["python:3.11-slim-bookworm"] * len(stages)
    assert len(stages) == 2 and stages[0].alias == "build"


def test_image_installs_the_project_non_editable_from_the_lock() -> None:
    build = dockerfile_stages()[0]
    runs = [r.args for r in build.all("RUN")]
    # Every package from uv.lock, as `make run` installs it (the runtime set: never the dev extra), uv
    # itself pinned by hash; then the project, never editable.
    assert any("--require-hashes -r scripts/uv-requirements.txt" in r for r in runs)
    syncs = [r for r in runs if "uv sync" in r]
    assert len(syncs) == 2 and all("--locked" in r and "--extra" not in r for r in syncs)
    assert "--no-install-project" in syncs[0] and "--no-editable" in syncs[1]
    assert not any("pip install" in r and "uv-requirements" not in r for r in runs)
    copied = {w for c in build.all("COPY") for w in c.args.split()[:-1]}
    assert {"pyproject.toml", "uv.lock", "agent/", "pipelines/", "README.md"} <= copied
    assert "testkit/pyproject.toml" in copied and "testkit/" not in copied  # its metadata only, for the lock
    assert "UV_PROJECT_ENVIRONMENT=/opt/hotline" in build.one("ENV").args


def test_image_runs_hotline_serve_as_a_non_root_user(image: Stage) -> None:
    command = image.one("ENTRYPOINT").exec_form() + image.one("CMD").exec_form()
    assert command == ["hotline", "serve"]
    assert 'hotline = "agent.cli.main:main"' in (REPO / "pyproject.toml").read_text()
    # `serve` is a real subcommand of the real parser (run as the console script, like the image does).
    done = subprocess.run([str(HOTLINE), *command[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: hotline serve" in done.stdout, done.stderr
    user = image.all("USER")[-1].args.split(":")[0]
    assert user.isdigit() and int(user) != 0  # numeric, so Kubernetes' runAsNonRoot can verify it
    assert image.one("STOPSIGNAL").args == "SIGTERM"


def test_image_config_listens_on_all_interfaces_on_the_exposed_port(
    image: Stage, image_settings: Settings
) -> None:
    server = image_settings.service.server
    assert server.host == "0.0.0.0"
    assert image.one("EXPOSE").args.split() == [str(server.port)]
    probe = image.one("HEALTHCHECK").args
    assert f"http://127.0.0.1:{server.port}/healthz" in probe and "CMD [" in probe
    assert image_settings.service.storage.url.startswith("sqlite:")  # PostgreSQL only by env


def test_image_data_dir_is_the_volume_and_bots_are_inside(image: Stage, image_config: InImage) -> None:
    storage = image_config.settings.service.storage
    assert json.loads(image.one("VOLUME").args) == [image_config.path(storage.data_dir)]
    assert image_config.path(storage.recordings_dir).startswith(image_config.path(storage.data_dir) + "/")
    assert image_config.path(image_config.settings.service.prompts_dir) == f"{image_workdir(image)}/prompts"
    assert set(image_config.settings.bots) == {p.stem for p in (REPO / "prompts").glob("*.yaml")}
    assert "mkdir -p var && chown hotline:hotline var" in " ".join(r.args for r in image.all("RUN"))


def test_container_configs_route_calls_like_the_repository_config(
    image_settings: Settings, k8s_settings: Settings, no_overrides: None
) -> None:
    shipped = load_settings(REPO / "config.yaml").service
    for deployed in (image_settings.service, k8s_settings.service):
        assert deployed.numbers == shipped.numbers
        assert deployed.unknown_number == shipped.unknown_number
        assert deployed.security == shipped.security  # the same secret variable names everywhere


def test_dockerignore_keeps_local_state_out_but_not_what_the_image_copies() -> None:
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    assert {".git", ".venv", "var", "deploy/compose/*.env", "deploy/k8s/secret.yaml"} <= set(patterns)
    for stage in dockerfile_stages():
        for copy in stage.all("COPY"):
            *sources, _ = copy.args.split()
            for source in (s for s in sources if not s.startswith("--") and not s.startswith("/")):
                name = source.rstrip("/")
                assert (REPO / name).exists(), source
                assert not any(Path(name).match(p) or name.startswith(p + "/") for p in patterns), source


# --------------------------------------------------------------------------------------- environment


def test_the_code_reads_the_environment_the_image_sets(image: Stage, image_settings: Settings) -> None:
    known = env_read_by_code(image_settings)
    assert {"HOTLINE_CONFIG", "HOTLINE_STORAGE_URL", "HOTLINE_REDIS_URL", "HOTLINE_TRUSTED_PROXIES"} <= known
    assert "FORWARDED_ALLOW_IPS" not in known  # uvicorn's proxy headers are off: it would do nothing
    assert set(image.env()) <= known


def shipped_files() -> list[Path]:
    """Everything a deployment is made from: the Dockerfile, compose.yaml and deploy/ (examples too)."""
    return [REPO / "Dockerfile", COMPOSE, *(p for p in sorted(DEPLOY.rglob("*")) if p.is_file())]


def test_nothing_shipped_trusts_x_forwarded_for_from_everyone(image_settings: Settings) -> None:
    for path in shipped_files():
        text = path.read_text()
        # uvicorn's FORWARDED_ALLOW_IPS="*" took the leftmost, client-written X-Forwarded-For entry.
        assert "FORWARDED_ALLOW_IPS" not in text, path
        assert not re.search(r"(?i)trusted.proxies\W+[\[\"' ]*(\*|0\.0\.0\.0/0|::/0)", text), path
    config = uvicorn_config(image_settings)
    assert config.proxy_headers is False  # client addresses are resolved by agent/web/client_address.py
    assert image_settings.service.server.trusted_proxies == []  # `docker run` alone: no balancer to trust


# ------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def compose_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile."""
    return {name: s for name, s in compose["services"].items() if s.get("build") in (".", "./")}


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z]", line))
    return {key: value for key, value in pairs}


def interpolated(value: str) -> str:
    """A compose value with ${VAR…} replaced by the example env file's values."""
    example = env_example()
    return re.sub(r"\$\{([A-Z0-9_]+)[^}]*\}", lambda m: example[m.group(1)], value)


def test_compose_runs_two_workers_of_one_image_with_the_same_settings(compose: dict[str, Any]) -> None:
    workers = compose_workers(compose)
    assert len(workers) == 2
    first, second = workers.values()
    assert first == second  # one image, one environment, one shared var volume
    assert first["image"] and not first.get("command") and not first.get("entrypoint")
    assert any(v.endswith(":/app/var") for v in first["volumes"])


def test_compose_workers_share_postgres_and_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = next(iter(compose_workers(compose).values()))["environment"]
    redis = urlsplit(env["HOTLINE_REDIS_URL"])
    assert (
        redis.scheme == "redis"
        and redis.hostname in services
        and "redis" in services[redis.hostname]["image"]
    )
    pg = urlsplit(interpolated(env["HOTLINE_STORAGE_URL"]))
    postgres = services[pg.hostname or ""]
    assert pg.scheme == "postgresql" and "postgres" in postgres["image"]
    pg_env = postgres["environment"]
    assert (pg.username, pg.path, pg.password) == (
        pg_env["POSTGRES_USER"], "/" + pg_env["POSTGRES_DB"], interpolated(pg_env["POSTGRES_PASSWORD"])
    )  # fmt: skip


def test_compose_workers_wait_for_healthy_services_and_get_time_to_drain(
    compose: dict[str, Any], image: Stage, image_settings: Settings
) -> None:
    services = compose["services"]
    worker = next(iter(compose_workers(compose).values()))
    for name, condition in worker["depends_on"].items():
        assert condition == {"condition": "service_healthy"} and services[name]["healthcheck"]["test"]
    # The workers' own healthcheck is the image's (on /healthz); the balancer's is its own.
    assert "healthcheck" not in worker and "/healthz" in image.one("HEALTHCHECK").args
    assert services["lb"]["healthcheck"]["test"]
    drain = image_settings.service.server.drain_timeout_s
    assert seconds(worker["stop_grace_period"]) >= drain + UVICORN_SHUTDOWN_S + MARGIN_S


def test_compose_secrets_come_from_the_example_env_file_and_the_code_reads_them(
    compose: dict[str, Any], image_settings: Settings
) -> None:
    referenced = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert referenced == set(env_example())  # nothing missing, nothing unused
    env = next(iter(compose_workers(compose).values()))["environment"]
    assert set(env) <= env_read_by_code(image_settings)
    security = image_settings.service.security
    required_env = (security.webhook_secret_env, security.stream_secret_env, security.session_secret_env)
    for required in (*required_env, "HOTLINE_STORAGE_URL"):
        assert ":?" in env[required], f"{required} must be set (a worker would generate its own)"


def haproxy_lines() -> list[list[str]]:
    lines = (line.split("#")[0].split() for line in HAPROXY.read_text().splitlines())
    return [words for words in lines if words]


def test_balancer_checks_readiness_and_routes_to_every_worker(
    compose: dict[str, Any], image_settings: Settings
) -> None:
    lines = haproxy_lines()
    servers = {words[1]: words[2] for words in lines if words[0] == "server"}
    port = image_settings.service.server.port
    assert servers == {name: f"{name}:{port}" for name in compose_workers(compose)}
    assert ["http-check", "send", "meth", "GET", "uri", "/healthz"] in lines
    assert ["http-check", "expect", "status", "200"] in lines
    assert seconds(next(w[2] for w in lines if w[:2] == ["timeout", "tunnel"])) >= LONGEST_CALL_S
    assert not any(w[0] in ("cookie", "stick", "stick-table") for w in lines)  # no sticky sessions


def test_balancer_port_is_the_public_url_the_workers_hand_out(
    compose: dict[str, Any], image_settings: Settings
) -> None:
    lb = compose["services"]["lb"]
    (published,) = lb["ports"]
    host_port, container_port = published.split(":")
    assert ["bind", f":{container_port}"] in haproxy_lines()
    assert any(v.startswith("./deploy/compose/haproxy.cfg:") for v in lb["volumes"])
    # ws_url in answer_url responses derives from public_url: it must point at the balancer.
    assert urlsplit(image_settings.service.server.public_url).port == int(host_port)


def test_compose_workers_trust_the_balancer_and_nothing_else(
    compose: dict[str, Any], image: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = compose["networks"]["default"]["ipam"]["config"][0]
    subnet, others = ipaddress.ip_network(network["subnet"]), ipaddress.ip_network(network["ip_range"])
    balancer = ipaddress.ip_address(compose["services"]["lb"]["networks"]["default"]["ipv4_address"])
    # A fixed address in the subnet that Docker never hands to another container.
    assert balancer in subnet and balancer not in others and others.subnet_of(subnet)  # type: ignore[arg-type]
    env = next(iter(compose_workers(compose).values()))["environment"]
    monkeypatch.setenv("HOTLINE_TRUSTED_PROXIES", env["HOTLINE_TRUSTED_PROXIES"])
    for name in OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    root = build_image_tree(image, tmp_path / "image")
    settings = load_in_image(root, image.env()["HOTLINE_CONFIG"]).settings  # the real loader reads the env
    assert settings.service.server.trusted_proxies == [str(balancer)]


def test_balancer_replaces_x_forwarded_for_and_logs_no_secret() -> None:
    lines = haproxy_lines()
    # The header holds the address HAProxy saw, only: set, never appended to (option forwardfor).
    assert ["http-request", "set-header", "X-Forwarded-For", "%[src]"] in lines
    assert not any(w[:2] == ["option", "forwardfor"] for w in lines)
    # Logged: a redacted copy of the request, never the raw request line, URI, query or a header.
    (log_format,) = [" ".join(w[1:]) for w in lines if w[0] == "log-format"]
    assert log_format.endswith('%{+Q}[var(txn.logged_request)]"')
    assert not re.search(r"%(\{[^}]*\})?(r|HU|HQ|hr|hrl|CC)\b", log_format), log_format
    assert not any(w[:2] == ["option", "httplog"] for w in lines)  # its format logs the request line
    assert not any(w[0] in ("capture", "http-request") and "capture" in w for w in lines)
    assert ["http-request", "set-var(txn.logged_query)", "query,regsub(=[^&]*,=redacted,g)"] in lines


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_its_config() -> None:
    done = subprocess.run(["haproxy", "-c", "-f", str(HAPROXY)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s by (kind, name), the examples included."""
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "config.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def pod(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests[("Deployment", "hotline")]["spec"]["template"]["spec"]
    return spec


@pytest.fixture
def k8s_config(image: Stage, pod: dict[str, Any], tmp_path: Path, no_overrides: None) -> InImage:
    """deploy/k8s/config.yaml loaded where the Deployment mounts it, in the image's file tree."""
    root = build_image_tree(image, tmp_path / "image")
    config_path = container_env(pod)["HOTLINE_CONFIG"]
    return load_in_image(root, config_path, (K8S / "config.yaml").read_text())


@pytest.fixture
def k8s_settings(k8s_config: InImage) -> Settings:
    return k8s_config.settings


def container_env(pod: dict[str, Any]) -> dict[str, str]:
    (container,) = pod["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_every_yaml_file_parses_and_kustomize_lists_real_files(kustomization: dict[str, Any]) -> None:
    for path in [COMPOSE, *DEPLOY.rglob("*.yaml")]:
        assert list(yaml.safe_load_all(path.read_text())), path
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (K8S / file).is_file(), file
    # The examples are applied by hand, after editing: never from `kubectl apply -k`.
    assert not any("example" in r for r in kustomization["resources"])


def test_worker_deployment_probes_the_real_routes(
    pod: dict[str, Any], manifests: dict[tuple[str, str], dict[str, Any]], service: Service
) -> None:
    assert manifests[("Deployment", "hotline")]["spec"]["replicas"] == 2
    (container,) = pod["containers"]
    ready, live, startup = (
        container[p]["httpGet"] for p in ("readinessProbe", "livenessProbe", "startupProbe")
    )
    assert ready["path"] == "/healthz"  # 503 while draining: the pod leaves the endpoints
    assert live["path"] != ready["path"] and startup["path"] == live["path"]  # a drain is not a hang
    for probe in (ready, live):
        response = httpx.get(service.url + probe["path"], timeout=5)
        assert response.status_code == 200, probe
    assert httpx.get(service.url + ready["path"]).json()["status"] == "ok"


def test_worker_deployment_runs_the_image_command_on_the_configured_port(
    pod: dict[str, Any], image: Stage, k8s_settings: Settings
) -> None:
    (container,) = pod["containers"]
    assert "command" not in container and container["args"] == image.one("CMD").exec_form()
    (port,) = container["ports"]
    assert port["containerPort"] == k8s_settings.service.server.port
    assert k8s_settings.service.server.host == "0.0.0.0"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
    user = int(image.all("USER")[-1].args.split(":")[0])
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == user


def test_grace_period_outlasts_prestop_drain_and_shutdown(
    pod: dict[str, Any], k8s_settings: Settings
) -> None:
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and 1 <= int(command[1]) <= 15
    drain = k8s_settings.service.server.drain_timeout_s
    needed = int(command[1]) + drain + UVICORN_SHUTDOWN_S + MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed


def test_worker_resources_fit_the_models(pod: dict[str, Any]) -> None:
    (container,) = pod["containers"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    mib = {"Mi": 1, "Gi": 1024}

    def to_mib(quantity: str) -> int:
        number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
        return int(number) * mib[unit]

    assert requests["cpu"] == "2" and to_mib(requests["memory"]) >= 1024  # 600-900 MB resident with models
    assert to_mib(limits["memory"]) > to_mib(requests["memory"]) and "cpu" not in limits


def test_config_map_is_mounted_where_hotline_config_points(
    pod: dict[str, Any], kustomization: dict[str, Any], k8s_config: InImage
) -> None:
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (generator,) = kustomization["configMapGenerator"]
    config_volume = next(
        n for n, v in volumes.items() if v.get("configMap", {}).get("name") == generator["name"]
    )
    assert container_env(pod)["HOTLINE_CONFIG"] == f"{mounts[config_volume]}/config.yaml"
    assert generator["files"] == ["config.yaml"]
    # Writable: the data dir and its recordings (read-only root file system otherwise).
    storage = k8s_config.settings.service.storage
    assert mounts["var"] == k8s_config.path(storage.data_dir) == "/app/var"
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert mounts["recordings"] == k8s_config.path(storage.recordings_dir)
    assert k8s_config.path(k8s_config.settings.service.prompts_dir) == "/app/prompts"  # from the image
    assert "persistentVolumeClaim" in volumes["recordings"] and "/tmp" in mounts.values()


def test_k8s_workers_trust_the_ingress_network_only(k8s_settings: Settings, pod: dict[str, Any]) -> None:
    proxies = TrustedProxies(k8s_settings.service.server.trusted_proxies)
    # Behind the ingress every client would count as the ingress: one guesser would lock PIOPIY out.
    assert proxies.networks and all(n.is_private and n.prefixlen >= 8 for n in proxies.networks)
    assert "FORWARDED_ALLOW_IPS" not in container_env(pod)


def test_k8s_secrets_are_the_ones_the_code_reads(
    pod: dict[str, Any], manifests: dict[tuple[str, str], dict[str, Any]], k8s_settings: Settings
) -> None:
    (container,) = pod["containers"]
    (source,) = container["envFrom"]
    secret = manifests[("Secret", source["secretRef"]["name"])]["stringData"]
    known = env_read_by_code(k8s_settings)
    assert set(secret) | set(container_env(pod)) <= known
    security = k8s_settings.service.security
    shared = {security.webhook_secret_env, security.stream_secret_env, security.session_secret_env}
    assert shared | {"HOTLINE_REDIS_URL", security.api_keys_env} <= set(secret)
    assert secret["HOTLINE_STORAGE_URL"].startswith("postgresql://")


def test_service_pdb_and_ingress_select_the_workers(
    manifests: dict[tuple[str, str], dict[str, Any]], pod: dict[str, Any], k8s_settings: Settings
) -> None:
    labels = manifests[("Deployment", "hotline")]["spec"]["template"]["metadata"]["labels"]
    service = manifests[("Service", "hotline")]["spec"]
    pdb = manifests[("PodDisruptionBudget", "hotline")]["spec"]
    assert service["selector"].items() <= labels.items()
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and pdb["minAvailable"] == 1
    (port,) = service["ports"]
    assert port["targetPort"] == pod["containers"][0]["ports"][0]["name"]
    ingress = manifests[("Ingress", "hotline")]
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "hotline", "port": {"name": port["name"]}}
    # PIOPIY opens wss://<public_url host>/stream: the Ingress must answer for that host, for long.
    assert rule["host"] == urlsplit(k8s_settings.service.server.public_url).hostname
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= LONGEST_CALL_S


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_manifests() -> None:
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    kinds = {doc["kind"] for doc in yaml.safe_load_all(done.stdout)}
    assert kinds == {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
                     "PodDisruptionBudget"}  # fmt: skip
