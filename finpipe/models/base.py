"""The Forecaster interface every model family honours (scikit-learn style).

    model = create_model("lstm", horizons=[1, 5, 20], hidden_size=32)
    model.fit(train, valid, progress=log_epoch)     # PanelData views from time_split
    predictions = model.predict(test)               # long: date, ticker, horizon, prediction
    model.save(path); same = load_model(path)

Every model predicts all its horizons at once. Feature and target scaling are fit on the
training view only and saved with the model. After `fit`, `metrics` holds validation
metrics (loss, and per horizon rank IC, IC, directional accuracy, MSE) and `history` one
dict per epoch; `progress` receives those dicts as they happen, so an orchestrator can log
them without this package knowing about it.
"""

from __future__ import annotations

import copy
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd

from finpipe.core.keys import ROW_KEY
from finpipe.core.metrics import forecast_metrics
from finpipe.core.storage import staged_folder
from finpipe.models.panel_data import (
    NO_LABEL_END,
    FeatureScaler,
    PanelData,
    PanelDataError,
    TargetScaler,
    time_split,
)
from finpipe.models.selection import select_features

if TYPE_CHECKING:
    import optuna

FORMAT_VERSION = 1
META_FILE = "model.json"

# Receives one dict per epoch (train/valid loss, samples/s, ...) as training goes.
ProgressCallback = Callable[[dict[str, Any]], None]

# Settings every family takes, besides its own hyperparameters.
COMMON_DEFAULTS: dict[str, Any] = {
    "horizons": None,  # None: every horizon in the training labels
    "valid_fraction": 0.2,  # share of training dates held out when fit() gets no valid set
    "seed": 0,
    "target": "raw",  # raw, demeaned, zscore or rank: per date, across tickers
    "feature_scaling": "time_series",  # or cross_sectional: per date, across tickers
    "feature_selection": None,  # None, permutation or rfe (finpipe.models.selection)
    "max_features": 40,  # how many columns feature_selection keeps
}
# Training rows feature selection reads at most (a seeded sample of the training view).
SELECTION_ROWS = 5_000


class NotFittedError(RuntimeError):
    """predict/save called before fit."""


class LeakageError(ValueError):
    """Training labels reach into the validation period."""


class TrainingFailedError(RuntimeError):
    """Training diverged on the first attempt and on the lower-learning-rate retry."""


def quantile_column(level: float) -> str:
    """Name of the prediction column for a quantile level, e.g. 0.1 -> 'quantile_0.1'."""
    return f"quantile_{level:g}"


class Forecaster(ABC):
    """Fit on a training panel view, predict every horizon, save and load, report metrics."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    # Whether the family can emit quantile columns (when configured for them) and
    # stochastic samples from predict_samples.
    supports_quantiles: ClassVar[bool] = False
    supports_samples: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise TypeError(
                f"{self.name} does not take {unknown}; its parameters are {sorted(self.defaults)}"
            )
        self.params: dict[str, Any] = {**copy.deepcopy(self.defaults), **params}
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.feature_names: tuple[str, ...] | None = None
        self.horizons: tuple[int, ...] | None = None
        self.feature_scaler: FeatureScaler | None = None
        self.target_scaler: TargetScaler | None = None

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.params.items() if self.defaults.get(k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def get_params(self) -> dict[str, Any]:
        """The model's parameters, enough to rebuild it with create_model."""
        return dict(self.params)

    @classmethod
    @abstractmethod
    def search_space(cls, trial: optuna.Trial) -> dict[str, Any]:
        """Hyperparameters an Optuna trial proposes for this family."""

    @abstractmethod
    def fit(
        self,
        train: PanelData,
        valid: PanelData | None = None,
        progress: ProgressCallback | None = None,
    ) -> Self:
        """Fit on `train`, early-stopping and reporting metrics on `valid`.

        Without `valid`, the last `valid_fraction` of the training dates is held out with
        an embargo of the longest horizon.
        """

    @abstractmethod
    def _predict_outputs(self, panel: PanelData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(date_idx, ticker_idx, outputs [n, H, K] in return units) for the view's samples."""

    def predict(self, data: PanelData | pd.DataFrame) -> pd.DataFrame:
        """Long predictions `date, ticker, horizon, prediction` for every sample of `data`,
        plus a `quantile_<level>` column per quantile where the model has them."""
        panel = self._aligned(data)
        d_idx, t_idx, outputs = self._predict_outputs(panel)
        frame = self._long_frame(panel, d_idx, t_idx, self._point(outputs))
        for k, level in enumerate(self._quantile_levels()):
            frame[quantile_column(level)] = outputs[:, :, k].reshape(-1).astype(np.float64)
        return frame

    def predict_samples(
        self, data: PanelData | pd.DataFrame, n: int, seed: int = 0
    ) -> pd.DataFrame:
        """`n` stochastic predictions per row: `date, ticker, horizon, sample, prediction`."""
        raise NotImplementedError(
            f"{self.name} has no stochastic samples; use a PyTorch family (MC dropout) "
            "or random_forest (per-tree predictions)"
        )

    def _quantile_levels(self) -> tuple[float, ...]:
        """Quantile levels of the K outputs, or () for a single point output."""
        return ()

    def _point(self, outputs: np.ndarray) -> np.ndarray:
        """Point prediction [n, H] from outputs [n, H, K]: the median for quantile outputs."""
        levels = self._quantile_levels()
        return outputs[:, :, levels.index(0.5)] if levels else outputs[:, :, 0]

    def _long_frame(
        self, panel: PanelData, d_idx: np.ndarray, t_idx: np.ndarray, values: np.ndarray
    ) -> pd.DataFrame:
        n_h = len(self.horizons or ())
        return pd.DataFrame(
            {
                "date": np.repeat(panel.dates.values[d_idx], n_h),
                "ticker": np.repeat(panel.tickers.values[t_idx], n_h),
                "horizon": np.tile(np.array(self.horizons, np.int64), len(d_idx)),
                "prediction": values.reshape(-1).astype(np.float64),
            }
        )

    # -- shared fit plumbing -------------------------------------------------------------

    def _prepare(
        self, train: PanelData, valid: PanelData | None
    ) -> tuple[PanelData, PanelData, PanelData]:
        """Choose horizons, hold out validation if needed, check for leakage, choose the
        columns (`feature_selection`) and fit the scalers, all on the training view.
        Returns (train, valid) with the training targets (`target`), and valid with its
        labels as they are, for the validation metrics."""
        requested = self.params["horizons"]
        horizons = tuple(int(h) for h in (requested or train.horizons))
        missing = sorted(set(horizons) - set(train.horizons))
        if not horizons or missing:
            raise PanelDataError(
                f"{self.name}: labels lack horizons {missing or 'all'}; panel has {train.horizons}"
            )
        train = _with_horizons(train, horizons)
        if valid is None:
            train, valid = time_split(train, valid_fraction=self.params["valid_fraction"])
        else:
            valid = _with_horizons(valid, horizons)
        _check_no_overlap(train, valid)
        if train.n_samples == 0 or not train.has_labels:
            raise PanelDataError(f"{self.name}: the training view has no labelled samples")
        self.horizons = horizons
        self.target_scaler = TargetScaler.fit(train, self.params["target"])
        self.feature_names = train.feature_names
        if self.params["feature_selection"]:
            self.feature_names = tuple(self._select_features(train))
            train, valid = self._aligned(train), self._aligned(valid)
        self.feature_scaler = FeatureScaler.fit(train, method=self.params["feature_scaling"])
        fit_train, fit_valid = self.target_scaler.targets_for_training(train, valid)
        return fit_train, fit_valid, valid

    def _select_features(self, train: PanelData) -> list[str]:
        """`max_features` columns by `finpipe.models.selection` on a seeded sample of the
        training rows, for the training target averaged over the horizons."""
        assert self.target_scaler is not None
        d_idx, t_idx = train.sample_index(require_target=True)
        rng = np.random.default_rng(self.params["seed"])
        if len(d_idx) > SELECTION_ROWS:
            pick = np.sort(rng.choice(len(d_idx), SELECTION_ROWS, replace=False))
            d_idx, t_idx = d_idx[pick], t_idx[pick]
        (target_view,) = self.target_scaler.targets_for_training(train)
        with np.errstate(all="ignore"):
            y = np.nanmean(self.target_scaler.transform(target_view.targets[d_idx, t_idx]), axis=1)
        result = select_features(
            train.features[d_idx, t_idx],
            y,
            train.feature_names,
            train.dates.values[d_idx],
            train.label_end[d_idx, t_idx].view("datetime64[ns]"),
            method=self.params["feature_selection"],
            max_features=int(self.params["max_features"]),
            random_state=int(self.params["seed"]),
        )
        return result.columns

    def _aligned(self, data: PanelData | pd.DataFrame) -> PanelData:
        """`data` as a panel whose features are in this model's training order."""
        if self.feature_names is None or self.horizons is None:
            raise NotFittedError(f"{self.name} is not fitted; call fit() first")
        panel = data if isinstance(data, PanelData) else PanelData.from_frames(data)
        if panel.feature_names == self.feature_names:
            return panel
        missing = [f for f in self.feature_names if f not in panel.feature_names]
        if missing:
            raise PanelDataError(f"{self.name}: input lacks features it was trained on: {missing}")
        order = [panel.feature_names.index(f) for f in self.feature_names]
        return PanelData(
            dates=panel.dates,
            tickers=panel.tickers,
            feature_names=self.feature_names,
            horizons=panel.horizons,
            features=panel.features[:, :, order],
            targets=panel.targets,
            label_end=panel.label_end,
            sample_mask=panel.sample_mask,
        )

    def validation_metrics(self, valid: PanelData) -> dict[str, float]:
        """Flat per-horizon metrics of this model's predictions on a labelled view."""
        predictions = self.predict(valid)
        labelled = predictions.merge(valid.labels_frame(), on=list(ROW_KEY), how="inner")
        table = forecast_metrics(labelled)
        out: dict[str, float] = {"n_valid": float(len(labelled))}
        for horizon, row in table.iterrows():
            for metric in ("rank_ic", "rank_ic_se", "ic", "directional_accuracy", "mse"):
                out[f"{metric}_h{horizon}"] = float(row[metric])
        return out

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted model to directory `path`, replacing it atomically."""
        if self.feature_scaler is None or self.target_scaler is None:
            raise NotFittedError(f"{self.name} is not fitted; nothing to save")
        target = Path(path)
        with staged_folder(target) as staging:
            folder = Path(staging)
            folder.mkdir()
            meta = {
                "format": FORMAT_VERSION,
                "family": self.name,
                "params": self.params,
                "feature_names": list(self.feature_names or ()),
                "horizons": list(self.horizons or ()),
                "feature_scaler": self.feature_scaler.to_dict(),
                "target_scaler": self.target_scaler.to_dict(),
                "metrics": self.metrics,
                "history": self.history,
                "state": self._save_state(folder),
            }
            (folder / META_FILE).write_text(json.dumps(meta, indent=1, default=_jsonable))
        return target

    @classmethod
    def restore(cls, directory: Path, meta: dict[str, Any]) -> Self:
        """A fitted model of this family from a folder written by `save` and its model.json
        (`finpipe.models.registry.load_model` finds the family and calls this)."""
        model = cls(**meta["params"])
        model.feature_names = tuple(meta["feature_names"])
        model.horizons = tuple(int(h) for h in meta["horizons"])
        model.feature_scaler = FeatureScaler.from_dict(meta["feature_scaler"])
        model.target_scaler = TargetScaler.from_dict(meta["target_scaler"])
        model.metrics = meta["metrics"]
        model.history = meta["history"]
        model._load_state(directory, meta["state"])
        return model

    @abstractmethod
    def _save_state(self, directory: Path) -> dict[str, Any]:
        """Write fitted state into `directory`; return JSON-able facts needed to load it."""

    @abstractmethod
    def _load_state(self, directory: Path, state: dict[str, Any]) -> None:
        """Restore what `_save_state` wrote."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | np.ndarray):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in model.json")


def _with_horizons(panel: PanelData, horizons: tuple[int, ...]) -> PanelData:
    """The view with target columns for exactly `horizons` (no copy if already so)."""
    if panel.horizons == horizons:
        return panel
    missing = sorted(set(horizons) - set(panel.horizons))
    if missing:
        raise PanelDataError(f"panel lacks labels for horizons {missing}")
    order = [panel.horizons.index(h) for h in horizons]
    return PanelData(
        dates=panel.dates,
        tickers=panel.tickers,
        feature_names=panel.feature_names,
        horizons=horizons,
        features=panel.features,
        targets=panel.targets[:, :, order],
        label_end=panel.label_end,
        sample_mask=panel.sample_mask,
    )


def _check_no_overlap(train: PanelData, valid: PanelData) -> None:
    """Refuse training labels that end on or after the first validation date."""
    valid_dates = valid.sample_dates()
    if len(valid_dates) == 0:
        raise PanelDataError("the validation view has no samples")
    ends = train.label_end[train.sample_mask]
    ends = ends[ends != NO_LABEL_END]
    if len(ends) and ends.max() >= valid_dates[0].value:
        raise LeakageError(
            f"training labels end as late as {pd.Timestamp(ends.max()).date()}, on or after the "
            f"first validation date {valid_dates[0].date()}; split with time_split(), which "
            "purges by label_end and embargoes the longest horizon"
        )
