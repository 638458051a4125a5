"""Jobs: named selections of the asset graph."""

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest", selection=dg.AssetSelection.groups("ingest"), description="Refresh the raw data."
)

features_job = dg.define_asset_job(
    "refresh_features",
    selection=dg.AssetSelection.groups("ingest", "features"),
    description="Refresh the raw data, then recompute features and labels.",
)

train_job = dg.define_asset_job(
    "train",
    selection=dg.AssetSelection.groups("models"),
    description="Train every model family on the stored features and labels.",
)

tune_job = dg.define_asset_job(
    "tune",
    selection=dg.AssetSelection.groups("tuning"),
    description="Optuna studies per family (resumable); model assets use the best parameters.",
)

predict_job = dg.define_asset_job(
    "predict",
    selection=dg.AssetSelection.groups("predictions"),
    description="Calibrated ensemble predictions from the stored models, and their history.",
)

evaluate_job = dg.define_asset_job(
    "evaluate",
    selection=dg.AssetSelection.groups("evaluation"),
    description="Walk-forward backtest (one step per fold) and the report.",
)

full_job = dg.define_asset_job(
    "full",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("tuning"),
    description="The whole graph, ingest to report (tuning is its own job).",
)

daily_refresh_job = dg.define_asset_job(
    "daily_refresh",
    selection=dg.AssetSelection.groups("ingest", "features", "monitoring", "predictions"),
    description="After the close: new data, features, drift report and predictions; no retraining.",
)

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.groups("models", "predictions"),
    description="Retrain every model family, then the ensemble and predictions.",
)

JOBS = [
    ingest_job,
    features_job,
    train_job,
    tune_job,
    predict_job,
    evaluate_job,
    daily_refresh_job,
    retrain_job,
    full_job,
]
