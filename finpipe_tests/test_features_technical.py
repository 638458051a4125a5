"""Technical indicators against the `ta` library, one ticker at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ta.momentum import RSIIndicator, StochasticOscillator, WilliamsRIndicator
from ta.trend import MACD
from ta.volatility import AverageTrueRange, BollingerBands
from ta.volume import MFIIndicator, OnBalanceVolumeIndicator, VolumeWeightedAveragePrice

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.features import FeatureConfig, build_features


@pytest.fixture(scope="module")
def computed() -> tuple[pd.DataFrame, pd.DataFrame]:
    prices = synthetic_panel(SyntheticConfig(n_tickers=3, n_days=250, seed=5))
    dates = np.sort(prices["date"].unique())
    late = (prices["ticker"] == "S0002") & (prices["date"] < dates[40])  # listed late
    prices = prices.loc[~late].reset_index(drop=True)
    config = FeatureConfig(families=("technical",), vwap_window=14)
    return prices, build_features(prices, config=config).frame


def _compare(ours: pd.Series, want: pd.Series, start: int, rtol: float = 1e-5) -> None:
    """Equal from `start` on (ta's warm-up conventions differ before); ours NaN before."""
    got, ref = ours.to_numpy(np.float64), want.to_numpy(np.float64)
    assert np.isfinite(got[start:]).all()
    np.testing.assert_allclose(got[start:], ref[start:], rtol=rtol, atol=1e-6)


def _each_ticker(computed):
    prices, frame = computed
    for ticker, bars in prices.groupby("ticker"):
        yield (
            bars.reset_index(drop=True),
            frame.loc[frame["ticker"] == ticker].reset_index(drop=True),
        )


def test_rsi_macd_bollinger(computed) -> None:
    for bars, ours in _each_ticker(computed):
        c = bars["adj_close"]
        for w in (9, 14, 21):
            _compare(ours[f"rsi_{w}"], RSIIndicator(c, window=w).rsi(), start=w - 1)
            assert ours[f"rsi_{w}"].iloc[: w - 1].isna().all()
        macd = MACD(c, window_slow=26, window_fast=12, window_sign=9)
        _compare(ours["macd"], macd.macd() / c, start=25)
        _compare(ours["macd_signal"], macd.macd_signal() / c, start=33)
        _compare(ours["macd_hist"], macd.macd_diff() / c, start=33)
        bands = BollingerBands(c, window=20, window_dev=2)
        _compare(ours["bb_pctb"], bands.bollinger_pband(), start=19)
        _compare(ours["bb_width"], bands.bollinger_wband() / 100, start=19)


def test_stochastic_williams_atr(computed) -> None:
    for bars, ours in _each_ticker(computed):
        h, lo, c = bars["high"], bars["low"], bars["adj_close"]
        stoch = StochasticOscillator(h, lo, c, window=14, smooth_window=3)
        _compare(ours["stoch_k"], stoch.stoch(), start=13)
        _compare(ours["stoch_d"], stoch.stoch_signal(), start=15)
        _compare(ours["williams_r"], WilliamsRIndicator(h, lo, c, lbp=14).williams_r(), start=13)
        atr = AverageTrueRange(h, lo, c, window=14).average_true_range()
        _compare(ours["atr_14"], atr / c, start=13)


def test_obv_mfi_vwap(computed) -> None:
    for bars, ours in _each_ticker(computed):
        h, lo, c, v = bars["high"], bars["low"], bars["adj_close"], bars["volume"]
        obv = OnBalanceVolumeIndicator(c, v).on_balance_volume()
        _compare(ours["obv_20"], obv.diff(20) / v.rolling(20).sum(), start=20)
        # ta counts the first day's money flow as 0; ours needs the previous typical price.
        _compare(ours["mfi_14"], MFIIndicator(h, lo, c, v, window=14).money_flow_index(), start=14)
        assert np.isnan(ours["mfi_14"].iloc[13])
        vwap = VolumeWeightedAveragePrice(h, lo, c, v, window=14).volume_weighted_average_price()
        _compare(ours["vwap_gap_14"], c / vwap - 1, start=13)
