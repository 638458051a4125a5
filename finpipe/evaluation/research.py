"""Decisions made on the research period only: how each model family is fed.

For each family, `decide_inputs` compares variants of the inputs every family takes: the
training target (raw forward return, or per date demeaned, z-scored or ranked across
tickers), feature scaling (time-series or per-date cross-sectional robust z-score) and
feature selection (none, or permutation importance). It fits each variant on the research
window (the window of the first test fit: every label ends before the research boundary)
and scores it on that window's validation tail by the mean daily rank IC averaged over the
horizons. The axes are decided one after another (target, then scaling, then selection),
each keeping the best so far, so a family costs 1 + 2 + 1 + 1 fits rather than the 12 of
the full grid. A variant replaces the current choice only when it beats it by more than
the current choice's standard error (the one-standard-error rule: one validation year of a
few dozen names is noisy, and the defaults are the simpler choice). The table of every
variant scored is the decision log; the test period is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from finpipe.models.panel_data import FEATURE_SCALINGS, TARGETS, PanelData
from finpipe.models.registry import model_class
from finpipe.models.trainer import TrainingRun, train_family

# The input axes compared, in the order they are decided, with the values tried. The
# per-date demeaned target (one of `TARGETS`, still available by config) is not tried: on the
# bundled data's research window it scored below both raw and z-scored targets for every
# family (validation rank IC hist_gbm 0.025 against 0.043 and 0.040, lstm 0.036 against 0.061
# z-scored, ridge -0.066, the lowest), and z-scoring is demeaning plus a per-date scale.
INPUT_AXES: dict[str, tuple[Any, ...]] = {
    "target": tuple(t for t in TARGETS if t != "demeaned"),
    "feature_scaling": FEATURE_SCALINGS,
    "feature_selection": (None, "permutation"),
}
DECISION_COLUMNS = (
    "family",
    "step",
    "target",
    "feature_scaling",
    "feature_selection",
    "score",
    "score_se",
    "rank_ic_by_horizon",
    "rank_ic_se_by_horizon",
    "seconds",
    "chosen",
    "failed",
)


# The decision log's columns a reader needs (the report's section, the asset's metadata).
DECISION_SUMMARY = ("family", "step", *INPUT_AXES, "score", "score_se", "chosen")


@dataclass(frozen=True)
class Decision:
    """A family's chosen inputs, every variant it compared (`DECISION_COLUMNS`) and the fit
    of the chosen variant (None if it failed): the research window is the first test fold's
    window, so that fold reuses it."""

    family: str
    params: dict[str, Any]
    table: pd.DataFrame
    run: TrainingRun | None = None


def _mean_over_horizons(metrics: Mapping[str, float], key: str, horizons: Sequence[int]) -> float:
    values = np.array([metrics.get(f"{key}_h{h}", np.nan) for h in horizons], np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def decide_inputs(
    family: str,
    fit: PanelData,
    tail: PanelData,
    base_params: Mapping[str, Any],
    axes: Mapping[str, Sequence[Any]] = INPUT_AXES,
    progress: Callable[[str], None] | None = None,
) -> Decision:
    """Choose `family`'s inputs among `axes` by fitting on `fit` and scoring on `tail`.

    Axes the family does not take (a factor member has no target or scaling options) and
    axes set in `base_params` (explicit config) are not compared.
    """
    takes = model_class(family).defaults
    chosen = {axis: takes[axis] for axis in axes if axis in takes}
    chosen.update({axis: base_params[axis] for axis in chosen if axis in base_params})
    free = [axis for axis in axes if axis in takes and axis not in base_params]
    rows: list[dict[str, Any]] = []
    scored: dict[tuple, tuple[float, float]] = {}
    runs: dict[tuple, TrainingRun] = {}

    def evaluate(step: str, variant: dict[str, Any]) -> tuple[float, float]:
        key = tuple(variant.get(axis) for axis in axes)
        if key in scored:
            return scored[key]
        row: dict[str, Any] = {"family": family, "step": step}
        row.update({axis: variant.get(axis) for axis in axes})
        try:
            run = train_family(family, fit, tail, {**base_params, **variant})
        except ValueError as error:  # a variant the data cannot support: logged, not chosen
            scored[key] = (float("nan"), float("nan"))
            rows.append({**row, "score": float("nan"), "failed": str(error)})
            return scored[key]
        runs[key] = run
        metrics = run.model.metrics
        scored[key] = (
            _mean_over_horizons(metrics, "rank_ic", fit.horizons),
            _mean_over_horizons(metrics, "rank_ic_se", fit.horizons),
        )
        rows.append(
            {
                **row,
                "score": scored[key][0],
                "score_se": scored[key][1],
                "rank_ic_by_horizon": {int(h): metrics.get(f"rank_ic_h{h}") for h in fit.horizons},
                "rank_ic_se_by_horizon": {
                    int(h): metrics.get(f"rank_ic_se_h{h}") for h in fit.horizons
                },
                "seconds": round(run.wall_seconds, 2),
            }
        )
        if progress is not None:
            progress(f"{family} {step} {variant}: validation rank IC {scored[key][0]:.4f}")
        return scored[key]

    current = evaluate("start", chosen)
    for axis in free:
        for value in axes[axis]:
            score = evaluate(axis, {**chosen, axis: value})
            margin = current[1] if np.isfinite(current[1]) else 0.0
            if np.isfinite(score[0]) and not score[0] <= current[0] + margin:
                chosen[axis], current = value, score
    table = pd.DataFrame(rows, columns=[c for c in DECISION_COLUMNS if c != "chosen"])
    table["chosen"] = [
        all(row[axis] == chosen.get(axis) for axis in axes if axis in chosen)
        for _, row in table.iterrows()
    ]
    run = runs.get(tuple(chosen.get(axis) for axis in axes))
    return Decision(family, {axis: chosen[axis] for axis in free}, table, run)
