"""Feature selection on training rows only: variance, mutual information, then a model.

Training rows are the (date, ticker) rows whose label is fully known by `train_end`
(label_end <= train_end), so no label reads past the training window. The steps:

1. variance: drop columns that are (almost) constant or all missing on training rows;
2. mutual information with the label (scikit-learn `mutual_info_regression`), keeping the
   `mi_keep` best;
3. a model ranks the survivors, on a time split of the training rows (the fit part ends,
   by label_end, before the evaluation part starts): `method="permutation"` uses
   permutation importance of a histogram gradient-boosting model on the later part;
   `method="rfe"` uses recursive feature elimination with a ridge regression.

The chosen columns are the `max_features` best by the model with a positive score.
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

from finpipe.core.keys import FEATURE_KEY


@dataclass
class SelectionResult:
    """The chosen columns, best first, and every candidate's scores.

    `scores` is indexed by feature with columns variance, mutual_info, model_score (NaN for
    features dropped before the model step), selected, and reason (why a column was dropped).
    """

    columns: list[str]
    scores: pd.DataFrame


def training_rows(
    features: pd.DataFrame, labels: pd.DataFrame, horizon: int, train_end: str | pd.Timestamp
) -> pd.DataFrame:
    """Features joined to the horizon's labels, on rows whose label ends by train_end."""
    train_end = pd.Timestamp(train_end)
    chosen = labels.loc[
        (labels["horizon"] == horizon) & (labels["label_end"] <= train_end),
        ["date", "ticker", "fwd_return", "label_end"],
    ]
    rows = features.loc[features["date"] <= train_end].merge(chosen, on=list(FEATURE_KEY))
    return rows.sort_values(["date", "ticker"], kind="mergesort").reset_index(drop=True)


def select_features(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    horizon: int,
    train_end: str | pd.Timestamp,
    method: str = "permutation",
    max_features: int = 30,
    mi_keep: int | None = None,
    variance_threshold: float = 1e-12,
    max_rows: int = 50_000,
    random_state: int = 0,
    n_threads: int = 1,
) -> SelectionResult:
    """Choose up to `max_features` feature columns for predicting the horizon's labels.

    `n_threads` caps the OpenMP threads of the gradient-boosting model (busy-waiting threads
    on a shared machine cost far more than they give on these sizes).
    """
    if method not in ("permutation", "rfe"):
        raise ValueError(f"method must be 'permutation' or 'rfe', got {method!r}")
    rows = training_rows(features, labels, horizon, train_end)
    if len(rows) < 50:
        raise ValueError(
            f"only {len(rows)} training rows with horizon {horizon} labels ending by "
            f"{pd.Timestamp(train_end).date()}; move train_end later"
        )
    if len(rows) > max_rows:
        keep = np.random.default_rng(random_state).choice(len(rows), max_rows, replace=False)
        rows = rows.iloc[np.sort(keep)].reset_index(drop=True)
    candidates = [c for c in features.columns if c not in FEATURE_KEY]
    x = np.array(rows[candidates].to_numpy(dtype=np.float64), copy=True)
    x[~np.isfinite(x)] = np.nan
    y = rows["fwd_return"].to_numpy(dtype=np.float64)
    scores = pd.DataFrame(index=pd.Index(candidates, name="feature"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns
        scores["variance"] = np.nanvar(x, axis=0)
        medians = np.nanmedian(x, axis=0)
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
            _permutation_scores(x[:, survivors], y, rows, random_state)
            if method == "permutation"
            else _rfe_scores(filled[:, survivors], y, max_features)
        )
    scores.iloc[survivors, scores.columns.get_loc("model_score")] = model_scores
    ranked = survivors[np.argsort(-model_scores, kind="stable")]
    chosen = [i for i in ranked if scores["model_score"].iloc[i] > 0][:max_features]
    not_chosen = np.setdiff1d(survivors, chosen)
    scores.iloc[not_chosen, scores.columns.get_loc("reason")] = "model score not among the best"
    scores["selected"] = False
    scores.iloc[chosen, scores.columns.get_loc("selected")] = True
    return SelectionResult(columns=[candidates[i] for i in chosen], scores=scores)


def _permutation_scores(x, y, rows: pd.DataFrame, random_state: int) -> np.ndarray:
    """Permutation importance (mean drop in R^2) on the last fifth of the training dates,
    of a model fit on the rows whose labels end before that part starts."""
    dates = np.sort(rows["date"].unique())
    split = dates[int(len(dates) * 0.8)]
    fit = (rows["label_end"] < split).to_numpy()
    evaluate = (rows["date"] >= split).to_numpy()
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


def _rfe_scores(x, y, max_features: int) -> np.ndarray:
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
