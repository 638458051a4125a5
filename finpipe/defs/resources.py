"""Resources: where data lives and which source feeds the pipeline, set through Dagster config."""

import os
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd

from finpipe.sources.base import FundamentalsSource, MacroSource, PriceSource
from finpipe.sources.bundled import BundledSource, bundled_prices
from finpipe.sources.synthetic import (
    BENCHMARK_TICKER,
    SyntheticConfig,
    SyntheticSource,
    synthetic_universe,
)
from finpipe.storage import ParquetStore
from finpipe.universe import universe_frame

# yfinance and fredapi are imported only when the live source is chosen: slow imports.
SOURCES = ("bundled", "live", "synthetic")
DEFAULT_MACRO_SERIES = ["VIXCLS", "CPILFESL", "AAA", "BAA"]


def default_data_root() -> str:
    """`FINPIPE_DATA_ROOT` if set, else `./data` under the working directory."""
    return os.environ.get("FINPIPE_DATA_ROOT", str(Path.cwd() / "data"))


class StorageResource(dg.ConfigurableResource):
    """Root of finpipe's Parquet tables: a local path or an fsspec URL (s3://, gs://, ...)."""

    root: str

    def store(self) -> ParquetStore:
        return ParquetStore(self.root)


class FredCredentials(dg.ConfigurableResource):
    """FRED API key, read from the FRED_API_KEY environment variable through EnvVar."""

    api_key: str | None = None


class MarketDataResource(dg.ConfigurableResource):
    """Which source, universe and date range the ingest assets use.

    source: `bundled` (offline, packaged real data; default), `live` (yfinance prices and
    fundamentals, FRED macro) or `synthetic` (seeded panel; see SyntheticConfig).
    Empty `universe`, `benchmark`, `start_date` or `end_date` take the source's defaults.
    """

    source: str = "bundled"
    universe: str = ""
    benchmark: str = ""
    start_date: str = ""
    end_date: str = ""
    macro_series: list[str] = DEFAULT_MACRO_SERIES
    synthetic_n_tickers: int = 50
    synthetic_n_days: int = 1500
    synthetic_seed: int = 0
    synthetic_signal_strength: float = 0.0
    synthetic_regimes: bool = False
    max_gap_days: int = 5
    max_stale_days: int = 5

    def _check_source(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"market_data.source is {self.source!r}; expected one of {SOURCES}")

    def synthetic_config(self) -> SyntheticConfig:
        return SyntheticConfig(
            n_tickers=self.synthetic_n_tickers,
            n_days=self.synthetic_n_days,
            seed=self.synthetic_seed,
            signal_strength=self.synthetic_signal_strength,
            regimes=self.synthetic_regimes,
        )

    def price_source(self) -> PriceSource:
        self._check_source()
        if self.source == "synthetic":
            return SyntheticSource(self.synthetic_config())
        if self.source == "live":
            from finpipe.sources.yahoo import YahooSource

            return YahooSource()
        return BundledSource()

    def macro_source(self, fred: FredCredentials) -> MacroSource | None:
        self._check_source()
        if self.source == "synthetic":
            return None
        if self.source == "live":
            from finpipe.sources.fred import FredSource

            return FredSource(api_key=fred.api_key)
        return BundledSource()

    def fundamentals_source(self) -> FundamentalsSource | None:
        self._check_source()
        if self.source != "live":
            return None
        from finpipe.sources.yahoo import YahooSource

        return YahooSource()

    def universe_frame(self) -> pd.DataFrame:
        if self.source == "synthetic" and not self.universe:
            return synthetic_universe(self.synthetic_config())
        return universe_frame(self.universe or "sp500_20")

    def benchmark_ticker(self) -> str:
        return self.benchmark or (BENCHMARK_TICKER if self.source == "synthetic" else "^GSPC")

    def date_range(self) -> tuple[date, date]:
        """(start, end): configured dates, else the source's full history up to its last day."""
        if self.source == "synthetic":
            dates = self.synthetic_config().dates
            first, last = dates[0].date(), dates[-1].date()
        elif self.source == "bundled":
            dates = bundled_prices()["date"]
            first, last = dates.min().date(), dates.max().date()
        else:
            first, last = date(2000, 1, 1), pd.Timestamp.today().date()
        start = date.fromisoformat(self.start_date) if self.start_date else first
        end = date.fromisoformat(self.end_date) if self.end_date else last
        if start > end:
            raise ValueError(f"market_data.start_date {start} is after end_date {end}")
        return start, end
