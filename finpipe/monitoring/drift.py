"""Drift of features and of live performance against what a model was trained on.

Feature drift per column compares the recent window with the training reference:

* PSI (population stability index) over the reference's deciles:
  PSI = sum_i (c_i - r_i) ln(c_i / r_i), shares floored at 1e-4; conventional bands
  < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant;
* the two-sample Kolmogorov-Smirnov test (statistic and p-value).

Live performance compares the realised daily rank IC and directional accuracy of every
served model in the prediction history (members, ensemble and challengers) with its
recent out-of-sample level in the replay; the feature reference is the data the serving
models trained on, so a retrain can end a drift episode. Drift is declared when the share of
features with significant PSI and a KS p-value below the threshold exceeds
`max_drifted_share`, or when live rank IC falls `ic_drop` below validation over at least
`min_live_dates` dates. Consecutive detections form one episode, named by its first date.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from finpipe.core.metrics import daily_rank_ic
from finpipe.models.panel_data import PanelData
from finpipe.models.versions import base_model

PSI_FLOOR = 1e-4
PSI_BANDS = ((0.1, "stable"), (0.25, "moderate"), (np.inf, "significant"))


def population_stability_index(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI of `current` against `reference` over the reference's quantile bins (NaNs ignored)."""
    reference = reference[np.isfinite(reference)]
    current = current[np.isfinite(current)]
    if reference.size == 0 or current.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(
        np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1
    )
    cur_share = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1)
    r = np.maximum(ref_share / reference.size, PSI_FLOOR)
    c = np.maximum(cur_share / current.size, PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_band(psi: float) -> str:
    """The conventional band of a PSI value."""
    return next(name for upper, name in PSI_BANDS if psi < upper) if np.isfinite(psi) else "n/a"


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], bins: int = 10
) -> pd.DataFrame:
    """`feature, psi, psi_band, ks_statistic, ks_pvalue` for every column."""
    rows = []
    for col in columns:
        ref = reference[col].to_numpy(np.float64)
        cur = current[col].to_numpy(np.float64)
        psi = population_stability_index(ref, cur, bins)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        ks = stats.ks_2samp(ref, cur) if ref.size and cur.size else None
        rows.append(
            {
                "feature": col,
                "psi": psi,
                "psi_band": psi_band(psi),
                "ks_statistic": float(ks.statistic) if ks else float("nan"),
                "ks_pvalue": float(ks.pvalue) if ks else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def live_performance(history: pd.DataFrame, validation_ic: dict[str, float]) -> pd.DataFrame:
    """Per model and horizon: realised mean daily rank IC, directional accuracy, dates, and
    the model's validation rank IC at that horizon (`rank_ic_h<h>` of its metrics)."""
    realised = history[history["realised_return"].notna()]
    rows = []
    for (model, horizon), part in realised.groupby(["model", "horizon"], sort=True):
        ic = daily_rank_ic(part["prediction"], part["realised_return"], part["date"])
        hit = np.sign(part["prediction"]) == np.sign(part["realised_return"])
        rows.append(
            {
                "model": model,
                "horizon": int(horizon),
                "dates": int(part["date"].nunique()),
                "live_rank_ic": float(ic.mean()) if len(ic) else float("nan"),
                "live_directional_accuracy": float(hit.mean()),
                "validation_rank_ic": validation_ic.get(f"{model}|{int(horizon)}", float("nan")),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "model",
            "horizon",
            "dates",
            "live_rank_ic",
            "live_directional_accuracy",
            "validation_rank_ic",
        ],
    )


@dataclass(frozen=True)
class DriftThresholds:
    """When drift counts as a reason to retrain."""

    psi: float = 0.25
    ks_pvalue: float = 0.01
    max_drifted_share: float = 0.2
    ic_drop: float = 0.03
    min_live_dates: int = 20

    def __post_init__(self) -> None:
        if not self.psi > 0:
            raise ValueError(f"psi must be > 0, got {self.psi}")
        if not 0 < self.ks_pvalue < 1:
            raise ValueError(f"ks_pvalue must be in (0, 1), got {self.ks_pvalue}")
        if not 0 < self.max_drifted_share <= 1:
            raise ValueError(f"max_drifted_share must be in (0, 1], got {self.max_drifted_share}")
        if self.ic_drop < 0 or self.min_live_dates < 1:
            raise ValueError(
                f"ic_drop must be >= 0 and min_live_dates >= 1, got {self.ic_drop} and "
                f"{self.min_live_dates}"
            )


@dataclass
class DriftAssessment:
    """Whether drift crossed the thresholds, why, and the share of drifted features."""

    detected: bool
    drifted_share: float
    reasons: list[str] = field(default_factory=list)


def assess_drift(
    features: pd.DataFrame, live: pd.DataFrame, thresholds: DriftThresholds
) -> DriftAssessment:
    """Apply the thresholds to a feature_drift table and a live_performance table."""
    drifted = (features["psi"] > thresholds.psi) & (features["ks_pvalue"] < thresholds.ks_pvalue)
    share = float(drifted.mean()) if len(features) else 0.0
    reasons = []
    if share > thresholds.max_drifted_share:
        top = features[drifted].nlargest(5, "psi")["feature"].tolist()
        reasons.append(
            f"{share:.0%} of features drifted (PSI > {thresholds.psi}, KS p < "
            f"{thresholds.ks_pvalue}), above {thresholds.max_drifted_share:.0%}; e.g. {top}"
        )
    enough = live[live["dates"] >= thresholds.min_live_dates] if len(live) else live
    if len(enough):
        decayed = enough[enough["live_rank_ic"] < enough["validation_rank_ic"] - thresholds.ic_drop]
        for row in decayed.itertuples():
            reasons.append(
                f"{row.model} h={row.horizon}: live rank IC {row.live_rank_ic:.3f} over "
                f"{row.dates} dates vs validation {row.validation_rank_ic:.3f}"
            )
    return DriftAssessment(bool(reasons), share, reasons)


def drift_episode(previous: str | None, detected: bool, as_of: pd.Timestamp) -> str | None:
    """The episode a detection belongs to: the previous one while drift persists, a new one
    (named by `as_of`) when it starts, none when there is no drift."""
    if not detected:
        return None
    return previous or pd.Timestamp(as_of).strftime("%Y-%m-%d")


@dataclass
class DriftReport:
    """A drift report: per-feature drift, live performance against the recent
    out-of-sample level, the verdict and the episode it belongs to."""

    features: pd.DataFrame
    live: pd.DataFrame
    verdict: DriftAssessment
    episode: str | None
    reference: tuple[pd.Timestamp, pd.Timestamp]
    recent: tuple[pd.Timestamp, pd.Timestamp]


def feature_rows(panel: PanelData, start: Any, end: Any, limit: int | None = None) -> pd.DataFrame:
    """The panel's feature rows dated in [start, end] as a frame (a seeded sample of at most
    `limit` rows)."""
    view = panel.select(start, end)
    d_idx, t_idx = view.sample_index()
    if limit is not None and len(d_idx) > limit:
        keep = np.sort(np.random.default_rng(0).choice(len(d_idx), limit, replace=False))
        d_idx, t_idx = d_idx[keep], t_idx[keep]
    return pd.DataFrame(panel.features[d_idx, t_idx], columns=list(panel.feature_names))


def recent_rank_ics(replay: pd.DataFrame, labels: pd.DataFrame, start: Any) -> dict[str, float]:
    """`<model>|<horizon>` -> mean daily rank IC of the replay's labelled rows from `start`:
    the out-of-sample level live performance is held against (challengers take their
    family's)."""
    rows = replay[replay["date"] >= pd.Timestamp(start)].merge(
        labels[["date", "ticker", "horizon", "fwd_return"]], on=["date", "ticker", "horizon"]
    )
    out = {}
    for (model, horizon), part in rows.groupby(["model", "horizon"], sort=True):
        ic = daily_rank_ic(part["prediction"], part["fwd_return"], part["date"])
        out[f"{model}|{int(horizon)}"] = float(ic.mean()) if len(ic) else float("nan")
    return out


def build_drift_report(
    panel: PanelData,
    reference: tuple[Any, Any],
    recent_days: int,
    reference_rows: int,
    history: pd.DataFrame,
    out_of_sample_ic: dict[str, float],
    thresholds: DriftThresholds,
    previous_episode: str | None,
) -> DriftReport:
    """Drift of the last `recent_days` dates of every feature against the dates the serving
    models trained on (`reference`), live rank IC of every served model (ensemble and
    challengers included) against its recent out-of-sample level, and the episode."""
    start, end = (pd.Timestamp(d) for d in reference)
    recent_start = panel.dates[-min(recent_days, len(panel.dates))]
    table = feature_drift(
        feature_rows(panel, start, end, reference_rows),
        feature_rows(panel, recent_start, panel.dates[-1]),
        list(panel.feature_names),
    )
    pairs = history[["model", "horizon"]].drop_duplicates()
    levels = {
        f"{model}|{horizon}": out_of_sample_ic.get(f"{base_model(model)}|{horizon}", np.nan)
        for model, horizon in pairs.itertuples(index=False)
    }
    live = live_performance(history, levels)
    verdict = assess_drift(table, live, thresholds)
    episode = drift_episode(previous_episode, verdict.detected, panel.dates[-1])
    return DriftReport(table, live, verdict, episode, (start, end), (recent_start, panel.dates[-1]))
