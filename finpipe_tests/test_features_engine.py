"""The feature engine's contract: rows, order, dtypes, skips, isolation between tickers."""

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
from finpipe.features import (
    FeatureConfig,
    build_features,
    family_names,
    fit_garch,
    invalid_columns,
)
from finpipe.features.engine import ALL_MISSING, INFINITE

SMALL = FeatureConfig(alpha158_windows=(5, 10), tickers_per_block=2, n_jobs=1)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return synthetic_panel(SyntheticConfig(n_tickers=5, n_days=90, seed=7))


def test_one_sorted_row_per_input_row(prices) -> None:
    holes = prices.sample(frac=0.1, random_state=0).index
    sparse = prices.drop(index=holes)
    features = build_features(sparse.sample(frac=1.0, random_state=1), config=SMALL)
    frame = features.frame
    assert len(frame) == len(sparse)
    keys = sparse[["date", "ticker"]].sort_values(["date", "ticker"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(frame[["date", "ticker"]], keys, check_dtype=False)
    assert frame["date"].dtype == "datetime64[ns]"
    assert pd.api.types.is_string_dtype(frame["ticker"])
    assert all(frame[c].dtype == np.float32 for c in frame.columns[2:])
    assert list(frame.columns[2:]) == [c for cols in features.columns.values() for c in cols]
    assert set(features.seconds) >= set(features.computed) | {"prepare", "assemble"}


def test_tickers_do_not_leak_into_each_other(prices) -> None:
    """Per-ticker families give a ticker the same values alone or beside others."""
    per_ticker = ("alpha158", "technical", "volatility", "momentum", "microstructure")
    config = FeatureConfig(families=per_ticker, alpha158_windows=(5, 10), tickers_per_block=2)
    together = build_features(prices, config=config).frame
    alone = build_features(prices.loc[prices["ticker"] == "S0003"], config=config).frame
    mine = together.loc[together["ticker"] == "S0003"].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, alone)


def test_threads_and_block_sizes_do_not_change_values(prices) -> None:
    one = build_features(prices, config=SMALL).frame
    config = FeatureConfig(alpha158_windows=(5, 10), tickers_per_block=3, n_jobs=2)
    pd.testing.assert_frame_equal(one, build_features(prices, config=config).frame)


def test_full_inputs_give_no_infinities_and_no_all_nan_columns() -> None:
    config = SyntheticConfig(n_tickers=3, n_days=330, seed=3, n_sectors=2, regimes=True)
    prices = synthetic_panel(config)
    prices.loc[prices.sample(frac=0.02, random_state=0).index, "volume"] = 0.0
    garch = fit_garch(prices, config.dates[200], min_obs=150)
    features = build_features(
        prices,
        benchmark=synthetic_benchmark(config),
        universe=synthetic_universe(config),
        config=FeatureConfig(garch=garch),
    )
    assert invalid_columns(features.frame) == {INFINITE: [], ALL_MISSING: []}
    assert features.frame.shape[1] - 2 > 200
    short = build_features(prices.loc[prices["date"] <= config.dates[100]])
    assert "mom_252" in invalid_columns(short.frame)[ALL_MISSING]


def test_split_adjustment_puts_bars_on_the_adj_close_basis() -> None:
    """A 2:1 split halves raw prices and doubles volume; the features do not see it."""
    dates = pd.bdate_range("2020-01-01", periods=30)
    rng = np.random.default_rng(0)
    adj = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 30)))
    factor = np.where(np.arange(30) < 15, 2.0, 1.0)  # raw = adj * factor before the split
    raw = pd.DataFrame(
        {
            "date": dates,
            "ticker": "A",
            "open": adj * 0.99 * factor,
            "high": adj * 1.01 * factor,
            "low": adj * 0.98 * factor,
            "close": adj * factor,
            "adj_close": adj,
            "volume": 1000.0 / factor,
        }
    )
    frame = build_features(
        raw,
        config=FeatureConfig(families=("alpha158_price", "alpha158_volume"), alpha158_windows=(5,)),
    ).frame
    np.testing.assert_allclose(frame["OPEN0"], 0.99, rtol=1e-6)
    np.testing.assert_allclose(frame["VMA5"].dropna(), 1.0, rtol=1e-6)


def test_bad_inputs_get_clear_errors(prices) -> None:
    with pytest.raises(ValueError, match="unknown feature families"):
        build_features(prices, config=FeatureConfig(families=("alpha157",)))
    with pytest.raises(ValueError, match="duplicate"):
        build_features(pd.concat([prices, prices.head(1)]))
    with pytest.raises(ValueError, match="required columns"):
        build_features(prices.drop(columns="adj_close"))
    assert family_names(("regime", "garch")) == ["garch", "regime"]
