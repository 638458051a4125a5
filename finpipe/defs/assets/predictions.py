"""Group `predictions`: the served predictions for the newest date (champion members, their
stacked ensemble and the challengers shadowing them, with calibrated intervals), signals and
ranking; and the daily-partitioned history that records each day's served predictions with
their realised returns once known."""

from datetime import timedelta

import dagster as dg
import pandas as pd

from finpipe.core.contracts import PREDICTION_HISTORY, PREDICTIONS
from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.data.ingest import universe_prices
from finpipe.defs.assets.evaluation import read_replay
from finpipe.defs.assets.features import labels, model_panel, time_plan
from finpipe.defs.assets.ingest import raw_prices
from finpipe.defs.assets.models import MODEL_ASSETS, serving_ensemble
from finpipe.defs.metadata import contract_schema, md_table
from finpipe.defs.resources import (
    ForecastSettings,
    RegistryResource,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
)
from finpipe.evaluation.backtest import coverage_by_year
from finpipe.forecasting.predictions import (
    fill_realised,
    has_history,
    read_prediction_history,
    read_predictions,
    write_prediction_history,
    write_predictions,
)
from finpipe.forecasting.signals import SignalThresholds, rank_universe, signal_table
from finpipe.forecasting.system import load_served, serve
from finpipe.forecasting.uncertainty import recent_volatility

GROUP = "predictions"
NEW_YORK = "America/New_York"
HISTORY_PARTITIONS = dg.DailyPartitionsDefinition(start_date="1990-01-01", end_offset=1)


@dg.asset(
    group_name=GROUP,
    deps=[model_panel, time_plan, raw_prices, serving_ensemble, *MODEL_ASSETS],
    kinds={"parquet"},
    code_version="3",
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 20 * * 1-5", lower_bound_delta=timedelta(hours=2), timezone=NEW_YORK
    ),
)
def predictions(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    research: ResearchSettings,
    training: TrainingSettings,
    forecasting: ForecastSettings,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    """Predictions for the newest feature date from the models that serve now (the registry's
    champions and challengers, and the champion ensemble), with conformal intervals, versions
    and `trained_through`; signals and the ranking beside them. Expected by 20:00 New York on
    weekdays (the daily refresh runs at 18:30)."""
    store = storage.store()
    panel = storage.read_panel()
    newest = panel.dates[-1]
    served = load_served(registry.registry(storage), sorted(training.families))
    table = serve(
        served.champions,
        served.challengers,
        panel.select(newest),
        recent_volatility(universe_prices(store)),
        served.ensemble,
        forecasting.interval_level,
        served.versions,
        served.trained_through,
        forecasting.mc_samples,
    )
    path = write_predictions(store, table)
    thresholds = SignalThresholds(forecasting.buy_ratio, forecasting.min_return)
    signals = signal_table(table, STACKED_ENSEMBLE, thresholds)
    store.write(signals, "predictions", "signals")
    ranking = rank_universe(table, max(research.horizons), STACKED_ENSEMBLE, thresholds=thresholds)
    store.write(ranking, "predictions", "ranking")
    replay = read_replay(storage)
    recent = replay[replay["date"] >= served.ensemble.window.calibration_start]
    coverage = coverage_by_year(
        recent.merge(panel.labels_frame(), on=["date", "ticker", "horizon"])
    )
    context.log.info(
        "predictions: %d rows for %s from %s written to %s",
        len(table),
        newest.date(),
        sorted(set(served.versions.values())),
        path,
    )
    through = table.groupby("model")["trained_through"].max().dt.date.astype(str)
    return dg.MaterializeResult(
        metadata={
            "date": dg.MetadataValue.text(str(newest.date())),
            "rows": dg.MetadataValue.int(len(table)),
            "models": dg.MetadataValue.json(sorted(table["model"].unique())),
            "model_versions": dg.MetadataValue.json(served.versions),
            "trained_through": dg.MetadataValue.json(through.to_dict()),
            "challengers": dg.MetadataValue.json(sorted(served.challengers)),
            "stacking_weights": dg.MetadataValue.json(
                served.ensemble.stack.coefficients
                if served.ensemble.stack is not None
                else "equal weights"
            ),
            "recent_coverage": md_table(coverage),
            "signals": dg.MetadataValue.json(
                signals.groupby("horizon")["signal"]
                .value_counts()
                .unstack(fill_value=0)
                .to_dict(orient="index")
            ),
            "ranking": md_table(
                ranking[["rank", "ticker", "prediction", "lower", "upper", "confidence", "signal"]]
            ),
            **contract_schema(PREDICTIONS),
            "path": dg.MetadataValue.path(path),
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[predictions, labels],
    kinds={"parquet"},
    partitions_def=HISTORY_PARTITIONS,
    code_version="2",
)
def prediction_history(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The predictions served on the partition's date, one file per date (re-running a date
    replaces it), and the realised returns of that date and every earlier one whose labels
    are now known. The `record_prediction_history` sensor runs the partition of each new
    predictions date; a backfill re-fills realised returns."""
    store = storage.store()
    day = pd.Timestamp(context.partition_key)
    latest = read_predictions(store)
    written = []
    if latest is not None and (latest["date"] == day).all():
        written = write_prediction_history(store, latest)
    elif not has_history(store, day):
        raise dg.Failure(
            f"no predictions were served for {day.date()}: the latest are for "
            f"{'nothing yet' if latest is None else latest['date'].max().date()}; past "
            "out-of-sample predictions are in the replay (walk_forward_predictions)"
        )
    filled = fill_realised(store, store.read("features", "labels"), through=day)
    day_rows = read_prediction_history(store, start=day, end=day)
    context.log.info(
        "prediction_history %s: %d rows, %d realised returns filled up to it",
        day.date(),
        len(day_rows),
        filled,
    )
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(len(day_rows)),
            "realised_rows": dg.MetadataValue.int(int(day_rows["realised_return"].notna().sum())),
            "rows_realised_filled": dg.MetadataValue.int(filled),
            "written": dg.MetadataValue.json(written),
            **contract_schema(PREDICTION_HISTORY),
        }
    )


PREDICTION_ASSETS = [predictions, prediction_history]
