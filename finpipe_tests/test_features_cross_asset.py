"""Benchmark beta/correlation, cross-sectional ranks and z-scores, sector momentum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.data.sources.synthetic import (
    SyntheticConfig,
    synthetic_benchmark,
    synthetic_panel,
    synthetic_universe,
)
from finpipe.features import FeatureConfig, build_features

CONFIG = SyntheticConfig(n_tickers=6, n_days=140, seed=2, n_sectors=2)


@pytest.fixture(scope="module")
def inputs() -> dict:
    return {
        "prices": synthetic_panel(CONFIG),
        "benchmark": synthetic_benchmark(CONFIG),
        "universe": synthetic_universe(CONFIG),
    }


def _wide(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame.pivot(index="date", columns="ticker", values=column)


def test_benchmark_beta_and_correlation(inputs) -> None:
    config = FeatureConfig(families=("benchmark",), benchmark_windows=(20, 63))
    frame = build_features(inputs["prices"], benchmark=inputs["benchmark"], config=config).frame
    r = np.log(_wide(inputs["prices"], "adj_close")).diff()
    m = np.log(inputs["benchmark"].set_index("date")["adj_close"]).diff()
    for w in (20, 63):
        beta = r.rolling(w, min_periods=w).cov(m).div(m.rolling(w, min_periods=w).var(), axis=0)
        corr = r.rolling(w, min_periods=w).corr(m)
        np.testing.assert_allclose(_wide(frame, f"bench_beta_{w}"), beta, rtol=1e-5, equal_nan=True)
        np.testing.assert_allclose(_wide(frame, f"bench_corr_{w}"), corr, rtol=1e-5, equal_nan=True)


def test_benchmark_is_taken_as_of_each_date(inputs) -> None:
    """A benchmark missing a date contributes its last known level there (no look-ahead)."""
    bench = inputs["benchmark"]
    holey = bench.drop(index=bench.index[50])
    config = FeatureConfig(families=("benchmark",), benchmark_windows=(20,))
    frame = build_features(inputs["prices"], benchmark=holey, config=config).frame
    filled = bench.copy()
    filled.loc[filled.index[50], "adj_close"] = bench["adj_close"].iloc[49]
    want = build_features(inputs["prices"], benchmark=filled, config=config).frame
    pd.testing.assert_frame_equal(frame, want)


def test_cross_sectional_rank_and_zscore(inputs) -> None:
    config = FeatureConfig(
        families=("momentum_close", "cross_sectional"), momentum_horizons=(21, 63)
    )
    features = build_features(inputs["prices"], config=config)
    frame = features.frame
    assert features.columns["cross_sectional"] == [
        "cs_rank_mom_12_1",
        "cs_z_mom_12_1",
        "cs_rank_mom_63",
        "cs_z_mom_63",
        "cs_rank_strev_5",
        "cs_z_strev_5",
    ]
    base = _wide(frame, "mom_63").astype(np.float64)
    rank = base.rank(axis=1, pct=True)
    z = base.sub(base.mean(axis=1), axis=0).div(base.std(axis=1), axis=0)
    np.testing.assert_allclose(_wide(frame, "cs_rank_mom_63"), rank, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(_wide(frame, "cs_z_mom_63"), z, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_cross_sectional_skipped_without_bases(inputs) -> None:
    features = build_features(inputs["prices"], config=FeatureConfig(families=("cross_sectional",)))
    assert features.skipped == {
        "cross_sectional": "none of the features it builds on were computed"
    }


def test_sector_momentum_hand_checked(inputs) -> None:
    universe = inputs["universe"]
    config = FeatureConfig(families=("sector",), sector_horizon=10)
    frame = build_features(inputs["prices"], universe=universe, config=config).frame
    log_close = np.log(_wide(inputs["prices"], "adj_close"))
    momentum = log_close - log_close.shift(10)
    sector = universe.set_index("ticker")["sector"]
    want = momentum.T.groupby(sector).transform("mean").T
    np.testing.assert_allclose(_wide(frame, "sector_mom_10"), want, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(
        _wide(frame, "sector_rel_mom_10"), momentum - want, rtol=1e-5, atol=1e-7, equal_nan=True
    )
    unknown = universe.loc[universe["ticker"] != "S0000"]
    partial = build_features(inputs["prices"], universe=unknown, config=config).frame
    assert partial.loc[partial["ticker"] == "S0000", "sector_mom_10"].isna().all()
    no_universe = build_features(inputs["prices"], config=config)
    assert "universe" in no_universe.skipped["sector"]
