"""Yahoo Finance through yfinance: daily bars with dividends and splits, quarterly statements.

Choices yfinance leaves to its caller, made here:

* Prices are requested unadjusted (`auto_adjust=False`), so the traded `close` and Yahoo's
  split- and dividend-adjusted `adj_close` are both kept. yfinance itself fills 'Adj Close'
  with 'Close' where Yahoo has no adjustments (indices, FX). A response without an
  'Adj Close' column therefore did not come from the request made here (an auto-adjusted
  one, say); it is rejected with a ContractError rather than guessed from 'Close'.
* `split_ratio` is Yahoo's 'Stock Splits' (new shares per old share: 4.0 for a 4-for-1
  split) on split days and 1.0 on every other day, where Yahoo writes 0, which is not a
  ratio. `dividends` is the cash dividend per share, 0 on days without one.
* Rows where every price field is NaN are dropped: yfinance creates them when it aligns
  tickers on the union of their dates, for days a ticker did not trade. They are not data.
  'Capital Gains' (funds only) has no contract column and is left out.
* yfinance 1.x does not raise download errors. It logs them on its "yfinance" logger as
  "['AAPL', 'MSFT']: <error>" and returns empty or partial frames; `yfinance.shared._ERRORS`
  is no longer written. Unless `yfinance.config.debug.hide_exceptions` is False it also
  hides network errors, which then read "possibly delisted" or leave an empty statement.
  Each call here sets that flag to False and restores it afterwards, and reads the logged
  errors: network failures are retried with backoff and then raise SourceUnavailableError;
  any other failure for a ticker (delisted, unknown, no data in the range) leaves that
  ticker without rows and logs a warning on the "finpipe.data.sources.yahoo" logger.
* Fundamentals are the quarterly income statement and balance sheet, one row per
  (period end, line item), field = the line item in snake_case ('Total Revenue' ->
  'total_revenue'). NaN items are absent, not zero. Yahoo gives no filing date, so
  `available_at = period_end + 45 days`, the SEC 10-Q deadline (40 or 45 days after the
  quarter end, by filer size), except for the fiscal year's last quarter, reported in the
  10-K: `period_end + 90 days` (deadline 60, 75 or 90 days). Fiscal year ends come from the
  annual income statement; when Yahoo has none, every quarter gets the 90 days.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.contracts import FUNDAMENTALS, PRICE_FIELDS, PRICES, ContractError, conform
from finpipe.core.identifiers import validate_tickers
from finpipe.data.sources.base import OHLCV_COLUMNS
from finpipe.data.sources.network import (
    TransientSourceError,
    call_with_retries,
    check_retry_settings,
    looks_transient,
)

logger = logging.getLogger(__name__)

YAHOO_PRICE_COLUMNS = {
    **OHLCV_COLUMNS,
    "Dividends": "dividends",
    "Stock Splits": "split_ratio",
}
STATEMENTS = ("quarterly_income_stmt", "quarterly_balance_sheet")
ANNUAL_STATEMENT = "income_stmt"  # its period ends are the fiscal year ends
FILING_LAG = pd.Timedelta(days=45)
ANNUAL_FILING_LAG = pd.Timedelta(days=90)

# yfinance.download's per-ticker error log line: "['AAPL', 'MSFT']: <error text>".
FAILED_DOWNLOAD = re.compile(
    r"^\s*\[(?P<tickers>'[^']*'(?:, '[^']*')*)\]: (?P<error>.*)\Z", re.DOTALL
)


class _DownloadErrorLog(logging.Handler):
    """Collects the per-ticker failures yfinance.download logs instead of raising."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.by_ticker: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = FAILED_DOWNLOAD.match(record.getMessage())
        if match:
            for ticker in re.findall(r"'([^']*)'", match["tickers"]):
                self.by_ticker[ticker] = match["error"].strip()


@contextmanager
def _download_errors() -> Iterator[dict[str, str]]:
    """Per-ticker errors yfinance logs while the block runs, by ticker."""
    handler = _DownloadErrorLog()
    yfinance_logger = logging.getLogger("yfinance")
    yfinance_logger.addHandler(handler)
    try:
        yield handler.by_ticker
    finally:
        yfinance_logger.removeHandler(handler)


@contextmanager
def _exceptions_shown(client: Any) -> Iterator[None]:
    """Make yfinance raise network errors instead of hiding them, for the block only.

    Clients without `config.debug` (yfinance before 1.0 has none) are left as they are.
    """
    debug = getattr(getattr(client, "config", None), "debug", None)
    if debug is None:
        yield
        return
    hidden = debug.hide_exceptions
    debug.hide_exceptions = False
    try:
        yield
    finally:
        debug.hide_exceptions = hidden


def _is_yahoo_error(exc: BaseException) -> bool:
    """yfinance's own exceptions (YFException and subclasses): Yahoo has no such data."""
    return any(cls.__name__ == "YFException" for cls in type(exc).__mro__)


def _day(value: date) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()


def _describe(symbols: list[str], limit: int = 5) -> str:
    shown = ", ".join(symbols[:limit])
    return shown if len(symbols) <= limit else f"{shown} and {len(symbols) - limit} more"


def snake_case(line_item: str) -> str:
    """Yahoo's statement line item as a field name: 'Total Revenue' -> 'total_revenue'."""
    return re.sub(r"[^0-9a-z]+", "_", line_item.lower()).strip("_")


def _with_ticker_level(response: pd.DataFrame, symbols: list[str]) -> pd.DataFrame:
    """Flat single-ticker columns ('Close', ...) as the (field, ticker) columns of many."""
    if len(symbols) != 1:
        raise ContractError(
            f"yahoo: response has flat columns {list(response.columns)} but {len(symbols)} "
            "tickers were requested; expected (field, ticker) MultiIndex columns"
        )
    columns = pd.MultiIndex.from_product([response.columns, symbols], names=["Price", "Ticker"])
    return response.set_axis(columns, axis=1)


def prices_from_response(response: pd.DataFrame | None, symbols: list[str]) -> pd.DataFrame:
    """yfinance.download's wide frame (fields x tickers columns, dates index) in long format."""
    if response is None or len(response) == 0:
        return PRICES.empty()
    if not isinstance(response.columns, pd.MultiIndex):
        response = _with_ticker_level(response, symbols)
    fields = response.columns.get_level_values(0)
    if "Adj Close" not in fields:
        raise ContractError(
            f"yahoo: response has no 'Adj Close' column (fields {sorted(set(fields))}); "
            "finpipe requests unadjusted prices with auto_adjust=False and needs Yahoo's "
            "adjusted close, which cannot be recovered from an unadjusted one"
        )
    dates = pd.DatetimeIndex(response.index)
    if dates.tz is not None:
        dates = dates.tz_localize(None)
    wide = response.loc[:, fields.isin(list(YAHOO_PRICE_COLUMNS))].set_axis(dates.normalize())
    long = wide.stack(level=1, future_stack=True).rename(columns=YAHOO_PRICE_COLUMNS)
    long = long.rename_axis(index=["date", "ticker"], columns=None).reset_index()
    price_fields = [c for c in PRICE_FIELDS if c in long.columns]
    long = long[long[price_fields].notna().any(axis=1)]
    if "split_ratio" in long.columns:
        long = long.assign(split_ratio=long["split_ratio"].mask(long["split_ratio"] == 0, 1.0))
    return long


def statement_rows(
    statement: pd.DataFrame | None, symbol: str, year_ends: set[pd.Timestamp] | None = None
) -> pd.DataFrame:
    """One Yahoo statement (line items x period ends) as fundamentals rows; NaNs are absent.

    `year_ends`: the fiscal year ends (10-K lag); None when unknown (10-K lag for all).
    """
    if statement is None or statement.empty:
        return FUNDAMENTALS.empty()
    values = pd.to_numeric(statement.stack(future_stack=True), errors="coerce").dropna()
    line_items = values.index.get_level_values(0)
    fields = {item: snake_case(str(item)) for item in line_items.unique()}
    period_end = pd.DatetimeIndex(values.index.get_level_values(1)).normalize()
    year_end = period_end.isin(list(year_ends)) if year_ends is not None else True
    days = np.where(year_end, ANNUAL_FILING_LAG.days, FILING_LAG.days)
    lag = pd.to_timedelta(np.broadcast_to(days, len(period_end)), unit="D")
    return pd.DataFrame(
        {
            "ticker": symbol,
            "period_end": period_end,
            "available_at": period_end + lag,
            "field": line_items.map(fields),
            "value": values.to_numpy(dtype="float64"),
        }
    )


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Fundamentals rows of several statements or tickers, in contract shape."""
    filled = [f for f in frames if not f.empty]
    return pd.concat(filled, ignore_index=True) if filled else FUNDAMENTALS.empty()


class YahooSource:
    """PriceSource and FundamentalsSource over yfinance (network needed)."""

    name = "yahoo"

    def __init__(
        self,
        client: ModuleType | Any | None = None,
        max_attempts: int = 3,
        backoff_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        check_retry_settings(max_attempts, backoff_seconds)
        # yfinance is imported only when used: it is slow to import and pulls in curl_cffi.
        self.client = client if client is not None else importlib.import_module("yfinance")
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def _with_retries(self, fetch: Callable[[], Any], action: str) -> Any:
        return call_with_retries(
            fetch,
            source=self.name,
            action=action,
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            sleep=self.sleep,
            logger=logger,
        )

    def prices(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        """Daily bars for `tickers` from `start` to `end` inclusive (prices contract)."""
        symbols = validate_tickers(tickers)
        if not symbols:
            return PRICES.empty()
        first, last = _day(start), _day(end)
        response, errors = self._with_retries(
            functools.partial(self._download, symbols, first, last),
            f"download prices for {_describe(symbols)}",
        )
        frame = prices_from_response(response, symbols)
        frame = frame[frame["date"].between(first, last)]
        for symbol in sorted(set(symbols) - set(frame["ticker"])):
            logger.warning(
                "yahoo: no prices for %s from %s to %s (%s); it may be delisted or unknown "
                "to Yahoo, or not have traded in that range",
                symbol,
                first.date(),
                last.date(),
                errors.get(symbol, "Yahoo returned no rows"),
            )
        return conform(frame, PRICES)

    def _download(
        self, symbols: list[str], first: pd.Timestamp, last: pd.Timestamp
    ) -> tuple[pd.DataFrame | None, dict[str, str]]:
        """One yfinance.download call; network failures raise TransientSourceError."""
        with _exceptions_shown(self.client), _download_errors() as logged:
            try:
                response = self.client.download(
                    symbols,
                    start=first.strftime("%Y-%m-%d"),
                    # yfinance's end is exclusive.
                    end=(last + timedelta(days=1)).strftime("%Y-%m-%d"),
                    auto_adjust=False,
                    actions=True,
                    progress=False,
                    group_by="column",
                    multi_level_index=True,
                    threads=False,
                )
            except Exception as exc:
                if looks_transient(exc):
                    raise TransientSourceError(f"{type(exc).__name__}: {exc}") from exc
                raise
        errors = {t: e for t, e in logged.items() if t in symbols}
        unreachable: dict[str, list[str]] = {}
        for ticker, error in errors.items():
            if looks_transient(error):
                unreachable.setdefault(error, []).append(ticker)
        if unreachable:
            raise TransientSourceError(
                "; ".join(f"{error} for {_describe(t)}" for error, t in unreachable.items())
            )
        return response, errors

    def fundamentals(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        """Quarterly statement items with period end in `start`..`end` (fundamentals contract)."""
        symbols = validate_tickers(tickers)
        first, last = _day(start), _day(end)
        frames = [
            self._with_retries(
                functools.partial(self._statements, symbol),
                f"download fundamentals for {symbol}",
            )
            for symbol in symbols
        ]
        frame = _concat(frames)
        frame = frame[frame["period_end"].between(first, last)]
        return conform(frame, FUNDAMENTALS)

    def _statements(self, symbol: str) -> pd.DataFrame:
        """Both quarterly statements of one ticker; network failures raise TransientSourceError."""
        reasons: list[str] = []
        statements: dict[str, pd.DataFrame] = {}
        ticker = self.client.Ticker(symbol)
        with _exceptions_shown(self.client):
            for attribute in (*STATEMENTS, ANNUAL_STATEMENT):
                try:
                    statements[attribute] = getattr(ticker, attribute)
                except Exception as exc:
                    if looks_transient(exc):
                        raise TransientSourceError(f"{type(exc).__name__}: {exc}") from exc
                    if not _is_yahoo_error(exc):
                        raise
                    reasons.append(f"{attribute}: {exc}")
        annual = statements.pop(ANNUAL_STATEMENT, None)
        year_ends = (
            None
            if annual is None or annual.empty
            else set(pd.DatetimeIndex(pd.to_datetime(annual.columns)).normalize())
        )
        frames = [statement_rows(statements[a], symbol, year_ends) for a in statements]
        rows = _concat(frames)
        if rows.empty:
            logger.warning(
                "yahoo: no fundamentals for %s (%s); it may be a fund, index or delisted",
                symbol,
                "; ".join(reasons) or "Yahoo returned empty statements",
            )
        return rows
