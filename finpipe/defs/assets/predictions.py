"""Group `predictions`: calibrated member and ensemble predictions for the latest date, their
signals and ranking, and the prediction history that tracks live performance."""

import tempfile

import dagster as dg
import pandas as pd

from finpipe.core.contracts import PRICES
from finpipe.core.keys import STACKED_ENSEMBLE, WEIGHTED_ENSEMBLE
from finpipe.core.storage import ParquetStore
from finpipe.data.ingest import read_table
from finpipe.defs.assets.features import labels
from finpipe.defs.assets.models import MODEL_ASSETS, load_research_panel
from finpipe.defs.resources import (
    ForecastSettings,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
)
from finpipe.forecasting.ensemble import updated_weights
from finpipe.forecasting.predictions import (
    fill_realised,
    predictions_table,
    read_prediction_history,
    read_predictions,
    write_prediction_history,
    write_predictions,
)
from finpipe.forecasting.signals import SignalThresholds, rank_universe, signal_table
from finpipe.forecasting.system import (
    calibration_windows,
    evaluate_coverage,
    every_nth_date,
    fit_forecast_system,
)
from finpipe.forecasting.uncertainty import coverage_table, recent_volatility
from finpipe.models import load_model
from finpipe.models.registry import list_models
from finpipe.models.trainer import train_valid_split

GROUP = "predictions"


def load_members(store: ParquetStore) -> dict:
    """Every stored model family (a family whose asset never ran is left out)."""
    members = {}
    for family in list_models():
        with tempfile.TemporaryDirectory() as tmp:
            if store.get_folder(tmp, "models", family):
                members[family] = load_model(tmp)
    if not members:
        raise FileNotFoundError("no trained models are stored: materialize group models first")
    return members


def md_table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=".4f"))


@dg.asset(group_name=GROUP, deps=MODEL_ASSETS, kinds={"parquet"})
def predictions(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    research: ResearchSettings,
    training: TrainingSettings,
    forecasting: ForecastSettings,
) -> dg.MaterializeResult:
    """Latest predictions of every member and both ensembles with conformal intervals."""
    store = storage.store()
    panel, train_end = load_research_panel(store, research)
    members = load_members(store)
    context.log.info("predictions: members %s", sorted(members))
    train, valid = train_valid_split(panel, train_end, training.valid_fraction)
    calibration, evaluation = calibration_windows(panel, train_end, forecasting.calibration_days)
    vol = recent_volatility(read_table(store, "prices", PRICES))
    levels = tuple(forecasting.levels)
    system = fit_forecast_system(
        members, train, valid, calibration, vol, levels, forecasting.mc_samples
    )
    context.log.info("predictions: stacking coefficients %s", system.stack.coefficients)
    coverage = evaluate_coverage(
        system, every_nth_date(evaluation, forecasting.coverage_every), levels
    )
    latest_date = panel.dates[-1]
    points, contributions, scale = system.point_predictions(panel.select(latest_date))
    version = f"train_end={pd.Timestamp(train_end).date()}"
    versions = {name: f"{name}@{version}" for name in points["model"].unique()}
    table = predictions_table(points, scale, system.conformal, forecasting.interval_level, versions)
    path = write_predictions(store, table)
    store.write(contributions, "predictions", "contributions")
    thresholds = SignalThresholds(forecasting.buy_ratio, forecasting.min_return)
    signals = signal_table(table, STACKED_ENSEMBLE, thresholds)
    store.write(signals, "predictions", "signals")
    ranking = rank_universe(table, max(research.horizons), STACKED_ENSEMBLE, thresholds=thresholds)
    store.write(ranking, "predictions", "ranking")
    store.write(coverage, "predictions", "coverage")
    ensemble_cov = coverage[coverage["model"] == STACKED_ENSEMBLE]
    context.log.info(
        "predictions: %d rows for %s written to %s", len(table), latest_date.date(), path
    )
    return dg.MaterializeResult(
        metadata={
            "date": dg.MetadataValue.text(str(latest_date.date())),
            "rows": dg.MetadataValue.int(len(table)),
            "models": dg.MetadataValue.json(sorted(table["model"].unique())),
            "coverage_ensemble": md_table(
                ensemble_cov[["horizon", "level", "n", "picp", "coverage_error", "pinaw"]]
            ),
            "coverage_worst_error": dg.MetadataValue.float(
                float(coverage["coverage_error"].abs().max())
            ),
            "stacking_coefficients": dg.MetadataValue.json(system.stack.coefficients),
            "validation_weights": dg.MetadataValue.json(system.weights),
            "signals": dg.MetadataValue.json(
                signals.groupby("horizon")["signal"]
                .value_counts()
                .unstack(fill_value=0)
                .to_dict(orient="index")
            ),
            "ranking": md_table(
                ranking[["rank", "ticker", "prediction", "lower", "upper", "confidence", "signal"]]
            ),
            "path": dg.MetadataValue.path(path),
        }
    )


@dg.asset(group_name=GROUP, deps=[predictions, labels], kinds={"parquet"})
def prediction_history(
    context: dg.AssetExecutionContext, storage: StorageResource, forecasting: ForecastSettings
) -> dg.MaterializeResult:
    """Each day's predictions, one file per date (rewriting a date replaces it), with
    realised returns filled in once known; live coverage and weights updated from them."""
    store = storage.store()
    latest = read_predictions(store)
    paths = write_prediction_history(store, latest)
    filled = fill_realised(store, store.read("features", "labels"))
    history = read_prediction_history(store)
    realised = history[history["realised_return"].notna()]
    metadata = {
        "dates": dg.MetadataValue.int(history["date"].nunique()),
        "rows": dg.MetadataValue.int(len(history)),
        "rows_realised_filled": dg.MetadataValue.int(filled),
        "written": dg.MetadataValue.json(paths),
    }
    if not realised.empty:
        live = coverage_table(realised, target="realised_return")
        metadata["live_coverage"] = md_table(live)
        prior = store.read("predictions", "weights")
        prior_weights = (
            dict(zip(prior["model"], prior["weight"], strict=True)) if prior is not None else {}
        )
        members = realised[~realised["model"].isin([STACKED_ENSEMBLE, WEIGHTED_ENSEMBLE])]
        weights = updated_weights(
            prior_weights or dict.fromkeys(members["model"].unique(), 1.0), members
        )
        store.write(
            pd.DataFrame({"model": list(weights), "weight": list(weights.values())}),
            "predictions",
            "weights",
        )
        metadata["updated_weights"] = dg.MetadataValue.json(weights)
    context.log.info(
        "prediction_history: %d dates, %d realised rows", history["date"].nunique(), len(realised)
    )
    return dg.MaterializeResult(metadata=metadata)


PREDICTION_ASSETS = [predictions, prediction_history]
