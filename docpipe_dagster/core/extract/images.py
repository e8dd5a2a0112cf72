"""Images (PNG, JPEG, TIFF, WebP, BMP, GIF) through OCR: one page per image, or per frame of
a multi-page TIFF (a fax or a scanner's batch).

Pillow decodes them with its decompression-bomb guard made strict: an image over
MAX_IMAGE_PIXELS fails before its pixels are decoded (Pillow only warns up to twice its own
default). A photo's EXIF orientation is applied before OCR.
"""

from __future__ import annotations

import io
import warnings

from docpipe_dagster.core.extract import ocr
from docpipe_dagster.core.extract.base import (
    LIMIT_EXCEEDED,
    UNREADABLE_FILE,
    ExtractedPage,
    ExtractionError,
)

# A 600-dpi A4 scan is 35 megapixels; a 20,000 x 20,000 image (400) is refused.
MAX_IMAGE_PIXELS = 64_000_000
MAX_FRAMES = 500


def extract_image(data: bytes) -> list[ExtractedPage]:
    image = open_image(data)  # bounds checked from the header before the engine is loaded
    engine = ocr.require("The image")
    pages = []
    for frame in _frames(image):
        text = ocr.recognise(frame, engine)
        pages.append(ExtractedPage(text=text, md=text))
    return pages


def open_image(data: bytes):  # -> PIL.Image.Image
    """Open `data` with the strict pixel bound; ExtractionError when it is no image or too big."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image.size)
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_big() from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ExtractionError(
            UNREADABLE_FILE, f"The image could not be read: it is corrupted or truncated ({exc})."
        ) from None


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_big(f": {width:,} x {height:,} pixels")


def _too_big(detail: str = "") -> ExtractionError:
    return ExtractionError(
        LIMIT_EXCEEDED,
        f"The image is too large to decode safely (over {MAX_IMAGE_PIXELS // 1_000_000} "
        f"megapixels{detail}); a decompression bomb or a scan at an extreme resolution.",
    )


def _frames(image):  # (PIL.Image.Image) -> Iterator[PIL.Image.Image]
    from PIL import Image, ImageOps

    frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    if frames > MAX_FRAMES:
        raise ExtractionError(
            LIMIT_EXCEEDED, f"The TIFF has {frames} pages, over the limit of {MAX_FRAMES}."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for index in range(frames):
                image.seek(index)
                _check_size(image.size)
                frame = ImageOps.exif_transpose(image) if index == 0 else image.copy()
                yield frame.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_big() from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ExtractionError(
            UNREADABLE_FILE, f"The image could not be read: it is corrupted or truncated ({exc})."
        ) from None
