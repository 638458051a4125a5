"""Names every stage shares: the key of a forecast row and the ensembles' model names."""

from __future__ import annotations

# One forecast: a ticker's return over a horizon, predicted at the close of a date.
ROW_KEY = ("date", "ticker", "horizon")

# One row of the features table: a ticker at the close of a date.
FEATURE_KEY = ("date", "ticker")

# Model names of the combined forecasts in every predictions table.
STACKED_ENSEMBLE = "ensemble"
WEIGHTED_ENSEMBLE = "ensemble_weighted"
