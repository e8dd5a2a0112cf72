"""The generated list of LlamaParse's extensions matches the pinned `llama-cloud` SDK."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from importlib.metadata import version
from pathlib import Path

import pytest
from llama_cloud.types import LlamaParseSupportedFileExtensions

from docpipe_dagster.core.llamaparse_extensions import LLAMAPARSE_EXTENSIONS, SDK_VERSION

REPO = Path(__file__).resolve().parents[2]


def test_generated_list_matches_the_installed_sdk() -> None:
    assert version("llama-cloud") == SDK_VERSION
    sdk = {e.lower() for e in typing.get_args(LlamaParseSupportedFileExtensions)}
    assert sdk == LLAMAPARSE_EXTENSIONS
    assert {".pdf", ".docx", ".pptx", ".xlsx", ".odt", ".epub", ".rtf", ".png"} <= sdk
    assert not {".txt", ".json", ".markdown"} & sdk


def test_the_sdk_is_pinned_to_the_generated_version() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(rf'"llama-cloud=={re.escape(SDK_VERSION)}"', pyproject)


@pytest.mark.slow  # runs the generator script in a subprocess
def test_the_generator_reproduces_the_module() -> None:
    script = REPO / "scripts" / "gen_llamaparse_extensions.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
