"""`make demo`: run the pipeline in-process on the local Dagster instance and summarise it.

Runs land in $DAGSTER_HOME, so `dagster dev` shows them afterwards.
"""

import argparse
import os
import re
import sys
import time

import dagster as dg

from finpipe.definitions import build_defs, defs
from finpipe.defs.jobs import history_job
from finpipe.defs.resources import MarketDataResource, default_data_root


def run_job(
    job_name: str,
    definitions: dg.Definitions = defs,
    instance: dg.DagsterInstance | None = None,
    partition_key: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute a job on the persistent instance of DAGSTER_HOME (ephemeral when unset)."""
    if instance is None:
        instance = (
            dg.DagsterInstance.get()
            if os.environ.get("DAGSTER_HOME")
            else dg.DagsterInstance.ephemeral()
        )
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    return definitions.resolve_job_def(job_name).execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False, partition_key=partition_key
    )


def record_history(
    result: dg.ExecuteInProcessResult, definitions: dg.Definitions, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult | None:
    """What the `record_prediction_history` sensor does under the daemon: record the day the
    run's predictions are for (None when the run made no predictions)."""
    found = result.asset_materializations_for_node("predictions")
    if not found:
        return None
    day = str(found[-1].metadata["date"].value)
    return run_job(history_job.name, definitions, instance, partition_key=day)


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark FAILED the runs this instance still lists as STARTED whose process is gone (a
    run killed with SIGKILL cannot say so itself); returns their ids. Under the daemon,
    dagster.yaml's run monitoring does this for deployed runs."""
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pids = [
            int(match.group(1))
            for record in instance.all_logs(run.run_id)
            if (match := PID.search(record.message or ""))
        ]
        if pids and not any(process_alive(pid) for pid in set(pids)):
            instance.report_run_failed(run, f"its process (pid {pids[-1]}) is gone: killed?")
            reaped.append(run.run_id)
    return reaped


PID = re.compile(r"\(pid: (\d+)\)")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", default="full", help="job to run (default: full, the whole graph)")
    parser.add_argument(
        "--universe",
        default="",
        help="bundled universe preset (sp500_20, the default; bokeh_ohlcv) or tickers; "
        "give each universe its own FINPIPE_DATA_ROOT",
    )
    args = parser.parse_args(argv)
    definitions = defs
    if args.universe:
        market = MarketDataResource(source="bundled", universe=args.universe)
        definitions = build_defs({"market_data": market})
    universe = args.universe or "the default universe"
    print(f"finpipe demo: job '{args.job}' on the bundled data, {universe} (offline)")
    print(f"  DAGSTER_HOME={os.environ.get('DAGSTER_HOME', '(unset: ephemeral)')}")
    print(f"  data root   ={default_data_root()}")
    started = time.perf_counter()
    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    for run_id in reap_dead_runs(instance):
        print(f"  run {run_id} was left STARTED by a killed process: marked FAILED")
    result = run_job(args.job, definitions, instance)
    history = record_history(result, definitions, instance) if result.success else None
    success = result.success and (history is None or history.success)
    print(
        f"finpipe demo: run {result.run_id} {'succeeded' if success else 'FAILED'}"
        f" in {time.perf_counter() - started:.1f} s (the summaries above list what changed)"
    )
    root = default_data_root()
    report = os.path.join(root, "reports", "backtest", "report.html")
    if os.path.exists(report):
        print(f"Backtest report: {report}")
    print(f"Predictions: {os.path.join(root, 'predictions', 'latest.parquet')}")
    portfolio = os.path.join(root, "portfolio")
    if os.path.exists(portfolio):
        print(f"Portfolios (target weights, risk report, orders): {portfolio}")
    home = os.environ.get("DAGSTER_HOME", "<a folder of yours>")
    print(f"Data is under {root}. Browse the runs in the UI with:")
    print(f"  DAGSTER_HOME={home} .venv/bin/dagster dev -m finpipe.definitions")
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
