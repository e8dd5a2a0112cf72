"""A quiet start: loading docpipe's definitions says nothing about Preview/Beta/deprecated
Dagster APIs. What Dagster raises about its own internals is filtered precisely
(definitions.DAGSTERS_OWN_WARNINGS); anything else, docpipe's own use first, fails here."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg

from docpipe_dagster.definitions import DAGSTERS_OWN_WARNINGS, ignore_dagsters_own_warnings

# A fresh interpreter: every Dagster maturity warning an error, and a DeprecationWarning or
# FutureWarning raised at docpipe's code too; then the code loads as the code server, a run
# worker, `dg check defs` and `ingest --wait` load it (the repository, every definition).
LOAD = """
import warnings
import dagster as dg
for category in (dg.PreviewWarning, dg.BetaWarning, dg.SupersessionWarning):
    warnings.simplefilter("error", category)
for category in (DeprecationWarning, FutureWarning):
    warnings.filterwarnings("error", category=category, module=r"docpipe_dagster")
import docpipe_dagster.definitions as definitions
definitions.defs().get_repository_def().load_all_definitions()
print("loaded")
"""


def test_the_definitions_load_without_preview_beta_or_deprecation_warnings(
    tmp_path: Path,
) -> None:
    env = {"PATH": "/usr/bin:/bin", "DOCPIPE_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr[-3000:]
    assert "Warning" not in out.stderr, out.stderr[-3000:]


def test_the_filter_is_dagsters_own_business_only() -> None:
    """The same warning raised from docpipe's code (or with another message) still shows."""
    (category, _), *_ = DAGSTERS_OWN_WARNINGS
    message = "Function `load_definitions_from_module` is currently in preview, and may ..."

    def shown(module: str, text: str = message, kind: type[Warning] = category) -> bool:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            ignore_dagsters_own_warnings()
            warnings.warn_explicit(text, kind, "x.py", 1, module=module)
        return bool(seen)

    assert not shown("dagster.components.core.defs_module")
    assert shown("docpipe_dagster.defs.intake.sensors")
    assert shown(
        "dagster.components.core.defs_module", "Function `asset_graph` is currently in preview"
    )
    assert shown("dagster.components.core.defs_module", kind=dg.BetaWarning)
