"""Normalisation of feature columns, fit on a training window and applied to any dates.

Each date's cross-section is normalised on its own (so no date reads another): a centred
percentile rank in [-0.5, 0.5] (`method="rank"`) or a robust z-score, (x - median) /
(1.4826 MAD) across the tickers of the date (`method="robust_zscore"`), then clipped to
+-`clip`. A column that does not vary across tickers on a training date (a macro or regime
feature, the same for every ticker) has nothing to rank per date: it gets a time-series
robust z-score with the median and MAD of the training window instead. The fit also drops
columns that are all missing or constant in the training window. NaN policy: "keep" leaves
missing values missing; "fill" sets them to 0, the centre of every normalised column.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from finpipe.core.keys import FEATURE_KEY

MAD_TO_STD = 1.4826


def _wide(values: np.ndarray, date_code: np.ndarray, ticker_code: np.ndarray, shape) -> np.ndarray:
    out = np.full(shape, np.nan)
    out[date_code, ticker_code] = values
    return out


def _row_medians(x: np.ndarray) -> np.ndarray:
    """Median of each row of a 2-D array over its finite values (NaN for an empty row)."""
    ordered = np.sort(np.where(np.isfinite(x), x, np.nan), axis=1)  # NaN sorts last
    count = np.isfinite(x).sum(axis=1)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0)[:, None], axis=1)
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0)[:, None], axis=1)
    return np.where(count[:, None] > 0, (low + high) / 2.0, np.nan)


def _robust_center_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: median and 1.4826 x median absolute deviation, as (rows, 1) columns."""
    center = _row_medians(x)
    return center, MAD_TO_STD * _row_medians(np.abs(x - center))


@dataclass
class CrossSectionalNormalizer:
    """Fit on training rows (date <= train_end), then transform any frame of features."""

    method: str = "robust_zscore"
    clip: float | None = 5.0
    nan_policy: str = "keep"
    columns_: list[str] = field(default_factory=list)
    dropped_: dict[str, str] = field(default_factory=dict)
    time_series_: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in ("rank", "robust_zscore"):
            raise ValueError(f"method must be 'rank' or 'robust_zscore', got {self.method!r}")
        if self.nan_policy not in ("keep", "fill"):
            raise ValueError(f"nan_policy must be 'keep' or 'fill', got {self.nan_policy!r}")

    def fit(self, frame: pd.DataFrame, train_end: str | pd.Timestamp) -> CrossSectionalNormalizer:
        """Learn which columns to keep and how, from rows dated on or before train_end."""
        train = frame.loc[frame["date"] <= pd.Timestamp(train_end)]
        if train.empty:
            raise ValueError(f"no rows on or before train_end {train_end}; nothing to fit on")
        self.columns_, self.dropped_, self.time_series_ = [], {}, {}
        date_code, dates = pd.factorize(train["date"])
        ticker_code, tickers = pd.factorize(train["ticker"])
        shape = (len(dates), len(tickers))
        for name in (c for c in train.columns if c not in FEATURE_KEY):
            values = train[name].to_numpy(dtype=np.float64)
            finite = np.isfinite(values)
            if not finite.any():
                self.dropped_[name] = "all missing in the training window"
                continue
            if np.nanmax(values) == np.nanmin(values):
                self.dropped_[name] = "constant in the training window"
                continue
            self.columns_.append(name)
            wide = _wide(values, date_code, ticker_code, shape)
            lows, highs = np.fmin.reduce(wide, axis=1), np.fmax.reduce(wide, axis=1)
            seen = np.isfinite(lows)
            if np.array_equal(lows[seen], highs[seen]):  # one value per date: date-level
                center, scale = _robust_center_scale(values[finite][None, :])
                scale = scale.item() if scale.item() > 0 else float(np.std(values[finite]))
                self.time_series_[name] = (center.item(), scale or 1.0)
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """date, ticker and the fitted columns, normalised (float32), in the input row order."""
        if not self.columns_ and not self.dropped_:
            raise ValueError("CrossSectionalNormalizer is not fitted; call fit first")
        date_code, dates = pd.factorize(frame["date"])
        ticker_code, tickers = pd.factorize(frame["ticker"])
        shape = (len(dates), len(tickers))
        out = {k: frame[k].to_numpy() for k in FEATURE_KEY}
        for name in self.columns_:
            values = frame[name].to_numpy(dtype=np.float64)
            if name in self.time_series_:
                center, scale = self.time_series_[name]
                normalised = (values - center) / scale
            else:
                wide = _wide(values, date_code, ticker_code, shape)
                normalised = self._per_date(wide)[date_code, ticker_code]
            if self.clip is not None:
                normalised = np.clip(normalised, -self.clip, self.clip)
            if self.nan_policy == "fill":
                normalised = np.where(np.isfinite(normalised), normalised, 0.0)
            out[name] = normalised.astype(np.float32)
        return pd.DataFrame(out, index=frame.index)

    def _per_date(self, wide: np.ndarray) -> np.ndarray:
        """Normalise each row (a date) of a (dates x tickers) array across its tickers."""
        finite = np.isfinite(wide)
        if self.method == "rank":
            with np.errstate(invalid="ignore", divide="ignore"):
                ranks = rankdata(np.where(finite, wide, np.nan), axis=1, nan_policy="omit")
                return (ranks - 0.5) / finite.sum(axis=1, keepdims=True) - 0.5
        center, scale = _robust_center_scale(wide)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(scale > 0, (wide - center) / scale, np.where(finite, 0.0, np.nan))

    def fit_transform(self, frame: pd.DataFrame, train_end: str | pd.Timestamp) -> pd.DataFrame:
        return self.fit(frame, train_end).transform(frame)
