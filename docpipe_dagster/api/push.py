"""The push path of `POST /v1/documents`: register the upload and launch its run at once.

With `DOCPIPE_DAGSTER_URL` set, the API does not wait for the intake sensor's next tick: it
registers the one file it just wrote exactly as intake would (`pipeline/intake.register_upload`,
a batch of its own, `upload-...`) and launches that batch's `ingest_batch` run through the
webserver's GraphQL API (`clients/webserver.py`). Registration is atomic on the job id, so
only the process that registered a version launches its run. A failed launch loses nothing:
the upload stays registered and `retry_sensor` launches upload batches that never had a run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from docpipe_dagster.clients.webserver import (
    LAUNCH_GRACE_SECONDS,
    DagsterWebserver,
    WebserverError,
)
from docpipe_dagster.pipeline.intake import register_upload

if TYPE_CHECKING:
    from docpipe_dagster.clients.parsing import Routing
    from docpipe_dagster.clients.storage import StoredObject
    from docpipe_dagster.store.queries import Store

log = logging.getLogger(__name__)

# `launch` in the upload's answer (docs/API.md).
SENSOR = "sensor"  # no webserver configured: the intake sensor registers and launches it
LAUNCHED = "launched"  # registered here and its run launched (`run_id`)
DEFERRED = "deferred"  # registered here, the launch failed: retry_sensor launches it
NOT_NEEDED = "not needed"  # registered by intake already, unchanged, or refused at intake


class Pusher:
    """Registers uploads and launches their runs through the webserver at `dagster_url`."""

    def __init__(self, dagster_url: str, routes: Routing | None = None) -> None:
        if routes is None:
            from docpipe_dagster.clients.parsing import routing

            routes = routing()
        self.routes = routes
        self.webserver = DagsterWebserver(dagster_url)

    def close(self) -> None:
        self.webserver.close()

    def push(
        self, store: Store, stored: StoredObject, data: bytes, *, reason: str = "upload"
    ) -> dict[str, Any]:
        """Register the file just written (`stored`, `data`) and launch its run when this
        call registered it, tagged `docpipe/reason=<reason>` (`upload`, or `watch` for a
        file dropped into the storage folder, api/watch.py); returns the upload answer's
        `launch` and `run_id`."""
        registration = register_upload(store, stored, data, routes=self.routes)
        if not registration.needs_run or registration.batch_key is None:
            return {"launch": NOT_NEEDED, "run_id": None}
        try:
            run_id = self.webserver.launch_batch(registration.batch_key, reason)
        except WebserverError as exc:
            log.warning(
                "%s %s is registered (batch %s) but its run could not be launched: %s. "
                "Nothing is lost: retry_sensor launches the batch once it is %.0f s old "
                "(check DOCPIPE_DAGSTER_URL if this repeats)",
                "upload" if reason == "upload" else "dropped file",
                stored.key,
                registration.batch_key,
                exc,
                LAUNCH_GRACE_SECONDS,
            )
            return {"launch": DEFERRED, "run_id": None}
        return {"launch": LAUNCHED, "run_id": run_id}
