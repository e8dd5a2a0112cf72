"""Parse untrusted binary documents in child processes with resource limits.

A hostile or broken file (a zip bomb, a malformed PDF that sends a C library into a loop or
a crash, a decompression-bomb image) must fail only its own document. Each document is parsed
in a worker process that has:

- an address-space limit (RLIMIT_AS): a blow-up ends in MemoryError or a dead worker, never
  in the run worker being killed by the kernel's OOM killer;
- a CPU-time limit (RLIMIT_CPU, raised per document by that document's budget): a busy loop
  is killed by the kernel even if the parent is stalled;
- a wall-clock timeout in the parent, which kills the worker (a worker blocked or asleep uses
  no CPU).

For throughput the workers are long-lived: a small pool started with `subprocess` (fork+exec:
never a fork of the threaded Dagster process), each reading documents over a pipe, so the
interpreter start and the OCR models' load are paid once per worker, not per document. A
worker is replaced after `max_documents` documents or after any failure of its own (a crash,
a timeout, running out of memory). Text-like formats stay in-process (see
docpipe_dagster/pipeline/local_parse.py): they cannot blow up like this.

The protocol: request = 4-byte length + JSON header ({"filename", "size"}) + the bytes;
reply = 8-byte length + JSON ({"pages": [[text, md], ...]} or {"code", "message"}).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import resource
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from docpipe_dagster.core.extract.base import ExtractedPage, ExtractionError

logger = logging.getLogger(__name__)

# Codes of failures the sandbox itself reports (the extractors' own codes pass through).
PARSE_TIMEOUT = "PARSE_TIMEOUT"
PARSE_MEMORY = "PARSE_MEMORY"
PARSER_CRASHED = "PARSER_CRASHED"
PARSER_ERROR = "PARSER_ERROR"

_REQUEST_HEADER = struct.Struct(">I")
_REPLY_HEADER = struct.Struct(">Q")


@dataclass(frozen=True)
class Limits:
    """Bounds of one document's parse."""

    memory_mb: int = 3072  # address space of a worker (OCR of a scanned page fits in 1,024)
    timeout_seconds: float = 300.0  # wall clock per document
    cpu_seconds: float | None = None  # CPU per document; None: the same as timeout_seconds
    workers: int = 2
    max_documents: int = 200  # a worker is replaced after this many documents
    # What a worker calls with (filename, data): "module:function" (tests swap in misbehaving
    # ones to prove the bounds).
    target: str = "docpipe_dagster.core.extract:extract"

    @property
    def cpu_budget(self) -> float:
        return self.cpu_seconds if self.cpu_seconds is not None else self.timeout_seconds


class _Worker:
    def __init__(self, limits: Limits, env: dict[str, str] | None) -> None:
        self.limits = limits
        self.documents = 0
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed in kill())
        child_env = dict(os.environ if env is None else env)
        # One thread per numeric library: the pool already runs one worker per core, and
        # every extra thread maps stack and arena address space under RLIMIT_AS.
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            child_env.setdefault(name, "1")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                __name__,
                str(limits.memory_mb),
                str(limits.cpu_budget),
                limits.target,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=child_env,
        )
        assert self.process.stdin is not None
        # Writes must never block past the deadline (a stuck worker stops reading).
        os.set_blocking(self.process.stdin.fileno(), False)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(OSError):
            self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        self.stderr.close()

    def stderr_tail(self, size: int = 2000) -> str:
        with contextlib.suppress(OSError, ValueError):
            self.stderr.seek(0, os.SEEK_END)
            end = self.stderr.tell()
            self.stderr.seek(max(0, end - size))
            return self.stderr.read().decode("utf-8", errors="replace")
        return ""

    def parse(self, filename: str, data: bytes) -> dict:
        """Send one document; its reply, or raise _Dead/_Timeout."""
        header = json.dumps({"filename": filename, "size": len(data)}).encode()
        deadline = time.monotonic() + self.limits.timeout_seconds
        assert self.process.stdin is not None and self.process.stdout is not None
        _write_all(
            self.process.stdin.fileno(), _REQUEST_HEADER.pack(len(header)) + header, deadline
        )
        _write_all(self.process.stdin.fileno(), data, deadline)
        out = self.process.stdout.fileno()
        (length,) = _REPLY_HEADER.unpack(_read_exactly(out, _REPLY_HEADER.size, deadline))
        reply = json.loads(_read_exactly(out, length, deadline))
        self.documents += 1
        return reply


class _Dead(Exception):
    """The worker's pipe closed: it died."""


class _Timeout(Exception):
    """The deadline passed before the worker answered."""


def _wait(fd: int, deadline: float, write: bool) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Timeout
    readable, writable, _ = select.select(
        [] if write else [fd], [fd] if write else [], [], remaining
    )
    if not (readable or writable):
        raise _Timeout


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, deadline, write=True)
        try:
            sent = os.write(fd, view[: 1 << 20])
        except BlockingIOError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            raise _Dead from None
        view = view[sent:]


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        _wait(fd, deadline, write=False)
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise _Dead
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class SandboxPool:
    """Up to `limits.workers` worker processes, started on demand, shared by threads."""

    def __init__(self, limits: Limits | None = None, env: dict[str, str] | None = None) -> None:
        self.limits = limits or Limits()
        self._env = env
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self.limits.workers)
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._closed = False
        self.started = 0  # workers started over the pool's life (tests and metrics)

    def extract(self, filename: str, data: bytes) -> list[ExtractedPage]:
        """Parse in a worker; ExtractionError for the document's own failure (its code from the
        extractor, or PARSE_TIMEOUT / PARSE_MEMORY / PARSER_CRASHED / PARSER_ERROR)."""
        with self._slots:
            worker = self._take()
            healthy = False
            try:
                reply = worker.parse(filename, data)
                healthy = not reply.get("recycle")
            except _Timeout:
                raise ExtractionError(
                    PARSE_TIMEOUT,
                    f"Parsing took longer than {self.limits.timeout_seconds:g} s and was stopped; "
                    "the document is too large or too slow to parse here.",
                ) from None
            except _Dead:
                raise self._death(worker) from None
            finally:
                self._give_back(worker, healthy)
        if "pages" in reply:
            return [ExtractedPage(text=t, md=m) for t, m in reply["pages"]]
        raise ExtractionError(reply["code"], reply["message"])

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker.alive:
                return worker
            self._drop(worker)
        with self._lock:
            if self._closed:
                raise RuntimeError("the sandbox pool is closed")
            worker = _Worker(self.limits, self._env)
            self._all.add(worker)
            self.started += 1
        return worker

    def _give_back(self, worker: _Worker, healthy: bool) -> None:
        if healthy and worker.documents < self.limits.max_documents and not self._closed:
            self._idle.put(worker)
        else:
            self._drop(worker)

    def _drop(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def _death(self, worker: _Worker) -> ExtractionError:
        try:
            code = worker.process.wait(timeout=5)  # its pipe closed: it is exiting
        except subprocess.TimeoutExpired:
            worker.process.kill()
            code = worker.process.wait()
        tail = worker.stderr_tail()
        logger.warning("parser worker died (exit %s); its last output: %s", code, tail[-500:])
        if code == -signal.SIGXCPU:
            return ExtractionError(
                PARSE_TIMEOUT,
                f"Parsing used more than {self.limits.cpu_budget:g} s of CPU and was stopped; "
                "the document is too large or too slow to parse here.",
            )
        if code is not None and code < 0:
            what = f"was killed by {signal.Signals(-code).name}"
        else:
            what = f"exited with status {code}"
        if "MemoryError" in tail or "bad_alloc" in tail or code == -signal.SIGKILL:
            return _memory_error(self.limits.memory_mb)
        return ExtractionError(
            PARSER_CRASHED,
            f"The parser process {what} on this document (a malformed or hostile file, "
            f"or over the {self.limits.memory_mb} MB memory limit).",
        )

    def close(self) -> None:
        """Stop every worker (idle ones now; busy ones as they finish)."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
        for worker in workers:
            if worker.process.stdin is not None:
                with contextlib.suppress(OSError):
                    worker.process.stdin.close()  # the worker exits at end of input
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=2)
            self._drop(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._all if w.alive]


def _memory_error(memory_mb: int) -> ExtractionError:
    return ExtractionError(
        PARSE_MEMORY,
        f"Parsing needed more than the {memory_mb} MB memory limit and was stopped "
        "(a decompression bomb, or a document too large to parse here).",
    )


# --- the worker process ---------------------------------------------------------------------


def _serve(memory_mb: int, cpu_budget: float, target: str) -> None:
    """Read documents from stdin until it closes; answer each on the original stdout."""
    import importlib

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    module, _, function = target.partition(":")
    extract = getattr(importlib.import_module(module), function)

    while True:
        head = requests.read(_REQUEST_HEADER.size)
        if len(head) < _REQUEST_HEADER.size:
            return
        (length,) = _REQUEST_HEADER.unpack(head)
        header = json.loads(requests.read(length))
        data = requests.read(header["size"])
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(used + cpu_budget) + 1
        resource.setrlimit(
            resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard)
        )
        reply: dict
        try:
            pages = extract(header["filename"], data)
            reply = {"pages": [[p.text, p.md] for p in pages]}
        except ExtractionError as exc:
            reply = {"code": exc.code, "message": exc.message}
        except MemoryError:
            err = _memory_error(memory_mb)
            reply = {"code": err.code, "message": err.message, "recycle": True}
        except Exception as exc:
            logger.exception("extractor failed")
            reply = {
                "code": PARSER_ERROR,
                "message": f"The parser failed on this document: {type(exc).__name__}: {exc}",
                "recycle": True,
            }
        del data
        try:
            # A lone surrogate (broken text in a PDF) is not UTF-8: replaced, not fatal.
            body = json.dumps(reply, ensure_ascii=False).encode("utf-8", errors="replace")
        except MemoryError:
            err = _memory_error(memory_mb)
            body = json.dumps({"code": err.code, "message": err.message, "recycle": True}).encode()
        replies.write(_REPLY_HEADER.pack(len(body)))
        replies.write(body)
        replies.flush()
        del body, reply


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _serve(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
