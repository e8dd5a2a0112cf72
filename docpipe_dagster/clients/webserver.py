"""Launch a batch run through the Dagster webserver's GraphQL API (the HTTP API's push path).

The API registers an upload itself and launches its `ingest_batch` run here at once, rather
than waiting for the intake sensor's next tick. Two requests, each one attempt: add the
batch to the dynamic partitions `batches`, then launch the job for that partition with the
tags the sensor's run requests carry. No Dagster import: this is plain GraphQL over httpx.
"""

from __future__ import annotations

from typing import Any

import httpx

from docpipe_dagster.core.retry import ServiceError

# The names the webserver knows the code by: the location from workspace.yaml (and
# `docpipe dev`'s code server), the repository Dagster names a `Definitions` object.
LOCATION_NAME = "docpipe_dagster"
REPOSITORY_NAME = "__repository__"
JOB_NAME = "ingest_batch"
PARTITIONS_NAME = "batches"
# Per request; a launch is at most two requests.
REQUEST_TIMEOUT_SECONDS = 5.0
# retry_sensor launches an upload batch that has no run once it is this old: longer than a
# launch can take, so a launch still in flight is never doubled.
LAUNCH_GRACE_SECONDS = 3 * REQUEST_TIMEOUT_SECONDS

_ADD_PARTITION = """
mutation AddBatch($selector: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $selector, partitionsDefName: $name,
                      partitionKey: $key) {
    __typename
    ... on Error { message }
  }
}
"""

_LAUNCH = """
mutation LaunchBatch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PipelineConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""


class WebserverError(ServiceError):
    """The webserver could not be reached or refused the request (said in its words)."""


class DagsterWebserver:
    """The webserver at `base_url` (e.g. http://127.0.0.1:3000), for launching batch runs."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = REQUEST_TIMEOUT_SECONDS,
        location: str = LOCATION_NAME,
        repository: str = REPOSITORY_NAME,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.location = location
        self.repository = repository
        self._client = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s), transport=transport
        )

    def __repr__(self) -> str:
        return f"DagsterWebserver({self.base_url!r})"

    def close(self) -> None:
        self._client.close()

    def launch_batch(self, batch_key: str, reason: str) -> str:
        """Add `batch_key` to the partitions `batches` and launch `ingest_batch` for it,
        tagged `dagster/partition` and `docpipe/reason`; returns the run id."""
        selector = {"repositoryLocationName": self.location, "repositoryName": self.repository}
        added = self._mutation(
            "addDynamicPartition",
            _ADD_PARTITION,
            {"selector": selector, "name": PARTITIONS_NAME, "key": batch_key},
        )
        # A partition added before (a launch tried again) is what we wanted.
        if added["__typename"] not in (
            "AddDynamicPartitionSuccess",
            "DuplicateDynamicPartitionError",
        ):
            raise WebserverError(f"adding partition {batch_key!r}: {_said(added)}")
        params = {
            "selector": {**selector, "jobName": JOB_NAME},
            "executionMetadata": {
                "tags": [
                    {"key": "dagster/partition", "value": batch_key},
                    {"key": "docpipe/reason", "value": reason},
                ]
            },
        }
        launched = self._mutation("launchRun", _LAUNCH, {"params": params})
        if launched["__typename"] != "LaunchRunSuccess":
            raise WebserverError(f"launching {JOB_NAME} for {batch_key!r}: {_said(launched)}")
        return launched["run"]["runId"]

    def _mutation(self, field: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self._client.post("/graphql", json={"query": query, "variables": variables})
        except httpx.TimeoutException:
            raise WebserverError(
                f"the Dagster webserver at {self.base_url} did not answer in time",
                retryable=True,
                kind="timeout",
            ) from None
        except httpx.HTTPError as exc:
            raise WebserverError(
                f"cannot reach the Dagster webserver at {self.base_url} ({exc})",
                retryable=True,
                kind="connection",
            ) from None
        if resp.status_code != 200:
            raise WebserverError(
                f"the Dagster webserver at {self.base_url} answered HTTP {resp.status_code}: "
                f"{resp.text[:300]}",
                retryable=resp.status_code >= 500,
                status=resp.status_code,
            )
        try:
            body = resp.json()
            if body.get("errors"):
                messages = "; ".join(str(e.get("message", e)) for e in body["errors"])
                raise WebserverError(f"GraphQL error from {self.base_url}: {messages[:500]}")
            return body["data"][field]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise WebserverError(
                f"the Dagster webserver at {self.base_url} sent an answer that is not GraphQL: "
                f"{resp.text[:300]}"
            ) from None


def _said(result: dict[str, Any]) -> str:
    """The webserver's own words for a failed mutation."""
    errors = result.get("errors")
    if errors:
        return "; ".join(str(e.get("message")) for e in errors)[:500]
    return f"{result['__typename']}: {result.get('message') or 'no message'}"[:500]
