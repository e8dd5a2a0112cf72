"""Shared framework for the local mock services (llamaparse, openai, storage).

Every mock is a FastAPI app built by `create_mock_app`, which adds:

- `GET /health` (no auth, no latency, no faults) for readiness probes;
- `/_mock/*` control endpoints (faults, stats, reset, latency) used by tests and benchmarks;
- a pure-ASGI middleware that, for API routes only, checks auth in the real service's style,
  adds configured latency, applies *generic* HTTP faults and records request statistics.

Service-specific faults (e.g. "wrong_count", "parse_stuck") are left to the route handlers,
which call `request.app.state.faults.take("wrong_count", path)`.

Fault spec: {"kind": str, "count": int|None, "probability": float|None, "path": str|None,
"retry_after": float|None, "hang_seconds": float|None}. `count` None means unlimited; when
`probability` is set each matching request fires with that probability (seeded RNG); `path`
is a path-prefix filter. A spec whose count reaches 0 is removed.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docpipe_dagster.config import LOCAL_MOCK_API_KEY, docpipe_home, settings
from docpipe_dagster_mocks._responses import AuthStyle, auth_failure, fault_response

DEFAULT_API_KEY = LOCAL_MOCK_API_KEY

# Fault kinds the middleware applies itself; anything else is service-specific.
GENERIC_FAULT_KINDS = frozenset(
    {"http_500", "http_503", "http_429", "insufficient_quota", "hang", "malformed_json"}
)

# Paths that are never authenticated, delayed, faulted or counted.
_EXEMPT_PREFIXES = ("/_mock/", "/docs", "/redoc", "/openapi.json")
_EXEMPT_PATHS = frozenset({"/health", "/_mock"})

_FAULT_KEYS = ("kind", "count", "probability", "path", "retry_after", "hang_seconds")


def _default_api_key() -> str | None:
    # DOCPIPE_MOCK_API_KEY overrides the default; an empty value or "none" disables auth.
    raw = settings().mock_api_key
    return None if raw.strip().lower() in ("", "none") else raw


@dataclass
class MockSettings:
    api_key: str | None = field(default_factory=_default_api_key)  # None = auth disabled
    latency_ms: float = 0.0  # fixed added latency per API request
    jitter_ms: float = 0.0  # + uniform(0, jitter) ms
    per_input_ms: float = 0.0  # openai: + this per input of an embeddings request
    faults: list[dict] = field(default_factory=list)  # initial fault specs
    data_dir: str | None = None  # storage mock files; default $DOCPIPE_HOME/mock-storage
    webhook_secret: str | None = None  # llamaparse webhook HMAC secret
    pending_seconds: float = 0.0  # llamaparse: how long a job stays PENDING
    seed: int = 0


def settings_from_env(**overrides: Any) -> MockSettings:
    """Settings from DOCPIPE_MOCK_* env vars; explicit non-None overrides win."""
    current = settings()
    kwargs: dict[str, Any] = {
        "api_key": _default_api_key(),
        "latency_ms": current.mock_latency_ms,
        "jitter_ms": current.mock_jitter_ms,
    }
    if current.mock_faults:
        kwargs["faults"] = parse_faults(current.mock_faults)
    for key, value in overrides.items():
        if key == "api_key" or value is not None:  # api_key=None legitimately disables auth
            kwargs[key] = value
    return MockSettings(**kwargs)


def parse_faults(raw: str | list | dict) -> list[dict]:
    """Accept a JSON string, one spec or a list of specs; return a list of specs."""
    data = json.loads(raw) if isinstance(raw, str) else raw
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(s, dict) and "kind" in s for s in data):
        raise ValueError("faults must be a spec or a list of specs, each with a 'kind'")
    return data


def resolve_data_dir(settings: MockSettings) -> Path:
    """Where a mock keeps files: settings.data_dir or $DOCPIPE_HOME/mock-storage."""
    if settings.data_dir:
        return Path(settings.data_dir)
    return docpipe_home() / "mock-storage"


class FaultInjector:
    """Thread-safe list of active fault specs, consumed by count or rolled by probability."""

    def __init__(self, seed: int = 0, specs: list[dict] | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._specs: list[dict] = []
        for spec in specs or []:
            self.add(spec)

    def add(self, spec: dict) -> None:
        if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
            raise ValueError("fault spec needs a string 'kind'")
        normalised = {key: spec.get(key) for key in _FAULT_KEYS}
        normalised.update({k: v for k, v in spec.items() if k not in _FAULT_KEYS})
        if normalised["count"] is not None and int(normalised["count"]) <= 0:
            return
        with self._lock:
            self._specs.append(normalised)

    def clear(self) -> None:
        with self._lock:
            self._specs.clear()

    def take(self, kind: str | None, path: str) -> dict | None:
        """First active spec matching kind (None = any generic kind) and path, or None."""
        with self._lock:
            for spec in self._specs:
                if kind is None:
                    if spec["kind"] not in GENERIC_FAULT_KINDS:
                        continue
                elif spec["kind"] != kind:
                    continue
                if spec["path"] and not path.startswith(spec["path"]):
                    continue
                prob = spec["probability"]
                if prob is not None and self._rng.random() >= float(prob):
                    continue
                if spec["count"] is not None:
                    spec["count"] = int(spec["count"]) - 1
                    if spec["count"] <= 0:
                        self._specs.remove(spec)
                return dict(spec)
        return None

    def list(self) -> list[dict]:
        with self._lock:
            return [dict(s) for s in self._specs]


class MockStats:
    """Counts of real API requests by route template and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_route: dict[str, int] = {}
            self.by_status: dict[str, int] = {}
            self.faults: dict[str, int] = {}

    def record(self, route: str, status: int, fault: str | None = None) -> None:
        with self._lock:
            self.total += 1
            self.by_route[route] = self.by_route.get(route, 0) + 1
            self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
            if fault:
                self.faults[fault] = self.faults.get(fault, 0) + 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "total": self.total,
                "by_route": dict(self.by_route),
                "by_status": dict(self.by_status),
                "faults": dict(self.faults),
            }


# --- middleware -----------------------------------------------------------------------------


def _is_exempt(path: str) -> bool:
    return path in _EXEMPT_PATHS or path.startswith(_EXEMPT_PREFIXES)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class _MockMiddleware:
    """Auth -> latency -> generic faults -> app, counting every API request once."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, style: AuthStyle) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.style = style
        self._jitter_rng = random.Random()

    def _route_key(self, scope: Scope) -> str:
        for route in self.fastapi_app.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return f"{scope['method']} {getattr(route, 'path', scope['path'])}"
        return f"{scope['method']} {scope['path']}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        state = self.fastapi_app.state
        settings: MockSettings = state.settings
        path = scope["path"]
        route = self._route_key(scope)
        status_box = [0]
        hook: Callable[[], dict[str, str]] | None = getattr(state, "extra_headers", None)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                if hook is not None:
                    present = {k.lower() for k, _ in message.get("headers", [])}
                    extra = [
                        (k.encode(), v.encode())
                        for k, v in hook().items()
                        if k.encode() not in present
                    ]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        denied = auth_failure(self.style, settings.api_key, headers)
        if denied is not None:
            await denied(scope, receive, send_wrapper)
            state.stats.record(route, status_box[0])
            return

        delay_ms = settings.latency_ms + (
            self._jitter_rng.uniform(0, settings.jitter_ms) if settings.jitter_ms > 0 else 0.0
        )
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)

        spec = state.faults.take(None, path)
        fault = spec["kind"] if spec else None
        if spec and spec["kind"] == "hang":
            # Read the body first so the next receive() reports a client disconnect.
            body = await _read_body(receive)
            hang = 30.0 if spec.get("hang_seconds") is None else float(spec["hang_seconds"])
            try:
                message = await asyncio.wait_for(receive(), timeout=hang)
                if message["type"] == "http.disconnect":
                    state.stats.record(route, 499, fault)  # nginx's "client closed request"
                    return
            except asyncio.TimeoutError:
                pass
            receive = _replay(body, receive)
        elif spec:
            await fault_response(self.style, spec)(scope, receive, send_wrapper)
            state.stats.record(route, status_box[0], fault)
            return

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state.stats.record(route, status_box[0] or 500, fault)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --- app factory ----------------------------------------------------------------------------


def create_mock_app(name: str, settings: MockSettings, *, auth: AuthStyle) -> FastAPI:
    """A FastAPI app with /health, /_mock/* controls and the auth/latency/fault middleware."""
    app = FastAPI(title=f"docpipe mock: {name}", docs_url=None, redoc_url=None)
    app.state.name = name
    app.state.settings = settings
    app.state.faults = FaultInjector(seed=settings.seed, specs=list(settings.faults))
    app.state.stats = MockStats()
    app.state.extra_headers = None  # optional hook: () -> dict of headers for API responses

    @app.get("/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok", "service": name}

    @app.get("/_mock/faults", include_in_schema=False)
    async def list_faults() -> list[dict]:
        return app.state.faults.list()

    @app.post("/_mock/faults", include_in_schema=False)
    async def add_faults(spec: Any = Body(...)) -> Any:  # noqa: B008 - FastAPI idiom
        try:
            specs = parse_faults(spec)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        for s in specs:
            app.state.faults.add(s)
        return app.state.faults.list()

    @app.delete("/_mock/faults", include_in_schema=False)
    async def clear_faults() -> dict:
        app.state.faults.clear()
        return {"cleared": True}

    @app.get("/_mock/stats", include_in_schema=False)
    async def stats() -> dict:
        return app.state.stats.snapshot()

    @app.post("/_mock/reset", include_in_schema=False)
    async def reset() -> dict:
        app.state.stats.reset()
        app.state.faults.clear()
        hook: Callable[[], Awaitable[None] | None] | None = getattr(app.state, "on_reset", None)
        if hook is not None:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        return {"reset": True}

    def latency() -> dict:
        return {
            "latency_ms": settings.latency_ms,
            "jitter_ms": settings.jitter_ms,
            "per_input_ms": settings.per_input_ms,
        }

    @app.get("/_mock/latency", include_in_schema=False)
    async def get_latency() -> dict:
        return latency()

    @app.post("/_mock/latency", include_in_schema=False)
    async def set_latency(body: dict = Body(...)) -> dict:  # noqa: B008 - FastAPI idiom
        settings.latency_ms = float(body.get("latency_ms", settings.latency_ms) or 0.0)
        settings.jitter_ms = float(body.get("jitter_ms", settings.jitter_ms) or 0.0)
        settings.per_input_ms = float(body.get("per_input_ms", settings.per_input_ms) or 0.0)
        return latency()

    app.add_middleware(_MockMiddleware, fastapi_app=app, style=auth)
    return app
