"""Normalisation and feature selection: fit on training rows only, checked against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.features.normalize import CrossSectionalNormalizer
from finpipe.features.selection import select_features


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
    frame["flat"] = 1.0
    frame.loc[frame.sample(frac=0.05, random_state=seed).index, "a"] = np.nan
    return frame


def test_rank_and_robust_zscore_per_date() -> None:
    frame = _frame()
    train_end = frame["date"].unique()[80]
    ranked = CrossSectionalNormalizer(method="rank", clip=None).fit_transform(frame, train_end)
    want = frame.groupby("date")["a"].rank()
    count = frame.groupby("date")["a"].transform("count")
    np.testing.assert_allclose(ranked["a"], (want - 0.5) / count - 0.5, rtol=1e-6, equal_nan=True)
    robust = CrossSectionalNormalizer(method="robust_zscore", clip=3.0)
    z = robust.fit_transform(frame, train_end)
    median = frame.groupby("date")["b"].transform("median")
    mad = (frame["b"] - median).abs().groupby(frame["date"]).transform("median") * 1.4826
    np.testing.assert_allclose(z["b"], ((frame["b"] - median) / mad).clip(-3, 3), rtol=1e-5)
    assert robust.dropped_ == {"flat": "constant in the training window"}
    assert "flat" not in z.columns


def test_date_level_columns_use_training_statistics_only() -> None:
    frame = _frame()
    dates = frame["date"].unique()
    normalizer = CrossSectionalNormalizer(nan_policy="fill").fit(frame, dates[80])
    assert list(normalizer.time_series_) == ["macro"]
    train = frame.loc[frame["date"] <= dates[80], "macro"]
    center, scale = normalizer.time_series_["macro"]
    assert center == pytest.approx(train.median())
    assert scale == pytest.approx(1.4826 * (train - train.median()).abs().median())
    later = frame.assign(macro=np.where(frame["date"] > dates[80], 999.0, frame["macro"]))
    refit = CrossSectionalNormalizer(nan_policy="fill").fit(later, dates[80])
    assert refit.time_series_ == normalizer.time_series_
    out = normalizer.transform(frame)
    assert out["a"].notna().all() and (out.loc[frame["a"].isna(), "a"] == 0).all()


def _selection_data(seed: int = 1):
    rng = np.random.default_rng(seed)
    n_dates, n_tickers = 200, 30
    dates = pd.bdate_range("2019-01-01", periods=n_dates + 5)
    n = n_dates * n_tickers
    signal = rng.standard_normal(n)
    features = pd.DataFrame(
        {
            "date": np.repeat(dates[:n_dates], n_tickers),
            "ticker": np.tile([f"T{i:02d}" for i in range(n_tickers)], n_dates),
            "signal": signal,
            "weak": 0.3 * signal + rng.standard_normal(n),
            "noise1": rng.standard_normal(n),
            "noise2": rng.standard_normal(n),
            "constant": 2.0,
        }
    )
    labels = features[["date", "ticker"]].assign(
        horizon=np.int64(5),
        fwd_return=0.8 * signal + 0.5 * rng.standard_normal(n),
        label_end=np.repeat(dates[5 : n_dates + 5], n_tickers),
    )
    return features, labels


@pytest.mark.parametrize("method", ["permutation", "rfe"])
def test_selection_finds_the_planted_signal(method: str) -> None:
    features, labels = _selection_data()
    train_end = features["date"].unique()[150]
    result = select_features(
        features,
        labels,
        horizon=5,
        train_end=train_end,
        method=method,
        max_features=2,
        max_rows=2000,
    )
    assert result.columns[0] == "signal"
    assert "constant" not in result.columns
    assert not result.scores.loc["constant", "selected"]
    assert "variance" in result.scores.loc["constant", "reason"]
    assert result.scores.loc["signal", "mutual_info"] > result.scores.loc["noise1", "mutual_info"]


def test_selection_ignores_labels_past_the_training_window() -> None:
    features, labels = _selection_data()
    train_end = features["date"].unique()[150]
    kwargs = {"horizon": 5, "train_end": train_end, "max_features": 3, "method": "rfe"}
    base = select_features(features, labels, **kwargs)
    scrambled = labels.copy()
    late = scrambled["label_end"] > train_end
    scrambled.loc[late, "fwd_return"] = np.random.default_rng(9).standard_normal(late.sum())
    other = select_features(features, scrambled, **kwargs)
    assert other.columns == base.columns
    pd.testing.assert_frame_equal(other.scores, base.scores)
