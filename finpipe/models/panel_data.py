"""Dense model-ready panels built once from the long features and labels tables.

`PanelData` holds float32 arrays [dates, tickers, features] and [dates, tickers, horizons]
plus a boolean [dates, tickers] sample mask. Train, validation and test sets are views:
they share the arrays and differ only in their masks, so a validation sample's window can
read feature rows from the training period (past information) without copying anything.

`time_split` cuts a view in two by date with purging by `label_end` and an embargo of at
least the longest horizon; `FeatureScaler` is fit on training rows only (the PyTorch windows
over these arrays are in `finpipe.models.windows`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from finpipe.core.contracts import LABELS

# label_end (int64 nanoseconds) of a sample without any label: NaT's integer value.
NO_LABEL_END = np.iinfo(np.int64).min
# Feature columns copied from the long table into the dense array at a time (bounds the
# copy from the table).
COLUMN_CHUNK = 32


class PanelDataError(ValueError):
    """Features or labels that cannot be turned into a panel; the message says what to fix."""


def _codes(values: pd.Series, index: pd.Index, what: str) -> np.ndarray:
    codes = index.get_indexer(values)
    if (codes < 0).any():
        missing = pd.unique(values[codes < 0])[:5]
        raise PanelDataError(f"{what} {list(missing)} are not in the features table")
    return codes


@dataclass(frozen=True, eq=False)
class PanelData:
    """Dense feature/target arrays for a panel and the (date, ticker) samples of this view.

    features: float32 [T, N, F], NaN where a feature is missing.
    targets: float32 [T, N, H], NaN where a label is missing (all NaN without labels).
    label_end: int64 nanoseconds [T, N], the last date any of the sample's labels reads
        (NaT's int value where there is no label).
    sample_mask: bool [T, N], which (date, ticker) pairs belong to this view.
    """

    dates: pd.DatetimeIndex
    tickers: pd.Index
    feature_names: tuple[str, ...]
    horizons: tuple[int, ...]
    features: np.ndarray
    targets: np.ndarray
    label_end: np.ndarray
    sample_mask: np.ndarray

    @classmethod
    def from_frames(
        cls,
        features: pd.DataFrame,
        labels: pd.DataFrame | None = None,
        horizons: tuple[int, ...] | list[int] | None = None,
    ) -> PanelData:
        """Build the dense panel from the long features table and (optionally) labels.

        Every feature row becomes a sample; labels are looked up by (date, ticker, horizon)
        and missing ones stay NaN. `horizons` defaults to every horizon in `labels`.
        """
        for col in ("date", "ticker"):
            if col not in features:
                raise PanelDataError(f"features table needs a {col!r} column")
        feature_names = tuple(c for c in features.columns if c not in ("date", "ticker"))
        if not feature_names:
            raise PanelDataError("features table has no feature columns besides date, ticker")
        non_numeric = [c for c in feature_names if not pd.api.types.is_numeric_dtype(features[c])]
        if non_numeric:
            raise PanelDataError(f"feature columns must be numeric; these are not: {non_numeric}")
        if features.duplicated(["date", "ticker"]).any():
            raise PanelDataError("features table has duplicate (date, ticker) rows")
        dates = pd.DatetimeIndex(np.sort(features["date"].unique()))
        tickers = pd.Index(np.sort(features["ticker"].astype(str).unique()), dtype=object)
        d_idx = _codes(features["date"], dates, "dates")
        t_idx = _codes(features["ticker"].astype(str), tickers, "tickers")
        values = np.full((len(dates), len(tickers), len(feature_names)), np.nan, np.float32)
        for start in range(0, len(feature_names), COLUMN_CHUNK):
            names = list(feature_names[start : start + COLUMN_CHUNK])
            chunk = features[names].to_numpy(np.float32)
            infinite = np.isinf(chunk)
            if infinite.any():
                chunk = np.where(infinite, np.float32(np.nan), chunk)
            values[d_idx, t_idx, start : start + len(names)] = chunk
        present = np.zeros((len(dates), len(tickers)), bool)
        present[d_idx, t_idx] = True

        if labels is None:
            horizons = tuple(int(h) for h in horizons or ())
            targets = np.full((len(dates), len(tickers), len(horizons)), np.nan, np.float32)
            label_end = np.full((len(dates), len(tickers)), NO_LABEL_END, np.int64)
        else:
            missing = [c for c in LABELS.required if c not in labels]
            if missing:
                raise PanelDataError(f"labels table lacks columns {missing}")
            if horizons is None:
                horizons = tuple(int(h) for h in np.sort(labels["horizon"].unique()))
            horizons = tuple(int(h) for h in horizons)
            targets, label_end = _label_arrays(labels, dates, tickers, horizons)
        return cls(
            dates=dates,
            tickers=tickers,
            feature_names=feature_names,
            horizons=horizons,
            features=values,
            targets=targets,
            label_end=label_end,
            sample_mask=present,
        )

    @property
    def n_samples(self) -> int:
        return int(self.sample_mask.sum())

    @property
    def has_labels(self) -> bool:
        return bool(np.isfinite(self.targets).any())

    def view(self, sample_mask: np.ndarray) -> PanelData:
        """The same arrays with another sample mask (intersected with this view's)."""
        return dataclasses.replace(self, sample_mask=self.sample_mask & sample_mask)

    def select(self, start: Any = None, end: Any = None) -> PanelData:
        """The view restricted to dates in [start, end] (either bound optional)."""
        keep = np.ones(len(self.dates), bool)
        if start is not None:
            keep &= self.dates >= pd.Timestamp(start)
        if end is not None:
            keep &= self.dates <= pd.Timestamp(end)
        return self.view(keep[:, None])

    def with_history(self, days: int) -> PanelData:
        """The view cut down (without copying) to its sample dates plus `days` earlier dates,
        which is all that windows of length days + 1 read."""
        rows = np.flatnonzero(self.sample_mask.any(axis=1))
        if len(rows) == 0:
            return self
        lo, hi = max(int(rows[0]) - days, 0), int(rows[-1]) + 1
        return PanelData(
            dates=self.dates[lo:hi],
            tickers=self.tickers,
            feature_names=self.feature_names,
            horizons=self.horizons,
            features=self.features[lo:hi],
            targets=self.targets[lo:hi],
            label_end=self.label_end[lo:hi],
            sample_mask=self.sample_mask[lo:hi],
        )

    def sample_index(self, require_target: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(date_idx, ticker_idx) of this view's samples, date-major order.

        With `require_target`, only samples with at least one finite label.
        """
        mask = self.sample_mask
        if require_target:
            mask = mask & np.isfinite(self.targets).any(axis=2)
        d_idx, t_idx = np.nonzero(mask)
        return d_idx.astype(np.int64), t_idx.astype(np.int64)

    def sample_dates(self) -> pd.DatetimeIndex:
        """Dates that hold at least one sample of this view."""
        return self.dates[self.sample_mask.any(axis=1)]

    def labels_frame(self) -> pd.DataFrame:
        """This view's labels in long form: date, ticker, horizon, fwd_return."""
        d_idx, t_idx = self.sample_index(require_target=True)
        n_h = len(self.horizons)
        values = self.targets[d_idx, t_idx].reshape(-1)
        frame = pd.DataFrame(
            {
                "date": np.repeat(self.dates.values[d_idx], n_h),
                "ticker": np.repeat(self.tickers.values[t_idx], n_h),
                "horizon": np.tile(np.array(self.horizons, np.int64), len(d_idx)),
                "fwd_return": values.astype(np.float64),
            }
        )
        return frame[np.isfinite(values)].reset_index(drop=True)


PANEL_ARRAYS = ("features", "targets", "label_end", "sample_mask")
PANEL_META = "panel.json"


def panel_fingerprint(panel: PanelData) -> str:
    """A short hash of what a panel holds: dates, tickers, features, horizons and every
    feature's and label's column sum (cheap, and it moves when any value does)."""
    digest = hashlib.sha256()
    for part in (
        panel.dates.asi8.tobytes(),
        "\n".join(map(str, panel.tickers)).encode(),
        "\n".join(panel.feature_names).encode(),
        np.asarray(panel.horizons, np.int64).tobytes(),
        _column_sums(panel.features).tobytes(),
        _column_sums(panel.targets).tobytes(),
        panel.sample_mask.sum(axis=0).tobytes(),
    ):
        digest.update(part)
    return digest.hexdigest()[:16]


def _column_sums(values: np.ndarray) -> np.ndarray:
    """Sums over dates and tickers of a [T, N, K] array, NaN skipped, `DATE_CHUNK` dates at a
    time (np.nansum copies what it sums)."""
    total = np.zeros(values.shape[-1])
    for start in range(0, len(values), DATE_CHUNK):
        total += np.nansum(values[start : start + DATE_CHUNK], axis=(0, 1), dtype=np.float64)
    return total


def save_panel(panel: PanelData, folder: str | os.PathLike[str]) -> str:
    """Write a panel's arrays (`.npy`) and index (`panel.json`) into a new folder; returns
    its fingerprint, which the index records."""
    path = Path(folder)
    path.mkdir(parents=True)
    for name in PANEL_ARRAYS:
        np.save(path / f"{name}.npy", getattr(panel, name))
    fingerprint = panel_fingerprint(panel)
    meta = {
        "fingerprint": fingerprint,
        "dates": [str(d.date()) for d in panel.dates],
        "tickers": [str(t) for t in panel.tickers],
        "feature_names": list(panel.feature_names),
        "horizons": list(panel.horizons),
    }
    (path / PANEL_META).write_text(json.dumps(meta))
    return fingerprint


def panel_meta(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The index `save_panel` wrote (fingerprint, dates, tickers, features, horizons)."""
    return json.loads((Path(folder) / PANEL_META).read_text())


def load_panel(folder: str | os.PathLike[str], mmap: bool = True) -> PanelData:
    """A panel written by `save_panel`; with `mmap` its arrays are memory-mapped read-only,
    so every step that loads it shares the pages instead of copying the data."""
    path = Path(folder)
    meta = panel_meta(path)
    mode = "r" if mmap else None
    arrays = {name: np.load(path / f"{name}.npy", mmap_mode=mode) for name in PANEL_ARRAYS}
    return PanelData(
        dates=pd.DatetimeIndex(pd.to_datetime(meta["dates"])).as_unit("ns"),
        tickers=pd.Index(meta["tickers"], dtype=object),
        feature_names=tuple(meta["feature_names"]),
        horizons=tuple(int(h) for h in meta["horizons"]),
        **arrays,
    )


def _label_arrays(
    labels: pd.DataFrame, dates: pd.DatetimeIndex, tickers: pd.Index, horizons: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    keep = labels["horizon"].isin(horizons)
    labels = labels[keep]
    d_idx = dates.get_indexer(labels["date"])
    t_idx = tickers.get_indexer(labels["ticker"].astype(str))
    h_idx = pd.Index(horizons).get_indexer(labels["horizon"])
    on_panel = (d_idx >= 0) & (t_idx >= 0)
    d_idx, t_idx, h_idx = d_idx[on_panel], t_idx[on_panel], h_idx[on_panel]
    if pd.DataFrame({"d": d_idx, "t": t_idx, "h": h_idx}).duplicated().any():
        raise PanelDataError("labels table has duplicate (date, ticker, horizon) rows")
    targets = np.full((len(dates), len(tickers), len(horizons)), np.nan, np.float32)
    targets[d_idx, t_idx, h_idx] = labels["fwd_return"].to_numpy(np.float32)[on_panel]
    targets[~np.isfinite(targets)] = np.nan
    ends = pd.to_datetime(labels["label_end"]).to_numpy("datetime64[ns]").view(np.int64)[on_panel]
    labelled = np.isfinite(labels["fwd_return"].to_numpy(np.float64))[on_panel]
    ends = np.where(labelled, ends, NO_LABEL_END)
    label_end = np.full((len(dates), len(tickers)), NO_LABEL_END, np.int64)
    np.maximum.at(label_end, (d_idx, t_idx), ends)
    return targets, label_end


def time_split(
    panel: PanelData,
    valid_fraction: float = 0.2,
    valid_start: Any = None,
    embargo: int | None = None,
) -> tuple[PanelData, PanelData]:
    """Split a view by date into (earlier, later) with purging and an embargo.

    The later part starts at `valid_start` (or covers the last `valid_fraction` of this
    view's dates). The earlier part keeps only samples whose labels all end before the later
    part starts (purge by `label_end`) and dates more than `embargo` trading days before it;
    `embargo` defaults to, and may not be below, the longest horizon.
    """
    longest = max(panel.horizons, default=0)
    embargo = longest if embargo is None else embargo
    if embargo < longest:
        raise ValueError(f"embargo {embargo} is shorter than the longest horizon {longest}")
    view_dates = np.flatnonzero(panel.sample_mask.any(axis=1))
    if len(view_dates) < 2:
        raise PanelDataError("cannot split a view with fewer than two dates")
    if valid_start is None:
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
        first_valid = view_dates[int(len(view_dates) * (1.0 - valid_fraction))]
    else:
        first_valid = int(np.searchsorted(panel.dates.values, np.datetime64(valid_start)))
    later = np.zeros(len(panel.dates), bool)
    later[first_valid:] = True
    earlier_dates = np.zeros(len(panel.dates), bool)
    earlier_dates[: max(first_valid - embargo, 0)] = True
    if first_valid < len(panel.dates):
        cutoff = panel.dates.values[first_valid].astype("datetime64[ns]").view(np.int64)
        purged = panel.label_end < cutoff
    else:
        purged = np.ones_like(panel.sample_mask)
    earlier = panel.view(earlier_dates[:, None] & purged)
    if earlier.n_samples == 0:
        start = panel.dates[min(first_valid, len(panel.dates) - 1)]
        raise PanelDataError(
            f"no training samples remain before {start} after a {embargo}-day embargo and "
            "purging by label_end; use a later split"
        )
    return earlier, panel.view(later[:, None])


FEATURE_SCALINGS = ("time_series", "cross_sectional")
TARGETS = ("raw", "demeaned", "zscore", "rank")
MAD_TO_STD = 1.4826
# Dates normalised at a time by a cross-sectional FeatureScaler, and summed at a time by the
# panel's fingerprint (bounds the copies they make).
DATE_CHUNK = 256


def cross_sectional_targets(targets: np.ndarray, method: str) -> np.ndarray:
    """Labels [T, N, H] transformed date by date across tickers (each date reads only its
    own labels): `raw` as they are, `demeaned` minus the date's mean, `zscore` also divided
    by the date's standard deviation, `rank` the centred percentile rank scaled to unit
    variance (sqrt(12) x (rank - 0.5) / n - 0.5). Dates with fewer than two labels give NaN
    under zscore and rank."""
    if method not in TARGETS:
        raise PanelDataError(f"target must be one of {TARGETS}, got {method!r}")
    if method == "raw":
        return targets
    values = targets.astype(np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=1, keepdims=True)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=1, keepdims=True)
        if method == "demeaned":
            out = values - mean
        elif method == "zscore":
            std = np.nanstd(values, axis=1, keepdims=True)
            out = np.where((count >= 2) & (std > 0), (values - mean) / std, np.nan)
        else:
            ranks = rankdata(np.where(finite, values, np.nan), axis=1, nan_policy="omit")
            out = np.where(count >= 2, ((ranks - 0.5) / count - 0.5) * np.sqrt(12.0), np.nan)
    return np.where(finite, out, np.nan).astype(np.float32)


def median_over_tickers(values: np.ndarray) -> np.ndarray:
    """Median over axis 1 of a [T, N, F] array, ignoring NaN, as [T, 1, F] (NaN where a
    date has no value): a sort along the short tickers axis, several times faster than
    np.nanmedian on these shapes."""
    ordered = np.sort(values, axis=1)  # NaN sorts last
    count = np.isfinite(values).sum(axis=1, keepdims=True)
    low = np.take_along_axis(ordered, np.maximum((count - 1) // 2, 0), axis=1)
    high = np.take_along_axis(ordered, np.maximum(count // 2, 0), axis=1)
    return np.where(count > 0, (low + high) / 2, np.nan)


@dataclass(frozen=True)
class FeatureScaler:
    """Per-feature robust standardisation, fit on training rows only, clipped, NaN -> 0.

    `time_series` (the default): (x - median) / (IQR / 1.349) with the training rows'
    median and IQR. `cross_sectional`: each date's robust z-score across its tickers,
    (x - median) / (1.4826 MAD), so a feature is read relative to the other names that day
    (Qlib's CSZScoreNorm, robust); a feature with one value for every ticker on every
    training date (macro, regime) has no cross-section and keeps the time-series scaling.
    """

    center: np.ndarray
    scale: np.ndarray
    clip: float = 5.0
    method: str = "time_series"
    date_level: np.ndarray | None = None  # bool [F]: features without a cross-section

    @classmethod
    def fit(cls, panel: PanelData, clip: float = 5.0, method: str = "time_series") -> FeatureScaler:
        if method not in FEATURE_SCALINGS:
            raise PanelDataError(
                f"feature scaling must be one of {FEATURE_SCALINGS}, got {method!r}"
            )
        rows = panel.features[panel.sample_mask]
        if len(rows) == 0:
            raise PanelDataError("cannot fit a feature scaler on a view with no samples")
        # A feature missing on every training row (a series that starts later) warns in
        # NumPy; it is centred at 0 with scale 1 below, so every value of it becomes 0.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            q25, center, q75 = np.nanquantile(rows, [0.25, 0.5, 0.75], axis=0)
            scale = (q75 - q25) / 1.349
            std = np.nanstd(rows, axis=0)
        scale = np.where(scale > 1e-12, scale, np.where(std > 1e-12, std, 1.0))
        center = np.nan_to_num(center)
        date_level = None
        if method == "cross_sectional":
            dates = panel.sample_mask.any(axis=1)
            block = np.where(panel.sample_mask[dates][:, :, None], panel.features[dates], np.nan)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                low, high = np.nanmin(block, axis=1), np.nanmax(block, axis=1)
            date_level = np.all((low == high) | np.isnan(low), axis=0)
        return cls(
            center.astype(np.float32), scale.astype(np.float32), float(clip), method, date_level
        )

    def transform(self, features: np.ndarray, pad: int = 0) -> np.ndarray:
        """Standardised float32 copy of [T, N, F] features (whole dates: the cross-section is
        every ticker of the array), with `pad` zero rows in front."""
        out = np.zeros((features.shape[0] + pad, *features.shape[1:]), np.float32)
        body = out[pad:]
        if self.method == "cross_sectional":
            for start in range(0, features.shape[0], DATE_CHUNK):
                body[start : start + DATE_CHUNK] = self._per_date(
                    features[start : start + DATE_CHUNK]
                )
        else:
            np.subtract(features, self.center, out=body)
            body /= self.scale
        np.clip(body, -self.clip, self.clip, out=body)
        body[np.isnan(body)] = 0.0
        return out

    def transform_rows(
        self, features: np.ndarray, d_idx: np.ndarray, t_idx: np.ndarray
    ) -> np.ndarray:
        """Standardised [n, F] rows (d_idx[i], t_idx[i]) of [T, N, F] features."""
        if self.method == "time_series":
            return self.transform(features[d_idx, t_idx])
        dates, where = np.unique(d_idx, return_inverse=True)
        out = np.empty((len(d_idx), features.shape[2]), np.float32)
        for start in range(0, len(dates), DATE_CHUNK):
            chunk = self.transform(features[dates[start : start + DATE_CHUNK]])
            rows = (where >= start) & (where < start + DATE_CHUNK)
            out[rows] = chunk[where[rows] - start, t_idx[rows]]
        return out

    def _per_date(self, block: np.ndarray) -> np.ndarray:
        """Robust z-scores across tickers of a [T, N, F] block (time-series scaling for the
        date-level features)."""
        values = block.astype(np.float32)
        with np.errstate(all="ignore"):
            center = median_over_tickers(values)
            scale = MAD_TO_STD * median_over_tickers(np.abs(values - center))
            z = np.where(
                scale > 0, (values - center) / scale, np.where(np.isnan(values), np.nan, 0.0)
            )
        level = self.date_level if self.date_level is not None else np.zeros(values.shape[2], bool)
        z[:, :, level] = (values[:, :, level] - self.center[level]) / self.scale[level]
        return z

    def to_dict(self) -> dict[str, Any]:
        return {
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "clip": self.clip,
            "method": self.method,
            "date_level": None if self.date_level is None else self.date_level.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureScaler:
        date_level = state.get("date_level")
        return cls(
            np.asarray(state["center"], np.float32),
            np.asarray(state["scale"], np.float32),
            float(state["clip"]),
            state.get("method", "time_series"),
            None if date_level is None else np.asarray(date_level, bool),
        )


@dataclass(frozen=True)
class TargetScaler:
    """What the models learn and how their outputs become returns again.

    The training target is the labels after `cross_sectional_targets(method)`, standardised
    per horizon (mean and standard deviation on training rows) so every horizon's loss has
    the same scale. `inverse` maps outputs back to returns: raw targets directly; demeaned
    ones plus `level` (the training labels' mean); zscore and rank ones as `level` plus the
    output times `spread` (the root mean cross-sectional variance of training labels).
    """

    mean: np.ndarray
    std: np.ndarray
    method: str = "raw"
    level: np.ndarray | None = None
    spread: np.ndarray | None = None

    @classmethod
    def fit(cls, panel: PanelData, method: str = "raw") -> TargetScaler:
        """Fit on a view whose targets are raw labels (`targets_for_training` transforms)."""
        raw = np.where(panel.sample_mask[:, :, None], panel.targets, np.nan)
        rows = cross_sectional_targets(panel.targets, method)[panel.sample_mask]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(rows, axis=0)
            std = np.nanstd(rows, axis=0)
            level = np.nanmean(raw[panel.sample_mask], axis=0)
            spread = np.sqrt(np.nanmean(np.nanvar(raw, axis=1), axis=0))
        if not np.isfinite(mean).all():
            raise PanelDataError(
                f"training view has no labels for some horizons of {panel.horizons}"
            )
        std = np.where(std > 1e-12, std, 1.0)
        return cls(
            mean.astype(np.float32),
            std.astype(np.float32),
            method,
            np.nan_to_num(level).astype(np.float32),
            np.nan_to_num(spread, nan=1.0).astype(np.float32),
        )

    def targets_for_training(self, *views: PanelData) -> tuple[PanelData, ...]:
        """The views with their labels transformed by this scaler's method (views that share
        one labels array share one transformed array)."""
        done: dict[int, np.ndarray] = {}
        out = []
        for view in views:
            key = id(view.targets)
            if key not in done:
                done[key] = cross_sectional_targets(view.targets, self.method)
            out.append(dataclasses.replace(view, targets=done[key]))
        return tuple(out)

    def transform(self, targets: np.ndarray) -> np.ndarray:
        """Standardise targets already transformed by `targets_for_training`."""
        return (targets - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        """Map standardised outputs [..., H, K] (K point/quantile outputs) back to returns."""
        target = values * self.std[:, None] + self.mean[:, None]
        if self.method == "raw":
            return target
        assert self.level is not None and self.spread is not None
        if self.method == "demeaned":
            return target + self.level[:, None]
        return self.level[:, None] + target * self.spread[:, None]

    def to_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        state["method"] = self.method
        if self.level is not None and self.spread is not None:
            state["level"], state["spread"] = self.level.tolist(), self.spread.tolist()
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TargetScaler:
        level, spread = state.get("level"), state.get("spread")
        return cls(
            np.asarray(state["mean"], np.float32),
            np.asarray(state["std"], np.float32),
            state.get("method", "raw"),
            None if level is None else np.asarray(level, np.float32),
            None if spread is None else np.asarray(spread, np.float32),
        )
