"""Train one model family on the research period: the step each model asset runs.

The panel is split at `train_end`: everything the model learns from (training and
validation) has labels that end on or before it; the out-of-sample period starts after
it. Inside the research period the last `valid_fraction` of dates is held out for early
stopping, purged and embargoed by the longest horizon (see `panel.time_split`).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from finpipe.models.base import Forecaster, ProgressCallback
from finpipe.models.panel_data import PanelData, time_split
from finpipe.models.registry import create_model


@dataclass
class TrainingRun:
    """A fitted model with the facts its asset reports."""

    model: Forecaster
    train_samples: int
    valid_samples: int
    wall_seconds: float
    parameter_count: int | None
    device: str


def research_split(panel: PanelData, train_end: pd.Timestamp) -> tuple[PanelData, PanelData]:
    """(research period whose labels end by `train_end`, out-of-sample period after it)."""
    later = panel.dates > pd.Timestamp(train_end)
    if not later.any():
        return panel, panel.view(np.zeros_like(panel.sample_mask))
    return time_split(panel, valid_start=panel.dates[np.argmax(later)])


def train_valid_split(
    panel: PanelData, train_end: pd.Timestamp, valid_fraction: float
) -> tuple[PanelData, PanelData]:
    """(training view, validation tail) of the research period: what every member trains
    and early-stops on, and so what the stacking fit and tuning must reuse."""
    research, _ = research_split(panel, train_end)
    return time_split(research, valid_fraction=valid_fraction)


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
    """Fit family `name` on `train`, early-stopping on `valid` (see `train_valid_split`)."""
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
