"""The feature engine: runs every feature family over the whole panel and collects the result.

Families compute on wide (dates x tickers) float64 arrays, a block of tickers at a time
(bounded memory; blocks can run on threads, since NumPy releases the GIL in its loops), and
write straight into one preallocated (features x rows) array in the output dtype, which
becomes the frame without a copy. Families that need the whole cross-section (ranks across
tickers, sectors), only dates (macro, regime) or the statements of every ticker at once
(fundamentals) run once over the full panel afterwards.
Infinities become NaN; nothing else is filled.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finpipe.features import (
    alpha158,
    cross_asset,
    fundamentals,
    macro,
    microstructure,
    momentum,
    regime,
    technical,
    volatility,
)
from finpipe.features.config import FeatureConfig
from finpipe.features.family import Family, FamilyInputs
from finpipe.features.fundamentals import statement_table
from finpipe.features.price_panel import PricePanel, RowIndex, build_price_panel, ticker_column

FAMILIES: tuple[Family, ...] = (
    *alpha158.FAMILIES,
    *technical.FAMILIES,
    *volatility.FAMILIES,
    *momentum.FAMILIES,
    *microstructure.FAMILIES,
    *cross_asset.FAMILIES,
    *macro.FAMILIES,
    *regime.FAMILIES,
    *fundamentals.FAMILIES,
)
GROUPS = tuple(dict.fromkeys(f.group for f in FAMILIES))


@dataclass
class FeatureSet:
    """Features of every input row, with what was computed, skipped and how long it took.

    `frame`: date, ticker, then one float column per feature, one row per input
    (date, ticker), sorted by date then ticker. `computed` lists the families that ran,
    `skipped` the others with the reason, `columns` each computed family's columns, and
    `seconds` the time per family plus "prepare" (pivot, planning) and "assemble"; with
    `n_jobs` > 1 family times add up over threads.
    """

    frame: pd.DataFrame
    computed: list[str]
    skipped: dict[str, str]
    columns: dict[str, list[str]]
    seconds: dict[str, float] = field(default_factory=dict)


def family_names(selection: tuple[str, ...] | None = None) -> list[str]:
    """Names of the families a selection of family or group names stands for (None: all)."""
    if selection is None:
        return [f.name for f in FAMILIES]
    known = {f.name for f in FAMILIES} | set(GROUPS)
    unknown = sorted(set(selection) - known)
    if unknown:
        raise ValueError(
            f"unknown feature families {unknown}; choose from groups {list(GROUPS)} "
            f"or families {[f.name for f in FAMILIES]}"
        )
    return [f.name for f in FAMILIES if f.name in selection or f.group in selection]


def _align_benchmark(benchmark: pd.DataFrame | None, dates: pd.DatetimeIndex) -> np.ndarray | None:
    """The benchmark's adj_close as of each panel date (its last value dated on or before)."""
    if benchmark is None or benchmark.empty:
        return None
    if benchmark["ticker"].nunique() > 1:
        raise ValueError(
            f"benchmark must hold one ticker, got {sorted(benchmark['ticker'].unique())[:5]}"
        )
    rows = benchmark.dropna(subset=["adj_close"]).sort_values("date")
    when = rows["date"].to_numpy(dtype="datetime64[ns]")
    position = np.searchsorted(when, dates.to_numpy(dtype="datetime64[ns]"), side="right") - 1
    close = rows["adj_close"].to_numpy(dtype=np.float64)
    return np.where(position >= 0, close[np.maximum(position, 0)], np.nan)


def _prepare_macro(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if frame is None:
        return None
    missing = {"date", "series_id", "value", "available_at"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"macro lacks columns {sorted(missing)}; expected date, series_id, value, available_at"
        )
    return frame.assign(
        date=pd.to_datetime(frame["date"]).astype("datetime64[ns]"),
        available_at=pd.to_datetime(frame["available_at"]).astype("datetime64[ns]"),
    )


def _wide(prices: pd.DataFrame, column: str, panel: PricePanel) -> np.ndarray | None:
    """A price column as a (dates, tickers) array of the panel; None when it has no value."""
    if column not in prices.columns or prices[column].isna().all():
        return None
    rows = prices.assign(
        date=pd.to_datetime(prices["date"]).astype("datetime64[ns]"),
        ticker=prices["ticker"].astype(str),
    )
    wide = rows.pivot(index="date", columns="ticker", values=column)
    return wide.reindex(index=panel.dates, columns=panel.tickers).to_numpy(dtype=np.float64)


def _plan(
    panel: PricePanel, inputs: FamilyInputs, selected: list[str]
) -> tuple[list[tuple[Family, list[str]]], dict[str, str]]:
    """Which selected families run (with their columns) and why the others do not."""
    plan: list[tuple[Family, list[str]]] = []
    skipped: dict[str, str] = {}
    produced: set[str] = set()
    ordered = sorted((f for f in FAMILIES if f.name in selected), key=lambda f: f.scope == "panel")
    for family in ordered:
        lacking = [need for need in family.needs if need != "adj_close" and not panel.has(need)]
        reason = None
        if lacking:
            have = ", ".join(panel.source_columns)
            reason = f"needs {', '.join(lacking)}; source has {have} only"
        elif family.unavailable is not None:
            reason = family.unavailable(inputs)
        if reason is None and family.replaces is not None:
            replaced = next((f for f, _ in plan if f.name == family.replaces), None)
            if replaced is not None:
                inputs_used = ", ".join(replaced.needs)
                reason = f"not needed: {replaced.name} computed its columns from {inputs_used}"
        columns = [] if reason else family.columns(inputs.config, frozenset(produced))
        if reason is None and not columns:
            reason = "none of the features it builds on were computed"
        if reason:
            skipped[family.name] = reason
            continue
        clash = produced.intersection(columns)
        if clash:
            raise ValueError(f"family {family.name} repeats columns {sorted(clash)}")
        produced.update(columns)
        plan.append((family, columns))
    return plan, skipped


class _Output:
    """The (features x rows) output array and the writes into it.

    Rows are sorted by date then ticker, so for a complete panel a feature's row values are
    its (dates x tickers) array in C order and a block of tickers is a column slice of it.
    """

    def __init__(self, names: list[str], rows: RowIndex, shape: tuple[int, int], dtype: str):
        self.values = np.empty((len(names), len(rows.date_code)), dtype=dtype)
        self.slot = {name: j for j, name in enumerate(names)}
        self.rows = rows
        self.shape = shape
        self.row_of_cell = None
        if not rows.complete:
            self.row_of_cell = np.full(shape, -1, dtype=np.int64)
            self.row_of_cell[rows.date_code, rows.ticker_code] = np.arange(len(rows.date_code))

    def write(self, name: str, values: np.ndarray, tickers: slice) -> None:
        """Store a (dates, block tickers) or date-level (dates,) array in the output dtype.

        Infinite values (a division by zero, a value beyond the dtype's range) become NaN.
        """
        if values.ndim == 1:
            values = values[:, None]
        values = np.broadcast_to(values, (self.shape[0], tickers.stop - tickers.start))
        column = self.values[self.slot[name]]
        with np.errstate(over="ignore", invalid="ignore"):
            if self.row_of_cell is None:
                target = column.reshape(self.shape)[:, tickers]
                np.copyto(target, values, casting="same_kind")
            else:
                row = self.row_of_cell[:, tickers]
                present = row >= 0
                target = values[present].astype(self.values.dtype)
        infinite = np.isinf(target)
        if infinite.any():
            target[infinite] = np.nan
        if self.row_of_cell is not None:
            column[row[present]] = target

    def read(self, name: str) -> np.ndarray:
        """A stored column back as (dates, tickers) float64, NaN where there is no row."""
        column = self.values[self.slot[name]]
        if self.row_of_cell is None:
            out = column.reshape(self.shape).astype(np.float64)
        else:
            out = np.full(self.shape, np.nan)
            out[self.rows.date_code, self.rows.ticker_code] = column
        out[np.isinf(out)] = np.nan
        return out


def _run_families(
    plan: list[tuple[Family, list[str]]],
    panel: PricePanel,
    inputs: FamilyInputs,
    output: _Output,
    tickers: slice,
) -> dict[str, float]:
    seconds = {}
    for family, columns in plan:
        start = time.perf_counter()
        written = []
        for name, values in family.compute(panel, inputs):
            output.write(name, values, tickers)
            written.append(name)
        if written != columns:
            raise RuntimeError(f"family {family.name} produced {written}, but declared {columns}")
        seconds[family.name] = time.perf_counter() - start
    return seconds


def _add(totals: dict[str, float], seconds: dict[str, float]) -> None:
    for name, value in seconds.items():
        totals[name] = totals.get(name, 0.0) + value


def build_features(
    prices: pd.DataFrame,
    *,
    benchmark: pd.DataFrame | None = None,
    macro: pd.DataFrame | None = None,
    fundamentals: pd.DataFrame | None = None,
    universe: pd.DataFrame | None = None,
    config: FeatureConfig | None = None,
) -> FeatureSet:
    """Compute the configured feature families for every row of `prices` (prices contract).

    A feature at date t reads only data available at the close of t. Families whose inputs
    are missing (price fields, benchmark, macro series, fundamentals, universe, GARCH
    parameters) are skipped and listed with the reason.
    """
    config = config or FeatureConfig()
    start = time.perf_counter()
    if prices.empty:
        raise ValueError("prices is empty: there is nothing to compute features for")
    panel, rows = build_price_panel(prices)
    statements = statement_table(fundamentals)
    inputs = FamilyInputs(
        config=config,
        benchmark_close=_align_benchmark(benchmark, panel.dates),
        macro=_prepare_macro(macro),
        fundamentals=statements,
        traded_close=None if statements is None else _wide(prices, "close", panel),
        split_ratio=None if statements is None else _wide(prices, "split_ratio", panel),
        universe=None
        if universe is None
        else universe.assign(ticker=universe["ticker"].astype(str)),
    )
    plan, skipped = _plan(panel, inputs, family_names(config.families))
    names = [name for _, columns in plan for name in columns]
    output = _Output(names, rows, panel.shape, config.dtype)
    inputs.read = output.read
    seconds = {"prepare": time.perf_counter() - start}

    by_ticker = [(f, c) for f, c in plan if f.scope == "ticker"]
    n_tickers = panel.shape[1]
    step = config.tickers_per_block
    blocks = [slice(s, min(s + step, n_tickers)) for s in range(0, n_tickers, step)]

    def run_block(block: slice) -> dict[str, float]:
        return _run_families(by_ticker, panel.block(block), inputs, output, block)

    if config.n_jobs > 1:
        with ThreadPoolExecutor(max_workers=config.n_jobs) as pool:
            timings = list(pool.map(run_block, blocks))
    else:
        timings = [run_block(block) for block in blocks]
    for block_seconds in timings:
        _add(seconds, block_seconds)

    for family, columns in plan:
        if family.scope == "panel":
            inputs.available = frozenset(names[: names.index(columns[0])])
            _add(
                seconds,
                _run_families([(family, columns)], panel, inputs, output, slice(0, n_tickers)),
            )

    start = time.perf_counter()
    frame = pd.DataFrame(output.values.T, columns=names, copy=False)
    frame.insert(0, "date", panel.dates.to_numpy()[rows.date_code])
    frame.insert(1, "ticker", ticker_column(panel.tickers, rows.ticker_code))
    seconds["assemble"] = time.perf_counter() - start
    return FeatureSet(
        frame=frame,
        computed=[f.name for f, _ in plan],
        skipped=skipped,
        columns={f.name: columns for f, columns in plan},
        seconds=seconds,
    )


def nan_share_by_family(frame: pd.DataFrame, columns: dict[str, list[str]]) -> dict[str, float]:
    """Mean share of missing values of each family's columns (warm-up periods included)."""
    return {
        family: round(float(frame[cols].isna().mean().mean()), 4)
        for family, cols in columns.items()
    }


INFINITE, ALL_MISSING = "has infinite values", "is missing on every row"


def invalid_columns(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Feature columns that are infinite somewhere (`INFINITE`) or missing everywhere
    (`ALL_MISSING`), by problem.

    What the asset checks on the features ask; an all-missing column usually means a window
    longer than the history given.
    """
    found: dict[str, list[str]] = {INFINITE: [], ALL_MISSING: []}
    for name in frame.columns.drop(["date", "ticker"], errors="ignore"):
        numbers = frame[name].to_numpy(dtype=np.float64)  # a column at a time: bounded memory
        if np.isinf(numbers).any():
            found[INFINITE].append(name)
        if np.isnan(numbers).all():
            found[ALL_MISSING].append(name)
    return found
