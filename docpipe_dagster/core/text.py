"""Text as every stage sees it: the canonical form (``normalise_text``) that chunk offsets
point into, and the one token estimate (``estimate_tokens``) that chunks record and the
embeddings client packs requests by."""

from __future__ import annotations

import math
import re
import unicodedata

# --------------------------------------------------------------------------- normalisation

_SURROGATE = re.compile("[\ud800-\udfff]")
# Everything Unicode calls a line break becomes "\n" (a lone "\r" or a form feed from a PDF
# page must still separate words, not glue them together).
_LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x85\u2028\u2029]")
# Remaining C0 controls except \t and \n, DEL, C1 controls, and BOM/zero-width no-break space.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\ufeff]")
_TRAILING_WS = re.compile(r"[^\S\n]+$", re.MULTILINE)
_EXCESS_BLANK = re.compile(r"\n{4,}")


def normalise_text(text: str) -> str:
    """Canonical form of document text; idempotent.

    Surrogate pairs are joined and lone surrogates become U+FFFD (they cannot be UTF-8
    encoded, so an embedding request would fail); ``\\r\\n``, ``\\r`` and other line
    separators become ``\\n``; NUL and other control characters except ``\\n`` and ``\\t`` are
    removed; Unicode NFC; trailing whitespace on each line removed; three or more blank lines
    collapse to two; leading and trailing blank lines removed.
    """
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _TRAILING_WS.sub("", text)
    text = _EXCESS_BLANK.sub("\n\n\n", text)
    return text.strip("\n")


# --------------------------------------------------------------------------- token estimate

# A word or a single punctuation mark: the OpenAI mock's token rule (mocks/openai/app.py).
_TOKEN = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """Conservative token count for an embeddings request, without a tokenizer: the larger of
    the words-and-punctuation count (the mock's own rule) and UTF-8 bytes / 3.

    The one estimator: chunks record it, and the embeddings client packs requests by it.
    It is chosen for the packing, where counting low costs a rejected request (a 400, then
    a bisection) and counting high only makes batches a little smaller. It is never below
    the mock's count (by construction), and a cl100k-like BPE token is 3 or more bytes on
    every kind of text the tests try: English about 4, a CJK character 3 and at least one
    token, digits grouped by three, random base64 about 3. A per-kind-of-character formula
    came closer on English but counted punctuation-dense code ("x=1;y=2;") below the mock.
    Whitespace alone counts 0 (the mock's count; no chunk is only whitespace).
    """
    if not text or text.isspace():
        return 0
    return max(len(_TOKEN.findall(text)), math.ceil(len(text.encode("utf-8", "surrogatepass")) / 3))
