"""Train one model family on a fit window of the time plan: what each model asset and
each replay fold runs.

The window (`finpipe.core.time_plan.FitWindow`) says which dates the model fits on and
which recent tail it early-stops on; everything it learns from ends before the window's
label cutoff.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.time_plan import FitWindow
from finpipe.models.base import Forecaster, LeakageError, ProgressCallback
from finpipe.models.panel_data import NO_LABEL_END, PanelData
from finpipe.models.registry import create_model, load_model


@dataclass
class TrainingRun:
    """A fitted model with the facts its asset reports."""

    model: Forecaster
    train_samples: int
    valid_samples: int
    wall_seconds: float
    parameter_count: int | None
    device: str


def window_views(panel: PanelData, window: FitWindow) -> tuple[PanelData, PanelData]:
    """(dates to fit on, early-stopping tail) of a fit window of the time plan.

    Raises LeakageError if any label of either view ends on or after the window's label
    cutoff: the plan guarantees it cannot, so one that does means the labels do not match
    the plan's calendar.
    """
    dates = panel.dates
    fit = panel.view(((dates >= window.train_start) & (dates <= window.fit_end))[:, None])
    tail = panel.view(((dates >= window.valid_start) & (dates <= window.valid_end))[:, None])
    for view in (fit, tail):
        ends = view.label_end[view.sample_mask]
        ends = ends[ends != NO_LABEL_END]
        if len(ends) and ends.max() >= window.label_cutoff.value:
            raise LeakageError(
                f"{window.name}: a training label ends {pd.Timestamp(ends.max()).date()}, on or "
                f"after the label cutoff {window.label_cutoff.date()} of the fit at "
                f"{window.as_of.date()}; the labels do not match the time plan's calendar"
            )
    return fit, tail


def parameter_count(model: Forecaster) -> int | None:
    """Trainable parameters of a PyTorch family; None for the scikit-learn families."""
    module = getattr(model, "module", None)
    if module is None:
        return None
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def train_family(
    name: str,
    train: PanelData,
    valid: PanelData,
    params: dict[str, Any],
    progress: ProgressCallback | None = None,
) -> TrainingRun:
    """Fit family `name` on `train`, early-stopping on `valid` (see `window_views`)."""
    started = time.perf_counter()
    model = create_model(name, horizons=list(train.horizons), **params)
    model.fit(train, valid, progress=progress)
    module = getattr(model, "module", None)
    device = str(next(module.parameters()).device) if module is not None else "cpu"
    return TrainingRun(
        model=model,
        train_samples=train.n_samples,
        valid_samples=valid.n_samples,
        wall_seconds=time.perf_counter() - started,
        parameter_count=parameter_count(model),
        device=device,
    )


FITS_META = "fits.json"


def save_fits(runs: Mapping[str, TrainingRun], folder: Path, facts: Mapping[str, Any]) -> None:
    """Write fitted runs into `folder` (a model folder per family) with `facts`: what they
    were fitted on, which a reader compares before reusing them."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = {}
    for family, run in runs.items():
        run.model.save(folder / family)
        summary[family] = {
            "train_samples": run.train_samples,
            "valid_samples": run.valid_samples,
            "wall_seconds": run.wall_seconds,
            "parameter_count": run.parameter_count,
            "device": run.device,
        }
    meta = {"facts": dict(facts), "runs": summary}
    (folder / FITS_META).write_text(json.dumps(meta, indent=1, default=str))


def load_fits(folder: Path) -> tuple[dict[str, Any], dict[str, TrainingRun]]:
    """(facts, runs) written by `save_fits`; empty when there is nothing readable there."""
    try:
        meta = json.loads((folder / FITS_META).read_text())
        runs = {
            family: TrainingRun(model=load_model(folder / family), **facts)
            for family, facts in meta["runs"].items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}, {}
    return meta["facts"], runs


def same_fit(model: Forecaster, family: str, params: Mapping[str, Any], horizons: tuple) -> bool:
    """Whether `model` is what `train_family(family, ..., params)` fits on views with
    `horizons` (same family, same parameters after defaults; the views are the caller's)."""
    if model.name != family:
        return False
    expected = create_model(family, horizons=list(horizons), **params).params
    stored = json.loads(json.dumps(model.params, default=list))
    return stored == json.loads(json.dumps(expected, default=list))


def training_curve_png(history: list[dict[str, Any]], title: str) -> bytes | None:
    """Train and validation loss per epoch as a PNG; None when there are no epochs."""
    epochs = [h for h in history if "epoch" in h]
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    x = [h["epoch"] for h in epochs]
    for key in ("train_loss", "valid_loss"):
        ax.plot(x, [h.get(key, np.nan) for h in epochs], marker="o", label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
