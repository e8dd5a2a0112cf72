"""The built wheel works outside the checkout: what an image build or `pip install .` gets.

One wheel of the current source is installed into a venv of its own (cached by source hash)
and driven from a temp folder far from the checkout: migrate, ingest against the mocks, search.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docpipe_dagster_tests.support.mock_servers import MockServer
from docpipe_dagster_tests.support.wheel_venv import (
    REPO_ROOT,
    WheelVenv,
    wheel_metadata,
    wheel_names,
    wheel_venv,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="session")
def installed() -> WheelVenv:
    return wheel_venv()


def _clean_env(**extra: str) -> dict[str, str]:
    """The user's shell: no DOCPIPE_* or DAGSTER_HOME from the test session, no PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DOCPIPE_", "DAGSTER_", "PYTHON", "VIRTUAL_ENV"))
        and k
        not in ("LLAMAPARSE_BASE_URL", "OPENAI_BASE_URL", "LLAMA_CLOUD_API_KEY", "OPENAI_API_KEY")
    }
    env.update(extra)
    return env


def _run(
    installed: WheelVenv, args: list[str], cwd: Path, env: dict[str, str], timeout: float = 180
):
    return subprocess.run(
        [installed.exe("docpipe"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_wheel_carries_migrations_samples_and_template_but_no_tests(installed: WheelVenv) -> None:
    names = set(wheel_names(installed.wheel))
    for sql in sorted((REPO_ROOT / "sql").glob("*.sql")):
        assert f"docpipe_dagster/_bundled/sql/{sql.name}" in names
    for sample in sorted((REPO_ROOT / "samples").iterdir()):
        assert f"docpipe_dagster/_bundled/samples/{sample.name}" in names
    assert "docpipe_dagster/_bundled/dagster.yaml" in names
    assert "docpipe_dagster/definitions.py" in names
    # The repo's mocks/ folder is installed as docpipe_dagster_mocks: no generic top-level
    # `mocks` package lands in the user's site-packages.
    assert "docpipe_dagster_mocks/__main__.py" in names
    shipped_tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert shipped_tops == {"docpipe_dagster", "docpipe_dagster_mocks"}, shipped_tops


def test_the_mocks_have_one_import_name() -> None:
    """Code imports the mocks as docpipe_dagster_mocks only: `import mocks` works in a
    checkout by accident (the folder is on sys.path), and a module imported under both names
    would run twice, with two copies of its state."""
    bare = re.compile(r"^\s*(from\s+mocks(\.|\s+import)|import\s+mocks\b)", re.MULTILINE)
    spawned = re.compile(r"""["']-m["'],\s*["']mocks["']|python -m mocks\b""")
    offenders = []
    for folder in ("docpipe_dagster", "docpipe_dagster_tests", "mocks", "benchmarks", "deploy"):
        for path in sorted((REPO_ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".yml", ".yaml", ".md") or "__pycache__" in path.parts:
                continue
            if path == Path(__file__).resolve():  # its own patterns
                continue
            text = path.read_text(encoding="utf-8")
            if bare.search(text) or spawned.search(text):
                offenders.append(str(path.relative_to(REPO_ROOT)))
    assert offenders == [], offenders


def _third_party_imports(roots: list[Path]) -> set[str]:
    found: set[str] = set()
    for root in roots:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    ours = {"docpipe_dagster", "docpipe_dagster_mocks", "__future__"}
    return found - set(sys.stdlib_module_names) - ours


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_module_is_a_declared_dependency(installed: WheelVenv) -> None:
    modules = _third_party_imports([REPO_ROOT / "docpipe_dagster", REPO_ROOT / "mocks"])
    requires = [
        line.removeprefix("Requires-Dist: ")
        for line in wheel_metadata(installed.wheel).splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    declared = {_normalise(re.split(r"[ ;<>=!\[~]", r)[0]) for r in requires if "extra ==" not in r}
    in_extras = {_normalise(re.split(r"[ ;<>=!\[~]", r)[0]) for r in requires if "extra ==" in r}
    # Which distribution provides each module, asked of the installed venv itself.
    probe = (
        "import json, sys, importlib.metadata as m; d = m.packages_distributions();"
        "print(json.dumps({k: d.get(k, []) for k in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [installed.exe("python"), "-c", probe, *sorted(modules)],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout
    import json

    providers = json.loads(out)
    undeclared = {
        module: dists
        for module, dists in providers.items()
        if dists and not any(_normalise(d) in declared for d in dists)
    }
    assert not undeclared, f"imported but not declared in [project.dependencies]: {undeclared}"
    # A module the plain install lacks is imported only where an optional extra is in use
    # (OCR): it must come from a distribution one of the extras declares.
    from importlib.metadata import packages_distributions

    here = packages_distributions()
    absent = [module for module, dists in providers.items() if not dists]
    outside_extras = {
        module: here.get(module, [])
        for module in absent
        if not any(_normalise(d) in in_extras for d in here.get(module, []))
    }
    assert not outside_extras, f"imported but declared nowhere: {outside_extras}"


def test_installed_package_migrates_ingests_and_searches_outside_the_checkout(
    installed: WheelVenv,
    empty_database_url: str,
    llamaparse_mock: MockServer,
    openai_mock: MockServer,
    tmp_path: Path,
) -> None:
    work = tmp_path / "elsewhere"
    docs = work / "my-docs"
    docs.mkdir(parents=True)
    (docs / "vectors.md").write_text(
        "# Vectors\n\nPgvector keeps embeddings in Postgres and answers nearest-neighbour "
        "queries with an HNSW index.\n"
    )
    (docs / "bread.txt").write_text("Sourdough bread rises slowly with a wild yeast starter.\n")
    env = _clean_env(
        DOCPIPE_DATABASE_URL=empty_database_url,
        DOCPIPE_DAGSTER_DATABASE_URL=empty_database_url,
        LLAMAPARSE_BASE_URL=llamaparse_mock.base_url,
        OPENAI_BASE_URL=openai_mock.base_url + "/v1",
        LLAMA_CLOUD_API_KEY=llamaparse_mock.api_key or "",
        OPENAI_API_KEY=openai_mock.api_key or "",
    )

    where = subprocess.run(
        [installed.exe("python"), "-c", "import docpipe_dagster; print(docpipe_dagster.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(installed.venv)), where  # the wheel, not the checkout
    help_text = _run(installed, ["mocks", "--help"], work, env)
    assert help_text.returncode == 0 and "--faults" in help_text.stdout, help_text.stderr
    # The installed start_mocks runs the installed mocks (`python -m docpipe_dagster_mocks`).
    started = subprocess.run(
        [
            installed.exe("python"),
            "-c",
            "import httpx; from docpipe_dagster.local.mocks import start_mocks\n"
            "m = start_mocks(['openai'])\n"
            "print(httpx.get(m.url('openai') + '/health').status_code); m.stop()",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.stdout.strip() == "200", started.stdout + started.stderr

    migrated = _run(installed, ["db", "migrate"], work, env)
    assert migrated.returncode == 0, migrated.stderr
    for sql in sorted((REPO_ROOT / "sql").glob("*.sql")):
        assert f"applied {sql.name}" in migrated.stdout, migrated.stdout

    ingested = _run(installed, ["ingest", "my-docs", "--wait"], work, env)
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert "2 completed, 0 failed" in ingested.stdout
    # DOCPIPE_HOME defaults to ./.docpipe under the working directory, not site-packages.
    assert (work / ".docpipe" / "storage" / "my-docs" / "vectors.md").is_file()
    assert not list(installed.venv.rglob(".docpipe"))

    found = _run(
        installed, ["search", "HNSW nearest neighbour index", "-k", "1", "--json"], work, env
    )
    assert found.returncode == 0, found.stderr
    import json

    results = json.loads(found.stdout)["results"]
    assert results[0]["storage_key"] == "my-docs/vectors.md"


def test_migrate_refuses_when_it_finds_no_migrations(
    installed: WheelVenv, empty_database_url: str, tmp_path: Path
) -> None:
    empty = tmp_path / "no-sql-here"
    empty.mkdir()
    env = _clean_env(DOCPIPE_DATABASE_URL=empty_database_url, DOCPIPE_SQL_DIR=str(empty))
    result = _run(installed, ["db", "migrate"], tmp_path, env)
    assert result.returncode != 0
    assert str(empty) in (result.stdout + result.stderr)
    assert "no migration files" in (result.stdout + result.stderr)
