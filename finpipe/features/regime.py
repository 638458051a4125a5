"""Market regimes of the benchmark from its past closes only: the one definition of "bull",
"bear" and "high volatility" in finpipe. The `regime` feature family gives them to the
models (date-level, shared by every ticker); the backtest reports performance by them
(`finpipe.evaluation.regimes`).

Rules (every value at date t reads closes up to t, so nothing changes when later data
arrives):

* trend: with A the 200-date moving average of the close and M the 60-date log return,
  **bull** (+1) when close > (1 + 2%) A and M > 0, **bear** (-1) when close < (1 - 2%) A
  and M < 0, **sideways** (0) otherwise (price within 2% of its average, or price and
  momentum disagree). Undefined for the first 200 dates.
* volatility: realised volatility is the annualised standard deviation of the last 21
  daily log returns; its percentile among all values so far (an expanding window, so no
  future distribution is used) gives **low** (-1) at or below 1/3, **high** (+1) above 2/3,
  **normal** (0) between. Undefined until 252 volatility values exist.

Columns of the family: `regime_trend` (close / A - 1), `regime_trend_state` (+1, 0, -1),
`regime_vol` (annualised 21-date volatility), `regime_vol_pct` (its expanding
percentile) and `regime_vol_state` (-1, 0, +1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finpipe.core.metrics import TRADING_DAYS
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel

TREND_WINDOW = 200
MOMENTUM_WINDOW = 60
TREND_BAND = 0.02
VOL_WINDOW = 21
VOL_MIN_HISTORY = 252
COLUMNS = ["regime_trend", "regime_trend_state", "regime_vol", "regime_vol_pct", "regime_vol_state"]


def trend_gap(close: pd.Series) -> pd.Series:
    """close / its 200-date moving average - 1 (NaN before 200 dates)."""
    average = close.rolling(TREND_WINDOW, min_periods=TREND_WINDOW).mean()
    return close / average - 1.0


def trend_state(close: pd.Series) -> pd.Series:
    """+1 bull, -1 bear, 0 sideways per date (NaN before enough history); see the rules."""
    gap = trend_gap(close)
    momentum = np.log(close / close.shift(MOMENTUM_WINDOW))
    state = np.select(
        [(gap > TREND_BAND) & (momentum > 0), (gap < -TREND_BAND) & (momentum < 0)],
        [1.0, -1.0],
        0.0,
    )
    return pd.Series(np.where(gap.notna() & momentum.notna(), state, np.nan), index=close.index)


def realised_volatility(close: pd.Series) -> pd.Series:
    """Annualised standard deviation of the last 21 daily log returns."""
    returns = np.log(close).diff()
    return returns.rolling(VOL_WINDOW, min_periods=VOL_WINDOW).std() * np.sqrt(TRADING_DAYS)


def volatility_percentile(close: pd.Series) -> pd.Series:
    """Percentile of today's realised volatility among all its values so far."""
    vol = realised_volatility(close)
    pct = vol.dropna().expanding(min_periods=VOL_MIN_HISTORY).rank(pct=True)
    return pct.reindex(close.index)


def volatility_state(close: pd.Series) -> pd.Series:
    """-1 low, +1 high, 0 normal volatility per date (NaN before enough history)."""
    pct = volatility_percentile(close)
    state = np.select([pct <= 1.0 / 3.0, pct > 2.0 / 3.0], [-1.0, 1.0], 0.0)
    return pd.Series(np.where(pct.notna(), state, np.nan), index=close.index)


def _regime(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    close = pd.Series(inputs.benchmark_close, index=panel.dates)
    yield "regime_trend", trend_gap(close).to_numpy()
    yield "regime_trend_state", trend_state(close).to_numpy()
    yield "regime_vol", realised_volatility(close).to_numpy()
    yield "regime_vol_pct", volatility_percentile(close).to_numpy()
    yield "regime_vol_state", volatility_state(close).to_numpy()


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
