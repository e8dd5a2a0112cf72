"""`docpipe dev`'s supervision of its database, and the gate on its children's output.

A Postgres that dies under the stack is noticed within a second, said in one line, and
started again (Postgres runs its crash recovery on start). While it is down every service
logs connection tracebacks many times a second: the gate keeps them out of the console and
in a file, and says how many there were once the database is back. No Dagster import.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

# After the database is back, services still fail the attempts they began while it was down.
QUIET_AFTER_RECOVERY_S = 10.0
RESTART_ATTEMPTS = 3


class OutputGate:
    """Copies each child's output to the console line by line, or to a file while muted."""

    def __init__(self, hidden_path: Path, out: IO[bytes] | None = None) -> None:
        self.hidden_path = hidden_path
        self.out = out or sys.stdout.buffer
        self.hidden = 0
        # Set by DatabaseWatch: True when a line about a refused database connection
        # means the database is down (a service may notice before the watch's next poll).
        self.database_down: Callable[[bytes], bool] = lambda line: False
        self._muted_until: float | None = None  # inf while muted without an end
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None

    def follow(self, stream: IO[bytes]) -> threading.Thread:
        thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        thread.start()
        return thread

    def _pump(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in iter(stream.readline, b""):
                self.write(line)

    def write(self, line: bytes) -> None:
        if self._muted_until is None and self.database_down(line):
            self.mute()
        with self._lock:
            if self._muted_until is not None and time.monotonic() >= self._muted_until:
                self._muted_until = None
            if self._muted_until is None:
                with contextlib.suppress(OSError, ValueError):
                    self.out.write(line)
                    self.out.flush()
                return
            self.hidden += 1
            if self._file is None:
                self.hidden_path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.hidden_path.open("ab")
            self._file.write(line)
            self._file.flush()

    def mute(self) -> None:
        with self._lock:
            self._muted_until = float("inf")

    @property
    def muted_without_end(self) -> bool:
        return self._muted_until == float("inf")

    def unmute_after(self, seconds: float) -> None:
        with self._lock:
            self._muted_until = time.monotonic() + seconds

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class DatabaseWatch:
    """Polled by the stack's wait loop: restarts an embedded Postgres that died."""

    def __init__(
        self,
        pgdata: Path,
        gate: OutputGate,
        echo: Callable[[str], None],
        restart: Callable[[], object],
    ) -> None:
        self.pgdata = pgdata
        self.gate = gate
        self.echo = echo
        self.restart = restart
        self.restarts = 0
        self._announce_at: float | None = None
        gate.database_down = self._line_says_down

    def _line_says_down(self, line: bytes) -> bool:
        from docpipe_dagster.local.lifeline import postmaster_pid

        return b".s.PGSQL." in line and postmaster_pid(self.pgdata) is None

    def check(self) -> bool:
        """False when the database is down and could not be started again."""
        from docpipe_dagster.local.lifeline import postmaster_pid

        if self._announce_at is not None and time.monotonic() >= self._announce_at:
            self._announce_at = None
            if self.gate.hidden:
                self.echo(
                    f"database: {self.gate.hidden} lines the services logged while it was down "
                    f"were kept out of this console: {self.gate.hidden_path}"
                )
        if postmaster_pid(self.pgdata) is not None:
            if self.gate.muted_without_end:  # muted on a line, but it is up (again)
                self.gate.unmute_after(QUIET_AFTER_RECOVERY_S)
            return True
        self.gate.mute()
        started = time.monotonic()
        self.echo(
            "database: the embedded Postgres stopped unexpectedly; restarting it "
            "(crash recovery). Runs that fail meanwhile are retried once it is back"
        )
        problem = ""
        for _ in range(RESTART_ATTEMPTS):
            try:
                self.restart()
            except Exception as exc:  # pg_ctl's failure, a data directory it refuses
                problem = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                time.sleep(1.0)
                continue
            self.restarts += 1
            self.echo(f"database: back after {time.monotonic() - started:.1f} s")
            self.gate.unmute_after(QUIET_AFTER_RECOVERY_S)
            self._announce_at = time.monotonic() + QUIET_AFTER_RECOVERY_S
            return True
        self.gate.unmute_after(0)
        self.echo(
            f"database: could not start it again ({problem}); stopping the stack. "
            f"Its log: {self.pgdata / 'log'}"
        )
        return False
