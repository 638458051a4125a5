"""Resources: where data lives and which source feeds the pipeline, set through Dagster config."""

import dataclasses
import json
import os
import tempfile
import typing
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import dagster as dg
import pandas as pd
import pydantic

from finpipe.core.identifiers import validate_series_id, validate_ticker
from finpipe.core.storage import TABLE_READS, ParquetStore, UnreadableFileError, staged_folder
from finpipe.core.time_plan import FitWindow, PlanSettings, TimePlan, TimePlanError
from finpipe.data.sources.base import FundamentalsSource, MacroSource, PriceSource
from finpipe.data.sources.bundled import BundledSource, bundled_stocks, stocks_for_universe
from finpipe.data.sources.synthetic import (
    BENCHMARK_TICKER,
    SyntheticConfig,
    SyntheticSource,
    synthetic_universe,
)
from finpipe.data.universe import universe_frame
from finpipe.evaluation.reports import PLOTS
from finpipe.evaluation.research import INPUT_AXES
from finpipe.features.engine import FAMILIES, GROUPS
from finpipe.models.panel_data import PANEL_META, PanelData, load_panel, save_panel
from finpipe.models.registry import is_pytorch_family, list_models, model_class
from finpipe.models.trainer import TrainingRun, load_fits, save_fits
from finpipe.models.versions import ModelRegistry
from finpipe.monitoring.drift import DriftThresholds
from finpipe.portfolio.construction import METHODS, Constraints, ConstructionSettings
from finpipe.portfolio.risk_model import RiskModelConfig
from finpipe.portfolio.targets import PortfolioSpec

# yfinance and fredapi are imported only when the live source is chosen: slow imports.
DEFAULT_UNIVERSE = "sp500_20"
DEFAULT_MACRO_SERIES = ["VIXCLS", "CPILFESL", "AAA", "BAA"]
PANEL_FOLDER = "panel"
PLAN_PATH = ("plan", "time_plan")
TUNED_PARAMS = ("models", "tuned_params")
DECIDED_PARAMS = ("research", "decided_params")
DECISIONS = ("research", "decisions")
RESEARCH_FITS = "research/fits"
T = TypeVar("T")


def family_overrides(params_json: str, family: str) -> dict:
    """The parameters `params_json` ('{"<family>": {...}}') sets for `family`."""
    overrides = json.loads(params_json) if params_json else {}
    return dict(overrides.get(family, {}))


def iso_date(value: str) -> str:
    """`value` if it is empty or a date written YYYY-MM-DD; a ValueError that says so."""
    if value:
        try:
            date.fromisoformat(value)
        except ValueError as error:
            raise ValueError(f"{value!r} is not a date written YYYY-MM-DD ({error})") from None
    return value


def known_names(values: list[str], allowed: list[str] | tuple[str, ...], what: str) -> list[str]:
    """`values` if every one is in `allowed`; a ValueError naming the others otherwise."""
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; choose from {sorted(allowed)}")
    return values


def default_data_root() -> str:
    """`FINPIPE_DATA_ROOT` if set, else `./data` under the working directory."""
    return os.environ.get("FINPIPE_DATA_ROOT", str(Path.cwd() / "data"))


class InvalidSettingsError(ValueError):
    """Settings that break their resource's rules, every problem named."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid run config, nothing was run:\n- " + "\n- ".join(problems))


class Settings(dg.ConfigurableResource):
    """A resource whose invalid config is refused as `key.field = value: what is allowed`
    (the key it has in the definitions), not as a bare pydantic error."""

    def __init__(self, **config: Any) -> None:
        try:
            super().__init__(**config)
        except pydantic.ValidationError as error:
            key = next((k for k, kind in SETTINGS.items() if kind is type(self)), "")
            key = key or type(self).__name__
            raise InvalidSettingsError([describe_error(key, e) for e in error.errors()]) from None


class StorageResource(Settings):
    """Root of finpipe's Parquet tables: a local path or an fsspec URL (s3://, gs://, ...).

    Every step uses it, so it is also where a run's launch config is checked as a whole:
    a setting given at launch that breaks any resource's rules fails the first step, before
    anything is written, with every problem named (`config_problems`). When its steps are
    done it logs which tables they read in full and how often (per run in-process, per step
    under the multiprocess executor): the features table should be read once, by
    `model_panel`.
    """

    root: Annotated[str, pydantic.Field(min_length=1)]
    _reads_before: Counter = pydantic.PrivateAttr(default_factory=Counter)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run_config = context.run.run_config if context.run else {}
        problems = config_problems(run_config)
        if problems:
            raise dg.Failure(
                description="invalid run config, nothing was run:\n- " + "\n- ".join(problems)
            )
        self._reads_before = Counter(TABLE_READS)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        reads = TABLE_READS - self._reads_before
        if reads:
            context.log.info(
                "storage: tables read in full: %s",
                ", ".join(f"{name} {count}" for name, count in sorted(reads.items())),
            )

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

    def _write_folder(self, name: str, write: Callable[[Path], T]) -> tuple[str, T]:
        """Have `write` fill a new folder and put it at `name` under the root, replacing what
        was there only once complete; returns (where, what `write` returned)."""
        if "://" in self.root:
            with tempfile.TemporaryDirectory() as tmp:
                result = write(Path(tmp) / name)
                return self.store().put_folder(Path(tmp) / name, name), result
        target = Path(self.root) / name
        with staged_folder(target) as staging:
            result = write(Path(staging))
        return str(target), result

    def write_panel(self, panel: PanelData) -> tuple[str, str]:
        """Store the dense model panel under `panel/` (replacing it once complete);
        returns (where, fingerprint)."""
        return self._write_folder(PANEL_FOLDER, lambda folder: save_panel(panel, folder))

    def write_research_fits(self, runs: Mapping[str, TrainingRun], window: FitWindow) -> str:
        """Store the research window's chosen fits under `research/fits/` (replacing them
        once complete) with the window and the panel they were fitted on; returns where."""
        facts = {"window": window.to_dict(), "panel": self.panel_fingerprint()}
        where, _ = self._write_folder(RESEARCH_FITS, lambda f: save_fits(runs, f, facts))
        return where

    def read_research_fits(self, window: FitWindow) -> dict[str, TrainingRun]:
        """The stored research fits if they were fitted on `window` of the current panel
        (the first test fold's window), else none."""
        if "://" in self.root:
            folder = self.local_folder("research_fits")
            self.store().get_folder(folder, RESEARCH_FITS)
        else:
            folder = Path(self.root) / RESEARCH_FITS
        facts, runs = load_fits(folder)
        current = {"window": window.to_dict(), "panel": self.panel_fingerprint()}
        same = json.loads(json.dumps(current, default=str)) == facts
        return runs if same else {}

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
        try:
            return load_panel(folder)
        except (OSError, ValueError) as error:
            raise UnreadableFileError(
                f"the model panel in {folder} is unreadable ({type(error).__name__}: {error}); "
                "re-materialize model_panel"
            ) from error

    def panel_fingerprint(self) -> str:
        """The fingerprint of the stored model panel (what a model was trained on)."""
        meta = self.store().read_json(PANEL_FOLDER, PANEL_META.removesuffix(".json"))
        if meta is None:
            raise FileNotFoundError("the model panel is not stored yet: materialize model_panel")
        return str(meta["fingerprint"])

    def read_tuned_params(self, family: str) -> dict[str, Any]:
        """Best parameters the tune job stored for `family` (empty when it has not run)."""
        table = self.store().read(*TUNED_PARAMS)
        if table is None or family not in set(table["family"]):
            return {}
        return json.loads(table.loc[table["family"] == family, "params_json"].iloc[-1])

    def read_decided_params(self, family: str) -> dict[str, Any]:
        """The inputs research_decisions chose for `family` (empty before it has run)."""
        return dict(
            (self.store().read_json(*DECIDED_PARAMS) or {}).get("params", {}).get(family, {})
        )

    def read_plan(self) -> TimePlan:
        """The stored time plan (what the time_plan asset wrote)."""
        state = self.store().read_json(*PLAN_PATH)
        if state is None:
            raise FileNotFoundError("the time plan is not stored yet: materialize time_plan")
        return TimePlan.from_dict(state)


class FredCredentials(Settings):
    """FRED API key, read from the FRED_API_KEY environment variable through EnvVar."""

    api_key: str | None = None


class TrainingSettings(Settings):
    """Which model families serve and are replayed, their parameters, and tuning.

    `families` are the members of the served ensemble and of every replay fold: the demo
    keeps three fast learned ones and the three classic factors (`finpipe.models.factors`);
    any registered family can be added. `params_json` overrides
    family parameters, e.g. '{"lstm": {"hidden_size": 128, "max_epochs": 50}}'. `device`
    ("", "cpu", "cuda", "mps") overrides the automatic choice (FINPIPE_DEVICE and
    FORCE_CPU=1 also work).
    """

    families: list[str] = pydantic.Field(
        default=[
            "ridge",
            "hist_gbm",
            "lstm",
            "momentum_factor",
            "reversal_factor",
            "low_vol_factor",
        ],
        min_length=1,
    )
    params_json: str = ""
    device: Literal["", "cpu", "cuda", "mps"] = ""
    tune_families: list[str] = ["ridge", "lstm"]
    tune_trials: Annotated[int, pydantic.Field(ge=1)] = 10
    optuna_storage: str = ""

    @pydantic.field_validator("families", "tune_families")
    @classmethod
    def _registered(cls, value: list[str]) -> list[str]:
        return known_names(value, list_models(), "model families")

    @pydantic.field_validator("params_json")
    @classmethod
    def _params(cls, value: str) -> str:
        if not value:
            return value
        try:
            overrides = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"is not JSON ({error}): give '{{\"<family>\": {{...}}}}'") from None
        if not isinstance(overrides, dict) or not all(
            isinstance(v, dict) for v in overrides.values()
        ):
            raise ValueError('must map families to parameter objects: {"lstm": {"window": 30}}')
        known_names(list(overrides), list_models(), "model families")
        for family, params in overrides.items():
            allowed = set(model_class(family).defaults)
            unknown = sorted(set(params) - allowed)
            if unknown:
                raise ValueError(
                    f"{family} does not take {unknown}; its parameters are {sorted(allowed)}"
                )
        return value

    def params_for(self, family: str) -> dict:
        params = family_overrides(self.params_json, family)
        if self.device and is_pytorch_family(family):
            params.setdefault("device", self.device)
        return params

    def resolved_params(
        self, family: str, storage: StorageResource
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The parameters `family` trains with, serving and replay alike, and where each came
        from: the config (`params_json`, `device`) wins over what the tune job found on the
        research period, which wins over the inputs research_decisions chose there; what
        none sets is the family's default."""
        decided = storage.read_decided_params(family)
        tuned, explicit = storage.read_tuned_params(family), self.params_for(family)
        sources = {
            **dict.fromkeys(decided, "research"),
            **dict.fromkeys(tuned, "tuned"),
            **dict.fromkeys(explicit, "config"),
        }
        return {**decided, **tuned, **explicit}, sources

    def optuna_url(self, storage: StorageResource) -> str:
        """`optuna_storage`, else FINPIPE_OPTUNA_STORAGE, else SQLite beside the local data."""
        configured = self.optuna_storage or os.environ.get("FINPIPE_OPTUNA_STORAGE", "")
        if configured:
            return configured
        return f"sqlite:///{storage.local_folder('optuna') / 'studies.db'}"


class RegistryResource(Settings):
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


class ForecastSettings(Settings):
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

    levels: list[Annotated[float, pydantic.Field(gt=0, lt=1)]] = pydantic.Field(
        default=[0.8, 0.9], min_length=1
    )
    interval_level: Annotated[float, pydantic.Field(gt=0, lt=1)] = 0.8
    mc_samples: Annotated[int, pydantic.Field(ge=0)] = 0
    buy_ratio: Annotated[float, pydantic.Field(ge=0)] = 0.1
    min_return: Annotated[float, pydantic.Field(ge=0)] = 0.0
    max_model_age: Annotated[int, pydantic.Field(ge=1)] = 63
    promotion_min_dates: Annotated[int, pydantic.Field(ge=1)] = 20

    @pydantic.model_validator(mode="after")
    def _level_calibrated(self) -> "ForecastSettings":
        if not any(abs(level - self.interval_level) < 1e-12 for level in self.levels):
            raise ValueError(
                f"interval_level {self.interval_level} is not one of the calibrated levels "
                f"{self.levels}: add it to levels"
            )
        return self


class EvaluationSettings(Settings):
    """The backtest of the replay and its leak gate.

    Portfolios trade the `portfolio_horizon` (0: the shortest) with the `top_k` fraction of
    the names in each leg (at least one name) net of `cost_bps`. The leak gate fails the replay
    when its out-of-sample skill is beyond what daily equity data allows: a mean rank IC
    above `max_rank_ic` or a long-short Sharpe ratio above `max_sharpe` (planted-signal
    tests set their own).
    """

    portfolio_horizon: Annotated[int, pydantic.Field(ge=0)] = 0
    top_k: Annotated[float, pydantic.Field(gt=0, le=0.5)] = 0.2
    cost_bps: Annotated[float, pydantic.Field(ge=0)] = 5.0
    n_boot: Annotated[int, pydantic.Field(ge=100)] = 1000
    report_title: str = "finpipe walk-forward backtest"
    metadata_plots: list[str] = ["equity_curves", "rolling_rank_ic", "regime_bars"]
    max_rank_ic: Annotated[float, pydantic.Field(gt=0, le=1)] = 0.2
    max_sharpe: Annotated[float, pydantic.Field(gt=0)] = 5.0

    @pydantic.field_validator("metadata_plots")
    @classmethod
    def _plots(cls, value: list[str]) -> list[str]:
        return known_names(value, PLOTS, "plots")


class PortfolioSettings(dg.ConfigurableResource):
    """Target portfolios, their risk, the orders, and the construction replay.

    `methods` (some of top_k, hrp, mean_variance, risk_parity, min_cvar) each get target
    weights from the ensemble's forecast at `horizon` (0: the longest), times its confidence
    when `shrink_by_confidence`, or from the multi-factor score when `factor_weights` names
    factors (forecast, momentum, low_risk, value, quality). Constraints: `long_only`, `gross`
    and `net` exposure, `max_weight` per name, `max_turnover` against current holdings (0:
    none). `top_k` sizes the top-k book, `select` the names hrp, risk_parity and min_cvar
    size, at `cvar_level`. The risk model is Ledoit-Wolf on the last `lookback` dates (names
    with `min_observations` returns), GARCH-filtered when `garch`. Orders go from the
    holdings in `holdings_path` (Parquet or CSV, `ticker, shares`; empty: `capital` in cash)
    at `cost_bps`, in whole shares unless `whole_shares` is off. The backtest replays
    `replay_methods` every `rebalance_every` trading dates of the test period.
    """

    methods: list[str] = list(METHODS)
    horizon: int = 0
    shrink_by_confidence: bool = True
    factor_weights: dict[str, float] = {}
    long_only: bool = True
    gross: float = 1.0
    net: float = 1.0
    max_weight: float = 0.25
    max_turnover: float = 0.0
    top_k: float = 0.2
    select: float = 0.5
    cvar_level: float = 0.95
    lookback: int = 252
    min_observations: int = 126
    garch: bool = False
    holdings_path: str = ""
    capital: float = 1_000_000.0
    cost_bps: float = 5.0
    whole_shares: bool = True
    replay_methods: list[str] = list(METHODS)
    rebalance_every: int = 63

    def spec(self, horizons: list[int] | tuple[int, ...], replay: bool = False) -> PortfolioSpec:
        """The domain's settings; `horizons` are the forecast horizons there are."""
        horizon = self.horizon or max(horizons)
        if horizon not in horizons:
            raise ValueError(f"portfolio.horizon {horizon} is not a forecast horizon {horizons}")
        return PortfolioSpec(
            methods=tuple(self.replay_methods if replay else self.methods),
            constraints=Constraints(
                self.long_only, self.gross, self.net, self.max_weight, self.max_turnover
            ),
            settings=ConstructionSettings(self.top_k, self.select, self.cvar_level),
            risk=RiskModelConfig(self.lookback, self.min_observations, self.garch),
            horizon=horizon,
            shrink_by_confidence=self.shrink_by_confidence,
            factor_weights=dict(self.factor_weights) or None,
        )


def dataclass_fields(kind: type, types: dict[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """(type, default) of every field of a domain dataclass, to declare them once as config
    fields of a resource (pydantic's create_model); `types` replaces annotations Dagster
    config cannot take (a tuple becomes a list, a Literal a str)."""
    hints = {**typing.get_type_hints(kind), **(types or {})}
    return {
        f.name: (hints[f.name], list(f.default) if isinstance(f.default, tuple) else f.default)
        for f in dataclasses.fields(kind)
    }


class _MonitoringWindows(Settings):
    recent_days: Annotated[int, pydantic.Field(ge=2)] = 63
    reference_rows: Annotated[int, pydantic.Field(ge=100)] = 50_000

    @pydantic.model_validator(mode="after")
    def _thresholds_in_range(self) -> "_MonitoringWindows":
        self.thresholds()
        return self

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


class _ResearchDesign(Settings):
    feature_families: list[str] = []
    research_end: str = ""
    research_fraction: Annotated[float, pydantic.Field(gt=0, lt=1)] = 0.45
    decision_axes: list[str] = ["target"]

    @pydantic.field_validator("decision_axes")
    @classmethod
    def _axes(cls, value: list[str]) -> list[str]:
        return known_names(value, list(INPUT_AXES), "decision axes")

    @pydantic.field_validator("feature_families")
    @classmethod
    def _families(cls, value: list[str]) -> list[str]:
        return known_names(value, [*GROUPS, *(f.name for f in FAMILIES)], "feature families")

    @pydantic.field_validator("research_end")
    @classmethod
    def _date(cls, value: str) -> str:
        return iso_date(value)

    @pydantic.model_validator(mode="after")
    def _plan_valid(self) -> "_ResearchDesign":
        try:
            self.plan_settings()
        except TimePlanError as error:
            raise ValueError(str(error)) from None
        return self

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
    `decision_axes` are the inputs research_decisions chooses per family on the research
    window (`finpipe.evaluation.research`): any of target, feature_scaling,
    feature_selection; empty keeps the families' defaults. The default decides the target
    only: on the bundled data's research window the cross-sectional feature scaling tied the
    time-series one for ridge and lost for hist_gbm and lstm (validation rank IC -0.060
    against -0.061, 0.003 against 0.043, 0.019 against 0.061), and comparing it again on
    every run costs about as much as the rest of the decisions.

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


class MarketDataResource(Settings):
    """Which source, universe and date range the ingest assets use.

    source: `bundled` (offline, packaged real data; default), `live` (yfinance prices and
    fundamentals, FRED macro) or `synthetic` (seeded panel; see SyntheticConfig).
    universe: a preset (`sp500_20`, the default; `bokeh_ohlcv`, five stocks with daily OHLCV
    2000-2013) or comma-separated tickers; the bundled source serves a preset from that
    preset's dataset (`bundled.PRESET_STOCKS`), tickers given by hand from the `sp500_20` one.
    Empty `universe`, `benchmark`, `start_date` or `end_date` take the source's defaults.
    """

    source: Literal["bundled", "live", "synthetic"] = "bundled"
    universe: str = ""
    benchmark: str = ""
    start_date: str = ""
    end_date: str = ""
    macro_series: list[str] = DEFAULT_MACRO_SERIES
    synthetic_n_tickers: Annotated[int, pydantic.Field(ge=1)] = 50
    synthetic_n_days: Annotated[int, pydantic.Field(ge=2)] = 1500
    synthetic_seed: Annotated[int, pydantic.Field(ge=0)] = 0
    synthetic_signal_strength: Annotated[float, pydantic.Field(ge=0, lt=1)] = 0.0
    synthetic_regimes: bool = False
    max_gap_days: Annotated[int, pydantic.Field(ge=1)] = 5
    max_stale_days: Annotated[int, pydantic.Field(ge=0)] = 5

    @pydantic.field_validator("start_date", "end_date")
    @classmethod
    def _dates(cls, value: str) -> str:
        return iso_date(value)

    @pydantic.field_validator("universe")
    @classmethod
    def _universe(cls, value: str) -> str:
        if value:
            universe_frame(value)
        return value

    @pydantic.field_validator("benchmark")
    @classmethod
    def _benchmark(cls, value: str) -> str:
        return validate_ticker(value) if value else value

    @pydantic.field_validator("macro_series")
    @classmethod
    def _series(cls, value: list[str]) -> list[str]:
        return [validate_series_id(v) for v in value]

    @pydantic.model_validator(mode="after")
    def _date_order(self) -> "MarketDataResource":
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        return self

    def synthetic_config(self) -> SyntheticConfig:
        return SyntheticConfig(
            n_tickers=self.synthetic_n_tickers,
            n_days=self.synthetic_n_days,
            seed=self.synthetic_seed,
            signal_strength=self.synthetic_signal_strength,
            regimes=self.synthetic_regimes,
        )

    def price_source(self) -> PriceSource:
        if self.source == "synthetic":
            return SyntheticSource(self.synthetic_config())
        if self.source == "live":
            from finpipe.data.sources.yahoo import YahooSource

            return YahooSource()
        return BundledSource(stocks_for_universe(self.universe_spec()))

    def macro_source(self, fred: FredCredentials) -> MacroSource | None:
        """The macro source, or None when there is none: the synthetic source, or the live
        one without a FRED key (`no_macro_reason` says which)."""
        if self.no_macro_reason(fred):
            return None
        if self.source == "live":
            from finpipe.data.sources.fred import FredSource

            return FredSource(api_key=fred.api_key)
        return BundledSource()

    def no_macro_reason(self, fred: FredCredentials) -> str:
        """Why this configuration has no macro series ("" when it has them)."""
        if self.source == "synthetic":
            return "the synthetic source has no macro series"
        if self.source == "live" and not fred.api_key:
            return (
                "FRED_API_KEY is not set: the macro series are skipped (set it for them, from "
                "https://fred.stlouisfed.org/docs/api/api_key.html)"
            )
        return ""

    def fundamentals_source(self) -> FundamentalsSource | None:
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
        return start, end


# The settings a run's config may set, by resource key (what `config_problems` checks).
SETTINGS: dict[str, type[Settings]] = {
    "storage": StorageResource,
    "fred": FredCredentials,
    "market_data": MarketDataResource,
    "research": ResearchSettings,
    "training": TrainingSettings,
    "forecasting": ForecastSettings,
    "evaluation": EvaluationSettings,
    "monitoring": MonitoringSettings,
    "registry": RegistryResource,
}


def config_problems(run_config: dict[str, Any]) -> list[str]:
    """Every rule the settings given in a run's config break, as `key.field = value: why`
    (a resource's other fields take their defaults)."""
    resources = run_config.get("resources") or {}
    problems = []
    for key, kind in SETTINGS.items():
        given = {  # an {"env": NAME} value is resolved, and checked, by Dagster itself
            field: value
            for field, value in ((resources.get(key) or {}).get("config") or {}).items()
            if not (isinstance(value, dict) and set(value) == {"env"})
        }
        if not given:
            continue
        try:
            kind(**given)
        except InvalidSettingsError as error:
            problems += error.problems
    return problems


def describe_error(key: str, error: Any) -> str:
    """One pydantic error as `key.field = value: what is allowed`."""
    field = ".".join(str(part) for part in error["loc"])
    where = f"{key}.{field}" if field else key
    value = f" = {error['input']!r}" if field else ""
    return f"{where}{value}: {error['msg'].removeprefix('Value error, ')}"
