"""Parked documents: left queued because a service was down, waiting for it to come back.

A stage that finds its service down (the circuit breaker opened) leaves the documents it had
not finished in their state and writes a `service_unavailable` event for each; a document
is parked while that is its newest event. Nothing else marks it: re-batching it, or any
stage touching it, writes a newer event. Also the queries of the dead-run recovery.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from docpipe_dagster.store.base import StoreBase
from docpipe_dagster.store.schema import IN_FLIGHT_STATES, S

PARKED_EVENT = "service_unavailable"
# The stage that parked a document names the service it waits for.
SERVICE_OF_STAGE = {"parse": "parser", "embed": "embedder"}
# Events that do not end a wait: the wait began at the first park after anything else.
_WAITING_EVENTS = (PARKED_EVENT, "rebatched", "started")
DEAD_RUN_REASON = "its run died"


@dataclass(frozen=True)
class ParkedJob:
    job_id: uuid.UUID
    storage_key: str
    batch_key: str | None
    state: str
    service: str
    reason: str
    parked_at: datetime  # the newest park
    parks: int  # parks since the document last made progress


@dataclass(frozen=True)
class ParkedService:
    """Documents waiting for one service, and since when it has been failing them."""

    service: str
    documents: int
    since: datetime
    reason: str

    def line(self) -> str:
        since = self.since.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        return f"{self.documents} waiting for {self.service} (unavailable since {since})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "documents": self.documents,
            "since": self.since.isoformat(),
            "reason": self.reason,
        }


_PARKED_SQL = f"""
    SELECT j.job_id, j.storage_key, j.batch_key, j.state, last.stage,
           last.payload ->> 'reason' AS reason, last.created_at AS parked_at,
           waits.parks, waits.first_parked_at
    FROM {S}.upload_jobs j
    CROSS JOIN LATERAL (
        SELECT e.stage, e.event_type, e.payload, e.created_at FROM {S}.events e
        WHERE e.job_id = j.job_id ORDER BY e.event_id DESC LIMIT 1) last
    CROSS JOIN LATERAL (
        SELECT count(*) AS parks, min(p.created_at) AS first_parked_at FROM {S}.events p
        WHERE p.job_id = j.job_id AND p.event_type = %(parked)s
          AND p.event_id > coalesce((
              SELECT max(q.event_id) FROM {S}.events q WHERE q.job_id = j.job_id
              AND q.event_type <> ALL(%(waiting)s)), 0)) waits
    WHERE j.state = ANY(%(states)s) AND last.event_type = %(parked)s
"""


class ParkedStore(StoreBase):
    def parked_jobs(self) -> list[ParkedJob]:
        """Every parked document version, oldest park first."""
        return [job for job, _ in self._parked()]

    def parked_services(self) -> list[ParkedService]:
        """Per service: how many documents wait for it, since when, and the last reason."""
        groups: dict[str, list[tuple[ParkedJob, datetime]]] = {}
        for job, first in self._parked():
            groups.setdefault(job.service, []).append((job, first))
        return [
            ParkedService(
                service=service,
                documents=len(rows),
                since=min(first for _, first in rows),
                reason=max(rows, key=lambda r: r[0].parked_at)[0].reason,
            )
            for service, rows in sorted(groups.items())
        ]

    def _parked(self) -> list[tuple[ParkedJob, datetime]]:
        params = {
            "waiting": list(_WAITING_EVENTS),
            "states": list(IN_FLIGHT_STATES),
            "parked": PARKED_EVENT,
        }
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_PARKED_SQL + " ORDER BY last.created_at, j.storage_key", params)
            rows = cur.fetchall()
        return [
            (
                ParkedJob(
                    job_id=r["job_id"],
                    storage_key=r["storage_key"],
                    batch_key=r["batch_key"],
                    state=r["state"],
                    service=SERVICE_OF_STAGE.get(r["stage"], r["stage"]),
                    reason=r["reason"] or "",
                    parked_at=r["parked_at"],
                    parks=max(1, r["parks"]),
                ),
                r["first_parked_at"] or r["parked_at"],
            )
            for r in rows
        ]

    # --- dead runs ------------------------------------------------------------------

    def in_flight_in_batch(self, batch_key: str) -> list[uuid.UUID]:
        """The batch's jobs still in flight and not parked (what a dead run left behind)."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"""SELECT j.job_id FROM {S}.upload_jobs j
                    CROSS JOIN LATERAL (
                        SELECT e.event_type FROM {S}.events e WHERE e.job_id = j.job_id
                        ORDER BY e.event_id DESC LIMIT 1) last
                    WHERE j.batch_key = %s AND j.state = ANY(%s)
                    AND last.event_type <> %s ORDER BY j.storage_key""",
                (batch_key, list(IN_FLIGHT_STATES), PARKED_EVENT),
            ).fetchall()
        return [r[0] for r in rows]

    def dead_run_resumes(self, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """How often each job was already re-batched because its run died."""
        if not job_ids:
            return {}
        with self.pool.connection() as conn:
            rows = conn.execute(
                f"""SELECT job_id, count(*) FROM {S}.events WHERE job_id = ANY(%s)
                    AND event_type = 'rebatched' AND payload ->> 'reason' LIKE %s
                    GROUP BY job_id""",
                (list(job_ids), DEAD_RUN_REASON + "%"),
            ).fetchall()
        return {job_id: 0 for job_id in job_ids} | dict(rows)
