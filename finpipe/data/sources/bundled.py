"""Real market and macro data that ships inside installed packages: works offline.

| what                                     | from                               | range     |
| ---------------------------------------- | ---------------------------------- | --------- |
| adjusted closes of 20 S&P 500 stocks     | skfolio `load_sp500_dataset`       | 1990-2022 |
| OHLCV of AAPL, GOOG, IBM, MSFT (and FB)  | bokeh-sampledata `stocks.csv.gz`   | 2000-2013 |
| factor ETF adjusted closes (MTUM, ...)   | skfolio `load_factors_dataset`     | 2014-2022 |
| ^GSPC: S&P 500 level                     | skfolio `load_sp500_index`         | 1990-2022 |
|   with open/high/low/volume              | arch `data.sp500` (same closes)    | 1999-2018 |
| ^IXIC: NASDAQ composite OHLCV            | arch `data.nasdaq`                 | 1999-2018 |
| VIXCLS, CPILFESL, AAA, BAA               | arch `data.vix/core_cpi/default`   | see data  |
| FF_MKT_RF, FF_SMB, FF_HML, FF_RF monthly | arch `data.frenchdata`             | 1926-2018 |

There are two stock datasets, and a source serves one of them (`BundledSource(stocks=...)`)
beside the indices and factor ETFs, which every source serves. AAPL and MSFT are in both,
with different histories, so they are never merged; `PRESET_STOCKS` names the dataset of
each universe preset:

* `skfolio` (the default; universe `sp500_20`): adjusted closes only, no
  open/high/low/close/volume.
* `bokeh` (universe `bokeh_ohlcv`): Quandl WIKI daily bars as bokeh-sampledata ships them,
  public domain, 2000-03-01 to 2013-03-01 (FB from its listing on 2012-05-18, GOOG from
  2004-08-19; GOOG is the class A history Quandl files as GOOGL). open, high, low, close
  and volume are as traded (not adjusted); adj_close is Quandl's split- and
  dividend-adjusted close on the basis of its archived snapshot, so it also reflects later
  corporate actions (AAPL's 2014 7:1 split, Alphabet's 2014 class C split: adj_close /
  close is 0.13 for AAPL and 0.50 for GOOG on 2013-03-01). Within the data, adj_close /
  close changes only on split and ex-dividend days; the feature engine puts the bars on
  the adj_close basis (see `finpipe.features.price_panel`).

Nothing is invented: the skfolio stocks carry `adj_close` only, ^GSPC has open/high/low/volume
only where arch has them (NaN elsewhere). Macro series carry no release dates, so
`available_at` uses the conservative lags of `release_lag`.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import pandas as pd

from finpipe.core.contracts import MACRO, PRICES, conform
from finpipe.core.identifiers import validate_series_id, validate_tickers
from finpipe.data.sources.base import OHLCV_COLUMNS, UnknownNameError
from finpipe.data.sources.release_lag import conservative_available_at

STOCK_DATASETS = ("skfolio", "bokeh")
DEFAULT_STOCKS = "skfolio"
PRESET_STOCKS = {"sp500_20": "skfolio", "bokeh_ohlcv": "bokeh"}
BOKEH_COLUMNS = {"Ticker": "ticker", "Date": "date", **OHLCV_COLUMNS}


def _long(wide: pd.DataFrame) -> pd.DataFrame:
    """Wide adjusted closes (dates x tickers) to long prices rows, dropping missing cells."""
    wide = wide.rename_axis(index="date", columns="ticker")
    return wide.stack().rename("adj_close").reset_index()


def _index_ohlcv(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    out = frame.rename(columns=OHLCV_COLUMNS)[list(OHLCV_COLUMNS.values())]
    return out.rename_axis("date").reset_index().assign(ticker=ticker)


def stocks_for_universe(universe: str) -> str:
    """The stock dataset that serves a universe: its preset's, else the default (`skfolio`)."""
    return PRESET_STOCKS.get(universe, DEFAULT_STOCKS)


def _check_stocks(stocks: str) -> None:
    if stocks not in STOCK_DATASETS:
        raise ValueError(f"bundled stock dataset {stocks!r}; expected one of {STOCK_DATASETS}")


def _bokeh_stocks() -> pd.DataFrame:
    from bokeh_sampledata import package_path

    raw = pd.read_csv(package_path("stocks.csv.gz"), usecols=list(BOKEH_COLUMNS))
    return raw.rename(columns=BOKEH_COLUMNS)


@cache
def bundled_stocks(stocks: str = DEFAULT_STOCKS) -> pd.DataFrame:
    """One stock dataset (`STOCK_DATASETS`) in the prices contract (cached; read-only use)."""
    _check_stocks(stocks)
    if stocks == "bokeh":
        return conform(_bokeh_stocks(), PRICES)
    from skfolio.datasets import load_sp500_dataset

    return conform(_long(load_sp500_dataset()), PRICES)


@cache
def bundled_indices() -> pd.DataFrame:
    """The indices and factor ETFs every bundled source serves, in the prices contract."""
    from arch.data import nasdaq, sp500
    from skfolio.datasets import load_factors_dataset, load_sp500_index

    factors = _long(load_factors_dataset())
    level = load_sp500_index()["SP500"].rename("adj_close").rename_axis("date").reset_index()
    gspc_bars = _index_ohlcv(sp500.load(), "^GSPC").drop(columns=["close", "adj_close"])
    gspc = level.merge(gspc_bars.drop(columns="ticker"), on="date", how="left")
    gspc = gspc.assign(ticker="^GSPC", close=gspc["adj_close"])
    ixic = _index_ohlcv(nasdaq.load(), "^IXIC")
    return conform(pd.concat([factors, gspc, ixic], ignore_index=True), PRICES)


@cache
def bundled_prices(stocks: str = DEFAULT_STOCKS) -> pd.DataFrame:
    """A stock dataset with the indices and factor ETFs, in the prices contract (cached)."""
    frames = [bundled_stocks(stocks), bundled_indices()]
    return conform(pd.concat(frames, ignore_index=True), PRICES)


def _french_factors() -> pd.DataFrame:
    from arch.data import frenchdata

    raw = frenchdata.load()
    yyyymm = raw.index.asi8 if isinstance(raw.index, pd.DatetimeIndex) else raw.index.to_numpy()
    months = pd.to_datetime(pd.Series(yyyymm).astype(int).astype(str), format="%Y%m")
    names = {"Mkt-RF": "FF_MKT_RF", "SMB": "FF_SMB", "HML": "FF_HML", "RF": "FF_RF"}
    return raw.set_axis(pd.DatetimeIndex(months.values)).rename(columns=names)


@cache
def bundled_macro() -> pd.DataFrame:
    """Every bundled macro series in the macro contract, with conservative `available_at`."""
    from arch.data import core_cpi, default, vix

    wide = [
        vix.load().rename(columns={"vix": "VIXCLS"}),
        core_cpi.load(),
        default.load()[["AAA", "BAA"]],
        _french_factors(),
    ]
    frames = []
    for block in wide:
        for series_id in block.columns:
            s = block[series_id].dropna()
            dates = pd.Series(pd.DatetimeIndex(s.index))
            frames.append(
                pd.DataFrame(
                    {
                        "date": dates,
                        "series_id": series_id,
                        "value": s.to_numpy(dtype=float),
                        "available_at": conservative_available_at(dates).to_numpy(),
                    }
                )
            )
    return conform(pd.concat(frames, ignore_index=True), MACRO)


def _between(frame: pd.DataFrame, start: date, end: date) -> pd.Series:
    return (frame["date"] >= pd.Timestamp(start)) & (frame["date"] <= pd.Timestamp(end))


class BundledSource:
    """PriceSource and MacroSource over the packaged data; it has no fundamentals.

    `stocks` chooses the stock dataset (`STOCK_DATASETS`; see the module docstring); the
    indices, factor ETFs and macro series are the same for both.
    """

    name = "bundled"

    def __init__(self, stocks: str = DEFAULT_STOCKS):
        _check_stocks(stocks)
        self.stocks = stocks

    def available_tickers(self) -> list[str]:
        return sorted(bundled_prices(self.stocks)["ticker"].unique())

    def available_series(self) -> list[str]:
        return sorted(bundled_macro()["series_id"].unique())

    def prices(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        validate_tickers(tickers)
        unknown = sorted(set(tickers) - set(self.available_tickers()))
        if unknown:
            raise UnknownNameError(
                f"bundled source ({self.stocks} stocks) has no tickers {unknown}; "
                f"it has {self.available_tickers()}"
            )
        panel = bundled_prices(self.stocks)
        rows = panel[panel["ticker"].isin(tickers) & _between(panel, start, end)]
        present = [c for c in rows.columns if c in PRICES.required or rows[c].notna().any()]
        return conform(rows[present], PRICES)

    def macro(self, series_ids: list[str], start: date, end: date) -> pd.DataFrame:
        for series_id in series_ids:
            validate_series_id(series_id)
        unknown = sorted(set(series_ids) - set(self.available_series()))
        if unknown:
            raise UnknownNameError(
                f"bundled source has no series {unknown}; it has {self.available_series()}"
            )
        macro = bundled_macro()
        return conform(
            macro[macro["series_id"].isin(series_ids) & _between(macro, start, end)], MACRO
        )
