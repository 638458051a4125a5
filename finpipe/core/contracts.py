"""Data contracts: the long-format tables every source returns and every asset stores.

Each contract names its key, its required columns and the optional ones a source may lack.
`conform` puts a frame into contract shape (column order, dtypes, sorted by key);
`schema_violations` lists what is wrong with a frame, for the asset checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Contract:
    """Columns, dtypes and key of one long-format table."""

    name: str
    key: tuple[str, ...]
    required: dict[str, str]
    optional: dict[str, str]

    @property
    def columns(self) -> dict[str, str]:
        return {**self.required, **self.optional}

    def empty(self) -> pd.DataFrame:
        """A zero-row frame with the required columns in contract dtypes."""
        return conform(pd.DataFrame({c: [] for c in self.required}), self)


DATE, STR, FLOAT = "datetime64[ns]", "str", "float64"

PRICES = Contract(
    name="prices",
    key=("ticker", "date"),
    required={"date": DATE, "ticker": STR, "adj_close": FLOAT},
    optional={
        "open": FLOAT,
        "high": FLOAT,
        "low": FLOAT,
        "close": FLOAT,
        "volume": FLOAT,
        "dividends": FLOAT,
        "split_ratio": FLOAT,
    },
)
PRICE_FIELDS = ("open", "high", "low", "close", "adj_close", "volume")

MACRO = Contract(
    name="macro",
    key=("series_id", "date"),
    required={"date": DATE, "series_id": STR, "value": FLOAT, "available_at": DATE},
    optional={},
)

FUNDAMENTALS = Contract(
    name="fundamentals",
    key=("ticker", "period_end", "field"),
    required={
        "ticker": STR,
        "period_end": DATE,
        "available_at": DATE,
        "field": STR,
        "value": FLOAT,
    },
    optional={},
)


class ContractError(ValueError):
    """A frame that cannot be put into its contract's shape."""


def _coerce(series: pd.Series, dtype: str) -> pd.Series:
    if dtype == DATE:
        values = pd.to_datetime(series)
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_localize(None)
        return values.dt.normalize().astype(DATE)
    if dtype == STR:
        return series.astype(str)
    return pd.to_numeric(series, errors="raise").astype(dtype)


def conform(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Return `frame` with contract column order and dtypes, sorted by key, index reset.

    Raises ContractError naming the missing or unknown columns.
    """
    missing = [c for c in contract.required if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in contract.columns]
    if missing or unknown:
        raise ContractError(
            f"{contract.name}: missing required columns {missing}, unknown columns {unknown}; "
            f"expected {list(contract.required)} plus optional {list(contract.optional)}"
        )
    cols = [c for c in contract.columns if c in frame.columns]
    out = pd.DataFrame({c: _coerce(frame[c], contract.columns[c]) for c in cols})
    return out.sort_values(list(contract.key), kind="mergesort").reset_index(drop=True)


def schema_violations(frame: pd.DataFrame, contract: Contract) -> list[str]:
    """Describe every way `frame` departs from its contract (empty list when it conforms)."""
    problems = [f"missing required column {c!r}" for c in contract.required if c not in frame]
    problems += [f"unknown column {c!r}" for c in frame.columns if c not in contract.columns]
    for col, dtype in contract.columns.items():
        if col not in frame:
            continue
        actual = frame[col].dtype
        ok = (
            pd.api.types.is_datetime64_dtype(actual) and getattr(actual, "tz", None) is None
            if dtype == DATE
            else pd.api.types.is_string_dtype(actual)
            if dtype == STR
            else pd.api.types.is_float_dtype(actual)
        )
        if not ok:
            problems.append(f"column {col!r} has dtype {actual}, expected {dtype}")
    return problems


def duplicate_keys(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Rows whose key appears more than once."""
    return frame[frame.duplicated(list(contract.key), keep=False)]
