"""Legacy binary Word (.doc) and PowerPoint (.ppt) through LibreOffice, when installed.

`soffice --headless --convert-to docx|pptx` in a private temporary profile (concurrent
conversions must not share one), then the DOCX/PPTX extractor. Without LibreOffice the error
says so: install it, or parse these types with LlamaParse (which reads them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    LIMIT_EXCEEDED,
    NEEDS_LIBREOFFICE,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.containers import OLE2_MAGIC, ZIP_MAGIC

CONVERT_TIMEOUT_S = 120


def soffice_path() -> str | None:
    """LibreOffice's command, or None when it is not installed."""
    return shutil.which("soffice") or shutil.which("libreoffice")


def convert(data: bytes, source_ext: str, target_ext: str) -> bytes:
    """Convert a document with LibreOffice headless; raises NEEDS_LIBREOFFICE without it."""
    soffice = soffice_path()
    if soffice is None:
        raise ExtractionError(
            NEEDS_LIBREOFFICE,
            f"Legacy {source_ext} files need LibreOffice to be parsed locally: install it "
            "(e.g. apt-get install libreoffice-writer-nogui libreoffice-impress-nogui), "
            f"or parse {source_ext} with LlamaParse.",
        )
    with tempfile.TemporaryDirectory(prefix="docpipe-soffice-") as tmp:
        work = Path(tmp)
        src = work / f"document{source_ext}"
        src.write_bytes(data)
        out = work / "out"
        cmd = [
            soffice,
            f"-env:UserInstallation={(work / 'profile').as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            target_ext.lstrip("."),
            "--outdir",
            str(out),
            str(src),
        ]
        env = {**os.environ, "HOME": str(work)}
        # Its own session, so a timeout ends soffice.bin too, not only the launcher script.
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
        )
        try:
            stdout, stderr = proc.communicate(timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ExtractionError(
                LIMIT_EXCEEDED,
                f"LibreOffice did not convert the {source_ext} file within {CONVERT_TIMEOUT_S} s.",
            ) from exc
        result = out / f"document{target_ext}"
        if not result.exists():
            detail = (stderr or stdout).decode(errors="replace").strip()[-300:]
            raise ExtractionError(
                CORRUPTED_FILE,
                f"LibreOffice could not read the {source_ext} file (exit {proc.returncode}"
                f"{': ' + detail if detail else ''}).",
            )
        return result.read_bytes()


def _check_ole2(data: bytes, kind: str) -> None:
    if not data.startswith(OLE2_MAGIC):
        raise ExtractionError(
            CORRUPTED_FILE, f"The file is not a {kind}: it is not an OLE2 (Office 97-2003) file."
        )


def extract_doc(data: bytes) -> list[ExtractedPage]:
    """A Word 97-2003 document, converted to DOCX by LibreOffice."""
    from docpipe_dagster.core.extract.office import extract_docx

    if data.startswith(ZIP_MAGIC):  # a .docx under the old name
        return extract_docx(data)
    if data.lstrip().startswith(b"{\\rtf"):  # Word saves RTF as .doc on request
        from docpipe_dagster.core.extract.rtf import extract_rtf

        return extract_rtf(data)
    _check_ole2(data, "Word 97-2003 document")
    return extract_docx(convert(data, ".doc", ".docx"))


def extract_ppt(data: bytes) -> list[ExtractedPage]:
    """A PowerPoint 97-2003 presentation, converted to PPTX by LibreOffice."""
    from docpipe_dagster.core.extract.pptx import extract_pptx

    if data.startswith(ZIP_MAGIC):
        return extract_pptx(data)
    _check_ole2(data, "PowerPoint 97-2003 presentation")
    return extract_pptx(convert(data, ".ppt", ".pptx"))
