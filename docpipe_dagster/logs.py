"""Logs fit for a cluster: one line per event, carrying the ids that tie it to a run and a file.

`DOCPIPE_LOG_FORMAT=json` (containers: one JSON object per line) or `console` (default).
Correlation ids live in context variables: each asset binds the run id and batch key, the
stages bind the job id and storage key around per-document work, so a client's retry warning
says which run, batch and file it was about. The value of every secret setting is masked
wherever it would appear. Only docpipe's own loggers (`docpipe_dagster.*`) are configured;
Dagster's logs stay Dagster's. No Dagster import.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

LOGGER_NAME = "docpipe_dagster"
FORMATS = ("console", "json")
_HANDLER_FLAG = "_docpipe_handler"


def _secret_values() -> list[str]:
    from docpipe_dagster.config import Settings, settings

    current = settings()
    values = []
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra or {}
        value = getattr(current, name)
        secret = isinstance(extra, dict) and extra.get("secret")
        # Masking "" or "a" would shred every line.
        if secret and isinstance(value, str) and len(value) >= 6:
            values.append(value)
    return values


def _masker(secrets: list[str]) -> Any:
    def mask(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        for key, value in event_dict.items():
            if isinstance(value, str):
                for secret in secrets:
                    if secret in value:
                        value = value.replace(secret, "***")
                event_dict[key] = value
        return event_dict

    return mask


def _structlog_formatter(log_format: str) -> logging.Formatter:
    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _masker(_secret_values()),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


class _DeferredFormatter(logging.Formatter):
    """Builds the structlog formatter at the first record: a command that logs nothing (a
    no-op `docpipe ingest`) never imports structlog and rich's tracebacks (about 0.2 s)."""

    def __init__(self, log_format: str) -> None:
        super().__init__()
        self.log_format = log_format
        self._formatter: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._formatter is None:
            self._formatter = _structlog_formatter(self.log_format)
        return self._formatter.format(record)


def is_configured() -> bool:
    return any(getattr(h, _HANDLER_FLAG, False) for h in logging.getLogger(LOGGER_NAME).handlers)


def configure(
    log_format: str | None = None, *, level: int = logging.INFO, keep_existing: bool = False
) -> None:
    """Install (or replace) the handler on docpipe's loggers; safe to call more than once.

    keep_existing: leave a handler a caller (the CLI) already installed as it is.
    """
    if keep_existing and is_configured():
        return
    if log_format is None:
        from docpipe_dagster.config import settings

        log_format = settings().log_format
    log_format = log_format.strip().lower() or "console"
    if log_format not in FORMATS:
        raise ValueError(f"DOCPIPE_LOG_FORMAT must be 'console' or 'json', got {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_DeferredFormatter(log_format))
    setattr(handler, _HANDLER_FLAG, True)
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_FLAG, False)]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(level)


@contextlib.contextmanager
def bound(**ids: object) -> Iterator[None]:
    """Every docpipe log line inside carries these ids (None values are left out)."""
    import structlog

    values = {k: str(v) for k, v in ids.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**values):
        yield
