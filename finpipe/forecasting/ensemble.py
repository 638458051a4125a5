"""Combining trained model families into one forecast.

`StackingEnsemble` is a non-negative ridge regression of realised returns on the members'
out-of-fold predictions, per horizon. `fit` takes the fold each prediction came from and
the training window of every fold, and refuses any row that falls inside its fold's
training window: the meta-model never sees a member's in-sample predictions. A horizon
where it would give every member zero weight (no member helped) gets equal weights
instead, so the ensemble never loses a horizon; `fallback` records which.

`combine` applies any weights and returns the ensemble prediction and, per row and member,
the contribution weight * prediction, which sum (with the intercept, if any) to the
ensemble prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE

INTERCEPT = "intercept"
OOF_COLUMNS = ("date", "ticker", "horizon", "model", "prediction", "fold", "fwd_return")
FOLD_COLUMNS = ("fold", "train_start", "train_end")

Weights = Mapping[str, float] | Mapping[int, Mapping[str, float]]


class InSampleError(ValueError):
    """A stacking row that is not provably out of fold for the member that predicted it."""


# -- applying weights ----------------------------------------------------------------------


def _weight_matrix(
    weights: Weights, models: list[str], horizons: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(per-horizon weight rows [n_horizons, M], unique horizons) for flat or per-horizon
    weights; models without a weight get zero."""
    unique = np.unique(horizons)
    per_horizon = bool(weights) and all(isinstance(v, Mapping) for v in weights.values())
    rows = []
    for h in unique:
        if per_horizon:
            if int(h) not in weights:
                raise KeyError(f"no weights for horizon {int(h)}; have {sorted(weights)}")
            table = weights[int(h)]
        else:
            table = weights
        rows.append([float(table.get(m, 0.0)) for m in models])
    return np.array(rows, np.float64).reshape(len(unique), len(models)), unique


def combine(
    member_predictions: pd.DataFrame,
    weights: Weights,
    intercept: Mapping[int, float] | None = None,
    name: str = STACKED_ENSEMBLE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weighted combination of members' predictions, with per-row contributions.

    `member_predictions`: `date, ticker, horizon, model, prediction`. `weights`: one weight
    per model for every horizon, or {horizon: {model: weight}}; models without a weight are
    ignored. Where some members lack a row, the present members' weights are scaled up so
    they keep the total weight. Returns (ensemble `date, ticker, horizon, model,
    prediction`, contributions `date, ticker, horizon, model, weight, prediction,
    contribution`), contributions summing to the ensemble prediction (an `intercept` row
    per prediction when `intercept` is given).
    """
    weighted = set(_flat_models(weights))
    if not weighted:
        raise ValueError("no member weights given")
    rows = member_predictions[member_predictions["model"].isin(weighted)]
    if rows.duplicated([*ROW_KEY, "model"]).any():
        raise ValueError("member predictions have duplicate (date, ticker, horizon, model) rows")
    wide = rows.pivot(index=list(ROW_KEY), columns="model", values="prediction")
    models = list(wide.columns)
    points = wide.to_numpy(np.float64)
    horizon_of_row = wide.index.get_level_values("horizon").to_numpy()
    table, unique = _weight_matrix(weights, models, horizon_of_row)
    w = table[np.searchsorted(unique, horizon_of_row)]
    present = np.isfinite(points)
    with np.errstate(divide="ignore", invalid="ignore"):
        rescale = w.sum(axis=1) / np.where(present, w, 0.0).sum(axis=1)
        effective = w * rescale[:, None]
        contrib = np.where(present, effective * points, np.nan)
    base = np.zeros(len(wide))
    if intercept is not None:
        base = np.array([float(intercept.get(int(h), 0.0)) for h in horizon_of_row])
    total = np.nansum(contrib, axis=1) + base
    ok = present.any(axis=1) & np.isfinite(rescale)
    keys = wide.index.to_frame(index=False)
    ensemble = keys.assign(model=name, prediction=total)[ok].reset_index(drop=True)

    n, m = points.shape
    long = pd.DataFrame(
        {
            "date": np.repeat(keys["date"].to_numpy(), m),
            "ticker": np.repeat(keys["ticker"].to_numpy(), m),
            "horizon": np.repeat(keys["horizon"].to_numpy(), m),
            "model": np.tile(np.array(models, dtype=object), n),
            "weight": effective.reshape(-1),
            "prediction": points.reshape(-1),
            "contribution": contrib.reshape(-1),
        }
    )
    long = long[present.reshape(-1) & np.repeat(ok, m)]
    if intercept is not None:
        extra = keys[ok].assign(
            model=INTERCEPT, weight=1.0, prediction=base[ok], contribution=base[ok]
        )
        long = pd.concat([long, extra], ignore_index=True)
    contributions = long.sort_values([*ROW_KEY, "model"], kind="mergesort").reset_index(drop=True)
    return ensemble, contributions


def _flat_models(weights: Weights) -> list[str]:
    if weights and all(isinstance(v, Mapping) for v in weights.values()):
        return sorted({m for table in weights.values() for m in table})
    return list(weights)


# -- stacking ------------------------------------------------------------------------------


def check_out_of_fold(oof: pd.DataFrame, folds: pd.DataFrame) -> None:
    """Raise InSampleError unless every row of `oof` lies outside its fold's training window.

    `folds` has one row per training segment: `fold, train_start, train_end`, where
    train_start is the first training sample date and train_end the last date any training
    label reads (its `label_end`). A row whose date is inside [train_start, train_end] of
    its own fold was predicted by a member that saw that period's outcomes; a row whose
    fold is not described cannot be shown to be out of fold. Both are refused.
    """
    for frame, columns, what in ((oof, OOF_COLUMNS, "oof"), (folds, FOLD_COLUMNS, "folds")):
        missing = [c for c in columns if c not in frame]
        if missing:
            raise InSampleError(f"{what} frame lacks columns {missing}; needs {list(columns)}")
    unknown = sorted(set(oof["fold"].unique()) - set(folds["fold"].unique()))
    if unknown:
        raise InSampleError(
            f"folds {unknown[:5]} have no training window in `folds`, so their rows cannot be "
            "shown to be out of fold"
        )
    rows = oof[["fold", "date"]].drop_duplicates().merge(folds, on="fold")
    inside = (rows["date"] >= rows["train_start"]) & (rows["date"] <= rows["train_end"])
    if inside.any():
        first = rows[inside].iloc[0]
        raise InSampleError(
            f"{int(inside.sum())} (fold, date) pairs fall inside their fold's training window, "
            f"e.g. fold {first['fold']} date {pd.Timestamp(first['date']).date()} within "
            f"[{pd.Timestamp(first['train_start']).date()}, "
            f"{pd.Timestamp(first['train_end']).date()}]; stack only out-of-fold predictions"
        )


@dataclass
class StackingEnsemble:
    """Per-horizon ridge regression of realised returns on members' out-of-fold predictions.

    Each member's predictions and the target are divided by their standard deviation on the
    fitting rows, so `alpha` (the ridge penalty per row) shrinks every coefficient alike:
    with uncorrelated members a coefficient is shrunk by 1 / (1 + alpha). `positive` keeps
    coefficients non-negative (correlated members otherwise get offsetting weights that do
    not survive out of sample). No intercept by default: members already predict the
    return's level, and an intercept fit on a few years of returns mostly learns their drift.
    """

    alpha: float = 0.1
    positive: bool = True
    fit_intercept: bool = False
    models: tuple[str, ...] = ()
    coefficients: dict[int, dict[str, float]] = field(default_factory=dict)
    intercepts: dict[int, float] = field(default_factory=dict)
    n_rows: dict[int, int] = field(default_factory=dict)
    fallback: dict[int, str] = field(default_factory=dict)

    def fit(self, oof: pd.DataFrame, folds: pd.DataFrame) -> Self:
        """Fit on out-of-fold predictions (`OOF_COLUMNS`) with their folds' training windows
        (`FOLD_COLUMNS`); raises InSampleError on any in-sample row (see check_out_of_fold).
        Rows where any member lacks a prediction are left out."""
        check_out_of_fold(oof, folds)
        if oof.duplicated([*ROW_KEY, "model"]).any():
            raise ValueError("oof has duplicate (date, ticker, horizon, model) rows across folds")
        wide = oof.pivot(index=list(ROW_KEY), columns="model", values="prediction")
        target = oof.groupby(list(ROW_KEY), sort=True)["fwd_return"].first().reindex(wide.index)
        self.models = tuple(wide.columns)
        usable = wide.notna().all(axis=1) & np.isfinite(target)
        horizons = wide.index.get_level_values("horizon")
        self.coefficients, self.intercepts, self.n_rows, self.fallback = {}, {}, {}, {}
        for h in np.unique(horizons):
            keep = usable & (horizons == h)
            x = wide[keep].to_numpy(np.float64)
            y = target[keep].to_numpy(np.float64)
            if len(y) <= len(self.models):
                raise ValueError(
                    f"horizon {h}: {len(y)} complete out-of-fold rows for {len(self.models)} "
                    "members; need more folds or a longer history"
                )
            x_sd = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
            y_sd = y.std() if y.std() > 0 else 1.0
            ridge = Ridge(
                alpha=self.alpha * len(y),
                positive=self.positive,
                fit_intercept=self.fit_intercept,
            ).fit(x / x_sd, y / y_sd)
            coef = ridge.coef_ * y_sd / x_sd
            if not (coef > 0).any():
                coef = np.full(len(self.models), 1.0 / len(self.models))
                self.fallback[int(h)] = "no member had positive weight: equal weights"
            self.coefficients[int(h)] = dict(zip(self.models, map(float, coef), strict=True))
            self.intercepts[int(h)] = float(ridge.intercept_) * y_sd
            self.n_rows[int(h)] = len(y)
        return self

    def predict(self, member_predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(ensemble predictions, contributions), as `combine` returns them."""
        if not self.coefficients:
            raise ValueError("StackingEnsemble is not fitted; call fit() first")
        intercept = self.intercepts if self.fit_intercept else None
        return combine(member_predictions, self.coefficients, intercept)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return {
            "alpha": self.alpha,
            "positive": self.positive,
            "fit_intercept": self.fit_intercept,
            "models": list(self.models),
            "coefficients": {str(h): c for h, c in self.coefficients.items()},
            "intercepts": {str(h): v for h, v in self.intercepts.items()},
            "n_rows": {str(h): v for h, v in self.n_rows.items()},
            "fallback": {str(h): v for h, v in self.fallback.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StackingEnsemble:
        return cls(
            alpha=state["alpha"],
            positive=state["positive"],
            fit_intercept=state["fit_intercept"],
            models=tuple(state["models"]),
            coefficients={int(h): c for h, c in state["coefficients"].items()},
            intercepts={int(h): v for h, v in state["intercepts"].items()},
            n_rows={int(h): v for h, v in state["n_rows"].items()},
            fallback={int(h): v for h, v in state["fallback"].items()},
        )
