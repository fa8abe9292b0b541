"""Containers and Kubernetes: each file checked against its schema or linter, and against the others.

No Docker engine or cluster runs here, so these tests stand in for `docker compose up` and
`kubectl apply`: the Compose file against the Compose specification's JSON schema, the manifests
against Kubernetes' own OpenAPI schemas (kubernetes-validate, strict), the Dockerfile through
hadolint, and the references between them (service names, ports, mounted files) followed by hand.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.ops_processes import ROOT, VENV_BIN, load_nginx_render

K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_DEBIAN = ROOT / "docker-compose.debian.yml"


def venv_tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is missing from the virtualenv: make install (it is in requirements.txt)")
    return str(path)


def manifests() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in manifests() if item["kind"] == kind}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# Kubernetes


def minimum_kubernetes() -> str:
    """The oldest Kubernetes the manifests support, as kustomization.yaml states it."""
    found = re.search(r"^# Kubernetes (\d+\.\d+) or later", (K8S / "kustomization.yaml").read_text(), re.MULTILINE)
    assert found, "kustomization.yaml states no minimum Kubernetes version"
    return found.group(1)


def validate(*files: str, version: str | None = None) -> subprocess.CompletedProcess[str]:
    versions = ["--kubernetes-version", f"{version}.0"] if version else []
    return subprocess.run(
        [venv_tool("kubernetes-validate"), "--strict", *versions, *files], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("version", [None, minimum_kubernetes()], ids=["latest", "stated-minimum"])
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str | None) -> None:
    files = [str(path) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"]
    result = validate(*files, version=version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(manifests())


def test_the_stated_minimum_is_needed_an_older_kubernetes_lacks_the_prestop_sleep_action() -> None:
    major, minor = minimum_kubernetes().split(".")
    assert minimum_kubernetes() == "1.30"  # preStop `sleep`: alpha (off) in 1.29, on by default in 1.30
    older = validate(str(K8S / "api-deployment.yaml"), version=f"{major}.{int(minor) - 2}")
    assert older.returncode != 0 and "'sleep' was unexpected" in older.stdout + older.stderr


def test_every_pod_runs_hardened_non_root_read_only_with_the_default_seccomp_profile() -> None:
    pods = {
        name: item["spec"]["template"]["spec"] for name, item in {**of_kind("Deployment"), **of_kind("Job")}.items()
    }
    assert "shop-migrate" in pods
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name


def test_kustomization_lists_real_files_and_leaves_out_the_secret_template() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource
    assert "secret.example.yaml" not in kustomization["resources"]
    # Everything else is applied by `kubectl apply -k`, but the Job that runs before each rollout.
    others = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == others - {"migrate-job.yaml"}


def test_deployments_probe_health_and_readiness_and_run_as_non_root() -> None:
    deployments = of_kind("Deployment")
    assert {"shop-api", "shop-worker", "shop-beat"} <= set(deployments)
    api = deployments["shop-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["command"] == ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert "livenessProbe" in container, name
            assert container["resources"]["limits"]["memory"], name
    assert deployments["shop-beat"]["spec"]["replicas"] == 1
    assert deployments["shop-beat"]["spec"]["strategy"]["type"] == "Recreate"
    # gunicorn's graceful timeout (30 s) fits inside the pod's grace period.
    assert deployments["shop-api"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30


def test_services_autoscalers_and_budgets_point_at_real_pods() -> None:
    pod_labels = {
        name: deployment["spec"]["template"]["metadata"]["labels"] for name, deployment in of_kind("Deployment").items()
    }

    def selects_some_pods(selector: dict[str, str]) -> bool:
        return any(selector.items() <= labels.items() for labels in pod_labels.values())

    for name, service in of_kind("Service").items():
        assert selects_some_pods(service["spec"]["selector"]), name
    for name, budget in of_kind("PodDisruptionBudget").items():
        assert selects_some_pods(budget["spec"]["selector"]["matchLabels"]), name
    autoscalers = of_kind("HorizontalPodAutoscaler")
    assert {hpa["spec"]["scaleTargetRef"]["name"] for hpa in autoscalers.values()} == {"shop-api", "shop-worker"}
    for hpa in autoscalers.values():
        assert hpa["spec"]["scaleTargetRef"]["name"] in pod_labels
    # A budget that always allows one eviction: minAvailable below the autoscaler's minimum.
    assert (
        of_kind("PodDisruptionBudget")["shop-api"]["spec"]["minAvailable"]
        < autoscalers["shop-api"]["spec"]["minReplicas"]
    )
    (ingress,) = of_kind("Ingress").values()
    paths = {path["path"]: path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]}
    assert "/metrics" not in paths and "/" not in paths
    assert {path["backend"]["service"]["name"] for path in paths.values()} == {"shop-api"}


def test_the_migration_job_and_the_config_templates_fit_the_app() -> None:
    (job,) = of_kind("Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    config = of_kind("ConfigMap")["shop-config"]["data"]
    secret = of_kind("Secret")["shop-secrets"]["stringData"]
    assert config["APP_ENV"] == "production"
    assert {"SECRET_KEY", "JWT_SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"} <= set(secret)
    assert not set(config) & set(secret)
    from shop.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="published example value"):
        load_config({**config, **secret})  # the example's placeholders never start production
    real = {"SECRET_KEY": secrets.token_hex(32), "JWT_SECRET_KEY": secrets.token_hex(32)}
    settings = load_config({**config, **secret, **real})  # the production config loads from these alone
    assert settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg2://")


# Docker


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_DEBIAN], ids=lambda path: path.name)
def test_the_compose_files_validate_against_the_compose_specification(path) -> None:
    result = subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_every_service_of_the_stack_with_health_and_order() -> None:
    services = compose()["services"]
    assert {
        "app",
        "nginx",
        "postgres",
        "redis",
        "rabbitmq",
        "worker",
        "beat",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= set(services)
    assert services["app"]["deploy"]["replicas"] >= 2
    exporters = {name for name in services if name.endswith("-exporter")}
    for name, service in services.items():
        if name not in exporters and name != "migrate":
            assert "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("app", "worker", "beat", "migrate"):
        # .env unless SHOP_ENV_FILE names another (the stack test's generated one).
        assert services[name]["env_file"][0]["path"] == "${SHOP_ENV_FILE:-.env}", name
    declared = set(compose()["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert source == "./nginx/certs" or (ROOT / source).exists(), source
            else:
                assert source in declared, source
    # Only Nginx is published on every interface (SHOP_PUBLISH_ADDRESS may narrow it); the consoles
    # listen on loopback. Every published port is configurable, so a stack never takes a port the
    # machine already serves.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert name == "nginx" or port.startswith("127.0.0.1:"), (name, port)
            assert re.fullmatch(
                r"(127\.0\.0\.1|\$\{SHOP_PUBLISH_ADDRESS:-0\.0\.0\.0\}):\$\{[A-Z_]+_PORT:-\d+\}:\d+", port
            ), port


def test_the_debian_override_builds_every_image_the_stack_pulls_but_grafana() -> None:
    base = compose()["services"]
    override = yaml.safe_load(COMPOSE_DEBIAN.read_text())["services"]
    assert set(override) == set(base)
    targets = set(
        re.findall(r"^FROM \S+ AS ([\w-]+)$", (ROOT / "containers" / "services.Dockerfile").read_text(), re.M)
    )
    for name, service in override.items():
        if name == "grafana":  # no Debian package: never started here (its files are checked above)
            assert service == {"profiles": ["grafana"]}
            continue
        assert service["image"].startswith("localhost/"), name
        build = service["build"]
        if build["context"] == ".":  # the shop's own image, on the Debian base with Debian's Python
            assert build["args"]["BASE"] == "localhost/debian-base:bookworm", name
        else:
            assert build["dockerfile"] == "services.Dockerfile" and build["target"] in targets, name
        # podman-compose appends lists rather than replacing them: the override sets none the base sets.
        for key, value in service.items():
            assert not (isinstance(value, list) and key in base[name]), (name, key)
        for key in ("healthcheck", "command", "ports", "volumes", "environment"):
            assert key not in service, (name, key)


def test_what_the_configs_reach_for_is_in_the_compose_stack() -> None:
    services = compose()["services"]
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    hosts = set()
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            hosts.update(target.split(":")[0] for target in static["targets"])
        for dns in job.get("dns_sd_configs", []):
            hosts.update(dns["names"])
    assert hosts - {"localhost"} <= set(services), hosts - set(services)
    nginx = (ROOT / "nginx" / "nginx.compose.conf").read_text()
    assert re.search(r"server app:8000 ", nginx)
    assert "8000" in services["app"]["expose"]
    alertmanager = yaml.safe_load((ROOT / "monitoring" / "alertmanager.yml").read_text())
    assert alertmanager["global"]["smtp_smarthost"].split(":")[0] in services
    worker_env = services["worker"]["environment"]
    assert worker_env["WORKER_METRICS_PORT"] in services["worker"]["expose"]


def test_the_dockerfile_passes_hadolint_and_builds_a_small_non_root_image() -> None:
    result = subprocess.run(
        [venv_tool("hadolint"), "--failure-threshold", "info", "Dockerfile", "containers/services.Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile
    assert 'CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]' in dockerfile
    # The base is a build argument: the official slim Python image unless told otherwise.
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM \$\{BASE\} AS python$", dockerfile, re.MULTILINE)
    # The runtime stage installs only the "# Runtime" section of requirements.txt.
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert requirements[0] == "# Runtime"
    assert any(line.startswith("# Tests") for line in requirements)
    # Everything the image copies is in the build context .dockerignore lets through.
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"]
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                if not source.startswith("--"):
                    assert source.rstrip("/") in allowed, source
                    assert (ROOT / source).exists(), source


def _stack_module() -> Any:
    """containers/stack.py as a module (a script beside the other container files)."""
    spec = importlib.util.spec_from_file_location("shop_containers_stack", ROOT / "containers" / "stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


def test_the_podman_start_order_follows_depends_on_and_its_conditions() -> None:
    stack = _stack_module()
    services = compose()["services"]
    groups = stack.start_order({**services, "grafana": {**services["grafana"], "profiles": ["grafana"]}})
    position = {name: index for index, group in enumerate(groups) for name in group}

    assert "grafana" not in position  # a profile's service is not started by default
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            if name != "grafana":
                assert position[dependency] < position[name], (dependency, name)
    states = {name: stack.wanted_state(service) for name, service in services.items()}
    assert states["migrate"] == "completed"
    assert states["postgres"] == states["app"] == states["nginx"] == "healthy"
    assert states["nginx-exporter"] == "running"
    cycle = {"a": {"depends_on": {"b": {}}}, "b": {"depends_on": {"a": {}}}}
    with pytest.raises(stack.StackError, match="cycle"):
        stack.start_order(cycle)


def test_prepare_makes_the_env_file_and_certificate_once_and_never_overwrites(tmp_path) -> None:
    env_file, certs = tmp_path / "stack.env", tmp_path / "certs"
    prepare = [str(ROOT / "containers" / "prepare.sh"), str(env_file), str(certs)]
    first = subprocess.run(prepare, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr

    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if not line.startswith("#"))
    assert set(values) == {
        "SECRET_KEY",
        "JWT_SECRET_KEY",
        "POSTGRES_PASSWORD",
        "RABBITMQ_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    }
    assert len(set(values.values())) == len(values) and all(len(value) == 64 for value in values.values())
    assert env_file.stat().st_mode & 0o077 == 0  # secrets readable by their owner only
    assert (certs / "fullchain.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    before = env_file.read_text(), (certs / "privkey.pem").read_bytes()
    again = subprocess.run(prepare, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "wrote" not in again.stdout
    assert (env_file.read_text(), (certs / "privkey.pem").read_bytes()) == before


def test_the_compose_nginx_re_resolves_the_app_replicas_and_uses_the_current_http2_syntax() -> None:
    nginx = (ROOT / "nginx" / "nginx.compose.conf").read_text()
    compose_nginx = compose()["services"]["nginx"]
    # The image's entrypoint fills in the engine's DNS server from the container's resolv.conf.
    assert "resolver ${NGINX_LOCAL_RESOLVERS} valid=5s" in nginx
    assert compose_nginx["environment"]["NGINX_ENTRYPOINT_LOCAL_RESOLVERS"] == "1"
    assert "./nginx/nginx.compose.conf:/etc/nginx/templates/nginx.conf.template:ro" in compose_nginx["volumes"]
    # A variable in proxy_pass: the name is resolved at request time, in every location that proxies.
    assert "set $shop_app_address app:8000;" in nginx
    assert nginx.count("proxy_pass http://$shop_app_address;") == nginx.count("proxy_pass ") == 2
    assert re.search(r"^\s+http2 on;$", nginx, re.M) and not re.search(r"listen [^;]* http2", nginx)


def test_the_nginx_renderer_writes_either_http2_syntax_and_one_resolved_name_only() -> None:
    render = load_nginx_render()
    current, legacy = render.render(http2="on"), render.render(http2="listen")
    assert "        http2 on;" in current and "ssl http2 default_server" not in current
    assert "ssl http2 default_server" in legacy and "http2 on;" not in legacy
    # Loopback renders (tests, benchmarks) keep the upstream block and its keep-alive pool.
    assert "proxy_pass http://shop_app;" in current and "resolver " not in current
    with pytest.raises(ValueError, match="http2"):
        render.render(http2="maybe")
    with pytest.raises(ValueError, match="one upstream name"):
        render.render(resolver="127.0.0.11", upstream=["a:8000", "b:8000"])
