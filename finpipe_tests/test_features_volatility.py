"""Volatility features against pandas, hand-worked formulas and `arch` (GARCH)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from arch.univariate import GARCH

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.features import FeatureConfig, GarchParams, build_features, fit_garch
from finpipe.features.garch import garch_forecast

ANNUAL = np.sqrt(252)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return synthetic_panel(SyntheticConfig(n_tickers=3, n_days=300, seed=8))


def _one(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    return frame.loc[frame["ticker"] == ticker].reset_index(drop=True)


def test_realized_and_ewma_volatility_match_pandas(prices) -> None:
    frame = build_features(prices, config=FeatureConfig(families=("volatility_close",))).frame
    for ticker in ("S0000", "S0002"):
        ours, bars = _one(frame, ticker), _one(prices, ticker)
        r = np.log(bars["adj_close"]).diff()
        for w in (5, 21, 63, 126):
            want = r.rolling(w, min_periods=w).std() * ANNUAL
            np.testing.assert_allclose(ours[f"rv_{w}"], want, rtol=1e-5, equal_nan=True)
        np.testing.assert_allclose(
            ours["rv_ratio_21_63"], (ours["rv_21"] / ours["rv_63"]), rtol=1e-5, equal_nan=True
        )
        ewma = (r * r).ewm(alpha=0.06, adjust=False, min_periods=21).mean()
        np.testing.assert_allclose(
            ours["ewma_vol"], np.sqrt(ewma) * ANNUAL, rtol=1e-5, equal_nan=True
        )


def test_parkinson_and_garman_klass_hand_worked() -> None:
    # Two tickers' constant bars: H/L = e^0.02 and C/O = e^0.01 every day.
    dates = pd.bdate_range("2020-01-01", periods=30)
    bars = pd.DataFrame(
        {
            "date": np.tile(dates, 2),
            "ticker": np.repeat(["A", "B"], 30),
            "open": 100.0,
            "high": 100.0 * np.exp(0.02),
            "low": 100.0,
            "close": 100.0 * np.exp(0.01),
            "adj_close": 100.0 * np.exp(0.01),
            "volume": 1e6,
        }
    )
    config = FeatureConfig(families=("volatility_range", "volatility_ohlc"))
    frame = build_features(bars, config=config).frame
    parkinson = np.sqrt(252 * 0.02**2 / (4 * np.log(2)))
    garman_klass = np.sqrt(252 * (0.5 * 0.02**2 - (2 * np.log(2) - 1) * 0.01**2))
    last = frame.iloc[-1]
    assert last["parkinson_21"] == pytest.approx(parkinson, rel=1e-6)
    assert last["garman_klass_21"] == pytest.approx(garman_klass, rel=1e-6)
    assert frame["parkinson_21"].iloc[: 2 * 20].isna().all()  # 20 dates x 2 tickers


def test_garch_recursion_matches_arch_given_params() -> None:
    rng = np.random.default_rng(0)
    returns = 0.01 * rng.standard_normal((400, 2))  # (dates, tickers)
    returns[:30, 1] = np.nan  # the second ticker starts later
    omega, alpha, beta = np.array([2e-6, 5e-6]), np.array([0.08, 0.05]), np.array([0.9, 0.9])
    start = np.array([1e-4, 2e-4])
    ours = garch_forecast(returns, omega, alpha, beta, start)
    for i in range(2):
        r = returns[:, i][np.isfinite(returns[:, i])]
        # arch: sigma2[0] = omega + (alpha + beta) * backcast; sigma2[t] uses r[t-1].
        # Ours at t is arch's sigma2[t + 1], the forecast made at the close of t.
        backcast = (start[i] - omega[i]) / (alpha[i] + beta[i])
        resids = np.append(r, 0.0)
        sigma2 = np.empty_like(resids)
        bounds = np.column_stack([np.zeros_like(resids), np.full_like(resids, np.inf)])
        GARCH().compute_variance(
            np.array([omega[i], alpha[i], beta[i]]), resids, sigma2, backcast, bounds
        )
        got = ours[:, i][np.isfinite(returns[:, i])]
        np.testing.assert_allclose(got, sigma2[1:], rtol=1e-12)
        assert sigma2[0] == pytest.approx(start[i])
    assert np.isnan(ours[:30, 1]).all()


def test_fit_garch_agrees_with_arch_and_uses_training_data_only() -> None:
    rng = np.random.default_rng(3)
    n_days, omega, alpha, beta = 1500, 4e-6, 0.08, 0.88
    r = np.empty(n_days)
    variance = omega / (1 - alpha - beta)
    for t in range(n_days):
        r[t] = np.sqrt(variance) * rng.standard_normal()
        variance = omega + alpha * r[t] ** 2 + beta * variance
    dates = pd.bdate_range("2010-01-01", periods=n_days + 1)
    close = 50 * np.exp(np.concatenate([[0.0], np.cumsum(r)]))
    prices = pd.DataFrame({"date": dates, "ticker": "A", "adj_close": close})
    train_end = dates[1000]
    params = fit_garch(prices, train_end)
    row = params.table.loc["A"]
    reference = arch_model(100 * r[:1000], mean="Zero", vol="GARCH", p=1, q=1, rescale=False)
    fitted = reference.fit(disp="off").params
    assert row["alpha"] == pytest.approx(fitted["alpha[1]"], abs=0.02)
    assert row["beta"] == pytest.approx(fitted["beta[1]"], abs=0.03)
    assert row["n_obs"] == 1000 and row["fitted"]
    # Changing prices after train_end leaves the fit unchanged.
    shocked = prices.assign(adj_close=np.where(prices["date"] > train_end, close * 3, close))
    pd.testing.assert_frame_equal(fit_garch(shocked, train_end).table, params.table)


def test_garch_feature_needs_params_and_uses_them(prices) -> None:
    skipped = build_features(prices, config=FeatureConfig(families=("garch",)))
    assert "garch" in skipped.skipped and "fit_garch" in skipped.skipped["garch"]
    dates = np.sort(prices["date"].unique())
    params = fit_garch(prices, dates[200], min_obs=150)
    assert isinstance(params, GarchParams)
    frame = build_features(prices, config=FeatureConfig(families=("garch",), garch=params)).frame
    ours = _one(frame, "S0001")["garch_vol"].to_numpy(np.float64)
    r = np.log(_one(prices, "S0001")["adj_close"]).diff().to_numpy()
    omega, alpha, beta, start = params.table.loc["S0001", ["omega", "alpha", "beta", "variance"]]
    variance, want = start, [np.nan]
    for value in r[1:]:
        variance = omega + alpha * value**2 + beta * variance
        want.append(np.sqrt(252 * variance))
    np.testing.assert_allclose(ours, want, rtol=1e-6, equal_nan=True)
