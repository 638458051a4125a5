"""Prices as a wide matrix: the one pivot of long prices into dates x tickers, and their
daily simple returns."""

from __future__ import annotations

import numpy as np
import pandas as pd


def close_matrix(prices: pd.DataFrame) -> pd.DataFrame:
    """Adjusted closes of long prices (prices contract) as a wide float64 frame: dates x
    tickers, both sorted, tickers as str; a missing price stays NaN."""
    wide = prices.pivot(index="date", columns="ticker", values="adj_close").sort_index()
    wide.columns = wide.columns.astype(str)
    return wide.sort_index(axis=1).astype(np.float64)


def daily_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """Simple close-to-close returns of adj_close, wide (dates x tickers); NaN where either
    close is missing."""
    close = close_matrix(prices)
    return close / close.shift(1) - 1.0
