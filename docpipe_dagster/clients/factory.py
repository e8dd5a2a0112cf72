"""Build the configured storage backend from the environment (CLI and health checks)."""

from __future__ import annotations

from docpipe_dagster.clients.storage import FolderStorage, StorageBackend
from docpipe_dagster.config import ServiceSettings, service_settings


def open_storage(settings: ServiceSettings | None = None) -> StorageBackend:
    settings = settings or service_settings()
    if settings.storage_backend == "supabase":
        from docpipe_dagster.clients.storage.supabase import SupabaseStorage

        key = settings.key(settings.storage_api_key_env, settings.storage_base_url)
        backend = SupabaseStorage(settings.storage_base_url, key, settings.storage_bucket)
        backend.ensure_bucket()
        return backend
    settings.storage_dir.mkdir(parents=True, exist_ok=True)
    return FolderStorage(settings.storage_dir)
