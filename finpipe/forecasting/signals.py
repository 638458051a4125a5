"""Trading signals and a ranking of the universe from predictions with intervals.

With `half_width = (upper - lower) / 2` and `ratio = prediction / half_width` (the expected
return in units of its own uncertainty), for thresholds `min_return` (default 0; set it to
round-trip costs over the horizon) and `buy_ratio` (default 0.1):

    STRONG_BUY   lower > min_return                    the whole interval clears min_return
    BUY          prediction > min_return and ratio >= buy_ratio
    STRONG_SELL  upper < -min_return                   the whole interval is below -min_return
    SELL         prediction < -min_return and ratio <= -buy_ratio
    HOLD         otherwise, and wherever a value is missing

For a symmetric interval, STRONG_BUY is ratio > 1 plus the cost hurdle. At an 80% level,
buy_ratio 0.1 asks for an expected return of about 0.13 standard deviations of its
predictive distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from finpipe.core.keys import STACKED_ENSEMBLE

STRONG_BUY, BUY, HOLD, SELL, STRONG_SELL = "STRONG_BUY", "BUY", "HOLD", "SELL", "STRONG_SELL"
SIGNALS = (STRONG_SELL, SELL, HOLD, BUY, STRONG_BUY)


@dataclass(frozen=True)
class SignalThresholds:
    """Hurdles of the signal rules (see the module docstring)."""

    buy_ratio: float = 0.1
    min_return: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.buy_ratio) and self.buy_ratio >= 0):
            raise ValueError(f"buy_ratio must be finite and >= 0, got {self.buy_ratio}")
        if not (np.isfinite(self.min_return) and self.min_return >= 0):
            raise ValueError(f"min_return must be finite and >= 0, got {self.min_return}")


def interval_ratio(prediction: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> np.ndarray:
    """prediction / ((upper - lower) / 2); +-inf for a zero-width interval, NaN if unknown."""
    p, lo, hi = (np.asarray(a, np.float64) for a in (prediction, lower, upper))
    with np.errstate(divide="ignore", invalid="ignore"):
        return p / ((hi - lo) / 2.0)


def signal_from_interval(
    prediction: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    thresholds: SignalThresholds | None = None,
) -> np.ndarray:
    """One of STRONG_BUY, BUY, HOLD, SELL, STRONG_SELL per row (object array)."""
    t = thresholds or SignalThresholds()
    p, lo, hi = (np.asarray(a, np.float64) for a in (prediction, lower, upper))
    ratio = interval_ratio(p, lo, hi)
    with np.errstate(invalid="ignore"):
        conditions = [
            lo > t.min_return,
            hi < -t.min_return,
            (p > t.min_return) & (ratio >= t.buy_ratio),
            (p < -t.min_return) & (ratio <= -t.buy_ratio),
        ]
    known = np.isfinite(p) & ~np.isnan(lo) & ~np.isnan(hi)
    conditions = [c & known for c in conditions]
    return np.select(conditions, [STRONG_BUY, STRONG_SELL, BUY, SELL], default=HOLD).astype(object)


def signal_table(
    predictions: pd.DataFrame,
    model: str = STACKED_ENSEMBLE,
    thresholds: SignalThresholds | None = None,
) -> pd.DataFrame:
    """`model`'s rows of a predictions table with a `signal` column, per ticker and horizon."""
    rows = predictions[predictions["model"] == model].reset_index(drop=True)
    if rows.empty:
        raise ValueError(
            f"no predictions for model {model!r}; have {sorted(predictions['model'].unique())}"
        )
    signal = signal_from_interval(rows["prediction"], rows["lower"], rows["upper"], thresholds)
    return rows.assign(signal=pd.Series(signal, dtype="str"))


def rank_universe(
    predictions: pd.DataFrame,
    horizon: int,
    model: str = STACKED_ENSEMBLE,
    date: Any = None,
    thresholds: SignalThresholds | None = None,
) -> pd.DataFrame:
    """Tickers ranked for one horizon on one date (default: the latest), best first.

    The score is `interval_ratio`, the expected return per unit of interval half-width:
    it rises with the expected return and with confidence (a narrower interval relative to
    the ticker's volatility). Ties go to higher confidence, then ticker. Columns: rank,
    date, ticker, horizon, prediction, lower, upper, confidence, score, signal.
    """
    rows = predictions[(predictions["model"] == model) & (predictions["horizon"] == horizon)]
    if rows.empty:
        raise ValueError(f"no {model!r} predictions at horizon {horizon}")
    day = rows["date"].max() if date is None else pd.Timestamp(date)
    rows = rows[rows["date"] == day]
    if rows.empty:
        raise ValueError(f"no {model!r} predictions at horizon {horizon} on {day.date()}")
    score = np.nan_to_num(
        interval_ratio(rows["prediction"], rows["lower"], rows["upper"]),
        nan=-np.inf,
    )
    ranked = rows.assign(
        score=score,
        signal=pd.Series(
            signal_from_interval(rows["prediction"], rows["lower"], rows["upper"], thresholds),
            index=rows.index,
            dtype="str",
        ),
    ).sort_values(
        ["score", "confidence", "ticker"], ascending=[False, False, True], kind="mergesort"
    )
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1, dtype=np.int64))
    columns = ["rank", "date", "ticker", "horizon", "prediction", "lower", "upper"]
    return ranked[[*columns, "confidence", "score", "signal"]].reset_index(drop=True)
