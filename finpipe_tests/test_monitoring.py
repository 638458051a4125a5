"""Drift statistics, the schedules and the sensors, with Dagster's contexts."""

import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar
from zoneinfo import ZoneInfo

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from finpipe.definitions import defs
from finpipe.defs.schedules import daily_refresh_schedule, weekly_evaluate_schedule
from finpipe.defs.sensors import (
    drift_retrain_sensor,
    record_prediction_history,
    run_failure_alert,
)
from finpipe.monitoring.drift import (
    DriftThresholds,
    assess_drift,
    drift_episode,
    feature_drift,
    population_stability_index,
    psi_band,
)

NY = ZoneInfo("America/New_York")


def test_psi_hand_worked_example():
    reference = np.arange(100, dtype=float)  # deciles: 10 values per bin
    current = np.full(50, 95.0)  # everything lands in the top decile
    floor, r = 1e-4, 0.1
    expected = 9 * (floor - r) * np.log(floor / r) + (1.0 - r) * np.log(1.0 / r)
    assert population_stability_index(reference, current) == pytest.approx(expected)
    assert population_stability_index(reference, reference.copy()) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("psi", "band"), [(0.0, "stable"), (0.099, "stable"), (0.1, "moderate"), (0.25, "significant")]
)
def test_psi_bands(psi, band):
    assert psi_band(psi) == band


def test_ks_statistic_against_the_empirical_cdfs():
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    cur = pd.DataFrame({"x": [3.0, 4.0, 5.0, 6.0]})
    row = feature_drift(ref, cur, ["x"]).iloc[0]
    grid = np.array([1, 2, 3, 4, 5, 6.0])
    ecdf = lambda v: np.searchsorted(np.sort(v), grid, side="right") / len(v)  # noqa: E731
    assert row["ks_statistic"] == pytest.approx(np.abs(ecdf(ref.x) - ecdf(cur.x)).max())


def drift_table(n_drifted: int, n: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": [f"f{i}" for i in range(n)],
            "psi": [0.5] * n_drifted + [0.01] * (n - n_drifted),
            "ks_pvalue": [1e-6] * n_drifted + [0.5] * (n - n_drifted),
        }
    )


NO_LIVE = pd.DataFrame(columns=["model", "horizon", "dates", "live_rank_ic", "validation_rank_ic"])


def test_feature_drift_threshold_both_sides():
    thresholds = DriftThresholds(max_drifted_share=0.2)
    assert not assess_drift(drift_table(2), NO_LIVE, thresholds).detected  # 20%: not above
    verdict = assess_drift(drift_table(3), NO_LIVE, thresholds)
    assert verdict.detected and "30% of features drifted" in verdict.reasons[0]


def test_live_ic_drop_threshold_both_sides():
    live = pd.DataFrame(
        {
            "model": ["ridge", "lstm", "gru"],
            "horizon": [1, 1, 1],
            "dates": [30, 30, 5],
            "live_rank_ic": [0.011, -0.05, -0.5],
            "validation_rank_ic": [0.04, 0.04, 0.04],
        }
    )
    verdict = assess_drift(drift_table(0), live, DriftThresholds(ic_drop=0.03, min_live_dates=20))
    assert verdict.detected and len(verdict.reasons) == 1 and verdict.reasons[0].startswith("lstm")


def test_drift_episodes_persist_while_drift_lasts():
    assert drift_episode(None, True, pd.Timestamp("2026-11-20")) == "2026-11-20"
    assert drift_episode("2026-11-20", True, pd.Timestamp("2026-11-23")) == "2026-11-20"
    assert drift_episode("2026-11-20", False, pd.Timestamp("2026-11-24")) is None


def schedule_at(schedule, when: datetime):
    return schedule(dg.build_schedule_context(scheduled_execution_time=when))


def test_daily_refresh_skips_holidays_and_weekends_with_a_reason():
    thanksgiving = schedule_at(daily_refresh_schedule, datetime(2026, 11, 26, 18, 30, tzinfo=NY))
    assert isinstance(thanksgiving, dg.SkipReason)
    assert thanksgiving.skip_message == (
        "2026-11-26 is not a NYSE trading day (Thanksgiving): nothing to refresh"
    )
    juneteenth = schedule_at(daily_refresh_schedule, datetime(2026, 6, 19, 18, 30, tzinfo=NY))
    assert "(Juneteenth National Independence Day)" in juneteenth.skip_message
    sandy = schedule_at(daily_refresh_schedule, datetime(2012, 10, 30, 18, 30, tzinfo=NY))
    assert "(ad-hoc closure)" in sandy.skip_message
    saturday = schedule_at(daily_refresh_schedule, datetime(2026, 11, 21, 18, 30, tzinfo=NY))
    assert "weekend" in saturday.skip_message
    friday = schedule_at(daily_refresh_schedule, datetime(2026, 11, 27, 18, 30, tzinfo=NY))
    assert isinstance(friday, dg.RunRequest) and friday.run_key == "daily_refresh-2026-11-27"
    assert daily_refresh_schedule.execution_timezone == "America/New_York"
    assert daily_refresh_schedule.cron_schedule == "30 18 * * 1-5"


def test_weekly_evaluate_has_one_run_key_per_week():
    run = schedule_at(weekly_evaluate_schedule, datetime(2026, 11, 21, 8, 0, tzinfo=NY))
    assert run.run_key == "evaluate-2026-W47"


def report_drift(instance: dg.DagsterInstance, detected: bool, episode: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key="drift_report",
            metadata={"drift_detected": detected, "episode": episode, "reasons": ["planted"]},
        )
    )


def tick(instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return drift_retrain_sensor(context), context.cursor


def test_one_drift_episode_triggers_one_retrain():
    with dg.instance_for_test() as instance:
        result, cursor = tick(instance, None)
        assert "no new drift_report" in result.skip_message
        report_drift(instance, True, "2026-11-20")
        result, cursor = tick(instance, cursor)
        assert isinstance(result, dg.RunRequest) and result.run_key == "drift-2026-11-20"
        result, cursor = tick(instance, cursor)
        assert "no new drift_report" in result.skip_message
        report_drift(instance, True, "2026-11-20")
        result, cursor = tick(instance, cursor)
        assert "already triggered" in result.skip_message
        report_drift(instance, False, "")
        result, cursor = tick(instance, cursor)
        assert "no drift above the thresholds" in result.skip_message
        report_drift(instance, True, "2026-12-01")
        result, cursor = tick(instance, cursor)
        assert result.run_key == "drift-2026-12-01"


@dg.op
def failing_step() -> None:
    raise RuntimeError("planted failure")


@dg.job
def failing_job() -> None:
    failing_step()


class Capture(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Capture.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args) -> None:
        return


def test_run_failure_sensor_posts_to_the_webhook(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    monkeypatch.setenv("FINPIPE_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    with dg.instance_for_test() as instance:
        result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
        failure = next(
            e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE
        )
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=failure,
        ).for_run_failure()
        run_failure_alert(context)
    thread.join(timeout=10)
    server.server_close()
    assert Capture.received and Capture.received[0]["run_id"] == result.run_id
    assert Capture.received[0]["job"] == "failing_job"


def test_history_sensor_requests_the_partition_of_each_predictions_date():
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="predictions", metadata={"date": "2022-12-28"})
        )
        context = dg.build_sensor_context(instance=instance, definitions=defs)
        (request,) = record_prediction_history(context)
        assert request.partition_key == "2022-12-28"
        assert request.run_key.startswith("history-2022-12-28-")
        again = dg.build_sensor_context(instance=instance, definitions=defs, cursor=context.cursor)
        (skip,) = record_prediction_history(again)
        assert isinstance(skip, dg.SkipReason)  # the same materialization: nothing new
