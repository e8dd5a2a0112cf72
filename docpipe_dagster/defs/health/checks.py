"""Service health in the UI: one external asset per service, a check, and a sensor that
reports status and latency on an interval (the asset pages plot latency over time)."""

import logging
from collections.abc import Callable, Iterable

import dagster as dg

from docpipe_dagster.config import settings
from docpipe_dagster.health import CheckResult, database_checks, service_checks

SERVICES = {
    "database": (
        "postgres",
        "Postgres with pgvector: reachable, extension present, migrations current.",
    ),
    "parser": ("llamaparse", "The LlamaParse API, v2 by default (or its local mock)."),
    "embedder": ("openai", "The OpenAI embeddings API (or its local mock)."),
    "storage": ("storage", "Where files land: a folder or the Supabase Storage API."),
}
HEALTH_INTERVAL_SECONDS = settings().health_interval_seconds
log = logging.getLogger(__name__)


def service_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["services", name])


service_assets = [
    dg.AssetSpec(
        service_key(name),
        group_name="service_health",
        kinds={kind},
        description=text,
    )
    for name, (kind, text) in SERVICES.items()
]


def collect_health(names: Iterable[str] = tuple(SERVICES)) -> dict[str, CheckResult]:
    """One result per service asked for; the database folds its three checks into one."""
    from docpipe_dagster.store.server import resolve_database

    names = list(names)
    results: dict[str, CheckResult] = {}
    if "database" in names:
        try:
            db = database_checks(resolve_database(start=False).url)
        except Exception as exc:
            db = [CheckResult("database", False, 0.0, f"{exc.__class__.__name__}: {exc}")]
        results["database"] = CheckResult(
            "database",
            all(r.ok for r in db),
            sum(r.latency_ms for r in db),
            "; ".join(r.detail for r in db),
        )
    for result in service_checks([n for n in names if n != "database"]):
        results[result.name] = result
    return results


def _check_result(result: CheckResult) -> dict:
    return {
        "passed": result.ok,
        "severity": dg.AssetCheckSeverity.ERROR,
        "metadata": {
            "latency_ms": dg.MetadataValue.float(round(result.latency_ms, 2)),
            "detail": dg.MetadataValue.text(result.detail),
        },
    }


def _make_check(name: str) -> Callable:
    @dg.asset_check(
        asset=service_key(name), name="reachable", description=f"{name} answers a health probe."
    )
    def _check() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(**_check_result(collect_health([name])[name]))

    return _check


service_checks_defs = [_make_check(name) for name in SERVICES]


def _record_for_metrics(health: dict[str, CheckResult]) -> None:
    """The probes for the Prometheus metrics (docpipe_service_up...), when the database is up."""
    from docpipe_dagster.store.metrics import record_health
    from docpipe_dagster.store.server import resolve_database

    database = health.get("database")
    if database is None or not database.ok:
        return
    try:
        record_health(
            resolve_database(start=False).url,
            [(name, r.ok, r.latency_ms / 1000.0) for name, r in health.items()],
        )
    except Exception as exc:  # the metrics miss a tick; the sensor still reports
        log.warning("metrics: could not record the health probes: %s", exc)


@dg.sensor(
    name="service_health_sensor",
    minimum_interval_seconds=HEALTH_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Probes database, parser, embedder and storage; records status and latency.",
)
def service_health_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    events: list = []
    health = collect_health()
    for name, result in health.items():
        if name not in SERVICES:
            continue
        check = _check_result(result)
        events.append(
            dg.AssetObservation(
                asset_key=service_key(name), metadata=check["metadata"] | {"ok": result.ok}
            )
        )
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=service_key(name),
                check_name="reachable",
                passed=check["passed"],
                severity=check["severity"],
                metadata=check["metadata"],
            )
        )
    _record_for_metrics(health)
    summary = ", ".join(
        f"{name} {'ok' if r.ok else 'FAIL'} {r.latency_ms:.0f} ms" for name, r in health.items()
    )
    return dg.SensorResult(asset_events=events, skip_reason=summary)
