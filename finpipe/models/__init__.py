"""Forecasting models behind one interface: PyTorch sequence families and scikit-learn
tabular families, the panel data they train on, and tuning. Importing this package does not
import PyTorch; the sequence families import it when they are created or loaded."""

from finpipe.models.base import Forecaster, LeakageError, NotFittedError, TrainingFailedError
from finpipe.models.panel_data import FeatureScaler, PanelData, PanelDataError, time_split
from finpipe.models.registry import create_model, list_models, load_model, model_class

__all__ = [
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
    "time_split",
]
