"""Use cases: what a person or the daemon asks of docpipe, once, for every way of asking.

The CLI (`cli/`), the HTTP API (`api/`) and the Dagster sensors and jobs (`defs/`) all
call these functions, so a search, a vector-space backfill or a re-queue behaves the same
from each. No Dagster, click or FastAPI import here: callers turn results and errors into
their own (exit codes, HTTP statuses, run requests).

- actions/search.py: answer a query (embed it with the searched space's model, then SQL)
- actions/spaces.py: name a space (MODEL[:DIMS]), backfill and activate the configured one
- actions/requeue.py: put failed documents back in the queue, in a new batch
"""


class QueryError(ValueError):
    """The request could not be answered as asked (empty query, unknown space, bad
    parameters, texts the embedder refused): the caller's to fix, said in one line."""
