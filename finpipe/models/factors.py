"""Classic one-line factors as ensemble members, beside the learned families.

A factor member reads one feature column: its score on a date is the column's robust
z-score across that date's tickers, signed the way the literature trades it (12-1 momentum
up, last week's return down, low volatility up). `fit` learns only how to state the score
as a return, per horizon, on the training rows: prediction = level + slope x score, where
level is the training labels' mean and slope the spread of the labels across tickers times
the score's training information coefficient, floored at `MIN_IC` so a factor that failed
in its training window keeps its ranking (the stacker decides how much it counts). The
ranking itself is never fitted, so a factor member cannot overfit its window.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from finpipe.models.base import Forecaster, ProgressCallback, _check_no_overlap, _with_horizons
from finpipe.models.panel_data import (
    FeatureScaler,
    PanelData,
    PanelDataError,
    TargetScaler,
    cross_sectional_targets,
    time_split,
)

if TYPE_CHECKING:
    import optuna

MIN_IC = 0.01


class FactorForecaster(Forecaster):
    """A signed feature column's cross-sectional z-score, stated as a return."""

    feature: ClassVar[str]
    sign: ClassVar[float]
    defaults: ClassVar[dict[str, Any]] = {"horizons": None, "valid_fraction": 0.2, "seed": 0}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.slope: np.ndarray | None = None

    @classmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        return {}

    def fit(
        self,
        train: PanelData,
        valid: PanelData | None = None,
        progress: ProgressCallback | None = None,
    ) -> Self:
        started = time.perf_counter()
        if self.feature not in train.feature_names:
            raise PanelDataError(
                f"{self.name} reads the feature {self.feature!r}, which the panel lacks; add "
                "its feature family to research.feature_families or drop this member"
            )
        horizons = tuple(int(h) for h in (self.params["horizons"] or train.horizons))
        train = _with_horizons(train, horizons)
        if valid is None:
            train, valid = time_split(train, valid_fraction=self.params["valid_fraction"])
        else:
            valid = _with_horizons(valid, horizons)
        _check_no_overlap(train, valid)
        self.horizons, self.feature_names = horizons, (self.feature,)
        train, valid = self._aligned(train), self._aligned(valid)
        self.feature_scaler = FeatureScaler.fit(train, method="cross_sectional")
        self.target_scaler = TargetScaler.fit(train, "raw")
        d_idx, t_idx = train.sample_index(require_target=True)
        score = self._scores(train, d_idx, t_idx)
        demeaned = cross_sectional_targets(train.targets, "demeaned")[d_idx, t_idx]
        ic = np.array(
            [_correlation(score, demeaned[:, k]) for k in range(len(horizons))], np.float64
        )
        assert self.target_scaler.spread is not None
        self.slope = self.target_scaler.spread * np.maximum(np.nan_to_num(ic), MIN_IC)
        valid_loss = self._standardised_mse(valid)
        seconds = time.perf_counter() - started
        self.history = [
            {
                "model": self.name,
                "epoch": 0,
                "train_loss": self._standardised_mse(train),
                "valid_loss": valid_loss,
                "samples": len(d_idx),
                "seconds": seconds,
                "samples_per_s": len(d_idx) / max(seconds, 1e-9),
            }
        ]
        self.metrics = {f"train_ic_h{h}": float(v) for h, v in zip(horizons, ic, strict=True)}
        self.metrics.update(
            valid_loss=valid_loss,
            n_train=float(len(d_idx)),
            train_seconds=time.perf_counter() - started,
        )
        self.metrics.update(self.validation_metrics(valid))
        if progress is not None:
            progress(dict(self.history[0]))
        return self

    def _standardised_mse(self, view: PanelData) -> float:
        """Mean squared error of the predictions on a labelled view, per horizon in units
        of the training labels' standard deviation, averaged over horizons."""
        assert self.target_scaler is not None
        d_idx, t_idx, points = self._predict_outputs(view)
        error = (points[:, :, 0] - view.targets[d_idx, t_idx]) / self.target_scaler.std
        return float(np.nanmean(error**2))

    def _scores(self, panel: PanelData, d_idx: np.ndarray, t_idx: np.ndarray) -> np.ndarray:
        assert self.feature_scaler is not None
        return self.sign * self.feature_scaler.transform_rows(panel.features, d_idx, t_idx)[:, 0]

    def _predict_outputs(self, panel: PanelData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert self.target_scaler is not None and self.slope is not None
        assert self.target_scaler.level is not None
        d_idx, t_idx = panel.sample_index()
        score = self._scores(panel, d_idx, t_idx)
        points = self.target_scaler.level[None, :] + score[:, None] * self.slope[None, :]
        return d_idx, t_idx, points[:, :, None].astype(np.float64)

    def _save_state(self, directory: Path) -> dict[str, Any]:
        assert self.slope is not None
        return {"slope": self.slope.tolist()}

    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self.slope = np.asarray(state["slope"], np.float64)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or x[ok].std() == 0 or y[ok].std() == 0:
        return 0.0
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


class MomentumFactor(FactorForecaster):
    """12-1 month momentum (`mom_12_1`): last year's winners, skipping the last month."""

    name = "momentum_factor"
    feature = "mom_12_1"
    sign = 1.0


class ReversalFactor(FactorForecaster):
    """Short-term reversal (`strev_5`): last week's losers."""

    name = "reversal_factor"
    feature = "strev_5"
    sign = 1.0


class LowVolatilityFactor(FactorForecaster):
    """Low volatility (minus `rv_63`): the calmest names of the last quarter."""

    name = "low_vol_factor"
    feature = "rv_63"
    sign = -1.0
