"""Random quarterly statements (fundamentals contract) for the synthetic tickers: every field
the fundamentals families read, some items missing, and release lags that vary so that a
statement can become public before the one of the quarter before it."""

from __future__ import annotations

import numpy as np
import pandas as pd

FIELDS = {
    "net_income": (-20.0, 60.0),
    "total_revenue": (100.0, 400.0),
    "gross_profit": (20.0, 150.0),
    "operating_income": (-10.0, 90.0),
    "stockholders_equity": (-50.0, 900.0),
    "ordinary_shares_number": (50.0, 120.0),
    "total_debt": (0.0, 500.0),
    "total_liabilities_net_minority_interest": (100.0, 800.0),
    "total_assets": (500.0, 2000.0),
}


def synthetic_statements(tickers: list[str], dates: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    """Quarters ending from 15 months before `dates` to their end, public 20 to 100 days
    after the quarter; about one item in ten is missing."""
    rng = np.random.default_rng(seed)
    quarters = pd.date_range(dates[0] - pd.DateOffset(months=15), dates[-1], freq="QE")
    shape = (len(tickers), len(FIELDS), len(quarters))  # a lag per ticker and quarter
    lag = np.broadcast_to(rng.integers(20, 101, (shape[0], 1, shape[2])), shape)
    low, high = (np.array(bound)[None, :, None] for bound in zip(*FIELDS.values(), strict=True))
    period_end = np.broadcast_to(quarters.to_numpy(), shape).ravel()
    frame = pd.DataFrame(
        {
            "ticker": np.repeat(tickers, shape[1] * shape[2]),
            "period_end": period_end,
            "available_at": period_end + lag.ravel().astype("timedelta64[D]"),
            "field": np.tile(np.repeat(list(FIELDS), shape[2]), shape[0]),
            "value": rng.uniform(low, high, shape).ravel(),
        }
    )
    return frame[rng.random(len(frame)) > 0.1].reset_index(drop=True)
