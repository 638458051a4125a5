"""Ensemble: combine with contributions, a stacking meta-model that accepts only out-of-fold
predictions and falls back to equal weights (and says so) at a horizon where no member
helps, and on a planted-signal panel a stacked ensemble whose validation loss is no worse
than its members' mean and whose conformal intervals hold their level out of sample."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import nnls

from finpipe.core.contracts import PREDICTIONS, REPLAY, schema_violations
from finpipe.core.keys import ROW_KEY
from finpipe.core.metrics import interval_coverage, mse, rank_ic
from finpipe.core.time_plan import FitWindow
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.forecasting.ensemble import (
    FOLD_COLUMNS,
    OOF_COLUMNS,
    CrossSections,
    InSampleError,
    StackingEnsemble,
    check_out_of_fold,
    combine,
    mean_row_correlation,
)
from finpipe.forecasting.system import EnsembleFit, fit_ensemble, forecast_rows
from finpipe.forecasting.uncertainty import SplitConformal, interval_scale, recent_volatility
from finpipe.models import Forecaster, PanelData, create_model, time_split
from finpipe.models.panel_data import NO_LABEL_END
from finpipe_tests.synthetic_model_data import model_frames

torch.set_num_threads(1)

KEY = list(ROW_KEY)


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
    ensemble, contributions = combine(_members(), per_horizon)
    got = ensemble.set_index(["ticker", "horizon"])["prediction"]
    assert got[("AAA", 1)] == pytest.approx(0.04) and got[("AAA", 5)] == pytest.approx(0.4)
    with pytest.raises(KeyError, match="horizon 5"):
        combine(_members(), {1: {"a": 1.0}})


def _window(
    as_of: pd.Timestamp, history_start: pd.Timestamp, trained_through: pd.Timestamp
) -> FitWindow:
    """A hand-made fit window: stacks and calibrates on rows from `history_start`."""
    return FitWindow(
        name="fold_hand",
        as_of=as_of,
        label_cutoff=as_of,
        train_start=pd.Timestamp("2000-01-03"),
        fit_end=trained_through,
        valid_start=trained_through,
        valid_end=trained_through,
        stack_start=history_start,
        calibration_start=history_start,
        trained_through=trained_through,
        predict_start=as_of,
        predict_end=None,
    )


def _ridge_reference(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Non-negative ridge without intercept on standardised columns, solved as the
    non-negative least squares of the augmented system [X; sqrt(alpha n) I] w = [y; 0],
    normalised to sum to one: the stacker's raw weights."""
    x_sd, y_sd = x.std(axis=0), y.std()
    a = np.vstack([x / x_sd, np.sqrt(alpha * len(y)) * np.eye(x.shape[1])])
    w, _ = nnls(a, np.concatenate([y / y_sd, np.zeros(x.shape[1])]))
    return w / w.sum() if w.sum() > 0 else w


def test_stacking_falls_back_to_equal_weights_where_no_member_helps() -> None:
    # Horizon 1: both members track the target. Horizon 5: both are anti-correlated with
    # it, so every non-negative ridge coefficient is zero and the stacker must fall back.
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2024-01-01", periods=80)
    tickers = [f"T{i:02d}" for i in range(25)]
    keys = pd.MultiIndex.from_product([dates, tickers], names=["date", "ticker"]).to_frame(
        index=False
    )
    frames = []
    for horizon, sign in ((1, 1.0), (5, -1.0)):
        target = rng.normal(0.0, 0.01, len(keys))
        for model, loading in (("a", 1.0), ("b", 0.5)):
            noise = rng.normal(0.0, 0.01, len(keys))
            frames.append(
                keys.assign(
                    horizon=horizon,
                    model=model,
                    prediction=sign * loading * target + noise,
                    fold="f0",
                    fwd_return=target,
                )
            )
    oof = pd.concat(frames, ignore_index=True)[list(OOF_COLUMNS)]
    trained_through = dates[0] - pd.Timedelta(days=10)
    folds = pd.DataFrame(
        {
            "fold": ["f0"],
            "train_start": [dates[0] - pd.Timedelta(days=400)],
            "train_end": [trained_through],
        }
    )
    stack = StackingEnsemble().fit(oof, folds)

    wide = oof.pivot(index=[*KEY], columns="model", values="prediction")
    target = oof.groupby(KEY)["fwd_return"].first().reindex(wide.index)
    for horizon in (1, 5):
        rows = wide.index.get_level_values("horizon") == horizon
        reference = _ridge_reference(wide[rows].to_numpy(), target[rows].to_numpy(), stack.alpha)
        got = [stack.weights[horizon][m] for m in wide.columns]
        if horizon == 1:
            assert (reference > 0).all()
            shrink = stack.chosen_shrinkage[1]
            np.testing.assert_allclose(got, (1 - shrink) * reference + shrink / 2, rtol=1e-3)
        else:
            assert (reference == 0).all()  # every ridge coefficient would be zero
            assert got == pytest.approx([0.5, 0.5])
    assert list(stack.fallback) == [5] and "equal weights" in stack.fallback[5]
    assert set(stack.cv_scores[1]) == {"0", "0.25", "0.5", "0.75", "1"}

    members = oof[[*KEY, "model", "prediction"]]
    ensemble, _ = stack.predict(members)
    at_5 = ensemble[ensemble["horizon"] == 5].set_index(KEY)["prediction"].sort_index()
    assert len(at_5) == len(keys)  # the ensemble keeps the horizon
    # equal weights on standardised members, at the members' mean scale
    five = wide[wide.index.get_level_values("horizon") == 5]
    sd = five.std(ddof=0)
    want = (five / sd).mean(axis=1) * sd.mean()
    np.testing.assert_allclose(at_5.to_numpy(), want.sort_index().to_numpy(), rtol=1e-9)
    assert StackingEnsemble.from_dict(stack.to_dict()).fallback == stack.fallback

    # The served fit says which horizon fell back.
    known = oof.assign(scale=0.01)
    fit = fit_ensemble(known, _window(dates[-1], dates[0], trained_through), ["a", "b"], folds)
    assert fit.stack is not None and fit.stack.fallback == stack.fallback
    assert [n for n in fit.notes if n.startswith("stacking")] == [
        f"stacking h5: {stack.fallback[5]}"
    ]


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
    labels, members = planted["labels"], planted["member_valid"]
    for h in (1, 5, 20):
        member_loss = [
            _valid_mse(members[members["model"] == name], labels, h) for name in planted["fitted"]
        ]
        assert _valid_mse(stacked, labels, h) <= np.mean(member_loss), (h, member_loss)
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
    # The served rows of the newest date: members and the stacked ensemble with these
    # intervals, versions and how current each model is.
    stack = StackingEnsemble().fit(planted["oof"], planted["folds"])
    latest = members[members["date"] == members["date"].max()]
    ends = planted["rest"].label_end[planted["rest"].sample_mask]
    trained_through = pd.Timestamp(ends[ends != NO_LABEL_END].max())
    window = _window(latest["date"].iloc[0], cut, trained_through)
    fit = EnsembleFit(window, ("random_forest", "ridge"), (0.8, 0.9), stack, conformal)
    versions = {"ridge": "r1", "random_forest": "f1", "ensemble": "e1"}
    through = dict.fromkeys(["ridge", "random_forest"], trained_through)
    table = forecast_rows(latest, scale, fit, 0.8, versions, through, fold=window.name)
    assert schema_violations(table, REPLAY) == []
    assert schema_violations(table[list(PREDICTIONS.required)], PREDICTIONS) == []
    assert len(table) == N_TICKERS * 3 * 3
    assert table["confidence"].between(0, 1).all()
    assert (table["trained_through"] == trained_through).all()
    assert (table["trained_through"] < table["date"]).all()
    served = table[table["model"] == "ensemble"].set_index(KEY)["prediction"].sort_index()
    expected = stacked[stacked["date"] == latest["date"].iloc[0]].set_index(KEY)["prediction"]
    pd.testing.assert_series_equal(served, expected.sort_index(), check_names=False)


def test_the_stackers_daily_rank_ic_matches_the_metrics_module() -> None:
    """The stacker's fast per-date rank IC (rows as a dates x names matrix) against
    `core.metrics.rank_ic` (pandas groupby ranks): ragged dates, ties and a one-name date."""
    rng = np.random.default_rng(7)
    dates = np.repeat(np.arange(60), 15)
    dates = dates[rng.random(len(dates)) > 0.15]
    dates = np.r_[dates, 60]  # a date with one name: no correlation to read
    y = rng.standard_normal(len(dates))
    p = y + 2 * rng.standard_normal(len(dates))
    p[::5] = np.round(p[::5])  # ties
    sections = CrossSections(dates)
    got = mean_row_correlation(sections.ranks(p), sections.ranks(y))
    assert got == pytest.approx(rank_ic(p, y, dates), rel=1e-12)
