"""The Forecaster contract, for every registered family: fit/predict/save/load round trip,
all horizons at once, metrics and history, samples and quantiles where supported, seeded
determinism, and truncation invariance (predictions for date t ignore rows after t)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from finpipe.models import (
    Forecaster,
    NotFittedError,
    PanelData,
    create_model,
    list_models,
    load_model,
    time_split,
)
from finpipe.models.sequence import SequenceForecaster
from finpipe_tests.synthetic_model_data import model_frames, with_factor_columns

torch.set_num_threads(1)

TINY_TORCH = {
    "hidden_size": 8,
    "window": 8,
    "max_epochs": 2,
    "samples_per_epoch": 512,
    "batch_size": 128,
    "valid_samples": 256,
}
TINY = {
    "lstm": {**TINY_TORCH, "bidirectional": True, "attention": True},
    "gru": TINY_TORCH,
    "transformer": {**TINY_TORCH, "n_heads": 2, "positional": "sinusoidal"},
    "cnn_lstm": {**TINY_TORCH, "conv_channels": 4},
    "tft": {**TINY_TORCH, "n_heads": 2},
    "ridge": {},
    "elastic_net": {},
    "random_forest": {"n_estimators": 8, "max_samples": 500, "min_samples_leaf": 20},
    "hist_gbm": {"max_iter": 20, "quantiles": [0.1, 0.9]},
    "momentum_factor": {},
    "reversal_factor": {},
    "low_vol_factor": {},
}


def frames(**kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`model_frames` plus the columns the factor members read."""
    features, labels = model_frames(**kwargs)
    return with_factor_columns(features), labels


def test_registry_lists_every_family() -> None:
    assert list_models() == [
        "lstm",
        "gru",
        "transformer",
        "cnn_lstm",
        "tft",
        "ridge",
        "elastic_net",
        "random_forest",
        "hist_gbm",
        "momentum_factor",
        "reversal_factor",
        "low_vol_factor",
    ]
    assert set(TINY) == set(list_models())
    with pytest.raises(KeyError, match="registered models"):
        create_model("xgboost")
    with pytest.raises(TypeError, match="hidden_sise"):
        create_model("lstm", hidden_sise=3)


@pytest.fixture(scope="module")
def split() -> tuple[PanelData, PanelData, PanelData]:
    features, labels = frames(n_tickers=6, n_days=260, seed=5, signal_strength=0.1)
    panel = PanelData.from_frames(features, labels)
    rest, test = time_split(panel, valid_fraction=0.2)
    train, valid = time_split(rest, valid_fraction=0.25)
    return train, valid, test


@pytest.fixture(scope="module")
def fitted(split: tuple[PanelData, PanelData, PanelData]) -> dict[str, Forecaster]:
    train, valid, _ = split
    models = {}
    for name in list_models():
        records: list[dict] = []
        model = create_model(name, horizons=[1, 5, 20], **TINY[name])
        model.fit(train, valid, progress=records.append)
        model.progress_records = records
        models[name] = model
    return models


@pytest.mark.parametrize("name", list_models())
def test_fit_predict_save_load_round_trip(
    name: str,
    fitted: dict[str, Forecaster],
    split: tuple[PanelData, PanelData, PanelData],
    tmp_path: Path,
) -> None:
    model = fitted[name]
    _, _, test = split
    predictions = model.predict(test)
    n_samples = test.n_samples
    assert list(predictions.columns[:4]) == ["date", "ticker", "horizon", "prediction"]
    assert len(predictions) == n_samples * 3
    per_key = predictions.groupby(["date", "ticker"])["horizon"].apply(tuple)
    assert (per_key == (1, 5, 20)).all()
    assert np.isfinite(predictions["prediction"]).all()
    assert predictions["date"].dtype == "datetime64[ns]"

    saved = model.save(tmp_path / name)
    loaded = load_model(saved)
    assert type(loaded) is type(model)
    pd.testing.assert_frame_equal(loaded.predict(test), predictions)
    assert pd.Series(loaded.metrics).equals(pd.Series(model.metrics))
    assert loaded.history == model.history
    model.save(saved)  # overwriting an existing model directory works


@pytest.mark.parametrize("name", list_models())
def test_metrics_history_and_progress(name: str, fitted: dict[str, Forecaster]) -> None:
    model = fitted[name]
    for key in ("valid_loss", "n_train", "n_valid", "train_seconds"):
        assert np.isfinite(model.metrics[key]), key
    for h in (1, 5, 20):
        for metric in ("rank_ic", "ic", "directional_accuracy", "mse"):
            assert f"{metric}_h{h}" in model.metrics
    assert model.history and all("valid_loss" in r for r in model.history)
    # what the model assets log and record per epoch
    assert all({"train_loss", "samples_per_s"} <= set(r) for r in model.history if "epoch" in r)
    assert [r["epoch"] for r in model.progress_records] == [r["epoch"] for r in model.history]
    assert all(r["model"] == name for r in model.progress_records)


@pytest.mark.parametrize("name", list_models())
def test_predictions_ignore_later_rows(
    name: str, fitted: dict[str, Forecaster], split: tuple[PanelData, PanelData, PanelData]
) -> None:
    """Truncation invariance: predicting from input that ends at t gives the same values
    for dates <= t as predicting from the whole panel."""
    model = fitted[name]
    features, _ = frames(n_tickers=6, n_days=260, seed=5, signal_strength=0.1)
    cut = features["date"].unique()[200]
    full = model.predict(features)
    truncated = model.predict(features[features["date"] <= cut])
    early = full[full["date"] <= cut].reset_index(drop=True)
    np.testing.assert_allclose(truncated["prediction"], early["prediction"], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", list_models())
def test_samples_and_quantiles_where_supported(
    name: str, fitted: dict[str, Forecaster], split: tuple[PanelData, PanelData, PanelData]
) -> None:
    model = fitted[name]
    _, _, test = split
    if model.supports_samples:
        samples = model.predict_samples(test, n=5, seed=1)
        assert list(samples.columns) == ["date", "ticker", "horizon", "sample", "prediction"]
        assert len(samples) == test.n_samples * 3 * 5
        spread = samples.groupby(["date", "ticker", "horizon"])["prediction"].std()
        assert (spread > 0).mean() > 0.9
        pd.testing.assert_frame_equal(samples, model.predict_samples(test, n=5, seed=1))
    else:
        with pytest.raises(NotImplementedError, match="no stochastic samples"):
            model.predict_samples(test, n=5)
    predictions = model.predict(test)
    quantiles = [c for c in predictions.columns if c.startswith("quantile_")]
    if name in ("tft", "hist_gbm"):
        assert quantiles == ["quantile_0.1", "quantile_0.5", "quantile_0.9"]
        values = predictions[quantiles].to_numpy()
        assert (np.diff(values, axis=1) >= 0).all()
        np.testing.assert_array_equal(predictions["quantile_0.5"], predictions["prediction"])
    else:
        assert quantiles == []


def test_quantile_loss_on_any_sequence_family(
    split: tuple[PanelData, PanelData, PanelData],
) -> None:
    train, valid, test = split
    model = create_model("gru", loss="quantile", quantiles=[0.25, 0.75], **TINY_TORCH)
    predictions = model.fit(train, valid).predict(test)
    assert [c for c in predictions.columns if c.startswith("quantile_")] == [
        "quantile_0.25",
        "quantile_0.5",
        "quantile_0.75",
    ]


@pytest.mark.parametrize("name", ["lstm", "transformer", "random_forest"])
def test_same_seed_same_model(name: str, split: tuple[PanelData, PanelData, PanelData]) -> None:
    train, valid, test = split
    first = create_model(name, **TINY[name]).fit(train, valid).predict(test)
    second = create_model(name, **TINY[name]).fit(train, valid).predict(test)
    pd.testing.assert_frame_equal(first, second)


def test_fit_without_valid_holds_out_the_end(
    split: tuple[PanelData, PanelData, PanelData],
) -> None:
    train, _, _ = split
    model = create_model("ridge").fit(train)
    assert model.metrics["n_valid"] > 0 and model.horizons == (1, 5, 20)


def test_predict_accepts_a_features_frame(fitted: dict[str, Forecaster]) -> None:
    features, _ = frames(n_tickers=6, n_days=260, seed=5, signal_strength=0.1)
    reordered = features[["date", "ticker", *reversed(features.columns[2:])]]
    for name in ("gru", "ridge"):
        model = fitted[name]
        pd.testing.assert_frame_equal(model.predict(reordered), model.predict(features))
    with pytest.raises(ValueError, match="lacks features"):
        fitted["ridge"].predict(features.drop(columns="ret_5"))


def test_unfitted_model_refuses_to_predict(tmp_path: Path) -> None:
    features, _ = frames(n_tickers=2, n_days=30)
    with pytest.raises(NotFittedError):
        create_model("lstm").predict(features)
    with pytest.raises(NotFittedError):
        create_model("ridge").save(tmp_path / "m")


def test_single_horizon_subset(split: tuple[PanelData, PanelData, PanelData]) -> None:
    train, valid, test = split
    model = create_model("cnn_lstm", horizons=[5], **TINY["cnn_lstm"]).fit(train, valid)
    assert isinstance(model, SequenceForecaster)
    assert set(model.predict(test)["horizon"]) == {5}


@pytest.mark.parametrize("name", ["lstm", "tft", "ridge"])
def test_one_date_predicts_as_in_the_full_run(
    name: str, fitted: dict[str, Forecaster], split: tuple[PanelData, PanelData, PanelData]
) -> None:
    _, _, test = split
    model = fitted[name]
    day = test.sample_dates()[10]
    full = model.predict(test)
    single = model.predict(test.select(start=day, end=day))
    expected = full[full["date"] == day].reset_index(drop=True)
    pd.testing.assert_frame_equal(single, expected, rtol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_empty_input_gives_empty_frames(
    name: str, fitted: dict[str, Forecaster], split: tuple[PanelData, PanelData, PanelData]
) -> None:
    _, _, test = split
    model = fitted[name]
    empty = test.select(start="2100-01-01")
    full = model.predict(test)
    predictions = model.predict(empty)
    assert predictions.empty and list(predictions.columns) == list(full.columns)
    if model.supports_samples:
        assert model.predict_samples(empty, n=3).empty
