"""Training targets, feature scaling and feature selection: fit on training rows only, and
checked against pandas computing the same thing row by row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.models import PanelData, create_model, time_split
from finpipe.models.panel_data import FeatureScaler, TargetScaler, cross_sectional_targets
from finpipe.models.selection import select_features
from finpipe_tests.synthetic_model_data import model_frames


def _frame(n_dates: int = 120, n_tickers: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n_dates)
    frame = pd.DataFrame(
        {
            "date": np.repeat(dates, n_tickers),
            "ticker": np.tile([f"T{i:02d}" for i in range(n_tickers)], n_dates),
            "a": rng.standard_normal(n_dates * n_tickers) * 3 + 1,
            "b": rng.standard_t(3, n_dates * n_tickers),
        }
    )
    frame["macro"] = np.repeat(rng.normal(20, 4, n_dates), n_tickers)  # date-level
    frame.loc[frame.sample(frac=0.05, random_state=seed).index, "a"] = np.nan
    return frame


def test_cross_sectional_feature_scaling_is_a_robust_zscore_per_date() -> None:
    frame = _frame()
    panel = PanelData.from_frames(frame)
    train = panel.select(end=panel.dates[80])
    scaler = FeatureScaler.fit(train, clip=3.0, method="cross_sectional")
    assert scaler.date_level.tolist() == [False, False, True]
    z = scaler.transform(panel.features)
    median = frame.groupby("date")["b"].transform("median")
    mad = (frame["b"] - median).abs().groupby(frame["date"]).transform("median") * 1.4826
    want = ((frame["b"] - median) / mad).clip(-3, 3).to_numpy()
    np.testing.assert_allclose(z[:, :, 1].reshape(-1), want, rtol=1e-4, atol=1e-5)
    assert (z[:, :, 0][np.isnan(panel.features[:, :, 0])] == 0).all()
    # rows of a few dates, as the tabular models ask for them, equal the whole-date result
    d_idx, t_idx = np.array([3, 3, 90, 7]), np.array([0, 5, 2, 19])
    rows = scaler.transform_rows(panel.features, d_idx, t_idx)
    np.testing.assert_allclose(rows, z[d_idx, t_idx], rtol=1e-6)


def test_date_level_features_keep_training_statistics_only() -> None:
    frame = _frame()
    panel = PanelData.from_frames(frame)
    cut = panel.dates[80]
    scaler = FeatureScaler.fit(panel.select(end=cut), method="cross_sectional")
    train = frame.loc[frame["date"] <= cut, "macro"]
    q25, q50, q75 = train.quantile([0.25, 0.5, 0.75])
    assert scaler.center[2] == pytest.approx(q50, rel=1e-5)
    assert scaler.scale[2] == pytest.approx((q75 - q25) / 1.349, rel=1e-4)
    later = frame.assign(macro=np.where(frame["date"] > cut, 999.0, frame["macro"]))
    shifted = PanelData.from_frames(later)
    refit = FeatureScaler.fit(shifted.select(end=cut), method="cross_sectional")
    assert refit.to_dict() == scaler.to_dict()
    again = FeatureScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.transform(panel.features), scaler.transform(panel.features))


@pytest.mark.parametrize("method", ["raw", "demeaned", "zscore", "rank"])
def test_cross_sectional_targets_against_pandas(method: str) -> None:
    features, labels = model_frames(n_tickers=7, n_days=80, seed=3)
    panel = PanelData.from_frames(features, labels, horizons=(1, 5))
    out = cross_sectional_targets(panel.targets, method)
    long = labels[labels["horizon"] == 5].set_index(["date", "ticker"])["fwd_return"]
    by_date = long.groupby(level="date")
    want = {
        "raw": long,
        "demeaned": long - by_date.transform("mean"),
        "zscore": (long - by_date.transform("mean")) / by_date.transform(lambda s: s.std(ddof=0)),
        "rank": ((by_date.rank() - 0.5) / by_date.transform("count") - 0.5) * np.sqrt(12),
    }[method]
    got = pd.Series(
        out[:, :, 1].reshape(-1), index=pd.MultiIndex.from_product([panel.dates, panel.tickers])
    )
    got = got.reindex(want.index)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, equal_nan=True)


def test_a_zscore_target_maps_back_to_returns() -> None:
    """Outputs equal to the training target give back level + target x spread: a model that
    learned the target exactly predicts returns on the scale of the labels."""
    features, labels = model_frames(n_tickers=10, n_days=300, seed=4)
    panel = PanelData.from_frames(features, labels, horizons=(1, 5))
    scaler = TargetScaler.fit(panel, "zscore")
    (trained,) = scaler.targets_for_training(panel)
    standardised = scaler.transform(trained.targets[panel.sample_mask])
    back = scaler.inverse(standardised[:, :, None])[:, :, 0]
    raw = panel.targets[panel.sample_mask]
    cs_sd = [  # per horizon, over the dates with a label (the newest have none)
        np.sqrt(np.nanmean(np.nanvar(t[np.isfinite(t).any(axis=1)], axis=1)))
        for t in np.moveaxis(panel.targets, -1, 0)
    ]
    np.testing.assert_allclose(scaler.spread, cs_sd, rtol=1e-5)
    np.testing.assert_allclose(scaler.level, np.nanmean(raw, axis=0), rtol=1e-4, atol=1e-7)
    # inverse(transform(target)) is level + spread x the per-date z-score: within a date
    # an increasing affine map of the labels, so their order and spacing survive
    z = trained.targets[panel.sample_mask]
    np.testing.assert_allclose(back, scaler.level + scaler.spread * z, rtol=1e-4, atol=1e-6)
    day = panel.sample_mask.sum(axis=1).cumsum()[100]
    first = slice(day - 10, day)
    ok = np.isfinite(raw[first, 1])
    slope = np.polyfit(raw[first, 1][ok], back[first, 1][ok], 1)[0]
    assert slope > 0 and np.allclose(
        np.polyval(np.polyfit(raw[first, 1][ok], back[first, 1][ok], 1), raw[first, 1][ok]),
        back[first, 1][ok],
        atol=1e-6,
    )


@pytest.mark.parametrize("target", ["raw", "demeaned", "zscore", "rank"])
@pytest.mark.parametrize("feature_scaling", ["time_series", "cross_sectional"])
def test_every_target_and_scaling_learns_a_planted_signal(
    target: str, feature_scaling: str
) -> None:
    features, labels = model_frames(n_tickers=30, n_days=400, seed=5, signal_strength=0.5)
    panel = PanelData.from_frames(features, labels, horizons=(1, 5))
    fit, test = time_split(panel, valid_fraction=0.3)
    model = create_model("ridge", target=target, feature_scaling=feature_scaling)
    model.fit(fit)
    assert model.target_scaler.method == target
    assert model.feature_scaler.method == feature_scaling
    out = model.predict(test).merge(test.labels_frame(), on=["date", "ticker", "horizon"])
    ic = out.groupby(["horizon", "date"]).apply(
        lambda g: g["prediction"].corr(g["fwd_return"], method="spearman"), include_groups=False
    )
    assert ic.groupby(level="horizon").mean().min() > 0.05
    assert out["prediction"].std() < 10 * out["fwd_return"].std()  # on the scale of returns


def _selection_rows(seed: int = 1):
    rng = np.random.default_rng(seed)
    n_dates, n_tickers = 200, 30
    dates = pd.bdate_range("2019-01-01", periods=n_dates + 5).values
    n = n_dates * n_tickers
    signal = rng.standard_normal(n)
    x = np.column_stack(
        [
            signal,
            0.3 * signal + rng.standard_normal(n),
            rng.standard_normal((n, 2)),
            np.full(n, 2.0),
        ]
    )
    y = 0.8 * signal + 0.5 * rng.standard_normal(n)
    return (
        x,
        y,
        ["signal", "weak", "noise1", "noise2", "constant"],
        np.repeat(dates[:n_dates], n_tickers),
        np.repeat(dates[5 : n_dates + 5], n_tickers),
    )


@pytest.mark.parametrize("method", ["permutation", "rfe"])
def test_selection_finds_the_planted_signal(method: str) -> None:
    x, y, names, dates, ends = _selection_rows()
    result = select_features(x, y, names, dates, ends, method=method, max_features=2, max_rows=2000)
    assert result.columns[0] == "signal"
    assert "constant" not in result.columns
    assert not result.scores.loc["constant", "selected"]
    assert "variance" in result.scores.loc["constant", "reason"]
    assert result.scores.loc["signal", "mutual_info"] > result.scores.loc["noise1", "mutual_info"]


def test_a_model_selects_on_training_rows_only() -> None:
    """The columns a family keeps do not change when the labels after its training window
    do; the saved model predicts from a full panel with its own columns."""
    features, labels = model_frames(n_tickers=20, n_days=300, seed=6, signal_strength=0.5)
    panel = PanelData.from_frames(features, labels, horizons=(1, 5))
    fit, later = time_split(panel, valid_fraction=0.3)
    params = {"feature_selection": "rfe", "max_features": 2}
    model = create_model("ridge", **params).fit(fit)
    assert len(model.feature_names) == 2
    scrambled = panel.targets.copy()
    after = ~fit.sample_mask.any(axis=1)
    scrambled[after] = np.random.default_rng(0).standard_normal(scrambled[after].shape)
    other = PanelData(**{**panel.__dict__, "targets": scrambled}).view(fit.sample_mask)
    assert create_model("ridge", **params).fit(other).feature_names == model.feature_names
    assert set(model.predict(later)["ticker"]) == set(panel.tickers)
