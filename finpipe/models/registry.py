"""Model families by name: create one from a name and parameters, list them, load a saved one.

The registry names each family's module and class without importing it, so choosing, listing
or describing families never imports PyTorch; a family's module is imported the first time
the family is created or loaded.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from finpipe.models.base import FORMAT_VERSION, META_FILE, Forecaster

SEQUENCE, TABULAR = "finpipe.models.sequence", "finpipe.models.tabular"
FACTORS = "finpipe.models.factors"


@dataclass(frozen=True)
class FamilyEntry:
    """Where a family's class lives, whether it is a PyTorch network, and its summary (the
    first paragraph of the class docstring; a test keeps them equal)."""

    module: str
    class_name: str
    pytorch: bool
    summary: str


FAMILIES: dict[str, FamilyEntry] = {
    "lstm": FamilyEntry(
        SEQUENCE,
        "LSTMForecaster",
        True,
        "LSTM over the window; optionally bidirectional and with attention pooling over time.",
    ),
    "gru": FamilyEntry(
        SEQUENCE, "GRUForecaster", True, "GRU over the window; same options as the LSTM."
    ),
    "transformer": FamilyEntry(
        SEQUENCE,
        "TransformerForecaster",
        True,
        "Causal Transformer encoder with learned or sinusoidal positions.",
    ),
    "cnn_lstm": FamilyEntry(
        SEQUENCE, "CNNLSTMForecaster", True, "Multi-kernel causal convolutions feeding an LSTM."
    ),
    "tft": FamilyEntry(
        SEQUENCE,
        "TFTForecaster",
        True,
        "Compact Temporal Fusion Transformer with quantile outputs (pinball loss by default).",
    ),
    "ridge": FamilyEntry(
        TABULAR,
        "RidgeForecaster",
        False,
        "Ridge regression (L2) on the latest standardised features, all horizons jointly.",
    ),
    "elastic_net": FamilyEntry(
        TABULAR,
        "ElasticNetForecaster",
        False,
        "Elastic net (L1 + L2) on the latest standardised features.",
    ),
    "random_forest": FamilyEntry(
        TABULAR,
        "RandomForestForecaster",
        False,
        "Random forest, all horizons jointly; its trees give stochastic samples.",
    ),
    "hist_gbm": FamilyEntry(
        TABULAR,
        "HistGBMForecaster",
        False,
        "Histogram gradient boosting, one model per horizon (plus one per quantile if asked), "
        "early-stopped on the validation view.",
    ),
    "momentum_factor": FamilyEntry(
        FACTORS,
        "MomentumFactor",
        False,
        "12-1 month momentum (`mom_12_1`): last year's winners, skipping the last month.",
    ),
    "reversal_factor": FamilyEntry(
        FACTORS, "ReversalFactor", False, "Short-term reversal (`strev_5`): last week's losers."
    ),
    "low_vol_factor": FamilyEntry(
        FACTORS,
        "LowVolatilityFactor",
        False,
        "Low volatility (minus `rv_63`): the calmest names of the last quarter.",
    ),
}


def list_models() -> list[str]:
    """Registered family names, PyTorch families first."""
    return list(FAMILIES)


def family_entry(name: str) -> FamilyEntry:
    """The registry entry of family `name`."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {list_models()}") from None


def is_pytorch_family(name: str) -> bool:
    """Whether family `name` is a PyTorch sequence model (device, checkpoints, MC dropout)."""
    return family_entry(name).pytorch


@cache
def model_class(name: str) -> type[Forecaster]:
    """The Forecaster class registered under `name` (imports its module)."""
    entry = family_entry(name)
    family = getattr(importlib.import_module(entry.module), entry.class_name)
    if family.name != name:
        raise TypeError(
            f"{entry.module}.{entry.class_name} is family {family.name!r}, not {name!r}"
        )
    return family


def create_model(name: str, **params: Any) -> Forecaster:
    """A new, unfitted model of family `name`; unknown parameters raise TypeError."""
    return model_class(name)(**params)


class UnreadableModelError(ValueError):
    """A saved model whose files are missing or do not load; the message names the file."""


def load_model(path: str | os.PathLike[str]) -> Forecaster:
    """Load a model saved with `Forecaster.save`, whatever its family; UnreadableModelError
    naming the file when its files are missing, truncated or not a finpipe model."""
    directory = Path(path)
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise UnreadableModelError(
            f"{directory / META_FILE} is unreadable ({type(error).__name__}: {error})"
        ) from error
    if meta.get("format") != FORMAT_VERSION:
        raise UnreadableModelError(f"{directory}: unsupported model format {meta.get('format')}")
    if meta.get("family") not in FAMILIES:
        raise UnreadableModelError(f"{directory}: unknown model family {meta.get('family')!r}")
    family = model_class(meta["family"])
    try:
        return family.restore(directory, meta)
    except Exception as error:
        # joblib, pickle and torch raise many types for a truncated or foreign file.
        raise UnreadableModelError(
            f"{directory}: the saved {meta['family']} model does not load "
            f"({type(error).__name__}: {error})"
        ) from error
