"""Build hook: the wheel carries the top-level sql/, samples/ and dagster.yaml inside the package.

They stay at the top level of the checkout (the source of truth); at build time they are copied
to docpipe_dagster/_bundled/, where `docpipe_dagster.bundled` finds them in an installed package.

The packages: docpipe_dagster, and the top-level mocks/ folder installed under the name
docpipe_dagster_mocks, so the wheel puts no generic `mocks` package into site-packages (one
import name everywhere: `import docpipe_dagster_mocks`, also in a checkout).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
BUNDLED = ("sql", "samples", "dagster.yaml")
MOCKS_PACKAGE, MOCKS_DIR = "docpipe_dagster_mocks", "mocks"
PACKAGES = find_packages(str(ROOT), include=["docpipe_dagster", "docpipe_dagster.*"]) + [
    MOCKS_PACKAGE + name[len(MOCKS_DIR) :]
    for name in find_packages(str(ROOT), include=[MOCKS_DIR, f"{MOCKS_DIR}.*"])
]


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "docpipe_dagster" / "_bundled"
        for name in BUNDLED:
            source = ROOT / name
            if not source.exists():  # building from an sdist that lacks it is an error
                raise FileNotFoundError(f"{source} is missing; cannot build the package")
            destination = target / name
            if source.is_dir():
                shutil.copytree(source, destination, dirs_exist_ok=True)
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)


setup(
    packages=PACKAGES,
    package_dir={MOCKS_PACKAGE: MOCKS_DIR},
    cmdclass={"build_py": BuildPyWithData},
)
