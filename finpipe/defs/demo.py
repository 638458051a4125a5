"""`make demo`: run the pipeline in-process on the local Dagster instance and summarise it.

Runs land in $DAGSTER_HOME, so `dagster dev` shows them afterwards.
"""

import argparse
import os
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


# The metadata worth a line in the terminal, where an asset has it.
SHOWN = (
    "tickers",
    "rows_added",
    "rows_stored",
    "last_date",
    "feature_count",
    "rank_ic_h1",
    "directional_accuracy_h1",
    "wall_seconds",
    "date",
    "rows",
    "model_version",
    "role",
    "trained_through",
    "folds",
    "strategies",
)


def summarise(result: dg.ExecuteInProcessResult) -> list[str]:
    """One line per materialized asset and per asset check."""
    lines = []
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        meta = {k: v.value for k, v in mat.metadata.items()}
        shown = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in meta.items() if k in SHOWN
        }
        lines.append(f"  asset {mat.asset_key.to_user_string():<24} {shown}")
    checks = result.get_asset_check_evaluations()
    failed = [c for c in checks if not c.passed]
    if checks:
        lines.append(f"  asset checks: {len(checks) - len(failed)} passed, {len(failed)} failed")
    lines += [
        f"    FAILED {c.asset_key.to_user_string()}:{c.check_name} ({c.severity.value})"
        f" {c.description}"
        for c in failed
    ]
    return lines


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
    result = run_job(args.job, definitions, instance)
    history = record_history(result, definitions, instance) if result.success else None
    success = result.success and (history is None or history.success)
    print(
        f"finpipe demo: run {result.run_id} {'succeeded' if success else 'FAILED'}"
        f" in {time.perf_counter() - started:.1f} s"
    )
    print("\n".join(summarise(result)))
    if history is not None:
        print("\n".join(summarise(history)))
    root = default_data_root()
    report = os.path.join(root, "reports", "backtest", "report.html")
    if os.path.exists(report):
        print(f"Backtest report: {report}")
    print(f"Predictions: {os.path.join(root, 'predictions', 'latest.parquet')}")
    home = os.environ.get("DAGSTER_HOME", "<a folder of yours>")
    print(f"Data is under {root}. Browse the runs in the UI with:")
    print(f"  DAGSTER_HOME={home} .venv/bin/dagster dev -m finpipe.definitions")
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
