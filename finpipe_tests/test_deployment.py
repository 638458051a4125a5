"""The deployment as real processes: what docker/docker-compose.yml runs, without Docker.

A real PostgreSQL server, `dagster code-server start` for finpipe, `dagster-webserver` on the
repo's workspace.yaml and `dagster-daemon run`, all on 127.0.0.1 with the repo's dagster.yaml
(queued runs, launched by the code server as processes). Everything goes through the
webserver's GraphQL API: runs on the bundled data (three tickers, tiny models, steps inside
the run process to spare two cores an interpreter start per step), one tick of the daily
refresh schedule, the prediction-history sensor recording the day, drift-sensor ticks before
and after drift is planted, a failed run reaching the alert webhook, then Postgres itself
(Dagster's runs, events and ticks; MLflow's runs and registered versions in its own database
there), a headless-Chromium screenshot of the asset graph, and the prediction service
(`finpipe serve`) over the same data root and registry asking the webserver for a run. About
four minutes on two cores; every wait is bounded, every process stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import matplotlib.image
import numpy as np
import psycopg2
import pytest
import requests

from finpipe.core.calendar import is_trading_day
from finpipe.core.storage import ParquetStore
from finpipe.serving.auth import create_key
from finpipe_tests.deployment_processes import Deployment, api_service, local_deployment
from finpipe_tests.headless_chromium import chromium_command
from finpipe_tests.postgres_server import PostgresServer, postgres_server

pytestmark = [pytest.mark.deployment, pytest.mark.postgres]

NEW_YORK = ZoneInfo("America/New_York")
SCHEDULE = "daily_refresh_schedule"
SENSOR = "drift_retrain_sensor"
TICKERS = ("AAPL", "JNJ", "MSFT")
INGEST_AND_FEATURES = [
    "universe", "raw_prices", "benchmark_prices", "raw_macro", "raw_fundamentals",
    "time_plan", "features", "labels", "model_panel",
]  # fmt: skip
TINY_TORCH = {"hidden_size": 8, "max_epochs": 1, "samples_per_epoch": 512, "valid_samples": 256}
TINY_PARAMS = {
    **{family: TINY_TORCH for family in ("lstm", "gru", "transformer", "cnn_lstm", "tft")},
    "random_forest": {"n_estimators": 5},
    "hist_gbm": {"max_iter": 10},
}
# Thresholds no data can cross: the first drift report is quiet whatever the bundled data does.
NO_DRIFT = {"max_drifted_share": 1.0, "min_live_dates": 1_000_000}
RECENT_DAYS = 63  # the window of recent dates the drift report compares
MLFLOW_DB = "mlflow"


def run_config(params_json: str = json.dumps(TINY_PARAMS), **monitoring: float) -> dict:
    """Small settings for every job: three tickers since 2010 (so up to half the book in a
    name), tiny models; the jobs run their steps in-process by default."""
    return {
        "resources": {
            "market_data": {"config": {"universe": ",".join(TICKERS), "start_date": "2010-01-01"}},
            "training": {"config": {"params_json": params_json}},
            "monitoring": {"config": {"recent_days": RECENT_DAYS, **monitoring}},
            "portfolio": {"config": {"max_weight": 0.5}},
        },
    }


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP endpoint recording the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/finpipe-alerts", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Stack:
    deployment: Deployment
    postgres: PostgresServer
    data_root: Path
    alerts: list[dict[str, Any]]


def one_tick_cron(lead_s: float) -> str:
    """A daily cron (New York time) ticking next between `lead_s` and `lead_s` + 60 s from now."""
    at = datetime.now(NEW_YORK) + timedelta(seconds=lead_s + 60)
    return f"{at.minute} {at.hour} * * *"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("deployment")
    data_root = workdir / "data"
    env = {
        "FINPIPE_DATA_ROOT": str(data_root),
        "FINPIPE_MLFLOW_ARTIFACTS": str(workdir / "mlflow-artifacts"),
        # Once the test's runs are queued, so that on a trading day the scheduled run waits
        # behind them (the processes are ready about 15 s after this).
        "FINPIPE_DAILY_REFRESH_CRON": one_tick_cron(lead_s=75),
        "FINPIPE_SENSOR_INTERVAL_S": "5",
    }
    with postgres_server() as server, webhook_receiver() as (webhook_url, alerts):
        env["MLFLOW_TRACKING_URI"] = server.create_database(MLFLOW_DB)
        env["FINPIPE_ALERT_WEBHOOK_URL"] = webhook_url
        with local_deployment(server, workdir, env) as deployment:
            # Its tick (Saturdays 08:00) would queue a full backtest ahead of the test's runs.
            deployment.api.stop_schedule("weekly_evaluate_schedule")
            yield Stack(deployment, server, data_root, alerts)
    shutil.rmtree(data_root, ignore_errors=True)


@dataclass
class PipelineRuns:
    features: dict[str, Any]
    failing: dict[str, Any]
    retrain: dict[str, Any]
    daily_refresh: dict[str, Any]
    schedule_tick: dict[str, Any]
    scheduled_run: dict[str, Any] | None


@pytest.fixture(scope="module")
def pipeline(stack: Stack) -> PipelineRuns:
    """Queued in order (the queue runs one at a time, first in first out): features, a run
    that fails, models, the daily refresh. Meanwhile the schedule ticks; its run, on a
    trading day, is cancelled while it waits behind them."""
    deployment, api = stack.deployment, stack.deployment.api
    run_ids = [
        api.launch_run("daily_refresh", run_config(**NO_DRIFT), INGEST_AND_FEATURES),
        api.launch_run("retrain", run_config(params_json="{not json")),
        api.launch_run("retrain", run_config()),
        api.launch_run("daily_refresh", run_config(**NO_DRIFT)),
    ]
    tick = deployment.wait_for_ticks(
        lambda: api.schedule_state(SCHEDULE)["ticks"], since=0, until=0, timeout=300
    )[0]
    scheduled_run = None
    if tick["runIds"]:
        api.terminate_run(tick["runIds"][0])
        scheduled_run = deployment.wait_for_run(tick["runIds"][0], timeout=120)
    features, failing, retrain, daily_refresh = [deployment.wait_for_run(i) for i in run_ids]
    return PipelineRuns(features, failing, retrain, daily_refresh, tick, scheduled_run)


def test_daily_refresh_runs_from_the_queue_on_the_code_server(
    stack: Stack, pipeline: PipelineRuns
) -> None:
    for run in (pipeline.features, pipeline.retrain, pipeline.daily_refresh):
        assert run["status"] == "SUCCESS", run.get("errors")
    assert pipeline.daily_refresh["jobName"] == "daily_refresh"
    predictions = ParquetStore(str(stack.data_root)).read("predictions", "latest")
    assert predictions is not None
    assert set(predictions["ticker"]) == set(TICKERS)
    assert "ensemble" in set(predictions["model"])


def test_schedule_ticks_on_the_daemon_and_skips_non_trading_days(pipeline: PipelineRuns) -> None:
    tick = pipeline.schedule_tick
    day = datetime.fromtimestamp(tick["timestamp"], NEW_YORK).date()
    if is_trading_day(day):
        assert tick["status"] == "SUCCESS", tick
        run = pipeline.scheduled_run
        assert run is not None and run["jobName"] == "daily_refresh"
        assert run["tags"]["dagster/schedule_name"] == SCHEDULE
        assert run["status"] == "CANCELED"
    else:
        assert tick["status"] == "SKIPPED", tick
        assert "not a NYSE trading day" in tick["skipReason"]
        assert tick["runIds"] == []


def plant_drift(data_root: Path, shift: float = 50.0) -> None:
    """Shift every feature on the recent dates far outside its training distribution (the
    drift report reads them from the model panel, which the next run rebuilds)."""
    store = ParquetStore(str(data_root))
    frame = store.read("features", "features")
    assert frame is not None
    recent = frame["date"] >= np.sort(frame["date"].unique())[-RECENT_DAYS]
    columns = [c for c in frame.columns if c not in ("date", "ticker")]
    frame.loc[recent, columns] = frame.loc[recent, columns] + shift
    store.write(frame, "features", "features", metadata=store.read_metadata("features", "features"))


def test_drift_sensor_requests_one_retrain_per_drift_episode(
    stack: Stack, pipeline: PipelineRuns
) -> None:
    deployment, api = stack.deployment, stack.deployment.api

    def sensor_ticks() -> list[dict[str, Any]]:
        return api.sensor_state(SENSOR)["ticks"]

    def drift_report_run() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """Materialize drift_report alone; the run, the sensor's ticks since, the report."""
        launched = time.time()
        run = deployment.wait_for_run(
            api.launch_run("daily_refresh", run_config(), ["model_panel", "drift_report"])
        )
        assert run["status"] == "SUCCESS", run.get("errors")
        ticks = deployment.wait_for_ticks(sensor_ticks, since=launched, until=run["endTime"])
        return run, ticks, api.latest_materialization("drift_report")["metadata"]

    quiet = api.latest_materialization("drift_report")
    assert quiet["runId"] == pipeline.daily_refresh["runId"]
    assert quiet["metadata"]["drift_detected"] is False
    ticks = deployment.wait_for_ticks(
        sensor_ticks,
        since=pipeline.daily_refresh["startTime"],
        until=pipeline.daily_refresh["endTime"],
    )
    assert all(t["status"] == "SKIPPED" and not t["runIds"] for t in ticks), ticks
    assert any("no drift" in (t["skipReason"] or "") for t in ticks), ticks

    plant_drift(stack.data_root)
    _, ticks, report = drift_report_run()
    assert report["drift_detected"] is True
    episode = report["episode"]
    (requested,) = [t for t in ticks if t["runIds"]]
    assert requested["runKeys"] == [f"drift-{episode}"]
    (run_id,) = requested["runIds"]
    retrain = api.run(run_id)
    assert retrain["jobName"] == "retrain"
    assert retrain["tags"]["dagster/sensor_name"] == SENSOR
    api.terminate_run(run_id)  # default settings would train for minutes
    assert deployment.wait_for_run(run_id, timeout=120)["status"] == "CANCELED"

    _, ticks, report = drift_report_run()
    assert report["drift_detected"] is True and report["episode"] == episode
    assert all(not t["runIds"] for t in ticks), ticks
    assert any(episode in (t["skipReason"] or "") for t in ticks), ticks
    assert [r["runId"] for r in api.runs_with_tag("dagster/sensor_name", SENSOR)] == [run_id]


def test_run_failure_reaches_the_alert_webhook(stack: Stack, pipeline: PipelineRuns) -> None:
    failing = pipeline.failing
    assert failing["status"] == "FAILURE"
    alerts = stack.deployment.wait_for(
        "the failure alert",
        lambda: [a for a in stack.alerts if a.get("run_id") == failing["runId"]],
        timeout=120,
    )
    assert alerts[0]["job"] == "retrain"


def test_runs_events_and_ticks_are_in_postgres(stack: Stack, pipeline: PipelineRuns) -> None:
    server = stack.postgres
    succeeded = [r["runId"] for r in (pipeline.features, pipeline.retrain, pipeline.daily_refresh)]
    with (
        psycopg2.connect(
            host=server.host, port=server.port, user=server.user, dbname=server.db_name
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (succeeded,))
        assert dict(cur.fetchall()) == dict.fromkeys(succeeded, "SUCCESS")
        cur.execute(
            "SELECT DISTINCT asset_key FROM event_logs WHERE run_id = %s"
            " AND dagster_event_type = 'ASSET_MATERIALIZATION'",
            (pipeline.daily_refresh["runId"],),
        )
        keys = {row[0] for row in cur.fetchall()}
        assert {'["raw_prices"]', '["features"]', '["drift_report"]', '["predictions"]'} <= keys
        cur.execute(
            "SELECT count(*) FROM job_ticks WHERE tick_body::json ->> 'job_name' = %s", (SCHEDULE,)
        )
        assert cur.fetchone()[0] >= 1


def test_asset_graph_page_shows_the_finpipe_assets(stack: Stack, tmp_path: Path) -> None:
    nodes = stack.deployment.api.asset_nodes()
    keys = {node["assetKey"]["path"][-1] for node in nodes}
    assert {"raw_prices", "features", "model_lstm", "drift_report", "predictions"} <= keys
    groups = {node["groupName"] for node in nodes}
    assert {"ingest", "features", "models", "monitoring", "predictions", "evaluation"} <= groups

    url = f"{stack.deployment.webserver_url}/asset-groups"  # the global asset lineage
    shot = tmp_path / "asset-graph.png"
    command = [
        *chromium_command(tmp_path / "chromium-profile"),
        "--virtual-time-budget=15000",  # the UI renders in JavaScript after loading
        "--window-size=1600,1000",
    ]
    subprocess.run([*command, f"--screenshot={shot}", url], check=True, timeout=120)
    dom = subprocess.run(
        [*command, "--dump-dom", url], check=True, timeout=120, capture_output=True, text=True
    ).stdout
    assert all(f">{group}<" in dom for group in groups), "asset groups missing from the page"
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1000, 1600)
    colours = np.unique(image.reshape(-1, image.shape[2]), axis=0)
    assert len(colours) > 50, "blank screenshot"


def test_mlflow_runs_and_registered_versions_are_in_postgres(
    stack: Stack, pipeline: PipelineRuns
) -> None:
    """The retrain logged its replay folds and serving models as MLflow runs and registered
    a champion version of every served family and of the ensemble, in MLflow's database on
    the same PostgreSQL server; the predictions name those versions."""
    server = stack.postgres
    with (
        psycopg2.connect(
            host=server.host, port=server.port, user=server.user, dbname=MLFLOW_DB
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT name, version FROM model_versions")
        versions = {f"models:/{name}/{version}" for name, version in cur.fetchall()}
        cur.execute("SELECT name, alias FROM registered_model_aliases")
        aliases = set(cur.fetchall())
        cur.execute("SELECT key, value FROM tags WHERE key = 'finpipe.kind'")
        kinds = [value for _, value in cur.fetchall()]
    served = {"finpipe-ridge", "finpipe-hist_gbm", "finpipe-lstm", "finpipe-ensemble"}
    assert {(name, "champion") for name in served} <= aliases
    assert kinds.count("replay_fold") >= 1 and kinds.count("serving") >= 3, kinds
    predictions = ParquetStore(str(stack.data_root)).read("predictions", "latest")
    assert set(predictions["model_version"]) <= versions
    assert (predictions["trained_through"] < predictions["date"]).all()


def test_prediction_history_sensor_records_the_day_and_the_ui_shows_columns(
    stack: Stack, pipeline: PipelineRuns
) -> None:
    api = stack.deployment.api
    latest = api.latest_materialization("predictions")
    day = ParquetStore(str(stack.data_root)).read("predictions", "latest")["date"].max()
    recorded = stack.deployment.wait_for(
        "the prediction history sensor's run",
        lambda: [
            r
            for r in api.runs_with_tag("dagster/partition", str(day.date()))
            if r["jobName"] == "record_prediction_history" and r["status"] == "SUCCESS"
        ],
        timeout=180,
    )
    assert recorded
    history = api.latest_materialization("prediction_history")
    assert history["partition"] == str(day.date())
    columns = [c["name"] for c in latest["metadata"]["dagster/column_schema"]]
    assert columns[-2:] == ["model_version", "trained_through"] and "confidence" in columns
    prices = api.latest_materialization("raw_prices")["metadata"]["dagster/column_schema"]
    assert {"date", "ticker", "adj_close"} <= {c["name"] for c in prices}


def test_the_prediction_service_requests_a_run_the_webserver_shows(
    stack: Stack, pipeline: PipelineRuns, tmp_path: Path
) -> None:
    """`finpipe serve` over the deployment's data root and MLflow database serves the
    predictions and versions the runs made, and an admin key's run request is queued by the
    webserver (then cancelled: default settings would replay for minutes)."""
    deployment = stack.deployment
    secret, entry = create_key("operator", "admin")
    env = deployment.env | {
        "FINPIPE_API_KEYS": entry,
        "FINPIPE_DAGSTER_URL": deployment.webserver_url,
    }
    headers = {"X-API-Key": secret}
    with api_service(tmp_path, env) as (url, _):
        latest = requests.get(
            f"{url}/predictions/latest", headers=headers, params={"model": "ensemble"}, timeout=60
        )
        assert latest.status_code == 200, latest.text
        assert {item["ticker"] for item in latest.json()["items"]} == set(TICKERS)
        models = requests.get(f"{url}/models", headers=headers, timeout=60)
        assert models.status_code == 200, models.text
        champions = {m["component"]: m["champion"]["uri"] for m in models.json()}
        served = {item["model_version"] for item in latest.json()["items"]}
        assert served == {champions["ensemble"]}
        requested = requests.post(f"{url}/runs/evaluate", headers=headers, timeout=60)
        assert requested.status_code == 202, requested.text
        run_id = requested.json()["run_id"]
        status = requests.get(f"{url}/runs/{run_id}", headers=headers, timeout=60).json()
        assert status["job"] == "evaluate" and status["requested_by"] == "operator"
    run = deployment.api.run(run_id)  # straight from the webserver's GraphQL API
    assert run["jobName"] == "evaluate" and run["tags"]["finpipe/requested_by"] == "operator"
    deployment.api.terminate_run(run_id)
    assert deployment.wait_for_run(run_id, timeout=120)["status"] == "CANCELED"
