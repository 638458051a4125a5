"""The predictions table and its history on disk.

`predictions` (one Parquet file, `predictions/latest.parquet`) holds the latest prediction
of every member and the ensemble for every ticker and horizon, in exactly this schema:

    date datetime64[ns], ticker str, horizon int64, model str, prediction float64,
    lower float64, upper float64, interval_level float64, confidence float64,
    model_version str

`prediction_history` keeps one file per prediction date,
`predictions/history/date=YYYY-MM-DD.parquet`, with the same columns plus
`realised_return` (NaN until the label is known). Writing a date replaces that date's file
(atomically, through ParquetStore), so running a day twice leaves one copy.
`fill_realised` fills realised returns from the labels table once they exist; a file's
`finpipe.complete` metadata marks it as fully realised so later passes skip it.
The folder reads with plain `pandas.read_parquet(".../predictions/history")`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from finpipe.core.storage import ParquetStore
from finpipe.forecasting.uncertainty import SplitConformal, confidence_from_width

DATE, STR, INT, FLOAT = "datetime64[ns]", "str", "int64", "float64"
PREDICTIONS_COLUMNS: dict[str, str] = {
    "date": DATE,
    "ticker": STR,
    "horizon": INT,
    "model": STR,
    "prediction": FLOAT,
    "lower": FLOAT,
    "upper": FLOAT,
    "interval_level": FLOAT,
    "confidence": FLOAT,
    "model_version": STR,
}
PREDICTIONS_KEY = ("date", "ticker", "horizon", "model")
# The Arrow schema pandas writes for PREDICTIONS_COLUMNS (pandas' str is large_string).
_ARROW = {DATE: pa.timestamp("ns"), STR: pa.large_string(), INT: pa.int64(), FLOAT: pa.float64()}
PREDICTIONS_SCHEMA = pa.schema([(c, _ARROW[t]) for c, t in PREDICTIONS_COLUMNS.items()])
HISTORY_COLUMNS: dict[str, str] = {**PREDICTIONS_COLUMNS, "realised_return": FLOAT}
HISTORY_SCHEMA = pa.schema([(c, _ARROW[t]) for c, t in HISTORY_COLUMNS.items()])

LATEST_PATH = ("predictions", "latest")
HISTORY_PATH = ("predictions", "history")
_PARTITION = "date="


class PredictionsError(ValueError):
    """A predictions frame that does not fit the schema; the message lists every problem."""


# -- schema --------------------------------------------------------------------------------


def _value_problems(frame: pd.DataFrame) -> list[str]:
    problems = []
    for col in ("date", "ticker", "model", "model_version", "horizon"):
        if frame[col].isna().any():
            problems.append(f"{int(frame[col].isna().sum())} rows with a missing {col}")
    if not np.isfinite(frame["prediction"]).all():
        problems.append("prediction must be finite")
    if frame[["lower", "upper"]].isna().any().any():
        problems.append("lower and upper must not be NaN (use +-inf for an unbounded interval)")
    if (frame["lower"] > frame["upper"]).any():
        problems.append(f"{int((frame['lower'] > frame['upper']).sum())} rows with lower > upper")
    level = frame["interval_level"]
    if not ((level > 0) & (level < 1)).all():
        problems.append("interval_level must be in (0, 1)")
    confidence = frame["confidence"]
    if not ((confidence >= 0) & (confidence <= 1)).all():
        problems.append("confidence must be in [0, 1]")
    duplicated = frame.duplicated(list(PREDICTIONS_KEY))
    if duplicated.any():
        problems.append(f"{int(duplicated.sum())} duplicate (date, ticker, horizon, model) rows")
    return problems


def predictions_violations(
    frame: pd.DataFrame, columns: Mapping[str, str] = PREDICTIONS_COLUMNS
) -> list[str]:
    """Every way `frame` departs from the predictions schema (empty when it conforms):
    column set and order, exact dtypes, and values (for asset checks)."""
    if list(frame.columns) != list(columns):
        return [f"columns are {list(frame.columns)}, expected exactly {list(columns)}"]
    problems = [
        f"column {c!r} has dtype {frame[c].dtype}, expected {t}"
        for c, t in columns.items()
        if str(frame[c].dtype) != t
    ]
    return problems + _value_problems(frame)


def conform_predictions(
    frame: pd.DataFrame, columns: Mapping[str, str] = PREDICTIONS_COLUMNS
) -> pd.DataFrame:
    """`frame` with exactly the schema's columns, order and dtypes, sorted by key.

    Raises PredictionsError naming missing or unknown columns, values that cannot be
    coerced, and rule violations (finite predictions, lower <= upper, confidence in [0, 1],
    interval_level in (0, 1), one row per date, ticker, horizon and model).
    """
    missing = [c for c in columns if c not in frame]
    unknown = [c for c in frame if c not in columns]
    if missing or unknown:
        raise PredictionsError(
            f"predictions: missing columns {missing}, unknown columns {unknown}; "
            f"expected {list(columns)}"
        )
    out = {}
    for col, dtype in columns.items():
        values = frame[col]
        try:
            if dtype == DATE:
                values = pd.to_datetime(values)
                if values.dt.tz is not None:
                    values = values.dt.tz_localize(None)
                out[col] = values.astype(DATE)
            elif dtype == STR:
                out[col] = values.where(values.isna(), values.astype(str)).astype(STR)
            elif dtype == INT:
                numeric = pd.to_numeric(values).astype(FLOAT)
                if not np.array_equal(numeric, np.round(numeric)):
                    raise ValueError("non-integer values")
                out[col] = numeric.astype(INT)
            else:
                out[col] = pd.to_numeric(values).astype(FLOAT)
        except (TypeError, ValueError) as exc:
            raise PredictionsError(f"predictions: column {col!r} is not {dtype}: {exc}") from exc
    conformed = pd.DataFrame(out)
    problems = _value_problems(conformed)
    if problems:
        raise PredictionsError("predictions: " + "; ".join(problems))
    return conformed.sort_values(list(PREDICTIONS_KEY), kind="mergesort").reset_index(drop=True)


def predictions_table(
    point: pd.DataFrame,
    scale: pd.DataFrame,
    conformal: SplitConformal,
    level: float,
    model_versions: Mapping[str, str],
) -> pd.DataFrame:
    """The predictions table from point predictions of members and ensemble.

    `point`: `date, ticker, horizon, model, prediction`; `scale`: `interval_scale` output
    for the same rows; `conformal`: fitted on a calibration window with the same scale.
    Intervals are the conformal ones at `level`; confidence is `confidence_from_width`;
    `model_version` comes from `model_versions[model]`.
    """
    unversioned = sorted(set(point["model"]) - set(model_versions))
    if unversioned:
        raise PredictionsError(f"no model_version for models {unversioned}")
    rows = point.merge(scale, on=["date", "ticker", "horizon"], how="left")
    rows = conformal.interval(rows, level)
    rows["confidence"] = confidence_from_width(
        rows["upper"] - rows["lower"], rows["horizon_vol"], rows["interval_level"]
    )
    rows["model_version"] = rows["model"].map(model_versions)
    return conform_predictions(rows[list(PREDICTIONS_COLUMNS)])


# -- storage -------------------------------------------------------------------------------


def write_predictions(
    store: ParquetStore, frame: pd.DataFrame, metadata: dict[str, str] | None = None
) -> str:
    """Replace the latest-predictions table atomically; returns its path."""
    return store.write(conform_predictions(frame), *LATEST_PATH, metadata=metadata)


def read_predictions(store: ParquetStore) -> pd.DataFrame | None:
    """The latest-predictions table, or None before the first write."""
    return store.read(*LATEST_PATH)


def _partition(date: Any) -> str:
    return f"{_PARTITION}{pd.Timestamp(date):%Y-%m-%d}"


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
    conformed = conform_predictions(frame.drop(columns="realised_return", errors="ignore"))
    paths = []
    for date, part in conformed.groupby("date", sort=True):
        part = part.reset_index(drop=True)
        part["realised_return"] = np.nan
        old = store.read(*HISTORY_PATH, _partition(date))
        if old is not None and "realised_return" in old:
            known = old.dropna(subset=["realised_return"]).drop_duplicates(
                ["date", "ticker", "horizon"]
            )
            part["realised_return"] = (
                part[["date", "ticker", "horizon"]]
                .merge(known[["date", "ticker", "horizon", "realised_return"]], how="left")
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
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in HISTORY_COLUMNS.items()})
    return pd.concat(frames, ignore_index=True)


def fill_realised(store: ParquetStore, labels: pd.DataFrame, as_of: Any = None) -> int:
    """Fill `realised_return` in history from the labels table; returns the rows filled.

    A label counts once it exists and, with `as_of`, its `label_end` is on or before
    `as_of` (for replays that must not see later data). Only history files not yet
    complete and whose date has labels are read and rewritten, so a daily pass is cheap
    and a second pass changes nothing.
    """
    known = labels
    if as_of is not None:
        known = known[pd.to_datetime(known["label_end"]) <= pd.Timestamp(as_of)]
    known = known[np.isfinite(known["fwd_return"])]
    label_dates = set(pd.to_datetime(known["date"].unique()))
    filled = 0
    for date in history_dates(store):
        if date not in label_dates:
            continue
        if store.read_metadata(*HISTORY_PATH, _partition(date)).get("complete") == "true":
            continue
        part = store.read(*HISTORY_PATH, _partition(date))
        if part is None:
            continue
        todo = part["realised_return"].isna()
        day = known[known["date"] == date][["date", "ticker", "horizon", "fwd_return"]]
        found = (
            part[["date", "ticker", "horizon"]]
            .merge(day, on=["date", "ticker", "horizon"], how="left")
            .loc[:, "fwd_return"]
            .to_numpy(np.float64)
        )
        new = todo.to_numpy() & np.isfinite(found)
        if new.any():
            part.loc[new, "realised_return"] = found[new]
            _write_partition(store, part, date)
            filled += int(new.sum())
    return filled
