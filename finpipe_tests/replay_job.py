"""A small `evaluate` job for the multiprocess executor test: every step's process imports
this module and rebuilds the job (a reconstructable job), with its data root from
FINPIPE_DATA_ROOT and its executor from FINPIPE_EXECUTOR, both inherited."""

import dagster as dg

from finpipe.definitions import build_defs
from finpipe.defs.resources import (
    EvaluationSettings,
    MarketDataResource,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
    default_data_root,
)


def small_defs() -> dg.Definitions:
    """A tiny synthetic panel, ridge only, three replay folds."""
    return build_defs(
        {
            "market_data": MarketDataResource(
                source="synthetic",
                synthetic_n_tickers=6,
                synthetic_n_days=700,
                synthetic_signal_strength=0.05,
            ),
            "storage": StorageResource(root=default_data_root()),
            "research": ResearchSettings(
                feature_families=["alpha158_close", "momentum"],
                research_fraction=0.5,
                retrain_every=150,
                valid_days=20,
                stack_days=30,
                calibration_days=30,
                min_train_days=260,
            ),
            "training": TrainingSettings(families=["ridge"], tune_families=["ridge"]),
            "evaluation": EvaluationSettings(n_boot=100),
        }
    )


def evaluate_job() -> dg.JobDefinition:
    return small_defs().resolve_job_def("evaluate")
