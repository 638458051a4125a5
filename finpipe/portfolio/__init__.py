"""Portfolio stage: the risk model, construction methods, risk figures, factor scores and
orders that turn forecasts into target portfolios."""
