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
    from docpipe_dagster.actions.spaces import sync_configured_space

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
    from docpipe_dagster.actions.spaces import check_configured_space

    check = check_configured_space(_url(database))
    if check.run_key is None:
        return dg.SkipReason(check.reason)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=check.run_key)])
