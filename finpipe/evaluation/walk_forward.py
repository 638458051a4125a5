"""Walk-forward evaluation: retrain every N trading days and predict the dates that follow.

The test period is cut into consecutive blocks of `retrain_every` trading dates. Fold k
trains on dates before its block (all of them: "expanding"; the last `train_days`: "rolling")
and predicts every date of the block, so the concatenated folds give out-of-sample
predictions over the whole test period.

Purging and embargo work on `label_end`, the last close a label reads: a training row is kept
only if its label ends strictly before the `label_cutoff` of its fold, the trading date
`embargo` dates before the first test date (embargo 0: the first test date itself). No
training label therefore overlaps the test period, and `embargo` dates of extra gap guard
against serial dependence beyond the label. Each fold is independent of the others (no warm
start), so an orchestrator can run them in parallel; `run_walk_forward` is the sequential
driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE
from finpipe.forecasting import ensemble
from finpipe.models.base import Forecaster, LeakageError
from finpipe.models.panel_data import NO_LABEL_END, PanelData
from finpipe.models.registry import create_model

WindowKind = Literal["expanding", "rolling"]

# A model is given as a factory returning a fresh Forecaster, or as a spec
# {"family": <registered name>, **params} for create_model.
ModelSpec = Callable[[], Forecaster] | Mapping[str, Any]
# combine(member predictions, validation metrics per member) -> (ensemble predictions, weights).
# Member predictions are long (date, ticker, horizon, model, prediction); the ensemble frame
# has date, ticker, horizon, prediction (plus optional lower, upper, interval_level); weights
# has horizon, model, weight.
Combiner = Callable[
    [pd.DataFrame, Mapping[str, Mapping[str, float]]], tuple[pd.DataFrame, pd.DataFrame]
]


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: fit on `train_dates` (rows with labels ending before
    `label_cutoff`), predict every date in `test_dates`."""

    index: int
    train_dates: pd.DatetimeIndex
    test_dates: pd.DatetimeIndex
    label_cutoff: pd.Timestamp

    @property
    def test_start(self) -> pd.Timestamp:
        return self.test_dates[0]

    @property
    def test_end(self) -> pd.Timestamp:
        return self.test_dates[-1]


def label_end_by_date(labels: pd.DataFrame) -> pd.Series:
    """Latest `label_end` of each date's labels (all tickers and horizons), indexed by date."""
    return labels.groupby("date", sort=True)["label_end"].max()


def walk_forward_splits(
    dates: Sequence[Any] | pd.DatetimeIndex,
    label_end: pd.Series,
    first_test: Any = None,
    retrain_every: int = 21,
    window: WindowKind = "expanding",
    train_days: int | None = None,
    embargo: int = 5,
    min_train_days: int = 252,
    last_test: Any = None,
) -> list[Fold]:
    """Folds over the trading calendar `dates`, purged and embargoed by `label_end`.

    `label_end` maps a date to the latest label end of its rows (`label_end_by_date`);
    dates without labels never train. Test blocks start at `first_test` (default: the
    earliest date with `min_train_days` usable training dates) and run to `last_test`
    (default: the last date). A rolling window uses the last `train_days` dates before the
    cutoff. Raises ValueError when the first fold would train on fewer than
    `min_train_days` dates.
    """
    calendar = pd.DatetimeIndex(pd.to_datetime(pd.Index(dates))).unique().sort_values()
    if retrain_every < 1:
        raise ValueError(f"retrain_every must be at least 1 trading day, got {retrain_every}")
    if embargo < 0:
        raise ValueError(f"embargo must be >= 0 trading days, got {embargo}")
    if window not in ("expanding", "rolling"):
        raise ValueError(f"window must be 'expanding' or 'rolling', got {window!r}")
    if window == "rolling" and (train_days is None or train_days < 1):
        raise ValueError("a rolling window needs train_days, the number of training dates")
    ends = pd.to_datetime(label_end.reindex(calendar)).to_numpy("datetime64[ns]").view(np.int64)
    ends = np.where(ends == NO_LABEL_END, np.iinfo(np.int64).max, ends)
    stamps = calendar.to_numpy("datetime64[ns]").view(np.int64)

    def train_positions(start: int) -> np.ndarray:
        cutoff = stamps[max(start - embargo, 0)]
        lo = 0 if window == "expanding" else max(start - embargo - int(train_days or 0), 0)
        candidates = np.arange(lo, start)
        return candidates[ends[lo:start] < cutoff]

    if first_test is None:
        start = next(
            (s for s in range(1, len(calendar)) if len(train_positions(s)) >= min_train_days),
            None,
        )
        if start is None:
            raise ValueError(
                f"no date has {min_train_days} labelled training dates before it; "
                "lower min_train_days or give more history"
            )
    else:
        start = int(np.searchsorted(stamps, pd.Timestamp(first_test).value))
    stop = len(calendar)
    if last_test is not None:
        stop = int(np.searchsorted(stamps, pd.Timestamp(last_test).value, side="right"))
    if start >= stop:
        raise ValueError(f"no trading dates between first_test {first_test} and {last_test}")

    folds = []
    for k, block_start in enumerate(range(start, stop, retrain_every)):
        positions = train_positions(block_start)
        if k == 0 and len(positions) < min_train_days:
            raise ValueError(
                f"the first fold (test from {calendar[block_start].date()}) has "
                f"{len(positions)} training dates after purging and a {embargo}-day embargo, "
                f"fewer than min_train_days={min_train_days}; start the test later"
            )
        folds.append(
            Fold(
                index=k,
                train_dates=calendar[positions],
                test_dates=calendar[block_start : min(block_start + retrain_every, stop)],
                label_cutoff=calendar[max(block_start - embargo, 0)],
            )
        )
    return folds


def fold_views(fold: Fold, panel: PanelData) -> tuple[PanelData, PanelData]:
    """(train, test) views of the panel for a fold; training rows are purged row by row."""
    on_train = panel.dates.isin(fold.train_dates)
    on_test = panel.dates.isin(fold.test_dates)
    purged = (panel.label_end != NO_LABEL_END) & (panel.label_end < fold.label_cutoff.value)
    train = panel.view(on_train[:, None] & purged)
    check_purged(fold, train)
    return train, panel.view(on_test[:, None])


def check_purged(fold: Fold, train: PanelData) -> None:
    """Raise LeakageError if any training row's label ends on or after the fold's cutoff."""
    ends = train.label_end[train.sample_mask]
    ends = ends[ends != NO_LABEL_END]
    if len(ends) and ends.max() >= fold.label_cutoff.value:
        raise LeakageError(
            f"fold {fold.index}: a training label ends {pd.Timestamp(ends.max()).date()}, on "
            f"or after the cutoff {fold.label_cutoff.date()} before the test starting "
            f"{fold.test_start.date()}"
        )


def _build(spec: ModelSpec) -> Forecaster:
    if callable(spec):
        return spec()
    params = dict(spec)
    family = params.pop("family", None)
    if family is None:
        raise ValueError(f"model spec {spec!r} needs a 'family' naming a registered model")
    return create_model(str(family), **params)


def equal_weight_combine(
    members: pd.DataFrame, validation: Mapping[str, Mapping[str, float]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ensemble as the plain mean of the members' predictions per (date, ticker, horizon)."""
    ensemble = members.groupby(list(ROW_KEY), sort=True, as_index=False)["prediction"].mean()
    pairs = members[["horizon", "model"]].drop_duplicates()
    counts = pairs.groupby("horizon")["model"].transform("count")
    weights = pairs.assign(weight=1.0 / counts).sort_values(["horizon", "model"])
    return ensemble, weights.reset_index(drop=True)


def validation_weighted_combiner(
    method: Literal["rank_ic", "inverse_loss"] = "rank_ic", floor: float = 0.05
) -> Combiner:
    """A combiner weighting members per horizon by their validation metrics in the fold
    (`ensemble.validation_weights`, floored), applied by `ensemble.combine`."""

    def combine(
        members: pd.DataFrame, validation: Mapping[str, Mapping[str, float]]
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        horizons = sorted(int(h) for h in members["horizon"].unique())
        weights = {
            h: ensemble.validation_weights(validation, method, floor, horizons=[h])
            for h in horizons
        }
        combined, _ = ensemble.combine(members, weights)
        table = pd.DataFrame(
            [(h, m, w) for h, row in weights.items() for m, w in row.items()],
            columns=["horizon", "model", "weight"],
        )
        return combined[[*ROW_KEY, "prediction"]], table

    return combine


@dataclass
class FoldResult:
    """Out-of-sample predictions of one fold (members and ensemble), the ensemble weights and
    the members' validation metrics."""

    fold: Fold
    predictions: pd.DataFrame
    weights: pd.DataFrame
    validation: pd.DataFrame


def run_fold(
    fold: Fold,
    panel: PanelData,
    models: Mapping[str, ModelSpec],
    combine: Combiner | None = equal_weight_combine,
) -> FoldResult:
    """Fit every model on the fold's purged training view and predict its test dates.

    predictions: long `date, ticker, horizon, model, prediction, fold` (plus quantile columns
    where members have them) with model "ensemble" added by `combine` (None: members only).
    """
    if not models:
        raise ValueError("run_fold needs at least one model")
    if STACKED_ENSEMBLE in models:
        raise ValueError(
            f"{STACKED_ENSEMBLE!r} is reserved for the combined prediction; rename the model"
        )
    train, test = fold_views(fold, panel)
    frames, validation = [], {}
    for name, spec in models.items():
        model = _build(spec).fit(train)
        frames.append(model.predict(test).assign(model=name))
        validation[name] = dict(model.metrics)
    members = pd.concat(frames, ignore_index=True)
    parts = [members]
    weights = pd.DataFrame(columns=["horizon", "model", "weight"])
    if combine is not None:
        ensemble, weights = combine(members, validation)
        parts.append(ensemble.assign(model=STACKED_ENSEMBLE))
    predictions = pd.concat(parts, ignore_index=True).assign(fold=fold.index)
    front = [*ROW_KEY, "model", "prediction"]
    predictions = predictions[front + [c for c in predictions.columns if c not in front]]
    weights = weights.assign(fold=fold.index, test_start=fold.test_start)
    table = pd.DataFrame.from_dict(validation, orient="index").rename_axis("model")
    return FoldResult(fold, predictions, weights, table.reset_index().assign(fold=fold.index))


@dataclass
class WalkForwardResult:
    """Every fold's results concatenated: out-of-sample predictions over the test period."""

    folds: list[Fold]
    predictions: pd.DataFrame
    weights: pd.DataFrame
    validation: pd.DataFrame


def collect(results: Sequence[FoldResult]) -> WalkForwardResult:
    """Concatenate fold results (e.g. fanned out by an orchestrator) in fold order."""
    ordered = sorted(results, key=lambda r: r.fold.index)
    return WalkForwardResult(
        folds=[r.fold for r in ordered],
        predictions=pd.concat([r.predictions for r in ordered], ignore_index=True),
        weights=pd.concat([r.weights for r in ordered], ignore_index=True),
        validation=pd.concat([r.validation for r in ordered], ignore_index=True),
    )


def run_walk_forward(
    panel: PanelData,
    models: Mapping[str, ModelSpec],
    folds: Sequence[Fold],
    combine: Combiner | None = equal_weight_combine,
) -> WalkForwardResult:
    """Run every fold in turn (the sequential driver for tests and benchmarks)."""
    return collect([run_fold(fold, panel, models, combine) for fold in folds])
