"""Forecasting models behind one interface: PyTorch sequence families and scikit-learn
tabular families, the panel data they train on, the shared training loop and tuning."""

from finpipe.models.base import Forecaster, LeakageError, NotFittedError
from finpipe.models.panel_data import FeatureScaler, PanelData, PanelDataError, time_split
from finpipe.models.registry import (
    MODEL_REGISTRY,
    create_model,
    list_models,
    load_model,
    model_class,
)
from finpipe.models.torch_loop import TrainingFailedError, select_device

__all__ = [
    "MODEL_REGISTRY",
    "FeatureScaler",
    "Forecaster",
    "LeakageError",
    "NotFittedError",
    "PanelData",
    "PanelDataError",
    "TrainingFailedError",
    "create_model",
    "list_models",
    "load_model",
    "model_class",
    "select_device",
    "time_split",
]
