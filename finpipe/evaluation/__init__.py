"""Evaluation stage: the walk-forward replay, portfolio simulation, baselines, regimes, the
backtest and its reports."""
