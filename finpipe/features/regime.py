"""Market regime of the benchmark, from its past only; date-level, shared by every ticker.

* `regime_trend`: benchmark / its w-date moving average - 1; `regime_bull`: 1 above it, else 0.
* `regime_vol`: annualised standard deviation of the benchmark's daily log returns over v dates;
  `regime_vol_pct`: its percentile among the last L dates' values; `regime_high_vol`: 1 when
  that percentile is at least the configured threshold, else 0.
"""

from __future__ import annotations

import numpy as np

from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel
from finpipe.features.rolling import RollingMoments, divide, lag, log, rolling_rank

COLUMNS = ["regime_trend", "regime_bull", "regime_vol", "regime_vol_pct", "regime_high_vol"]


def _regime(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    level = inputs.benchmark_close[:, None]
    w = config.regime_trend_window
    average = RollingMoments(level, max_window=w).mean(w)
    trend = divide(level, average) - 1.0
    yield "regime_trend", trend[:, 0]
    yield "regime_bull", np.where(np.isnan(trend), np.nan, (trend > 0).astype(np.float64))[:, 0]
    returns = log(level) - lag(log(level), 1)
    v = config.regime_vol_window
    vol = np.sqrt(config.annualization) * RollingMoments(returns, max_window=v).std(v)
    yield "regime_vol", vol[:, 0]
    lookback = config.regime_vol_lookback
    pct = rolling_rank(vol, (lookback,))[lookback]
    yield "regime_vol_pct", pct[:, 0]
    high = np.where(np.isnan(pct), np.nan, (pct >= config.regime_high_vol_pct).astype(np.float64))
    yield "regime_high_vol", high[:, 0]


def _no_benchmark(inputs: FamilyInputs) -> str | None:
    return None if inputs.benchmark_close is not None else "needs a benchmark frame; none given"


FAMILIES = (
    Family(
        "regime",
        "regime",
        (),
        lambda *_: list(COLUMNS),
        _regime,
        scope="panel",
        unavailable=_no_benchmark,
    ),
)
