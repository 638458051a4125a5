"""Model families by name: create one from a name and parameters, list them, load a saved one."""

from __future__ import annotations

import os
from typing import Any

from finpipe.models.base import Forecaster
from finpipe.models.sequence import (
    CNNLSTMForecaster,
    GRUForecaster,
    LSTMForecaster,
    SequenceForecaster,
    TFTForecaster,
    TransformerForecaster,
)
from finpipe.models.tabular import (
    ElasticNetForecaster,
    HistGBMForecaster,
    RandomForestForecaster,
    RidgeForecaster,
)

MODEL_REGISTRY: dict[str, type[Forecaster]] = {
    family.name: family
    for family in (
        LSTMForecaster,
        GRUForecaster,
        TransformerForecaster,
        CNNLSTMForecaster,
        TFTForecaster,
        RidgeForecaster,
        ElasticNetForecaster,
        RandomForestForecaster,
        HistGBMForecaster,
    )
}


def list_models() -> list[str]:
    """Registered family names, PyTorch families first."""
    return list(MODEL_REGISTRY)


def is_pytorch_family(name: str) -> bool:
    """Whether family `name` is a PyTorch sequence model (device, checkpoints, MC dropout)."""
    return issubclass(model_class(name), SequenceForecaster)


def model_class(name: str) -> type[Forecaster]:
    """The Forecaster class registered under `name`."""
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered models: {list_models()}") from None


def create_model(name: str, **params: Any) -> Forecaster:
    """A new, unfitted model of family `name`; unknown parameters raise TypeError."""
    return model_class(name)(**params)


def load_model(path: str | os.PathLike[str]) -> Forecaster:
    """Load a model saved with `Forecaster.save`, whatever its family."""
    return Forecaster.load(path)
