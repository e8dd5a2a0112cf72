"""Health checks for every component, shared by `docpipe validate` and the Dagster health sensor.

No Dagster import: each check is a plain function returning a CheckResult with its latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import httpx

from docpipe_dagster.config import ServiceSettings, service_settings

PGVECTOR_MIN_VERSION = (0, 5, 0)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def timed(name: str, probe: Callable[[], str]) -> CheckResult:
    """Run a probe that returns a detail string (or raises); never raises itself."""
    started = time.perf_counter()
    try:
        detail = probe()
        ok = True
    except Exception as exc:  # a health check reports every failure, it never crashes
        detail = f"{exc.__class__.__name__}: {exc}".strip()
        ok = False
    return CheckResult(name, ok, (time.perf_counter() - started) * 1000.0, detail[:300])


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def database_checks(url: str) -> list[CheckResult]:
    from docpipe_dagster.store.migrate import pending
    from docpipe_dagster.store.server import extension_version, redact_url, server_version

    def reachable() -> str:
        return f"PostgreSQL {server_version(url)} at {redact_url(url)}"

    def pgvector() -> str:
        version = extension_version(url, "vector")
        if version is None:
            raise RuntimeError("pgvector extension not installed (run `docpipe db migrate`)")
        if _version_tuple(version) < PGVECTOR_MIN_VERSION:
            raise RuntimeError(f"pgvector {version} is older than 0.5.0")
        return f"pgvector {version}"

    def migrations() -> str:
        todo = pending(url)
        if todo:
            names = ", ".join(m.path.name for m in todo)
            raise RuntimeError(f"pending migrations: {names} (run `docpipe db migrate`)")
        return "all migrations applied"

    results = [timed("database", reachable)]
    if results[0].ok:
        results += [timed("pgvector", pgvector), timed("migrations", migrations)]
    return results


def http_check(name: str, url: str, *, headers: dict[str, str] | None = None) -> CheckResult:
    def probe() -> str:
        response = httpx.get(url, headers=headers, timeout=5.0)
        response.raise_for_status()
        return f"{url} answered {response.status_code}"

    return timed(name, probe)


def webserver_checks(base_url: str) -> list[CheckResult]:
    """The Dagster webserver answers, and its daemon reports every daemon healthy."""
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"

    def daemon() -> str:
        response = httpx.post(f"{base_url}/graphql", json={"query": query}, timeout=10.0)
        response.raise_for_status()
        statuses = response.json()["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        unhealthy = [s["daemonType"] for s in statuses if s["required"] and not s["healthy"]]
        if unhealthy:
            raise RuntimeError(f"unhealthy daemons: {', '.join(unhealthy)}")
        return f"{sum(1 for s in statuses if s['required'])} daemons healthy"

    results = [http_check("dagster webserver", f"{base_url}/server_info")]
    if results[0].ok:
        results.append(timed("dagster daemon", daemon))
    return results


def _probe_parser(settings: ServiceSettings) -> float:
    from docpipe_dagster.clients.parsing import make_parser_client, parser_api

    async def probe() -> float:
        async with make_parser_client(
            parser_api(),
            settings.parser_base_url,
            settings.key(settings.parser_api_key_env, settings.parser_base_url),
        ) as client:
            return await client.health()

    return asyncio.run(probe())


def _probe_embedder(settings: ServiceSettings) -> float:
    from docpipe_dagster.clients.embeddings import EmbeddingsClient

    async def probe() -> float:
        async with EmbeddingsClient(
            settings.embedder_base_url,
            settings.key(settings.embedder_api_key_env, settings.embedder_base_url),
            settings.embedding_model,
        ) as client:
            return await client.health()

    return asyncio.run(probe())


def _probe_storage(settings: ServiceSettings) -> float:
    from docpipe_dagster.clients.factory import open_storage

    return open_storage(settings).health()


def _storage_target(settings: ServiceSettings) -> str:
    if settings.storage_backend == "supabase":
        return f"supabase {settings.storage_base_url} bucket {settings.storage_bucket}"
    return f"folder {settings.storage_dir}"


# name -> (what it probes, for the report; the probe, returning its latency in ms)
SERVICE_PROBES: dict[
    str, tuple[Callable[[ServiceSettings], str], Callable[[ServiceSettings], float]]
] = {
    "parser": (lambda s: s.parser_base_url, _probe_parser),
    "embedder": (lambda s: f"{s.embedder_base_url} model {s.embedding_model}", _probe_embedder),
    "storage": (_storage_target, _probe_storage),
}


def _parser_used() -> bool:
    from docpipe_dagster.clients.parsing import routing

    return routing().uses_service


def service_checks(names: Iterable[str] = tuple(SERVICE_PROBES)) -> list[CheckResult]:
    """Parser, embedder and storage (or just those named), through the pipeline's clients.
    The detail names the endpoint, whether it answered or not."""
    settings = service_settings()

    def check(name: str) -> CheckResult:
        if name == "parser" and not _parser_used():
            return CheckResult(name, True, 0.0, "not used: DOCPIPE_PARSE_LOCALLY=all")
        target, probe = SERVICE_PROBES[name]
        where = target(settings)
        result = timed(name, lambda: f"{probe(settings):.1f} ms")
        detail = f"{where} ({result.detail})" if result.ok else f"{where}: {result.detail}"
        return CheckResult(name, result.ok, result.latency_ms, detail[:300])

    return [check(name) for name in names]


def parked_check(url: str) -> CheckResult | None:
    """Documents left queued because a service was down, naming it; None when there are none.
    Fails while any wait: the service is the cause, and they resume once it answers."""
    from docpipe_dagster.store.queries import Store

    waiting: list = []

    def probe() -> str:
        with Store.open(url, max_size=1) as store:
            waiting.extend(store.parked_services())
        if waiting:
            lines = "; ".join(f"{w.line()}: {w.reason}" for w in waiting)
            raise RuntimeError(f"{lines} (they resume once it answers)")
        return "none"

    result = timed("parked documents", probe)
    if result.ok:
        return None
    return CheckResult(
        result.name, False, result.latency_ms, result.detail.removeprefix("RuntimeError: ")
    )


def run_all_checks(webserver_url: str | None = None) -> list[CheckResult]:
    """Everything that exists: database, services, and the webserver/daemon when running."""
    from docpipe_dagster.store.server import resolve_database

    results: list[CheckResult] = []
    resolved: list[str] = []

    def database_target() -> str:
        target = resolve_database(start=False)
        resolved.append(target.url)
        return "embedded" if target.embedded else "external (DOCPIPE_DATABASE_URL)"

    results.append(timed("database config", database_target))
    database = database_checks(resolved[0]) if resolved else []
    results += database
    results += service_checks()
    if database and all(r.ok for r in database):
        parked = parked_check(resolved[0])
        results += [parked] if parked else []
    explicit = webserver_url is not None
    base = (webserver_url or "http://127.0.0.1:3000").rstrip("/")
    web = webserver_checks(base)
    if explicit or web[0].ok:
        results += web
    return results
