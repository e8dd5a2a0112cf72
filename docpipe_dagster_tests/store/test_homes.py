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


# The layers of docs/ARCHITECTURE.md, highest first. A module imports only from lower layers
# (or a module of its own package in the same layer); the longest matching prefix names a
# module's layer.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),
    ("runner", "launcher", "warm", "local.dev_stack"),
    ("definitions", "api", "local.services"),
    ("defs",),
    ("actions", "pipeline", "metrics", "health", "local.mocks"),
    ("store", "clients", "logs"),
    ("config",),
    ("core", "bundled", "local", "local.lifeline", "local.ports", "local.supervision"),
]
RANK = {
    f"docpipe_dagster.{name}": len(LAYERS) - i for i, names in enumerate(LAYERS) for name in names
}


def _module_name(path: Path) -> str:
    parts = ["docpipe_dagster", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _home(module: str) -> str | None:
    """The layer entry a module belongs to (None: the package itself, or not ours)."""
    homes = [h for h in RANK if module == h or module.startswith(h + ".")]
    return max(homes, key=len) if homes else None


def _our_imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _modules()}
    return {
        name: {n for n in _imports(path) if n in modules and n != name}
        for name, path in modules.items()
    }


def test_every_module_has_a_layer() -> None:
    homeless = [m for m in _our_imports() if m != "docpipe_dagster" and _home(m) is None]
    assert homeless == [], f"add these to LAYERS and docs/ARCHITECTURE.md: {homeless}"


def test_layers_import_downward_only() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in _our_imports().items()
        for target in targets
        if (a := _home(module))
        and (b := _home(target))
        and a != b
        and RANK[b] >= RANK[a]
        and not (RANK[b] == RANK[a] and a.split(".")[1] == b.split(".")[1])
    )
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _our_imports()
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for target in sorted(graph.get(module, ())):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], done)
    assert cycles == []


def test_the_layer_rule_sees_an_upward_import() -> None:
    assert RANK[_home("docpipe_dagster.store.server")] < RANK[_home("docpipe_dagster.cli.ingest")]
    assert _home("docpipe_dagster.local.lifeline") == "docpipe_dagster.local.lifeline"
    assert _home("docpipe_dagster.local.dev_stack") == "docpipe_dagster.local.dev_stack"


def test_only_the_dagster_layers_import_dagster() -> None:
    allowed = ("docpipe_dagster.defs", "docpipe_dagster.definitions", "docpipe_dagster.runner")
    allowed += ("docpipe_dagster.launcher", "docpipe_dagster.warm", "docpipe_dagster.cli")
    users = sorted(
        module
        for module, path in {_module_name(p): p for p in _modules()}.items()
        if _reaches(_imports(path), "dagster") and not any(_reaches({module}, a) for a in allowed)
    )
    assert users == []
