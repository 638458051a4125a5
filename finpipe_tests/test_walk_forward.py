"""The walk-forward replay is the served procedure: every date predicted once by the fold
that covers it, stacking and calibration only from labelled out-of-sample history, and the
production procedure run on data truncated at a retrain date gives the replay's predictions
for that date (exactly for tabular families, to float tolerance for a PyTorch one)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from finpipe.core.contracts import LABELS, REPLAY, schema_violations
from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE
from finpipe.core.time_plan import PlanSettings, build_time_plan
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.evaluation.walk_forward import (
    fold_fingerprint,
    fold_forecasts,
    replay_version,
    run_replay,
)
from finpipe.features.config import FeatureConfig
from finpipe.features.engine import build_features
from finpipe.features.labels import forward_returns
from finpipe.forecasting.system import fit_ensemble, fold_windows, known_history, serve
from finpipe.forecasting.uncertainty import recent_volatility
from finpipe.models.panel_data import PanelData
from finpipe.models.trainer import (
    load_fits,
    same_fit,
    save_fits,
    train_family,
    window_views,
)

torch.set_num_threads(1)

CONFIG = SyntheticConfig(n_tickers=12, n_days=700, seed=3, signal_strength=0.1)
SETTINGS = PlanSettings(
    horizons=(1, 5),
    embargo=5,
    retrain_every=100,
    valid_days=60,
    stack_days=100,
    calibration_days=80,
    min_train_days=150,
)
TABULAR = {"ridge": {}, "hist_gbm": {"max_iter": 20, "max_train_samples": 4000}}
TORCH = {"lstm": {"hidden_size": 8, "window": 5, "max_epochs": 2, "samples_per_epoch": 512}}


def frames(prices: pd.DataFrame) -> tuple[PanelData, pd.DataFrame]:
    features = build_features(prices, config=FeatureConfig(families=("momentum",))).frame
    labels = forward_returns(prices, SETTINGS.horizons, SETTINGS.execution_lag)
    return PanelData.from_frames(features, labels), labels[list(LABELS.required)]


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return synthetic_panel(CONFIG)


@pytest.fixture(scope="module")
def full(prices: pd.DataFrame) -> dict:
    panel, labels = frames(prices)
    plan = build_time_plan(panel.dates, SETTINGS, panel.dates[400])
    families = {**TABULAR, **TORCH}
    rows, fits = run_replay(panel, plan, families, labels, recent_volatility(prices), mc_samples=0)
    return {"panel": panel, "labels": labels, "plan": plan, "rows": rows, "fits": fits}


def test_replay_predicts_every_date_once_per_model(full: dict) -> None:
    rows, plan, panel = full["rows"], full["plan"], full["panel"]
    assert schema_violations(rows, REPLAY) == []
    first = plan.folds[0].as_of
    dates = panel.dates[panel.dates >= first]
    counts = rows.groupby(["model", "horizon"])["date"].agg(["nunique", "size"])
    assert (counts["nunique"] == len(dates)).all()
    assert (counts["size"] == len(dates) * CONFIG.n_tickers).all()
    assert set(rows["model"]) == {"ridge", "hist_gbm", "lstm", STACKED_ENSEMBLE}
    for window in plan.folds:
        block = rows[(rows["date"] >= window.predict_start) & (rows["date"] <= window.predict_end)]
        assert set(block["fold"]) == {window.name}
        assert set(block["model_version"]) == {replay_version(window.name)}
        assert (block["trained_through"] == window.trained_through).all()
        assert (block["trained_through"] < block["date"]).all()


def test_stacking_and_calibration_only_from_known_out_of_sample_history(full: dict) -> None:
    fits, rows, labels = full["fits"], full["rows"], full["labels"]
    first, later = fits[0], fits[1:]
    assert first.stack is None and first.conformal is None and len(first.notes) == 2
    assert np.isinf(rows.loc[rows["fold"] == first.window.name, "upper"]).all()
    for fit in later:
        known = known_history(rows, labels, fit.window)
        assert known["date"].max() < fit.window.label_cutoff
        ends = known.merge(labels, on=[*ROW_KEY, "fwd_return"])["label_end"]
        assert ends.max() < fit.window.label_cutoff
        assert fit.stack is not None and fit.conformal is not None
        assert fit.history["calibration_dates"] <= SETTINGS.calibration_days
    test = rows[(rows["date"] >= full["plan"].test_start) & (rows["model"] == STACKED_ENSEMBLE)]
    merged = test.merge(labels, on=list(ROW_KEY))
    covered = (merged["fwd_return"] >= merged["lower"]) & (merged["fwd_return"] <= merged["upper"])
    assert abs(covered.mean() - 0.8) < 0.05


def test_production_on_truncated_data_replays_the_fold_that_starts_there(
    prices: pd.DataFrame, full: dict
) -> None:
    """Serve as production would on the data known at the close of a retrain date: the
    members trained on the serving window, the ensemble and calibration fitted from the
    replay's history, then predict that date. The replay's fold predicted the same: tabular
    members exactly, the PyTorch member (and what combines it) to float tolerance."""
    fold = full["plan"].folds[3]
    truncated = prices[prices["date"] <= fold.as_of]
    panel, labels = frames(truncated)
    plan = build_time_plan(panel.dates, SETTINGS, full["plan"].research_end)
    same = ("name", "predict_end")
    assert {k: v for k, v in plan.serving.to_dict().items() if k not in same} == {
        k: v for k, v in fold.to_dict().items() if k not in same
    }
    families = {**TABULAR, **TORCH}
    vol = recent_volatility(truncated)
    history, _ = run_replay(panel, plan, families, labels, vol, mc_samples=0)
    train, valid = window_views(panel, plan.serving)
    champions = {f: train_family(f, train, valid, dict(p)).model for f, p in families.items()}
    fit = fit_ensemble(
        known_history(history, labels, plan.serving),
        plan.serving,
        sorted(families),
        fold_windows(plan.folds),
    )
    names = [*sorted(families), STACKED_ENSEMBLE]
    served = serve(
        champions,
        {},
        panel.select(fold.as_of),
        vol,
        fit,
        0.8,
        dict.fromkeys(names, "serving"),
        dict.fromkeys(sorted(families), plan.serving.trained_through),
        mc_samples=0,
    )
    key = [*ROW_KEY, "model"]
    replayed = full["rows"][full["rows"]["date"] == fold.as_of]
    mine = served.sort_values(key).reset_index(drop=True)
    theirs = replayed.sort_values(key).reset_index(drop=True)
    assert len(mine) == CONFIG.n_tickers * len(SETTINGS.horizons) * len(names)
    pd.testing.assert_frame_equal(mine[key], theirs[key])
    assert (mine["trained_through"] == theirs["trained_through"]).all()
    tabular = mine["model"].isin(TABULAR).to_numpy()
    np.testing.assert_array_equal(
        mine.loc[tabular, "prediction"], theirs.loc[tabular, "prediction"]
    )
    for column in ("prediction", "lower", "upper", "confidence"):
        np.testing.assert_allclose(mine[column], theirs[column], rtol=1e-6, atol=1e-9)
    replayed_fit = full["fits"][3]
    assert fit.history == replayed_fit.history and not replayed_fit.stack.fallback.get(1)
    for h, weights in replayed_fit.stack.coefficients.items():
        for model, weight in weights.items():
            assert fit.stack.coefficients[h][model] == pytest.approx(weight, rel=1e-4, abs=1e-6)


def test_fold_fingerprint_ignores_how_far_the_fold_has_predicted(full: dict) -> None:
    window = full["plan"].folds[-1]
    names = full["panel"].feature_names
    base = fold_fingerprint(window, TABULAR, names, {"code": "x"})
    extended = window.__class__(**{**window.__dict__, "predict_end": pd.Timestamp("2099-01-01")})
    assert fold_fingerprint(extended, TABULAR, names, {"code": "x"}) == base
    assert fold_fingerprint(window, {"ridge": {"alpha": 1.0}}, names, {"code": "x"}) != base
    assert fold_fingerprint(window, TABULAR, names, {"code": "y"}) != base
    assert fold_fingerprint(full["plan"].folds[0], TABULAR, names, {"code": "x"}) != base


def test_a_fold_reuses_fits_of_its_window_and_predicts_as_if_it_trained_them(
    full: dict, prices: pd.DataFrame, tmp_path
) -> None:
    """The research decisions fit the first test fold's window; that fold reuses the stored
    fits (matched by family and parameters) and predicts exactly what training gives."""
    panel, window = full["panel"], full["plan"].research_window
    train, valid = window_views(panel, window)
    runs = {family: train_family(family, train, valid, dict(p)) for family, p in TABULAR.items()}
    save_fits(runs, tmp_path / "fits", {"window": window.to_dict()})
    facts, loaded = load_fits(tmp_path / "fits")
    assert facts == {"window": window.to_dict()} and set(loaded) == set(TABULAR)
    assert same_fit(loaded["hist_gbm"].model, "hist_gbm", TABULAR["hist_gbm"], panel.horizons)
    assert not same_fit(loaded["hist_gbm"].model, "hist_gbm", {"max_iter": 21}, panel.horizons)
    assert not same_fit(loaded["ridge"].model, "hist_gbm", TABULAR["hist_gbm"], panel.horizons)
    assert load_fits(tmp_path / "nothing") == ({}, {})

    vol = recent_volatility(prices)
    reused, used = fold_forecasts(window, panel, TABULAR, vol, fitted=loaded)
    trained, _ = fold_forecasts(window, panel, TABULAR, vol)
    assert used["hist_gbm"] is loaded["hist_gbm"]
    pd.testing.assert_frame_equal(reused.points, trained.points)
