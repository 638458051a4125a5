"""Ensemble: floored validation weights, weights updated from realised performance, combine
with contributions, a stacking meta-model that accepts only out-of-fold predictions, and on
a planted-signal panel an ensemble whose validation loss is no worse than its members' mean
and whose conformal intervals hold their level out of sample."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from finpipe.core.contracts import PREDICTIONS, schema_violations
from finpipe.core.keys import ROW_KEY
from finpipe.core.metrics import interval_coverage, mse
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.forecasting.ensemble import (
    FOLD_COLUMNS,
    INTERCEPT,
    OOF_COLUMNS,
    InSampleError,
    StackingEnsemble,
    apply_floor,
    check_out_of_fold,
    combine,
    updated_weights,
    validation_weights,
)
from finpipe.forecasting.predictions import predictions_table
from finpipe.forecasting.uncertainty import SplitConformal, interval_scale, recent_volatility
from finpipe.models import Forecaster, PanelData, create_model, time_split
from finpipe.models.panel_data import NO_LABEL_END
from finpipe_tests.synthetic_model_data import model_frames

torch.set_num_threads(1)

KEY = list(ROW_KEY)


# -- weights -------------------------------------------------------------------------------


def test_apply_floor_by_hand() -> None:
    weights = apply_floor({"a": 0.75, "b": 0.25, "c": 0.0}, floor=0.1)
    assert weights == pytest.approx({"a": 0.675, "b": 0.225, "c": 0.1})
    assert apply_floor(weights, floor=0.1) == pytest.approx(weights)  # idempotent
    assert apply_floor({"a": -1.0, "b": float("nan")}, 0.0) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="floor"):
        apply_floor({"a": 1.0, "b": 1.0, "c": 1.0}, floor=0.4)


@given(
    st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=8),
    st.floats(0.0, 1.0),
)
def test_apply_floor_properties(shares: list[float], fraction: float) -> None:
    floor = fraction / len(shares)
    names = [f"m{i}" for i in range(len(shares))]
    weights = apply_floor(dict(zip(names, shares, strict=True)), floor)
    values = np.array(list(weights.values()))
    assert values.sum() == pytest.approx(1.0)
    assert (values >= floor - 1e-12).all()
    order = np.argsort(shares, kind="stable")
    assert (np.diff(values[order]) >= -1e-12).all()  # ranking preserved


def test_validation_weights_by_hand() -> None:
    metrics = {
        "a": {"rank_ic_h1": 0.06, "rank_ic_h5": 0.06, "mse_h1": 1.0, "mse_h5": 4.0},
        "b": {"rank_ic_h1": 0.02, "rank_ic_h5": 0.02, "mse_h1": 2.0, "mse_h5": 8.0},
        "c": {"rank_ic_h1": -0.01, "rank_ic_h5": -0.03, "mse_h1": 1.0, "mse_h5": 4.0},
    }
    assert validation_weights(metrics, "rank_ic", floor=0.1) == pytest.approx(
        {"a": 0.675, "b": 0.225, "c": 0.1}
    )
    # inverse MSE: per horizon 1 : 0.5 : 1, the same at h5 (MSE scale differs, shares not).
    assert validation_weights(metrics, "inverse_loss", floor=0.0) == pytest.approx(
        {"a": 0.4, "b": 0.2, "c": 0.4}
    )
    assert validation_weights(metrics, "rank_ic", floor=0.0, horizons=[1]) == pytest.approx(
        {"a": 0.75, "b": 0.25, "c": 0.0}
    )
    with pytest.raises(KeyError, match="rank_ic_h20"):
        validation_weights(metrics, horizons=[20])


def _realised(quality: dict[str, float], n_dates: int = 30, seed: int = 0) -> pd.DataFrame:
    """History rows where each model's prediction = quality * realised + noise."""
    rng = np.random.default_rng(seed)
    frames = []
    dates = pd.bdate_range("2024-01-01", periods=n_dates)
    realised = rng.standard_normal((n_dates, 40))
    for model, q in quality.items():
        prediction = q * realised + rng.standard_normal(realised.shape)
        frames.append(
            pd.DataFrame(
                {
                    "date": np.repeat(dates.values, 40),
                    "ticker": np.tile([f"T{i}" for i in range(40)], n_dates),
                    "horizon": 1,
                    "model": model,
                    "prediction": prediction.ravel(),
                    "realised_return": realised.ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_updated_weights_follow_recent_realised_performance() -> None:
    prior = {"good": 1 / 3, "bad": 1 / 3, "unseen": 1 / 3}
    realised = _realised({"good": 1.0, "bad": -1.0})
    weights = updated_weights(prior, realised, halflife=10, prior_weight=0.5, floor=0.05)
    assert weights["good"] > prior["good"] > weights["bad"] >= 0.05
    assert weights["unseen"] == pytest.approx(1 / 3)  # no realised rows: keeps its share
    assert sum(weights.values()) == pytest.approx(1.0)
    assert updated_weights(prior, realised, prior_weight=1.0) == pytest.approx(prior)
    assert updated_weights(prior, realised.iloc[:0]) == pytest.approx(prior)


# -- combine -------------------------------------------------------------------------------


def _members() -> pd.DataFrame:
    rows = [
        ("2024-01-02", "AAA", 1, "a", 0.04),
        ("2024-01-02", "AAA", 1, "b", 0.00),
        ("2024-01-02", "BBB", 1, "a", -0.02),
        ("2024-01-02", "BBB", 1, "b", 0.02),
        ("2024-01-02", "AAA", 5, "a", 0.10),
        ("2024-01-02", "AAA", 5, "b", 0.20),
        ("2024-01-02", "CCC", 1, "b", 0.08),  # member a has no prediction here
    ]
    frame = pd.DataFrame(rows, columns=["date", "ticker", "horizon", "model", "prediction"])
    return frame.assign(date=pd.to_datetime(frame["date"]))


def test_combine_by_hand_with_contributions() -> None:
    ensemble, contributions = combine(_members(), {"a": 0.75, "b": 0.25})
    got = ensemble.set_index(["ticker", "horizon"])["prediction"]
    assert got[("AAA", 1)] == pytest.approx(0.03)
    assert got[("BBB", 1)] == pytest.approx(-0.01)
    assert got[("AAA", 5)] == pytest.approx(0.125)
    assert got[("CCC", 1)] == pytest.approx(0.08)  # b alone carries the total weight
    assert set(ensemble["model"]) == {"ensemble"}
    summed = contributions.groupby(KEY)["contribution"].sum()
    merged = ensemble.set_index(KEY)["prediction"]
    pd.testing.assert_series_equal(summed.sort_index(), merged.sort_index(), check_names=False)
    ccc = contributions[contributions["ticker"] == "CCC"]
    assert ccc[["model", "weight"]].values.tolist() == [["b", 1.0]]

    per_horizon = {1: {"a": 1.0, "b": 0.0}, 5: {"a": 0.0, "b": 2.0}}
    ensemble, contributions = combine(_members(), per_horizon, intercept={1: 0.01, 5: 0.0})
    got = ensemble.set_index(["ticker", "horizon"])["prediction"]
    assert got[("AAA", 1)] == pytest.approx(0.05) and got[("AAA", 5)] == pytest.approx(0.4)
    assert (contributions["model"] == INTERCEPT).sum() == len(ensemble)
    with pytest.raises(KeyError, match="horizon 5"):
        combine(_members(), {1: {"a": 1.0}})


# -- stacking on a planted-signal panel ----------------------------------------------------


def out_of_fold(
    members: Mapping[str, Forecaster],
    panel: PanelData,
    n_folds: int = 3,
    first_fold: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold member predictions over the later part of a labelled panel view.

    The view's dates from `first_fold` (a fraction) onward are cut into `n_folds`
    consecutive blocks. For each block a fresh copy of every member (same family and
    parameters) is fit on the dates before it, purged by label_end and embargoed by the
    longest horizon (`time_split`), and predicts the block. Returns (oof with
    `OOF_COLUMNS`, folds with `FOLD_COLUMNS`) ready for `StackingEnsemble.fit`.
    """
    if n_folds < 1 or not 0.0 < first_fold < 1.0:
        raise ValueError("need n_folds >= 1 and 0 < first_fold < 1")
    view_dates = panel.sample_dates()
    start = int(len(view_dates) * first_fold)
    blocks = np.array_split(np.arange(start, len(view_dates)), n_folds)
    labels = panel.labels_frame()
    predictions, fold_rows = [], []
    for fold, block in enumerate(blocks):
        if len(block) == 0:
            continue
        first, last = view_dates[block[0]], view_dates[block[-1]]
        train, _ = time_split(panel, valid_start=first)
        test = panel.select(first, last)
        ends = train.label_end[train.sample_mask]
        ends = ends[ends != NO_LABEL_END]
        fold_rows.append(
            {
                "fold": fold,
                "train_start": train.sample_dates()[0],
                "train_end": pd.Timestamp(ends.max()) if len(ends) else train.sample_dates()[-1],
            }
        )
        for name, template in members.items():
            model = type(template)(**template.get_params()).fit(train)
            frame = model.predict(test).assign(model=name, fold=fold)
            predictions.append(frame)
    oof = pd.concat(predictions, ignore_index=True).merge(labels, on=list(ROW_KEY), how="inner")
    return oof[list(OOF_COLUMNS)], pd.DataFrame(fold_rows, columns=list(FOLD_COLUMNS))


N_TICKERS, N_DAYS, SEED = 30, 1200, 5


@pytest.fixture(scope="module")
def planted() -> dict:
    """Members, their walk-forward out-of-fold predictions on the earlier part of a
    planted-signal panel, and refits on all of it predicting the later validation part."""
    features, labels = model_frames(N_TICKERS, N_DAYS, seed=SEED, signal_strength=0.1)
    panel = PanelData.from_frames(features, labels)
    rest, valid = time_split(panel, valid_fraction=0.25)
    members: dict[str, Forecaster] = {
        "ridge": create_model("ridge"),
        "random_forest": create_model("random_forest", n_estimators=20, max_samples=3000),
    }
    oof, folds = out_of_fold(members, rest, n_folds=3, first_fold=0.5)
    fitted = {name: type(m)(**m.get_params()).fit(rest) for name, m in members.items()}
    member_valid = pd.concat(
        [m.predict(valid).assign(model=name) for name, m in fitted.items()], ignore_index=True
    )
    return {
        "rest": rest,
        "valid": valid,
        "fitted": fitted,
        "oof": oof,
        "folds": folds,
        "member_valid": member_valid,
        "labels": valid.labels_frame(),
    }


def test_walk_forward_predictions_are_out_of_fold(planted: dict) -> None:
    oof, folds = planted["oof"], planted["folds"]
    assert sorted(oof["fold"].unique()) == [0, 1, 2] and set(oof["model"]) == {
        "ridge",
        "random_forest",
    }
    bounds = oof.merge(folds, on="fold")
    assert (bounds["date"] > bounds["train_end"]).all()
    check_out_of_fold(oof, folds)


def test_stacking_refuses_in_sample_predictions(planted: dict) -> None:
    oof, folds = planted["oof"], planted["folds"]
    # A member fit on the whole earlier part, predicting its own training rows, labelled
    # as fold 0 with that fit's true training window: in-sample, so refused.
    rest = planted["rest"]
    ridge = planted["fitted"]["ridge"]
    in_sample = (
        ridge.predict(rest)
        .assign(model="ridge", fold=0)
        .merge(rest.labels_frame(), on=KEY)
        .loc[:, list(oof.columns)]
    )
    ends = rest.label_end[rest.sample_mask]
    ends = ends[ends != NO_LABEL_END]
    window = pd.DataFrame(
        {
            "fold": [0],
            "train_start": [rest.sample_dates()[0]],
            "train_end": [pd.Timestamp(ends.max())],
        }
    )
    with pytest.raises(InSampleError, match="inside their fold's training window"):
        StackingEnsemble().fit(in_sample, window)
    # One in-sample row smuggled into genuine out-of-fold rows is enough to refuse.
    first_train_date = folds.loc[folds["fold"] == 1, "train_start"].iloc[0]
    tainted = pd.concat(
        [oof, oof[oof["fold"] == 1].head(1).assign(date=first_train_date)], ignore_index=True
    )
    with pytest.raises(InSampleError):
        StackingEnsemble().fit(tainted, folds)
    with pytest.raises(InSampleError, match="no training window"):
        StackingEnsemble().fit(oof, folds[folds["fold"] != 2])
    with pytest.raises(InSampleError, match="lacks columns"):
        StackingEnsemble().fit(oof.drop(columns="fold"), folds)


def _valid_mse(predictions: pd.DataFrame, labels: pd.DataFrame, horizon: int) -> float:
    rows = predictions[predictions["horizon"] == horizon].merge(labels, on=KEY)
    return mse(rows["prediction"], rows["fwd_return"])


def test_ensemble_validation_loss_no_worse_than_mean_member(planted: dict) -> None:
    stack = StackingEnsemble().fit(planted["oof"], planted["folds"])
    assert all(c >= 0 for table in stack.coefficients.values() for c in table.values())
    stacked, contributions = stack.predict(planted["member_valid"])
    metrics = {name: m.metrics for name, m in planted["fitted"].items()}
    averaged, _ = combine(planted["member_valid"], validation_weights(metrics, floor=0.1))
    labels, members = planted["labels"], planted["member_valid"]
    for h in (1, 5, 20):
        member_loss = [
            _valid_mse(members[members["model"] == name], labels, h) for name in planted["fitted"]
        ]
        assert _valid_mse(stacked, labels, h) <= np.mean(member_loss), (h, member_loss)
        assert _valid_mse(averaged, labels, h) <= np.mean(member_loss), (h, member_loss)
    summed = contributions.groupby(KEY)["contribution"].sum()
    np.testing.assert_allclose(summed.to_numpy(), stacked.set_index(KEY)["prediction"])
    again = StackingEnsemble.from_dict(stack.to_dict())
    pd.testing.assert_frame_equal(again.predict(members)[0], stacked)


def test_pipeline_intervals_hold_their_level_out_of_sample(planted: dict) -> None:
    """Members and stacked ensemble on the validation part, conformal scale from recent
    volatility and member dispersion; calibrate on its first half, check the second."""
    cfg = SyntheticConfig(n_tickers=N_TICKERS, n_days=N_DAYS, seed=SEED, signal_strength=0.1)
    vol = recent_volatility(synthetic_panel(cfg))
    members = planted["member_valid"]
    stacked, _ = StackingEnsemble().fit(planted["oof"], planted["folds"]).predict(members)
    point = pd.concat([members, stacked], ignore_index=True)
    scale = interval_scale(members, vol)
    rows = point.merge(scale, on=KEY).merge(planted["labels"], on=KEY)
    dates = np.sort(rows["date"].unique())
    cut = dates[len(dates) // 2]
    calibration, later = (
        rows[rows["date"] < cut],
        rows[rows["date"] > cut + np.timedelta64(28, "D")],
    )
    conformal = SplitConformal(levels=(0.8, 0.9)).fit(calibration)
    for level in (0.8, 0.9):
        out = conformal.interval(later, level)
        for (model, horizon), part in out.groupby(["model", "horizon"]):
            cover = interval_coverage(part["fwd_return"], part["lower"], part["upper"])
            assert abs(cover - level) < 0.03, (model, horizon, level, cover)
    versions = {"ridge": "r1", "random_forest": "f1", "ensemble": "e1"}
    latest = point[point["date"] == point["date"].max()]
    table = predictions_table(latest, scale, conformal, 0.8, versions)
    assert schema_violations(table, PREDICTIONS) == []
    assert len(table) == N_TICKERS * 3 * 3
    assert table["confidence"].between(0, 1).all()
