"""Local parse throughput per format, and the install size of the local backend's libraries.

    python -m benchmarks.formats                    # corpus x 5 repeats, then install sizes
    python -m benchmarks.formats --repeat 20 --sheet-rows 20000
    python -m benchmarks.formats --skip-install-size

Throughput: every sample of the generated corpus (docpipe_dagster_tests/support/
formats_corpus.py) and the committed pandoc/LibreOffice fixtures is parsed in-process with
`core.extract.extract`, `--repeat` times; documents/s and input MB/s per file (legacy .doc/.ppt
only when LibreOffice is installed). Install size: the local backend's libraries are
pip-installed into a fresh venv, and the size of its site-packages beyond an empty venv's is
reported, per distribution too; markitdown (with the extras for the same formats) is measured
the same way for comparison. Writes --out (default benchmarks/results/formats.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docpipe_dagster.core.extract import extract
from docpipe_dagster.core.extract.legacy import soffice_path
from docpipe_dagster_tests.support import formats_corpus as fc

# The local backend's libraries (pyproject.toml's default dependencies for it).
LOCAL_BACKEND = (
    "mammoth",
    "openpyxl",
    "xlrd",
    "striprtf",
    "defusedxml",
    "olefile",
)
MARKITDOWN = ("markitdown[docx,pptx,xlsx,xls,outlook]",)

_SIZES = """
import importlib.metadata as md, json, os
out = {}
for dist in md.distributions():
    files = dist.files or []
    out[dist.metadata["Name"]] = sum(
        os.path.getsize(p) for p in (f.locate() for f in files) if os.path.isfile(p)
    )
print(json.dumps(out))
"""


def samples(sheet_rows: int) -> list[tuple[str, bytes]]:
    out = [(s.filename, s.data) for s in fc.corpus(sheet_size=sheet_rows)]
    fixtures = ["pandoc.docx", "pandoc.odt", "pandoc.epub", "pandoc.rtf", "pandoc.pptx"]
    fixtures.append("libreoffice.xls")
    if soffice_path():
        fixtures.append("libreoffice.doc")
    out += [(f"fixture:{n}", (fc.FIXTURES / n).read_bytes()) for n in fixtures]
    return out


def throughput(repeat: int, sheet_rows: int) -> list[dict]:
    rows = []
    for name, data in samples(sheet_rows):
        filename = name.removeprefix("fixture:")
        pages = extract(filename, data)  # warm-up: imports, caches
        started = time.perf_counter()
        for _ in range(repeat):
            extract(filename, data)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "file": name,
                "bytes": len(data),
                "pages": len(pages),
                "docs_per_s": round(repeat / seconds, 1),
                "mb_per_s": round(len(data) * repeat / seconds / 1e6, 2),
            }
        )
    return rows


def install_size(requirements: tuple[str, ...]) -> dict:
    """MB of site-packages added by `requirements` in a fresh venv, in total and per dist."""
    with tempfile.TemporaryDirectory(prefix="docpipe-size-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")

        def sizes() -> dict[str, int]:
            done = subprocess.run([py, "-c", _SIZES], check=True, capture_output=True, text=True)
            return json.loads(done.stdout)

        before = sizes()
        subprocess.run(
            [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
            check=True,
        )
        added = {k: v for k, v in sizes().items() if k not in before}
    return {
        "requirements": list(requirements),
        "total_mb": round(sum(added.values()) / 1e6, 1),
        "by_distribution_mb": {
            k: round(v / 1e6, 2) for k, v in sorted(added.items(), key=lambda kv: -kv[1])
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sheet-rows", type=int, default=2000)
    parser.add_argument("--skip-install-size", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/formats.json")
    args = parser.parse_args(argv)

    result: dict = {"repeat": args.repeat, "sheet_rows": args.sheet_rows}
    result["throughput"] = rows = throughput(args.repeat, args.sheet_rows)
    print(f"{'file':<28}{'KB':>9}{'pages':>7}{'docs/s':>9}{'MB/s':>8}")
    for r in rows:
        print(
            f"{r['file']:<28}{r['bytes'] / 1e3:>9.1f}{r['pages']:>7}"
            f"{r['docs_per_s']:>9}{r['mb_per_s']:>8}"
        )
    if not args.skip_install_size:
        add_install_sizes(result, {"local_backend": LOCAL_BACKEND, "markitdown": MARKITDOWN}, 6)
    write_result(result, Path(args.out))
    return 0


def add_install_sizes(result: dict, requirements: dict[str, tuple[str, ...]], top: int) -> None:
    """Measure each set of requirements in a fresh venv; print the largest distributions."""
    result["install_size"] = {label: install_size(reqs) for label, reqs in requirements.items()}
    for label, size in result["install_size"].items():
        largest = ", ".join(f"{k} {v}" for k, v in list(size["by_distribution_mb"].items())[:top])
        print(f"install size, {label}: {size['total_mb']} MB ({largest}, ...)")


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
