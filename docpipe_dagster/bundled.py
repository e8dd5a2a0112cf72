"""Files shipped with the package: migrations, sample documents, the dagster.yaml template.

In a wheel they live in `docpipe_dagster/_bundled/` (setup.py copies them there at build
time); in a checkout they are the top-level `sql/`, `samples/` and `dagster.yaml`, which stay
the source of truth. No Dagster import here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout root when running from source; in site-packages this is not a checkout.
CHECKOUT_ROOT = PACKAGE_DIR.parent


def is_checkout() -> bool:
    """True when the package runs from a source tree (editable install or PYTHONPATH)."""
    return (CHECKOUT_ROOT / "pyproject.toml").is_file() and (CHECKOUT_ROOT / "sql").is_dir()


def bundled_path(name: str) -> Path:
    """Where `name` (sql, samples, dagster.yaml) is: inside the package, else the checkout.

    The packaged copy wins so that an installed wheel never reads a stray folder that
    happens to sit next to site-packages.
    """
    packaged = PACKAGE_DIR / "_bundled" / name
    if packaged.exists():
        return packaged
    return CHECKOUT_ROOT / name
