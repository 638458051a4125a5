"""Naive baselines reported beside every model, as prediction frames in the models' long shape
(`date, ticker, horizon, model, prediction`), computed from adjusted closes known at the close
of each date only:

* `equal_weight`: 1.0 for every name with a price: no cross-sectional view. Its portfolio is
  the buy-and-hold of the equal-weight universe (`portfolio.buy_and_hold`); as a directional
  forecast it is "always up".
* `momentum_12_1`: ln(close[t - 21] / close[t - 252]), the 12-month return skipping the last
  month (Jegadeesh & Titman).
* `reversal_5d`: -ln(close[t] / close[t - 5]), last week's losers expected to bounce.
* `random`: a standard normal draw per (date, ticker, seed), fixed by hashing, so it does not
  change when the panel grows; the "no skill" reference.

Every baseline predicts the same value for each horizon.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import special

from finpipe.core.prices import close_matrix

BASELINES = ("equal_weight", "momentum_12_1", "reversal_5d", "random")
DAYS_PER_MONTH = 21


def equal_weight_signal(close: pd.DataFrame) -> pd.DataFrame:
    """1.0 wherever a price is known, NaN elsewhere."""
    return close.notna().astype(np.float64).where(close.notna())


def momentum_12_1(close: pd.DataFrame, months: int = 12, skip: int = 1) -> pd.DataFrame:
    """Log return from `months` months ago to `skip` months ago (21 trading dates a month)."""
    log_close = np.log(close.where(close > 0))
    return log_close.shift(skip * DAYS_PER_MONTH) - log_close.shift(months * DAYS_PER_MONTH)


def short_term_reversal(close: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Minus the log return over the last `window` trading dates."""
    log_close = np.log(close.where(close > 0))
    return -(log_close - log_close.shift(window))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread uint64 hash of uint64 input."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def random_signal(close: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Standard normal noise per (date, ticker) where a price is known, a pure function of
    the date, the ticker and the seed."""
    day = close.index.to_numpy("datetime64[D]").view(np.int64).astype(np.uint64)
    name = pd.util.hash_array(close.columns.to_numpy(dtype=object))
    with np.errstate(over="ignore"):
        key = _mix(day[:, None] * np.uint64(0x100000001B3) ^ name[None, :])
        key = _mix(key ^ _mix(np.uint64(seed)))
    uniform = ((key >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    noise = pd.DataFrame(special.ndtri(uniform), index=close.index, columns=close.columns)
    return noise.where(close.notna())


def _long(signal: pd.DataFrame, name: str, horizons: Sequence[int]) -> pd.DataFrame:
    values = signal.to_numpy(np.float64)
    d_idx, t_idx = np.nonzero(np.isfinite(values))
    n_h = len(horizons)
    return pd.DataFrame(
        {
            "date": np.repeat(signal.index.to_numpy()[d_idx], n_h),
            "ticker": np.repeat(signal.columns.to_numpy(dtype=object)[t_idx], n_h),
            "horizon": np.tile(np.asarray(horizons, dtype=np.int64), len(d_idx)),
            "model": name,
            "prediction": np.repeat(values[d_idx, t_idx], n_h),
        }
    )


def baseline_predictions(
    prices: pd.DataFrame,
    horizons: Sequence[int] = (1, 5, 20),
    names: Sequence[str] = BASELINES,
    start: object = None,
    end: object = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Long predictions of the named baselines for dates in [start, end] (computed on all
    prices, so the lookbacks see history before `start`)."""
    unknown = sorted(set(names) - set(BASELINES))
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; available: {list(BASELINES)}")
    close = close_matrix(prices)
    makers = {
        "equal_weight": equal_weight_signal,
        "momentum_12_1": momentum_12_1,
        "reversal_5d": short_term_reversal,
        "random": lambda c: random_signal(c, seed),
    }
    frames = []
    for name in names:
        signal = makers[name](close).loc[start:end]
        frames.append(_long(signal, name, horizons))
    return pd.concat(frames, ignore_index=True)
