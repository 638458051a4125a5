"""The predictions table and its history on disk.

`predictions` (one Parquet file, `predictions/latest.parquet`) holds the latest prediction
of every member and the ensemble for every ticker and horizon, in exactly the schema of the
`PREDICTIONS` contract (`finpipe.core.contracts`):

    date datetime64[ns], ticker str, horizon int64, model str, prediction float64,
    lower float64, upper float64, interval_level float64, confidence float64,
    model_version str, trained_through datetime64[ns]

`prediction_history` keeps one file per prediction date,
`predictions/history/date=YYYY-MM-DD.parquet`, with the same columns plus
`realised_return` (NaN until the label is known): the `PREDICTION_HISTORY` contract.
Writing a date replaces that date's file (atomically, through ParquetStore), so running a
day twice leaves one copy.
`fill_realised` fills realised returns from the labels table once they exist; a file's
`finpipe.complete` metadata marks it as fully realised so later passes skip it.
The folder reads with plain `pandas.read_parquet(".../predictions/history")`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.contracts import PREDICTION_HISTORY, PREDICTIONS, conform
from finpipe.core.keys import ROW_KEY
from finpipe.core.storage import ParquetStore

LATEST_PATH = ("predictions", "latest")
HISTORY_PATH = ("predictions", "history")
_PARTITION = "date="


def write_predictions(
    store: ParquetStore, frame: pd.DataFrame, metadata: dict[str, str] | None = None
) -> str:
    """Replace the latest-predictions table atomically; returns its path."""
    return store.write(conform(frame, PREDICTIONS), *LATEST_PATH, metadata=metadata)


def read_predictions(store: ParquetStore) -> pd.DataFrame | None:
    """The latest-predictions table, or None before the first write."""
    return store.read(*LATEST_PATH)


def _partition(date: Any) -> str:
    return f"{_PARTITION}{pd.Timestamp(date):%Y-%m-%d}"


def has_history(store: ParquetStore, date: Any) -> bool:
    """Whether predictions served on `date` are recorded."""
    return store.exists(*HISTORY_PATH, _partition(date))


def history_dates(store: ParquetStore) -> list[pd.Timestamp]:
    """Prediction dates that have a history file, ascending."""
    names = store.names(*HISTORY_PATH)
    return [pd.Timestamp(n[len(_PARTITION) :]) for n in names if n.startswith(_PARTITION)]


def _write_partition(store: ParquetStore, frame: pd.DataFrame, date: Any) -> str:
    complete = bool(np.isfinite(frame["realised_return"]).all())
    metadata = {"complete": str(complete).lower(), "rows": str(len(frame))}
    return store.write(frame, *HISTORY_PATH, _partition(date), metadata=metadata)


def write_prediction_history(store: ParquetStore, frame: pd.DataFrame) -> list[str]:
    """Write each prediction date of `frame` to its own history file, replacing that date.

    Realised returns already filled in for a replaced date are kept (they belong to the
    date, ticker and horizon, not to the prediction). Returns the paths written.
    """
    conformed = conform(frame.drop(columns="realised_return", errors="ignore"), PREDICTIONS)
    paths = []
    for date, part in conformed.groupby("date", sort=True):
        part = part.reset_index(drop=True)
        part["realised_return"] = np.nan
        old = store.read(*HISTORY_PATH, _partition(date))
        if old is not None and "realised_return" in old:
            known = old.dropna(subset=["realised_return"]).drop_duplicates(list(ROW_KEY))
            part["realised_return"] = (
                part[list(ROW_KEY)]
                .merge(known[[*ROW_KEY, "realised_return"]], how="left")
                .loc[:, "realised_return"]
                .to_numpy(np.float64)
            )
        paths.append(_write_partition(store, part, date))
    return paths


def read_prediction_history(
    store: ParquetStore, start: Any = None, end: Any = None
) -> pd.DataFrame:
    """History rows with prediction dates in [start, end] (either bound optional), in the
    history schema (empty with the right dtypes when there are none)."""
    dates = history_dates(store)
    if start is not None:
        dates = [d for d in dates if d >= pd.Timestamp(start)]
    if end is not None:
        dates = [d for d in dates if d <= pd.Timestamp(end)]
    frames = [store.read(*HISTORY_PATH, _partition(d)) for d in dates]
    frames = [f for f in frames if f is not None]
    if not frames:
        return PREDICTION_HISTORY.empty()
    return pd.concat(frames, ignore_index=True)


def fill_realised(
    store: ParquetStore, labels: pd.DataFrame, as_of: Any = None, through: Any = None
) -> int:
    """Fill `realised_return` in history from the labels table; returns the rows filled.

    A label counts once it exists and, with `as_of`, its `label_end` is on or before
    `as_of` (for replays that must not see later data). With `through`, only history dates
    up to it are touched. Only history files not yet complete and whose date has labels are
    read and rewritten, so a daily pass is cheap and a second pass changes nothing.
    """
    known = labels
    if as_of is not None:
        known = known[pd.to_datetime(known["label_end"]) <= pd.Timestamp(as_of)]
    known = known[np.isfinite(known["fwd_return"])]
    label_dates = set(pd.to_datetime(known["date"].unique()))
    filled = 0
    for date in history_dates(store):
        if date not in label_dates or (through is not None and date > pd.Timestamp(through)):
            continue
        if store.read_metadata(*HISTORY_PATH, _partition(date)).get("complete") == "true":
            continue
        part = store.read(*HISTORY_PATH, _partition(date))
        if part is None:
            continue
        todo = part["realised_return"].isna()
        day = known[known["date"] == date][[*ROW_KEY, "fwd_return"]]
        found = (
            part[list(ROW_KEY)]
            .merge(day, on=list(ROW_KEY), how="left")
            .loc[:, "fwd_return"]
            .to_numpy(np.float64)
        )
        new = todo.to_numpy() & np.isfinite(found)
        if new.any():
            part.loc[new, "realised_return"] = found[new]
            _write_partition(store, part, date)
            filled += int(new.sum())
    return filled
