"""The alert rules pass `promtool check rules`, and `promtool test rules` runs a unit test
that fires each of them (deploy/prometheus/alerts.test.yml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from docpipe_dagster_tests.support.prometheus import prometheus_binaries

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    _, promtool = prometheus_binaries()
    return subprocess.run(
        [promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120
    )


def test_the_rules_are_valid_and_each_has_a_runbook() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        assert rule["annotations"]["runbook"].startswith("docs/OPERATIONS.md#"), rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1].split(":", 1)[0]
        operations = (RULES_DIR.parents[1] / "docs" / "OPERATIONS.md").read_text()
        heading = anchor.replace("-", " ")
        assert f"### {heading}" in operations.lower(), (rule["alert"], anchor)


def test_every_alert_fires_in_a_unit_test() -> None:
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((RULES_DIR / "alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in rules}
    assert names <= fired, f"alerts no test fires: {sorted(names - fired)}"
    assert names <= quiet, f"alerts no test shows quiet: {sorted(names - quiet)}"
    done = _promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """promtool test rules can fail: an expectation the rules do not meet is reported."""
    tests = yaml.safe_load((RULES_DIR / "alerts.test.yml").read_text())
    case = tests["tests"][0]["alert_rule_test"][0]
    case["exp_alerts"] = [{"exp_labels": {"severity": "critical"}}]
    tests["rule_files"] = [str(RULES_DIR / "alerts.yml")]
    (tmp_path / "wrong.test.yml").write_text(yaml.safe_dump(tests))
    _, promtool = prometheus_binaries()
    done = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "wrong.test.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr
