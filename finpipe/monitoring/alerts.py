"""Operator alerts: a run failure as a JSON payload, posted to a webhook when one is set."""

from __future__ import annotations

import json
import logging
import urllib.request

log = logging.getLogger(__name__)

WEBHOOK_ENV = "FINPIPE_ALERT_WEBHOOK_URL"


def failure_payload(job: str, run_id: str, error: str) -> dict[str, str]:
    """What an operator needs first: which job, which run, what went wrong."""
    return {
        "text": f"finpipe run failed: job {job}, run {run_id}: {error}",
        "job": job,
        "run_id": run_id,
        "error": error,
    }


def post_webhook(url: str, payload: dict[str, str], timeout: float = 5.0) -> int:
    """POST `payload` as JSON to `url`; returns the HTTP status (raises on network errors)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status)
