"""The peers' own venv (.venv-peers, from requirements.txt) and what is installed in it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.infra import REPO_ROOT

PEERS_VENV = REPO_ROOT / ".venv-peers"


def peers_available(peers_python: Path | None = None) -> str | None:
    """None when the peers' venv and docpipe's command are there, else why not."""
    python = peers_python or PEERS_VENV / "bin" / "python"
    if not python.exists():
        return f"no peers venv at {python}: run `python -m benchmarks.peers --setup`"
    probe = subprocess.run(
        [str(python), "-c", "import langchain_classic, langchain_postgres, llama_index.core"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"the peers venv {python} lacks a peer: {probe.stderr.strip()[-300:]}"
    if not (Path(sys.executable).parent / "docpipe").exists():
        return f"no docpipe command next to {sys.executable} (pip install -e .[bench])"
    return None


PEER_PACKAGES = [
    line.split("==")[0]
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line and not line.startswith("#")
]


def package_versions(peers_python: Path) -> dict[str, str]:
    """The peers' versions (from their venv) and docpipe's main ones (from this one)."""
    from importlib.metadata import version

    code = (
        "import json, importlib.metadata as m; print(json.dumps({n: m.version(n) for n in "
        f"{PEER_PACKAGES!r}}}))"
    )
    out = json.loads(
        subprocess.run([str(peers_python), "-c", code], capture_output=True, check=True).stdout
    )
    for name in ("dagster", "pgvector", "psycopg"):
        out[f"docpipe: {name}"] = version(name)
    return out


def setup_peers_venv(venv: Path = PEERS_VENV) -> None:
    """The peers' own venv from benchmarks/peers/requirements.txt."""
    requirements = Path(__file__).with_name("requirements.txt")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)]
    subprocess.run(pip, check=True)
