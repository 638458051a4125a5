"""The served forecast of one fit: members, the stacked ensemble and split-conformal
intervals, all fitted under the fit's window of the time plan (`finpipe.core.time_plan`).

One procedure serves and is replayed:

1. the members train on the window's dates (`finpipe.models.trainer`);
2. `member_forecasts`: their predictions on the dates the fit serves, and the per-row
   conformal scale (recent volatility and member disagreement, Monte Carlo dropout
   included);
3. `fit_ensemble`: from the out-of-sample rows of earlier fits whose labels are known by the
   window's cutoff (the replay's history), the stacking weights (member rows of the last
   `stack_days`) and the conformal quantiles (served rows, members and ensemble, of the
   last `calibration_days`); too little history falls back to equal weights and unbounded
   intervals, and says so;
4. `forecast_rows`: members and ensemble with intervals, confidence, the version of the
   model behind each row and how current it is (`trained_through`).

The replay runs 2-4 at every retrain date with the history of its own earlier folds;
serving runs them at the newest date with the replay's history. Nothing is fitted on rows
its members trained on, and nothing is calibrated on rows the stacker fitted on with the
same window.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.contracts import PREDICTIONS, REPLAY, conform
from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE
from finpipe.core.time_plan import FitWindow
from finpipe.forecasting.ensemble import StackingEnsemble, combine
from finpipe.forecasting.uncertainty import SplitConformal, confidence_from_width, interval_scale
from finpipe.models import Forecaster, PanelData
from finpipe.models.versions import (
    CHALLENGER,
    CHAMPION,
    MODEL_ARTIFACTS,
    ModelRegistry,
    ModelVersion,
    base_model,
    challenger_model,
    load_version,
    window_tags,
)

# Fewer labelled out-of-sample dates than this and the stacker is not fitted.
MIN_STACK_DATES = 63


def member_predictions(members: Mapping[str, Forecaster], view: PanelData) -> pd.DataFrame:
    """Every member's point predictions on a view: `date, ticker, horizon, model,
    prediction`."""
    return pd.concat(
        [
            model.predict(view)[[*ROW_KEY, "prediction"]].assign(model=name)
            for name, model in members.items()
        ],
        ignore_index=True,
    )


def mc_dropout_samples(
    members: Mapping[str, Forecaster], view: PanelData, n: int, seed: int = 0
) -> pd.DataFrame | None:
    """Monte Carlo dropout samples of the PyTorch members (None when there are none)."""
    frames = [
        model.predict_samples(view, n=n, seed=seed).assign(model=name)
        for name, model in members.items()
        if n > 0 and getattr(model, "module", None) is not None
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def member_forecasts(
    members: Mapping[str, Forecaster],
    view: PanelData,
    recent_vol: pd.DataFrame,
    mc_samples: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(member points, per-row scale `date, ticker, horizon, horizon_vol, dispersion,
    scale`) on the view's samples."""
    points = member_predictions(members, view)
    samples = mc_dropout_samples(members, view, mc_samples)
    return points, interval_scale(points, recent_vol, samples)


def known_history(history: pd.DataFrame, labels: pd.DataFrame, window: FitWindow) -> pd.DataFrame:
    """Rows of earlier fits (replay rows) that the fit at `window` may learn from: dated
    before its cutoff, with a label (`fwd_return`) that ends before the cutoff too."""
    rows = history[history["date"] < window.label_cutoff]
    known = labels[labels["label_end"] < window.label_cutoff][[*ROW_KEY, "fwd_return"]]
    return rows.merge(known, on=list(ROW_KEY), how="inner")


@dataclass
class EnsembleFit:
    """What one fit adds on top of its members: stacking weights and conformal quantiles.

    `stack` is None when the history was too short to fit it (equal weights are used);
    `conformal` is None when there was nothing to calibrate on (intervals are unbounded).
    `notes` say which fallbacks were taken and on how much history the rest was fitted.
    """

    window: FitWindow
    members: tuple[str, ...]
    levels: tuple[float, ...]
    stack: StackingEnsemble | None
    conformal: SplitConformal | None
    notes: list[str] = field(default_factory=list)
    history: dict[str, int] = field(default_factory=dict)

    def ensemble(self, points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(stacked ensemble rows, per-member contributions) from member points."""
        if self.stack is not None:
            return self.stack.predict(points)
        return combine(points, dict.fromkeys(self.members, 1.0 / len(self.members)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.to_dict(),
            "members": list(self.members),
            "levels": list(self.levels),
            "stack": None if self.stack is None else self.stack.to_dict(),
            "conformal": None if self.conformal is None else self.conformal.to_dict(),
            "notes": self.notes,
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> EnsembleFit:
        return cls(
            window=FitWindow.from_dict(state["window"]),
            members=tuple(state["members"]),
            levels=tuple(state["levels"]),
            stack=None if state["stack"] is None else StackingEnsemble.from_dict(state["stack"]),
            conformal=None
            if state["conformal"] is None
            else SplitConformal.from_dict(state["conformal"]),
            notes=list(state["notes"]),
            history=dict(state["history"]),
        )


def fit_ensemble(
    known: pd.DataFrame,
    window: FitWindow,
    members: Sequence[str],
    folds: pd.DataFrame,
    levels: tuple[float, ...] = (0.8, 0.9),
) -> EnsembleFit:
    """Stacking weights and conformal quantiles for a fit from `known` history rows
    (`known_history`: replay rows with `fold`, `scale` and `fwd_return`).

    `folds` gives each history fold's training window (`fold, train_start, train_end`), so
    the stacker can prove every row it fits on is out of fold.
    """
    members = tuple(members)
    notes: list[str] = []
    stack_rows = known[known["model"].isin(members) & (known["date"] >= window.stack_start)]
    complete = stack_rows.groupby(list(ROW_KEY))["model"].nunique() == len(members)
    stack_dates = complete[complete].index.get_level_values("date").nunique()
    stack = None
    if stack_dates < MIN_STACK_DATES:
        notes.append(
            f"stacking: {stack_dates} labelled out-of-sample dates with every member "
            f"(fewer than {MIN_STACK_DATES}); equal weights"
        )
    else:
        stack = StackingEnsemble().fit(stack_rows, folds)
        notes += [f"stacking h{h}: {why}" for h, why in stack.fallback.items()]
    calibration = known[known["date"] >= window.calibration_start]
    conformal = None
    if calibration.empty:
        notes.append("calibration: no labelled out-of-sample rows yet; intervals unbounded")
    else:
        conformal = SplitConformal(levels=levels).fit(calibration)
    return EnsembleFit(
        window=window,
        members=members,
        levels=levels,
        stack=stack,
        conformal=conformal,
        notes=notes,
        history={
            "stack_dates": int(stack_dates),
            "calibration_rows": len(calibration),
            "calibration_dates": int(calibration["date"].nunique()),
        },
    )


def forecast_rows(
    points: pd.DataFrame,
    scale: pd.DataFrame,
    fit: EnsembleFit,
    level: float,
    versions: Mapping[str, str],
    trained_through: Mapping[str, pd.Timestamp],
    fold: str,
    shadows: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Members and the stacked ensemble with conformal intervals at `level`, confidence,
    model version and `trained_through`, in the `REPLAY` contract (the predictions columns
    plus the fold that made them and the row's conformal scale).

    `shadows` are challengers' points (model `<family>@challenger`): they get their
    family's intervals and take no part in the ensemble. The ensemble's version is
    `versions[STACKED_ENSEMBLE]` and its `trained_through` the oldest of its members'; any
    other model without a version or a `trained_through` raises.
    """
    ensemble, _ = fit.ensemble(points)
    parts = [points, ensemble[points.columns]]
    if shadows is not None:
        parts.append(shadows[points.columns])
    rows = pd.concat(parts, ignore_index=True).merge(scale, on=list(ROW_KEY), how="left")
    if fit.conformal is not None:
        named = rows["model"]
        rows = fit.conformal.interval(rows.assign(model=map_by_value(named, base_model)), level)
        rows["model"] = named.to_numpy()
    else:
        rows = rows.assign(lower=-np.inf, upper=np.inf, interval_level=float(level))
    rows["confidence"] = confidence_from_width(
        rows["upper"] - rows["lower"], rows["horizon_vol"], rows["interval_level"]
    )
    members, models = set(fit.members), set(rows["model"].unique())
    unknown = sorted(
        (models - set(versions))
        | (models - members - {STACKED_ENSEMBLE} - set(trained_through))
        | (members - set(trained_through))
    )
    if unknown:
        raise ValueError(f"no model_version or trained_through for models {unknown}")
    through = {**trained_through, STACKED_ENSEMBLE: min(trained_through[m] for m in members)}
    rows["model_version"] = map_by_value(rows["model"], versions)
    rows["trained_through"] = map_by_value(rows["model"], through)
    rows["fold"] = fold
    return conform(rows[list(REPLAY.required)], REPLAY)


def map_by_value(column: pd.Series, mapping: Mapping[str, Any] | Any) -> np.ndarray:
    """`column.map(mapping)` (a dict or a function), evaluated once per distinct value: the
    model column of millions of rows holds a handful of names."""
    codes, uniques = pd.factorize(column)
    return pd.Index(uniques, dtype=object).map(mapping).take(codes).to_numpy()


def fold_windows(windows: Sequence[FitWindow]) -> pd.DataFrame:
    """`fold, train_start, train_end` of fits, for the stacker's out-of-fold check
    (train_end: the last date a training label reads)."""
    return pd.DataFrame(
        {
            "fold": [w.name for w in windows],
            "train_start": [w.train_start for w in windows],
            "train_end": [w.trained_through for w in windows],
        }
    )


def serve(
    champions: Mapping[str, Forecaster],
    challengers: Mapping[str, Forecaster],
    view: PanelData,
    recent_vol: pd.DataFrame,
    fit: EnsembleFit,
    level: float,
    versions: Mapping[str, str],
    trained_through: Mapping[str, pd.Timestamp],
    mc_samples: int = 0,
) -> pd.DataFrame:
    """The served predictions (`PREDICTIONS` contract) of the champions, their stacked
    ensemble and the challengers that shadow them, on the view's dates."""
    if tuple(sorted(champions)) != tuple(sorted(fit.members)):
        raise ValueError(
            f"the ensemble was fitted for members {sorted(fit.members)}, but the champions are "
            f"{sorted(champions)}: materialize serving_ensemble after the model assets"
        )
    points, scale = member_forecasts(champions, view, recent_vol, mc_samples)
    shadows = None
    if challengers:
        named = {challenger_model(family): model for family, model in challengers.items()}
        shadows = member_predictions(named, view)
    rows = forecast_rows(
        points, scale, fit, level, versions, trained_through, fold="serving", shadows=shadows
    )
    return conform(rows[list(PREDICTIONS.required)], PREDICTIONS)


# -- versions of what serves ----------------------------------------------------------------

ENSEMBLE = "ensemble"
ENSEMBLE_FILE = "ensemble.json"


def publish_ensemble(
    registry: ModelRegistry, fit: EnsembleFit, provenance: Mapping[str, str]
) -> tuple[ModelVersion, str]:
    """Log an ensemble fit as an MLflow run and register it as the new champion version of
    `finpipe-ensemble` (it is fitted on the newest labelled out-of-sample history, so a newer
    one always replaces the last); returns (the version, the run id)."""
    tags = {"finpipe.kind": "ensemble", **provenance}
    name = f"ensemble as of {fit.window.as_of.date()}"
    with registry.run(name, tags, {"members": ",".join(fit.members)}) as run_id:
        registry.log_metrics(run_id, fit.history)
        registry.log_bytes(
            run_id, ENSEMBLE_FILE, json.dumps(fit.to_dict(), indent=1).encode(), MODEL_ARTIFACTS
        )
    version = registry.register(ENSEMBLE, run_id, {**window_tags(fit.window), **provenance})
    registry.set_alias(ENSEMBLE, CHAMPION, version.version)
    return version, run_id


@dataclass
class ServedModels:
    """The champion of every served family, the challengers shadowing them, the champion
    ensemble fit, and each model's version and `trained_through` (by predictions `model`)."""

    champions: dict[str, Forecaster]
    challengers: dict[str, Forecaster]
    ensemble: EnsembleFit
    versions: dict[str, str]
    trained_through: dict[str, pd.Timestamp]


class MissingModelError(FileNotFoundError):
    """A served family or the ensemble has no champion version in the registry."""


def load_served(registry: ModelRegistry, families: Sequence[str]) -> ServedModels:
    """What serves now, from the registry's aliases; raises MissingModelError naming the
    asset to materialize when a configured family or the ensemble has no champion."""
    champions, challengers, versions, through = {}, {}, {}, {}
    for family in families:
        champion = registry.by_alias(family, CHAMPION)
        if champion is None:
            raise MissingModelError(
                f"{family} is in training.families but has no champion version in the "
                f"registry ({registry.tracking_uri}): materialize model_{family}"
            )
        champions[family] = load_version(registry, champion)
        versions[family] = champion.uri
        through[family] = champion.date("trained_through")
        challenger = registry.by_alias(family, CHALLENGER)
        if challenger is not None:
            name = challenger_model(family)
            challengers[family] = load_version(registry, challenger)
            versions[name] = challenger.uri
            through[name] = challenger.date("trained_through")
    version = registry.by_alias(ENSEMBLE, CHAMPION)
    if version is None:
        raise MissingModelError(
            f"the ensemble has no champion version in the registry ({registry.tracking_uri}): "
            "materialize serving_ensemble"
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.download(version, tmp)
        fit = EnsembleFit.from_dict(json.loads((folder / ENSEMBLE_FILE).read_text()))
    versions[STACKED_ENSEMBLE] = version.uri
    return ServedModels(champions, challengers, fit, versions, through)
