"""Regimes read the past only (truncation invariance), follow their documented rules, and
per-regime metrics are labelled with the regime known when the position was set."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_benchmark
from finpipe.evaluation.regimes import (
    STRESS_WINDOWS,
    benchmark_close,
    covered_stress_windows,
    equal_weight_index,
    market_regimes,
    metrics_by_regime,
    stress_labels,
    trend_regime,
    volatility_regime,
)

BENCHMARK = benchmark_close(synthetic_benchmark(SyntheticConfig(n_days=1500, regimes=True)))
FULL = market_regimes(BENCHMARK)


@settings(max_examples=25, deadline=None)
@given(cut=st.integers(2, 1499))
def test_regimes_are_truncation_invariant(cut: int) -> None:
    pd.testing.assert_frame_equal(market_regimes(BENCHMARK.iloc[:cut]), FULL.iloc[:cut])


def test_every_regime_occurs_on_a_switching_market() -> None:
    assert set(FULL["trend"].dropna()) == {"bull", "bear", "sideways"}
    assert set(FULL["volatility"].dropna()) == {"low", "normal", "high"}
    assert FULL["trend"].iloc[:199].isna().all() and FULL["trend"].iloc[199:].notna().all()
    # 21 returns make the first volatility; 252 volatility values the first percentile.
    first = 21 + 252 - 1
    assert FULL["volatility"].iloc[:first].isna().all()
    assert FULL["volatility"].iloc[first:].notna().all()


def _series(log_steps: np.ndarray) -> pd.Series:
    dates = pd.bdate_range("2000-01-03", periods=len(log_steps))
    return pd.Series(100 * np.exp(np.cumsum(log_steps)), index=dates)


def test_trend_rules_hand_worked() -> None:
    assert set(trend_regime(_series(np.full(300, 0.003))).dropna()) == {"bull"}
    assert set(trend_regime(_series(np.full(300, -0.003))).dropna()) == {"bear"}
    assert set(trend_regime(_series(np.zeros(300))).dropna()) == {"sideways"}
    # A long rise then 60 days of decline: price still far above its average, momentum
    # negative: the two disagree, so sideways.
    turn = trend_regime(_series(np.r_[np.full(300, 0.003), np.full(60, -0.001)]))
    assert turn.iloc[298] == "bull" and turn.iloc[359] == "sideways"


def test_volatility_rules_hand_worked() -> None:
    rng = np.random.default_rng(0)
    calm_then_wild = _series(np.r_[rng.normal(0, 0.005, 600), rng.normal(0, 0.03, 60)])
    labels = volatility_regime(calm_then_wild)
    assert (labels.iloc[-30:] == "high").all()
    stationary = volatility_regime(_series(rng.normal(0, 0.01, 3000))).dropna()
    shares = stationary.value_counts(normalize=True)
    assert ((shares > 0.2) & (shares < 0.45)).all()


def test_stress_windows_where_the_data_spans_them() -> None:
    dates = pd.bdate_range("2007-01-01", "2021-12-31")
    assert set(covered_stress_windows(dates)) == {"gfc_2008_09", "covid_2020"}
    labels = stress_labels(dates)["stress"]
    start, end = STRESS_WINDOWS["covid_2020"]
    inside = (dates >= start) & (dates <= end)
    assert (labels[inside] == "covid_2020").all()
    assert labels[~inside & (dates.year == 2020)].isna().all()
    assert covered_stress_windows(pd.bdate_range("2020-03-01", "2023-01-01")) == {
        "drawdown_2022": (pd.Timestamp("2022-01-03"), pd.Timestamp("2022-10-12"))
    }


def test_metrics_by_regime_hand_worked() -> None:
    dates = pd.bdate_range("2021-01-04", periods=7)
    regimes = pd.DataFrame(
        {
            "trend": pd.Categorical(
                ["bull", "bull", "bear", "bear", "bull", "bear", "bear"],
                categories=["bull", "sideways", "bear"],
            )
        },
        index=dates,
    )
    returns = pd.DataFrame({"s": [np.nan, 0.01, 0.02, -0.01, 0.03, -0.02, 0.01]}, index=dates)
    ic = pd.DataFrame({"m": [0.1, 0.2, -0.1, 0.0, 0.3, 0.1, -0.2]}, index=dates)
    table = metrics_by_regime(returns, regimes, ic).set_index(["regime", "series"])
    # Returns take the regime of the previous date: bull -> 01-05, 01-06, 01-11;
    # bear -> 01-07, 01-08, 01-12 (the first date has no previous regime).
    bull = [0.01, 0.02, -0.02]
    row = table.loc[("bull", "return")]
    assert row["n"] == 3 and row["mean"] == pytest.approx(np.mean(bull))
    assert row["t_stat"] == pytest.approx(stats.ttest_1samp(bull, 0).statistic)
    assert row["sharpe"] == pytest.approx(np.mean(bull) / np.std(bull, ddof=1) * math.sqrt(252))
    assert math.isnan(row["max_drawdown"])
    bear = table.loc[("bear", "return")]
    assert bear["n"] == 3 and bear["total_return"] == pytest.approx(0.99 * 1.03 * 1.01 - 1)
    # IC takes the regime of its own date.
    ic_bull = table.loc[("bull", "rank_ic")]
    assert ic_bull["n"] == 3 and ic_bull["mean"] == pytest.approx(0.2)
    assert list(dict.fromkeys(table.index.get_level_values("regime"))) == ["bull", "bear"]

    windows = pd.DataFrame({"stress": [None, "w", "w", "w", None, None, None]}, index=dates)
    stress = metrics_by_regime(returns, windows, return_lag=0, contiguous=True).iloc[0]
    assert stress["n"] == 3
    # Window 01-05..01-07 earns 1%, 2%, -1%: wealth 1.01, 1.0302, 1.019898.
    assert stress["max_drawdown"] == pytest.approx(1.019898 / 1.0302 - 1)


def test_benchmark_inputs() -> None:
    frame = synthetic_benchmark(SyntheticConfig(n_days=50))
    close = benchmark_close(frame)
    assert close.index.is_monotonic_increasing and len(close) == 50
    returns = pd.DataFrame({"a": [np.nan, 0.1, -0.1], "b": [np.nan, 0.0, np.nan]})
    np.testing.assert_allclose(equal_weight_index(returns), [1.0, 1.05, 0.945])
