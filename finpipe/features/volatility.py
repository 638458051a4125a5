"""Volatility: realized volatility and its term structure, range-based estimators, EWMA, GARCH.

All volatilities are of daily log returns, annualised by sqrt(annualization):

* `rv_w`: sample standard deviation (ddof=1) over w dates; `rv_ratio_a_b` = rv_a / rv_b for
  consecutive windows (a short-over-long term structure).
* `parkinson_w`: sqrt(mean(ln(H/L)^2) / (4 ln 2)) (Parkinson 1980).
* `garman_klass_w`: sqrt(mean(0.5 ln(H/L)^2 - (2 ln 2 - 1) ln(C/O)^2)) (Garman-Klass 1980).
* `ewma_vol`: RiskMetrics, s2[t] = lambda s2[t-1] + (1 - lambda) r[t]^2, started at r^2.
* `garch_vol`: the GARCH(1,1) forecast for t+1 made at the close of t, with parameters fitted
  on a training window by `fit_garch` and passed in `FeatureConfig.garch`.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from finpipe.features.config import FeatureConfig
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.garch import garch_forecast
from finpipe.features.price_panel import PricePanel
from finpipe.features.rolling import RollingMoments, ewm, ffill, lag, log


def log_returns(close: np.ndarray) -> np.ndarray:
    return log(close) - log(lag(close, 1))


def _ratio_pairs(config: FeatureConfig) -> list[tuple[int, int]]:
    windows = sorted(config.volatility_windows)
    return list(pairwise(windows))


def _close_names(config: FeatureConfig, _: frozenset[str]) -> list[str]:
    rv = [f"rv_{w}" for w in config.volatility_windows]
    ratios = [f"rv_ratio_{a}_{b}" for a, b in _ratio_pairs(config)]
    return [*rv, *ratios, "ewma_vol"]


def _close(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    scale = np.sqrt(config.annualization)
    r = log_returns(panel.fields["close"])
    moments = RollingMoments(r, max_window=max(config.volatility_windows))
    rv = {w: scale * moments.std(w) for w in config.volatility_windows}
    for w in config.volatility_windows:
        yield f"rv_{w}", rv[w]
    with np.errstate(divide="ignore", invalid="ignore"):
        for a, b in _ratio_pairs(config):
            yield f"rv_ratio_{a}_{b}", rv[a] / rv[b]
    settled = log_returns(ffill(panel.fields["close"]))  # a gap is a day without a move
    variance = ewm(settled * settled, 1.0 - config.ewma_lambda, config.ewma_min_periods)
    yield "ewma_vol", scale * np.sqrt(variance)


def _parkinson(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    w = config.range_volatility_window
    hl = log(panel.fields["high"]) - log(panel.fields["low"])
    mean = RollingMoments(hl * hl, max_window=w).mean(w)
    yield f"parkinson_{w}", np.sqrt(config.annualization * mean / (4.0 * np.log(2.0)))


def _garman_klass(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    w = config.range_volatility_window
    hl = log(panel.fields["high"]) - log(panel.fields["low"])
    co = log(panel.fields["close"]) - log(panel.fields["open"])
    daily = 0.5 * hl * hl - (2.0 * np.log(2.0) - 1.0) * co * co
    mean = RollingMoments(daily, max_window=w).mean(w)
    yield f"garman_klass_{w}", np.sqrt(config.annualization * np.maximum(mean, 0.0))


def _garch(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    omega, alpha, beta, variance = config.garch.for_tickers(panel.tickers)
    forecast = garch_forecast(log_returns(panel.fields["close"]), omega, alpha, beta, variance)
    yield "garch_vol", np.sqrt(config.annualization * forecast)


def _garch_missing(inputs: FamilyInputs) -> str | None:
    if inputs.config.garch is None:
        return (
            "needs GARCH parameters fitted on the training window "
            "(fit_garch(prices, train_end) into FeatureConfig.garch); none given"
        )
    return None


FAMILIES = (
    Family("volatility_close", "volatility", ("adj_close",), _close_names, _close),
    Family(
        "volatility_range",
        "volatility",
        ("high", "low"),
        lambda config, _: [f"parkinson_{config.range_volatility_window}"],
        _parkinson,
    ),
    Family(
        "volatility_ohlc",
        "volatility",
        ("open", "high", "low"),
        lambda config, _: [f"garman_klass_{config.range_volatility_window}"],
        _garman_klass,
    ),
    Family(
        "garch",
        "volatility",
        ("adj_close",),
        lambda *_: ["garch_vol"],
        _garch,
        unavailable=_garch_missing,
    ),
)
