"""Liquidity and trading-cost proxies from daily bars, averaged over a window of w dates.

* `cs_spread_w`: Corwin-Schultz (2012) high-low spread estimate. From two consecutive days,
  beta = ln(H_t/L_t)^2 + ln(H_t-1/L_t-1)^2, gamma = ln(max(H_t, H_t-1) / min(L_t, L_t-1))^2,
  alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2)),
  S = 2 (e^alpha - 1) / (1 + e^alpha), negative estimates set to 0 (as in the paper), then
  averaged. The paper's overnight-gap adjustment is not applied.
* `roll_spread_w`: Roll (1984), 2 sqrt(-cov(r_t, r_t-1)) on log returns (a relative spread),
  0 where the autocovariance is positive.
* `amihud_w`: Amihud (2002) illiquidity, mean |r_t| / (close_t x volume_t), per million of
  currency traded.
* `gap`: overnight gap ln(open_t / close_t-1); `gap_abs_w`: its mean absolute size.
"""

from __future__ import annotations

import numpy as np

from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel
from finpipe.features.rolling import RollingMoments, divide, lag, log
from finpipe.features.volatility import log_returns

CS_K = 3.0 - 2.0 * np.sqrt(2.0)


def corwin_schultz(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Daily two-day Corwin-Schultz spread estimates, floored at 0."""
    hl = log(high) - log(low)
    beta = hl * hl + lag(hl * hl, 1)
    span = log(np.fmax(high, lag(high, 1))) - log(np.fmin(low, lag(low, 1)))
    span[np.isnan(lag(high, 1)) | np.isnan(lag(low, 1))] = np.nan
    gamma = span * span
    with np.errstate(invalid="ignore"):
        alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / CS_K - np.sqrt(gamma / CS_K)
        spread = 2.0 * (np.exp(alpha) - 1.0) / (1.0 + np.exp(alpha))
        return np.where(spread < 0, 0.0, spread)


def _range(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    w = inputs.config.microstructure_window
    spread = corwin_schultz(panel.fields["high"], panel.fields["low"])
    yield f"cs_spread_{w}", RollingMoments(spread, max_window=w).mean(w)


def _close(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    w = inputs.config.microstructure_window
    r = log_returns(panel.fields["close"])
    autocov = RollingMoments(r, lag(r, 1), max_window=w).cov(w)
    yield f"roll_spread_{w}", 2.0 * np.sqrt(np.maximum(-autocov, 0.0))


def _volume(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    w = inputs.config.microstructure_window
    r = log_returns(panel.fields["close"])
    dollars = panel.fields["close"] * panel.fields["volume"]
    impact = 1e6 * divide(np.abs(r), dollars)
    yield f"amihud_{w}", RollingMoments(impact, max_window=w).mean(w)


def _gap(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    w = inputs.config.microstructure_window
    gap = log(panel.fields["open"]) - log(lag(panel.fields["close"], 1))
    yield "gap", gap
    yield f"gap_abs_{w}", RollingMoments(np.abs(gap), max_window=w).mean(w)


def _window_names(*stems: str):
    return lambda config, _: [
        s if s == "gap" else f"{s}_{config.microstructure_window}" for s in stems
    ]


FAMILIES = (
    Family(
        "microstructure_range",
        "microstructure",
        ("high", "low"),
        _window_names("cs_spread"),
        _range,
    ),
    Family(
        "microstructure_close",
        "microstructure",
        ("adj_close",),
        _window_names("roll_spread"),
        _close,
    ),
    Family(
        "microstructure_volume", "microstructure", ("volume",), _window_names("amihud"), _volume
    ),
    Family(
        "microstructure_gap", "microstructure", ("open",), _window_names("gap", "gap_abs"), _gap
    ),
)
