"""One interface per kind of data. A source implements the kinds it has.

Every method returns a long-format frame in its contract's shape (`finpipe.core.contracts`),
covering `start`..`end` inclusive. A field a source does not have is absent (the column is
left out, or NaN where only some rows lack it), never invented.
"""

from __future__ import annotations

from datetime import date
from typing import Protocol, runtime_checkable

import pandas as pd

# The column names Yahoo-style daily bars use (yfinance, Quandl WIKI as bokeh-sampledata
# ships it, arch's index data), mapped to the prices contract.
OHLCV_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}


class UnknownNameError(KeyError):
    """A ticker or series id the source does not have; the others can still be fetched."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SourceUnavailableError(RuntimeError):
    """A source could not be reached (network down, missing key); the message says what to do."""


@runtime_checkable
class PriceSource(Protocol):
    """Daily bars: `date, ticker, adj_close` plus whichever of open/high/low/close/volume/
    dividends/split_ratio the source has."""

    name: str

    def prices(self, tickers: list[str], start: date, end: date) -> pd.DataFrame: ...


@runtime_checkable
class MacroSource(Protocol):
    """Macro series by FRED id: `date, series_id, value, available_at`."""

    name: str

    def macro(self, series_ids: list[str], start: date, end: date) -> pd.DataFrame: ...


@runtime_checkable
class FundamentalsSource(Protocol):
    """Per-ticker statement items: `ticker, period_end, available_at, field, value`."""

    name: str

    def fundamentals(self, tickers: list[str], start: date, end: date) -> pd.DataFrame: ...
