"""Rebalance orders: the trades from current holdings to target weights. Nothing is sent
anywhere; the orders are a table to read.

Holdings are a Parquet or CSV file with `ticker, shares`; a row with ticker `CASH` holds
cash (its `shares` are currency units). No file means all cash (`capital`). The book's
value is cash plus shares x price (`trade_prices`); a name's target is weight x value /
price shares, rounded toward zero to whole shares (fractional with `whole_shares=False`).
Each trade's estimated cost is |notional| x `cost_bps` basis points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finpipe.core.prices import close_matrix

CASH = "CASH"
ORDER_COLUMNS = [
    "ticker",
    "current_shares",
    "target_shares",
    "trade_shares",
    "price",
    "notional",
    "side",
    "estimated_cost",
]


def market_close(prices: pd.DataFrame) -> pd.DataFrame:
    """Closes as traded, wide (dates x tickers): the plain close, or the adjusted close
    where the source has no plain close."""
    plain = "close" in prices and prices["close"].notna().any()
    return close_matrix(prices if not plain else prices.assign(adj_close=prices["close"]))


def trade_prices(prices: pd.DataFrame, as_of: object) -> pd.Series:
    """The price each name trades at as of a date, by ticker: its last close on or before
    it (`market_close`)."""
    close = market_close(prices).loc[: pd.Timestamp(as_of)]
    return close.ffill().iloc[-1].dropna()


def read_holdings(path: str) -> pd.DataFrame:
    """`ticker, shares` from a Parquet or CSV file (by its suffix); empty for no path."""
    if not path:
        return pd.DataFrame({"ticker": pd.Series(dtype=str), "shares": pd.Series(dtype=float)})
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"holdings file {path!r}: expected a .parquet or .csv file")
    missing = {"ticker", "shares"} - set(frame.columns)
    if missing:
        raise ValueError(f"holdings file {path!r} lacks columns {sorted(missing)}")
    frame = frame.assign(ticker=frame["ticker"].astype(str), shares=frame["shares"].astype(float))
    if frame["ticker"].duplicated().any():
        raise ValueError(f"holdings file {path!r} lists a ticker more than once")
    return frame[["ticker", "shares"]]


def book_value(holdings: pd.DataFrame, prices: pd.Series, capital: float) -> float:
    """Cash plus the value of the shares at `prices` (by ticker); `capital` when empty.
    Raises when a held name has no price."""
    if holdings.empty:
        return float(capital)
    held = holdings.set_index("ticker")["shares"]
    cash = float(held.get(CASH, 0.0))
    shares = held.drop(CASH, errors="ignore")
    unpriced = sorted(set(shares.index[shares != 0]) - set(prices.dropna().index))
    if unpriced:
        raise ValueError(f"held names without a price: {unpriced}")
    return cash + float((shares * prices.reindex(shares.index)).sum())


def current_weights(holdings: pd.DataFrame, prices: pd.Series, capital: float) -> pd.Series:
    """The holdings as weights of the book's value, by ticker (cash left out)."""
    value = book_value(holdings, prices, capital)
    shares = holdings.set_index("ticker")["shares"].drop(CASH, errors="ignore")
    return (shares * prices.reindex(shares.index) / value).astype(np.float64)


def rebalance_orders(
    target: pd.Series,
    holdings: pd.DataFrame,
    prices: pd.Series,
    capital: float = 1_000_000.0,
    cost_bps: float = 5.0,
    whole_shares: bool = True,
) -> pd.DataFrame:
    """The trades (`ORDER_COLUMNS`, one row per name that trades) from `holdings` to the
    `target` weights at `prices` (both by ticker)."""
    value = book_value(holdings, prices, capital)
    current = holdings.set_index("ticker")["shares"].drop(CASH, errors="ignore")
    names = target.index.union(current.index)
    price = prices.reindex(names).astype(np.float64)
    weights = target.reindex(names, fill_value=0.0).astype(np.float64)
    unpriced = names[(weights != 0) & ~np.isfinite(price)]
    if len(unpriced):
        raise ValueError(f"target names without a price: {sorted(unpriced)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        goal = np.where(weights != 0, weights * value / price, 0.0)
    if whole_shares:
        goal = np.trunc(goal)
    table = pd.DataFrame(
        {
            "ticker": names.astype(str),
            "current_shares": current.reindex(names, fill_value=0.0).to_numpy(np.float64),
            "target_shares": goal,
            "price": price.to_numpy(),
        }
    )
    table["trade_shares"] = table["target_shares"] - table["current_shares"]
    table = table[table["trade_shares"] != 0].copy()
    table["notional"] = table["trade_shares"] * table["price"]
    table["side"] = np.where(table["trade_shares"] > 0, "BUY", "SELL")
    table["estimated_cost"] = table["notional"].abs() * cost_bps * 1e-4
    return table[ORDER_COLUMNS].reset_index(drop=True)
