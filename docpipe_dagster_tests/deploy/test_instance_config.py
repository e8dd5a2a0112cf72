"""The production and dev dagster.yaml load as real DagsterInstances on Postgres, with the
limits docs/DEPLOYMENT.md promises; the compose variant differs only in its run launcher."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config

from docpipe_dagster.local.dev_stack import dev_instance_yaml
from docpipe_dagster.store.server import for_dagster
from docpipe_dagster_tests.deploy.topology import DEPLOY

PRODUCTION = DEPLOY / "dagster.yaml"
COMPOSE = DEPLOY / "compose" / "dagster.yaml"
# The dev instance as `docpipe dev` writes it (the checkout's dagster.yaml + Postgres storage).
DEV = Path(tempfile.mkdtemp(prefix="docpipe-dev-instance-")) / "dagster.yaml"
DEV.write_bytes(dev_instance_yaml())


@pytest.fixture
def instance_from(
    tmp_path: Path, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator:
    monkeypatch.setenv("DOCPIPE_DAGSTER_DATABASE_URL", for_dagster(empty_database_url))
    opened: list[dg.DagsterInstance] = []

    def load(config: Path) -> dg.DagsterInstance:
        home = tmp_path / f"home-{len(opened)}"
        home.mkdir()
        shutil.copyfile(config, home / "dagster.yaml")
        instance = dg.DagsterInstance.from_config(str(home))
        opened.append(instance)
        return instance

    yield load
    for instance in opened:
        instance.dispose()


@pytest.mark.parametrize("config", [PRODUCTION, DEV], ids=["production", "dev"])
def test_instance_loads_with_current_keys(instance_from, config: Path) -> None:
    instance = instance_from(config)
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    # dev forks runs from a warm worker (docpipe_dagster/launcher.py), started with the queue
    coordinator = "WarmQueuedRunCoordinator" if config == DEV else "QueuedRunCoordinator"
    assert type(instance.run_coordinator).__name__ == coordinator
    launcher = "WarmRunLauncher" if config == DEV else "DefaultRunLauncher"
    assert type(instance.run_launcher).__name__ == launcher

    raw = yaml.safe_load(config.read_text())
    # Run limits in one place: `concurrency.runs`, never in run_coordinator.config as well.
    assert "max_concurrent_runs" not in raw["run_coordinator"].get("config", {})
    # dev: two runs, as `docpipe ingest --wait` (benchmarks/README.md, production path)
    runs = 2 if config == DEV else 4
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == runs
    pools = instance.get_concurrency_config().pool_config
    assert pools.default_pool_limit == 2
    assert pools.pool_granularity.value == "op"
    # the default limit applies to the pools the assets declare
    info = instance.event_log_storage.get_concurrency_info("parser")
    assert (info.limit, info.using_default_limit) == (2, True)

    assert instance.get_concurrency_config().run_queue_config.max_user_code_failure_retries == 3
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 180
    assert instance.run_monitoring_max_runtime_seconds == 7200
    # dev frees a dead run's slots and notices dead workers within seconds
    free_after = 5 if config == DEV else 30
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == free_after
    assert instance.run_monitoring_settings["poll_interval_seconds"] == (5 if config == DEV else 30)
    # infrastructure failures only
    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries >= 1
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    # neither launcher resumes a run
    assert instance.run_monitoring_max_resume_run_attempts == 0


def test_production_sensor_threads_and_retention(instance_from) -> None:
    instance = instance_from(PRODUCTION)
    assert instance.get_settings("sensors") == {"use_threads": True, "num_workers": 4}
    assert instance.get_settings("retention")["sensor"]["purge_after_days"]["skipped"] == 1


def test_compose_instance_is_production_with_the_docker_run_launcher(monkeypatch) -> None:
    production = yaml.safe_load(PRODUCTION.read_text())
    compose = yaml.safe_load(COMPOSE.read_text())
    launcher = compose.pop("run_launcher")
    production.pop("run_launcher")
    assert compose == production, "deploy/compose/dagster.yaml drifted from deploy/dagster.yaml"
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    assert launcher["config"]["network"] == "docpipe"
    # every variable a run needs reaches the run container, by name only
    env_vars = launcher["config"]["env_vars"]
    for name in ("DOCPIPE_DATABASE_URL", "DOCPIPE_DAGSTER_DATABASE_URL", "OPENAI_API_KEY"):
        assert name in env_vars
    assert all("=" not in v for v in env_vars), "values belong in the environment, not here"
    # and the file passes Dagster's instance schema
    monkeypatch.setenv("DOCPIPE_DAGSTER_DATABASE_URL", "postgresql://u:p@postgres:5432/d")
    home = COMPOSE.parent
    config, _ = dagster_instance_config(str(home))
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 4
