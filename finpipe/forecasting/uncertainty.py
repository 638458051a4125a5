"""Prediction uncertainty: Monte Carlo dropout, member dispersion, split-conformal intervals,
interval quality (PICP, normalised width) and the `confidence` score.

Intervals are split-conformal, normalised by a per-row scale:

    score = |y - prediction| / scale          on a held-out calibration window
    q     = the ceil((n + 1) * level)-th smallest of the n scores
    interval = prediction -/+ q * scale

Under exchangeability of calibration and later rows this covers at least `level` of
outcomes, whatever the noise distribution. The scale is the row's predictive standard
deviation under the decomposition "aleatoric + epistemic" (see `interval_scale`):

    scale = sqrt(horizon_vol^2 + dispersion^2),   horizon_vol = recent_vol * sqrt(horizon)

`recent_vol` is the ticker's trailing daily log-return volatility, so intervals widen for
volatile names and turbulent days; `dispersion` is the disagreement of the ensemble's
members (plus their Monte Carlo dropout spread), so intervals widen where the models
disagree. Both are known at the close of the prediction date.

`confidence` in [0, 1] compares an interval's width with the no-skill width at the same
level, that of a Gaussian with the ticker's recent volatility over the horizon:

    relative_width = width / (2 * z * horizon_vol),   z = Phi^-1((1 + level) / 2)
    confidence     = 1 / (1 + relative_width)

0.5 means the interval is exactly as wide as "returns are noise of recent volatility";
above 0.5 narrower (1 for a zero-width interval), below 0.5 wider (0 for an unbounded one,
or where the volatility is unknown). It does not saturate, so it still orders rows when,
as on real daily returns, honest intervals are about as wide as the no-skill one; rows
differ through member disagreement (which widens the interval) and horizons through how
well their calibrated residuals beat the Gaussian reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import ndtri

from finpipe.core.keys import ROW_KEY
from finpipe.core.metrics import interval_coverage
from finpipe.core.prices import close_matrix


class ConformalError(ValueError):
    """Calibration that cannot be done, or an interval asked of a key never calibrated."""


# -- per-row scale -------------------------------------------------------------------------


def recent_volatility(
    prices: pd.DataFrame, window: int = 20, min_periods: int = 10
) -> pd.DataFrame:
    """Trailing standard deviation of daily log returns of `adj_close` per ticker, known at
    the close of each date: `date, ticker, recent_vol`."""
    returns = np.log(close_matrix(prices)).diff()
    vol = returns.rolling(window, min_periods=min_periods).std()
    out = vol.stack().rename("recent_vol").reset_index()
    return out[["date", "ticker", "recent_vol"]].astype({"recent_vol": np.float64})


def member_dispersion(
    member_predictions: pd.DataFrame, samples: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Epistemic spread of the members per row: `date, ticker, horizon, dispersion, n_models`.

    Treats the ensemble as an equal mixture of members, each with its own predictive spread:
    variance = variance of the members' points + mean of the members' Monte Carlo variances
    (law of total variance). `samples` (`model` plus `predict_samples` columns) supplies the
    within-member variances; members without samples contribute zero.
    """
    points = member_predictions.groupby(list(ROW_KEY), sort=True)["prediction"]
    out = pd.DataFrame({"between": points.var(ddof=0), "n_models": points.count()})
    within = pd.Series(0.0, index=out.index)
    if samples is not None:
        per_model = samples.groupby([*ROW_KEY, "model"], sort=False)["prediction"].var(ddof=0)
        within = per_model.groupby(list(ROW_KEY)).sum().reindex(out.index, fill_value=0.0)
    out["dispersion"] = np.sqrt(out["between"] + within / out["n_models"])
    out = out.reset_index()
    return out[[*ROW_KEY, "dispersion", "n_models"]].astype({"n_models": np.int64})


def interval_scale(
    member_predictions: pd.DataFrame,
    recent_vol: pd.DataFrame,
    samples: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-row conformal scale: `date, ticker, horizon, horizon_vol, dispersion, scale`.

    horizon_vol = recent_vol * sqrt(horizon); scale = sqrt(horizon_vol^2 + dispersion^2).
    A ticker without a recent volatility (too little history) takes that date's
    cross-sectional median, so a new listing gets a typical width rather than none.
    """
    disp = member_dispersion(member_predictions, samples)
    vol = recent_vol[["date", "ticker", "recent_vol"]]
    rows = disp.merge(vol, on=["date", "ticker"], how="left")
    median = vol.groupby("date")["recent_vol"].median()
    rows["recent_vol"] = rows["recent_vol"].fillna(rows["date"].map(median))
    rows["horizon_vol"] = rows["recent_vol"] * np.sqrt(rows["horizon"].to_numpy(np.float64))
    rows["scale"] = np.hypot(rows["horizon_vol"], rows["dispersion"])
    return rows[[*ROW_KEY, "horizon_vol", "dispersion", "scale"]]


# -- split conformal -----------------------------------------------------------------------


def conformal_rank(n: int, level: float) -> int:
    """1-based rank of the conformal quantile among n scores: ceil((n + 1) * level).

    A rank above n means the calibration set is too small for the level (infinite interval).
    """
    _check_level(level)
    return math.ceil((n + 1) * level - 1e-9)


@dataclass(eq=False)
class SplitConformal:
    """Split-conformal intervals per group (by default per model and horizon).

    `fit` takes a calibration frame with the `by` columns, `prediction`, the realised
    `target` and (unless `scale_column` is None) a per-row scale, and stores for every group
    and level the conformal quantile of |target - prediction| / scale. The calibration rows
    must be held out from everything that produced the predictions (member training and the
    stacking fit), and come before the rows the intervals are used on.
    """

    levels: tuple[float, ...] = (0.8, 0.9)
    by: tuple[str, ...] = ("model", "horizon")
    scale_column: str | None = "scale"
    target: str = "fwd_return"
    quantiles: pd.DataFrame = field(default_factory=pd.DataFrame)

    def fit(self, calibration: pd.DataFrame) -> Self:
        """Store the conformal quantile per group and level (columns *by, level, n, q)."""
        for level in self.levels:
            _check_level(level)
        needed = [*self.by, "prediction", self.target]
        if self.scale_column is not None:
            needed.append(self.scale_column)
        missing = [c for c in needed if c not in calibration]
        if missing:
            raise ConformalError(f"calibration frame lacks columns {missing}; needs {needed}")
        scale = (
            calibration[self.scale_column].to_numpy(np.float64)
            if self.scale_column is not None
            else np.ones(len(calibration))
        )
        residual = calibration[self.target].to_numpy(np.float64) - calibration[
            "prediction"
        ].to_numpy(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.abs(residual) / scale
        usable = np.isfinite(score) & (scale > 0)
        if not usable.any():
            raise ConformalError("no calibration row has a finite residual and positive scale")
        rows = calibration.loc[usable, list(self.by)].assign(score=score[usable])
        rows = rows.sort_values([*self.by, "score"], kind="mergesort")
        sizes = rows.groupby(list(self.by), sort=True).size()
        starts = np.concatenate([[0], np.cumsum(sizes.to_numpy())[:-1]])
        sorted_scores = rows["score"].to_numpy()
        tables = []
        for level in self.levels:
            n = sizes.to_numpy()
            k = np.ceil((n + 1) * level - 1e-9).astype(np.int64)
            q = np.where(k <= n, sorted_scores[starts + np.minimum(k, n) - 1], np.inf)
            table = sizes.index.to_frame(index=False)
            tables.append(table.assign(level=float(level), n=n.astype(np.int64), q=q))
        self.quantiles = pd.concat(tables, ignore_index=True)
        return self

    def interval(self, frame: pd.DataFrame, level: float) -> pd.DataFrame:
        """`frame` with `lower`, `upper` and `interval_level` added for a fitted level."""
        if self.quantiles.empty:
            raise ConformalError("SplitConformal is not fitted; call fit() first")
        fitted = self.quantiles["level"].unique()
        if not np.isclose(fitted, level).any():
            raise ConformalError(f"level {level} was not calibrated; fitted levels {list(fitted)}")
        table = self.quantiles[np.isclose(self.quantiles["level"], level)]
        keyed = frame[list(self.by)].merge(table, on=list(self.by), how="left")
        q = keyed["q"].to_numpy(np.float64)
        if np.isnan(q).any():
            unknown = frame.loc[np.isnan(q), list(self.by)].drop_duplicates().head(5)
            raise ConformalError(
                f"no calibration for {unknown.to_dict('records')}; fit on a calibration window "
                "that holds every model and horizon you predict"
            )
        scale = (
            frame[self.scale_column].to_numpy(np.float64)
            if self.scale_column is not None
            else np.ones(len(frame))
        )
        half = q * scale
        prediction = frame["prediction"].to_numpy(np.float64)
        return frame.assign(
            lower=prediction - half, upper=prediction + half, interval_level=float(level)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state, for storing the calibration beside the models."""
        return {
            "levels": list(self.levels),
            "by": list(self.by),
            "scale_column": self.scale_column,
            "target": self.target,
            "quantiles": self.quantiles.to_dict("list"),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SplitConformal:
        return cls(
            levels=tuple(state["levels"]),
            by=tuple(state["by"]),
            scale_column=state["scale_column"],
            target=state["target"],
            quantiles=pd.DataFrame(state["quantiles"]),
        )


# -- interval quality and confidence -------------------------------------------------------


def normalised_width(lower: ArrayLike, upper: ArrayLike, y: ArrayLike) -> float:
    """PINAW: mean interval width divided by the range (max - min) of the outcomes."""
    y, lo, hi = (np.asarray(a, np.float64) for a in (y, lower, upper))
    usable = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
    spread = np.ptp(y[usable]) if usable.any() else 0.0
    return float(np.mean(hi[usable] - lo[usable]) / spread) if spread > 0 else float("nan")


def interval_report(
    y: ArrayLike, lower: ArrayLike, upper: ArrayLike, level: float
) -> dict[str, float]:
    """Coverage and width of intervals against outcomes: n, level, picp, coverage_error
    (picp - level), mean_width, pinaw."""
    y, lo, hi = (np.asarray(a, np.float64) for a in (y, lower, upper))
    usable = np.isfinite(y) & ~np.isnan(lo) & ~np.isnan(hi)
    picp = interval_coverage(y, lo, hi)
    return {
        "n": float(usable.sum()),
        "level": float(level),
        "picp": picp,
        "coverage_error": picp - float(level),
        "mean_width": float(np.mean(hi[usable] - lo[usable])) if usable.any() else float("nan"),
        "pinaw": normalised_width(lo, hi, y),
    }


def coverage_table(
    frame: pd.DataFrame,
    target: str = "fwd_return",
    by: Sequence[str] = ("model", "horizon", "interval_level"),
) -> pd.DataFrame:
    """`interval_report` per group of a frame with `lower`, `upper`, `interval_level` and
    the realised `target` (e.g. prediction history with `realised_return`)."""
    rows = []
    for key, part in frame.groupby(list(by), sort=True):
        report = interval_report(
            part[target], part["lower"], part["upper"], float(part["interval_level"].iloc[0])
        )
        rows.append({**dict(zip(by, key, strict=True)), **report})
    return pd.DataFrame(rows)


def confidence_from_width(width: ArrayLike, horizon_vol: ArrayLike, level: ArrayLike) -> np.ndarray:
    """1 / (1 + width / (2 * Phi^-1((1 + level) / 2) * horizon_vol)), in [0, 1]; 0 where the
    width is unbounded or the volatility unknown or not positive (no basis for confidence)."""
    width, vol, level = (np.asarray(a, np.float64) for a in (width, horizon_vol, level))
    reference = 2.0 * ndtri((1.0 + level) / 2.0) * vol
    with np.errstate(divide="ignore", invalid="ignore"):
        confidence = 1.0 / (1.0 + np.maximum(width, 0.0) / reference)
    known = np.isfinite(reference) & (reference > 0) & ~np.isnan(width)
    return np.where(known, np.nan_to_num(confidence, nan=0.0), 0.0)


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
