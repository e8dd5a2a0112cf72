"""Service health in the UI: the sensor records every service; each check probes its own."""

from __future__ import annotations

import dagster as dg
import pytest

from docpipe_dagster.defs.health.checks import (
    SERVICES,
    service_checks_defs,
    service_health_sensor,
    service_key,
)
from docpipe_dagster_tests.defs.conftest import Pipeline


def _sensor_events(instance: dg.DagsterInstance) -> list:
    result = service_health_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    return list(result.asset_events)


def test_the_sensor_records_status_and_latency_of_every_service(pipeline: Pipeline) -> None:
    events = _sensor_events(pipeline.instance)
    observed = {e.asset_key: e for e in events if isinstance(e, dg.AssetObservation)}
    checks = {e.asset_key: e for e in events if isinstance(e, dg.AssetCheckEvaluation)}
    assert set(observed) == set(checks) == {service_key(name) for name in SERVICES}
    for key, check in checks.items():
        assert check.passed, (key, check.metadata)
        assert observed[key].metadata["latency_ms"].value >= 0


def test_a_service_that_is_down_fails_only_its_own_check(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    checks = {
        e.asset_key: e.passed
        for e in _sensor_events(pipeline.instance)
        if isinstance(e, dg.AssetCheckEvaluation)
    }
    assert checks == {service_key(n): n != "embedder" for n in SERVICES}

    # The asset check of one service probes that service alone, and says what it saw.
    by_asset = {next(iter(c.check_keys)).asset_key: c for c in service_checks_defs}
    storage = by_asset[service_key("storage")]()
    assert storage.passed
    embedder = by_asset[service_key("embedder")]()
    assert not embedder.passed
    assert "127.0.0.1:9" in embedder.metadata["detail"].value
