"""No look-ahead, proven: features at date t do not change when data after t is cut or altered.

Truncation invariance is checked with hypothesis on random synthetic panels (late listings,
gaps, zero-volume days, splits, close-only sources, statements released late or out of
order) for every family at once, with windows shrunk so
that short panels exercise them; a deterministic test repeats it with the published windows.
The second half shows that labels, and only labels, read past their date.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finpipe.data.sources.synthetic import (
    SyntheticConfig,
    synthetic_benchmark,
    synthetic_panel,
    synthetic_universe,
)
from finpipe.features import FAMILIES, FeatureConfig, GarchParams, build_features
from finpipe.features.labels import forward_returns
from finpipe_tests.synthetic_fundamentals import synthetic_statements

TICKERS = [f"S{i:04d}" for i in range(8)]
GARCH = GarchParams(
    train_end=pd.Timestamp("2010-01-01"),
    table=pd.DataFrame(
        {
            "omega": np.linspace(2e-6, 6e-6, 6),
            "alpha": np.linspace(0.03, 0.12, 6),
            "beta": np.linspace(0.94, 0.8, 6),
            "variance": np.linspace(1e-4, 4e-4, 6),
            "n_obs": 500,
            "fitted": True,
        },
        index=pd.Index(TICKERS[:6], name="ticker"),  # the last tickers get the medians
    ),
)
SHORT_WINDOWS = FeatureConfig(
    alpha158_windows=(3, 5, 8),
    rsi_windows=(4,),
    macd_spans=(3, 6, 3),
    bollinger_window=5,
    stochastic_window=5,
    stochastic_smooth=2,
    williams_window=5,
    atr_window=4,
    obv_window=5,
    mfi_window=4,
    vwap_window=5,
    volatility_windows=(3, 6, 12),
    range_volatility_window=5,
    ewma_min_periods=3,
    garch=GARCH,
    momentum_horizons=(5, 10),
    skip_momentum_months=((3, 1),),
    days_per_month=4,
    reversal_horizons=(1, 3),
    ma_gap_windows=(4, 9),
    volume_short=2,
    volume_long=6,
    volume_window=5,
    microstructure_window=5,
    benchmark_windows=(6, 15),
    cross_sectional_bases=("mom_10", "strev_3", "rv_6", "amihud_5", "bench_beta_15"),
    sector_horizon=6,
    vix_change=2,
    credit_change=4,
    tickers_per_block=2,  # several ticker blocks even on small panels
)


def macro_series(dates: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    """VIX (public the next day), BAA/AAA and core CPI (public weeks after the month)."""
    rng = np.random.default_rng(seed)
    months = pd.date_range(dates[0] - pd.DateOffset(months=14), dates[-1], freq="MS")
    parts = [
        pd.DataFrame(
            {
                "date": dates,
                "series_id": "VIXCLS",
                "value": 20 + rng.normal(0, 2, len(dates)).cumsum(),
                "available_at": dates + pd.offsets.BDay(1),
            }
        )
    ]
    for sid, level in (("BAA", 6.0), ("AAA", 4.5), ("CPILFESL", 250.0)):
        lag_days = rng.integers(10, 45, len(months))
        parts.append(
            pd.DataFrame(
                {
                    "date": months,
                    "series_id": sid,
                    "value": level + rng.normal(0, 0.2, len(months)).cumsum(),
                    "available_at": months
                    + pd.offsets.MonthEnd(0)
                    + pd.to_timedelta(lag_days, "D"),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@st.composite
def panels(draw):
    """A random panel with its side inputs and a cut date."""
    n_tickers = draw(st.integers(2, 6))
    n_days = draw(st.integers(40, 90))
    seed = draw(st.integers(0, 10_000))
    config = SyntheticConfig(n_tickers=n_tickers, n_days=n_days, seed=seed, n_sectors=2)
    prices = synthetic_panel(config)
    dates = config.dates
    starts = draw(st.lists(st.integers(0, n_days // 2), min_size=n_tickers, max_size=n_tickers))
    first = dict(zip(config.tickers, dates[starts], strict=True))
    listed = prices["date"] >= prices["ticker"].map(first)
    gaps = draw(
        st.lists(st.tuples(st.integers(0, n_tickers - 1), st.integers(0, n_days - 1)), max_size=5)
    )
    holes = {(config.tickers[i], dates[d]) for i, d in gaps}
    in_gap = [(t, d) in holes for t, d in zip(prices["ticker"], prices["date"], strict=True)]
    prices = prices.loc[listed & ~np.array(in_gap, dtype=bool)].reset_index(drop=True)
    if draw(st.booleans()):
        zero = prices.sample(frac=0.05, random_state=seed).index
        prices.loc[zero, "volume"] = 0.0
    split = np.random.default_rng(seed).random(len(prices)) < 0.02
    prices = prices.assign(split_ratio=np.where(split, 2.0, 1.0))
    if draw(st.booleans()):
        prices = prices[["date", "ticker", "adj_close"]]
    cut = dates[draw(st.integers(max(n_days // 3, min(starts) + 5), n_days - 1))]
    inputs = {
        "prices": prices,
        "benchmark": synthetic_benchmark(config),
        "macro": macro_series(dates, seed),
        "fundamentals": synthetic_statements(list(config.tickers), dates, seed),
        "universe": synthetic_universe(config),
    }
    return inputs, cut


def known_at(inputs: dict, cut: pd.Timestamp) -> dict:
    """The inputs as they stood at the close of `cut`."""
    return {
        "prices": inputs["prices"].loc[inputs["prices"]["date"] <= cut],
        "benchmark": inputs["benchmark"].loc[inputs["benchmark"]["date"] <= cut],
        "macro": inputs["macro"].loc[inputs["macro"]["available_at"] <= cut],
        "fundamentals": inputs["fundamentals"].loc[inputs["fundamentals"]["available_at"] <= cut],
        "universe": inputs["universe"],
    }


def assert_same_up_to(full: pd.DataFrame, truncated: pd.DataFrame, cut: pd.Timestamp) -> None:
    head = full.loc[full["date"] <= cut].reset_index(drop=True)
    assert list(head.columns) == list(truncated.columns)
    assert head[["date", "ticker"]].equals(truncated[["date", "ticker"]])
    changed = [
        c
        for c in head.columns[2:]
        if not np.array_equal(head[c].to_numpy(), truncated[c].to_numpy(), equal_nan=True)
    ]
    assert not changed, f"features at or before {cut.date()} changed with later data: {changed}"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(panels())
def test_every_family_is_truncation_invariant(drawn) -> None:
    inputs, cut = drawn
    full = build_features(**inputs, config=SHORT_WINDOWS)
    truncated = build_features(**known_at(inputs, cut), config=SHORT_WINDOWS)
    assert_same_up_to(full.frame, truncated.frame, cut)
    if "open" in inputs["prices"].columns:
        assert set(full.skipped) == {"alpha158_extremes"}
    else:
        needs_bars = {f.name for f in FAMILIES if set(f.needs) - {"adj_close"}}
        market_cap = {"fundamentals_earnings_yield", "fundamentals_book_to_price"}  # close
        assert set(full.skipped) == needs_bars | market_cap
    assert len(full.computed) + len(full.skipped) == len(FAMILIES)


def test_published_windows_are_truncation_invariant() -> None:
    config = SyntheticConfig(n_tickers=3, n_days=330, seed=21, n_sectors=2, regimes=True)
    inputs = {
        "prices": synthetic_panel(config).assign(split_ratio=1.0),
        "benchmark": synthetic_benchmark(config),
        "macro": macro_series(config.dates, 21),
        "fundamentals": synthetic_statements(list(config.tickers), config.dates, 21),
        "universe": synthetic_universe(config),
    }
    params = FeatureConfig(garch=GARCH)
    full = build_features(**inputs, config=params)
    assert set(full.skipped) == {"alpha158_extremes"}
    for cut in config.dates[[290, 329]]:
        truncated = build_features(**known_at(inputs, cut), config=params)
        assert_same_up_to(full.frame, truncated.frame, cut)
    assert full.frame.loc[full.frame["date"] > config.dates[300], "regime_vol_pct"].notna().all()


def test_labels_are_the_only_reader_of_the_future() -> None:
    """Rewrite every price after a cut date: features up to the cut stay put, labels whose
    label_end is after the cut change, and labels ending by the cut do not."""
    config = SyntheticConfig(n_tickers=4, n_days=120, seed=5)
    prices = synthetic_panel(config)
    cut = config.dates[80]
    later = prices["date"] > cut
    shock = np.exp(np.random.default_rng(0).normal(0, 0.05, later.sum()))
    altered = prices.copy()
    for column in ("open", "high", "low", "close", "adj_close"):
        altered.loc[later, column] = prices.loc[later, column] * shock
    altered.loc[later, "volume"] = prices.loc[later, "volume"] * 1.7
    short = FeatureConfig(alpha158_windows=(5, 10), garch=GARCH)
    assert_same_up_to(
        build_features(prices, config=short).frame,
        build_features(altered.loc[~later], config=short).frame,
        cut,
    )
    assert_same_up_to(
        build_features(prices, config=short).frame,
        build_features(altered, config=short)
        .frame.loc[lambda f: f["date"] <= cut]
        .reset_index(drop=True),
        cut,
    )
    before, after = forward_returns(prices), forward_returns(altered)
    assert before[["date", "ticker", "horizon", "label_end"]].equals(
        after[["date", "ticker", "horizon", "label_end"]]
    )
    ends_by_cut = (before["label_end"] <= cut).to_numpy()
    np.testing.assert_array_equal(
        before["fwd_return"][ends_by_cut], after["fwd_return"][ends_by_cut]
    )
    reads_future = ~ends_by_cut & (before["date"] <= cut).to_numpy()
    assert reads_future.sum() > 0
    assert (before["fwd_return"][reads_future] != after["fwd_return"][reads_future]).all()
