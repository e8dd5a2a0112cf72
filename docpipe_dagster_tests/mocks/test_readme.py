"""mocks/README.md is the mocks' manual: every fault kind and every control route the code
has is in it, and every reference to it points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from docpipe_dagster_mocks._common import GENERIC_FAULT_KINDS, MockSettings
from docpipe_dagster_mocks.serve import SERVICES, create_service_app

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "mocks" / "README.md"


def test_every_fault_kind_is_documented() -> None:
    text = README.read_text()
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "mocks").rglob("*.py"))
    specific = set(re.findall(r"""\.take\(\s*["']([a-z_0-9]+)["']""", source))
    assert specific, "no mock-specific fault kinds found: the pattern is stale"
    missing = sorted(k for k in GENERIC_FAULT_KINDS | specific if f"`{k}`" not in text)
    assert missing == [], f"fault kinds not in mocks/README.md: {missing}"


def test_every_control_route_is_documented(tmp_path: Path) -> None:
    text = README.read_text()
    missing = []
    for service in SERVICES:
        app = create_service_app(service, MockSettings(data_dir=str(tmp_path)))
        for route in app.routes:
            path = getattr(route, "path", "")
            if path.startswith("/_mock/") and f"/_mock/{path.split('/')[2]}" not in text:
                missing.append(f"{service} {path}")
    assert missing == [], f"control routes not in mocks/README.md: {missing}"


def test_every_reference_to_the_readme_resolves() -> None:
    assert README.is_file()
    referrers = []
    for folder in ("docpipe_dagster", "mocks", "docs", "benchmarks"):
        referrers += [
            p
            for p in (REPO_ROOT / folder).rglob("*")
            if p.suffix in (".py", ".md") and "__pycache__" not in p.parts
        ]
    referrers.append(REPO_ROOT / "README.md")
    broken = []
    for path in referrers:
        for target in re.findall(r"\]\(([^)#\s]*mocks/README\.md)", path.read_text()):
            if not (path.parent / target).resolve().is_file():
                broken.append(f"{path.relative_to(REPO_ROOT)} -> {target}")
    assert broken == [], broken
