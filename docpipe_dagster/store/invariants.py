"""The promises the pipeline makes, checked against the database.

Shared by the tests, the `invariants_hold` asset check and `docpipe verify`: nothing lost
(every job final, or in flight with a live run), nothing duplicated, nothing half-visible,
and an audit trail that tells each job's story in order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg

from docpipe_dagster.config import default_of
from docpipe_dagster.store.schema import S

# The event that must close the story of a job in each final state.
CLOSING_EVENTS = {
    "completed": {("commit", "completed")},
    "failed": {(stage, "failed") for stage in ("intake", "parse", "chunk", "embed", "commit")},
    "deleted": {("intake", "deleted")},
    "superseded": {
        ("commit", "superseded"),
        ("intake", "changed_before_parse"),
        ("parse", "changed_before_parse"),
    },
}


@dataclass
class Violation:
    invariant: str
    detail: str
    storage_key: str | None = None


@dataclass
class InvariantReport:
    checked_jobs: int = 0
    violations: list[Violation] = field(default_factory=list)
    # Not violations: in flight in a live run, and parked for a service that was down.
    in_live_runs: int = 0
    waiting: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, invariant: str, detail: str, storage_key: str | None = None) -> None:
        self.violations.append(Violation(invariant, detail, storage_key))

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in self.violations:
            counts[v.invariant] = counts.get(v.invariant, 0) + 1
        return counts

    def notes(self) -> list[str]:
        notes = []
        if self.in_live_runs:
            notes.append(f"{self.in_live_runs} in flight in a live run")
        if self.waiting:
            notes.append(f"{self.waiting} waiting for a service (see `docpipe status`)")
        return notes

    def render(self, limit: int = 50) -> str:
        noted = f"; {', '.join(self.notes())}" if self.notes() else ""
        if self.ok:
            return f"all invariants hold ({self.checked_jobs} jobs checked{noted})"
        lines = [
            f"{len(self.violations)} invariant violation(s) in {self.checked_jobs} jobs{noted}:"
        ]
        for v in self.violations[:limit]:
            where = f" [{v.storage_key}]" if v.storage_key else ""
            lines.append(f"  - {v.invariant}{where}: {v.detail}")
        if len(self.violations) > limit:
            lines.append(f"  … and {len(self.violations) - limit} more")
        return "\n".join(lines)


def check_invariants(
    conn: psycopg.Connection,
    *,
    live_batches: Collection[str] | None = None,
    stale_after: timedelta | None = None,
    batch_key: str | None = None,
    run_states: Mapping[str, str] | None = None,
) -> InvariantReport:
    """Check every invariant (or only one batch's jobs). Read-only.

    An in-flight job is fine while its batch has a live run (`live_batches`, when the
    caller knows them) or, when the caller cannot tell, while it moved recently.
    `run_states` (batch -> "live" | "dead" | "none", from Dagster's runs) tells more: a job
    whose batch's runs all ended is `stranded` at once, whatever its age; one parked for a
    service that was down only waits.
    """
    if stale_after is None:
        stale_after = timedelta(minutes=default_of("stale_minutes"))
    report = InvariantReport()
    # Scoped to one batch: its jobs, and the searchable rows of its jobs' documents.
    in_jobs = "(%(batch)s::text IS NULL OR j.batch_key = %(batch)s)"
    in_docs = (
        f"(%(batch)s::text IS NULL OR c.document_id IN "
        f"(SELECT document_id FROM {S}.upload_jobs WHERE batch_key = %(batch)s))"
    )
    params = {"batch": batch_key, "stale": stale_after}
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {S}.upload_jobs j WHERE {in_jobs}", params)
        report.checked_jobs = cur.fetchone()[0]

        # 1. nothing lost: final, or in flight with a live run
        cur.execute(
            f"""SELECT storage_key, state, batch_key, now() - updated_at > %(stale)s,
                    (SELECT e.event_type FROM {S}.events e WHERE e.job_id = j.job_id
                     ORDER BY e.event_id DESC LIMIT 1) = 'service_unavailable'
                FROM {S}.upload_jobs j WHERE {in_jobs}
                AND state IN ('uploaded', 'parsing', 'parsed', 'chunked', 'embedded')""",
            params,
        )
        for key, state, batch, stale, parked in cur.fetchall():
            if live_batches is not None:
                if batch not in live_batches:
                    report.add(
                        "in_flight_without_run", f"stuck in state {state!r} (batch {batch})", key
                    )
                continue
            run = run_states.get(batch, "none") if run_states is not None else None
            if run == "live":
                report.in_live_runs += 1
            elif parked:
                report.waiting += 1
            elif run == "dead":
                report.add(
                    "stranded",
                    f"in state {state!r} and every run of batch {batch} has ended; "
                    "dead_run_sensor re-queues it (or `docpipe ingest <folder> --wait`)",
                    key,
                )
            elif stale:
                report.add(
                    "in_flight_without_run", f"stuck in state {state!r} (batch {batch})", key
                )

        # failed always says why
        cur.execute(
            f"""SELECT storage_key FROM {S}.upload_jobs j WHERE {in_jobs} AND state = 'failed'
                AND (failed_stage IS NULL OR coalesce(btrim(failure_reason), '') = '')""",
            params,
        )
        for (key,) in cur.fetchall():
            report.add("failed_without_reason", "failed with no stage or reason", key)

        # 2. no chunk stored twice
        cur.execute(
            f"""SELECT c.storage_key, c.chunk_index, count(*) FROM {S}.document_chunks c
                WHERE {in_docs}
                GROUP BY c.document_id, c.storage_key, c.embedding_model, c.dims, c.chunk_index
                HAVING count(*) > 1""",
            params,
        )
        for key, index, n in cur.fetchall():
            report.add("duplicate_chunk", f"chunk {index} stored {n} times", key)

        # 3. no document visible in two versions; only completed versions are searchable
        cur.execute(
            f"""SELECT min(c.storage_key), count(DISTINCT c.content_sha256)
                FROM {S}.document_chunks c WHERE {in_docs}
                GROUP BY c.document_id, c.embedding_model, c.dims
                HAVING count(DISTINCT c.content_sha256) > 1""",
            params,
        )
        for key, n in cur.fetchall():
            report.add("two_versions_visible", f"{n} content versions searchable at once", key)
        cur.execute(
            f"""SELECT DISTINCT j.storage_key, j.state FROM {S}.document_chunks c
                JOIN {S}.upload_jobs j ON j.job_id = c.job_id
                WHERE {in_docs} AND j.state <> 'completed'""",
            params,
        )
        for key, state in cur.fetchall():
            report.add("uncommitted_version_visible", f"chunks searchable for a {state} job", key)

        # 4. vectors = chunks for every completed job
        cur.execute(
            # per vector space holding the job: a backfilled space holds every chunk again
            f"""SELECT j.storage_key, j.chunk_count, count(c.chunk_id)
                FROM {S}.upload_jobs j LEFT JOIN {S}.document_chunks c ON c.job_id = j.job_id
                WHERE {in_jobs} AND j.state = 'completed'
                GROUP BY j.job_id, j.storage_key, j.chunk_count, c.embedding_model, c.dims
                HAVING j.chunk_count IS DISTINCT FROM count(c.chunk_id)""",
            params,
        )
        for key, expected, found in cur.fetchall():
            report.add(
                "vectors_differ_from_chunks",
                f"{found} searchable vectors for {expected} chunks",
                key,
            )

        # a deleted document is gone from search
        cur.execute(
            f"""SELECT DISTINCT c.storage_key FROM {S}.document_chunks c
                WHERE {in_docs} AND NOT EXISTS (
                    SELECT 1 FROM {S}.upload_jobs j WHERE j.document_id = c.document_id
                    AND j.state NOT IN ('deleted', 'superseded'))""",
            params,
        )
        for (key,) in cur.fetchall():
            report.add("deleted_still_visible", "chunks searchable for a deleted document", key)

        # 5. buffers empty for committed documents
        cur.execute(
            f"""SELECT j.storage_key, count(*) FROM {S}.document_chunk_buffer b
                JOIN {S}.upload_jobs j ON j.job_id = b.job_id
                WHERE {in_jobs} AND j.state IN ('completed', 'deleted', 'superseded')
                GROUP BY j.storage_key""",
            params,
        )
        for key, n in cur.fetchall():
            report.add("buffer_not_cleared", f"{n} staged chunks left after the job ended", key)

        # 6. each job's events tell its story in order
        cur.execute(
            f"""SELECT j.storage_key, j.state,
                    (SELECT array_agg(e.stage || '/' || e.event_type ORDER BY e.event_id)
                     FROM {S}.events e WHERE e.job_id = j.job_id)
                FROM {S}.upload_jobs j WHERE {in_jobs}""",
            params,
        )
        for key, state, story in cur.fetchall():
            problem = _story_problem(state, story or [])
            if problem:
                report.add("events_out_of_order", problem, key)
    return report


def _story_problem(state: str, story: list[str]) -> str | None:
    if not story:
        return "no events at all"
    if story[0] != "intake/registered":
        return f"first event is {story[0]!r}, not 'intake/registered'"
    closing = CLOSING_EVENTS.get(state)
    if closing is None:
        return None  # in flight: its story is still being written
    # the story's last state-changing event must match the job's final state
    last = _last_state_event(story)
    if last not in {f"{stage}/{kind}" for stage, kind in closing}:
        return f"state {state!r} but the last event is {last!r} ({' → '.join(story[-6:])})"
    return None


_NON_STATE_EVENTS = {"intake/retry", "intake/rebatched", "parse/started"}


def _last_state_event(story: list[str]) -> str:
    for event in reversed(story):
        if event not in _NON_STATE_EVENTS:
            return event
    return story[-1]


def in_flight_batches(conn: psycopg.Connection) -> list[str]:
    """The batches holding jobs in flight (for asking Dagster about their runs)."""
    rows = conn.execute(
        f"""SELECT DISTINCT batch_key FROM {S}.upload_jobs WHERE batch_key IS NOT NULL
            AND state IN ('uploaded', 'parsing', 'parsed', 'chunked', 'embedded')"""
    ).fetchall()
    return [r[0] for r in rows]
