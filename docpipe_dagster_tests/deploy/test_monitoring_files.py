"""The monitoring files: the compose `monitoring` profile, Prometheus's config (promtool), the
Grafana dashboard and the Helm scrape settings; every metric they name is one docpipe exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import psycopg
import yaml
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from docpipe_dagster.metrics.api import install
from docpipe_dagster_tests.support.prometheus import prometheus_binaries

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _exported_names(database_url: str) -> set[str]:
    """Every sample name the API's /metrics shows for this (empty) database."""

    class _Pool:
        def connection(self, timeout: float = 5):
            return psycopg.connect(database_url)

    app = FastAPI()
    registry: CollectorRegistry = install(app, lambda: _Pool())  # type: ignore[arg-type,return-value]
    text = generate_latest(registry).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}
    # A family with no sample yet (no failure, no probe, no request) shows only its TYPE line.
    suffixes = {"counter": ("", "_total"), "histogram": ("_bucket", "_sum", "_count")}
    for name, kind in re.findall(r"# TYPE (\S+) (\S+)", text):
        names |= {name + suffix for suffix in suffixes.get(kind, ("",))}
    return names


def _referenced(expressions: list[str]) -> set[str]:
    return {n for e in expressions for n in re.findall(r"\b(docpipe_[a-z_]+)", e)}


def test_every_metric_the_dashboard_and_the_alerts_name_is_exported(database_url: str) -> None:
    exported = _exported_names(database_url)
    dashboard = json.loads((DEPLOY / "grafana" / "docpipe.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for r in rules["groups"][0]["rules"]]
    missing = _referenced(exprs) - exported
    assert missing == set(), f"named but not exported: {sorted(missing)}"
    assert dashboard["uid"] == "docpipe" and dashboard["refresh"] == "10s"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    _, promtool = prometheus_binaries()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["api:8003"]
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_monitoring_profile() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    monitoring = {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    for name in monitoring:
        service = services[name]
        assert service["profiles"] == ["monitoring"], name
        assert all(p.startswith("127.0.0.1:") for p in service["ports"]), name
        assert service["healthcheck"]["test"][0] == "CMD", name
        for mount in service["volumes"]:
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), (name, source)
    assert services["prometheus"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "prometheus-data" in compose["volumes"]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_helm_values_run_the_exporter_and_announce_it() -> None:
    helm = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    (sidecar,) = deployment["sidecarContainers"]
    assert sidecar["command"][:2] == ["docpipe", "metrics"]
    port = sidecar["command"][sidecar["command"].index("--port") + 1]
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": int(port)}]
    assert deployment["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": port,
        "prometheus.io/path": "/metrics",
    }
    assert deployment["labels"]["docpipe.io/metrics"] == "true"
    # Only the database URL, from the secret; no other key reaches the exporter.
    assert [e["name"] for e in sidecar["env"]] == ["DOCPIPE_DATABASE_URL"]
    assert "secretKeyRef" in sidecar["env"][0]["valueFrom"]
