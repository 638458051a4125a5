"""Sensors: retrain when the drift report says so (once per drift episode), record each
predictions date in the prediction history, and tell an operator about failed runs."""

import json
import os

import dagster as dg

from finpipe.defs.jobs import history_job, retrain_job
from finpipe.monitoring.alerts import WEBHOOK_ENV, failure_payload, post_webhook

SENSOR_INTERVAL_S = int(os.environ.get("FINPIPE_SENSOR_INTERVAL_S", "300"))
DRIFT_REPORT = dg.AssetKey("drift_report")


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def drift_retrain_sensor(context: dg.SensorEvaluationContext):
    """Request `retrain` when a new drift_report materialization detects drift.

    The cursor holds the last materialization read and the last episode that triggered a
    retrain, so one drift episode triggers one retrain (the run key repeats the episode too).
    """
    cursor = json.loads(context.cursor) if context.cursor else {"storage_id": 0, "episode": ""}
    records = context.instance.fetch_materializations(DRIFT_REPORT, limit=1).records
    if not records or records[0].storage_id <= cursor["storage_id"]:
        return dg.SkipReason("no new drift_report materialization")
    record = records[0]
    metadata = record.asset_materialization.metadata
    detected = bool(metadata["drift_detected"].value) if "drift_detected" in metadata else False
    episode = str(metadata["episode"].value) if "episode" in metadata else ""
    triggered = cursor["episode"]
    context.update_cursor(
        json.dumps({"storage_id": record.storage_id, "episode": episode if detected else triggered})
    )
    if not detected:
        return dg.SkipReason("drift_report: no drift above the thresholds")
    if episode == triggered:
        return dg.SkipReason(f"drift episode {episode} already triggered a retrain")
    reasons = metadata["reasons"].value if "reasons" in metadata else []
    context.log.info("drift episode %s: requesting retrain (%s)", episode, reasons)
    return dg.RunRequest(run_key=f"drift-{episode}", tags={"finpipe/drift_episode": episode})


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    """Log every failed run; POST it to FINPIPE_ALERT_WEBHOOK_URL when that is set."""
    run = context.dagster_run
    error = context.failure_event.message or "unknown error"
    payload = failure_payload(run.job_name, run.run_id, error)
    context.log.error(payload["text"])
    url = os.environ.get(WEBHOOK_ENV)
    if url:
        status = post_webhook(url, payload)
        context.log.info("alert posted to the %s webhook: HTTP %d", WEBHOOK_ENV, status)


@dg.asset_sensor(
    asset_key=dg.AssetKey("predictions"),
    job=history_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def record_prediction_history(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest:
    """Record each new predictions date in the prediction history (its daily partition)."""
    materialization = asset_event.asset_materialization
    day = str(materialization.metadata["date"].value)
    return dg.RunRequest(run_key=f"history-{day}-{asset_event.run_id}", partition_key=day)


SENSORS = [drift_retrain_sensor, run_failure_alert, record_prediction_history]
