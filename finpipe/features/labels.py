"""Labels: forward log returns, the one place in the pipeline that reads the future.

The label of (t, ticker, h) is ln(close[t + lag + h] / close[t + lag]) on adj_close, counting
trading dates of the panel's calendar: a signal known at the close of t is traded
`execution_lag` dates later and held h dates. `label_end` is the date of the last close the
label reads (t + lag + h); walk-forward splits purge and embargo by it. A row whose future is
not yet in the data, or whose entry or exit close is missing, is absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finpipe.features.price_panel import build_price_panel, ticker_column
from finpipe.features.rolling import log


def forward_returns(
    prices: pd.DataFrame, horizons: tuple[int, ...] = (1, 5, 20), execution_lag: int = 1
) -> pd.DataFrame:
    """Forward log returns per (date, ticker, horizon), sorted by date, ticker, horizon."""
    horizons = tuple(int(h) for h in horizons)
    if not horizons or min(horizons) < 1:
        raise ValueError(f"horizons must be positive trading-day counts, got {horizons}")
    if execution_lag < 0:
        raise ValueError(f"execution_lag must be >= 0, got {execution_lag}")
    panel, rows = build_price_panel(prices[["date", "ticker", "adj_close"]])
    log_close = log(panel.fields["close"])
    n_dates = len(panel.dates)
    tickers, dates = rows.ticker_code, rows.date_code
    entry_at = dates + execution_lag
    returns, ends = [], []
    for h in horizons:
        exit_at = entry_at + h
        known = exit_at < n_dates
        value = np.full(len(dates), np.nan)
        value[known] = (
            log_close[exit_at[known], tickers[known]] - log_close[entry_at[known], tickers[known]]
        )
        returns.append(value)
        ends.append(np.minimum(exit_at, n_dates - 1))
    fwd_return = np.column_stack(returns).ravel()  # row-major: (date, ticker, horizon) order
    end_index = np.column_stack(ends).ravel()
    keep = np.isfinite(fwd_return)
    row_of = np.repeat(np.arange(len(dates)), len(horizons))[keep]
    day = panel.dates.to_numpy()
    return pd.DataFrame(
        {
            "date": day[dates[row_of]],
            "ticker": ticker_column(panel.tickers, tickers[row_of]),
            "horizon": np.tile(np.array(horizons, dtype=np.int64), len(dates))[keep],
            "fwd_return": fwd_return[keep],
            "label_end": day[end_index[keep]],
        }
    )
