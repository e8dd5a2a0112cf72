"""Everything docpipe starts dies with it, whatever ends it (SIGKILL included). Linux.

Two mechanisms, because neither covers everything alone:

- `die_with_parent` (PR_SET_PDEATHSIG, a `preexec_fn`): a direct child gets SIGTERM the
  moment the thread that started it ends. It reaches neither grandchildren nor a daemon that
  detached itself (the embedded Postgres: pg_ctl starts the postmaster in a session of its own).
- A watchdog (`python -m docpipe_dagster.local.lifeline`): a small process in a session of its own
  holding the read end of a lifeline pipe. The parent tells it, one line each, the process
  groups it started (each child leads one; its children, such as the code server's gRPC
  server and run workers, inherit it) and the embedded Postgres it started. When the pipe
  closes, however the parent ended, the watchdog SIGTERMs those groups, SIGKILLs what is left
  after a grace period, and stops Postgres with a fast shutdown (SIGINT to the postmaster:
  what `pg_ctl stop -m fast` sends; a data directory stopped so needs no crash recovery).
  On a clean stop the parent stops everything itself and tells the watchdog to forget it.

No Dagster import; the watchdog imports nothing but the standard library.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

PR_SET_PDEATHSIG = 1
GROUP_GRACE_S = 3.0
POSTGRES_GRACE_S = 10.0


def _prctl() -> Any:
    """libc's prctl, loaded in the parent: a preexec_fn must not load libraries (the
    child of a threaded parent may deadlock on a lock another thread held at fork)."""
    global _PRCTL
    if _PRCTL is None and sys.platform.startswith("linux"):
        import ctypes

        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
    return _PRCTL


_PRCTL: Any = None


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when its parent (thread) ends, and ends at once
    if the parent is already gone (it died between the fork and here)."""
    prctl = _prctl()

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid in pgdata/postmaster.pid when that process is alive (not a zombie)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie answers kill(0) but is gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_postgres_fast(pgdata: Path, grace_s: float = POSTGRES_GRACE_S) -> bool:
    """Fast shutdown of the postmaster serving pgdata (SIGINT), then immediate (SIGQUIT) and
    SIGKILL if it lingers. True when one was running."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return False
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGQUIT, 3.0), (signal.SIGKILL, 3.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return True


def stop_groups(groups: Sequence[int], grace_s: float = GROUP_GRACE_S) -> None:
    """SIGTERM each process group, SIGKILL the ones still alive after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 3.0)):
        alive = [g for g in groups if group_alive(g)]
        for pgid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            alive = [g for g in alive if group_alive(g)]
            time.sleep(0.05)
        if not alive:
            return


class Lifeline:
    """The parent's side: a watchdog started on first use, told what to stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchdog: subprocess.Popen | None = None

    def _send(self, line: str) -> None:
        with self._lock:
            if self._watchdog is None:
                self._watchdog = subprocess.Popen(
                    [sys.executable, "-m", "docpipe_dagster.local.lifeline"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # no terminal signal reaches it with the parent
                    text=True,
                )
                # A clean exit waits for the watchdog, so nothing of ours is left running
                # when the command returns (it only has what was not released to stop).
                atexit.register(self.close)
            stdin = self._watchdog.stdin
            assert stdin is not None
            with contextlib.suppress(BrokenPipeError, ValueError):
                stdin.write(line + "\n")
                stdin.flush()

    def adopt_group(self, pgid: int) -> None:
        self._send(f"group {pgid}")

    def release_group(self, pgid: int) -> None:
        self._send(f"-group {pgid}")

    def adopt_postgres(self, pgdata: Path) -> None:
        self._send(f"postgres {pgdata}")

    def release_postgres(self, pgdata: Path) -> None:
        self._send(f"-postgres {pgdata}")

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the lifeline (the watchdog stops whatever it still holds) and wait for it."""
        with self._lock:
            watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            if watchdog.stdin:
                watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout_s)


_LIFELINE = Lifeline()


def lifeline() -> Lifeline:
    """This process's lifeline (one watchdog per process, started when first needed)."""
    return _LIFELINE


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """Popen in a process group of its own that dies with this process (both mechanisms)."""
    process = subprocess.Popen(
        list(args), start_new_session=True, preexec_fn=die_with_parent(os.getpid()), **kwargs
    )
    lifeline().adopt_group(process.pid)
    return process


def watch(stream: IO[str]) -> None:
    """The watchdog: read orders until the lifeline closes, then stop what is held."""
    groups: list[int] = []
    pgdatas: list[Path] = []
    for line in stream:
        order, _, value = line.strip().partition(" ")
        with contextlib.suppress(ValueError):
            if order == "group":
                groups.append(int(value))
            elif order == "-group":
                groups.remove(int(value))
            elif order == "postgres":
                pgdatas.append(Path(value))
            elif order == "-postgres":
                pgdatas.remove(Path(value))
    threads = [threading.Thread(target=stop_groups, args=(groups,))]
    threads += [threading.Thread(target=stop_postgres_fast, args=(p,)) for p in pgdatas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    for hangup in (signal.SIGINT, signal.SIGHUP):
        signal.signal(hangup, signal.SIG_IGN)
    watch(sys.stdin)
