"""Jobs: named selections of the asset graph."""

import dagster as dg

from finpipe.defs.console import CONSOLE_CONFIG

HISTORY = dg.AssetSelection.assets("prediction_history")
PREDICTIONS = dg.AssetSelection.assets("predictions")
REPLAY = dg.AssetSelection.assets("walk_forward_predictions")
CONSTRUCTION_REPLAY = dg.AssetSelection.assets("portfolio_replay")
# The served portfolio: targets, their risk and the orders (not the replay of the methods).
TARGETS = dg.AssetSelection.groups("portfolio") - CONSTRUCTION_REPLAY

ingest_job = dg.define_asset_job(
    "ingest",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.groups("ingest"),
    description="Refresh the raw data.",
)

features_job = dg.define_asset_job(
    "refresh_features",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.groups("ingest", "features"),
    description="Refresh the raw data, the time plan, features, labels and the model panel.",
)

train_job = dg.define_asset_job(
    "train",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.groups("models"),
    description="Train every served family on the serving window, register the versions, "
    "and fit the serving ensemble from the stored replay.",
)

tune_job = dg.define_asset_job(
    "tune",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.groups("tuning"),
    description="Optuna studies per family on the research period (resumable).",
)

predict_job = dg.define_asset_job(
    "predict",
    config=CONSOLE_CONFIG,
    selection=PREDICTIONS,
    description="Predictions for the newest date from the models that serve now.",
)

evaluate_job = dg.define_asset_job(
    "evaluate",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.groups("evaluation") | CONSTRUCTION_REPLAY,
    description="The walk-forward replay of the served procedure (one step per fold, stored "
    "folds reused), the construction methods replayed on it, and the backtest report.",
)

portfolio_job = dg.define_asset_job(
    "portfolio",
    selection=dg.AssetSelection.groups("portfolio"),
    description="Target weights per construction method, their risk, the orders, and the "
    "methods replayed over the test period with the VaR backtest.",
)

daily_refresh_job = dg.define_asset_job(
    "daily_refresh",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.groups("ingest", "features", "monitoring") | PREDICTIONS | TARGETS,
    description="After the close: new data, features, the drift report, predictions for the "
    "newest date and the portfolios they lead to (targets, risk, orders); no retraining.",
)

retrain_job = dg.define_asset_job(
    "retrain",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.groups("models", "portfolio") | REPLAY | PREDICTIONS,
    description="Bring the replay up to date, retrain every served family through the newest "
    "known labels, refit the serving ensemble, predict, and rebuild the portfolios and the "
    "construction replay.",
)

full_job = dg.define_asset_job(
    "full",
    config=CONSOLE_CONFIG,
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("tuning") - HISTORY,
    description="The whole graph, ingest to report (tuning is its own job; the prediction "
    "history records each predictions date through its sensor).",
)

history_job = dg.define_asset_job(
    "record_prediction_history",
    config=CONSOLE_CONFIG,
    selection=HISTORY,
    description="Record one day's served predictions and fill realised returns.",
)

JOBS = [
    ingest_job,
    features_job,
    train_job,
    tune_job,
    predict_job,
    evaluate_job,
    portfolio_job,
    daily_refresh_job,
    retrain_job,
    full_job,
    history_job,
]
