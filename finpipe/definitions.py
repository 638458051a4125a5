"""The one Definitions object of finpipe: `dagster dev -m finpipe.definitions`."""

import os
from typing import Any

import dagster as dg

from finpipe.defs.assets.evaluation import EVALUATION_ASSETS
from finpipe.defs.assets.features import FEATURE_ASSETS
from finpipe.defs.assets.ingest import INGEST_ASSETS
from finpipe.defs.assets.models import MODEL_ASSETS, serving_ensemble
from finpipe.defs.assets.monitoring import MONITORING_ASSETS
from finpipe.defs.assets.portfolio import PORTFOLIO_ASSETS
from finpipe.defs.assets.predictions import PREDICTION_ASSETS
from finpipe.defs.assets.research import research_decisions, tuned_params_table
from finpipe.defs.checks.evaluation import EVALUATION_CHECKS
from finpipe.defs.checks.portfolio import PORTFOLIO_CHECKS
from finpipe.defs.checks.predictions import PREDICTION_CHECKS
from finpipe.defs.checks.quality import INGEST_CHECKS
from finpipe.defs.console import finpipe_console
from finpipe.defs.jobs import JOBS
from finpipe.defs.resources import (
    EvaluationSettings,
    ForecastSettings,
    FredCredentials,
    MarketDataResource,
    MonitoringSettings,
    PortfolioSettings,
    RegistryResource,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
    default_data_root,
)
from finpipe.defs.schedules import SCHEDULES
from finpipe.defs.sensors import SENSORS

ASSETS = [
    *INGEST_ASSETS,
    *FEATURE_ASSETS,
    *MODEL_ASSETS,
    serving_ensemble,
    research_decisions,
    tuned_params_table,
    *MONITORING_ASSETS,
    *PREDICTION_ASSETS,
    *EVALUATION_ASSETS,
    *PORTFOLIO_ASSETS,
]
CHECKS = [
    *INGEST_CHECKS,
    *PREDICTION_CHECKS,
    *EVALUATION_CHECKS,
    *PORTFOLIO_CHECKS,
]


def fred_credentials() -> FredCredentials:
    """Key from FRED_API_KEY through EnvVar (never logged); absent key means no live macro."""
    if os.environ.get("FRED_API_KEY"):
        return FredCredentials(api_key=dg.EnvVar("FRED_API_KEY"))
    return FredCredentials()


EXECUTORS = ("default", "multiprocess", "in_process", "k8s")


def run_executor() -> dg.ExecutorDefinition:
    """The executor named by FINPIPE_EXECUTOR: `in_process` (the default: every step in
    the run's process, so a local CLI run imports the definitions once), `multiprocess`
    (a process per step, steps in parallel: what the deployment uses), `default`
    (Dagster's: multiprocess unless run config says `execution: {config: {in_process: {}}}`),
    or `k8s` (one Kubernetes pod per step: dagster-k8s's k8s_job_executor, which the image
    must install)."""
    kind = os.environ.get("FINPIPE_EXECUTOR", "in_process")
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    executors = {
        "default": dg.multi_or_in_process_executor,
        "multiprocess": dg.multiprocess_executor,
        "in_process": dg.in_process_executor,
    }
    if kind not in executors:
        raise ValueError(f"FINPIPE_EXECUTOR is {kind!r}; expected one of {EXECUTORS}")
    return executors[kind]


def build_defs(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The full graph with default resources, any of which `resources` replaces (tests, demos)."""
    defaults = {
        "market_data": MarketDataResource(),
        "storage": StorageResource(root=default_data_root()),
        "fred": fred_credentials(),
        "research": ResearchSettings(),
        "training": TrainingSettings(),
        "forecasting": ForecastSettings(),
        "evaluation": EvaluationSettings(),
        "monitoring": MonitoringSettings(),
        "registry": RegistryResource(),
        "portfolio": PortfolioSettings(),
    }
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=JOBS,
        schedules=SCHEDULES,
        sensors=SENSORS,
        executor=run_executor(),
        loggers={"console": finpipe_console},
        resources={**defaults, **(resources or {})},
    )


defs = build_defs()
