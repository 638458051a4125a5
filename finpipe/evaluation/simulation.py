"""Daily portfolio simulation from predictions, with execution lag, turnover and costs.

Timing. A signal computed at the close of date t is traded at the close of t + lag (the
labels' `execution_lag`), so the position it sets earns the close-to-close return of
t + lag + 1 onwards. The return of date d is therefore earned by the weights chosen from the
signal of d - lag - 1.

Weights. The targets are `finpipe.portfolio.construction.top_k_weights` of each date's
signal; a date without any prediction keeps the previous target weights. A forecast of h
dates can be traded daily, every h dates, in h overlapping tranches, or within a no-trade
band (`simulate_portfolio`'s `schedule`).
`simulate_rebalanced` instead trades only on the dates it is given targets for (a
construction method's rebalance dates) and lets the weights drift in between.

Turnover and costs. Between trades the weights drift with prices; turnover at the close of d
is sum_i |w_target_i - w_drifted_i| (traded notional over capital, both sides counted), and
costs of `cost_bps` basis points per unit traded are taken from that day's return.
Everything is vectorised over dates and tickers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from finpipe.portfolio.construction import PortfolioKind, top_k_weights


@dataclass
class PortfolioResult:
    """Daily net and gross returns, costs and turnover (indexed by date) and the weights held
    over each date (dates x tickers)."""

    returns: pd.Series
    gross_returns: pd.Series
    costs: pd.Series
    turnover: pd.Series
    weights: pd.DataFrame


def signal_matrix(
    predictions: pd.DataFrame, returns: pd.DataFrame, horizon: int | None = None
) -> pd.DataFrame:
    """Wide predictions (dates x tickers) aligned to the returns' calendar and tickers.

    `predictions` is long (`date, ticker, prediction`, optionally `horizon`); with several
    horizons, `horizon` picks one.
    """
    frame = predictions
    if "horizon" in frame:
        horizons = frame["horizon"].unique()
        if horizon is None and len(horizons) > 1:
            raise ValueError(f"predictions hold horizons {sorted(horizons)}; pick one")
        if horizon is not None:
            frame = frame[frame["horizon"] == horizon]
    if frame.duplicated(["date", "ticker"]).any():
        raise ValueError("predictions have duplicate (date, ticker) rows; filter by model")
    wide = frame.pivot(index="date", columns="ticker", values="prediction")
    wide.columns = wide.columns.astype(str)
    return wide.reindex(index=returns.index.intersection(wide.index), columns=returns.columns)


def _simulate(held: pd.DataFrame, returns: pd.DataFrame, cost_bps: float) -> PortfolioResult:
    """Returns, drift-adjusted turnover and costs of holding `held` weights on each date.

    The weights held on row j are bought at the close of the date before it, so the result
    starts one calendar date earlier than `held`, with the opening trade and no return.
    """
    h = held.to_numpy(np.float64)
    r = np.nan_to_num(returns.reindex(index=held.index, columns=held.columns).to_numpy(np.float64))
    gross = (h * r).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        drifted = h * (1.0 + r) / (1.0 + gross)[:, None]
    before_trade = np.vstack([np.zeros((1, h.shape[1])), drifted[:-1]])
    traded = np.abs(h - before_trade).sum(axis=1)
    traded[traded < 1e-12] = 0.0  # rounding left by drifting weights that were not traded
    dates = held.index.insert(0, _previous(returns.index, held.index[0]))
    gross_s = pd.Series(np.concatenate([[0.0], gross]), index=dates, name="gross_return")
    turnover = pd.Series(np.concatenate([traded, [0.0]]), index=dates, name="turnover")
    costs = (turnover * cost_bps * 1e-4).rename("cost")
    return PortfolioResult(
        returns=(gross_s - costs).rename("return"),
        gross_returns=gross_s,
        costs=costs,
        turnover=turnover,
        weights=held,
    )


def _previous(calendar: pd.DatetimeIndex, date: pd.Timestamp) -> pd.Timestamp:
    pos = calendar.get_loc(date)
    if pos == 0:
        raise ValueError(f"no trading date before {date.date()} to open the portfolio on")
    return calendar[pos - 1]


SCHEDULES = ("daily", "every_h", "tranches", "band")


def simulate_portfolio(
    predictions: pd.DataFrame,
    returns: pd.DataFrame,
    k: int | float = 0.2,
    kind: PortfolioKind = "long_short",
    cost_bps: float = 5.0,
    execution_lag: int = 1,
    horizon: int | None = None,
    schedule: str = "daily",
    band: float = 0.02,
) -> PortfolioResult:
    """Simulate the top-k (minus bottom-k) portfolio of one model's predictions.

    `returns` are simple daily returns, wide (`finpipe.core.prices.daily_returns`); its
    index is the trading calendar. The result covers the first trade date (first signal +
    lag) through the last date earned by the last signal (last signal + lag + 1), clipped to
    the calendar.

    `schedule` says how the book follows a forecast of `horizon` dates: `daily` trades to
    each date's top-k; `every_h` rebalances every `horizon` signal dates and lets the book
    drift in between; `tranches` holds the average of the last `horizon` daily books
    (Jegadeesh-Titman overlapping portfolios: each day renews one tranche); `band` trades a
    name only when its target moved more than `band` away from its drifted weight (the
    rest keeps drifting; any difference stays in cash).
    """
    if execution_lag < 0:
        raise ValueError(f"execution_lag must be >= 0, got {execution_lag}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    signal = signal_matrix(predictions, returns, horizon)
    if signal.empty:
        raise ValueError("no prediction falls on a date of the returns calendar")
    targets = top_k_weights(signal, k, kind)
    step = max(int(horizon or 1), 1)
    if schedule == "every_h":
        return simulate_rebalanced(
            targets.iloc[::step], returns, targets.index[-1], cost_bps, execution_lag
        )
    if schedule == "tranches":
        targets = targets.fillna(0.0).rolling(step, min_periods=1).mean()
    calendar = returns.index
    first = calendar.get_loc(targets.index[0])
    last = calendar.get_loc(targets.index[-1])
    span = calendar[first : min(last + execution_lag + 1, len(calendar) - 1) + 1]
    targets = targets.reindex(span).ffill().fillna(0.0)
    held = targets.shift(execution_lag + 1).iloc[execution_lag + 1 :]
    if held.empty:
        raise ValueError("the returns calendar ends before the first position is held")
    if schedule == "band":
        held = _within_band(held, returns, band)
    return _simulate(held, returns, cost_bps)


def _within_band(targets: pd.DataFrame, returns: pd.DataFrame, band: float) -> pd.DataFrame:
    """The weights held when a name is traded to its target only if the target is more than
    `band` away from the weight it drifted to since the last close."""
    t = targets.to_numpy(np.float64)
    r = np.nan_to_num(returns.reindex(index=targets.index, columns=targets.columns).to_numpy())
    held = np.zeros_like(t)
    current = np.zeros(t.shape[1])
    for i in range(len(t)):
        move = np.abs(t[i] - current) > band
        current = np.where(move, t[i], current)
        held[i] = current
        grown = current * (1.0 + r[i])
        current = grown / (1.0 + (current * r[i]).sum())
    return pd.DataFrame(held, index=targets.index, columns=targets.columns)


def simulate_rebalanced(
    targets: pd.DataFrame,
    returns: pd.DataFrame,
    last_signal: object,
    cost_bps: float = 5.0,
    execution_lag: int = 1,
) -> PortfolioResult:
    """Simulate target weights set at rebalance dates (`targets`: dates x tickers, from the
    signal of each date) and held, drifting with prices, until the next; the last ones are
    held until the date earned by `last_signal` (+ lag + 1), clipped to the calendar."""
    if execution_lag < 0:
        raise ValueError(f"execution_lag must be >= 0, got {execution_lag}")
    calendar = returns.index
    targets = targets.reindex(columns=returns.columns).fillna(0.0).sort_index()
    starts = calendar.get_indexer(targets.index) + execution_lag + 1
    if (starts <= execution_lag).any():
        raise ValueError("every rebalance date must be a date of the returns calendar")
    last = min(calendar.get_loc(pd.Timestamp(last_signal)) + execution_lag + 1, len(calendar) - 1)
    positions = np.arange(starts[0], last + 1)
    if len(positions) == 0:
        raise ValueError("the returns calendar ends before the first position is held")
    segment = np.searchsorted(starts, positions, side="right") - 1
    r = np.nan_to_num(returns.iloc[positions].to_numpy(np.float64))
    # Growth of each name since its segment began, up to the close before each date.
    cumulative = pd.DataFrame(1.0 + r).groupby(segment).cumprod()
    growth = cumulative.groupby(segment).shift(1).fillna(1.0).to_numpy()
    start_weights = targets.to_numpy(np.float64)[segment]
    value = start_weights * growth
    held = value / (1.0 + (start_weights * (growth - 1.0)).sum(axis=1))[:, None]
    held = pd.DataFrame(held, index=calendar[positions], columns=returns.columns)
    return _simulate(held, returns, cost_bps)


def buy_and_hold(
    returns: pd.DataFrame,
    start: object,
    end: object = None,
    cost_bps: float = 5.0,
) -> PortfolioResult:
    """Buy the equal-weight universe at the close of `start` and hold it (weights drift with
    prices, never rebalanced) through `end`. Names with a return on the first held date form
    the universe; a missing return later counts as a flat day."""
    calendar = returns.index
    pos = calendar.get_indexer([pd.Timestamp(start)])[0]
    if pos < 0:
        pos = int(np.searchsorted(calendar, pd.Timestamp(start)))
    held_dates = calendar[pos + 1 :]
    if end is not None:
        held_dates = held_dates[held_dates <= pd.Timestamp(end)]
    if len(held_dates) == 0:
        raise ValueError(f"no trading date after {start} to hold the portfolio")
    r = returns.loc[held_dates]
    members = r.iloc[0].notna().to_numpy()
    growth = np.cumprod(1.0 + np.nan_to_num(r.to_numpy(np.float64)), axis=0)
    value = np.where(members, growth, 0.0) / max(members.sum(), 1)
    before = np.vstack([np.where(members, 1.0 / max(members.sum(), 1), 0.0), value[:-1]])
    held = pd.DataFrame(before / before.sum(axis=1, keepdims=True), r.index, r.columns)
    return _simulate(held, returns, cost_bps)
