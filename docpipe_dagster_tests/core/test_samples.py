"""The shipped samples are what a new user sees first: they must stay real and ingestible."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pypdf
import pytest

from docpipe_dagster.core.chunking import split_into_chunks
from docpipe_dagster.core.media import detect_media_type, is_ignored_key, unsupported_reason

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
DOCUMENTS = {
    "pgvector-hnsw-notes.md": "ef_search",
    "dagster-sensors.html": "cursor",
    "retrieval-glossary.txt": "Reciprocal rank fusion",
    "sourdough-baking.md": "autolyse",
    "solar-system-facts.html": "Olympus Mons",
    "embedding-basics.pdf": "ingestion pipeline",
}


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "make_sample_pdf", REPO / "scripts" / "make_sample_pdf.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_set() -> None:
    names = {p.name for p in SAMPLES.iterdir()}
    assert names == set(DOCUMENTS) | {"README.md"}
    assert (SAMPLES / "README.md").read_text().strip()


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_sample_is_supported_and_sized(name: str) -> None:
    path = SAMPLES / name
    data = path.read_bytes()
    assert 1000 <= len(data) <= 4096
    assert not is_ignored_key(name)
    assert unsupported_reason(name, data[:4096]) is None
    assert detect_media_type(name, data[:4096]) != "application/octet-stream"


@pytest.mark.parametrize("name", sorted(n for n in DOCUMENTS if not n.endswith(".pdf")))
def test_text_sample_mentions_its_topic_only(name: str) -> None:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    assert DOCUMENTS[name].lower() in text.lower()
    others = [kw for other, kw in DOCUMENTS.items() if other != name]
    # Distinct topics keep search results meaningful: no sample carries another's keyword.
    assert not [kw for kw in others if kw.lower() in text.lower()]
    assert len(split_into_chunks(text)) >= 1


def test_pdf_has_two_pages_of_extractable_text() -> None:
    reader = pypdf.PdfReader(SAMPLES / "embedding-basics.pdf", strict=True)
    assert len(reader.pages) == 2
    pages = [page.extract_text() for page in reader.pages]
    assert "Embedding basics" in pages[0] and "cosine similarity" in pages[0]
    assert "Embeddings in an ingestion pipeline" in pages[1] and "rate limit" in pages[1]
    assert all(len(text) > 500 for text in pages)
    assert reader.metadata is not None and reader.metadata.title == "Embedding basics"


def test_pdf_generator_is_deterministic_and_matches_committed_file(tmp_path: Path) -> None:
    generator = _load_generator()
    built = generator.build_pdf()
    assert built == generator.build_pdf()
    assert built == (SAMPLES / "embedding-basics.pdf").read_bytes(), (
        "samples/embedding-basics.pdf is stale: run python scripts/make_sample_pdf.py"
    )
    out = tmp_path / "out.pdf"
    assert generator.main(["make_sample_pdf.py", str(out)]) == 0
    assert out.read_bytes() == built
