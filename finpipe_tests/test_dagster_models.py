"""The features, models and tuning assets run end to end through Dagster on synthetic data."""

import json

import dagster as dg
import pandas as pd
import pytest

from finpipe.core.storage import ParquetStore
from finpipe.definitions import build_defs
from finpipe.defs.resources import (
    EvaluationSettings,
    ForecastSettings,
    MarketDataResource,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
)
from finpipe.models import load_model
from finpipe.models.registry import list_models

TINY_TORCH = {"hidden_size": 8, "max_epochs": 2, "samples_per_epoch": 1024, "valid_samples": 512}
TINY = {
    **{f: TINY_TORCH for f in ("lstm", "gru", "transformer", "cnn_lstm")},
    "tft": {**TINY_TORCH, "hidden_size": 8},
    "random_forest": {"n_estimators": 5},
    "hist_gbm": {"max_iter": 10},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    defs = build_defs(
        {
            "market_data": MarketDataResource(
                source="synthetic",
                synthetic_n_tickers=8,
                synthetic_n_days=500,
                synthetic_signal_strength=0.1,
            ),
            "storage": StorageResource(root=str(root)),
            "research": ResearchSettings(
                feature_families=["alpha158", "momentum"], train_fraction=0.7
            ),
            "training": TrainingSettings(
                params_json=json.dumps(TINY), tune_families=["ridge"], tune_trials=3
            ),
            "forecasting": ForecastSettings(calibration_days=60, coverage_every=1, mc_samples=3),
            "evaluation": EvaluationSettings(
                families=["ridge"], retrain_every=50, n_boot=100, portfolio_horizon=1
            ),
        }
    )
    features = defs.resolve_job_def("refresh_features").execute_in_process(raise_on_error=False)
    train = defs.resolve_job_def("train").execute_in_process(raise_on_error=False)
    return defs, root, features, train


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(key)[-1].metadata.items()}


def test_features_asset_records_families_and_passes_checks(trained):
    _, _, features, _ = trained
    assert features.success
    meta = metadata(features, "features")
    assert "alpha158_close" in meta["families_computed"] and meta["feature_count"] > 50
    assert set(meta["nan_share_by_family"]) == set(meta["families_computed"])
    checks = {c.check_name: c.passed for c in features.get_asset_check_evaluations()}
    assert checks["no_infinities"] and checks["no_all_nan_feature"]


def test_every_family_trains_through_its_asset_and_reloads(trained):
    _, root, _, train = trained
    assert train.success
    store = ParquetStore(str(root))
    for family in list_models():
        meta = metadata(train, f"model_{family}")
        assert {"valid_loss", "rank_ic_h1", "directional_accuracy_h20", "device"} <= set(meta)
        assert meta["device"] == "cpu"
        local = root / "reload" / family
        assert store.get_folder(local, "models", family)
        assert load_model(local).horizons == (1, 5, 20)
    lstm = metadata(train, "model_lstm")
    assert lstm["parameter_count"] > 0 and lstm["epochs"] >= 1 and lstm["samples_per_second"] > 0
    assert lstm["training_curve"].startswith("![training curve](data:image/png;base64,")


def test_tuning_stores_best_params_that_models_then_use(trained):
    defs, root, _, _ = trained
    tuned = defs.resolve_job_def("tune").execute_in_process()
    best = metadata(tuned, "tuned_params_table")["best_params"]["ridge"]
    assert "alpha" in best
    assert (root / "optuna" / "studies.db").exists()
    again = defs.resolve_job_def("train").execute_in_process(
        asset_selection=[dg.AssetKey("model_ridge")]
    )
    assert metadata(again, "model_ridge")["params"]["alpha"] == best["alpha"]


def test_predictions_match_the_schema_and_history_keeps_one_copy_per_date(trained):
    defs, root, _, _ = trained
    first = defs.resolve_job_def("predict").execute_in_process()
    second = defs.resolve_job_def("predict").execute_in_process()
    assert first.success and second.success
    latest = pd.read_parquet(root / "predictions" / "latest.parquet")
    assert latest.dtypes.astype(str).to_dict() == {
        "date": "datetime64[ns]",
        "ticker": "str",
        "horizon": "int64",
        "model": "str",
        "prediction": "float64",
        "lower": "float64",
        "upper": "float64",
        "interval_level": "float64",
        "confidence": "float64",
        "model_version": "str",
    }
    assert {"ensemble", "ensemble_weighted", *list_models()} == set(latest["model"])
    assert latest.groupby(["model", "horizon"]).size().eq(8).all()
    assert (
        (latest["lower"] <= latest["prediction"]) & (latest["prediction"] <= latest["upper"])
    ).all()
    history = pd.read_parquet(root / "predictions" / "history")
    assert history["date"].nunique() == 1
    assert len(history) == len(latest)
    meta = metadata(second, "predictions")
    assert "picp" in meta["coverage_ensemble"] and meta["coverage_worst_error"] < 0.5


def test_evaluation_fans_out_folds_and_writes_the_report(trained):
    defs, root, _, _ = trained
    result = defs.resolve_job_def("evaluate").execute_in_process()
    assert result.success
    fold_steps = [
        e.step_key
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS" and "run_walk_forward_fold[" in (e.step_key or "")
    ]
    assert len(fold_steps) == 3  # 150 test dates after train_end, retrained every 50
    oos = pd.read_parquet(root / "evaluation" / "walk_forward_predictions.parquet")
    assert {"ridge", "ensemble"} == set(oos["model"])
    report = root / "reports" / "backtest"
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and "momentum_12_1" in html
    meta = metadata(result, "backtest_report")
    assert "Portfolio performance" in meta["summary"] and "data:image/png" in meta["summary"]
    metrics = json.loads((report / "metrics.json").read_text())
    assert {"performance", "forecast", "by_regime"} <= set(metrics)


def test_drift_report_detects_planted_drift(trained):
    defs, root, _, _ = trained
    store = ParquetStore(str(root))
    original = store.read("features", "features")
    job = defs.resolve_job_def("daily_refresh")
    calm = job.execute_in_process(asset_selection=[dg.AssetKey("drift_report")])
    calm_share = metadata(calm, "drift_report")["drifted_share"]
    recent = original["date"] >= original["date"].drop_duplicates().nlargest(63).min()
    columns = [c for c in original.columns if c not in ("date", "ticker")]
    planted = original.copy()
    planted.loc[recent, columns] = planted.loc[recent, columns] * 3 + 10
    store.write(planted, "features", "features")
    try:
        drifted = job.execute_in_process(asset_selection=[dg.AssetKey("drift_report")])
    finally:
        store.write(original, "features", "features")
    meta = metadata(drifted, "drift_report")
    assert meta["drift_detected"] is True and meta["drifted_share"] > max(0.9, calm_share)
    assert meta["episode"] == str(original["date"].max().date())
