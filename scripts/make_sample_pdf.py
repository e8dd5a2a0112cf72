"""Write samples/embedding-basics.pdf: a real two-page PDF with extractable text.

The PDF is written by hand (Helvetica Type 1 base font, BT/ET text objects, a byte-exact xref
table) so the sample needs no PDF library to build, and the output is byte-for-byte
deterministic: re-running the script never changes the file's sha256, so the pipeline never
sees a "new version" of it. Usage: python scripts/make_sample_pdf.py [OUTPUT]
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

TITLE = "Embedding basics"

PAGES: list[tuple[str, list[str]]] = [
    (
        "Embedding basics",
        [
            "An embedding model turns a piece of text into a vector: a fixed-length list of "
            "floating point numbers. The model is trained so that texts with similar meaning "
            "end up close together, which makes it possible to search by meaning rather than "
            "by exact words. A question about keeping bread starter alive can find a passage "
            "about feeding a sourdough culture even if the two share few words.",
            "The length of the vector is its dimension. Common models produce between 384 and "
            "3072 dimensions. More dimensions can hold finer distinctions, but every extra "
            "dimension costs storage and index memory and slows down each comparison. Some "
            "models are trained so that a vector can be shortened, keeping only its first "
            "coordinates, with a modest loss of quality.",
            "Closeness is usually measured with cosine similarity, the cosine of the angle "
            "between two vectors. When every vector is normalised to length one, cosine "
            "similarity is the same as the dot product, and the Euclidean distance ranks "
            "results in the same order, so any of the three can be used.",
        ],
    ),
    (
        "Embeddings in an ingestion pipeline",
        [
            "Documents are split into chunks before embedding, because a model has a maximum "
            "input length and because a short passage makes a more precise search result than "
            "a whole file. Each chunk is embedded once and stored next to its text and its "
            "position in the source document.",
            "Embedding calls cost time and money, so a pipeline should never pay twice for the "
            "same text. Keying a cache by the model name, the dimension and a hash of the chunk "
            "text means that re-running an unchanged corpus makes no calls at all, and that a "
            "paragraph repeated across many documents is embedded only once.",
            "Requests should be batched: one call can carry many inputs, within limits on the "
            "number of inputs and the total number of tokens. When the service answers that "
            "the rate limit was reached, the client should wait as long as the response "
            "headers say before trying again, rather than guessing.",
            "Finally, vectors from different models, or from the same model at different "
            "dimensions, must never be compared with each other. Changing the model means "
            "embedding the corpus again into a new set of vectors.",
        ],
    ),
]

LEFT = 56
TOP = 786
WIDTH_CHARS = 86  # Helvetica 11 pt averages ~5.5 pt per character: 86 fit in 483 pt


def _pdf_string(text: str) -> bytes:
    data = text.encode("cp1252")  # WinAnsiEncoding
    return b"(" + data.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _page_stream(heading: str, paragraphs: list[str]) -> bytes:
    ops = [b"BT", b"/F2 16 Tf", f"{LEFT} {TOP} Td".encode(), _pdf_string(heading) + b" Tj", b"ET"]
    ops += [b"BT", b"/F1 11 Tf", b"15 TL", f"{LEFT} {TOP - 30} Td".encode()]
    first = True
    for paragraph in paragraphs:
        if not first:
            ops.append(b"T*")  # blank line between paragraphs
        for line in textwrap.wrap(paragraph, WIDTH_CHARS):
            ops.append(_pdf_string(line) + (b" Tj" if first else b" '"))
            first = False
    ops.append(b"ET")
    return b"\n".join(ops) + b"\n"


def build_pdf(pages: list[tuple[str, list[str]]] = PAGES, title: str = TITLE) -> bytes:
    """The whole file; objects are numbered in the order they are written."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree's number is known
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    bold = add(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
    )
    page_tree = len(objects) + 1 + 2 * len(pages)
    kids = []
    for heading, paragraphs in pages:
        stream = _page_stream(heading, paragraphs)
        contents = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 595 842] "
                b"/Resources << /Font << /F1 %d 0 R /F2 %d 0 R >> >> /Contents %d 0 R >>"
                % (page_tree, font, bold, contents)
            )
        )
    assert (
        add(
            b"<< /Type /Pages /Kids [%s] /Count %d >>"
            % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
        )
        == page_tree
    )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % page_tree
    info = add(b"<< /Title " + _pdf_string(title) + b" /Producer (docpipe_dagster) >>")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # binary comment: mark the file as binary
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset  # each entry exactly 20 bytes
    out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\n" % (
        len(objects) + 1,
        catalog,
        info,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parent.parent / "samples" / "embedding-basics.pdf"
    target = Path(argv[1]) if len(argv) > 1 else default
    target.write_bytes(build_pdf())
    print(f"wrote {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
