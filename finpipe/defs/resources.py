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

from finpipe.core.storage import ParquetStore, staged_folder
from finpipe.core.time_plan import PlanSettings, TimePlan
from finpipe.data.sources.base import FundamentalsSource, MacroSource, PriceSource
from finpipe.data.sources.bundled import BundledSource, bundled_stocks, stocks_for_universe
from finpipe.data.sources.synthetic import (
    BENCHMARK_TICKER,
    SyntheticConfig,
    SyntheticSource,
    synthetic_universe,
)
from finpipe.data.universe import universe_frame
from finpipe.models.panel_data import PANEL_META, PanelData, load_panel, save_panel
from finpipe.models.registry import is_pytorch_family
from finpipe.models.versions import ModelRegistry
from finpipe.monitoring.drift import DriftThresholds

# yfinance and fredapi are imported only when the live source is chosen: slow imports.
SOURCES = ("bundled", "live", "synthetic")
DEFAULT_UNIVERSE = "sp500_20"
DEFAULT_MACRO_SERIES = ["VIXCLS", "CPILFESL", "AAA", "BAA"]
PANEL_FOLDER = "panel"
PLAN_PATH = ("plan", "time_plan")


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

    def write_panel(self, panel: PanelData) -> tuple[str, str]:
        """Store the dense model panel under `panel/` (replacing it once complete);
        returns (where, fingerprint)."""
        if "://" in self.root:
            with tempfile.TemporaryDirectory() as tmp:
                fingerprint = save_panel(panel, Path(tmp) / PANEL_FOLDER)
                return self.store().put_folder(Path(tmp) / PANEL_FOLDER, PANEL_FOLDER), fingerprint
        target = Path(self.root) / PANEL_FOLDER
        with staged_folder(target) as staging:
            fingerprint = save_panel(panel, staging)
        return str(target), fingerprint

    def read_panel(self) -> PanelData:
        """The stored dense model panel, memory-mapped (a remote root is copied once per
        panel fingerprint into the local temp folder first)."""
        if "://" not in self.root:
            folder = Path(self.root) / PANEL_FOLDER
        else:
            meta = self.store().read_json(PANEL_FOLDER, PANEL_META.removesuffix(".json"))
            if meta is None:
                folder = Path("/nonexistent")
            else:
                folder = self.local_folder("panel_cache") / meta["fingerprint"]
                if not (folder / PANEL_META).exists():
                    self.store().get_folder(folder, PANEL_FOLDER)
        if not (folder / PANEL_META).exists():
            raise FileNotFoundError(
                "the model panel is not stored yet: materialize model_panel (group features)"
            )
        return load_panel(folder)

    def panel_fingerprint(self) -> str:
        """The fingerprint of the stored model panel (what a model was trained on)."""
        meta = self.store().read_json(PANEL_FOLDER, PANEL_META.removesuffix(".json"))
        if meta is None:
            raise FileNotFoundError("the model panel is not stored yet: materialize model_panel")
        return str(meta["fingerprint"])

    def read_plan(self) -> TimePlan:
        """The stored time plan (what the time_plan asset wrote)."""
        state = self.store().read_json(*PLAN_PATH)
        if state is None:
            raise FileNotFoundError("the time plan is not stored yet: materialize time_plan")
        return TimePlan.from_dict(state)


class FredCredentials(dg.ConfigurableResource):
    """FRED API key, read from the FRED_API_KEY environment variable through EnvVar."""

    api_key: str | None = None


class TrainingSettings(dg.ConfigurableResource):
    """Which model families serve and are replayed, their parameters, and tuning.

    `families` are the members of the served ensemble and of every replay fold (the demo
    keeps three fast ones; any registered family can be added). `params_json` overrides
    family parameters, e.g. '{"lstm": {"hidden_size": 128, "max_epochs": 50}}'. `device`
    ("", "cpu", "cuda", "mps") overrides the automatic choice (FINPIPE_DEVICE and
    FORCE_CPU=1 also work).
    """

    families: list[str] = ["ridge", "hist_gbm", "lstm"]
    params_json: str = ""
    device: str = ""
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


class RegistryResource(dg.ConfigurableResource):
    """The MLflow tracking store and model registry.

    `tracking_uri`, else MLFLOW_TRACKING_URI, else SQLite in `mlflow/` under a local data
    root; `artifact_location`, else FINPIPE_MLFLOW_ARTIFACTS, else `mlflow/artifacts` there.
    `ui_url`, else FINPIPE_MLFLOW_UI_URL, is where an MLflow UI serves that store (the links
    in the asset metadata; locally `mlflow ui --backend-store-uri sqlite:///data/mlflow/mlflow.db`).
    """

    tracking_uri: str = ""
    artifact_location: str = ""
    ui_url: str = ""

    def registry(self, storage: StorageResource) -> ModelRegistry:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        artifacts = self.artifact_location or os.environ.get("FINPIPE_MLFLOW_ARTIFACTS", "")
        if not uri:
            return ModelRegistry.local(storage.local_folder("mlflow"))
        return ModelRegistry(uri, artifacts or None)

    def link(self, registry: ModelRegistry, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        url = self.ui_url or os.environ.get("FINPIPE_MLFLOW_UI_URL", "http://127.0.0.1:5000")
        return registry.run_link(run_id, url)


class ForecastSettings(dg.ConfigurableResource):
    """Intervals, signals and the gates on the served predictions.

    Conformal intervals at `interval_level` (calibrated at every level of `levels`).
    `mc_samples` > 0 adds that many Monte Carlo dropout passes per PyTorch member to the
    interval scale; their draws depend on which rows share a batch, so the replay then
    matches serving only up to that sampling noise (off by default: exact replay).
    Signals use the thresholds of `finpipe.forecasting.signals.SignalThresholds`. The
    predictions fail their blocking check when a served model's `trained_through` is more
    than `max_model_age` trading dates older than the prediction date. A challenger replaces
    the champion unless it is significantly worse over at least `promotion_min_dates`
    shared out-of-sample dates.
    """

    levels: list[float] = [0.8, 0.9]
    interval_level: float = 0.8
    mc_samples: int = 0
    buy_ratio: float = 0.1
    min_return: float = 0.0
    max_model_age: int = 63
    promotion_min_dates: int = 20


class EvaluationSettings(dg.ConfigurableResource):
    """The backtest of the replay and its leak gate.

    Portfolios trade the `portfolio_horizon` (0: the shortest) with `top_k` names per leg
    (a count, or a fraction of the names) net of `cost_bps`. The leak gate fails the replay
    when its out-of-sample skill is beyond what daily equity data allows: a mean rank IC
    above `max_rank_ic` or a long-short Sharpe ratio above `max_sharpe` (planted-signal
    tests set their own).
    """

    portfolio_horizon: int = 0
    top_k: float = 0.2
    cost_bps: float = 5.0
    n_boot: int = 1000
    report_title: str = "finpipe walk-forward backtest"
    metadata_plots: list[str] = ["equity_curves", "rolling_rank_ic", "regime_bars"]
    max_rank_ic: float = 0.2
    max_sharpe: float = 5.0


def dataclass_fields(kind: type, types: dict[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """(type, default) of every field of a domain dataclass, to declare them once as config
    fields of a resource (pydantic's create_model); `types` replaces annotations Dagster
    config cannot take (a tuple becomes a list, a Literal a str)."""
    hints = {**typing.get_type_hints(kind), **(types or {})}
    return {
        f.name: (hints[f.name], list(f.default) if isinstance(f.default, tuple) else f.default)
        for f in dataclasses.fields(kind)
    }


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


class _ResearchDesign(dg.ConfigurableResource):
    feature_families: list[str] = []
    research_end: str = ""
    research_fraction: float = 0.45

    def plan_settings(self) -> PlanSettings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(PlanSettings)}
        return PlanSettings(**{**values, "horizons": tuple(int(h) for h in self.horizons)})


ResearchSettings = pydantic.create_model(
    "ResearchSettings",
    __base__=_ResearchDesign,
    __module__=__name__,
    __doc__="""Labels, feature families and the time plan (`finpipe.core.time_plan`).

    `research_end` (ISO date) ends the research period: the report scores the dates after
    it, and choices are made on the dates before. Empty means the date `research_fraction`
    of the way through the price history when the plan is first made (for the bundled
    1990-2022 data: late 2004); it is then recorded and kept as history grows.

    The plan's rule is config fields of `PlanSettings`' names and defaults: every fit
    (serving and each replay fold) learns from the dates whose labels end `embargo`
    trading dates before its as-of date, fits on all but the last `valid_days` and
    early-stops on those; stacking and calibration use the last `stack_days` and
    `calibration_days` of out-of-sample history. The replay retrains every `retrain_every`
    dates (expanding window, or `rolling` with `train_days`), from enough dates before the
    test period that its first fold has that history (plus `research_days`).
    """,
    **dataclass_fields(PlanSettings, {"horizons": list[int], "window": str}),
)


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
