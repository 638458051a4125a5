"""The price panel as wide (dates x tickers) float64 arrays, the layout every family computes on.

`adj_close` becomes the field "close" (Qlib's $close). Where the source also has the raw
`close`, open, high and low are put on the same adjusted basis (times adj_close / close) and
volume on the inverse one (divided by it), as Qlib does, so that splits do not show up as
jumps in bars or volume. Without a raw close, open/high/low are taken as already adjusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from finpipe.core.contracts import PRICE_FIELDS

BAR_FIELDS = ("open", "high", "low", "volume")


@dataclass(frozen=True)
class PricePanel:
    """Aligned fields of shape (n_dates, n_tickers); NaN where a ticker has no value."""

    dates: pd.DatetimeIndex
    tickers: pd.Index
    fields: dict[str, np.ndarray]
    source_columns: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.dates), len(self.tickers)

    def has(self, field: str) -> bool:
        return field in self.fields

    def block(self, tickers: slice) -> PricePanel:
        """The panel restricted to a slice of tickers (contiguous copies of the fields)."""
        return PricePanel(
            dates=self.dates,
            tickers=self.tickers[tickers],
            fields={k: np.ascontiguousarray(v[:, tickers]) for k, v in self.fields.items()},
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

    def wide(column: str) -> np.ndarray:
        out = np.full(n_dates * n_tickers, np.nan)
        out[cell] = prices[column].to_numpy(dtype=np.float64, na_value=np.nan)
        return out.reshape(n_dates, n_tickers)

    present = tuple(
        c for c in PRICE_FIELDS if c in prices.columns and prices[c].notna().to_numpy().any()
    )
    fields = {"close": wide("adj_close")}
    factor = None
    if "close" in present:
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = fields["close"] / wide("close")
    for name in BAR_FIELDS:
        if name in present:
            values = wide(name)
            if factor is not None:
                values = values / factor if name == "volume" else values * factor
            fields[name] = values
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
