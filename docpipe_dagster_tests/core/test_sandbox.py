"""The parse sandbox: real worker processes with real limits, and misbehaving extractors
(sandbox_targets.py) to prove each bound fails only its own document."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from docpipe_dagster.core.extract.base import ExtractionError
from docpipe_dagster.core.extract.sandbox import (
    PARSE_MEMORY,
    PARSE_TIMEOUT,
    PARSER_CRASHED,
    PARSER_ERROR,
    Limits,
    SandboxPool,
)

TARGET = "docpipe_dagster_tests.core.sandbox_targets:misbehave"


def _pool(**limits: object) -> SandboxPool:
    fields = {"memory_mb": 1024, "timeout_seconds": 20.0, "workers": 1, "target": TARGET}
    fields.update(limits)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    return SandboxPool(Limits(**fields), env=env)  # type: ignore[arg-type]


@pytest.fixture
def pool() -> Iterator[SandboxPool]:
    p = _pool()
    yield p
    p.close()


def _fails(pool: SandboxPool, name: str) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        pool.extract(name, b"x")
    return info.value


def _pid(pool: SandboxPool) -> int:
    return int(pool.extract("pid.bin", b"")[0].text)


def test_a_worker_parses_many_documents_and_stdout_noise_is_harmless(pool: SandboxPool) -> None:
    first = _pid(pool)
    assert pool.extract("echo.bin", "héllo".encode())[0].md == "# héllo"
    assert pool.extract("print.bin", b"")[0].text == "printed"
    assert pool.extract("surrogate.bin", b"")[0].text == "broken ? text"
    # An extractor's own error is an answer, not a failure of the worker: it stays.
    err = _fails(pool, "refuse.bin")
    assert (err.code, err.message) == ("CORRUPTED_FILE", "refused on purpose")
    assert _pid(pool) == first and pool.started == 1


@pytest.mark.slow  # burns a worker's CPU / memory limit
def test_memory_blow_up_fails_that_document_and_the_next_one_parses() -> None:
    pool = _pool(memory_mb=512)
    before = _pid(pool)
    for action in ("allocate", "touch"):
        err = _fails(pool, f"{action}.bin")
        assert err.code in (PARSE_MEMORY, PARSER_CRASHED), (action, err.message)
        assert "512 MB" in err.message
        assert pool.extract("echo.bin", b"after")[0].text == "after"
    assert _pid(pool) != before  # the worker that ran out of memory was replaced
    pool.close()


def test_a_crash_fails_that_document_only(pool: SandboxPool) -> None:
    err = _fails(pool, "segfault.bin")
    assert err.code == PARSER_CRASHED and "SIGSEGV" in err.message
    err = _fails(pool, "raise.bin")
    assert err.code == PARSER_ERROR and "KeyError" in err.message
    assert pool.extract("echo.bin", b"still fine")[0].text == "still fine"


@pytest.mark.slow  # burns a worker's CPU / memory limit
def test_cpu_limit_kills_a_busy_loop() -> None:
    pool = _pool(timeout_seconds=30.0, cpu_seconds=1.0)
    try:
        started = time.monotonic()
        err = _fails(pool, "spin.bin")
        assert err.code == PARSE_TIMEOUT and "CPU" in err.message
        assert time.monotonic() - started < 25
        assert pool.extract("echo.bin", b"next")[0].text == "next"
    finally:
        pool.close()


def test_wall_clock_timeout_kills_a_blocked_worker() -> None:
    pool = _pool(timeout_seconds=1.5)
    try:
        stuck = _pid(pool)
        started = time.monotonic()
        err = _fails(pool, "sleep.bin")
        assert err.code == PARSE_TIMEOUT and "1.5 s" in err.message
        assert time.monotonic() - started < 10
        assert not psutil.pid_exists(stuck) or psutil.Process(stuck).status() == "zombie"
        assert pool.extract("echo.bin", b"next")[0].text == "next"
    finally:
        pool.close()


def test_workers_are_recycled_and_shared_by_threads() -> None:
    pool = _pool(workers=2, max_documents=3)
    try:
        results: list[str] = []

        def run(i: int) -> None:
            results.append(pool.extract("echo.bin", str(i).encode())[0].text)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results, key=int) == [str(i) for i in range(12)]
        assert pool.started >= 4  # 12 documents, at most 3 per worker
        assert len(pool.pids()) <= 2
    finally:
        pool.close()
    assert pool.pids() == []


def test_workers_of_local_parsing_hold_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from docpipe_dagster.pipeline.local_parse import _worker_env

    for name in ("OPENAI_API_KEY", "LLAMA_CLOUD_API_KEY", "DOCPIPE_DATABASE_URL"):
        monkeypatch.setenv(name, "secret-value")
    env = _worker_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    pool = SandboxPool(Limits(memory_mb=1024, workers=1, target=TARGET), env=env)
    try:
        names = set(pool.extract("env.bin", b"")[0].text.split())
    finally:
        pool.close()
    assert "PATH" in names
    assert not {"OPENAI_API_KEY", "LLAMA_CLOUD_API_KEY", "DOCPIPE_DATABASE_URL"} & names
