"""Incremental, idempotent refresh of the raw tables.

For each ticker (or series) only dates after what is stored are fetched, plus the last
stored date as an overlap: if the source now reports a different adjusted close there
(a new dividend or split rescales history), the whole history is fetched again. Rows that
break a quality rule are quarantined with the rule, not stored. A refresh that finds
nothing new writes nothing, so running it twice leaves the stored files untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from finpipe.core.contracts import FUNDAMENTALS, MACRO, PRICES, Contract, ContractError, conform
from finpipe.core.storage import ParquetStore, UnreadableFileError
from finpipe.data.quality import RULES_BY_CONTRACT, quarantine_split
from finpipe.data.sources.base import UnknownNameError

log = logging.getLogger(__name__)

RESTATEMENT_TOLERANCE = 1e-8


@dataclass
class RefreshReport:
    """What one refresh did to one stored table."""

    name: str
    action: str  # created | appended | rewritten | unchanged | failed
    fetched_from: date | None = None
    rows_fetched: int = 0
    rows_added: int = 0
    rows_quarantined: int = 0
    rows_stored: int = 0
    first_date: date | None = None
    last_date: date | None = None
    reason: str = ""


@dataclass
class RefreshSummary:
    """Per-table reports of one refresh, with totals for asset metadata."""

    dataset: str
    reports: list[RefreshReport] = field(default_factory=list)

    def total(self, attribute: str) -> int:
        return int(sum(getattr(r, attribute) for r in self.reports))

    def actions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.reports:
            out[r.action] = out.get(r.action, 0) + 1
        return out

    def failed(self) -> dict[str, str]:
        """Names that could not be refreshed, with the reason."""
        return {r.name: r.reason for r in self.reports if r.action == "failed"}


def _day(value: pd.Timestamp) -> date:
    return pd.Timestamp(value).date()


def append_quarantine(
    store: ParquetStore, dataset: str, rows: pd.DataFrame, contract: Contract
) -> int:
    """Add quarantined rows to `quarantine/<dataset>`, once per (key, rule); returns rows added."""
    if rows.empty:
        return 0
    existing = store.read("quarantine", dataset)
    rows = rows.assign(quarantined_at=pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s"))
    combined = rows if existing is None else pd.concat([existing, rows], ignore_index=True)
    dedupe = [c for c in (*contract.key, "rule") if c in combined]
    combined = combined.astype({c: str for c in dedupe if c not in ("date", "period_end")})
    combined = combined.drop_duplicates(dedupe, keep="first")
    added = len(combined) - (0 if existing is None else len(existing))
    if added:
        store.write(combined.reset_index(drop=True), "quarantine", dataset)
    return added


def _restated(
    stored: pd.DataFrame, fetched: pd.DataFrame, contract: Contract, value_col: str, date_col: str
) -> bool:
    """True when the source's rows on the last stored date differ from what was stored."""
    last = stored[date_col].max()
    key = list(contract.key)
    old = stored[stored[date_col] == last].sort_values(key)[value_col].to_numpy(dtype=float)
    new = fetched[fetched[date_col] == last].drop_duplicates(key).sort_values(key)
    new_values = new[value_col].to_numpy(dtype=float)
    if new_values.size == 0:
        return False
    if new_values.size != old.size:
        return True
    return not np.allclose(old, new_values, rtol=RESTATEMENT_TOLERANCE, equal_nan=True)


def _unchanged(name: str, stored: pd.DataFrame | None, date_col: str) -> RefreshReport:
    if stored is None:
        return RefreshReport(name, "unchanged")
    return RefreshReport(
        name,
        "unchanged",
        rows_stored=len(stored),
        first_date=_day(stored[date_col].min()),
        last_date=_day(stored[date_col].max()),
    )


def refresh_table(
    store: ParquetStore,
    key: tuple[str, ...],
    fetch: Callable[[date, date], pd.DataFrame],
    contract: Contract,
    start: date,
    end: date,
    today: pd.Timestamp,
    value_col: str,
    date_col: str = "date",
) -> RefreshReport:
    """Bring one stored table up to `end`, fetching only what it lacks (see module docstring)."""
    name = key[-1]
    note = ""
    try:
        stored = store.read(*key)
        covered_from = store.read_metadata(*key).get("fetched_from")
    except UnreadableFileError as error:
        moved = store.move_aside(key, ("quarantine", "corrupt", key[1]))
        log.warning("%s; moved it to %s and refetching", error, moved)
        stored, covered_from = None, None
        note = f"the stored table was unreadable: moved to {moved} and refetched"
    if stored is not None and stored.empty:
        stored = None
    if stored is None:
        fetch_from, action = start, "created"
    elif covered_from is None or start < date.fromisoformat(covered_from):
        fetch_from, action = start, "rewritten"
    else:
        fetch_from, action = _day(stored[date_col].max()), "appended"
    if fetch_from > end:
        return _unchanged(name, stored, date_col)

    fetched = fetch(fetch_from, end)
    restated = action == "appended" and _restated(stored, fetched, contract, value_col, date_col)
    if restated:
        log.info(
            "%s: source restated history (adjustment changed); refetching from %s", name, start
        )
        fetch_from, action, fetched = start, "rewritten", fetch(start, end)
    rows_fetched = len(fetched)
    clean, bad = quarantine_split(fetched, RULES_BY_CONTRACT[contract.name], today)
    quarantined = append_quarantine(store, key[1], bad, contract)

    if action == "appended":
        new = clean[clean[date_col] > stored[date_col].max()]
        merged = pd.concat([stored, new], ignore_index=True) if not new.empty else stored
    else:
        new, merged = clean, clean
    if merged is None or merged.empty or (action == "appended" and new.empty):
        report = _unchanged(name, stored, date_col)
        report.fetched_from, report.rows_fetched = fetch_from, rows_fetched
        report.rows_quarantined = quarantined
        return report
    merged = conform(merged, contract)
    covered = start if covered_from is None else min(start, date.fromisoformat(covered_from))
    store.write(merged, *key, metadata={"fetched_from": covered.isoformat()})
    return RefreshReport(
        name,
        action,
        fetch_from,
        rows_fetched,
        len(new),
        quarantined,
        len(merged),
        _day(merged[date_col].min()),
        _day(merged[date_col].max()),
        note,
    )


# Contract, value compared for restatements, and date column of each raw dataset.
DATASETS = {
    "prices": (PRICES, "adj_close", "date"),
    "benchmark": (PRICES, "adj_close", "date"),
    "macro": (MACRO, "value", "date"),
    "fundamentals": (FUNDAMENTALS, "value", "period_end"),
}


def refresh_dataset(
    store: ParquetStore,
    dataset: str,
    fetch: Callable[[list[str], date, date], pd.DataFrame],
    names: list[str],
    start: date,
    end: date,
    today: pd.Timestamp | None = None,
) -> RefreshSummary:
    """Refresh `raw/<dataset>/<NAME>` for every ticker or series id in `names`.

    `fetch(names, start, end)` is the source method (`prices`, `macro`, `fundamentals`).
    """
    contract, value_col, date_col = DATASETS[dataset]
    today = today or pd.Timestamp.today().normalize()
    summary = RefreshSummary(dataset)
    for name in names:
        try:
            report = refresh_table(
                store,
                store.raw_key(dataset, name),
                lambda a, b, n=name: fetch([n], a, b),
                contract,
                start,
                end,
                today,
                value_col=value_col,
                date_col=date_col,
            )
        except (UnknownNameError, ContractError) as error:
            report = RefreshReport(name, "failed", reason=f"{type(error).__name__}: {error}")
        if report.action != "failed" and report.rows_stored == 0:
            report.action, report.reason = (
                "failed",
                f"the source returned no rows for {start}..{end}",
            )
        summary.reports.append(report)
        log.info("%s/%s: %s %s", dataset, name, report.action, report.reason)
    failed = summary.failed()
    if failed:
        record_unavailable(store, dataset, failed)
    return summary


def record_unavailable(store: ParquetStore, dataset: str, failed: dict[str, str]) -> int:
    """Add names the source could not provide to `quarantine/universe` (once per dataset,
    name and reason): a universe problem the quality checks report; returns rows added."""
    rows = pd.DataFrame(
        {
            "dataset": dataset,
            "name": list(failed),
            "reason": list(failed.values()),
            "quarantined_at": pd.Timestamp.now(tz="UTC").tz_localize(None).floor("s"),
        }
    )
    existing = store.read("quarantine", "universe")
    combined = rows if existing is None else pd.concat([existing, rows], ignore_index=True)
    combined = combined.drop_duplicates(["dataset", "name", "reason"], keep="first")
    added = len(combined) - (0 if existing is None else len(existing))
    if added:
        store.write(combined.reset_index(drop=True), "quarantine", "universe")
    return added


def read_table(
    store: ParquetStore, dataset: str, contract: Contract, names: list[str] | None = None
) -> pd.DataFrame:
    """The stored raw tables of a dataset (those of `names` only, when given; a name
    without a table is left out), concatenated in contract shape (empty if none)."""
    if names is None:
        frame = store.read_all("raw", dataset)
    else:
        stored = set(store.names("raw", dataset))
        frames = [store.read(*store.raw_key(dataset, n)) for n in names if n in stored]
        frame = pd.concat(frames, ignore_index=True) if frames else None
    return contract.empty() if frame is None else conform(frame, contract)


def universe_tickers(store: ParquetStore) -> list[str]:
    """The tickers of the stored universe: what every step after ingest works on (stored
    prices of tickers dropped from it are kept, and left out)."""
    universe = store.read("reference", "universe")
    if universe is None:
        raise FileNotFoundError("the universe is not stored yet: materialize universe")
    return universe["ticker"].astype(str).tolist()


def universe_prices(store: ParquetStore) -> pd.DataFrame:
    """The stored prices of the universe's tickers, in the prices contract."""
    return read_table(store, "prices", PRICES, universe_tickers(store))
