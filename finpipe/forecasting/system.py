"""From trained members to calibrated ensemble predictions: the step the predictions asset runs.

Three windows in time order keep every fitted piece out of sample for the next one:

1. members train on the research period (`models.fitting`);
2. the stacking meta-model fits on the research period's validation tail, which no member
   trained on (one out-of-fold holdout whose training window is the members' own);
3. split-conformal calibration fits on the first `calibration_days` after `train_end`,
   for the members and both ensembles, with the scale used at prediction time
   (recent volatility and member dispersion, Monte Carlo dropout included).

Coverage is then measured on the labelled dates after the calibration window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finpipe.core.keys import ROW_KEY, WEIGHTED_ENSEMBLE
from finpipe.forecasting.ensemble import StackingEnsemble, combine, validation_weights
from finpipe.forecasting.uncertainty import SplitConformal, coverage_table, interval_scale
from finpipe.models import Forecaster, PanelData


def member_predictions(models: Mapping[str, Forecaster], view: PanelData) -> pd.DataFrame:
    """Every member's point predictions on a view, with a `model` column."""
    return pd.concat(
        [
            model.predict(view)[[*ROW_KEY, "prediction"]].assign(model=name)
            for name, model in models.items()
        ],
        ignore_index=True,
    )


def mc_dropout_samples(
    models: Mapping[str, Forecaster], view: PanelData, n: int, seed: int = 0
) -> pd.DataFrame | None:
    """Monte Carlo dropout samples of the PyTorch members (None when there are none)."""
    frames = [
        model.predict_samples(view, n=n, seed=seed).assign(model=name)
        for name, model in models.items()
        if n > 0 and getattr(model, "module", None) is not None
    ]
    return pd.concat(frames, ignore_index=True) if frames else None


def holdout_fold(train: PanelData) -> pd.DataFrame:
    """The members' training window as the one fold of the stacking fit."""
    ends = train.label_end[train.sample_mask]
    return pd.DataFrame(
        {
            "fold": [0],
            "train_start": [train.sample_dates()[0]],
            "train_end": [pd.Timestamp(int(ends[ends > 0].max()))],
        }
    )


@dataclass
class ForecastSystem:
    """Members, the two ensembles and the conformal calibration that wraps them all."""

    members: dict[str, Forecaster]
    stack: StackingEnsemble
    weights: dict[str, float]
    conformal: SplitConformal
    recent_vol: pd.DataFrame
    mc_samples: int

    def point_predictions(self, view: PanelData) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(members + both ensembles, per-member contributions to the stacked ensemble,
        interval scale) on a view."""
        members = member_predictions(self.members, view)
        stacked, contributions = self.stack.predict(members)
        weighted, _ = combine(members, self.weights, name=WEIGHTED_ENSEMBLE)
        samples = mc_dropout_samples(self.members, view, self.mc_samples)
        scale = interval_scale(members, self.recent_vol, samples)
        points = pd.concat([members, stacked[members.columns], weighted[members.columns]])
        return points.reset_index(drop=True), contributions, scale


def fit_forecast_system(
    members: Mapping[str, Forecaster],
    train: PanelData,
    valid: PanelData,
    calibration: PanelData,
    recent_vol: pd.DataFrame,
    levels: tuple[float, ...] = (0.8, 0.9),
    mc_samples: int = 10,
) -> ForecastSystem:
    """Fit the stacking meta-model on `valid` (out of fold) and conformal on `calibration`."""
    oof = member_predictions(members, valid).merge(valid.labels_frame(), on=list(ROW_KEY))
    stack = StackingEnsemble().fit(oof.assign(fold=0), holdout_fold(train))
    metrics = {name: model.metrics for name, model in members.items()}
    weights = validation_weights(metrics, method="rank_ic")
    system = ForecastSystem(
        dict(members), stack, weights, SplitConformal(levels=levels), recent_vol, mc_samples
    )
    points, _, scale = system.point_predictions(calibration)
    rows = points.merge(scale, on=list(ROW_KEY)).merge(calibration.labels_frame(), on=list(ROW_KEY))
    system.conformal.fit(rows)
    return system


def evaluate_coverage(
    system: ForecastSystem, evaluation: PanelData, levels: tuple[float, ...]
) -> pd.DataFrame:
    """PICP and normalised width per model, horizon and level on labelled rows of `evaluation`."""
    points, _, scale = system.point_predictions(evaluation)
    rows = points.merge(scale, on=list(ROW_KEY)).merge(evaluation.labels_frame(), on=list(ROW_KEY))
    tables = []
    for level in levels:
        with_interval = system.conformal.interval(rows, level)
        tables.append(coverage_table(with_interval, target="fwd_return"))
    return pd.concat(tables, ignore_index=True)


def calibration_windows(
    panel: PanelData, train_end: pd.Timestamp, calibration_days: int
) -> tuple[PanelData, PanelData]:
    """(calibration view: first `calibration_days` dates after train_end; evaluation view:
    the rest), both restricted to samples with labels."""
    after = panel.dates[panel.dates > pd.Timestamp(train_end)]
    if len(after) <= calibration_days:
        raise ValueError(
            f"only {len(after)} dates after train_end {pd.Timestamp(train_end).date()}; "
            f"calibration needs more than {calibration_days}"
        )
    split = after[calibration_days]
    labelled = np.isfinite(panel.targets).any(axis=2)
    calibration = panel.select(after[0], after[calibration_days - 1]).view(labelled)
    return calibration, panel.select(split).view(labelled)


def every_nth_date(view: PanelData, n: int) -> PanelData:
    """The view on every `n`-th of its sample dates (coverage on a thinned window is cheaper
    and, the rows being out of sample, no less honest)."""
    rows = np.flatnonzero(view.sample_mask.any(axis=1))
    keep = np.zeros(len(view.dates), bool)
    keep[rows[:: max(n, 1)]] = True
    return view.view(keep[:, None])
