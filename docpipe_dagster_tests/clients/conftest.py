"""The client tests run in-process: each client gets an `httpx.ASGITransport` over the mock's
FastAPI app (the same `create_app` that `python -m docpipe_dagster_mocks` serves), so no request crosses a
process boundary. The fixtures keep the names and the interface of the process-based ones
(`base_url`, `api_key`, `set_faults`, `stats`, `reset`, ...) and add `transport`.

What only real HTTP can show stays over the wire, marked `over_the_wire`, on the `*_wire`
fixtures (a mock subprocess on a free port): socket timeouts against a hanging server (an
ASGI transport has no timeouts), webhooks the mock posts after the client's event loop has
ended, the official SDKs, and one plain round trip per client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from docpipe_dagster_mocks._common import DEFAULT_API_KEY, MockSettings
from docpipe_dagster_mocks.llamaparse.app import create_app as llamaparse_app
from docpipe_dagster_mocks.openai.app import create_app as openai_app
from docpipe_dagster_mocks.storage.app import create_app as storage_app
from docpipe_dagster_tests.conftest import WEBHOOK_SECRET
from docpipe_dagster_tests.support import MockServer, start_mock
from docpipe_dagster_tests.support.mock_servers import MockControl


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "over_the_wire: real HTTP to a mock subprocess (the rest run in-process)"
    )


class SyncASGITransport(httpx.BaseTransport):
    """A synchronous transport over an ASGI app (httpx has only the async one): each
    request runs to completion on a short-lived event loop, body read in full."""

    def __init__(self, app: FastAPI) -> None:
        self._transport = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def exchange() -> httpx.Response:
            replay = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self._transport.handle_async_request(replay)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return asyncio.run(exchange())


class InProcessMock(MockControl):
    """A mock app served in-process; the same control methods as `MockServer`."""

    def __init__(self, service: str, app: FastAPI, api_key: str | None) -> None:
        self.service = service
        self.app = app
        self.base_url = f"http://{service}.mock"
        self.api_key = api_key
        self.transport = httpx.ASGITransport(app=app)  # for the async clients
        self.sync_transport = SyncASGITransport(app)  # for the storage client
        # Plain requests to the app (what a test would send with httpx.get to a server).
        self.http = httpx.Client(base_url=self.base_url, transport=self.sync_transport)
        self._http = self.http

    def __repr__(self) -> str:
        return f"InProcessMock({self.service!r})"


def _in_process(
    service: str, create: Callable[[MockSettings], FastAPI], **kw: Any
) -> InProcessMock:
    settings = MockSettings(api_key=DEFAULT_API_KEY, **kw)
    return InProcessMock(service, create(settings), settings.api_key)


@pytest.fixture(scope="session")
def llamaparse_mock() -> InProcessMock:
    return _in_process(
        "llamaparse", llamaparse_app, webhook_secret=WEBHOOK_SECRET, pending_seconds=0.0
    )


@pytest.fixture(scope="session")
def openai_mock() -> InProcessMock:
    return _in_process("openai", openai_app)


@pytest.fixture(scope="session")
def storage_mock(tmp_path_factory: pytest.TempPathFactory) -> InProcessMock:
    data_dir = tmp_path_factory.mktemp("inprocess-storage")
    mock = _in_process("storage", storage_app, data_dir=str(data_dir))
    mock.data_dir = data_dir  # type: ignore[attr-defined]
    return mock


def _wire(service: str, **kw: Any) -> Callable[..., Iterator[MockServer]]:
    @pytest.fixture(scope="session")
    def server() -> Iterator[MockServer]:
        mock = start_mock(service, **kw)
        yield mock
        mock.stop()

    return server


_llamaparse_server = _wire("llamaparse", webhook_secret=WEBHOOK_SECRET, pending_seconds=0.0)
_openai_server = _wire("openai")


@pytest.fixture(scope="session")
def _storage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockServer]:
    data_dir: Path = tmp_path_factory.mktemp("wire-storage")
    mock = start_mock("storage", data_dir=str(data_dir))
    yield mock
    mock.stop()


@pytest.fixture
def llamaparse_wire(_llamaparse_server: MockServer) -> MockServer:
    _llamaparse_server.reset()
    return _llamaparse_server


@pytest.fixture
def openai_wire(_openai_server: MockServer) -> MockServer:
    _openai_server.reset()
    return _openai_server


@pytest.fixture
def storage_wire(_storage_server: MockServer) -> MockServer:
    _storage_server.reset()
    return _storage_server
