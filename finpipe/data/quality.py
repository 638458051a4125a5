"""Data quality rules: row rules that quarantine bad rows, and table checks on stored data.

Row rules run at ingest: a row that breaks one goes to the quarantine table with the rules it
broke, never silently dropped. The same rules, plus schema, key, gap and staleness checks,
run again on the stored tables as Dagster asset checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finpipe.core.calendar import count_sessions
from finpipe.core.contracts import FUNDAMENTALS, MACRO, PRICES, Contract, schema_violations

OHLC_TOLERANCE = 1e-6
PRICE_FIELDS_PRESENT = ("open", "high", "low", "close", "adj_close")


@dataclass(frozen=True)
class RowRule:
    """A named rule; `violations(frame, today)` marks the rows that break it."""

    name: str
    description: str
    violations: Callable[[pd.DataFrame, pd.Timestamp], pd.Series]


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series(np.nan, index=frame.index)


def _non_positive_price(frame: pd.DataFrame, _: pd.Timestamp) -> pd.Series:
    out = pd.Series(False, index=frame.index)
    for c in PRICE_FIELDS_PRESENT:
        if c in frame:
            out |= frame[c] <= 0
    return out


def _ohlc_inconsistent(frame: pd.DataFrame, _: pd.Timestamp) -> pd.Series:
    o, h, lo, c = (_col(frame, n) for n in ("open", "high", "low", "close"))
    top = np.fmax(o, c)
    bottom = np.fmin(o, c)
    return (
        (h < top * (1 - OHLC_TOLERANCE))
        | (lo > bottom * (1 + OHLC_TOLERANCE))
        | (h < lo * (1 - OHLC_TOLERANCE))
    )


def _duplicate(contract: Contract) -> Callable[[pd.DataFrame, pd.Timestamp], pd.Series]:
    return lambda frame, _: frame.duplicated(list(contract.key), keep="first")


PRICE_RULES = [
    RowRule("missing_adj_close", "adj_close is missing", lambda f, _: f["adj_close"].isna()),
    RowRule("non_positive_price", "a price field is zero or negative", _non_positive_price),
    RowRule("negative_volume", "volume is negative", lambda f, _: _col(f, "volume") < 0),
    RowRule(
        "ohlc_inconsistent",
        "high < max(open, close), low > min(open, close) or high < low",
        _ohlc_inconsistent,
    ),
    RowRule("future_date", "date is after today", lambda f, today: f["date"] > today),
    RowRule("non_trading_day", "date is a weekend", lambda f, _: f["date"].dt.day_of_week >= 5),
    RowRule("duplicate_key", "(ticker, date) already seen in this batch", _duplicate(PRICES)),
]

MACRO_RULES = [
    RowRule("missing_value", "value is missing", lambda f, _: f["value"].isna()),
    RowRule("future_date", "date is after today", lambda f, today: f["date"] > today),
    RowRule(
        "released_before_observed",
        "available_at is before the observation date",
        lambda f, _: f["available_at"] < f["date"],
    ),
    RowRule("duplicate_key", "(series_id, date) already seen in this batch", _duplicate(MACRO)),
]

FUNDAMENTAL_RULES = [
    RowRule("missing_value", "value is missing", lambda f, _: f["value"].isna()),
    RowRule("future_date", "period_end is after today", lambda f, today: f["period_end"] > today),
    RowRule(
        "released_before_period_end",
        "available_at is before period_end",
        lambda f, _: f["available_at"] < f["period_end"],
    ),
    RowRule("duplicate_key", "(ticker, period_end, field) already seen", _duplicate(FUNDAMENTALS)),
]

RULES_BY_CONTRACT = {"prices": PRICE_RULES, "macro": MACRO_RULES, "fundamentals": FUNDAMENTAL_RULES}


def rule_violations(frame: pd.DataFrame, rules: list[RowRule], today: pd.Timestamp) -> pd.DataFrame:
    """Boolean frame, one column per rule, True where the row breaks it."""
    return pd.DataFrame(
        {rule.name: rule.violations(frame, today).fillna(False).astype(bool) for rule in rules},
        index=frame.index,
    )


def quarantine_split(
    frame: pd.DataFrame, rules: list[RowRule], today: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into (clean, quarantined); quarantined rows carry `rule` and `reason`."""
    broken = rule_violations(frame, rules, today)
    bad = broken.any(axis=1)
    descriptions = {r.name: r.description for r in rules}
    names = broken[bad].apply(lambda row: [n for n, hit in row.items() if hit], axis=1)
    quarantined = frame[bad].copy()
    quarantined["rule"] = names.map(";".join).astype(str)
    quarantined["reason"] = names.map(lambda ns: "; ".join(descriptions[n] for n in ns)).astype(str)
    return frame[~bad].copy(), quarantined


@dataclass(frozen=True)
class CheckOutcome:
    """Result of a table check, ready to become a Dagster AssetCheckResult."""

    passed: bool
    description: str
    failing_rows: int = 0
    sample: pd.DataFrame | None = None


def check_schema(frame: pd.DataFrame, contract: Contract) -> CheckOutcome:
    problems = schema_violations(frame, contract)
    return CheckOutcome(
        not problems, "; ".join(problems) or f"matches the {contract.name} contract"
    )


def check_unique_key(frame: pd.DataFrame, contract: Contract) -> CheckOutcome:
    dup = frame[frame.duplicated(list(contract.key), keep=False)]
    key = ", ".join(contract.key)
    return CheckOutcome(dup.empty, f"{len(dup)} rows share a ({key}) key", len(dup), dup.head(5))


def check_rule(frame: pd.DataFrame, rule: RowRule, today: pd.Timestamp) -> CheckOutcome:
    hits = rule.violations(frame, today).fillna(False).astype(bool)
    bad = frame[hits]
    return CheckOutcome(
        bad.empty, f"{len(bad)} rows where {rule.description}", len(bad), bad.head(5)
    )


def trading_gaps(frame: pd.DataFrame, max_gap_days: int) -> pd.DataFrame:
    """Per ticker, consecutive rows with more than `max_gap_days` NYSE trading sessions missing
    between them (holidays and weekends are not sessions, so they never make a gap)."""
    ordered = frame.sort_values(["ticker", "date"])
    prev = ordered.groupby("ticker")["date"].shift(1)
    has_prev = prev.notna()
    missing = pd.Series(0, index=ordered.index)
    missing[has_prev] = count_sessions(
        prev[has_prev], ordered.loc[has_prev, "date"] - pd.Timedelta(days=1)
    )
    gaps = ordered.assign(previous_date=prev, missing_sessions=missing)
    return gaps[gaps["missing_sessions"] > max_gap_days][
        ["ticker", "previous_date", "date", "missing_sessions"]
    ]


def check_gaps(frame: pd.DataFrame, max_gap_days: int) -> CheckOutcome:
    gaps = trading_gaps(frame, max_gap_days)
    return CheckOutcome(
        gaps.empty,
        f"{len(gaps)} gaps longer than {max_gap_days} trading sessions",
        len(gaps),
        gaps.head(5),
    )


def check_staleness(frame: pd.DataFrame, as_of: pd.Timestamp, max_stale_days: int) -> CheckOutcome:
    """Every ticker's newest row is at most `max_stale_days` NYSE trading sessions behind `as_of`
    (the sessions after its newest row, through `as_of`)."""
    newest = frame.groupby("ticker")["date"].max()
    lag = pd.Series(count_sessions(newest, as_of), index=newest.index)
    stale = lag[lag > max_stale_days]
    sample = stale.rename("sessions_behind").reset_index().head(5)
    return CheckOutcome(
        stale.empty,
        f"{len(stale)} tickers more than {max_stale_days} trading sessions behind {as_of.date()}",
        len(stale),
        sample,
    )
