"""py-spy's collapsed stacks summed into seconds per function (`--profile`)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

PROFILE_RATE = 100  # samples a second
_IDLE_LEAVES = ("wait", "sleep", "select", "poll", "acquire", "_recv", "recv_into", "accept")


def _idle(leaf: str) -> bool:
    """A leaf frame that is a thread waiting (a pool worker blocked in C shows as `_worker`)."""
    name = leaf.split(" (")[0].rsplit(".", 1)[-1].lower()
    return name in ("_worker", "get", "worker") or any(w in name for w in _IDLE_LEAVES)


def summarise_profile(raw: Path, top: int = 30, rate: int = PROFILE_RATE) -> dict[str, Any]:
    """Seconds per function from py-spy's collapsed stacks (`--idle --threads`).

    The main thread is sampled busy or not, so its inclusive seconds add up to the wall time
    (imports, the runs, waiting on Postgres and the mocks); other threads are counted only
    where their leaf is not a wait.
    """
    if not raw.exists():
        return {"error": "no profile written"}
    lines = raw.read_text(errors="replace").splitlines()
    named = [ln.split(")")[0] for ln in lines if ln.split(";")[0].endswith(": MainThread")]
    main_tid = named[0][len("thread (") :] if named else None
    main: collections.Counter[str] = collections.Counter()
    main_self: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    main_total = imports = other_busy = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack.startswith("thread (") or not count.isdigit():
            continue
        n = int(count)
        head, _, rest = stack.partition(";")
        tid = head[len("thread (") :].split(")")[0]
        frames = [_frame(f) for f in rest.split(";") if f]
        if not frames:
            continue
        if tid == main_tid:
            main_total += n
            if any(f.startswith("_find_and_load ") for f in frames):
                imports += n
            for f in set(frames):
                main[f] += n
            main_self[frames[-1]] += n
        elif not _idle(frames[-1]):
            other_busy += n
            for f in set(frames):
                others[f] += n

    def secs(c: collections.Counter[str]) -> list[list[Any]]:
        return [[f, round(n / rate, 2)] for f, n in c.most_common(top)]

    return {
        "rate_hz": rate,
        "main_thread_seconds": round(main_total / rate, 2),
        "main_thread_import_seconds": round(imports / rate, 2),
        "main_thread_inclusive_seconds": secs(main),
        "main_thread_self_seconds": secs(main_self),
        "other_threads_busy_seconds": round(other_busy / rate, 2),
        "other_threads_busy_inclusive_seconds": secs(others),
    }


def _frame(frame: str) -> str:
    """`func (path/to/mod.py:123)` -> `func (mod.py)`: lines merged, paths shortened."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    for anchor in ("site-packages", "docpipe_dagster", "benchmarks", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + (1 if anchor in ("site-packages", "lib") else 0) :]
            break
    return f"{name} ({'/'.join(parts[-3:])})" if where else name
