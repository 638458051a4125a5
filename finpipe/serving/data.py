"""The files behind the endpoints, how each is checked when loaded, and the queries over them.

Every table is checked against its contract (the predictions tables) or its required columns
when it is loaded; a table that fails is unreadable and its endpoints answer 503 with why.
Queries filter prepared frames and return plain records (NaN and +-inf as None, dates as
dates) for the response models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.contracts import PREDICTION_HISTORY, PREDICTIONS, Contract, schema_violations
from finpipe.forecasting.predictions import HISTORY_PATH, LATEST_PATH
from finpipe.serving.cache import Source


class NotFound(LookupError):
    """A requested ticker, model, horizon or date that the data does not have."""


@dataclass(frozen=True)
class Table:
    """A prepared frame, its rows as response records (made once per load), and the values
    its filters accept."""

    frame: pd.DataFrame
    rows: list[dict[str, Any]]
    known: dict[str, list[Any]]


def _checked(contract: Contract, frame: pd.DataFrame) -> pd.DataFrame:
    problems = schema_violations(frame, contract)
    if problems:
        raise ValueError("; ".join(problems[:3]))
    return frame


def _columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"missing columns {missing}; expected {columns}")
    return frame[columns]


def table(frame: pd.DataFrame, filters: list[str], sort: list[str] | None = None) -> Table:
    """A Table of `frame` (sorted by `sort`) whose `filters` columns accept known values only."""
    if sort:
        frame = frame.sort_values(sort, kind="mergesort").reset_index(drop=True)
    known = {c: sorted(frame[c].unique().tolist()) for c in filters}
    return Table(frame, records(frame), known)


SIGNAL_COLUMNS = [*PREDICTIONS.required, "signal"]
RANKING_COLUMNS = [
    "rank", "date", "ticker", "horizon", "prediction", "lower", "upper",
    "confidence", "score", "signal",
]  # fmt: skip
WEIGHT_COLUMNS = ["date", "method", "ticker", "weight", "expected_return", "model_version"]
RISK_COLUMNS = ["method", "measure", "model", "horizon_days", "level", "value"]
PREDICTION_ORDER = ["ticker", "horizon", "model"]

PREDICTIONS_ASSET = "the `predictions` asset (group `predictions`)"
LATEST = Source(
    LATEST_PATH,
    PREDICTIONS_ASSET,
    lambda f: table(_checked(PREDICTIONS, f), ["ticker", "horizon", "model"], PREDICTION_ORDER),
)
SIGNALS = Source(
    ("predictions", "signals"),
    PREDICTIONS_ASSET,
    lambda f: table(_columns(f, SIGNAL_COLUMNS), ["ticker", "horizon"], PREDICTION_ORDER),
)
RANKING = Source(
    ("predictions", "ranking"),
    PREDICTIONS_ASSET,
    lambda f: table(_columns(f, RANKING_COLUMNS), [], ["rank"]),
)
WEIGHTS = Source(
    ("portfolio", "target_weights"),
    "the `target_weights` asset (group `portfolio`)",
    lambda f: table(
        _columns(f, WEIGHT_COLUMNS), ["method", "ticker"], ["date", "method", "ticker"]
    ),
)
RISK = Source(
    ("portfolio", "risk_report"),
    "the `risk_report` asset (group `portfolio`)",
    lambda f: table(
        _columns(f, RISK_COLUMNS),
        ["method"],
        ["method", "measure", "model", "horizon_days", "level"],
    ),
)
PORTFOLIO_SUMMARY = Source(
    ("portfolio", "summary"), "the `portfolio` asset group", lambda doc: dict(doc), ".json"
)
BACKTEST = Source(
    ("reports", "backtest", "metrics"),
    "the `backtest_report` asset (group `evaluation`)",
    lambda doc: dict(doc),
    ".json",
)


def history_source(name: str) -> Source:
    """One date's file of the prediction history."""
    return Source(
        (*HISTORY_PATH, name),
        "the `prediction_history` asset (group `predictions`)",
        lambda f: _checked(PREDICTION_HISTORY, f),
    )


def history_by_ticker(frames: list[pd.DataFrame]) -> dict[str, Table]:
    """The history's rows per ticker, newest date first."""
    if not frames:
        return {}
    rows = pd.concat(frames, ignore_index=True)
    rows = rows.sort_values(
        ["ticker", "date", "horizon", "model"], ascending=[True, False, True, True]
    )
    return {
        str(ticker): table(part.reset_index(drop=True), ["horizon", "model"])
        for ticker, part in rows.groupby("ticker", sort=False)
    }


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts: dates as dates, non-finite floats as None."""
    columns = {}
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_datetime64_any_dtype(values):
            columns[name] = values.dt.date.tolist()
        elif pd.api.types.is_float_dtype(values):
            array = values.to_numpy(np.float64)
            columns[name] = np.where(np.isfinite(array), array, None).tolist()
        else:
            columns[name] = values.tolist()
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def select(table: Table, what: str, **filters: Any) -> np.ndarray:
    """Positions of the rows matching every filter that is not None; NotFound names a value
    the table lacks."""
    mask = np.ones(len(table.frame), dtype=bool)
    for column, value in filters.items():
        if value is None:
            continue
        if column in table.known and value not in table.known[column]:
            known = table.known[column]
            shown = ", ".join(map(str, known[:20])) + (" ..." if len(known) > 20 else "")
            raise NotFound(f"{column} {value!r} is not in {what}; it has: {shown}")
        mask &= table.frame[column].to_numpy() == value
    return np.flatnonzero(mask)


def page(table: Table, positions: np.ndarray, offset: int, limit: int) -> dict[str, Any]:
    """A Page body of the rows at `positions[offset : offset + limit]`."""
    return {
        "total": len(positions),
        "offset": offset,
        "limit": limit,
        "items": [table.rows[i] for i in positions[offset : offset + limit]],
    }
