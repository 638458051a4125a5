"""The price panel as wide (dates x tickers) float64 arrays, the layout every family computes on.

`adj_close` becomes the field "close" (Qlib's $close). Where the source also has the raw
`close`, open, high and low are put on the same adjusted basis (times adj_close / close) and
volume on the inverse one (divided by it), as Qlib does, so that splits do not show up as
jumps in bars or volume. Without a raw close, open/high/low are taken as already adjusted.

The wide arrays are gathered from the long columns when a family asks for them, a block of
tickers at a time for the per-ticker families, so the whole panel's fields are never all
held at once (`LongFields`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from finpipe.core.contracts import PRICE_FIELDS

BAR_FIELDS = ("open", "high", "low", "volume")


class LongFields(Mapping[str, np.ndarray]):
    """The panel's fields, gathered from the long price columns into (dates, tickers) float64
    arrays on access (a fresh array each time; NaN where a ticker has no row).

    `columns` are the long float64 columns by price column name; `position[d, t]` is the
    row of cell (d, t) in them, -1 where there is none.
    """

    def __init__(self, columns: dict[str, np.ndarray], position: np.ndarray) -> None:
        self.columns = columns
        self.position = position
        bars = [name for name in BAR_FIELDS if name in columns]
        self.names = ("close", *bars)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.gather(name, slice(None))

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def _take(self, column: str, rows: np.ndarray) -> np.ndarray:
        values = self.columns[column][np.maximum(rows, 0)]
        values[rows < 0] = np.nan
        return values

    def gather(self, name: str, tickers: slice) -> np.ndarray:
        """Field `name` of a slice of tickers, as a contiguous (dates, tickers) array."""
        if name not in self.names:
            raise KeyError(name)
        rows = self.position[:, tickers]
        close = self._take("adj_close", rows)
        if name == "close":
            return close
        values = self._take(name, rows)
        if "close" in self.columns:
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = close / self._take("close", rows)
            values = values / factor if name == "volume" else values * factor
        return values


@dataclass(frozen=True)
class PricePanel:
    """Aligned fields of shape (n_dates, n_tickers); NaN where a ticker has no value."""

    dates: pd.DatetimeIndex
    tickers: pd.Index
    fields: Mapping[str, np.ndarray]
    source_columns: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.dates), len(self.tickers)

    def has(self, field: str) -> bool:
        return field in self.fields

    def block(self, tickers: slice) -> PricePanel:
        """The panel restricted to a slice of tickers (contiguous arrays of its fields)."""
        fields = self.fields
        return PricePanel(
            dates=self.dates,
            tickers=self.tickers[tickers],
            fields={
                k: fields.gather(k, tickers)
                if isinstance(fields, LongFields)
                else np.ascontiguousarray(fields[k][:, tickers])
                for k in fields
            },
            source_columns=self.source_columns,
        )


@dataclass(frozen=True)
class RowIndex:
    """Where each output row (sorted by date, then ticker) sits in the wide arrays."""

    date_code: np.ndarray
    ticker_code: np.ndarray
    complete: bool  # every (date, ticker) cell is a row: rows are the wide arrays' cells


def build_price_panel(prices: pd.DataFrame) -> tuple[PricePanel, RowIndex]:
    """Pivot long prices (prices contract) into a PricePanel; raise on duplicate (date, ticker)."""
    missing = [c for c in ("date", "ticker", "adj_close") if c not in prices.columns]
    if missing:
        raise ValueError(
            f"prices lack required columns {missing}; expected the prices contract "
            "(date, ticker, adj_close, optional open/high/low/close/volume)"
        )
    date_code, dates = pd.factorize(prices["date"], sort=True)
    ticker_code, tickers = pd.factorize(prices["ticker"].astype(str), sort=True)
    n_tickers, n_dates = len(tickers), len(dates)
    cell = date_code.astype(np.int64) * n_tickers + ticker_code
    if len(cell) and np.bincount(cell, minlength=n_tickers * n_dates).max() > 1:
        dupes = prices.loc[prices.duplicated(["date", "ticker"]), ["date", "ticker"]].head(3)
        raise ValueError(
            f"prices have duplicate (date, ticker) rows, e.g. {dupes.to_dict('records')}; "
            "deduplicate them (the prices contract keys rows by ticker and date)"
        )

    present = tuple(
        c for c in PRICE_FIELDS if c in prices.columns and prices[c].notna().to_numpy().any()
    )
    used = ["adj_close", *(c for c in ("close", *BAR_FIELDS) if c in present)]
    position = np.full(n_dates * n_tickers, -1, dtype=np.int64 if len(cell) >= 2**31 else np.int32)
    position[cell] = np.arange(len(cell))
    columns = {c: prices[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in used}
    fields = LongFields(columns, position.reshape(n_dates, n_tickers))
    order = np.sort(cell)
    rows = RowIndex(
        date_code=(order // n_tickers).astype(np.int32),
        ticker_code=(order % n_tickers).astype(np.int32),
        complete=len(order) == n_tickers * n_dates,
    )
    panel = PricePanel(
        dates=pd.DatetimeIndex(dates).astype("datetime64[ns]"),
        tickers=pd.Index(tickers, dtype=str),
        fields=fields,
        source_columns=present,
    )
    return panel, rows


def ticker_column(tickers: pd.Index, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """tickers[codes] as a pandas string array, gathered in Arrow (no Python objects per row)."""
    names = pa.array(tickers.to_numpy(dtype=object), type=pa.large_string())  # pandas' storage
    return pd.array(names.take(codes), dtype="str")
