"""Macro series joined point in time: a value is used at date t only if available_at <= t.

For each panel date, a series' value is that of its latest observation (by observation
date) among those already public then; revisions or late releases never reach back. Features
are date-level, shared by every ticker:

* `vix`, `vix_chg_k`: VIX close (FRED VIXCLS) and its change over k panel dates.
* `credit_spread`, `credit_spread_chg_k`: Moody's BAA minus AAA yield (FRED BAA, AAA).
* `core_cpi_yoy`: core CPI (FRED CPILFESL) over its value 12 months earlier, minus 1, public
  once both observations are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finpipe.features.config import FeatureConfig
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel


def as_of(observations: pd.DataFrame, dates: pd.DatetimeIndex) -> np.ndarray:
    """Value of the latest observation public at each date (NaN before the first one).

    `observations` has columns date, value, available_at for one series.
    """
    rows = observations.dropna(subset=["value"]).sort_values(["available_at", "date"])
    if rows.empty:
        return np.full(len(dates), np.nan)
    observed = rows["date"].to_numpy(dtype="datetime64[ns]")
    latest = np.maximum.accumulate(observed)
    value_by_date = pd.Series(rows["value"].to_numpy(dtype=np.float64), index=observed)
    latest_value = value_by_date.reindex(latest).to_numpy()
    public = rows["available_at"].to_numpy(dtype="datetime64[ns]")
    position = np.searchsorted(public, dates.to_numpy(dtype="datetime64[ns]"), side="right") - 1
    return np.where(position >= 0, latest_value[np.maximum(position, 0)], np.nan)


def year_on_year(observations: pd.DataFrame) -> pd.DataFrame:
    """value / value 12 months earlier - 1 per observation, public when both are."""
    rows = observations.dropna(subset=["value"])
    earlier = rows.assign(date=rows["date"] + pd.DateOffset(months=12))
    paired = rows.merge(earlier, on="date", suffixes=("", "_earlier"))
    return pd.DataFrame(
        {
            "date": paired["date"],
            "value": paired["value"] / paired["value_earlier"] - 1.0,
            "available_at": np.maximum(paired["available_at"], paired["available_at_earlier"]),
        }
    )


def _series(inputs: FamilyInputs, series_id: str) -> pd.DataFrame:
    macro = inputs.macro
    return macro.loc[macro["series_id"] == series_id, ["date", "value", "available_at"]]


def _change(values: np.ndarray, k: int) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    out[k:] = values[k:] - values[:-k]
    return out


def _vix(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    vix = as_of(_series(inputs, "VIXCLS"), panel.dates)
    yield "vix", vix
    yield f"vix_chg_{inputs.config.vix_change}", _change(vix, inputs.config.vix_change)


def _credit(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    spread = as_of(_series(inputs, "BAA"), panel.dates) - as_of(_series(inputs, "AAA"), panel.dates)
    yield "credit_spread", spread
    yield (
        f"credit_spread_chg_{inputs.config.credit_change}",
        _change(spread, inputs.config.credit_change),
    )


def _cpi(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    yield "core_cpi_yoy", as_of(year_on_year(_series(inputs, "CPILFESL")), panel.dates)


def _needs(*series_ids: str):
    def unavailable(inputs: FamilyInputs) -> str | None:
        macro = inputs.macro
        wanted = ", ".join(series_ids)
        if macro is None or macro.empty:
            return f"needs macro series {wanted}; no macro data given"
        have = set(macro["series_id"].unique())
        lacking = [s for s in series_ids if s not in have]
        if not lacking:
            return None
        return f"needs macro series {', '.join(lacking)}; macro has {', '.join(sorted(have))}"

    return unavailable


def _names(*names: str):
    def columns(config: FeatureConfig, _: frozenset[str]) -> list[str]:
        changes = {"vix_chg": config.vix_change, "credit_spread_chg": config.credit_change}
        return [f"{n}_{changes[n]}" if n in changes else n for n in names]

    return columns


FAMILIES = (
    Family(
        "macro_vix",
        "macro",
        (),
        _names("vix", "vix_chg"),
        _vix,
        scope="panel",
        unavailable=_needs("VIXCLS"),
    ),
    Family(
        "macro_credit",
        "macro",
        (),
        _names("credit_spread", "credit_spread_chg"),
        _credit,
        scope="panel",
        unavailable=_needs("BAA", "AAA"),
    ),
    Family(
        "macro_cpi",
        "macro",
        (),
        _names("core_cpi_yoy"),
        _cpi,
        scope="panel",
        unavailable=_needs("CPILFESL"),
    ),
)
