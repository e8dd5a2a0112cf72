"""The commands of docpipe's production topology, shared by the topology test and the checks
on deploy/docker-compose.yml: a compose service must run exactly what the test runs (with the
container's host and port), so the compose file cannot drift from what is proven here.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
LOCATION_NAME = "docpipe_dagster"
DEFINITIONS_MODULE = "docpipe_dagster.definitions"
MOCK_SERVICES = {
    "storage-mock": "storage",
    "llamaparse-mock": "llamaparse",
    "openai-mock": "openai",
}


def code_server(host: str, port: int) -> list[str]:
    return [
        "dagster",
        "code-server",
        "start",
        "-h",
        host,
        "-p",
        str(port),
        "-m",
        DEFINITIONS_MODULE,
        "--location-name",
        LOCATION_NAME,
    ]


def webserver(host: str, port: int, workspace: str) -> list[str]:
    return ["dagster-webserver", "-h", host, "-p", str(port), "-w", workspace]


def daemon(workspace: str) -> list[str]:
    return ["dagster-daemon", "run", "-w", workspace]


def mock(service: str, host: str, port: int, *extra: str) -> list[str]:
    return ["python", "-m", "mocks", service, "--host", host, "--port", str(port), *extra]


def code_server_health(port: int) -> list[str]:
    return ["dagster", "api", "grpc-health-check", "-p", str(port)]


# The init (and upgrade) step, in this order.
MIGRATIONS = (["docpipe", "db", "migrate"], ["dagster", "instance", "migrate"])


def workspace_yaml(host: str, port: int) -> str:
    return (
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {host}\n"
        f"      port: {port}\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
