"""Resources: where data lives and which source feeds the pipeline, set through Dagster config."""

import dataclasses
import json
import os
import tempfile
import typing
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pydantic

from finpipe.core.storage import ParquetStore
from finpipe.data.sources.base import FundamentalsSource, MacroSource, PriceSource
from finpipe.data.sources.bundled import BundledSource, bundled_stocks, stocks_for_universe
from finpipe.data.sources.synthetic import (
    BENCHMARK_TICKER,
    SyntheticConfig,
    SyntheticSource,
    synthetic_universe,
)
from finpipe.data.universe import universe_frame
from finpipe.models.registry import is_pytorch_family
from finpipe.monitoring.drift import DriftThresholds

# yfinance and fredapi are imported only when the live source is chosen: slow imports.
SOURCES = ("bundled", "live", "synthetic")
DEFAULT_UNIVERSE = "sp500_20"
DEFAULT_MACRO_SERIES = ["VIXCLS", "CPILFESL", "AAA", "BAA"]


def family_overrides(params_json: str, family: str) -> dict:
    """The parameters `params_json` ('{"<family>": {...}}') sets for `family`."""
    overrides = json.loads(params_json) if params_json else {}
    return dict(overrides.get(family, {}))


def default_data_root() -> str:
    """`FINPIPE_DATA_ROOT` if set, else `./data` under the working directory."""
    return os.environ.get("FINPIPE_DATA_ROOT", str(Path.cwd() / "data"))


class StorageResource(dg.ConfigurableResource):
    """Root of finpipe's Parquet tables: a local path or an fsspec URL (s3://, gs://, ...)."""

    root: str

    def store(self) -> ParquetStore:
        return ParquetStore(self.root)

    def local_folder(self, *parts: str) -> Path:
        """A local folder for files that need a real filesystem (checkpoints, Optuna's
        SQLite): under the root when it is a local path, else under the temp folder."""
        base = Path(tempfile.gettempdir()) / "finpipe" if "://" in self.root else Path(self.root)
        folder = base.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def checkpoint_dir(self, family: str) -> str:
        """Where a family's training checkpoints go, so training resumes after a crash."""
        return str(self.local_folder("checkpoints", family))


class FredCredentials(dg.ConfigurableResource):
    """FRED API key, read from the FRED_API_KEY environment variable through EnvVar."""

    api_key: str | None = None


class TrainingSettings(dg.ConfigurableResource):
    """Model training and tuning settings.

    `params_json` overrides family parameters, e.g. '{"lstm": {"hidden_size": 128,
    "max_epochs": 50}}': the demo defaults are small so that every family trains on a laptop
    CPU in minutes; bigger settings are this one change away. `device` ("", "cpu", "cuda",
    "mps") overrides the automatic choice (FINPIPE_DEVICE and FORCE_CPU=1 also work).
    """

    params_json: str = ""
    device: str = ""
    valid_fraction: float = 0.2
    tune_families: list[str] = ["ridge", "lstm"]
    tune_trials: int = 10
    optuna_storage: str = ""

    def params_for(self, family: str) -> dict:
        params = family_overrides(self.params_json, family)
        if self.device and is_pytorch_family(family):
            params.setdefault("device", self.device)
        return params

    def optuna_url(self, storage: StorageResource) -> str:
        """`optuna_storage`, else FINPIPE_OPTUNA_STORAGE, else SQLite beside the local data."""
        configured = self.optuna_storage or os.environ.get("FINPIPE_OPTUNA_STORAGE", "")
        if configured:
            return configured
        return f"sqlite:///{storage.local_folder('optuna') / 'studies.db'}"


class ForecastSettings(dg.ConfigurableResource):
    """Calibration and signals of the predictions assets.

    Conformal intervals are calibrated on the first `calibration_days` after `train_end`
    and their coverage measured on every `coverage_every`-th later date. Signals use the
    thresholds of `finpipe.forecasting.signals.SignalThresholds`.
    """

    calibration_days: int = 252
    levels: list[float] = [0.8, 0.9]
    interval_level: float = 0.8
    mc_samples: int = 10
    coverage_every: int = 21
    buy_ratio: float = 0.1
    min_return: float = 0.0


class EvaluationSettings(dg.ConfigurableResource):
    """Walk-forward evaluation and backtest settings.

    `families` are retrained every `retrain_every` trading dates over the test period that
    starts after `research.train_end` (expanding window by default, or rolling with
    `train_days`), purged by label_end plus `embargo` dates. The demo defaults keep the fast
    families and retrain every two years; add families or retrain more often by config.
    """

    families: list[str] = ["ridge", "hist_gbm"]
    params_json: str = ""
    retrain_every: int = 504
    window: str = "expanding"
    train_days: int = 0
    embargo: int = 5
    portfolio_horizon: int = 0
    top_k: float = 0.2
    cost_bps: float = 5.0
    n_boot: int = 1000
    report_title: str = "finpipe walk-forward backtest"
    metadata_plots: list[str] = ["equity_curves", "rolling_rank_ic", "regime_bars"]

    def params_for(self, family: str) -> dict:
        return family_overrides(self.params_json, family)


def dataclass_fields(kind: type) -> dict[str, tuple[Any, Any]]:
    """(type, default) of every field of a domain dataclass, to declare them once as config
    fields of a resource (pydantic's create_model)."""
    hints = typing.get_type_hints(kind)
    return {f.name: (hints[f.name], f.default) for f in dataclasses.fields(kind)}


class _MonitoringWindows(dg.ConfigurableResource):
    recent_days: int = 63
    reference_rows: int = 50_000

    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(DriftThresholds)}
        )


MonitoringSettings = pydantic.create_model(
    "MonitoringSettings",
    __base__=_MonitoringWindows,
    __module__=__name__,
    __doc__="""Drift monitoring: the last `recent_days` dates of every feature against up to
    `reference_rows` rows of the champion's training window, and the thresholds of
    `finpipe.monitoring.drift.DriftThresholds` (PSI, KS p-value, the share of drifted
    features that triggers a retrain, the live rank-IC drop against validation), which are
    config fields of the same names and defaults.""",
    **dataclass_fields(DriftThresholds),
)


class ResearchSettings(dg.ConfigurableResource):
    """Label horizons, execution lag, feature families and the training period.

    `train_end` (ISO date) ends the period every fitted transform (GARCH, normalisers,
    models) learns from; empty means the date `train_fraction` of the way through the
    stored price history (for the bundled 1990-2022 data: late 2004, so 2005-2022 is out
    of sample).
    """

    horizons: list[int] = [1, 5, 20]
    execution_lag: int = 1
    feature_families: list[str] = []
    train_end: str = ""
    train_fraction: float = 0.45

    def train_end_date(self, dates: pd.Series) -> pd.Timestamp:
        if self.train_end:
            return pd.Timestamp(self.train_end)
        unique = pd.DatetimeIndex(dates.unique()).sort_values()
        return unique[int(self.train_fraction * (len(unique) - 1))]


class MarketDataResource(dg.ConfigurableResource):
    """Which source, universe and date range the ingest assets use.

    source: `bundled` (offline, packaged real data; default), `live` (yfinance prices and
    fundamentals, FRED macro) or `synthetic` (seeded panel; see SyntheticConfig).
    universe: a preset (`sp500_20`, the default; `bokeh_ohlcv`, five stocks with daily OHLCV
    2000-2013) or comma-separated tickers; the bundled source serves a preset from that
    preset's dataset (`bundled.PRESET_STOCKS`), tickers given by hand from the `sp500_20` one.
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
            from finpipe.data.sources.yahoo import YahooSource

            return YahooSource()
        return BundledSource(stocks_for_universe(self.universe_spec()))

    def macro_source(self, fred: FredCredentials) -> MacroSource | None:
        self._check_source()
        if self.source == "synthetic":
            return None
        if self.source == "live":
            from finpipe.data.sources.fred import FredSource

            return FredSource(api_key=fred.api_key)
        return BundledSource()

    def fundamentals_source(self) -> FundamentalsSource | None:
        self._check_source()
        if self.source != "live":
            return None
        from finpipe.data.sources.yahoo import YahooSource

        return YahooSource()

    def universe_spec(self) -> str:
        """The configured universe, or the default preset."""
        return self.universe or DEFAULT_UNIVERSE

    def universe_frame(self) -> pd.DataFrame:
        if self.source == "synthetic" and not self.universe:
            return synthetic_universe(self.synthetic_config())
        return universe_frame(self.universe_spec())

    def benchmark_ticker(self) -> str:
        return self.benchmark or (BENCHMARK_TICKER if self.source == "synthetic" else "^GSPC")

    def date_range(self) -> tuple[date, date]:
        """(start, end): configured dates, else the source's full history up to its last day
        (for the bundled source: that of the universe's stock dataset)."""
        if self.source == "synthetic":
            dates = self.synthetic_config().dates
            first, last = dates[0].date(), dates[-1].date()
        elif self.source == "bundled":
            dates = bundled_stocks(stocks_for_universe(self.universe_spec()))["date"]
            first, last = dates.min().date(), dates.max().date()
        else:
            first, last = date(2000, 1, 1), pd.Timestamp.today().date()
        start = date.fromisoformat(self.start_date) if self.start_date else first
        end = date.fromisoformat(self.end_date) if self.end_date else last
        if start > end:
            raise ValueError(f"market_data.start_date {start} is after end_date {end}")
        return start, end
