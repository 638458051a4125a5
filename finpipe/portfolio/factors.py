"""A multi-factor score: the ML forecast as one factor beside momentum, low risk, value
and quality, each standardised across names on a date and combined with configured
weights.

Factors, as known at the close of the as-of date:

* `forecast`: the expected return the construction would otherwise use;
* `momentum`: the features table's `mom_12_1` (12-1 month log return);
* `low_risk`: minus the risk model's daily volatility of the name;
* `value`: book to price, stockholders' equity / (shares outstanding x close), from the
  latest statement public by then (`available_at`);
* `quality`: gross profit / total assets from the latest public quarter.

A factor whose data is absent (a source without fundamentals, a feature family not
computed) is skipped with the reason. Each factor is z-scored across names (winsorised at
3); the score of a name is the weighted mean of its available z-scores. `score_signal`
maps the score back to the forecast's scale (its cross-sectional mean and standard
deviation), so a construction reads it as an expected return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FACTORS = ("forecast", "momentum", "low_risk", "value", "quality")
DEFAULT_WEIGHTS = {"forecast": 1.0, "momentum": 0.5, "low_risk": 0.5, "value": 0.5, "quality": 0.5}


@dataclass
class FactorScores:
    """Per-name z-scores of the factors used (tickers x factors), the combined `score`, and
    the reason each configured factor was skipped."""

    table: pd.DataFrame
    score: pd.Series
    skipped: dict[str, str] = field(default_factory=dict)


def zscore(values: pd.Series, clip: float = 3.0) -> pd.Series:
    """Cross-sectional z-score, winsorised at +-`clip`; NaN when the values do not vary."""
    x = values.astype(np.float64)
    sd = x.std(ddof=0)
    if not np.isfinite(sd) or sd == 0:
        return pd.Series(np.nan, index=values.index)
    return ((x - x.mean()) / sd).clip(-clip, clip)


def _latest(fundamentals: pd.DataFrame, fields: list[str], as_of: pd.Timestamp) -> pd.DataFrame:
    """The latest public value of each field per ticker (tickers x fields)."""
    known = fundamentals[
        (fundamentals["available_at"] <= as_of) & fundamentals["field"].isin(fields)
    ]
    latest = known.sort_values(["period_end", "available_at"]).groupby(["ticker", "field"]).last()
    return latest["value"].unstack("field").reindex(columns=fields)


def factor_scores(
    tickers: list[str],
    as_of: object,
    forecast: pd.Series,
    volatility: pd.Series,
    features: pd.DataFrame | None = None,
    fundamentals: pd.DataFrame | None = None,
    close: pd.Series | None = None,
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
) -> FactorScores:
    """Scores of `tickers` at `as_of` (see the module rules). `forecast` and `volatility`
    are by ticker; `features` has `date, ticker` and feature columns; `fundamentals` is the
    fundamentals contract; `close` the closes at `as_of` by ticker."""
    as_of = pd.Timestamp(as_of)
    unknown = sorted(set(weights) - set(FACTORS))
    if unknown:
        raise ValueError(f"unknown factors {unknown}; expected some of {FACTORS}")
    raw: dict[str, pd.Series] = {}
    skipped: dict[str, str] = {}
    for name in (f for f in FACTORS if weights.get(f, 0.0) != 0.0):
        if name == "forecast":
            raw[name] = forecast
        elif name == "low_risk":
            raw[name] = -volatility
        elif name == "momentum":
            if features is None or "mom_12_1" not in features:
                skipped[name] = "the features table has no mom_12_1 (momentum family not computed)"
                continue
            today = features[features["date"] == as_of]
            raw[name] = today.set_index("ticker")["mom_12_1"]
        else:
            if fundamentals is None or fundamentals.empty:
                skipped[name] = "the source has no fundamentals"
                continue
            if name == "value":
                needed = ["stockholders_equity", "ordinary_shares_number"]
                latest = _latest(fundamentals, needed, as_of)
                if close is None:
                    skipped[name] = "no close prices to value the equity at"
                    continue
                shares = latest["ordinary_shares_number"]
                raw[name] = latest["stockholders_equity"] / (shares * close.reindex(latest.index))
            else:
                needed = ["gross_profit", "total_assets"]
                latest = _latest(fundamentals, needed, as_of)
                raw[name] = latest["gross_profit"] / latest["total_assets"]
        values = raw[name].reindex(tickers)
        values = values[np.isfinite(values.to_numpy(np.float64))]
        if len(values) < 2:
            skipped[name] = f"fewer than two names have {name} data at {as_of.date()}"
            del raw[name]
    table = pd.DataFrame(
        {name: zscore(series.reindex(tickers)) for name, series in raw.items()}, index=tickers
    )
    if table.empty or table.notna().sum().sum() == 0:
        raise ValueError(f"no factor has data at {as_of.date()}: {skipped}")
    w = pd.Series({name: float(weights[name]) for name in table.columns})
    present = table.notna()
    score = (table.fillna(0.0) * w).sum(axis=1) / (present * w.abs()).sum(axis=1)
    return FactorScores(table=table, score=score.where(present.any(axis=1)), skipped=skipped)


def score_signal(score: pd.Series, forecast: pd.Series) -> pd.Series:
    """The score on the forecast's scale: mean + standard deviation x score across names."""
    f = forecast.reindex(score.index).astype(np.float64)
    return f.mean() + f.std(ddof=0) * score
