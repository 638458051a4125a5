"""Schedules: the daily refresh after the US close on NYSE trading days, a weekly evaluation.

`FINPIPE_DAILY_REFRESH_CRON` overrides the daily cron (deployment tests tick it every minute).
"""

import os

import dagster as dg

from finpipe.core.calendar import closed_reason
from finpipe.defs.jobs import daily_refresh_job, evaluate_job

NEW_YORK = "America/New_York"
DAILY_REFRESH_CRON = os.environ.get("FINPIPE_DAILY_REFRESH_CRON", "30 18 * * 1-5")


@dg.schedule(
    job=daily_refresh_job,
    cron_schedule=DAILY_REFRESH_CRON,
    execution_timezone=NEW_YORK,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_refresh_schedule(context: dg.ScheduleEvaluationContext):
    """Refresh after the close of each NYSE trading day; skip weekends and holidays."""
    day = context.scheduled_execution_time.date()
    reason = closed_reason(day)
    if reason is not None:
        return dg.SkipReason(f"{day} is not a NYSE trading day ({reason}): nothing to refresh")
    return dg.RunRequest(run_key=f"daily_refresh-{day}", tags={"finpipe/trading_day": str(day)})


@dg.schedule(
    job=evaluate_job,
    cron_schedule="0 8 * * 6",
    execution_timezone=NEW_YORK,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def weekly_evaluate_schedule(context: dg.ScheduleEvaluationContext):
    """The walk-forward backtest and report, Saturday mornings."""
    week = context.scheduled_execution_time.strftime("%G-W%V")
    return dg.RunRequest(run_key=f"evaluate-{week}")


SCHEDULES = [daily_refresh_schedule, weekly_evaluate_schedule]
