"""Forecasting stage: ensembles of the trained members, calibrated intervals, the predictions
table and its history, signals and ranking."""
