"""The HTTP API: upload into storage, document state, search, health (FastAPI + uvicorn).

Every /v1 route needs `Authorization: Bearer $DOCPIPE_API_KEY`; /health and the OpenAPI
docs (/docs, /openapi.json) do not, so probes and people can find their way. Uploads go to
storage exactly as a dropped file does: the intake sensor (or `docpipe ingest --wait`)
registers and processes them; with DOCPIPE_DAGSTER_URL set, the API registers an upload
itself and launches its run at once (api/push.py), and does the same for a file dropped into
a storage folder (api/watch.py).
"""

# No `from __future__ import annotations`: FastAPI resolves the route annotations at
# runtime, and they refer to local names (the bearer dependency).
import asyncio
import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from docpipe_dagster.api.settings import ApiSettings, SearchSettings, api_key
from docpipe_dagster.clients.storage import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    validate_key,
)
from docpipe_dagster.core.hashing import sha256_bytes
from docpipe_dagster.core.ids import document_id as document_id_for
from docpipe_dagster.core.ids import job_id as job_id_for
from docpipe_dagster.core.media import is_ignored_key
from docpipe_dagster.store.documents import document_story
from docpipe_dagster.store.queries import Store
from docpipe_dagster.store.search import MODES, SearchError, SearchFilters, set_search_language

_READ_CHUNK = 1024 * 1024
# Multipart framing around the file: boundaries, headers, the optional form fields.
_MULTIPART_SLACK = 64 * 1024


class BodyLimit:
    """Refuse a request body over `limit` bytes: at once when Content-Length says so, else
    while it streams in (a chunked upload is not spooled to disk beyond the limit)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False
        over = False

        async def limited_receive() -> dict:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Look like a client that went away: the app stops reading (FastAPI
                    # would turn an exception raised here into a 400).
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a "disconnect": ours (413) goes out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send: Callable) -> None:
        response = JSONResponse(
            {"detail": f"request body over the limit of {self.limit - _MULTIPART_SLACK} bytes"},
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict:
    return {"type": "http.disconnect"}


class _Unauthorized(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": "Bearer"})


def create_app(
    database_url: str,
    key: str,
    settings: ApiSettings | None = None,
    search_settings: SearchSettings | None = None,
    storage_factory: Callable[[], Any] | None = None,
) -> FastAPI:
    """The API over this database and the configured storage. `key` must not be empty."""
    if not key:
        raise ValueError("the API needs a key: set DOCPIPE_API_KEY")
    settings = settings or ApiSettings()
    search_settings = search_settings or SearchSettings()
    if storage_factory is None:
        from docpipe_dagster.clients.factory import open_storage

        storage_factory = open_storage
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from docpipe_dagster.store.pool import open_pool

        pool = open_pool(database_url, min_size=1, max_size=4, name="docpipe-api")
        with pool.connection() as conn:
            conn.autocommit = True
            set_search_language(conn, search_settings.language)
        state["pool"] = pool
        state["store"] = Store(pool)  # closed with the pool
        state["storage"] = storage_factory()
        state["pusher"] = None
        if settings.dagster_url:
            from docpipe_dagster.api.push import Pusher

            state["pusher"] = Pusher(settings.dagster_url)
        watcher = None
        if state["pusher"] is not None and settings.watch_storage:
            from docpipe_dagster.api.watch import start_watcher  # files dropped into the folder

            watcher = start_watcher(state["storage"], state["store"], state["pusher"])
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            if state["pusher"] is not None:
                state["pusher"].close()
            pool.close()

    app = FastAPI(
        title="docpipe",
        version="1",
        summary="Upload documents into the pipeline, follow them, search what was ingested.",
        lifespan=lifespan,
    )
    bearer = HTTPBearer(auto_error=False)

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _Unauthorized("missing bearer token (Authorization: Bearer <DOCPIPE_API_KEY>)")
        if not hmac.compare_digest(credentials.credentials.encode(), key.encode()):
            raise _Unauthorized("invalid API key")

    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + _MULTIPART_SLACK)

    def pool() -> ConnectionPool:
        return state["pool"]

    def store() -> Store:
        return state["store"]

    def clean_query(request: Request) -> None:
        # Postgres cannot hold a NUL and no query needs a control character: the client's
        # mistake, said as such (422), not a DataError and a dropped connection.
        for name, value in request.query_params.multi_items():
            bad = _CONTROL_IN_QUERY.search(value)
            if bad:
                raise HTTPException(
                    422,
                    f"query parameter {name!r} contains a control character "
                    f"(U+{ord(bad.group()):04X} at position {bad.start()})",
                )

    def checked_key(raw: str) -> str:
        try:
            key = validate_key(raw)
        except InvalidKeyError as exc:
            raise HTTPException(400, f"invalid storage key: {exc}") from exc
        if is_ignored_key(key):
            raise HTTPException(400, f"{key!r} is a hidden or temporary file name, never ingested")
        return key

    v1 = [Depends(authorized), Depends(clean_query)]

    @app.post("/v1/documents", status_code=202, dependencies=v1)
    async def upload(
        file: Annotated[UploadFile, File(description="The document")],
        key: Annotated[str | None, Form(description="Storage key; default: the file name")] = None,
        prefix: Annotated[str, Form(description="Prepended to the key")] = "",
        wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the job")] = 0,
    ) -> dict[str, Any]:
        """Put a file into storage; the pipeline picks it up. Returns its storage key and the
        job (`job_id` is known at once; `state` once intake has registered it)."""
        name = key or file.filename or ""
        if not name:
            raise HTTPException(400, "no storage key: send a file name or a `key` field")
        full = checked_key(f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name)
        data = bytearray()
        while chunk := await file.read(_READ_CHUNK):
            data += chunk
            if len(data) > settings.max_upload_bytes:
                raise HTTPException(
                    413, f"file over the limit of {settings.max_upload_bytes} bytes"
                )
        if not data:
            raise HTTPException(400, "the file is empty")
        payload = bytes(data)
        try:
            stored = await asyncio.to_thread(state["storage"].write, full, payload)
        except StorageError as exc:
            raise _storage_http_error("the file", exc) from None
        sha = sha256_bytes(payload)
        doc = document_id_for(full)
        job = job_id_for(doc, sha)
        pushed: dict[str, Any] = {"launch": "sensor", "run_id": None}
        if state["pusher"] is not None:  # DOCPIPE_DAGSTER_URL: register and launch now
            pushed = await asyncio.to_thread(state["pusher"].push, store(), stored, payload)
        row = await asyncio.to_thread(store().job_state, job)
        deadline = time.monotonic() + wait
        while row is None and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            row = await asyncio.to_thread(store().job_state, job)
        return {
            "storage_key": full,
            "document_id": str(doc),
            "job_id": str(job),
            "content_sha256": sha,
            "size_bytes": len(payload),
            "registered": row is not None,
            "state": row,
            **pushed,
            "status_url": f"/v1/documents/{full}",
        }

    @app.get("/v1/documents/{key:path}", dependencies=v1)
    def get_document(key: str) -> dict[str, Any]:
        """The document's story (docs/API.md): its versions (newest first) with their state
        and each one's events; the same shape as `docpipe status KEY --json`."""
        full = checked_key(key)
        story = store().document_story(full)
        in_storage = _in_storage(state["storage"], full)
        if story is None and not in_storage:
            raise HTTPException(404, f"no document {full!r} in storage or in the pipeline")
        return document_story(full, story, in_storage=in_storage)

    @app.delete("/v1/documents/{key:path}", status_code=202, dependencies=v1)
    def delete_document(key: str) -> dict[str, Any]:
        """Remove the file from storage; intake then marks the document deleted and takes
        its chunks out of search."""
        full = checked_key(key)
        storage = state["storage"]
        if not _in_storage(storage, full):
            raise HTTPException(404, f"no document {full!r} in storage")
        try:
            storage.delete(full)
        except StorageError as exc:
            raise _storage_http_error("the delete", exc) from None
        return {"storage_key": full, "deleted_from_storage": True}

    @app.get("/v1/search", dependencies=v1)
    def search_route(
        q: Annotated[str, Query(min_length=1, max_length=4000, description="The query")],
        k: Annotated[int, Query(ge=1, le=1000)] = 10,
        mode: Annotated[str | None, Query(description=" | ".join(MODES))] = None,
        prefix: Annotated[str | None, Query(description="Storage key prefix")] = None,
        media_type: Annotated[list[str] | None, Query()] = None,
        document_id: Annotated[list[uuid.UUID] | None, Query()] = None,
        since: Annotated[datetime | None, Query(description="Committed at or after")] = None,
        until: Annotated[datetime | None, Query(description="Committed before")] = None,
        ef_search: Annotated[int | None, Query(ge=1, le=1000)] = None,
        space: Annotated[str | None, Query(description="MODEL[:DIMS]; default: active")] = None,
    ) -> dict[str, Any]:
        """Top-k chunks through the SQL function upload_pipeline.search, with provenance."""
        from docpipe_dagster.actions import QueryError
        from docpipe_dagster.actions.search import run_query
        from docpipe_dagster.clients.embeddings import EmbeddingError

        if mode is not None and mode not in MODES:
            raise HTTPException(422, f"mode must be one of {', '.join(MODES)}")
        filters = SearchFilters(prefix, media_type, document_id, since, until)
        with pool().connection() as conn:
            conn.autocommit = True
            try:
                return run_query(
                    conn,
                    q,
                    k=k,
                    mode=mode or search_settings.mode,
                    filters=filters,
                    ef_search=ef_search or search_settings.ef_search,
                    space=space,
                )
            except (QueryError, SearchError) as exc:
                raise HTTPException(422, str(exc)) from exc
            except EmbeddingError as exc:
                raise HTTPException(502, f"embedding service error: {exc}") from exc

    @app.get("/health")
    def health() -> JSONResponse:
        """Every service with its latency; 503 when any is down."""
        from docpipe_dagster.health import service_checks

        started = time.perf_counter()
        services: list[dict[str, Any]] = []
        try:
            store().ping(timeout=5)
            services.append(
                {"name": "database", "ok": True, "latency_ms": _ms(started), "detail": "ok"}
            )
        except Exception as exc:
            services.append(
                {"name": "database", "ok": False, "latency_ms": _ms(started), "detail": str(exc)}
            )
        services += [r.as_dict() for r in service_checks()]
        ok = all(s["ok"] for s in services)
        return JSONResponse({"ok": ok, "services": services}, status_code=200 if ok else 503)

    from docpipe_dagster.metrics.api import install as install_metrics

    install_metrics(app, pool)  # GET /metrics, and the API's requests counted by route
    return app


# C0 controls but tab, line feed and carriage return (a pasted query may hold them), and DEL.
_CONTROL_IN_QUERY = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _storage_http_error(what: str, exc: StorageError) -> HTTPException:
    """A storage error as the client should see it: 4xx when the request was at fault (a
    key outside storage, a name the file system refuses, no such object, a 4xx from the
    storage API other than auth or rate limits), 502 when storage itself failed. The
    message, never a traceback."""
    if isinstance(exc, InvalidKeyError):
        return HTTPException(400, f"storage refused {what}: {exc}")
    if isinstance(exc, ObjectNotFoundError):
        return HTTPException(404, str(exc))
    if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
        return HTTPException(400 if exc.status != 404 else 404, f"storage refused {what}: {exc}")
    return HTTPException(502, f"storage failed on {what}: {exc}")


def _in_storage(storage: Any, key: str) -> bool:
    """Whether the object exists; a key that resolves outside storage (a symlink) is the
    client's 400, a storage failure a 502."""
    try:
        return storage.exists(key)
    except StorageError as exc:
        raise _storage_http_error("the key", exc) from None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def serve(host: str | None, port: int | None, echo: Callable[[str], None] = print) -> int:
    """Run the API with uvicorn until interrupted; 2 when it cannot start."""
    import uvicorn

    from docpipe_dagster.store.server import ready_database

    key = api_key()
    if not key:
        echo("error: set DOCPIPE_API_KEY (requests must send it as a bearer token)")
        return 2
    settings = ApiSettings.from_env()
    host = host or settings.host
    port = port or settings.port
    try:
        target = ready_database()
        app = create_app(target.url, key, settings, SearchSettings.from_env())
    except (ValueError, psycopg.Error) as exc:
        echo(f"error: {exc}")
        return 2
    from docpipe_dagster.logs import configure as configure_logging

    configure_logging(level=logging.WARNING, keep_existing=True)  # a failed launch says why
    echo(f"docpipe API on http://{host}:{port} (docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
