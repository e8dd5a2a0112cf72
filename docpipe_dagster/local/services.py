"""The services a command needs, made ready or refused in one clear line.

- `docpipe ingest --wait`: local endpoints with nothing listening get the mocks started for
  the command's duration; every endpoint (local or remote) is probed first, so an unreachable
  or unauthorised service stops the command within seconds, before any document is touched.
No Dagster import.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from docpipe_dagster.config import ServiceSettings, is_local_url, service_settings
from docpipe_dagster.local.ports import (  # noqa: F401 (ServiceProblem, PortInUse: re-exported)
    PortInUse,
    ServiceProblem,
    port_in_use,
)


class ServiceUnreachable(ServiceProblem):
    pass


@dataclass(frozen=True)
class Endpoint:
    """One external service as the pipeline is configured to reach it."""

    check: str  # the name in health.SERVICE_PROBES
    mock: str  # the mock that stands in for it locally (local/mocks.py)
    what: str
    url: str
    url_variable: str
    key_variable: str

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def local(self) -> bool:
        return is_local_url(self.url)


def endpoints(settings: ServiceSettings | None = None) -> list[Endpoint]:
    """The parser and embedder, and Supabase storage when that backend is chosen."""
    from docpipe_dagster.clients.parsing import routing

    s = settings or service_settings()
    found = [
        Endpoint(
            "parser",
            "llamaparse",
            "parser",
            s.parser_base_url,
            "LLAMAPARSE_BASE_URL",
            s.parser_api_key_env,
        ),
        Endpoint(
            "embedder",
            "openai",
            "embedder",
            s.embedder_base_url,
            "OPENAI_BASE_URL",
            s.embedder_api_key_env,
        ),
    ]
    if not routing().uses_service:  # DOCPIPE_PARSE_LOCALLY=all: no parser service at all
        found = [e for e in found if e.check != "parser"]
    if s.storage_backend == "supabase":
        found.append(
            Endpoint(
                "storage",
                "storage",
                "storage",
                s.storage_base_url,
                "SUPABASE_URL",
                s.storage_api_key_env,
            )
        )
    return found


# --- services for one command ----------------------------------------------------------------


def _probe(endpoint: Endpoint) -> str | None:
    """None when the service answers an authenticated request, else what is wrong."""
    from docpipe_dagster.health import service_checks

    (result,) = service_checks([endpoint.check])
    if result.ok:
        return None
    detail = result.detail
    if " 401" in detail or " 403" in detail or "auth" in detail.lower():
        return f"refused the key: check {endpoint.key_variable} ({detail})"
    return f"is unavailable: {detail}; check {endpoint.url_variable}"


PROBE_TIMEOUT_S = 5.0


def probe_all(
    wanted: Sequence[Endpoint], timeout_s: float = PROBE_TIMEOUT_S
) -> list[tuple[Endpoint, str]]:
    """Probe every endpoint at once; one that has not answered within timeout_s is a problem."""
    from concurrent.futures import ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(max_workers=max(1, len(wanted)))
    futures = {pool.submit(_probe, e): e for e in wanted}
    done, _ = wait(futures, timeout=timeout_s)
    pool.shutdown(wait=False, cancel_futures=True)  # a hung probe must not hold the command
    problems = []
    for future, endpoint in futures.items():
        if future not in done:
            problems.append(
                (
                    endpoint,
                    f"did not answer within {timeout_s:.0f} s; check {endpoint.url_variable}",
                )
            )
        elif (problem := future.result()) is not None:
            problems.append((endpoint, problem))
    return problems


@contextlib.contextmanager
def services_for_command(
    echo: Callable[[str], None],
    settings: ServiceSettings | None = None,
    *,
    only: Sequence[str] | None = None,
) -> Iterator[list[str]]:
    """Make the parser/embedder(/storage) usable for one command, or raise ServiceProblem.

    Local endpoints with nothing listening: the mocks are started now and stopped after.
    `only`: the endpoints the command needs (names as in health.SERVICE_PROBES).
    Then every endpoint is probed (one authenticated request each); any failure raises
    before the caller has registered or touched a document. Yields the mocks it started.
    """
    from docpipe_dagster.local.mocks import MocksDidNotStart, start_mocks

    wanted = [e for e in endpoints(settings) if only is None or e.check in only]
    missing = [e for e in wanted if e.local and not port_in_use(e.port)]
    started = None
    if missing:
        # The user's DOCPIPE_MOCK_* (faults, latency) are for mocks they start themselves.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCPIPE_MOCK_")}
        try:
            # They die with this command, however it ends (a SIGKILL included).
            started = start_mocks({e.mock: e.port for e in missing}, host="127.0.0.1", env=env)
        except MocksDidNotStart as exc:
            raise ServiceUnreachable(str(exc)) from exc
    try:
        if started:
            ports = ", ".join(f"{e.what} :{e.port}" for e in missing)
            echo(f"started the local mocks for this command ({ports}); they stop when it ends")
        problems = probe_all(wanted)
        if problems:
            lines = [f"{e.what} at {e.url} {p}" for e, p in problems]
            raise ServiceUnreachable("; ".join(lines))
        yield list(started.ports) if started else []
    finally:
        if started:
            started.stop()
