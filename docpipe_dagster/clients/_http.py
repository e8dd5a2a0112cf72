"""What the async API clients share: one pooled httpx client per event loop, closed once."""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import ClassVar, TypeVar

import httpx

_Client = TypeVar("_Client", bound="AsyncApiClient")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verification context, built once per process: every new event loop
    gets a new pool, and loading the CA bundle for each cost ~20 ms of CPU."""
    return httpx.create_ssl_context()


class AsyncApiClient:
    """Base for the LlamaParse and OpenAI clients: connection reuse and bounded concurrency.

    A pool is bound to the event loop that created it, so a client used from a new loop
    (a new `asyncio.run`) gets a fresh pool. Subclasses set the attributes below.
    """

    base_url: str
    timeout_s: float
    max_concurrency: int
    _api_key: str
    _transport: httpx.AsyncBaseTransport | None
    extra_headers: ClassVar[dict[str, str]] = {}

    def _init_pool(self) -> None:
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                headers={
                    "Authorization": f"Bearer {self._api_key}",
                    "User-Agent": "docpipe-dagster/0.1",
                    **self.extra_headers,
                },
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=self.max_concurrency * 2),
                verify=tls_context(),
                transport=self._transport,
            )
            self._loop = loop
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        # A pool from another (closed) loop cannot be closed from here; its sockets went
        # with that loop, so dropping the reference is all that is left to do.
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()

    async def __aenter__(self: _Client) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
