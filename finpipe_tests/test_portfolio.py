"""Portfolio simulation against a hand-worked example and a plain per-date loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.core.prices import close_matrix, daily_returns
from finpipe.evaluation.baselines import (
    baseline_predictions,
    momentum_12_1,
    random_signal,
    short_term_reversal,
)
from finpipe.evaluation.simulation import (
    buy_and_hold,
    simulate_portfolio,
    top_k_weights,
)

DATES = pd.bdate_range("2020-01-01", periods=6)
RETURNS = pd.DataFrame(
    {
        "A": [0.0, 0.01, 0.02, -0.01, 0.00, 0.03],
        "B": [0.0, -0.02, 0.01, 0.00, 0.01, 0.00],
        "C": [0.0, 0.00, -0.01, 0.02, 0.01, -0.01],
        "D": [0.0, 0.01, 0.00, 0.00, -0.02, 0.01],
    },
    index=DATES,
)


def _predictions(rows: list[list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": np.repeat(DATES[: len(rows)], 4),
            "ticker": list("ABCD") * len(rows),
            "prediction": np.ravel(rows),
        }
    )


def test_long_short_hand_worked_with_costs_and_turnover() -> None:
    # Signals on the first three dates: A best and D worst, then reversed, then as at first.
    preds = _predictions([[4, 3, 2, 1], [1, 2, 3, 4], [4, 3, 2, 1]])
    res = simulate_portfolio(preds, RETURNS, k=1, kind="long_short", cost_bps=10, execution_lag=1)
    # The signal of 01-01 trades at the close of 01-02 (lag 1) and earns 01-03's returns.
    assert list(res.returns.index) == list(DATES[1:5])
    np.testing.assert_allclose(res.weights.loc[DATES[2]], [1, 0, 0, -1])
    np.testing.assert_allclose(res.weights.loc[DATES[3]], [-1, 0, 0, 1])
    # Gross: 01-03: A - D = 0.02 - 0.00; 01-06: D - A = 0 + 0.01; 01-07: A - D = 0.00 - -0.02.
    np.testing.assert_allclose(res.gross_returns, [0.0, 0.02, 0.01, 0.02])
    # Turnover at the close of 01-02: open both legs (2). At 01-03: after the day the book
    # drifted to A = 1.02 / 1.02 = 1, D = -1.00 / 1.02; flipping to A = -1, D = +1 trades
    # 2 + (1 + 1 / 1.02). At 01-06: A = -0.99 / 1.01, D = 1.0 / 1.01 flip back:
    # (1 + 0.99 / 1.01) + (1 + 1 / 1.01). Nothing trades after the last signal's position.
    expected_turnover = [2.0, 2 + 1 + 1 / 1.02, 2 + 0.99 / 1.01 + 1 / 1.01, 0.0]
    np.testing.assert_allclose(res.turnover, expected_turnover)
    np.testing.assert_allclose(res.costs, np.array(expected_turnover) * 10e-4)
    np.testing.assert_allclose(res.returns, res.gross_returns - res.costs)


def test_long_only_top_k_and_zero_lag() -> None:
    preds = _predictions([[4, 3, 2, 1], [1, 2, 3, 4]])
    res = simulate_portfolio(preds, RETURNS, k=2, kind="long_only", cost_bps=0, execution_lag=0)
    # Lag 0: the signal of 01-01 trades at that close and earns 01-02: (A + B) / 2; the
    # reversed signal of 01-02 holds C and D over 01-03.
    assert list(res.returns.index) == list(DATES[:3])
    np.testing.assert_allclose(res.gross_returns, [0.0, (0.01 - 0.02) / 2, (-0.01 + 0.00) / 2])
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0)


def test_fractional_k_and_missing_names() -> None:
    signal = pd.DataFrame(
        [[5.0, 4.0, 3.0, 2.0, 1.0], [np.nan, np.nan, 1.0, 2.0, np.nan], [np.nan] * 5],
        columns=list("ABCDE"),
    )
    weights = top_k_weights(signal, 0.4, "long_short")
    # Five names: k = 2 per leg; two names: k = max(floor(0.8), 1) = 1; none: NaN row.
    np.testing.assert_allclose(weights.iloc[0], [0.5, 0.5, 0.0, -0.5, -0.5])
    np.testing.assert_allclose(weights.iloc[1], [0.0, 0.0, -1.0, 1.0, 0.0])
    assert weights.iloc[2].isna().all()
    with pytest.raises(ValueError, match="k must be"):
        top_k_weights(signal, 1.5)


def _loop_reference(
    signal: pd.DataFrame, returns: pd.DataFrame, k: int, cost_bps: float, lag: int
) -> pd.Series:
    """Per-date loop: weights from the signal lag + 1 dates back, drift, rebalance, pay."""
    names = list(returns.columns)
    held = dict.fromkeys(names, 0.0)
    net = {}
    dates = list(returns.index)
    first = dates.index(signal.index[0])
    last = min(dates.index(signal.index[-1]) + lag + 1, len(dates) - 1)
    for i in range(first + lag, last + 1):
        day = dates[i]
        gross = sum(held[n] * returns.at[day, n] for n in names) if i > first + lag else 0.0
        drifted = {
            n: held[n] * (1 + returns.at[day, n]) / (1 + gross) if i > first + lag else 0.0
            for n in names
        }
        cost = 0.0
        source = i - lag
        if source <= dates.index(signal.index[-1]) and i < last:
            row = signal.loc[dates[source]].sort_values(ascending=False, kind="stable")
            target = dict.fromkeys(names, 0.0)
            for n in row.index[:k]:
                target[n] = 1.0 / k
            for n in row.index[-k:]:
                target[n] = -1.0 / k
            cost = sum(abs(target[n] - drifted[n]) for n in names) * cost_bps * 1e-4
            held = target
        else:
            held = drifted
        net[day] = gross - cost
    return pd.Series(net)


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_matches_a_per_date_loop(lag: int) -> None:
    rng = np.random.default_rng(lag)
    dates = pd.bdate_range("2021-01-01", periods=40)
    names = [f"T{i}" for i in range(7)]
    returns = pd.DataFrame(rng.normal(0, 0.02, (40, 7)), index=dates, columns=names)
    signal = pd.DataFrame(rng.normal(size=(25, 7)), index=dates[5:30], columns=names)
    preds = signal.stack().rename("prediction").rename_axis(["date", "ticker"]).reset_index()
    res = simulate_portfolio(preds, returns, k=2, kind="long_short", cost_bps=7, execution_lag=lag)
    reference = _loop_reference(signal, returns, 2, 7, lag)
    np.testing.assert_allclose(res.returns.to_numpy(), reference.to_numpy(), atol=1e-12)
    assert list(res.returns.index) == list(reference.index)


def test_buy_and_hold_drifts_without_trading() -> None:
    res = buy_and_hold(RETURNS, DATES[0], cost_bps=10)
    np.testing.assert_allclose(res.turnover, [1.0, 0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(res.costs.iloc[0], 1e-3)
    wealth = (1 + RETURNS.iloc[1:]).cumprod().mean(axis=1)  # equal money in each, untouched
    np.testing.assert_allclose((1 + res.gross_returns.iloc[1:]).cumprod(), wealth)


def _prices(close: pd.DataFrame) -> pd.DataFrame:
    return close.stack().rename("adj_close").rename_axis(["date", "ticker"]).reset_index()


def test_daily_returns_and_baselines_hand_worked() -> None:
    dates = pd.bdate_range("2020-01-01", periods=300)
    steps = np.linspace(0.0, 0.299, 300)
    close = pd.DataFrame({"UP": 100 * np.exp(steps), "DOWN": 100 * np.exp(-steps)}, dates)
    prices = _prices(close)
    np.testing.assert_allclose(daily_returns(prices)["UP"].iloc[1], np.exp(0.001) - 1)
    wide = close_matrix(prices)
    mom = momentum_12_1(wide)
    # ln(close[t - 21] / close[t - 252]) = 231 steps of 0.001.
    assert mom["UP"].iloc[:252].isna().all()
    np.testing.assert_allclose(mom["UP"].iloc[260], 0.231)
    np.testing.assert_allclose(short_term_reversal(wide)["DOWN"].iloc[10], 0.005)
    preds = baseline_predictions(prices, horizons=(1, 5), start=dates[252])
    assert set(preds["model"]) == {"equal_weight", "momentum_12_1", "reversal_5d", "random"}
    assert preds["date"].min() == dates[252]
    assert not preds.duplicated(["date", "ticker", "horizon", "model"]).any()


def test_random_signal_is_fixed_per_date_and_ticker() -> None:
    dates = pd.bdate_range("2020-01-01", periods=400)
    close = pd.DataFrame(1.0, index=dates, columns=[f"T{i}" for i in range(30)])
    full = random_signal(close, seed=3)
    part = random_signal(close.iloc[:100, 5:], seed=3)
    pd.testing.assert_frame_equal(part, full.iloc[:100, 5:])
    values = full.to_numpy().ravel()
    assert abs(values.mean()) < 0.03 and abs(values.std() - 1) < 0.03
    assert not np.allclose(random_signal(close, seed=4), full)


def _random_case(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-01", periods=40)
    names = [f"T{i}" for i in range(7)]
    returns = pd.DataFrame(rng.normal(0, 0.02, (40, 7)), index=dates, columns=names)
    signal = pd.DataFrame(rng.normal(size=(25, 7)), index=dates[5:30], columns=names)
    preds = signal.stack().rename("prediction").rename_axis(["date", "ticker"]).reset_index()
    return preds, returns


def test_tranches_hold_the_average_of_the_last_h_daily_books() -> None:
    preds, returns = _random_case(3)
    kwargs = {"k": 2, "kind": "long_only", "cost_bps": 5, "execution_lag": 1, "horizon": 3}
    daily = simulate_portfolio(preds, returns, **kwargs)
    tranches = simulate_portfolio(preds, returns, schedule="tranches", **kwargs)
    want = daily.weights.rolling(3, min_periods=1).mean()
    pd.testing.assert_frame_equal(tranches.weights, want)
    # renewing a third of the book a day trades less than renewing all of it
    assert tranches.turnover.sum() < daily.turnover.sum()


def test_rebalancing_every_h_dates_trades_only_then_and_drifts_between() -> None:
    preds, returns = _random_case(4)
    kwargs = {"k": 2, "kind": "long_short", "cost_bps": 5, "execution_lag": 1, "horizon": 5}
    daily = simulate_portfolio(preds, returns, **kwargs)
    every = simulate_portfolio(preds, returns, schedule="every_h", **kwargs)
    traded = every.turnover[every.turnover > 0].index
    calendar = returns.index
    signal_dates = pd.DatetimeIndex(sorted(preds["date"].unique()))[::5]
    # a trade at the close of each rebalance signal's date + lag, and nowhere else
    expected = calendar[calendar.get_indexer(signal_dates) + 1]
    assert set(traded) <= set(expected) and len(traded) >= len(expected) - 1
    for date in signal_dates:
        held_from = calendar[calendar.get_loc(date) + 2]
        np.testing.assert_allclose(every.weights.loc[held_from], daily.weights.loc[held_from])


def _band_reference(targets: pd.DataFrame, returns: pd.DataFrame, band: float) -> pd.DataFrame:
    """Per-date, per-name loop: trade a name to target only when it is off by more than band."""
    current = dict.fromkeys(targets.columns, 0.0)
    rows = {}
    for day, target in targets.iterrows():
        for name in targets.columns:
            if abs(target[name] - current[name]) > band:
                current[name] = target[name]
        rows[day] = dict(current)
        gross = sum(current[n] * returns.at[day, n] for n in targets.columns)
        current = {n: current[n] * (1 + returns.at[day, n]) / (1 + gross) for n in current}
    return pd.DataFrame.from_dict(rows, orient="index")


def test_a_no_trade_band_trades_only_names_off_by_more_than_the_band() -> None:
    preds, returns = _random_case(5)
    kwargs = {"k": 3, "kind": "long_only", "cost_bps": 5, "execution_lag": 1, "horizon": 1}
    daily = simulate_portfolio(preds, returns, **kwargs)
    banded = simulate_portfolio(preds, returns, schedule="band", band=0.1, **kwargs)
    reference = _band_reference(daily.weights, returns, 0.1)
    np.testing.assert_allclose(banded.weights.to_numpy(), reference.to_numpy(), atol=1e-12)
    assert banded.turnover.sum() < daily.turnover.sum()
    zero = simulate_portfolio(preds, returns, schedule="band", band=0.0, **kwargs)
    np.testing.assert_allclose(zero.returns, daily.returns, atol=1e-12)
    with pytest.raises(ValueError, match="schedule must be"):
        simulate_portfolio(preds, returns, schedule="weekly", **kwargs)
