"""The walk-forward replay: the served procedure run at every retrain date of the time plan.

Each fold of the plan (`TimePlan.folds`) trains every configured family on its window,
exactly as serving would at that date (`finpipe.models.trainer`), and predicts the dates
until the next fold (`fold_forecasts`). Folds do not depend on one another, so an
orchestrator runs them in parallel. `replay` then walks the folds in order and adds what
serving adds on top of the members, fitted on the labelled out-of-sample rows of the folds
before (`finpipe.forecasting.system`): stacking weights, conformal intervals, versions.
What the backtest scores is therefore exactly what is served. `run_replay` is the
sequential driver for tests and benchmarks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from finpipe.core.contracts import REPLAY
from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.core.time_plan import FitWindow, TimePlan
from finpipe.forecasting.system import (
    EnsembleFit,
    fit_ensemble,
    fold_windows,
    forecast_rows,
    known_history,
    member_forecasts,
)
from finpipe.models.base import ProgressCallback
from finpipe.models.panel_data import PanelData
from finpipe.models.trainer import TrainingRun, train_family, window_views

FamilyParams = Mapping[str, Mapping[str, Any]]


def replay_version(fold: str) -> str:
    """The `model_version` of the replay's rows: the fold that made them."""
    return f"replay/{fold}"


@dataclass
class FoldForecasts:
    """One fold's member predictions on its dates, their conformal scale, and the members'
    validation metrics on the fold's early-stopping tail."""

    window: FitWindow
    points: pd.DataFrame
    scale: pd.DataFrame
    validation: dict[str, dict[str, float]]


def fold_fingerprint(
    window: FitWindow, families: FamilyParams, feature_names: Sequence[str], extra: Mapping
) -> str:
    """What decides a fold's predictions, hashed: its window (not how far it has predicted),
    the families and their parameters, the feature columns and anything in `extra` (code
    version, Monte Carlo samples). A stored fold with the same fingerprint is reused."""
    state = {
        "window": {k: v for k, v in window.to_dict().items() if k != "predict_end"},
        "families": {k: dict(v) for k, v in sorted(families.items())},
        "features": list(feature_names),
        **{k: extra[k] for k in sorted(extra)},
    }
    text = json.dumps(state, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fold_forecasts(
    window: FitWindow,
    panel: PanelData,
    families: FamilyParams,
    recent_vol: pd.DataFrame,
    mc_samples: int = 0,
    progress: ProgressCallback | None = None,
    fitted: Mapping[str, TrainingRun] | None = None,
) -> tuple[FoldForecasts, dict[str, TrainingRun]]:
    """Train every family on the fold's window and predict the fold's dates. `fitted` are
    runs already fitted on this window with these parameters (the research window's chosen
    variants: the first test fold's window), used instead of training them again."""
    train, valid = window_views(panel, window)
    fitted = fitted or {}
    runs = {
        family: fitted[family]
        if family in fitted
        else train_family(
            family, train, valid, dict(params), progress=_tagged(progress, window, family)
        )
        for family, params in families.items()
    }
    view = panel.select(window.predict_start, window.predict_end)
    members = {family: run.model for family, run in runs.items()}
    points, scale = member_forecasts(members, view, recent_vol, mc_samples)
    validation = {family: dict(run.model.metrics) for family, run in runs.items()}
    return FoldForecasts(window, points, scale, validation), runs


def _tagged(
    progress: ProgressCallback | None, window: FitWindow, family: str
) -> ProgressCallback | None:
    if progress is None:
        return None
    return lambda record: progress({"fold": window.name, "family": family, **record})


def replay(
    folds: Sequence[FoldForecasts],
    labels: pd.DataFrame,
    levels: tuple[float, ...] = (0.8, 0.9),
    level: float = 0.8,
) -> tuple[pd.DataFrame, list[EnsembleFit]]:
    """Serve every fold in date order from the history of the folds before it.

    Returns the replay's rows (the `REPLAY` contract: members and ensemble with intervals,
    versions, `trained_through`, fold and scale) and each fold's ensemble fit.
    """
    ordered = sorted(folds, key=lambda f: f.window.as_of)
    served: list[pd.DataFrame] = []
    fits: list[EnsembleFit] = []
    for k, fold in enumerate(ordered):
        window = fold.window
        members = sorted(fold.points["model"].unique())
        history = pd.concat(served, ignore_index=True) if served else REPLAY.empty()
        known = known_history(history, labels, window)
        fit = fit_ensemble(
            known, window, members, fold_windows([f.window for f in ordered[:k]]), levels
        )
        version = replay_version(window.name)
        rows = forecast_rows(
            fold.points,
            fold.scale,
            fit,
            level,
            versions=dict.fromkeys([*members, STACKED_ENSEMBLE], version),
            trained_through=dict.fromkeys(members, window.trained_through),
            fold=window.name,
        )
        served.append(rows)
        fits.append(fit)
    return pd.concat(served, ignore_index=True), fits


def run_replay(
    panel: PanelData,
    plan: TimePlan,
    families: FamilyParams,
    labels: pd.DataFrame,
    recent_vol: pd.DataFrame,
    mc_samples: int = 0,
    levels: tuple[float, ...] = (0.8, 0.9),
    level: float = 0.8,
) -> tuple[pd.DataFrame, list[EnsembleFit]]:
    """Every fold of the plan in turn, then `replay` (the sequential driver)."""
    folds = [
        fold_forecasts(window, panel, families, recent_vol, mc_samples)[0] for window in plan.folds
    ]
    return replay(folds, labels, levels, level)


def fold_summary(fits: Sequence[EnsembleFit]) -> pd.DataFrame:
    """One row per replayed fit: its dates, how much history its ensemble had, and the
    fallbacks it took (the report's table of the replayed procedure)."""
    return pd.DataFrame(
        [
            {
                "fold": fit.window.name,
                "as_of": fit.window.as_of.date(),
                "fits_on": f"{fit.window.train_start.date()}..{fit.window.fit_end.date()}",
                "early_stops_on": f"{fit.window.valid_start.date()}..{fit.window.valid_end.date()}",
                "trained_through": fit.window.trained_through.date(),
                "predicts": f"{fit.window.predict_start.date()}..{fit.window.predict_end.date()}",
                "stack_dates": fit.history.get("stack_dates", 0),
                "calibration_dates": fit.history.get("calibration_dates", 0),
                "notes": "; ".join(fit.notes),
            }
            for fit in fits
        ]
    )


def ensemble_weights(fits: Sequence[EnsembleFit]) -> pd.DataFrame:
    """Each stacked fit's weights: `fold, test_start, horizon, model, weight, shrinkage`:
    the convex weights on standardised member predictions and the shrinkage toward equal
    weights its cross-validation chose (fits with too little history to stack weigh members
    equally; `fold_summary` notes which)."""
    columns = ["fold", "test_start", "horizon", "model", "weight", "shrinkage"]
    rows = [
        {
            "fold": fit.window.name,
            "test_start": fit.window.predict_start,
            "horizon": int(h),
            "model": model,
            "weight": float(weight),
            "shrinkage": fit.stack.chosen_shrinkage[h],
        }
        for fit in fits
        if fit.stack is not None
        for h, weights in fit.stack.weights.items()
        for model, weight in weights.items()
    ]
    return pd.DataFrame(rows, columns=columns)


def procedure_text(plan: TimePlan, families: Sequence[str]) -> str:
    """What the replay replayed, in words, for the report."""
    s = plan.settings
    window = "an expanding window" if s.window == "expanding" else f"the last {s.train_days} dates"
    return (
        f"The served procedure, replayed: members {', '.join(families)} retrained every "
        f"{s.retrain_every} trading dates ({len(plan.folds)} fits from "
        f"{plan.folds[0].as_of.date()}; the test period starts {plan.test_start.date()}, after "
        f"the research boundary {plan.research_end.date()}), each on {window} of the dates whose "
        f"labels end {s.embargo} dates before it (purged, embargoed), early-stopping on the "
        f"last {s.valid_days} of them; the stacked ensemble weights members by a non-negative "
        f"ridge fitted on the last {s.stack_days} dates of earlier folds' out-of-sample "
        f"predictions, and split-conformal intervals are calibrated on the last "
        f"{s.calibration_days}. Serving runs the same fit at the newest date."
    )
