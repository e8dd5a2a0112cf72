"""The settings model is the one list of variables: .env.example and the code agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docpipe_dagster.config import PROJECT_ROOT, Settings, default_of, settings
from docpipe_dagster.defs.resources import PipelineSettings, build_resources
from docpipe_dagster_tests.support.env import apply_env

ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=", re.MULTILINE)
# Names that look like variables in the code but are not settings: the UUID namespace
# constant, and the mocks' prefix in a docstring.
NOT_SETTINGS = {"DOCPIPE_NAMESPACE", "DOCPIPE_MOCK_"}


# The last section holds what docker compose reads (deploy/docker-compose.yml), not docpipe;
# docpipe_dagster_tests/deploy checks those against the compose file.
COMPOSE_SECTION = "# --- docker compose"


def documented() -> list[str]:
    text = (PROJECT_ROOT / ".env.example").read_text()
    return ENV_LINE.findall(text.split(COMPOSE_SECTION, 1)[0])


def test_compose_variables_are_not_settings() -> None:
    text = (PROJECT_ROOT / ".env.example").read_text()
    assert COMPOSE_SECTION in text
    compose_only = set(ENV_LINE.findall(text.split(COMPOSE_SECTION, 1)[1]))
    assert compose_only and not compose_only & set(Settings.env_names())


def test_env_example_documents_exactly_the_declared_variables() -> None:
    names = documented()
    assert len(names) == len(set(names)), "a variable is documented twice"
    assert set(names) == set(Settings.env_names())


def test_every_variable_the_code_names_is_declared() -> None:
    declared = set(Settings.env_names())
    named: dict[str, Path] = {}
    for folder in ("docpipe_dagster", "mocks"):
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            for name in re.findall(r"\bDOCPIPE_[A-Z0-9_]+", path.read_text()):
                named.setdefault(name, path)
    unknown = {n: str(p) for n, p in named.items() if n not in declared | NOT_SETTINGS}
    assert unknown == {}


def _other_value(default: object) -> str:
    """A valid value for a knob that differs from its default, as an environment string."""
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, int):
        return str(default + 1)
    if isinstance(default, float):
        return str(default * 2 + 1)
    if isinstance(default, str) and default.upper().endswith(("MB", "GB")):
        return "384MB"
    raise AssertionError(f"no test value for a default of type {type(default).__name__}")


def test_every_pipeline_knob_reaches_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each variable set to a non-default value must arrive in the run's PipelineSettings
    # (the config the UI shows): a knob build_resources() forgets would keep its default.
    knobs = [name for name in PipelineSettings.model_fields if name in Settings.model_fields]
    assert len(knobs) >= 10
    values = {name: _other_value(default_of(name)) for name in knobs}
    env = {Settings.model_fields[name].json_schema_extra["env"]: v for name, v in values.items()}
    apply_env(monkeypatch, env)  # type: ignore[arg-type]
    resource = build_resources()["pipeline_settings"]
    for name in knobs:
        default = default_of(name)
        got = getattr(resource, name)
        assert got != default and str(got) == str(type(default)(values[name])), name


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(
        monkeypatch,
        {
            "DOCPIPE_CHUNK_MAX_CHARS": "900",
            "DOCPIPE_STALE_MINUTES": "7",
            "DOCPIPE_INDEX_BULK_THRESHOLD": "inf",
            "DOCPIPE_COMMIT_WORKERS": "",  # empty means the default
        },
    )
    knobs = build_resources()["pipeline_settings"]
    assert isinstance(knobs, PipelineSettings)
    assert knobs.chunk_max_chars == 900
    assert knobs.stale_minutes == 7 and knobs.index().in_flight_within.total_seconds() == 420
    assert knobs.index().bulk_threshold == float("inf")
    assert knobs.commit_workers == default_of("commit_workers")


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(monkeypatch, {"DOCPIPE_BATCH_MAX_FILES": "lots"})
    with pytest.raises(ValueError, match="DOCPIPE_BATCH_MAX_FILES='lots'"):
        settings()


def test_secrets_are_env_vars_not_config(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(
        monkeypatch,
        {"OPENAI_BASE_URL": "https://api.openai.com/v1", "OPENAI_API_KEY": "sk-test-secret"},
    )
    embedder = build_resources()["embedder"]
    assert "sk-test-secret" not in repr(embedder.model_dump())
    secret_fields = [
        name for name, f in Settings.model_fields.items() if f.json_schema_extra["secret"]
    ]
    assert {"embedder_api_key", "database_url"} <= set(secret_fields)
    assert not set(secret_fields) & set(PipelineSettings.model_fields)
