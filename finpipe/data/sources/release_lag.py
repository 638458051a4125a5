"""Conservative publication lags for series whose source gives no release dates.

A macro value must only be joined to features once it was public. Where the source has
real release dates (FRED vintages), they are used; otherwise `available_at` is the end of
the observation period plus the lag below, chosen to be later than the usual release:

| frequency | observation date means        | available_at                                |
| --------- | ----------------------------- | ------------------------------------------- |
| daily     | the day itself                | next business day                           |
| weekly    | the week's date               | date + 7 days                               |
| monthly   | first day of the month        | month end + 30 days (CPI is out ~2 weeks in)|
| quarterly | first day of the quarter      | quarter end + 60 days                       |
| annual    | first day of the year         | year end + 90 days                          |
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FREQUENCIES = ("daily", "weekly", "monthly", "quarterly", "annual")


def infer_frequency(dates: pd.Series | pd.DatetimeIndex) -> str:
    """Classify a series' observation spacing by its median gap in days."""
    values = pd.DatetimeIndex(pd.Series(dates).dropna().sort_values().unique()).as_unit("ns")
    if len(values) < 2:
        return "daily"
    gap = float(np.median(np.diff(values.asi8)) / 86_400e9)
    if gap <= 4:
        return "daily"
    if gap <= 10:
        return "weekly"
    if gap <= 45:
        return "monthly"
    if gap <= 120:
        return "quarterly"
    return "annual"


def conservative_available_at(dates: pd.Series, frequency: str | None = None) -> pd.Series:
    """When each observation was surely public, by the table in this module's docstring."""
    dates = pd.to_datetime(pd.Series(dates))
    frequency = frequency or infer_frequency(dates)
    if frequency == "daily":
        out = dates + pd.offsets.BDay(1)
    elif frequency == "weekly":
        out = dates + pd.Timedelta(days=7)
    elif frequency == "monthly":
        out = dates + pd.offsets.MonthEnd(0) + pd.Timedelta(days=30)
    elif frequency == "quarterly":
        out = dates + pd.offsets.QuarterEnd(0) + pd.Timedelta(days=60)
    elif frequency == "annual":
        out = dates + pd.offsets.YearEnd(0) + pd.Timedelta(days=90)
    else:
        raise ValueError(f"unknown frequency {frequency!r}; expected one of {FREQUENCIES}")
    return out.astype("datetime64[ns]")
