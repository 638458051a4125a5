"""Momentum, volume and microstructure features against pandas and hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.features import FeatureConfig, build_features
from finpipe.features.microstructure import corwin_schultz


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return synthetic_panel(SyntheticConfig(n_tickers=2, n_days=300, seed=4))


def _wide(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame.pivot(index="date", columns="ticker", values=column)


def _check(frame: pd.DataFrame, column: str, want: pd.DataFrame, rtol: float = 1e-5) -> None:
    got = _wide(frame, column)
    np.testing.assert_allclose(
        got.to_numpy(np.float64), want.to_numpy(), rtol=rtol, atol=1e-9, equal_nan=True
    )


def test_momentum_and_mean_reversion(prices) -> None:
    frame = build_features(prices, config=FeatureConfig(families=("momentum_close",))).frame
    log_close = np.log(_wide(prices, "adj_close"))
    close = _wide(prices, "adj_close")
    _check(frame, "mom_63", log_close - log_close.shift(63))
    _check(frame, "mom_252", log_close - log_close.shift(252))
    _check(frame, "mom_12_1", log_close.shift(21) - log_close.shift(252))
    _check(frame, "mom_6_1", log_close.shift(21) - log_close.shift(126))
    _check(frame, "strev_5", -(log_close - log_close.shift(5)))
    _check(frame, "ma_gap_50", close / close.rolling(50, min_periods=50).mean() - 1)


def test_volume_activity(prices) -> None:
    frame = build_features(prices, config=FeatureConfig(families=("momentum_volume",))).frame
    v, c = _wide(prices, "volume"), _wide(prices, "adj_close")
    _check(frame, "volume_surge_20", v / v.rolling(20, min_periods=20).mean())
    _check(
        frame,
        "volume_ratio_5_60",
        v.rolling(5, min_periods=5).mean() / v.rolling(60, min_periods=60).mean(),
    )
    slope = (
        np.log1p(v)
        .rolling(20, min_periods=20)
        .apply(lambda a: np.polyfit(np.arange(20), a, 1)[0], raw=True)
    )
    _check(frame, "volume_trend_20", slope, rtol=1e-4)
    _check(frame, "dollar_volume_20", np.log((c * v).rolling(20, min_periods=20).mean()))


def test_corwin_schultz_hand_worked() -> None:
    # Day 1 trades in [100, 100 e^0.04], day 2 inside it in [100 e^0.005, 100 e^0.035]:
    # beta = 0.04^2 + 0.03^2 = 0.0025, gamma = 0.04^2 = 0.0016,
    # alpha = (sqrt(0.005) - 0.05) / (3 - 2 sqrt 2) - sqrt(0.0016 / (3 - 2 sqrt 2)) = 0.0241421,
    # S = 2 (e^alpha - 1) / (1 + e^alpha) = 0.0241410.
    high = 100 * np.exp(np.array([[0.04], [0.035]]))  # (dates, tickers)
    low = 100 * np.exp(np.array([[0.0], [0.005]]))
    got = corwin_schultz(high, low)
    assert np.isnan(got[0, 0])
    assert got[1, 0] == pytest.approx(0.0241410, abs=2e-7)
    # Ranges that do not overlap give a negative estimate, floored at 0.
    apart_high = 100 * np.exp(np.array([[0.01], [0.2]]))
    apart_low = 100 * np.exp(np.array([[0.0], [0.19]]))
    assert corwin_schultz(apart_high, apart_low)[1, 0] == 0


def test_microstructure_windows(prices) -> None:
    config = FeatureConfig(families=("microstructure",))
    frame = build_features(prices, config=config).frame
    c, o, v = _wide(prices, "adj_close"), _wide(prices, "open"), _wide(prices, "volume")
    r = np.log(c).diff()
    roll = 2 * np.sqrt((-r.rolling(21, min_periods=21).cov(r.shift(1))).clip(lower=0))
    _check(frame, "roll_spread_21", roll)
    amihud = (1e6 * r.abs() / (c * v)).rolling(21, min_periods=21).mean()
    _check(frame, "amihud_21", amihud)
    gap = np.log(o) - np.log(c.shift(1))
    _check(frame, "gap", gap)
    _check(frame, "gap_abs_21", gap.abs().rolling(21, min_periods=21).mean())
    h, lo = _wide(prices, "high").to_numpy(), _wide(prices, "low").to_numpy()
    daily = pd.DataFrame(corwin_schultz(h, lo), index=c.index, columns=c.columns)
    _check(frame, "cs_spread_21", daily.rolling(21, min_periods=21).mean())
    assert (frame["cs_spread_21"].dropna() >= 0).all()
