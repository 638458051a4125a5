"""Run requests to the Dagster webserver through its GraphQL API (POST <url>/graphql).

The service never runs pipeline code: it asks the webserver to queue a run of a job in the
`finpipe` code location, with the deployment's own configuration, and reads runs back. Every
value a request supplies travels as a GraphQL variable, never inside the query text.
"""

from __future__ import annotations

from typing import Any

import httpx

LOCATION = "finpipe"
REPOSITORY = "__repository__"
REQUESTED_BY_TAG = "finpipe/requested_by"

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId jobName status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""

RUN = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId jobName status startTime endTime tags { key value } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


class DagsterUnavailable(Exception):
    """The webserver is not configured, cannot be reached, or failed."""


class DagsterRejected(Exception):
    """The webserver answered but refused the request; the message is its reason."""


class DagsterClient:
    """A GraphQL client for one webserver (`url` as http://host:port)."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/")
        self.http = http

    async def _query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        if not self.url:
            raise DagsterUnavailable(
                "run requests need the Dagster webserver: set FINPIPE_DAGSTER_URL"
            )
        try:
            response = await self.http.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables}
            )
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise DagsterUnavailable(
                f"the Dagster webserver at {self.url} did not answer "
                f"({type(error).__name__}: {str(error)[:200]})"
            ) from None
        if body.get("errors"):
            messages = "; ".join(str(e.get("message", e))[:200] for e in body["errors"])
            raise DagsterRejected(f"the Dagster webserver refused the request: {messages}")
        return body["data"]

    async def launch(self, job: str, tags: dict[str, str]) -> dict[str, str]:
        """Queue a run of `job` with the deployment's configuration; its runId, jobName and
        status."""
        params = {
            "selector": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "jobName": job,
            },
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = (await self._query(LAUNCH_RUN, {"params": params}))["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            reason = result.get("message") or result.get("errors") or result["__typename"]
            raise DagsterRejected(f"the Dagster webserver did not launch {job}: {reason}")
        return result["run"]

    async def run(self, run_id: str) -> dict[str, Any] | None:
        """The run's runId, jobName, status, startTime, endTime and tags (a dict); None when
        the webserver does not know it."""
        result = (await self._query(RUN, {"runId": run_id}))["runOrError"]
        if result["__typename"] == "RunNotFoundError":
            return None
        if result["__typename"] != "Run":
            raise DagsterRejected(f"the Dagster webserver could not read run {run_id}: {result}")
        return {**result, "tags": {t["key"]: t["value"] for t in result["tags"]}}
