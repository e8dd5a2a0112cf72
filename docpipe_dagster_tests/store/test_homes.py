"""Every SQL statement lives in store/ (or sql/), and the layers import downwards only:
defs/ never imports the HTTP API or the CLI; actions/ (the use cases they share) imports none
of the three, nor Dagster, click or FastAPI (docs/ARCHITECTURE.md, Layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import docpipe_dagster

PACKAGE = Path(docpipe_dagster.__file__).parent


def _modules(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _reaches(names: set[str], prefix: str) -> bool:
    return any(n == prefix or n.startswith(prefix + ".") for n in names)


def test_no_statement_is_executed_outside_the_store() -> None:
    outside = []
    for path in _modules():
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany")
            ):
                outside.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert outside == [], f"SQL outside store/: {outside}"


def test_defs_imports_neither_the_api_nor_the_cli() -> None:
    bad = {
        str(path.relative_to(PACKAGE)): [
            p for p in ("docpipe_dagster.api", "docpipe_dagster.cli") if _reaches(_imports(path), p)
        ]
        for path in _modules("defs")
    }
    assert {k: v for k, v in bad.items() if v} == {}


def test_actions_import_no_entry_point_and_no_framework() -> None:
    forbidden = ("docpipe_dagster.api", "docpipe_dagster.cli", "docpipe_dagster.defs")
    forbidden += ("dagster", "click", "fastapi")
    bad = {
        str(path.relative_to(PACKAGE)): [p for p in forbidden if _reaches(_imports(path), p)]
        for path in _modules("actions")
    }
    assert {k: v for k, v in bad.items() if v} == {}
    assert bad, "no actions/ modules found"


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The checks above can fail: they find an execute call and a forbidden import."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(conn):\n    from docpipe_dagster.api.server import serve\n"
        "    conn.execute('SELECT 1')\n"
    )
    assert _reaches(_imports(sample), "docpipe_dagster.api")
    calls = [
        n
        for n in ast.walk(ast.parse(sample.read_text()))
        if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "execute"
    ]
    assert len(calls) == 1
