"""Small feature/label frames for model tests, built from `synthetic_panel` without the
feature engine: trailing log returns and volatility as features, forward log returns as
labels (with `label_end`, the date whose price each label reads last)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from finpipe.core.time_plan import FitWindow
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.models import PanelData, list_models, model_class
from finpipe.models.factors import FactorForecaster

FEATURES = ("ret_1", "ret_5", "ret_20", "vol_20")


def _trailing_sum(values: np.ndarray, window: int) -> np.ndarray:
    csum = np.nancumsum(values, axis=0)
    out = csum.copy()
    out[window:] -= csum[:-window]
    out[: window - 1] = np.nan
    return out


def model_frames(
    n_tickers: int = 20,
    n_days: int = 600,
    seed: int = 0,
    signal_strength: float = 0.0,
    horizons: tuple[int, ...] = (1, 5, 20),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(features, labels) in the features and labels contracts for a synthetic panel."""
    cfg = SyntheticConfig(
        n_tickers=n_tickers, n_days=n_days, seed=seed, signal_strength=signal_strength
    )
    prices = synthetic_panel(cfg).pivot(index="date", columns="ticker", values="adj_close")
    dates, tickers = prices.index, prices.columns.astype(str)
    log_price = np.log(prices.to_numpy())
    ret = np.vstack([np.full((1, n_tickers), np.nan), np.diff(log_price, axis=0)])
    sq = _trailing_sum(ret**2, 20)
    mean = _trailing_sum(ret, 20) / 20
    columns = {
        "ret_1": ret,
        "ret_5": _trailing_sum(ret, 5),
        "ret_20": _trailing_sum(ret, 20),
        "vol_20": np.sqrt(np.maximum(sq / 20 - mean**2, 0.0)),
    }
    features = pd.DataFrame(
        {
            "date": np.repeat(dates.values, n_tickers),
            "ticker": np.tile(np.asarray(tickers, dtype=object), len(dates)),
            **{name: values.ravel() for name, values in columns.items()},
        }
    )
    labels = []
    for h in horizons:
        fwd = np.full_like(log_price, np.nan)
        fwd[:-h] = log_price[h:] - log_price[:-h]
        ends = np.full(len(dates), np.datetime64("NaT"), "datetime64[ns]")
        ends[:-h] = dates.values[h:]
        frame = pd.DataFrame(
            {
                "date": np.repeat(dates.values, n_tickers),
                "ticker": np.tile(np.asarray(tickers, dtype=object), len(dates)),
                "horizon": np.int64(h),
                "fwd_return": fwd.ravel(),
                "label_end": np.repeat(ends, n_tickers),
            }
        )
        labels.append(frame[np.isfinite(frame["fwd_return"])])
    labels_frame = (
        pd.concat(labels, ignore_index=True)
        .sort_values(["date", "ticker", "horizon"])
        .reset_index(drop=True)
    )
    return features, labels_frame


def with_factor_columns(features: pd.DataFrame, carrier: str = "ret_20") -> pd.DataFrame:
    """`features` plus the column each factor member reads (`mom_12_1`, `strev_5`, `rv_63`),
    stood in for by `carrier` times the member's sign: every factor member then trades the
    carrier's signal (on a planted panel, the planted momentum) the way it trades its own."""
    factors = [model_class(name) for name in list_models()]
    return features.assign(
        **{
            factor.feature: factor.sign * features[carrier]
            for factor in factors
            if issubclass(factor, FactorForecaster)
        }
    )


def fit_window(panel: PanelData, fit_end: int, valid_end: int, name: str) -> FitWindow:
    """A fit window at positions of `panel.dates`: fit to `fit_end`, early-stop to
    `valid_end`, labels purged and the prediction start embargoed after it."""
    d = panel.dates
    return FitWindow(
        name=name,
        as_of=d[valid_end + 10],
        label_cutoff=d[valid_end + 6],
        train_start=d[0],
        fit_end=d[fit_end],
        valid_start=d[fit_end + 21],
        valid_end=d[valid_end],
        stack_start=d[valid_end - 100],
        calibration_start=d[valid_end - 50],
        trained_through=d[valid_end + 5],
        predict_start=d[valid_end + 10],
        predict_end=None,
    )
