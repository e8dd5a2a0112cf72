"""Word documents (.docx/.docm/.dotx/.dotm): mammoth -> HTML -> markdown.

mammoth maps Word's heading styles to h1-h6 and keeps lists and tables, and the HTML converter
turns those into markdown headings, lists and tables. Macro-enabled files are read like the
others: only the XML parts are read, the VBA project stays an unread binary part.
"""

from __future__ import annotations

import io
import logging

from docpipe_dagster.core.extract.base import (
    CORRUPTED_FILE,
    ExtractedPage,
    ExtractionError,
)
from docpipe_dagster.core.extract.containers import open_zip
from docpipe_dagster.core.extract.html import html_to_page

logger = logging.getLogger(__name__)

# Besides mammoth's defaults (Heading 1-6 -> h1-h6, lists, tables): a Title paragraph is the
# document's top heading.
_STYLE_MAP = """
p[style-name='Title'] => h1:fresh
p[style-name='Subtitle'] => p:fresh
"""


def library_failure(kind: str, exc: Exception) -> ExtractionError:
    """A parser library's exception on a file that passed the container checks."""
    logger.debug("%s parser failed", kind, exc_info=exc)
    return ExtractionError(
        CORRUPTED_FILE,
        f"The {kind} is corrupted or malformed and could not be read "
        f"({type(exc).__name__}: {exc}).",
    )


def extract_docx(data: bytes) -> list[ExtractedPage]:
    """A Word document as one page: headings, lists, tables and footnotes kept as markdown."""
    import mammoth

    kind = "Word document"
    open_zip(data, kind).close()
    try:
        result = mammoth.convert_to_html(
            io.BytesIO(data),
            style_map=_STYLE_MAP,
            # Images would become base64 data URIs; only their alt text matters here.
            convert_image=mammoth.images.img_element(lambda image: {"alt": image.alt_text or ""}),
        )
    except ExtractionError:
        raise
    except Exception as exc:  # the library's errors on malformed input have no common base
        raise library_failure(kind, exc) from exc
    return [html_to_page(result.value)]
