"""Webhook signing for the LlamaParse mock.

The mock POSTs a job's result to `webhook_url` when the job ends. With a secret configured the
request carries `X-Docpipe-Signature: sha256=<hex HMAC-SHA256 of the raw body>` (the GitHub
convention), so a receiver can check the body came from the mock and was not altered. The real
LlamaParse does not sign webhooks this way; this header is the mock's own, documented here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import httpx

SIGNATURE_HEADER = "X-Docpipe-Signature"
_PREFIX = "sha256="


def sign(secret: str, body: bytes) -> str:
    """The header value for `body`: "sha256=<hex>"."""
    return _PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` is the signature of `body` under `secret` (constant-time compare)."""
    if not secret or not header or not header.startswith(_PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode())


WEBHOOK_ATTEMPTS = 3


async def post_with_retries(
    url: str, body: bytes, headers: dict[str, str], entry: dict[str, Any]
) -> None:
    """POST a webhook, retrying 5xx and connection errors; `entry` records what happened."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            entry["attempts"] = attempt
            try:
                resp = await client.post(url, content=body, headers=headers)
                entry["status_code"] = resp.status_code
                entry.pop("error", None)
                if resp.status_code < 500:
                    return
            except httpx.HTTPError as exc:
                entry["error"] = type(exc).__name__
            await asyncio.sleep(0.2 * attempt)
