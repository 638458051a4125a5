"""Quarterly statement ratios joined point in time: a statement is used at date t only once public.

A statement is one (ticker, period_end) of the fundamentals table, public from the earliest
`available_at` of its rows. At date t a ticker's features come from its latest statement (by
period end) among those public by t, never from a later one: a quarter that has ended but is
not yet reported is not seen, and a value missing from the latest statement is not carried
over from an earlier one. Trailing sums add the statement's quarter to the three before it;
year-on-year growth compares it with the statement whose period ended a year earlier (within
15 days, for 52/53-week years); every row used must be public by t, else the feature is NaN.

Fields are the yahoo source's (Yahoo line items in snake_case). Each feature is its own
family, `fundamentals_<feature>` (group "fundamentals"), which runs only when the
fundamentals have every field it needs. Features, per (date, ticker):

* `earnings_yield`: trailing-4-quarter `net_income` / market cap.
* `book_to_price`: `stockholders_equity` / market cap.
* `roe`: trailing-4-quarter `net_income` / `stockholders_equity`.
* `gross_margin`, `operating_margin`, `net_margin`: the quarter's `gross_profit`,
  `operating_income` and `net_income` / its `total_revenue`.
* `debt_to_equity`: `total_debt` / `stockholders_equity`; `liabilities_to_assets`:
  `total_liabilities_net_minority_interest` / `total_assets`.
* `revenue_growth_yoy`: `total_revenue` / that of a year earlier - 1; `earnings_growth_yoy`:
  the change of `net_income` over a year / |its earlier value| (defined for losses too).

Ratios over a denominator that is not positive (equity, revenue, assets, market cap, the
earlier revenue; the earlier net income for earnings growth: zero) are NaN.

Market cap at t is the prices' `close` at t x `ordinary_shares_number` at the statement's
period end x the split ratios (`split_ratio`) of the days after the period end up to t.
The close is the price as traded (prices contract), per share as the statement counts them
once the splits since are applied. `adj_close` is not used: it is rescaled by every dividend
and split after t, so a market cap from it would change as later data arrives. Beware that
yfinance's 'Close', which the yahoo source stores as `close`, is split-adjusted by Yahoo: on
that source a market cap at a date before a later split is too small by that split's ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finpipe.features.config import FeatureConfig
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel

NET_INCOME, EQUITY, SHARES = "net_income", "stockholders_equity", "ordinary_shares_number"
REVENUE, GROSS_PROFIT, OPERATING_INCOME = "total_revenue", "gross_profit", "operating_income"
DEBT, LIABILITIES, ASSETS = "total_debt", "total_liabilities_net_minority_interest", "total_assets"
QUARTER_TOLERANCE = np.timedelta64(15, "D")
NOT_YET = np.datetime64("NaT", "ns")


@dataclass(frozen=True)
class Known:
    """Per-statement values and when each became public (NaT: never, as for a missing value)."""

    value: np.ndarray
    ready: np.ndarray

    def combine(self, other: Known, value: np.ndarray) -> Known:
        """`value` computed from both: public once both are."""
        return Known(value, np.maximum(self.ready, other.ready))


def ratio(numerator: Known, denominator: Known) -> Known:
    """numerator / denominator, NaN where the denominator is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(denominator.value > 0, numerator.value / denominator.value, np.nan)
    return numerator.combine(denominator, value)


def statement_table(fundamentals: pd.DataFrame | None) -> pd.DataFrame | None:
    """Fundamentals rows (fundamentals contract) as one row per statement, the families' input.

    Indexed by (ticker, period_end), sorted: `public`, the earliest `available_at` of the
    statement's rows (any field), then for each field a family reads and the rows have, its
    value and its own `<field>_available_at`. None when no row has a value.
    """
    if fundamentals is None:
        return None
    missing = {"ticker", "period_end", "available_at", "field", "value"} - set(fundamentals)
    if missing:
        raise ValueError(
            f"fundamentals lack columns {sorted(missing)}; expected ticker, period_end, "
            "available_at, field, value"
        )
    rows = fundamentals.assign(
        ticker=fundamentals["ticker"].astype(str),
        period_end=pd.to_datetime(fundamentals["period_end"]).astype("datetime64[ns]"),
        available_at=pd.to_datetime(fundamentals["available_at"]).astype("datetime64[ns]"),
        value=pd.to_numeric(fundamentals["value"]).astype(np.float64),
    ).dropna(subset=["period_end", "available_at", "value"])
    if rows.empty:
        return None
    key = ["ticker", "period_end"]
    public = rows.groupby(key, sort=True)["available_at"].min().rename("public")
    read = rows[rows["field"].isin(FIELDS)].set_index([*key, "field"])
    repeated = read.index.duplicated()
    if repeated.any():
        example = read.index[repeated][:3].to_frame(index=False).astype(str)
        raise ValueError(
            f"fundamentals have duplicate (ticker, period_end, field) rows, e.g. "
            f"{example.to_dict('records')}; keep one value per key"
        )
    values = read["value"].unstack("field").reindex(public.index)
    ready = read["available_at"].unstack("field").reindex(public.index)
    columns = {"public": public.to_numpy()}
    for field in sorted(values.columns):
        columns[field] = values[field].to_numpy()
        columns[f"{field}_available_at"] = ready[field].to_numpy()
    return pd.DataFrame(columns, index=public.index)


class Statements:
    """The rows of `statement_table` and each panel cell's latest public statement."""

    def __init__(self, table: pd.DataFrame, panel: PricePanel) -> None:
        self.table = table
        # the statements' tickers as panel columns (-1: a ticker the panel does not have)
        self.ticker = panel.tickers.get_indexer(table.index.get_level_values("ticker"))
        self.period_end = table.index.get_level_values("period_end").to_numpy("datetime64[ns]")
        self.dates = panel.dates.to_numpy("datetime64[ns]")
        own = np.asarray(table.index.codes[0])  # one code per ticker, in contiguous runs
        starts = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
        self.blocks = list(zip(starts, [*starts[1:], len(own)], strict=True))
        self.latest = self._latest(table["public"].to_numpy("datetime64[ns]"), panel.shape)
        self._earlier: dict[int, np.ndarray] = {}

    def _latest(self, public: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Row of each cell's latest statement (by period end) public by its date; -1: none."""
        latest = np.full(shape, -1, dtype=np.int64)
        for start, stop in self.blocks:
            if self.ticker[start] < 0:
                continue
            order = np.argsort(public[start:stop], kind="stable")
            newest = np.maximum.accumulate(start + order)  # rows are in period-end order
            known = np.searchsorted(public[start:stop][order], self.dates, side="right") - 1
            latest[:, self.ticker[start]] = np.where(known >= 0, newest[np.maximum(known, 0)], -1)
        return latest

    def earlier(self, quarters: int) -> np.ndarray:
        """Row of the same ticker's statement `quarters` quarters before each one; -1: none."""
        if quarters not in self._earlier:
            shifted = pd.DatetimeIndex(self.period_end) - pd.DateOffset(months=3 * quarters)
            targets = shifted.to_numpy("datetime64[ns]")
            found = np.full(len(self), -1, dtype=np.int64)
            for start, stop in self.blocks:
                ends, target = self.period_end[start:stop], targets[start:stop]
                above = np.minimum(np.searchsorted(ends, target), len(ends) - 1)
                below = np.maximum(above - 1, 0)
                nearest = np.where(
                    np.abs(ends[above] - target) < np.abs(ends[below] - target), above, below
                )
                close = np.abs(ends[nearest] - target) <= QUARTER_TOLERANCE
                found[start:stop] = np.where(close, start + nearest, -1)
            self._earlier[quarters] = found
        return self._earlier[quarters]

    def __len__(self) -> int:
        return len(self.period_end)

    def item(self, field: str, quarters_back: int = 0) -> Known:
        """A field of each statement, or of the statement `quarters_back` quarters before it."""
        value = self.table[field].to_numpy(np.float64)
        ready = self.table[f"{field}_available_at"].to_numpy("datetime64[ns]")
        if not quarters_back:
            return Known(value, ready)
        row = self.earlier(quarters_back)
        found, row = row >= 0, np.maximum(row, 0)
        return Known(np.where(found, value[row], np.nan), np.where(found, ready[row], NOT_YET))

    def trailing(self, field: str) -> Known:
        """The sum of a field over each statement's quarter and the three before it."""
        total = self.item(field)
        for back in (1, 2, 3):
            earlier = self.item(field, back)
            total = total.combine(earlier, total.value + earlier.value)
        return total

    def at_dates(self, known: Known) -> np.ndarray:
        """(n_dates, n_tickers): the value of each cell's latest statement, if public by then."""
        if len(self) == 0:
            return np.full(self.latest.shape, np.nan)
        row = np.maximum(self.latest, 0)
        public = (self.latest >= 0) & (known.ready[row] <= self.dates[:, None])
        return np.where(public, known.value[row], np.nan)

    def market_cap(self, inputs: FamilyInputs) -> np.ndarray:
        """close x shares at the period end x the splits after it, per cell (see module)."""
        shares = self.at_dates(self.item(SHARES))
        if len(self) == 0:
            return shares
        splits = np.where(inputs.split_ratio > 0, inputs.split_ratio, 1.0)  # NaN: no split
        cumulative = np.cumprod(splits, axis=0)
        # each cell's cumulative split ratio on the last date at or before its period end
        end_row = (np.searchsorted(self.dates, self.period_end, side="right") - 1)[
            np.maximum(self.latest, 0)
        ]
        columns = np.arange(self.latest.shape[1])[None, :]
        at_end = np.where(end_row >= 0, cumulative[np.maximum(end_row, 0), columns], 1.0)
        cap = inputs.traded_close * shares * cumulative / at_end
        return np.where(cap > 0, cap, np.nan)


def _earnings_yield(statements: Statements, inputs: FamilyInputs) -> np.ndarray:
    return statements.at_dates(statements.trailing(NET_INCOME)) / statements.market_cap(inputs)


def _book_to_price(statements: Statements, inputs: FamilyInputs) -> np.ndarray:
    return statements.at_dates(statements.item(EQUITY)) / statements.market_cap(inputs)


def _roe(statements: Statements, _: FamilyInputs) -> np.ndarray:
    return statements.at_dates(ratio(statements.trailing(NET_INCOME), statements.item(EQUITY)))


def _per(numerator: str, denominator: str) -> Callable[[Statements, FamilyInputs], np.ndarray]:
    def per(statements: Statements, _: FamilyInputs) -> np.ndarray:
        return statements.at_dates(ratio(statements.item(numerator), statements.item(denominator)))

    return per


def _revenue_growth(statements: Statements, _: FamilyInputs) -> np.ndarray:
    grown = ratio(statements.item(REVENUE), statements.item(REVENUE, 4))
    return statements.at_dates(grown) - 1.0


def _earnings_growth(statements: Statements, _: FamilyInputs) -> np.ndarray:
    now, before = statements.item(NET_INCOME), statements.item(NET_INCOME, 4)
    scale = Known(np.abs(before.value), before.ready)
    change = now.combine(before, now.value - before.value)
    return statements.at_dates(ratio(change, scale))


@dataclass(frozen=True)
class _Feature:
    name: str
    fields: tuple[str, ...]
    formula: Callable[[Statements, FamilyInputs], np.ndarray]
    priced: bool = False  # needs the traded close and split ratios for a market cap


FEATURES = (
    _Feature("earnings_yield", (NET_INCOME, SHARES), _earnings_yield, priced=True),
    _Feature("book_to_price", (EQUITY, SHARES), _book_to_price, priced=True),
    _Feature("roe", (NET_INCOME, EQUITY), _roe),
    _Feature("gross_margin", (GROSS_PROFIT, REVENUE), _per(GROSS_PROFIT, REVENUE)),
    _Feature("operating_margin", (OPERATING_INCOME, REVENUE), _per(OPERATING_INCOME, REVENUE)),
    _Feature("net_margin", (NET_INCOME, REVENUE), _per(NET_INCOME, REVENUE)),
    _Feature("debt_to_equity", (DEBT, EQUITY), _per(DEBT, EQUITY)),
    _Feature("liabilities_to_assets", (LIABILITIES, ASSETS), _per(LIABILITIES, ASSETS)),
    _Feature("revenue_growth_yoy", (REVENUE,), _revenue_growth),
    _Feature("earnings_growth_yoy", (NET_INCOME,), _earnings_growth),
)
FIELDS = sorted({field for feature in FEATURES for field in feature.fields})


def _unavailable(feature: _Feature) -> Callable[[FamilyInputs], str | None]:
    def unavailable(inputs: FamilyInputs) -> str | None:
        table = inputs.fundamentals
        if table is None:
            return f"needs fundamentals {', '.join(feature.fields)}; source has no fundamentals"
        lacking = [f for f in feature.fields if f not in table.columns]
        if lacking:
            return f"needs fundamentals {', '.join(lacking)}; the fundamentals have no such field"
        if feature.priced and inputs.traded_close is None:
            return "needs close (as traded) for a market cap; the prices have adj_close only"
        if feature.priced and inputs.split_ratio is None:
            return "needs split_ratio in the prices, to carry shares from the period end to t"
        return None

    return unavailable


def _compute(feature: _Feature) -> Callable[[PricePanel, FamilyInputs], Columns]:
    def compute(panel: PricePanel, inputs: FamilyInputs) -> Columns:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = feature.formula(Statements(inputs.fundamentals, panel), inputs)
        yield feature.name, values

    return compute


def _columns(name: str) -> Callable[[FeatureConfig, frozenset[str]], list[str]]:
    def columns(_: FeatureConfig, __: frozenset[str]) -> list[str]:
        return [name]

    return columns


FAMILIES = tuple(
    Family(
        f"fundamentals_{feature.name}",
        "fundamentals",
        (),
        _columns(feature.name),
        _compute(feature),
        scope="panel",
        unavailable=_unavailable(feature),
    )
    for feature in FEATURES
)
