"""Feature selection on a model's training rows: variance, mutual information, then a model.

A model family chooses its columns with this when its `feature_selection` parameter asks
(fit on the training view only; the early-stopping tail and everything after it are never
read). The steps:

1. variance: drop columns that are (almost) constant or all missing on training rows;
2. mutual information with the target (scikit-learn `mutual_info_regression`), keeping the
   `mi_keep` best;
3. a model ranks the survivors, on a time split of the training rows (the fit part ends,
   by label_end, before the evaluation part starts): `method="permutation"` uses
   permutation importance of a histogram gradient-boosting model on the later part;
   `method="rfe"` uses recursive feature elimination with a ridge regression.

The chosen columns are the `max_features` best by the model with a positive score; when no
column scores above zero, the `max_features` best by mutual information.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_selection import RFE, mutual_info_regression
from sklearn.inspection import permutation_importance
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

SELECTION_METHODS = ("permutation", "rfe")


@dataclass
class SelectionResult:
    """The chosen columns, best first, and every candidate's scores.

    `scores` is indexed by feature with columns variance, mutual_info, model_score (NaN for
    features dropped before the model step), selected, and reason (why a column was dropped).
    """

    columns: list[str]
    scores: pd.DataFrame


def select_features(
    x: np.ndarray,
    y: np.ndarray,
    names: list[str] | tuple[str, ...],
    dates: np.ndarray,
    label_end: np.ndarray,
    *,
    method: str = "permutation",
    max_features: int = 30,
    mi_keep: int | None = None,
    variance_threshold: float = 1e-12,
    max_rows: int = 50_000,
    random_state: int = 0,
    n_threads: int = 1,
) -> SelectionResult:
    """Choose up to `max_features` of the columns `names` of training rows `x` [n, F] for
    predicting `y` [n]; `dates` and `label_end` (datetime64, per row) give the time split.

    `n_threads` caps the OpenMP threads of the gradient-boosting model (busy-waiting threads
    on a shared machine cost far more than they give on these sizes).
    """
    if method not in SELECTION_METHODS:
        raise ValueError(f"method must be one of {SELECTION_METHODS}, got {method!r}")
    keep = np.isfinite(y)
    x, y, dates, label_end = x[keep], y[keep], dates[keep], label_end[keep]
    if len(y) < 50:
        raise ValueError(f"only {len(y)} labelled training rows; use a longer training window")
    if len(y) > max_rows:
        pick = np.sort(np.random.default_rng(random_state).choice(len(y), max_rows, replace=False))
        x, y, dates, label_end = x[pick], y[pick], dates[pick], label_end[pick]
    x = np.array(x, dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    scores = pd.DataFrame(index=pd.Index(list(names), name="feature"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns
        scores["variance"] = np.nanvar(x, axis=0)
        medians = np.nan_to_num(np.nanmedian(x, axis=0))
    scores["mutual_info"] = np.nan
    scores["model_score"] = np.nan
    scores["reason"] = ""
    low_variance = ~(scores["variance"].to_numpy() > variance_threshold)
    scores.loc[low_variance, "reason"] = "variance at or below threshold on training rows"

    alive = np.nonzero(~low_variance)[0]
    filled = np.where(np.isnan(x), medians, x)
    mi = mutual_info_regression(filled[:, alive], y, random_state=random_state)
    scores.iloc[alive, scores.columns.get_loc("mutual_info")] = mi
    mi_keep = mi_keep or 2 * max_features
    order = alive[np.argsort(-mi, kind="stable")]
    survivors, cut = order[:mi_keep], order[mi_keep:]
    scores.iloc[cut, scores.columns.get_loc("reason")] = "mutual information below the kept best"

    with threadpool_limits(limits=n_threads):
        model_scores = (
            _permutation_scores(x[:, survivors], y, dates, label_end, random_state)
            if method == "permutation"
            else _rfe_scores(filled[:, survivors], y, max_features)
        )
    scores.iloc[survivors, scores.columns.get_loc("model_score")] = model_scores
    ranked = survivors[np.argsort(-model_scores, kind="stable")]
    chosen = [i for i in ranked if scores["model_score"].iloc[i] > 0][:max_features]
    if not chosen:  # no column helps the model on its own (common for daily returns)
        chosen = list(survivors[:max_features])
        scores.iloc[chosen, scores.columns.get_loc("reason")] = (
            "no model score above zero: kept by mutual information"
        )
    not_chosen = np.setdiff1d(survivors, chosen)
    scores.iloc[not_chosen, scores.columns.get_loc("reason")] = "model score not among the best"
    scores["selected"] = False
    scores.iloc[chosen, scores.columns.get_loc("selected")] = True
    return SelectionResult(columns=[names[i] for i in chosen], scores=scores)


def _permutation_scores(
    x: np.ndarray, y: np.ndarray, dates: np.ndarray, label_end: np.ndarray, random_state: int
) -> np.ndarray:
    """Permutation importance (mean drop in R^2) on the last fifth of the training dates,
    of a model fit on the rows whose labels end before that part starts."""
    unique = np.unique(dates)
    split = unique[int(len(unique) * 0.8)]
    fit = label_end < split
    evaluate = dates >= split
    if fit.sum() < 20 or evaluate.sum() < 20:
        raise ValueError("too few training rows for a fit/evaluate split; widen the window")
    model = HistGradientBoostingRegressor(
        max_iter=100, max_leaf_nodes=15, random_state=random_state
    )
    model.fit(x[fit], y[fit])
    result = permutation_importance(
        model, x[evaluate], y[evaluate], n_repeats=5, random_state=random_state
    )
    return result.importances_mean


def _rfe_scores(x: np.ndarray, y: np.ndarray, max_features: int) -> np.ndarray:
    """Score by RFE elimination order with a ridge regression: the last eliminated is best.

    Scores are (n_features - rank + 1) / n_features, so kept features score 1.
    """
    model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    rfe = RFE(
        model,
        n_features_to_select=min(max_features, x.shape[1]),
        importance_getter="named_steps.ridge.coef_",
    )
    rfe.fit(x, y)
    return (x.shape[1] - rfe.ranking_ + 1) / x.shape[1]
