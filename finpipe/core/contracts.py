"""Data contracts: the long-format tables every source returns and every asset stores.

Each contract names its key, its required columns and the optional ones a source may lack.
`conform` puts a frame into contract shape (column order, dtypes, sorted by key) and refuses
values that break the contract's value rules; `schema_violations` lists what is wrong with a
stored frame, for the asset checks. An exact contract (the predictions tables, which other
applications read) has no optional columns and must match its column order and dtypes
exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from finpipe.core.keys import ROW_KEY

DATE, STR, INT, FLOAT = "datetime64[ns]", "str", "int64", "float64"

# Every problem a contract's value rules find in a conformed frame (empty: none).
ValueRules = Callable[[pd.DataFrame], list[str]]


@dataclass(frozen=True)
class Contract:
    """Columns, dtypes, key and value rules of one long-format table."""

    name: str
    key: tuple[str, ...]
    required: dict[str, str]
    optional: dict[str, str]
    exact: bool = False
    value_rules: ValueRules | None = None

    @property
    def columns(self) -> dict[str, str]:
        return {**self.required, **self.optional}

    def empty(self) -> pd.DataFrame:
        """A zero-row frame with the required columns in contract dtypes."""
        return conform(pd.DataFrame({c: [] for c in self.required}), self)

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema pandas writes for the required columns (pandas' str is
        large_string)."""
        arrow = {DATE: pa.timestamp("ns"), STR: pa.large_string(), INT: pa.int64()}
        return pa.schema([(c, arrow.get(t, pa.float64())) for c, t in self.required.items()])


class ContractError(ValueError):
    """A frame that cannot be put into its contract's shape; the message says what is wrong."""


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


LABELS = Contract(
    name="labels",
    key=ROW_KEY,
    required={
        "date": DATE,
        "ticker": STR,
        "horizon": INT,
        "fwd_return": FLOAT,
        "label_end": DATE,
    },
    optional={},
)


def prediction_value_problems(frame: pd.DataFrame) -> list[str]:
    """Value rules of the predictions tables: keys present, finite predictions, ordered
    bounds (+-inf for an unbounded interval, never NaN), levels in (0, 1), confidence in
    [0, 1], models trained on nothing later than the date they predict, one row per date,
    ticker, horizon and model."""
    problems = []
    for col in ("date", "ticker", "model", "model_version", "horizon", "trained_through"):
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
    if (frame["trained_through"] > frame["date"]).any():
        problems.append("trained_through after the prediction date (a model saw the future)")
    duplicated = frame.duplicated([*ROW_KEY, "model"])
    if duplicated.any():
        problems.append(f"{int(duplicated.sum())} duplicate (date, ticker, horizon, model) rows")
    return problems


PREDICTIONS = Contract(
    name="predictions",
    key=(*ROW_KEY, "model"),
    required={
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
        "trained_through": DATE,
    },
    optional={},
    exact=True,
    value_rules=prediction_value_problems,
)

# The walk-forward replay's rows: the predictions columns, the fold that made them and the
# row's conformal scale (what later folds calibrate on).
REPLAY = Contract(
    name="replay",
    key=PREDICTIONS.key,
    required={**PREDICTIONS.required, "fold": STR, "horizon_vol": FLOAT, "scale": FLOAT},
    optional={},
    exact=True,
    value_rules=prediction_value_problems,
)

PREDICTION_HISTORY = Contract(
    name="prediction_history",
    key=PREDICTIONS.key,
    required={**PREDICTIONS.required, "realised_return": FLOAT},
    optional={},
    exact=True,
    value_rules=prediction_value_problems,
)


def portfolio_value_problems(frame: pd.DataFrame, key: tuple[str, ...]) -> list[str]:
    """Value rules of the portfolio tables: key columns present, no duplicate keys, and
    finite weights and values where the table has them."""
    problems = [
        f"{int(frame[c].isna().sum())} rows with a missing {c}"
        for c in key
        if frame[c].isna().any()
    ]
    for col in ("weight", "value", "loss", "trade_shares", "notional"):
        if col in frame and not np.isfinite(frame[col].to_numpy(np.float64)).all():
            problems.append(f"{col} must be finite")
    duplicated = frame.duplicated(list(key))
    if duplicated.any():
        problems.append(f"{int(duplicated.sum())} duplicate {key} rows")
    return problems


def _portfolio(name: str, key: tuple[str, ...], required: dict[str, str]) -> Contract:
    rules = functools.partial(portfolio_value_problems, key=key)
    return Contract(name, key, required, {}, exact=True, value_rules=rules)


# The portfolio stage's tables (under `portfolio/`), which other applications read.
# Target weights per prediction date, method and ticker: signed weights of capital, the
# ensemble's expected return at the portfolio horizon (NaN for a held name without one)
# and the ensemble version the weights came from.
TARGET_WEIGHTS = _portfolio(
    "target_weights",
    ("date", "method", "ticker"),
    {
        "date": DATE,
        "method": STR,
        "ticker": STR,
        "weight": FLOAT,
        "expected_return": FLOAT,
        "model_version": STR,
    },
)
# VaR and CVaR of each method's target: positive loss fractions of capital.
RISK_REPORT = _portfolio(
    "risk_report",
    ("method", "measure", "model", "horizon_days", "level"),
    {
        "method": STR,
        "measure": STR,
        "model": STR,
        "horizon_days": INT,
        "level": FLOAT,
        "value": FLOAT,
    },
)
# Each name's share of its portfolio's volatility (Euler contributions; they sum to 1).
RISK_CONTRIBUTIONS = _portfolio(
    "risk_contributions",
    ("method", "ticker"),
    {"method": STR, "ticker": STR, "weight": FLOAT, "contribution": FLOAT},
)
# The loss of holding each target through the named stress windows.
STRESS = _portfolio(
    "stress",
    ("method", "window"),
    {"method": STR, "window": STR, "start": DATE, "end": DATE, "loss": FLOAT},
)
# Kupiec's test of the 1-day VaRs stated along the construction replay.
VAR_BACKTEST = _portfolio(
    "var_backtest",
    ("method", "model", "level"),
    {
        "method": STR,
        "model": STR,
        "level": FLOAT,
        "n": INT,
        "breaches": INT,
        "expected": FLOAT,
        "kupiec_lr": FLOAT,
        "p_value": FLOAT,
    },
)
# The trades from current holdings to each method's target; nothing is sent anywhere.
ORDERS = _portfolio(
    "orders",
    ("method", "ticker"),
    {
        "method": STR,
        "ticker": STR,
        "current_shares": FLOAT,
        "target_shares": FLOAT,
        "trade_shares": FLOAT,
        "price": FLOAT,
        "notional": FLOAT,
        "side": STR,
        "estimated_cost": FLOAT,
    },
)
# The construction methods' targets at each rebalance date of the backtest's replay.
CONSTRUCTION_REPLAY = _portfolio(
    "construction_replay",
    ("date", "method", "ticker"),
    {"date": DATE, "method": STR, "ticker": STR, "weight": FLOAT},
)


def _coerce(series: pd.Series, dtype: str) -> pd.Series:
    if dtype == DATE:
        values = pd.to_datetime(series)
        if getattr(values.dt, "tz", None) is not None:
            values = values.dt.tz_localize(None)
        return values.dt.normalize().astype(DATE)
    if dtype == STR:
        return series.where(series.isna(), series.astype(str)).astype(STR)
    numeric = pd.to_numeric(series, errors="raise").astype(FLOAT)
    if dtype == INT:
        if not np.array_equal(numeric, np.round(numeric)):
            raise ValueError("non-integer values")
        return numeric.astype(INT)
    return numeric.astype(dtype)


def conform(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Return `frame` with contract column order and dtypes, sorted by key, index reset.

    Raises ContractError naming the missing or unknown columns, a column whose values
    cannot be coerced, and every broken value rule.
    """
    missing = [c for c in contract.required if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in contract.columns]
    if missing or unknown:
        raise ContractError(
            f"{contract.name}: missing columns {missing}, unknown columns {unknown}; "
            f"expected {list(contract.required)} plus optional {list(contract.optional)}"
        )
    columns = [c for c in contract.columns if c in frame.columns]
    coerced = {}
    for col in columns:
        dtype = contract.columns[col]
        try:
            coerced[col] = _coerce(frame[col], dtype)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{contract.name}: column {col!r} is not {dtype}: {exc}") from exc
    out = pd.DataFrame(coerced, index=frame.index)
    if contract.value_rules is not None:
        problems = contract.value_rules(out)
        if problems:
            raise ContractError(f"{contract.name}: " + "; ".join(problems))
    return out.sort_values(list(contract.key), kind="mergesort").reset_index(drop=True)


def _dtype_matches(actual: object, dtype: str, exact: bool) -> bool:
    if exact:
        return str(actual) == dtype
    if dtype == DATE:
        return pd.api.types.is_datetime64_dtype(actual) and getattr(actual, "tz", None) is None
    if dtype == STR:
        return pd.api.types.is_string_dtype(actual)
    if dtype == INT:
        return pd.api.types.is_integer_dtype(actual)
    return pd.api.types.is_float_dtype(actual)


def schema_violations(frame: pd.DataFrame, contract: Contract) -> list[str]:
    """Describe every way `frame` departs from its contract (empty list when it conforms):
    columns (and, for an exact contract, their order), dtypes and value rules."""
    if contract.exact and list(frame.columns) != list(contract.required):
        return [f"columns are {list(frame.columns)}, expected exactly {list(contract.required)}"]
    problems = [f"missing required column {c!r}" for c in contract.required if c not in frame]
    problems += [f"unknown column {c!r}" for c in frame.columns if c not in contract.columns]
    problems += [
        f"column {col!r} has dtype {frame[col].dtype}, expected {dtype}"
        for col, dtype in contract.columns.items()
        if col in frame and not _dtype_matches(frame[col].dtype, dtype, contract.exact)
    ]
    if contract.value_rules is not None and not problems:
        problems += contract.value_rules(frame)
    return problems
