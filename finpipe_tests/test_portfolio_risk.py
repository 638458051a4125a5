"""Risk figures, the Kupiec test, orders, factor scores and the rebalanced simulation
against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from finpipe.evaluation.backtest import construction_var_backtest
from finpipe.evaluation.simulation import simulate_rebalanced
from finpipe.portfolio.factors import factor_scores, score_signal, zscore
from finpipe.portfolio.orders import (
    ORDER_COLUMNS,
    current_weights,
    read_holdings,
    rebalance_orders,
    trade_prices,
)
from finpipe.portfolio.risk import (
    beta,
    gaussian_var_cvar,
    historical_var_cvar,
    horizon_returns,
    kupiec_test,
    risk_contributions,
    stress_losses,
    var_backtest,
    var_table,
)
from finpipe.portfolio.risk_model import RiskModel

# -0.05, -0.04, ..., 0.14: twenty returns, sorted.
TWENTY = np.round(np.arange(-0.05, 0.15, 0.01), 10)


def test_historical_var_and_cvar_by_hand() -> None:
    shuffled = np.random.default_rng(0).permutation(TWENTY)
    # 95%: ceil(20 x 0.05) = 1 tail scenario; 90%: 2; 80%: 4.
    assert historical_var_cvar(shuffled, 0.95) == pytest.approx((0.05, 0.05))
    assert historical_var_cvar(shuffled, 0.90) == pytest.approx((0.04, 0.045))
    assert historical_var_cvar(shuffled, 0.80) == pytest.approx((0.02, 0.035))
    hundred = np.concatenate([[-0.10, -0.08, -0.07, -0.06, -0.05, -0.04], np.zeros(94)])
    # 95% of 100: the 5th worst is the VaR, the mean of the 5 worst the CVaR; 99%: the worst.
    assert historical_var_cvar(hundred, 0.95) == pytest.approx((0.05, 0.072))
    assert historical_var_cvar(hundred, 0.99) == pytest.approx((0.10, 0.10))


def test_gaussian_var_and_cvar_by_hand() -> None:
    # z(5%) = -1.6448536, phi(z) = 0.1031356; z(1%) = -2.3263479, phi(z) = 0.0266521.
    assert gaussian_var_cvar(0.0, 0.01, 0.95) == pytest.approx(
        (0.016448536, 0.01 * 0.1031356 / 0.05), rel=1e-6
    )
    assert gaussian_var_cvar(0.0, 0.01, 0.99) == pytest.approx(
        (0.023263479, 0.01 * 0.0266521 / 0.01), rel=1e-5
    )
    # 10 days: the mean times 10, the standard deviation times sqrt(10).
    var, cvar = gaussian_var_cvar(0.001, 0.01, 0.95, horizon=10)
    assert var == pytest.approx(-(0.01 - math.sqrt(10) * 0.01 * 1.6448536), rel=1e-6)
    assert cvar == pytest.approx(-(0.01 - math.sqrt(10) * 0.01 * 0.1031356 / 0.05), rel=1e-6)


def test_horizon_returns_compound_overlapping_windows() -> None:
    daily = np.array([0.1, -0.1, 0.2, 0.0])
    np.testing.assert_allclose(
        horizon_returns(daily, 2), [1.1 * 0.9 - 1, 0.9 * 1.2 - 1, 1.2 * 1.0 - 1]
    )
    np.testing.assert_allclose(horizon_returns(daily, 1), daily)


def risk_model(scenarios: np.ndarray, cov: np.ndarray | None = None) -> RiskModel:
    dates = pd.bdate_range("2021-01-01", periods=len(scenarios))
    cov = np.cov(scenarios, rowvar=False) if cov is None else cov
    tickers = [f"T{i}" for i in range(scenarios.shape[1])]
    return RiskModel(dates[-1], tickers, cov, scenarios, dates, 0.0, False)


def test_var_table_of_a_portfolio_by_hand() -> None:
    # T0 holds the twenty returns, T1 twice them: 50/50 has 1.5 x the returns.
    scenarios = np.column_stack([TWENTY, 2 * TWENTY])
    weights = pd.Series({"T0": 0.5, "T1": 0.5})
    filtered = risk_model(0.5 * scenarios)  # as if the GARCH forecast halved the volatility
    table = var_table(weights, risk_model(scenarios), filtered, levels=(0.90,), horizons=(1,))
    value = table.set_index(["measure", "model"])["value"]
    assert value[("var", "historical")] == pytest.approx(1.5 * 0.04)
    assert value[("cvar", "historical")] == pytest.approx(1.5 * 0.045)
    assert value[("var", "garch")] == pytest.approx(0.75 * 0.04)
    r = 1.5 * TWENTY
    z = -1.2815516  # z(10%)
    assert value[("var", "gaussian")] == pytest.approx(-(r.mean() + r.std(ddof=1) * z), rel=1e-6)
    assert set(table["horizon_days"]) == {1} and set(table["level"]) == {0.90}


def test_risk_contributions_by_hand() -> None:
    # Uncorrelated names: shares w_i^2 s_i^2 / sum_j w_j^2 s_j^2.
    cov = np.diag([0.01**2, 0.02**2, 0.03**2])
    model = risk_model(np.zeros((3, 3)), cov)
    table = risk_contributions(pd.Series({"T0": 0.5, "T1": 0.5, "T2": 0.0}), model)
    assert list(table["ticker"]) == ["T0", "T1"]  # unheld names are left out
    np.testing.assert_allclose(table["contribution"], [0.2, 0.8])
    np.testing.assert_allclose(table["contribution"].sum(), 1.0)


def test_beta_by_hand() -> None:
    rng = np.random.default_rng(0)
    bench = rng.normal(0, 0.01, 300)
    noise = rng.normal(0, 0.005, 300)
    noise -= np.polyval(np.polyfit(bench, noise, 1), bench)  # orthogonal to the benchmark
    model = risk_model(np.column_stack([2 * bench + noise, bench]))
    benchmark = pd.Series(bench, index=model.dates)
    assert beta(pd.Series({"T0": 1.0}), model, benchmark) == pytest.approx(2.0)
    assert beta(pd.Series({"T0": 0.5, "T1": 0.5}), model, benchmark) == pytest.approx(1.5)


def test_stress_losses_by_hand() -> None:
    dates = pd.bdate_range("2020-02-17", periods=6)  # 02-17 .. 02-24
    close = pd.DataFrame(
        {"A": [100, 100, 90, 80, 85, 70], "B": [50, 50, 55, 60, 60, 62], "C": np.nan}, dates
    )
    windows = {"crash": ("2020-02-19", "2020-02-21"), "later": ("2021-01-01", "2021-02-01")}
    table = stress_losses(pd.Series({"A": 0.6, "B": 0.4, "C": 0.0}), close, windows)
    # Bought at the close before the window (02-18), held to 02-21:
    # A 100 -> 85 (-15%), B 50 -> 60 (+20%): loss = -(0.6 x -0.15 + 0.4 x 0.2) = 0.01.
    assert list(table["window"]) == ["crash"]  # no prices for the later window
    assert table["loss"].iloc[0] == pytest.approx(0.01)
    assert table["missing"].iloc[0] == []


def test_kupiec_against_its_formula() -> None:
    n, x, level = 250, 8, 0.99
    p = 0.01
    expected = -2 * (
        (n - x) * math.log(1 - p)
        + x * math.log(p)
        - (n - x) * math.log(1 - x / n)
        - x * math.log(x / n)
    )
    lr, p_value = kupiec_test(x, n, level)
    assert lr == pytest.approx(expected)
    # chi-square(1) survival: erfc(sqrt(LR / 2)).
    assert p_value == pytest.approx(math.erfc(math.sqrt(expected / 2)))
    # No breach: LR = -2 n ln(1 - p); as many as expected: about 0.
    assert kupiec_test(0, 250, 0.99)[0] == pytest.approx(-2 * 250 * math.log(0.99))
    assert kupiec_test(5, 500, 0.99)[0] == pytest.approx(0.0, abs=1e-12)
    assert kupiec_test(250, 250, 0.99)[0] == pytest.approx(-2 * 250 * math.log(0.01))


def test_var_backtest_counts_breaches() -> None:
    dates = pd.bdate_range("2021-01-01", periods=5)
    returns = pd.Series([-0.03, 0.01, -0.015, -0.02, 0.0], dates)
    stated = pd.Series([0.02, 0.02, 0.02, 0.01, 0.01], dates)
    out = var_backtest(returns, stated, 0.95)
    assert (out["n"], out["breaches"]) == (5, 2)  # -0.03 > 0.02 and -0.02 > 0.01
    assert out["expected"] == pytest.approx(0.25)
    assert out["kupiec_lr"] == pytest.approx(kupiec_test(2, 5, 0.95)[0])


def test_simulate_rebalanced_matches_a_holdings_loop() -> None:
    rng = np.random.default_rng(1)
    dates = pd.bdate_range("2021-01-01", periods=30)
    returns = pd.DataFrame(rng.normal(0, 0.02, (30, 3)), dates, list("ABC"))
    targets = pd.DataFrame(
        [[0.5, -0.5, 0.0], [0.2, 0.3, 0.5]], index=[dates[3], dates[10]], columns=list("ABC")
    )
    result = simulate_rebalanced(targets, returns, dates[20], cost_bps=10, execution_lag=1)
    # Dollar holdings: bought at the close of dates[4] (lag 1), rebalanced at dates[11],
    # held to dates[22] (the last signal + lag + 1).
    capital, holdings, expected = 1.0, targets.iloc[0].copy(), {}
    for i in range(5, 23):
        pnl = float((holdings * returns.iloc[i]).sum())
        expected[dates[i]] = pnl / capital
        holdings = holdings * (1 + returns.iloc[i])
        capital += pnl
        if i == 11:
            drifted = holdings / capital
            holdings = targets.iloc[1] * capital
    np.testing.assert_allclose(result.gross_returns.loc[list(expected)], list(expected.values()))
    assert result.gross_returns.index[0] == dates[4] and result.turnover.iloc[0] == 1.0
    assert result.turnover.loc[dates[11]] == pytest.approx((targets.iloc[1] - drifted).abs().sum())
    assert (result.turnover.drop([dates[4], dates[11]]) == 0).all()  # nothing trades between
    np.testing.assert_allclose(result.costs, result.turnover * 1e-3)


def test_construction_var_backtest_applies_each_stated_var_while_it_is_held() -> None:
    dates = pd.bdate_range("2021-01-01", periods=8)
    returns = pd.DataFrame({"A": [0.0, 0.0, -0.03, 0.01, -0.015, -0.02, 0.0, -0.05]}, dates)
    targets = pd.DataFrame(
        {"date": [dates[0], dates[3]], "method": "m", "ticker": "A", "weight": 1.0}
    )
    stated = pd.DataFrame(
        {
            "date": [dates[0], dates[3]],
            "method": "m",
            "model": "historical",
            "level": 0.95,
            "value": [0.02, 0.01],
        }
    )
    table = construction_var_backtest(targets, stated, returns, dates[5], execution_lag=1)
    # Held from dates[2]: 0.02 applies to dates[2..4] (-0.03 breaches), 0.01 from dates[5]
    # to dates[7] (-0.02 and -0.05 breach).
    row = table.iloc[0]
    assert (row["n"], row["breaches"]) == (6, 3)


def test_orders_from_holdings_by_hand(tmp_path) -> None:
    holdings_file = tmp_path / "holdings.csv"
    pd.DataFrame({"ticker": ["A", "B", "CASH"], "shares": [10, 5, 500.0]}).to_csv(
        holdings_file, index=False
    )
    holdings = read_holdings(str(holdings_file))
    prices = pd.Series({"A": 100.0, "B": 40.0, "C": 25.0})
    # Value: 10 x 100 + 5 x 40 + 500 = 1700.
    np.testing.assert_allclose(
        current_weights(holdings, prices, 0.0)[["A", "B"]], [1000 / 1700, 200 / 1700]
    )
    orders = rebalance_orders(pd.Series({"A": 0.5, "C": 0.5}), holdings, prices, cost_bps=10)
    assert list(orders.columns) == ORDER_COLUMNS
    table = orders.set_index("ticker")
    # A: 850 / 100 = 8.5 -> 8 shares (sell 2); B: sell all 5; C: 850 / 25 = 34 shares.
    assert table.loc["A", ["target_shares", "trade_shares", "side"]].tolist() == [8, -2, "SELL"]
    assert table.loc["B", ["target_shares", "trade_shares", "side"]].tolist() == [0, -5, "SELL"]
    assert table.loc["C", ["target_shares", "trade_shares", "side"]].tolist() == [34, 34, "BUY"]
    np.testing.assert_allclose(table["notional"], [-200.0, -200.0, 850.0])
    np.testing.assert_allclose(table["estimated_cost"], [0.2, 0.2, 0.85])
    cash = rebalance_orders(pd.Series({"C": 1.0}), read_holdings(""), prices, capital=1000)
    assert cash[["ticker", "trade_shares"]].values.tolist() == [["C", 40.0]]
    with pytest.raises(ValueError, match=r"expected a \.parquet or \.csv"):
        read_holdings("holdings.xlsx")


def test_trade_prices_use_the_last_close_on_or_before_the_date() -> None:
    prices = pd.DataFrame(
        {
            "date": pd.to_datetime(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-04"]),
            "ticker": ["A", "A", "A", "B"],
            "adj_close": [1.0, 2.0, 3.0, 9.0],
        }
    )
    assert trade_prices(prices, "2021-01-05").to_dict() == {"A": 2.0, "B": 9.0}


def test_factor_scores_by_hand() -> None:
    tickers = ["A", "B", "C", "D"]
    forecast = pd.Series([0.01, 0.02, 0.03, 0.04], tickers)
    volatility = pd.Series([0.04, 0.03, 0.02, 0.01], tickers)
    scores = factor_scores(
        tickers, "2021-01-04", forecast, volatility, weights={"forecast": 1.0, "low_risk": 1.0}
    )
    z = zscore(forecast)  # both factors rank the names alike: the score is that z-score
    np.testing.assert_allclose(scores.score, z)
    np.testing.assert_allclose(z, [-1.3416408, -0.4472136, 0.4472136, 1.3416408])
    np.testing.assert_allclose(score_signal(scores.score, forecast), forecast)
    features = pd.DataFrame(
        {"date": pd.Timestamp("2021-01-04"), "ticker": tickers, "mom_12_1": [0.4, 0.3, 0.2, 0.1]}
    )
    mixed = factor_scores(
        tickers,
        "2021-01-04",
        forecast,
        volatility,
        features=features,
        weights={"forecast": 1.0, "momentum": 1.0, "value": 1.0},
    )
    np.testing.assert_allclose(mixed.score, 0.0, atol=1e-12)  # momentum cancels the forecast
    assert mixed.skipped == {"value": "the source has no fundamentals"}
    fundamentals = pd.DataFrame(
        {
            "ticker": ["A", "B", "A", "B", "A", "B"],
            "period_end": pd.to_datetime(["2020-09-30"] * 4 + ["2020-12-31"] * 2),
            "available_at": pd.to_datetime(["2020-11-14"] * 4 + ["2021-02-14"] * 2),
            "field": ["gross_profit", "gross_profit", "total_assets", "total_assets"] * 1
            + ["gross_profit", "gross_profit"],
            "value": [10.0, 30.0, 100.0, 100.0, 99.0, 99.0],
        }
    )
    quality = factor_scores(
        ["A", "B"],
        "2021-01-04",
        forecast,
        volatility,
        fundamentals=fundamentals,
        weights={"quality": 1.0},
    )
    # The December quarter is not public yet: 10 / 100 and 30 / 100.
    np.testing.assert_allclose(quality.table["quality"], [-1.0, 1.0])
