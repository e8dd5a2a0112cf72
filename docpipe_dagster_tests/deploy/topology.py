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
    return [
        "python",
        "-m",
        "docpipe_dagster_mocks",
        service,
        "--host",
        host,
        "--port",
        str(port),
        *extra,
    ]


def code_server_health(port: int) -> list[str]:
    return ["dagster", "api", "grpc-health-check", "-p", str(port)]


def init_steps(parser_limit: int | str, embedder_limit: int | str) -> list[list[str]]:
    """The init (and upgrade) step, in this order: both schemas, then the pools' limits.

    The limits are set explicitly: with only `pools.default_limit`, the first runs to claim a
    slot at the same moment race to create the pool's row and fail (UniqueViolation on
    concurrency_limits, seen with 4 runs starting together).
    """
    return [
        ["docpipe", "db", "migrate"],
        ["dagster", "instance", "migrate"],
        ["dagster", "instance", "concurrency", "set", "parser", str(parser_limit)],
        ["dagster", "instance", "concurrency", "set", "embedder", str(embedder_limit)],
    ]


# What compose's init service passes (interpolated from .env).
COMPOSE_POOL_LIMITS = ("${DOCPIPE_PARSER_POOL_LIMIT:-2}", "${DOCPIPE_EMBEDDER_POOL_LIMIT:-2}")


def workspace_yaml(host: str, port: int) -> str:
    return (
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {host}\n"
        f"      port: {port}\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
