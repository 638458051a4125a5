"""Classic technical indicators, defined as the `ta` library defines them.

Oscillators keep their usual scales (RSI, stochastic and MFI in 0..100, Williams %R in
-100..0). Price-unit indicators are divided by the close so that tickers compare: `macd*`
and `atr_*` are fractions of the price. `obv_*` is the on-balance volume added over the
window as a fraction of the volume traded in it (the level of OBV depends on where the
history starts). `vwap_gap_*` is close / (volume-weighted typical price over the window) - 1,
a VWAP proxy for daily bars. A ticker's first day counts as a zero move for RSI, as in `ta`.
"""

from __future__ import annotations

import numpy as np

from finpipe.features.config import FeatureConfig
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel
from finpipe.features.rolling import (
    RollingMoments,
    divide,
    ewm,
    ffill,
    first_valid,
    lag,
    linear_scan,
    rolling_extremes,
)


def _close_names(config: FeatureConfig, _: frozenset[str]) -> list[str]:
    rsi = [f"rsi_{w}" for w in config.rsi_windows]
    return [*rsi, "macd", "macd_signal", "macd_hist", "bb_pctb", "bb_width"]


def _range_names(config: FeatureConfig, _: frozenset[str]) -> list[str]:
    return ["stoch_k", "stoch_d", "williams_r", f"atr_{config.atr_window}"]


def rsi(close: np.ndarray, window: int) -> np.ndarray:
    """Wilder's RSI: EWM (alpha = 1/window) of up and down moves, 100 where nothing fell.

    A gap counts as a day without a move (the close is carried forward).
    """
    filled = ffill(close)
    change = filled - lag(filled, 1)
    first = first_valid(close)
    listed = np.nonzero(first < len(close))[0]
    change[first[listed], listed] = 0.0
    up = np.where(change > 0, change, 0.0)
    down = np.where(change < 0, -change, 0.0)
    up[np.isnan(change)] = np.nan
    down[np.isnan(change)] = np.nan
    up, down = ewm(up, 1 / window, window), ewm(down, 1 / window, window)
    return np.where(down == 0, 100.0, 100.0 - 100.0 / (1.0 + divide(up, down)))


def _close(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    c = panel.fields["close"]
    for w in config.rsi_windows:
        yield f"rsi_{w}", rsi(c, w)
    fast, slow, signal = config.macd_spans
    line = ewm(c, 2 / (fast + 1), fast) - ewm(c, 2 / (slow + 1), slow)
    signal_line = ewm(line, 2 / (signal + 1), signal)
    yield "macd", divide(line, c)
    yield "macd_signal", divide(signal_line, c)
    yield "macd_hist", divide(line - signal_line, c)
    w = config.bollinger_window
    moments = RollingMoments(c, max_window=w)
    mean, std = moments.mean(w), moments.std(w, ddof=0)
    half_width = config.bollinger_width * std
    yield "bb_pctb", divide(c - (mean - half_width), np.where(std > 0, 2 * half_width, np.nan))
    yield "bb_width", divide(2 * half_width, mean)


def average_true_range(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int
) -> np.ndarray:
    """Wilder's ATR: seeded with the mean true range of the first window, then
    atr[t] = (atr[t-1] * (window - 1) + tr[t]) / window; a missing day holds the value."""
    prev = lag(close, 1)
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    tr[np.isnan(high - low)] = np.nan
    seed = RollingMoments(tr, max_window=window).mean(window)
    seeded = np.isfinite(seed)
    start = np.where(seeded.any(axis=0), seeded.argmax(axis=0), len(tr))
    after = np.arange(len(tr))[:, None] > start[None, :]
    at_start = np.arange(len(tr))[:, None] == start[None, :]
    valid = np.isfinite(tr)
    coef = np.where(after & valid, (window - 1) / window, np.where(at_start, 0.0, 1.0))
    drive = np.where(after & valid, tr / window, 0.0)
    drive[at_start] = seed[at_start]
    out = linear_scan(coef, drive)
    out[~(after | at_start)] = np.nan
    return out


def _range(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    c, h, lo = panel.fields["close"], panel.fields["high"], panel.fields["low"]
    w = config.stochastic_window
    highest = rolling_extremes(h, (w,), "max")[w][0]
    lowest = rolling_extremes(lo, (w,), "min")[w][0]
    stoch_k = 100.0 * divide(c - lowest, highest - lowest)
    yield "stoch_k", stoch_k
    smooth = config.stochastic_smooth
    yield "stoch_d", RollingMoments(stoch_k, max_window=smooth).mean(smooth)
    w = config.williams_window
    highest = rolling_extremes(h, (w,), "max")[w][0]
    lowest = rolling_extremes(lo, (w,), "min")[w][0]
    yield "williams_r", -100.0 * divide(highest - c, highest - lowest)
    atr = average_true_range(h, lo, c, config.atr_window)
    yield f"atr_{config.atr_window}", divide(atr, c)


def _volume(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    c, v = panel.fields["close"], panel.fields["volume"]
    w = config.obv_window
    prev = lag(c, 1)
    with np.errstate(invalid="ignore"):
        signed = np.where(np.isnan(prev), np.nan, np.where(c < prev, -v, v))
    flows = RollingMoments(signed, v, max_window=w)
    yield f"obv_{w}", divide(flows.sum(w, "x"), flows.sum(w, "y"))


def _flow(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    c, h, lo, v = (panel.fields[k] for k in ("close", "high", "low", "volume"))
    typical = (h + lo + c) / 3.0
    w = config.mfi_window
    move = typical - lag(typical, 1)
    flow = typical * v
    with np.errstate(invalid="ignore"):
        positive = np.where(np.isnan(move), np.nan, np.where(move > 0, flow, 0.0))
        negative = np.where(np.isnan(move), np.nan, np.where(move < 0, flow, 0.0))
    sums = RollingMoments(positive, negative, max_window=w)
    up, down = sums.sum(w, "x"), sums.sum(w, "y")
    yield f"mfi_{w}", 100.0 * divide(up, up + down)
    w = config.vwap_window
    weighted = RollingMoments(typical * v, v, max_window=w)
    yield f"vwap_gap_{w}", divide(c, divide(weighted.sum(w, "x"), weighted.sum(w, "y"))) - 1.0


FAMILIES = (
    Family("technical_close", "technical", ("adj_close",), _close_names, _close),
    Family("technical_range", "technical", ("high", "low"), _range_names, _range),
    Family(
        "technical_volume",
        "technical",
        ("volume",),
        lambda config, _: [f"obv_{config.obv_window}"],
        _volume,
    ),
    Family(
        "technical_flow",
        "technical",
        ("high", "low", "volume"),
        lambda config, _: [f"mfi_{config.mfi_window}", f"vwap_gap_{config.vwap_window}"],
        _flow,
    ),
)
