"""Where is my file? The `documents` asset: every document's newest version with its state.

A sensor observes it whenever anything changed: the asset page shows the table (storage key,
state, failed stage and reason, attempts, chunks, batch) and plots the counts by state over
time; documents parked because a service was down read "uploaded (waiting for parser)" and
the `waiting` entry names the service and since when. `docpipe status KEY` tells one
document's whole story.
"""

import hashlib
import json

import dagster as dg

from docpipe_dagster.clients.parsing import parser_label
from docpipe_dagster.defs.resources import DatabaseResource
from docpipe_dagster.store.documents import DocumentRow
from docpipe_dagster.store.parked import ParkedJob
from docpipe_dagster.store.queries import Store

DOCUMENTS_KEY = dg.AssetKey("documents")
TABLE_LIMIT = 500
STATES = ("uploaded", "parsing", "parsed", "chunked", "embedded", "completed", "failed", "deleted")

documents_asset = dg.AssetSpec(
    DOCUMENTS_KEY,
    group_name="documents",
    kinds={"postgres"},
    description=(
        "Every document (newest version) with its state, failure reason and batch. Observed by "
        "document_status_sensor; `docpipe status KEY` shows one document's versions and events."
    ),
)

DOCUMENT_COLUMNS = [
    dg.TableColumn("storage_key", "string"),
    dg.TableColumn("state", "string"),
    dg.TableColumn("stage", "string", description="where it failed"),
    dg.TableColumn("reason", "string"),
    dg.TableColumn("attempts", "int"),
    dg.TableColumn("chunks", "int"),
    dg.TableColumn("parser", "string", description="local, or llamaparse-v2 (tier)"),
    dg.TableColumn("batch", "string"),
    dg.TableColumn("updated_at", "string"),
]


def document_table(
    rows: list[DocumentRow], waiting: dict[str, ParkedJob] | None = None
) -> dg.TableMetadataValue:
    """`waiting`: parked documents by storage key; their state reads "uploaded (waiting for
    parser)" and their reason is the service's."""
    waiting = waiting or {}

    def state(r: DocumentRow) -> str:
        parked = waiting.get(r.storage_key)
        return f"{r.state} (waiting for {parked.service})" if parked else r.state

    def reason(r: DocumentRow) -> str:
        parked = waiting.get(r.storage_key)
        return (parked.reason if parked else r.reason or "")[:300]

    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "storage_key": r.storage_key,
                    "state": state(r),
                    "stage": r.stage or "",
                    "reason": reason(r),
                    "attempts": r.attempts,
                    "chunks": r.chunks or 0,
                    "parser": parser_label(r.parser),
                    "batch": r.batch_key or "",
                    "updated_at": r.updated_at.isoformat(timespec="seconds"),
                }
            )
            for r in rows
        ],
        schema=dg.TableSchema(columns=DOCUMENT_COLUMNS),
    )


def batch_document_table(store: Store, batch_key: str) -> dg.TableMetadataValue:
    """Every document of one batch, for the searchable_chunks materialization."""
    return document_table(store.batch_documents(batch_key))


@dg.sensor(
    name="document_status_sensor",
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Observes the documents asset: counts by state and the per-document table.",
)
def document_status_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult:
    store = database.store()
    rows = store.recent_documents(TABLE_LIMIT + 1)
    services = store.parked_services()
    waiting = {j.storage_key: j for j in store.parked_jobs()} if services else {}
    digest = hashlib.sha256(
        json.dumps(
            [(r.storage_key, r.state, r.updated_at.isoformat()) for r in rows]
            + [w.line() for w in services]
        ).encode()
    ).hexdigest()[:16]
    if digest == context.cursor:
        return dg.SensorResult(skip_reason="no document changed")
    counts = {state: 0 for state in STATES}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    # The table first: the asset page lists metadata in this order.
    metadata: dict = {"documents": document_table(rows[:TABLE_LIMIT], waiting)}
    # Parked documents in plain sight: which service they wait for, and since when.
    metadata["waiting"] = dg.MetadataValue.md(
        "\n".join(f"- {w.line()}: {w.reason}" for w in services) or "nothing waiting"
    )
    metadata |= {f"documents_{state}": n for state, n in counts.items()}
    waiting_for = {"parser": 0, "embedder": 0} | {w.service: w.documents for w in services}
    metadata |= {f"documents_waiting_for_{name}": n for name, n in waiting_for.items()}
    metadata["documents_shown"] = min(len(rows), TABLE_LIMIT)
    return dg.SensorResult(
        asset_events=[dg.AssetObservation(asset_key=DOCUMENTS_KEY, metadata=metadata)],
        cursor=digest,
    )
