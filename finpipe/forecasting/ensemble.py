"""Combining trained model families into one forecast.

`StackingEnsemble` weighs the members per horizon from their out-of-fold predictions:
non-negative weights on standardised predictions, shrunk toward equal weights by an amount
chosen by blocked cross-validation over dates. `fit` takes the fold each prediction came
from and the training window of every fold, and refuses any row that falls inside its
fold's training window: the meta-model never sees a member's in-sample predictions. A
horizon where no member earns a positive weight gets equal weights, so the ensemble never
loses a horizon; `fallback` records which.

`combine` applies any weights and returns the ensemble prediction and, per row and member,
the contribution weight * prediction, which sum to the ensemble prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.linear_model import Ridge

from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE

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
    name: str = STACKED_ENSEMBLE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Weighted combination of members' predictions, with per-row contributions.

    `member_predictions`: `date, ticker, horizon, model, prediction`. `weights`: one weight
    per model for every horizon, or {horizon: {model: weight}}; models without a weight are
    ignored. Where some members lack a row, the present members' weights are scaled up so
    they keep the total weight. Returns (ensemble `date, ticker, horizon, model,
    prediction`, contributions `date, ticker, horizon, model, weight, prediction,
    contribution`), contributions summing to the ensemble prediction.
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
    total = np.nansum(contrib, axis=1)
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


SHRINKAGE = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class StackingEnsemble:
    """Per-horizon convex weights on the members' out-of-fold predictions, shrunk toward
    equal weights by an amount chosen out of fold, so the stack cannot collapse onto one
    weak member on the strength of a lucky stretch.

    Per horizon, each member's prediction is divided by its standard deviation on the
    fitting rows, so weights compare like with like. A non-negative ridge regression of the
    standardised realised return on them (`alpha` per row) gives raw weights, normalised to
    sum to one (all zero: equal weights); the weights used are (1 - s) x raw + s x equal for
    the shrinkage s in `shrinkage` that scores best in blocked cross-validation over dates:
    the fitting dates are cut into `cv_blocks` contiguous blocks, and each block is scored
    (mean daily rank IC of the weighted standardised predictions) with raw weights fitted on
    the other blocks, less `horizon` dates either side of it, whose labels overlap it. Ties
    go to more shrinkage. Applied to raw predictions, the coefficients are weight / sd
    scaled by the weighted mean sd, so the ensemble keeps the members' scale.
    """

    alpha: float = 0.1
    shrinkage: tuple[float, ...] = SHRINKAGE
    cv_blocks: int = 4
    models: tuple[str, ...] = ()
    weights: dict[int, dict[str, float]] = field(default_factory=dict)
    coefficients: dict[int, dict[str, float]] = field(default_factory=dict)
    chosen_shrinkage: dict[int, float] = field(default_factory=dict)
    cv_scores: dict[int, dict[str, float]] = field(default_factory=dict)
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
        for name in ("weights", "coefficients", "chosen_shrinkage", "cv_scores", "n_rows"):
            setattr(self, name, {})
        self.fallback = {}
        for h in np.unique(horizons):
            keep = usable & (horizons == h)
            x = wide[keep].to_numpy(np.float64)
            y = target[keep].to_numpy(np.float64)
            dates = wide[keep].index.get_level_values("date").to_numpy()
            if len(y) <= len(self.models):
                raise ValueError(
                    f"horizon {h}: {len(y)} complete out-of-fold rows for {len(self.models)} "
                    "members; need more folds or a longer history"
                )
            sd = x.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            z = x / sd
            raw = self._raw_weights(z, y)
            if not (raw > 0).any():
                self.fallback[int(h)] = "no member had positive weight: equal weights"
            scores = self._cross_validated(z, y, dates, int(h))
            best = max(scores.items(), key=lambda item: (round(item[1], 6), item[0]))[0]
            weights = self._shrunk(raw, best)
            scale = float(weights @ sd)
            self.weights[int(h)] = dict(zip(self.models, map(float, weights), strict=True))
            self.coefficients[int(h)] = dict(
                zip(self.models, map(float, weights / sd * scale), strict=True)
            )
            self.chosen_shrinkage[int(h)] = float(best)
            self.cv_scores[int(h)] = {f"{k:g}": float(v) for k, v in scores.items()}
            self.n_rows[int(h)] = len(y)
        return self

    def _raw_weights(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Non-negative ridge weights of standardised members, normalised to sum to one
        (zeros when no member gets a positive weight)."""
        y_sd = y.std() if y.std() > 0 else 1.0
        coef = (
            Ridge(alpha=self.alpha * len(y), positive=True, fit_intercept=False)
            .fit(z, y / y_sd)
            .coef_
        )
        return coef / coef.sum() if coef.sum() > 0 else np.zeros(len(coef))

    def _shrunk(self, raw: np.ndarray, amount: float) -> np.ndarray:
        equal = np.full(len(raw), 1.0 / len(raw))
        return equal if raw.sum() == 0 else (1.0 - amount) * raw + amount * equal

    def _cross_validated(
        self, z: np.ndarray, y: np.ndarray, dates: np.ndarray, horizon: int
    ) -> dict[float, float]:
        """Mean held-out rank IC of each shrinkage over contiguous blocks of dates."""
        unique = np.unique(dates)
        blocks = np.array_split(np.arange(len(unique)), min(self.cv_blocks, len(unique)))
        position = np.searchsorted(unique, dates)
        scores: dict[float, list[float]] = {s: [] for s in self.shrinkage}
        for block in blocks:
            held = (position >= block[0]) & (position <= block[-1])
            gap = (position >= block[0] - horizon) & (position <= block[-1] + horizon)
            fit = ~gap
            if fit.sum() <= z.shape[1] or not held.any():
                continue
            raw = self._raw_weights(z[fit], y[fit])
            cross_sections = CrossSections(position[held])
            y_ranks = cross_sections.ranks(y[held])
            for amount in self.shrinkage:
                combined = cross_sections.ranks(z[held] @ self._shrunk(raw, amount))
                scores[amount].append(mean_row_correlation(combined, y_ranks))
        return {s: float(np.nanmean(v)) if v else 0.0 for s, v in scores.items()}

    def predict(self, member_predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(ensemble predictions, contributions), as `combine` returns them."""
        if not self.coefficients:
            raise ValueError("StackingEnsemble is not fitted; call fit() first")
        return combine(member_predictions, self.coefficients)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        per_horizon = ("weights", "coefficients", "chosen_shrinkage", "cv_scores", "n_rows")
        return {
            "alpha": self.alpha,
            "shrinkage": list(self.shrinkage),
            "cv_blocks": self.cv_blocks,
            "models": list(self.models),
            **{k: {str(h): v for h, v in getattr(self, k).items()} for k in per_horizon},
            "fallback": {str(h): v for h, v in self.fallback.items()},
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StackingEnsemble:
        per_horizon = ("weights", "coefficients", "chosen_shrinkage", "cv_scores", "n_rows")
        return cls(
            alpha=state["alpha"],
            shrinkage=tuple(state["shrinkage"]),
            cv_blocks=state["cv_blocks"],
            models=tuple(state["models"]),
            **{k: {int(h): v for h, v in state[k].items()} for k in per_horizon},
            fallback={int(h): v for h, v in state["fallback"].items()},
        )


class CrossSections:
    """Rows grouped by date as a (dates x names) matrix, to rank many scores of the same
    rows per date quickly (the stacker's cross-validation ranks one per shrinkage)."""

    def __init__(self, date_position: np.ndarray) -> None:
        self.row = np.unique(date_position, return_inverse=True)[1]
        counts = np.bincount(self.row)
        order = np.argsort(self.row, kind="stable")
        self.slot = np.empty(len(self.row), np.int64)
        self.slot[order] = np.arange(len(self.row)) - np.repeat(np.cumsum(counts) - counts, counts)
        self.shape = (len(counts), int(counts.max()) if len(counts) else 0)

    def ranks(self, values: np.ndarray) -> np.ndarray:
        """Average ranks of `values` within each date (NaN where a date has no such row)."""
        matrix = np.full(self.shape, np.nan)
        matrix[self.row, self.slot] = values
        return rankdata(matrix, axis=1, nan_policy="omit")


def mean_row_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the Pearson correlation of two (rows x names) matrices, over the
    names both have; rows with fewer than two names or no variation are left out."""
    both = np.isfinite(a) & np.isfinite(b)
    n = both.sum(axis=1)
    a, b = np.where(both, a, 0.0), np.where(both, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        da = np.where(both, a - a.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        db = np.where(both, b - b.sum(axis=1, keepdims=True) / n[:, None], 0.0)
        corr = (da * db).sum(axis=1) / np.sqrt((da**2).sum(axis=1) * (db**2).sum(axis=1))
    usable = (n >= 2) & np.isfinite(corr)
    return float(corr[usable].mean()) if usable.any() else float("nan")
