"""Run one or all mock services: `python -m docpipe_dagster_mocks [all|llamaparse|openai|storage] ...`.

This is the process; docpipe_dagster/local/mocks.py `start_mocks` is how docpipe, its tests
and its benchmarks start it and wait for it (mocks/README.md).

`all` runs the three uvicorn servers in one process and one asyncio loop (less RAM than three
interpreters). Apps are imported lazily by factory name so a broken or missing mock does not
stop the others from being served individually.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Generator, Sequence
from typing import Any

import click
import uvicorn
from fastapi import FastAPI

from docpipe_dagster.local.mocks import DEFAULT_PORTS, SERVICES
from docpipe_dagster_mocks._common import MockSettings, parse_faults, settings_from_env

FACTORIES: dict[str, str] = {
    "storage": "docpipe_dagster_mocks.storage.app:create_app",
    "llamaparse": "docpipe_dagster_mocks.llamaparse.app:create_app",
    "openai": "docpipe_dagster_mocks.openai.app:create_app",
}


def create_service_app(service: str, settings: MockSettings) -> FastAPI:
    """Import `docpipe_dagster_mocks.<service>.app:create_app` and build the app."""
    module_name, _, attr = FACTORIES[service].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(settings)


class _Server(uvicorn.Server):
    # Several servers share one loop; signals are handled once, for all of them, in _run.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _run(servers: list[uvicorn.Server]) -> None:
    def stop(sig: int, frame: Any) -> None:
        for server in servers:
            if server.should_exit:
                server.force_exit = True  # second signal: stop waiting for open requests
            server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        await asyncio.gather(*(server.serve() for server in servers))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    services: Sequence[str],
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    *,
    log_level: str = "warning",
    access_log: bool = False,
    **settings_overrides: Any,
) -> None:
    """Serve `services` until SIGINT/SIGTERM. Each service gets its own MockSettings built by
    `settings_from_env(**settings_overrides)` (api_key, latency_ms, jitter_ms, faults, data_dir,
    webhook_secret, pending_seconds, seed), so fault state is never shared between mocks."""
    ports = {**DEFAULT_PORTS, **(ports or {})}
    unknown = [s for s in services if s not in FACTORIES]
    if unknown:
        raise ValueError(f"unknown mock service(s) {unknown}; choose from {list(SERVICES)}")
    servers: list[uvicorn.Server] = []
    for service in services:
        app = create_service_app(service, settings_from_env(**settings_overrides))
        config = uvicorn.Config(
            app,
            host=host,
            port=ports[service],
            log_level=log_level,
            access_log=access_log,
            lifespan="on",
            timeout_graceful_shutdown=2,  # a hanging fault must not block shutdown
        )
        servers.append(_Server(config))
        # Printed (flushed) so supervisors can read the URL; the key is never printed.
        print(f"mock {service} listening on http://{host}:{ports[service]}", flush=True)
    asyncio.run(_run(servers))


def _port_options(command: Any) -> Any:
    for service in SERVICES:
        command = click.option(f"--{service}-port", f"{service}_port", type=int, default=None)(
            command
        )
    return command


@click.command(
    name="python -m docpipe_dagster_mocks",
    help="Run docpipe mock services.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.argument("service", default="all", type=click.Choice(["all", *SERVICES]))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="port for a single service (not with 'all')")
@_port_options
@click.option("--skip", multiple=True, type=click.Choice(SERVICES), help="with 'all': not this one")
@click.option("--api-key", default=None, help="'none' disables auth")
@click.option("--latency-ms", type=float, default=None)
@click.option("--jitter-ms", type=float, default=None)
@click.option("--faults", default=None, help="JSON fault spec or list of specs")
@click.option("--data-dir", default=None)
@click.option("--webhook-secret", default=None)
@click.option("--pending-seconds", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--log-level", default="warning", show_default=True)
@click.option("--access-log", is_flag=True)
def _command(service: str, port: int | None, **args: Any) -> None:
    skip = args.pop("skip")
    services = [s for s in SERVICES if s not in skip] if service == "all" else [service]
    if port is not None and len(services) > 1:
        raise click.UsageError("--port needs a single service; use --<service>-port with 'all'")
    ports: dict[str, int] = {}
    for name in services:
        chosen = port if port is not None else args[f"{name}_port"]
        if chosen is not None:
            ports[name] = chosen
    overrides: dict[str, Any] = {
        "latency_ms": args["latency_ms"],
        "jitter_ms": args["jitter_ms"],
        "faults": parse_faults(args["faults"]) if args["faults"] else None,
        "data_dir": args["data_dir"],
        "webhook_secret": args["webhook_secret"],
        "pending_seconds": args["pending_seconds"],
        "seed": args["seed"],
    }
    if args["api_key"] is not None:
        key = args["api_key"].strip()
        overrides["api_key"] = None if key.lower() in ("", "none") else key
    serve(
        services,
        args["host"],
        ports,
        log_level=args["log_level"],
        access_log=args["access_log"],
        **overrides,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m docpipe_dagster_mocks ...`; 0 after a clean stop, 2 for a usage error."""
    try:
        _command.main(args=list(argv) if argv is not None else None, standalone_mode=True)
    except SystemExit as done:  # click's standalone mode always ends with one
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
