"""Where is my file? The `documents` asset: every document's newest version with its state.

A sensor observes it whenever anything changed: the asset page shows the table (storage key,
state, failed stage and reason, attempts, chunks, batch) and plots the counts by state over
time. `docpipe status KEY` tells one document's whole story.
"""

import hashlib
import json

import dagster as dg

from docpipe_dagster.clients.parsing import parser_label
from docpipe_dagster.defs.resources import DatabaseResource
from docpipe_dagster.store.documents import DocumentRow
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


def document_table(rows: list[DocumentRow]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "storage_key": r.storage_key,
                    "state": r.state,
                    "stage": r.stage or "",
                    "reason": (r.reason or "")[:300],
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
    rows = database.store().recent_documents(TABLE_LIMIT + 1)
    digest = hashlib.sha256(
        json.dumps([(r.storage_key, r.state, r.updated_at.isoformat()) for r in rows]).encode()
    ).hexdigest()[:16]
    if digest == context.cursor:
        return dg.SensorResult(skip_reason="no document changed")
    counts = {state: 0 for state in STATES}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    # The table first: the asset page lists metadata in this order.
    metadata: dict = {"documents": document_table(rows[:TABLE_LIMIT])}
    metadata |= {f"documents_{state}": n for state, n in counts.items()}
    metadata["documents_shown"] = min(len(rows), TABLE_LIMIT)
    return dg.SensorResult(
        asset_events=[dg.AssetObservation(asset_key=DOCUMENTS_KEY, metadata=metadata)],
        cursor=digest,
    )
