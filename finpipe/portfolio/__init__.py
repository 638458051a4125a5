"""Portfolio stage: target weights from forecasts."""
