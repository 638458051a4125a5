"""Combining trained model families into one forecast.

Three ways to weight members, all producing weights that `combine` applies:

* `validation_weights`: from each member's validation metrics (rank IC or inverse MSE),
  with a floor so no member is dropped on one noisy validation window.
* `StackingEnsemble`: a non-negative ridge regression of realised returns on the members'
  out-of-fold predictions, per horizon. `fit` takes the fold each prediction came from and
  the training window of every fold, and refuses any row that falls inside its fold's
  training window: the meta-model never sees a member's in-sample predictions.
* `updated_weights`: prior weights blended with an exponentially weighted rank IC of the
  members' recent realised predictions (from prediction history).

`combine` returns the ensemble prediction and, per row and member, the contribution
weight * prediction, which sum (with the intercept, if any) to the ensemble prediction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge

from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE
from finpipe.core.metrics import daily_rank_ic

INTERCEPT = "intercept"
OOF_COLUMNS = ("date", "ticker", "horizon", "model", "prediction", "fold", "fwd_return")
FOLD_COLUMNS = ("fold", "train_start", "train_end")

Weights = Mapping[str, float] | Mapping[int, Mapping[str, float]]


class InSampleError(ValueError):
    """A stacking row that is not provably out of fold for the member that predicted it."""


# -- weights from validation and from realised performance ---------------------------------


def apply_floor(shares: Mapping[str, float], floor: float) -> dict[str, float]:
    """Weights proportional to `shares`, none below `floor`, summing to one.

    Members below the floor are raised to it and the rest scaled down proportionally
    (water-filling), so weights that already satisfy the floor are returned unchanged.
    Non-positive or non-finite shares count as zero; all-zero shares give equal weights.
    """
    names = list(shares)
    if not names:
        raise ValueError("no members to weight")
    if floor < 0 or floor * len(names) > 1.0 + 1e-12:
        raise ValueError(f"floor {floor} must be in [0, 1/{len(names)}] for {len(names)} members")
    s = np.array([shares[n] for n in names], np.float64)
    s = np.where(np.isfinite(s) & (s > 0), s, 0.0)
    s = s / s.sum() if s.sum() > 0 else np.full(len(s), 1.0 / len(s))
    fixed = np.zeros(len(s), bool)
    while True:
        free = s[~fixed].sum()
        scale = (1.0 - floor * fixed.sum()) / free if free > 0 else 0.0
        below = ~fixed & (scale * s < floor)
        if not below.any():
            break
        fixed |= below
    weights = np.where(fixed, floor, scale * s)
    return dict(zip(names, (float(w) for w in weights / weights.sum()), strict=True))


def validation_weights(
    member_metrics: Mapping[str, Mapping[str, float]],
    method: Literal["rank_ic", "inverse_loss"] = "rank_ic",
    floor: float = 0.05,
    horizons: Sequence[int] | None = None,
) -> dict[str, float]:
    """Member weights from validation metrics (`Forecaster.metrics`), floored and normalised.

    rank_ic: proportional to max(rank_ic_h<h>, 0). inverse_loss: proportional to
    1 / mse_h<h> (MSE in return units, comparable across families, unlike each family's
    own training loss). Shares are computed per horizon and averaged over `horizons`
    (default: every horizon the first member reports); pass one horizon for per-horizon
    weights.
    """
    if method not in ("rank_ic", "inverse_loss"):
        raise ValueError(f"method must be 'rank_ic' or 'inverse_loss', got {method!r}")
    names = list(member_metrics)
    if not names:
        raise ValueError("no members to weight")
    key = "rank_ic" if method == "rank_ic" else "mse"
    if horizons is None:
        pattern = re.compile(rf"^{key}_h(\d+)$")
        found = (pattern.match(k) for k in member_metrics[names[0]])
        horizons = sorted(int(m.group(1)) for m in found if m)
    if not horizons:
        raise ValueError(f"member metrics hold no {key}_h<horizon> values")
    shares = np.zeros(len(names))
    for h in horizons:
        metric = f"{key}_h{h}"
        missing = [n for n in names if metric not in member_metrics[n]]
        if missing:
            raise KeyError(
                f"members {missing} have no {metric!r}; metrics come from Forecaster.fit with a "
                "validation view that has labels at that horizon"
            )
        values = np.array([member_metrics[n][metric] for n in names], np.float64)
        with np.errstate(divide="ignore"):
            score = np.maximum(values, 0.0) if method == "rank_ic" else 1.0 / values
        score = np.where(np.isfinite(score) & (score > 0), score, 0.0)
        total = score.sum()
        shares += score / total if total > 0 else np.full(len(names), 1.0 / len(names))
    return apply_floor(dict(zip(names, shares / len(horizons), strict=True)), floor)


def updated_weights(
    prior: Mapping[str, float],
    realised: pd.DataFrame,
    halflife: float = 20.0,
    prior_weight: float = 0.5,
    floor: float = 0.05,
) -> dict[str, float]:
    """Prior weights blended with the members' recent realised rank IC.

    `realised` has `date, ticker, horizon, model, prediction, realised_return` (prediction
    history). Per member, daily rank ICs (averaged over horizons) are weighted by
    0.5 ** (age / halflife), age counted in prediction dates back from the latest; the
    recent share is proportional to max(that mean, 0) and shares the prior mass of the
    members that have realised rows. weights = floor(prior_weight * prior +
    (1 - prior_weight) * recent). A member with no realised rows keeps its prior share.
    """
    if not 0.0 <= prior_weight <= 1.0:
        raise ValueError(f"prior_weight must be in [0, 1], got {prior_weight}")
    if halflife <= 0:
        raise ValueError(f"halflife must be positive, got {halflife}")
    names = list(prior)
    p = np.array([prior[n] for n in names], np.float64)
    p = p / p.sum()
    rows = realised[realised["model"].isin(names) & np.isfinite(realised["realised_return"])]
    dates = np.sort(rows["date"].unique())
    scores: dict[str, list[pd.Series]] = {}
    for (model, horizon), part in rows.groupby(["model", "horizon"], sort=True):
        ic = daily_rank_ic(part["prediction"], part["realised_return"], part["date"])
        if len(ic):
            scores.setdefault(model, []).append(ic.rename(horizon))
    recent = p.copy()
    observed = np.array([n in scores for n in names])
    if observed.any():
        ew = np.zeros(len(names))
        for i, name in enumerate(names):
            if not observed[i]:
                continue
            daily = pd.concat(scores[name], axis=1).mean(axis=1)
            age = len(dates) - 1 - np.searchsorted(dates, daily.index.values)
            decay = 0.5 ** (age / halflife)
            ew[i] = max(float(np.sum(decay * daily.to_numpy()) / np.sum(decay)), 0.0)
        mass = p[observed].sum()
        if ew[observed].sum() > 0:
            recent[observed] = mass * ew[observed] / ew[observed].sum()
    blended = prior_weight * p + (1.0 - prior_weight) * recent
    return apply_floor(dict(zip(names, blended, strict=True)), floor)


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
        self.coefficients, self.intercepts, self.n_rows = {}, {}, {}
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
        )
