"""deploy/: the compose file, the Dockerfile and the Helm values, checked by parsing (no
Docker engine or cluster here). Compose services must run the commands the topology test
runs (docpipe_dagster_tests/deploy/topology.py), with ports and variable names that agree with
.env.example; the Dockerfile must install the built wheel as a non-root user and bake no
secret; the Helm values must use only keys the official dagster/dagster chart documents."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from docpipe_dagster_tests.deploy import topology
from docpipe_dagster_tests.deploy.containers import active_services, startup_levels
from docpipe_dagster_tests.deploy.topology import DEPLOY, REPO_ROOT

COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
CODE_SERVER_PORT = 4266
WORKSPACE_IN_IMAGE = "/opt/dagster/app/workspace.yaml"
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN", re.IGNORECASE)


def _env_example() -> dict[str, str]:
    """Every variable .env.example documents (set or commented out) -> its example value."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=(\S*)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    # The `monitoring` profile's services (Prometheus, Grafana): test_monitoring_files.py.
    return {
        name: service
        for name, service in compose["services"].items()
        if "monitoring" not in service.get("profiles", [])
    }


# --- docker compose ----------------------------------------------------------------------


def test_compose_has_the_seven_services_and_an_init_step(services: dict[str, Any]) -> None:
    assert set(services) == {
        "postgres",
        "storage-mock",
        "llamaparse-mock",
        "openai-mock",
        "code-server",
        "webserver",
        "daemon",
        "migrate",  # one-shot: docpipe db migrate, dagster instance migrate
        "api",  # the HTTP API: the original stack's api-server
    }
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg")
    assert services["migrate"]["restart"] == "no"


def test_compose_commands_are_the_topology_tests(services: dict[str, Any]) -> None:
    workspace = WORKSPACE_IN_IMAGE
    assert services["code-server"]["command"] == topology.code_server("0.0.0.0", CODE_SERVER_PORT)
    assert services["webserver"]["command"] == topology.webserver("0.0.0.0", 3000, workspace)
    assert services["daemon"]["command"] == topology.daemon(workspace)
    steps = topology.init_steps(*topology.COMPOSE_POOL_LIMITS)
    # compose interpolates the limits; no argument has a space, so no quoting is needed
    chain = " && ".join(" ".join(step) for step in steps)
    assert services["migrate"]["command"] == ["sh", "-c", chain]
    for name, mock in topology.MOCK_SERVICES.items():
        command = services[name]["command"]
        port = int(command[command.index("--port") + 1])
        extra = command[len(topology.mock(mock, "0.0.0.0", port)) :]
        assert command == topology.mock(mock, "0.0.0.0", port, *extra), name


def test_compose_workspace_points_at_the_code_server(services: dict[str, Any]) -> None:
    workspace = yaml.safe_load((DEPLOY / "compose" / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    assert entry["grpc_server"] == {
        "host": "code-server",
        "port": CODE_SERVER_PORT,
        "location_name": topology.LOCATION_NAME,
    }
    # the webserver and the daemon read it (and the compose dagster.yaml) from the mount
    for name in ("webserver", "daemon", "migrate"):
        mounts = services[name]["volumes"]
        assert f"./compose/workspace.yaml:{WORKSPACE_IN_IMAGE}:ro" in mounts, name
        assert "./compose/dagster.yaml:/opt/dagster/dagster_home/dagster.yaml:ro" in mounts, name


def test_compose_healthchecks_and_startup_order(services: dict[str, Any]) -> None:
    checks = {
        name: service["healthcheck"]["test"]
        for name, service in services.items()
        if name != "migrate"
    }
    assert "pg_isready" in " ".join(checks["postgres"])
    for name in topology.MOCK_SERVICES:
        port = services[name]["command"][services[name]["command"].index("--port") + 1]
        assert f"http://127.0.0.1:{port}/health" in " ".join(checks[name]), name
    assert checks["code-server"] == [
        "CMD-SHELL",
        " ".join(topology.code_server_health(CODE_SERVER_PORT)),
    ]
    assert "http://127.0.0.1:3000/server_info" in " ".join(checks["webserver"])
    assert checks["daemon"] == ["CMD-SHELL", "dagster-daemon liveness-check"]

    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert rule["condition"] in ("service_healthy", "service_completed_successfully")
            assert dependency in services, (name, dependency)
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    code_server_needs = services["code-server"]["depends_on"]
    assert code_server_needs["migrate"] == {"condition": "service_completed_successfully"}
    assert {n for n, r in code_server_needs.items() if r["condition"] == "service_healthy"} == set(
        topology.MOCK_SERVICES
    )
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"] == {"code-server": {"condition": "service_healthy"}}


def test_the_container_harness_leaves_profile_services_out_unless_asked(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    # podman-compose 1.0.3 ignores profiles; the harness applies Docker Compose's rule
    assert active_services(compose["services"]) == services
    with_monitoring = active_services(compose["services"], ("monitoring",))
    assert set(with_monitoring) - set(services) == {"prometheus", "grafana"}
    level = {name: i for i, names in enumerate(startup_levels(with_monitoring)) for name in names}
    assert level["api"] < level["prometheus"] < level["grafana"]
    with pytest.raises(AssertionError, match="depends on"):
        active_services({"a": {"depends_on": {"b": {}}}, "b": {"profiles": ["x"]}})


def test_compose_ports_and_variables_agree_with_env_example(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    example = _env_example()
    text = COMPOSE.read_text()
    # every ${VAR} compose interpolates is documented
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    assert interpolated - set(example) == set(), "document these in .env.example"
    # every variable set for docpipe's processes is one docpipe documents
    for name, service in services.items():
        environment = service.get("environment", {})
        for variable in environment:
            if variable.startswith(("DOCPIPE_", "LLAMA", "OPENAI", "SUPABASE")):
                assert variable in example, (name, variable)
        if service.get("image") != services["postgres"]["image"]:
            assert service["env_file"] == "${DOCPIPE_ENV_FILE:-../.env}", name

    # the mocks listen on the ports .env.example's URLs use, and the URLs compose sets for
    # docpipe use the same ports on the services' names
    example_ports = {
        "storage-mock": urlsplit(example["SUPABASE_URL"]).port,
        "llamaparse-mock": urlsplit(example["LLAMAPARSE_BASE_URL"]).port,
        "openai-mock": urlsplit(example["OPENAI_BASE_URL"]).port,
    }
    env = compose["x-docpipe-env"]
    urls = {
        "storage-mock": env["SUPABASE_URL"],
        "llamaparse-mock": env["LLAMAPARSE_BASE_URL"],
        "openai-mock": env["OPENAI_BASE_URL"],
    }
    for name, port in example_ports.items():
        command = services[name]["command"]
        assert int(command[command.index("--port") + 1]) == port, name
        assert f"http://{name}:{port}" in urls[name], name

    # the UI and the API on the host's loopback, on the documented ports; the API's key has
    # no default: compose refuses to start it without one
    assert services["webserver"]["ports"] == ["127.0.0.1:${DAGSTER_WEBSERVER_PORT:-3000}:3000"]
    assert services["api"]["ports"] == ["127.0.0.1:${DOCPIPE_API_HOST_PORT:-8003}:8003"]
    assert services["api"]["command"] == ["docpipe", "api", "--host", "0.0.0.0", "--port", "8003"]
    assert services["api"]["environment"]["DOCPIPE_API_KEY"].startswith("${DOCPIPE_API_KEY:?")
    assert example["DAGSTER_WEBSERVER_PORT"] == "3000"
    # the database password has no default anywhere: compose refuses to start without it
    assert "POSTGRES_PASSWORD:-" not in text
    assert "${POSTGRES_PASSWORD:?" in text


def test_compose_run_launcher_forwards_only_documented_variables() -> None:
    launcher = yaml.safe_load((DEPLOY / "compose" / "dagster.yaml").read_text())["run_launcher"]
    assert set(launcher["config"]["env_vars"]) <= set(_env_example())


# --- Dockerfile --------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_installs_the_built_wheel_as_a_non_root_user() -> None:
    instructions = _instructions()
    froms = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    build, runtime = instructions[froms[0] : froms[1]], instructions[froms[1] :]
    assert any(kw == "RUN" and "pip wheel" in args and "--no-deps" in args for kw, args in build)

    # the build stage installs that wheel (never the source tree) into /opt/venv, which is
    # all the runtime stage takes from it
    runs = [args for kw, args in build if kw == "RUN"]
    (install,) = [args.split("pip install", 1)[1] for args in runs if "pip install" in args]
    assert re.search(r"docpipe_dagster-\*\.whl\)?\[docker\]", install), install
    assert " -e " not in install and " . " not in f" {install} " and "/src" not in install
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    # the launchers' integration packages, pinned to the release the wheel pins
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"dagster-postgres==([0-9.]+)"', pyproject).group(1)
    assert f'"dagster-docker=={pin}"' in pyproject.split("docker = [", 1)[1].split("]", 1)[0]
    assert f"dagster-k8s=={pin}" in install

    users = [args for kw, args in runtime if kw == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    last_user = max(i for i, (kw, _) in enumerate(runtime) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in runtime[last_user:]), "nothing runs as root after USER"

    cmd = [args for kw, args in runtime if kw == "CMD"][-1]
    assert json.loads(cmd) == topology.code_server("0.0.0.0", CODE_SERVER_PORT)


def test_dockerfile_bakes_no_secret() -> None:
    for keyword, args in _instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            assert not any(SECRET_NAME.search(n) for n in names), (keyword, args)
        if keyword in ("COPY", "ADD"):
            assert ".env" not in args.split(), args
    ignored = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".env", ".docpipe", ".venv"):
        assert pattern in ignored, f".dockerignore must exclude {pattern}"
    # the one config file baked in references its secret by variable name only
    baked = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert baked["storage"]["postgres"]["postgres_url"] == {"env": "DOCPIPE_DAGSTER_DATABASE_URL"}


# --- Helm --------------------------------------------------------------------------------

# The keys of the official dagster/dagster chart (1.13) these values rely on, as its
# values.yaml and values.schema.json document them. `[]` is a list item. Subtrees that are
# plain Kubernetes objects (env, resources) are not descended into.
HELM_DOCUMENTED_KEYS = {
    "global.postgresqlSecretName",
    "dagsterWebserver.replicaCount",
    "dagsterWebserver.envSecrets[].name",
    "dagster-user-deployments.enabled",
    "dagster-user-deployments.enableSubchart",
    "dagster-user-deployments.deployments[].name",
    "dagster-user-deployments.deployments[].image.repository",
    "dagster-user-deployments.deployments[].image.tag",
    "dagster-user-deployments.deployments[].image.pullPolicy",
    "dagster-user-deployments.deployments[].codeServerArgs",
    "dagster-user-deployments.deployments[].port",
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled",
    "dagster-user-deployments.deployments[].env",
    "dagster-user-deployments.deployments[].envSecrets[].name",
    "dagster-user-deployments.deployments[].resources",
    "dagster-user-deployments.deployments[].annotations",
    "dagster-user-deployments.deployments[].labels",
    "dagster-user-deployments.deployments[].sidecarContainers",
    "runLauncher.type",
    "runLauncher.config.k8sRunLauncher.imagePullPolicy",
    "runLauncher.config.k8sRunLauncher.envSecrets[].name",
    "runLauncher.config.k8sRunLauncher.resources",
    "postgresql.enabled",
    "postgresql.postgresqlHost",
    "postgresql.postgresqlUsername",
    "postgresql.postgresqlDatabase",
    "postgresql.service.port",
    "generatePostgresqlPasswordSecret",
    "concurrency.enabled",
    "concurrency.runs.maxConcurrentRuns",
    "concurrency.pools.defaultLimit",
    "concurrency.pools.granularity",
    "dagsterDaemon.enabled",
    "dagsterDaemon.runCoordinator.enabled",
    "dagsterDaemon.runCoordinator.type",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueIntervalSeconds",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueUseThreads",
    "dagsterDaemon.runMonitoring.enabled",
    "dagsterDaemon.runMonitoring.startTimeoutSeconds",
    "dagsterDaemon.runMonitoring.pollIntervalSeconds",
    "dagsterDaemon.runMonitoring.maxResumeRunAttempts",
    "dagsterDaemon.runMonitoring.freeSlotsAfterRunEndSeconds",
    "dagsterDaemon.runRetries.enabled",
    "dagsterDaemon.runRetries.maxRetries",
    "dagsterDaemon.runRetries.retryOnAssetOrOpFailure",
    "dagsterDaemon.sensors.useThreads",
    "dagsterDaemon.sensors.numWorkers",
    "dagsterDaemon.envSecrets[].name",
    "retention.enabled",
    "retention.sensor.purgeAfterDays.failure",
    "retention.sensor.purgeAfterDays.skipped",
    "retention.sensor.purgeAfterDays.started",
    "retention.sensor.purgeAfterDays.success",
    "telemetry.enabled",
    "migrate.enabled",
}
OPAQUE = {"env", "resources", "codeServerArgs", "annotations", "labels", "sidecarContainers"}


def _key_paths(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        paths: set[str] = set()
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path} if key in OPAQUE else _key_paths(value, path)
        return paths
    if isinstance(node, list) and node and all(isinstance(i, dict) for i in node):
        return set().union(*(_key_paths(item, f"{prefix}[]") for item in node))
    return {prefix}


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def test_helm_values_use_only_documented_chart_keys(helm: dict[str, Any]) -> None:
    unknown = _key_paths(helm) - HELM_DOCUMENTED_KEYS
    assert unknown == set(), f"not a documented dagster/dagster chart key: {sorted(unknown)}"


def test_helm_values_deploy_docpipe(helm: dict[str, Any]) -> None:
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    args = deployment["codeServerArgs"]
    assert args[args.index("-m") + 1] == topology.DEFINITIONS_MODULE
    assert args[args.index("--location-name") + 1] == topology.LOCATION_NAME
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    assert helm["postgresql"]["enabled"] is False and helm["postgresql"]["postgresqlHost"]
    assert helm["generatePostgresqlPasswordSecret"] is False
    # API keys only through secrets: no env entry carries a secret-looking name or value
    for item in deployment["env"]:
        assert not SECRET_NAME.search(item["name"]), item
    assert {"name": "docpipe-api-keys"} in deployment["envSecrets"]
    assert {"name": "docpipe-api-keys"} in helm["dagsterDaemon"]["envSecrets"]
    # run limits in `concurrency`, never also in the run coordinator
    queued = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued and "tagConcurrencyLimits" not in queued
    assert helm["concurrency"]["enabled"] is True
    assert helm["concurrency"]["pools"]["granularity"] == "op"
    monitoring = helm["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] and monitoring["freeSlotsAfterRunEndSeconds"] > 0
    assert helm["dagsterDaemon"]["runRetries"]["retryOnAssetOrOpFailure"] is False
