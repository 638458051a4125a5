"""Vectorised feature engine over the whole price panel: see `engine` and one module per family."""

from finpipe.features.config import FeatureConfig
from finpipe.features.engine import (
    FAMILIES,
    GROUPS,
    FeatureSet,
    build_features,
    family_names,
    invalid_columns,
)
from finpipe.features.garch import GarchParams, fit_garch

__all__ = [
    "FAMILIES",
    "GROUPS",
    "FeatureConfig",
    "FeatureSet",
    "GarchParams",
    "build_features",
    "family_names",
    "fit_garch",
    "invalid_columns",
]
