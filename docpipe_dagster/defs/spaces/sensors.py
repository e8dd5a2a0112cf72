"""Vector spaces under the daemon: after a model or dimension change, a backfill run embeds
every completed document into the configured space; a complete space becomes active.

Search keeps reading the previous (complete) space until then; see store/spaces.py.
"""

import dagster as dg

from docpipe_dagster.config import settings
from docpipe_dagster.defs.resources import DatabaseResource

SPACES_INTERVAL_SECONDS = settings().spaces_interval_seconds


def _url(database: DatabaseResource) -> str:
    from docpipe_dagster.store.server import ready_database

    return ready_database().url


@dg.op(description="Backfill the configured vector space; activate it once complete.")
def backfill_vector_space(context: dg.OpExecutionContext, database: DatabaseResource) -> None:
    from docpipe_dagster.api.service import sync_configured_space

    result = sync_configured_space(_url(database), context.log.info)
    context.add_output_metadata({"documents": result["documents"], "chunks": result["chunks"]})
    context.log.info(f"backfill: {result}")


@dg.job(description="Embed every completed document into the configured vector space.")
def vector_space_backfill() -> None:
    backfill_vector_space()


@dg.sensor(
    name="vector_space_sensor",
    job=vector_space_backfill,
    minimum_interval_seconds=SPACES_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "When the configured embedding space (DOCPIPE_EMBEDDING_MODEL / _DIMENSIONS) lacks "
        "completed documents, requests a backfill run; a complete space is made active."
    ),
)
def vector_space_sensor(
    context: dg.SensorEvaluationContext, database: DatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    from docpipe_dagster.api.service import configured_space
    from docpipe_dagster.store.pool import connect
    from docpipe_dagster.store.spaces import activate_if_complete, coverage

    target = configured_space()
    with connect(_url(database), autocommit=True) as conn:
        cov = coverage(conn, target.model, target.dims)
        if cov is None:
            # the space is registered by its first commit or by the backfill run
            if conn.execute(
                "SELECT EXISTS (SELECT 1 FROM upload_pipeline.upload_jobs WHERE state = 'completed')"
            ).fetchone()[0]:
                key = f"{target.model}:{target.dims}:new"
                return dg.SensorResult(run_requests=[dg.RunRequest(run_key=key)])
            return dg.SkipReason("no completed documents yet")
        if cov.complete:
            if not cov.is_active and activate_if_complete(conn, target.model, target.dims):
                return dg.SkipReason(f"{target.model}:{target.dims} activated")
            return dg.SkipReason(f"{target.model}:{target.dims} covers every completed document")
    # One run per coverage state: a run that is still going is not requested again.
    key = f"{target.model}:{target.dims}:{cov.documents}/{cov.completed}"
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=key)])
