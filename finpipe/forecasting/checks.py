"""What the served predictions must satisfy before they are published (the predictions
asset's blocking checks)."""

from __future__ import annotations

import pandas as pd

from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.models.panel_data import PanelData


def prediction_problems(table: pd.DataFrame, panel: PanelData) -> dict[str, list[str]]:
    """`newest_date`: the table is for the panel's newest date; `ensemble_complete`: every
    ticker with features on that date has an ensemble row at every horizon."""
    newest = panel.dates[-1]
    dates = sorted(table["date"].unique())
    stale = (
        []
        if dates == [newest]
        else [
            f"predictions are for {[str(pd.Timestamp(d).date()) for d in dates]}, the newest "
            f"feature date is {newest.date()}: materialize predictions after features"
        ]
    )
    tickers = panel.tickers[panel.sample_mask[-1]]
    ensemble = table[table["model"] == STACKED_ENSEMBLE]
    have = set(zip(ensemble["ticker"], ensemble["horizon"], strict=True))
    missing = [f"{t} h{h}" for t in tickers for h in panel.horizons if (str(t), int(h)) not in have]
    lacking = [f"no ensemble row for {', '.join(missing[:10])}"] if missing else []
    return {"newest_date": stale, "ensemble_complete": lacking}


def model_age_problems(table: pd.DataFrame, calendar: pd.DatetimeIndex, max_age: int) -> list[str]:
    """Models whose `trained_through` is more than `max_age` trading dates of `calendar`
    before the date they predict."""
    rows = table.groupby("model", sort=True).agg(
        date=("date", "max"), trained_through=("trained_through", "min")
    )
    # Trading dates in (trained_through, date]: how many closes the model has not seen.
    rows["age"] = (
        calendar.searchsorted(rows["date"].to_numpy())
        - calendar.searchsorted(rows["trained_through"].to_numpy(), side="right")
        + 1
    )
    return [
        f"{model} was trained through {row.trained_through.date()}, {row.age} trading dates "
        f"before {row.date.date()} (more than max_model_age {max_age}): retrain"
        for model, row in rows[rows["age"] > max_age].iterrows()
    ]
