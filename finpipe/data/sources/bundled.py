"""Real market and macro data that ships inside installed packages: works offline.

| what                                     | from                               | range     |
| ---------------------------------------- | ---------------------------------- | --------- |
| adjusted closes of 20 S&P 500 stocks     | skfolio `load_sp500_dataset`       | 1990-2022 |
| factor ETF adjusted closes (MTUM, ...)   | skfolio `load_factors_dataset`     | 2014-2022 |
| ^GSPC: S&P 500 level                     | skfolio `load_sp500_index`         | 1990-2022 |
|   with open/high/low/volume              | arch `data.sp500` (same closes)    | 1999-2018 |
| ^IXIC: NASDAQ composite OHLCV            | arch `data.nasdaq`                 | 1999-2018 |
| VIXCLS, CPILFESL, AAA, BAA               | arch `data.vix/core_cpi/default`   | see data  |
| FF_MKT_RF, FF_SMB, FF_HML, FF_RF monthly | arch `data.frenchdata`             | 1926-2018 |

Nothing is invented: the stocks carry `adj_close` only (no open/high/low/volume), ^GSPC has
open/high/low/volume only where arch has them (NaN elsewhere). Macro series carry no
release dates, so `available_at` uses the conservative lags of `release_lag`.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import pandas as pd

from finpipe.core.contracts import MACRO, PRICES, conform
from finpipe.core.identifiers import validate_series_id, validate_tickers
from finpipe.data.sources.release_lag import conservative_available_at

OHLCV_COLUMNS = {
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Adj Close": "adj_close",
    "Volume": "volume",
}


def _long(wide: pd.DataFrame) -> pd.DataFrame:
    """Wide adjusted closes (dates x tickers) to long prices rows, dropping missing cells."""
    wide = wide.rename_axis(index="date", columns="ticker")
    return wide.stack().rename("adj_close").reset_index()


def _index_ohlcv(frame: pd.DataFrame, ticker: str) -> pd.DataFrame:
    out = frame.rename(columns=OHLCV_COLUMNS)[list(OHLCV_COLUMNS.values())]
    return out.rename_axis("date").reset_index().assign(ticker=ticker)


@cache
def bundled_prices() -> pd.DataFrame:
    """Every bundled price series in the prices contract (cached; read-only use)."""
    from arch.data import nasdaq, sp500
    from skfolio.datasets import load_factors_dataset, load_sp500_dataset, load_sp500_index

    stocks = _long(load_sp500_dataset())
    factors = _long(load_factors_dataset())
    level = load_sp500_index()["SP500"].rename("adj_close").rename_axis("date").reset_index()
    gspc_bars = _index_ohlcv(sp500.load(), "^GSPC").drop(columns=["close", "adj_close"])
    gspc = level.merge(gspc_bars.drop(columns="ticker"), on="date", how="left")
    gspc = gspc.assign(ticker="^GSPC", close=gspc["adj_close"])
    ixic = _index_ohlcv(nasdaq.load(), "^IXIC")
    return conform(pd.concat([stocks, factors, gspc, ixic], ignore_index=True), PRICES)


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
    """PriceSource and MacroSource over the packaged data; it has no fundamentals."""

    name = "bundled"

    def available_tickers(self) -> list[str]:
        return sorted(bundled_prices()["ticker"].unique())

    def available_series(self) -> list[str]:
        return sorted(bundled_macro()["series_id"].unique())

    def prices(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        validate_tickers(tickers)
        unknown = sorted(set(tickers) - set(self.available_tickers()))
        if unknown:
            raise KeyError(
                f"bundled source has no tickers {unknown}; it has {self.available_tickers()}"
            )
        panel = bundled_prices()
        rows = panel[panel["ticker"].isin(tickers) & _between(panel, start, end)]
        present = [c for c in rows.columns if c in PRICES.required or rows[c].notna().any()]
        return conform(rows[present], PRICES)

    def macro(self, series_ids: list[str], start: date, end: date) -> pd.DataFrame:
        for series_id in series_ids:
            validate_series_id(series_id)
        unknown = sorted(set(series_ids) - set(self.available_series()))
        if unknown:
            raise KeyError(
                f"bundled source has no series {unknown}; it has {self.available_series()}"
            )
        macro = bundled_macro()
        return conform(
            macro[macro["series_id"].isin(series_ids) & _between(macro, start, end)], MACRO
        )
