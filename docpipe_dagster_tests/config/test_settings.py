"""The settings model is the one list of variables: .env.example and the code agree with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docpipe_dagster.config import PROJECT_ROOT, Settings, default_of, env_name, settings
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
    # In the same order, so the sections of the model and of the file are the same groups.
    assert names == Settings.env_names()


def _title(header: str) -> str:
    return header.split("(", 1)[0].strip(" -")


def test_the_model_and_env_example_have_the_same_sections() -> None:
    """The variables are grouped the same way in both: the same section titles, in order,
    each holding the same variables."""
    import inspect

    from docpipe_dagster import config

    in_model: dict[str, list[str]] = {}
    section = ""
    for line in inspect.getsource(config.Settings).splitlines():
        if line.strip().startswith("# --- "):
            section = _title(line.strip()[6:])
        for token in re.findall(r'(\bENV_[A-Z_]+|"[A-Z][A-Z0-9_]+")', line):
            name = getattr(config, token) if token.startswith("ENV_") else token.strip('"')
            if name in Settings.env_names() and name not in in_model.get(section, []):
                in_model.setdefault(section, []).append(name)
    in_file: dict[str, list[str]] = {}
    text = (PROJECT_ROOT / ".env.example").read_text().split(COMPOSE_SECTION, 1)[0]
    for line in text.splitlines():
        if line.startswith("# --- "):
            section = _title(line[6:])
        elif match := ENV_LINE.match(line):
            in_file.setdefault(section, []).append(match.group(1))
    assert list(in_model.items()) == list(in_file.items())


def test_every_variable_the_code_names_is_declared() -> None:
    declared = set(Settings.env_names())
    named: dict[str, Path] = {}
    for folder in ("docpipe_dagster", "mocks"):
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            for name in re.findall(r"\bDOCPIPE_[A-Z0-9_]+", path.read_text()):
                named.setdefault(name, path)
    unknown = {n: str(p) for n, p in named.items() if n not in declared | NOT_SETTINGS}
    assert unknown == {}


def test_every_pipeline_knob_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each PipelineSettings field that is a setting takes the environment's value (not its
    own default): set every one to something else and look at what build_resources made."""
    shared = [n for n in PipelineSettings.model_fields if n in Settings.model_fields]
    assert len(shared) >= 10
    env: dict[str, str] = {}
    expected: dict[str, object] = {}
    for name in shared:
        default = default_of(name)
        if name == "index_maintenance_work_mem":  # Postgres units: a plain number is MB
            env[env_name(name)], expected[name] = "2GB", 2 * 2**30
        elif isinstance(default, float):
            env[env_name(name)], expected[name] = str(default + 1.5), default + 1.5
        else:
            env[env_name(name)], expected[name] = str(default + 3), default + 3
    apply_env(monkeypatch, env)
    knobs = build_resources()["pipeline_settings"]
    assert {name: getattr(knobs, name) for name in shared} == expected


BAD_VALUES = [
    ("DOCPIPE_PARSER_API", "v3", "Input should be 'v1' or 'v2'"),
    ("DOCPIPE_PARSE_TIER", "premium", "Input should be 'fast', 'cost_effective'"),
    ("DOCPIPE_PARSE_VERSION", "yesterday", "YYYY-MM-DD"),
    ("DOCPIPE_PARSE_LOCALLY", "txt,key", "cannot parse .key locally"),
    ("DOCPIPE_SEARCH_MODE", "fuzzy", "Input should be 'hybrid', 'vector' or 'text'"),
    ("DOCPIPE_STORAGE_BACKEND", "s3", "Input should be 'folder' or 'supabase'"),
    ("DOCPIPE_VECTOR_TYPE", "float", "Input should be '', 'vector' or 'halfvec'"),
    ("DOCPIPE_LOG_FORMAT", "xml", "Input should be 'console' or 'json'"),
    ("DOCPIPE_BATCH_MAX_BYTES", "0", "greater than or equal to 1"),
    ("DOCPIPE_MAX_FILE_BYTES", "lots", "could not parse"),
    ("DOCPIPE_INDEX_MAINTENANCE_WORK_MEM", "1kB", "greater than or equal to 1048576"),
    ("DOCPIPE_API_PORT", "70000", "less than or equal to 65535"),
    ("DOCPIPE_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
    ("DOCPIPE_SEARCH_EF_SEARCH", "-4", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("name", "value", "why"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_value_fails_at_load_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, why: str
) -> None:
    apply_env(monkeypatch, {name: value})
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r}: ")) as info:
        settings()
    assert why in str(info.value)
    with pytest.raises(ValueError, match=re.escape(name)):
        build_resources()


def test_sizes_read_as_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    apply_env(
        monkeypatch,
        {
            "DOCPIPE_INDEX_MAINTENANCE_WORK_MEM": "512MB",  # as Postgres reads it: MiB
            "DOCPIPE_BATCH_MAX_BYTES": "64MiB",
            "DOCPIPE_MAX_FILE_BYTES": "1000",
            "DOCPIPE_API_MAX_UPLOAD_BYTES": "2MB",  # ByteSize: decimal
        },
    )
    s = settings()
    assert s.index_maintenance_work_mem == 512 * 2**20
    assert (s.batch_max_bytes, s.max_file_bytes, s.api_max_upload_bytes) == (
        64 * 2**20,
        1000,
        2_000_000,
    )
    assert type(s.batch_max_bytes) is int  # plain ints, as the resources' config wants
    knobs = build_resources()["pipeline_settings"]
    assert knobs.index().maintenance_work_mem_mb == 512
    monkeypatch.setenv("DOCPIPE_INDEX_MAINTENANCE_WORK_MEM", "65536kB")
    assert settings().index_maintenance_work_mem == 64 * 2**20
    monkeypatch.setenv("DOCPIPE_INDEX_MAINTENANCE_WORK_MEM", "3")  # a plain number is MB
    assert settings().index_maintenance_work_mem == 3 * 2**20


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


def test_settings_are_read_again_when_the_environment_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCPIPE_INGEST_RUNS", "3")
    assert settings().ingest_runs == 3
    monkeypatch.setenv("DOCPIPE_INGEST_RUNS", "4")
    assert settings().ingest_runs == 4
    monkeypatch.delenv("DOCPIPE_INGEST_RUNS")
    assert settings().ingest_runs == default_of("ingest_runs")
    monkeypatch.setenv("DOCPIPE_INGEST_RUNS", "zero")
    with pytest.raises(ValueError, match="DOCPIPE_INGEST_RUNS"):
        settings()
