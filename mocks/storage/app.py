"""Supabase Storage mock: the bucket and object REST routes a storage client uses.

Objects are real files under <data_dir>/<bucket>/<key>; buckets are the folders directly under
data_dir. Writes go to <data_dir>/.tmp and are renamed into place, so a download never sees half
an object. Routes, all under /storage/v1:
  POST   /bucket                        {"name"|"id", "public"} -> {"name"}
  GET    /bucket, GET/DELETE /bucket/{id}, POST /bucket/{id}/empty
  POST   /object/list/{bucket}          {"prefix","limit","offset","sortBy","search"} -> entries
  GET    /object/info/{bucket}/{key}    object info
  GET|HEAD /object/authenticated/{bucket}/{key}, GET|HEAD /object/{bucket}/{key}  download
  POST   /object/{bucket}/{key}         upload (raw body or multipart; x-upsert: true overwrites)
  PUT    /object/{bucket}/{key}         update (overwrites)
  DELETE /object/{bucket}/{key}         delete one; DELETE /object/{bucket} {"prefixes": [...]}

Faithful details: errors use the real body {"statusCode": "<code>", "code", "error",
"message"} with HTTP 400 for every non-500 error (storage-api renders them so); listing is one
level under `prefix` (treated as a folder), folders come back with id/metadata null; keys follow
the current storage-api validator (any UTF-8 except controls, # [ ] { } ^ ` " < > \\ | % ~ and
invisible characters; no "." / ".." segments; at most 1024 bytes). Stricter than the real API:
a leading "/" and empty segments ("a//b") are rejected, since they cannot map onto files.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any, BinaryIO

from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse, Response, StreamingResponse

from docpipe_dagster_mocks._common import MockSettings, create_mock_app, resolve_data_dir
from docpipe_dagster_mocks.storage.objects import ObjectStore, StorageApiError, truthy


async def _upload_payload(request: Request, key: str) -> tuple[bytes, str]:
    content_type = request.headers.get("content-type", "")
    guessed = mimetypes.guess_type(key)[0] or "application/octet-stream"
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        for _, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                return data, value.content_type or guessed
        raise StorageApiError(400, "InvalidRequest", "No content provided")
    data = await request.body()
    return data, content_type.split(";")[0].strip() or guessed


async def _json_object(request: Request) -> dict | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def create_app(settings: MockSettings) -> FastAPI:
    app = create_mock_app("storage", settings, auth="supabase")
    store = ObjectStore(resolve_data_dir(settings))
    app.state.store = store

    @app.exception_handler(StorageApiError)
    async def render_storage_error(request: Request, exc: StorageApiError) -> Response:
        return exc.response()

    def run(fn: Any, *args: Any) -> Any:
        # Disk work off the event loop so /health stays fast during big uploads.
        return asyncio.to_thread(fn, *args)

    # --- buckets -----------------------------------------------------------------------------
    @app.post("/storage/v1/bucket")
    async def create_bucket(request: Request) -> JSONResponse:
        body = await _json_object(request)
        if body is None:
            raise StorageApiError(400, "InvalidRequest", "body must be a JSON object")
        name = body.get("id") or body.get("name")
        if not isinstance(name, str) or not name:
            raise StorageApiError(400, "MissingParameter", "Missing Required Parameter name")
        await run(store.create_bucket, name, bool(body.get("public", False)))
        return JSONResponse({"name": name})

    @app.get("/storage/v1/bucket")
    async def list_buckets() -> JSONResponse:
        return JSONResponse(await run(store.buckets))

    @app.get("/storage/v1/bucket/{bucket}")
    async def get_bucket(bucket: str) -> JSONResponse:
        return JSONResponse(await run(store.bucket_info, bucket))

    @app.delete("/storage/v1/bucket/{bucket}")
    async def delete_bucket(bucket: str) -> JSONResponse:
        await run(store.delete_bucket, bucket)
        return JSONResponse({"message": "Successfully deleted"})

    @app.post("/storage/v1/bucket/{bucket}/empty")
    async def empty_bucket(bucket: str) -> JSONResponse:
        await run(store.empty_bucket, bucket)
        return JSONResponse({"message": "Successfully emptied"})

    # --- objects: specific routes first, so "list"/"info"/"authenticated" are not buckets ----
    @app.post("/storage/v1/object/list/{bucket}")
    async def list_objects(bucket: str, request: Request) -> JSONResponse:
        body = await _json_object(request)
        if body is None:
            raise StorageApiError(400, "InvalidRequest", "body must be a JSON object")
        return JSONResponse(await run(store.list, bucket, body))

    @app.get("/storage/v1/object/info/{bucket}/{key:path}")
    async def object_info(bucket: str, key: str) -> JSONResponse:
        def info() -> dict[str, Any]:
            path = store.existing_file(bucket, key)
            meta = store.metadata(bucket, key, path)
            return {
                "id": store.object_id(bucket, key),
                "name": key,
                "bucket_id": bucket,
                "size": meta["size"],
                "content_type": meta["mimetype"],
                "cache_control": meta["cacheControl"],
                "etag": meta["eTag"],
                "last_modified": meta["lastModified"],
                "created_at": meta["lastModified"],
                "metadata": {},
            }

        return JSONResponse(await run(info))

    async def download(bucket: str, key: str, head: bool = False) -> Response:
        def prepare() -> tuple[BinaryIO, dict[str, Any], str]:
            path = store.existing_file(bucket, key)
            try:
                fh = path.open("rb")
            except FileNotFoundError:  # deleted meanwhile
                raise StorageApiError(404, "NoSuchKey", "Object not found", "not_found") from None
            try:
                meta = store.metadata(bucket, key, path, fh)
                modified = formatdate(os.fstat(fh.fileno()).st_mtime, usegmt=True)
            except BaseException:
                fh.close()
                raise
            return fh, meta, modified

        # Headers and body come from ONE open file handle: an upsert renames a new file into
        # place, so this handle keeps serving the complete old object, never half of either.
        fh, meta, modified = await run(prepare)
        headers = {
            "etag": meta["eTag"],
            "cache-control": meta["cacheControl"],
            "last-modified": modified,
            "content-length": str(meta["size"]),
        }
        if head:
            fh.close()
            return Response(status_code=200, headers=headers, media_type=meta["mimetype"])

        def chunks() -> Iterator[bytes]:
            with fh:
                yield from iter(lambda: fh.read(1 << 16), b"")

        return StreamingResponse(chunks(), headers=headers, media_type=meta["mimetype"])

    @app.api_route("/storage/v1/object/authenticated/{bucket}/{key:path}", methods=["GET", "HEAD"])
    async def download_authenticated(bucket: str, key: str, request: Request) -> Response:
        return await download(bucket, key, head=request.method == "HEAD")

    @app.api_route("/storage/v1/object/{bucket}/{key:path}", methods=["GET", "HEAD"])
    async def download_object(bucket: str, key: str, request: Request) -> Response:
        return await download(bucket, key, head=request.method == "HEAD")

    async def store_upload(bucket: str, key: str, request: Request, upsert: bool) -> JSONResponse:
        data, mimetype = await _upload_payload(request, key)
        object_id = await run(store.write, bucket, key, data, mimetype, upsert)
        return JSONResponse({"Key": f"{bucket}/{key}", "Id": object_id})

    @app.post("/storage/v1/object/{bucket}/{key:path}")
    async def upload_object(bucket: str, key: str, request: Request) -> JSONResponse:
        return await store_upload(bucket, key, request, truthy(request.headers.get("x-upsert")))

    @app.put("/storage/v1/object/{bucket}/{key:path}")
    async def update_object(bucket: str, key: str, request: Request) -> JSONResponse:
        return await store_upload(bucket, key, request, True)

    @app.delete("/storage/v1/object/{bucket}/{key:path}")
    async def delete_object(bucket: str, key: str) -> JSONResponse:
        await run(store.existing_file, bucket, key)
        await run(store.delete, bucket, [key])
        return JSONResponse({"message": "Successfully deleted"})

    @app.delete("/storage/v1/object/{bucket}")
    async def delete_objects(bucket: str, request: Request) -> JSONResponse:
        body = await _json_object(request)
        prefixes = body.get("prefixes") if body is not None else None
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise StorageApiError(400, "MissingParameter", "Missing Required Parameter prefixes")
        if len(prefixes) > 1000:
            raise StorageApiError(
                400, "InvalidRequest", "At most 1000 objects can be deleted per request."
            )
        return JSONResponse(await run(store.delete, bucket, prefixes))

    with contextlib.suppress(Exception):
        # Leftover temp files from a killed mock are garbage; nothing reads them.
        for stale in store.tmp.iterdir():
            if stale.is_file():
                stale.unlink()
    return app
