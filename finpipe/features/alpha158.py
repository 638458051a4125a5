"""Qlib's Alpha158 features: 9 K-bar shapes, 4 price ratios and 29 rolling operators x 5 windows.

Formulas follow Qlib's `Alpha158DL.get_feature_config` (qlib/contrib/data/loader.py), with
$close = adj_close and open/high/low/volume on the same adjusted basis (see `panel`). Two
deliberate differences from Qlib:

* Windows are strict: a value needs a full window of observations (Qlib uses
  `min_periods=1`, which gives partial-window values in a ticker's first days).
* VWAP0 uses the typical price (high + low + close) / 3 as the day's VWAP, which daily bars
  do not carry: VWAP0 = typical / close.

The family is split by inputs so that close-only sources still get the 75 close features:
`alpha158_kbar` and `alpha158_price` need open/high/low, `alpha158_range` high/low (when
they are absent, `alpha158_extremes` computes MAX and MIN on close instead), and
`alpha158_volume` needs volume.
"""

from __future__ import annotations

import numpy as np

from finpipe.features.config import FeatureConfig
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel
from finpipe.features.rolling import (
    RollingMoments,
    divide,
    lag,
    log,
    rolling_extremes,
    rolling_quantiles,
    rolling_rank,
)

EPS = 1e-12  # Qlib's guard in denominators

KBAR = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2")
PRICE = ("OPEN0", "HIGH0", "LOW0", "VWAP0")
CLOSE_OPS = (
    "ROC",
    "MA",
    "STD",
    "BETA",
    "RSQR",
    "RESI",
    "QTLU",
    "QTLD",
    "RANK",
    "CNTP",
    "CNTN",
    "CNTD",
    "SUMP",
    "SUMN",
    "SUMD",
)
RANGE_OPS = ("MAX", "MIN", "RSV", "IMAX", "IMIN", "IMXD")
EXTREME_OPS = ("MAX", "MIN")
VOLUME_OPS = ("CORR", "CORD", "VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD")


def _rolling_names(ops: tuple[str, ...]):
    def names(config: FeatureConfig, _: frozenset[str]) -> list[str]:
        return [f"{op}{w}" for op in ops for w in config.alpha158_windows]

    return names


def _kbar(panel: PricePanel, _: FamilyInputs) -> Columns:
    o, h, lo, c = (panel.fields[k] for k in ("open", "high", "low", "close"))
    span = h - lo + EPS
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    yield "KMID", divide(c - o, o)
    yield "KLEN", divide(h - lo, o)
    yield "KMID2", divide(c - o, span)
    yield "KUP", divide(h - top, o)
    yield "KUP2", divide(h - top, span)
    yield "KLOW", divide(bottom - lo, o)
    yield "KLOW2", divide(bottom - lo, span)
    yield "KSFT", divide(2 * c - h - lo, o)
    yield "KSFT2", divide(2 * c - h - lo, span)


def _price(panel: PricePanel, _: FamilyInputs) -> Columns:
    o, h, lo, c = (panel.fields[k] for k in ("open", "high", "low", "close"))
    yield "OPEN0", divide(o, c)
    yield "HIGH0", divide(h, c)
    yield "LOW0", divide(lo, c)
    yield "VWAP0", divide((h + lo + c) / 3.0, c)


def _gain_loss_shares(
    prefix: str, x: np.ndarray, abs_change: RollingMoments, windows: tuple[int, ...]
) -> Columns:
    """Qlib's SUMP/SUMN/SUMD (and with prefix V, on volume): shares of gains and losses.

    Sum of gains = (sum|d| + sum d) / 2 and of losses = (sum|d| - sum d) / 2, where sum d
    telescopes to x[t] - x[t-w]: Qlib's definitions in exact arithmetic.
    """
    total = {w: abs_change.sum(w) for w in windows}
    net = {w: x - lag(x, w) for w in windows}
    for w in windows:
        yield f"{prefix}SUMP{w}", divide((total[w] + net[w]) / 2.0, total[w] + EPS)
    for w in windows:
        yield f"{prefix}SUMN{w}", divide((total[w] - net[w]) / 2.0, total[w] + EPS)
    for w in windows:
        yield f"{prefix}SUMD{w}", divide(net[w], total[w] + EPS)


def _close(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    windows = inputs.config.alpha158_windows
    c = panel.fields["close"]
    moments = RollingMoments(c, max_window=max(windows))
    trends = {w: moments.trend(w) for w in windows}
    quantiles = {w: rolling_quantiles(c, w, (0.2, 0.8)) for w in windows}
    ranks = rolling_rank(c, windows)
    change = c - lag(c, 1)
    moves = RollingMoments(
        np.where(np.isnan(change), np.nan, change > 0),
        np.where(np.isnan(change), np.nan, change < 0),
        max_window=max(windows),
    )
    abs_moves = RollingMoments(np.abs(change), max_window=max(windows))
    for w in windows:
        yield f"ROC{w}", divide(lag(c, w), c)
    for w in windows:
        yield f"MA{w}", divide(moments.mean(w), c)
    for w in windows:
        yield f"STD{w}", divide(moments.std(w), c)
    for w in windows:
        yield f"BETA{w}", divide(trends[w][0], c)
    for w in windows:
        yield f"RSQR{w}", trends[w][1]
    for w in windows:
        yield f"RESI{w}", divide(trends[w][2], c)
    for w in windows:
        yield f"QTLU{w}", divide(quantiles[w][1], c)
    for w in windows:
        yield f"QTLD{w}", divide(quantiles[w][0], c)
    for w in windows:
        yield f"RANK{w}", ranks[w]
    for w in windows:
        yield f"CNTP{w}", moves.mean(w, "x")
    for w in windows:
        yield f"CNTN{w}", moves.mean(w, "y")
    for w in windows:
        yield f"CNTD{w}", moves.mean(w, "x") - moves.mean(w, "y")
    yield from _gain_loss_shares("", c, abs_moves, windows)


def _range(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    windows = inputs.config.alpha158_windows
    c, h, lo = panel.fields["close"], panel.fields["high"], panel.fields["low"]
    highest = rolling_extremes(h, windows, "max")
    lowest = rolling_extremes(lo, windows, "min")
    for w in windows:
        yield f"MAX{w}", divide(highest[w][0], c)
    for w in windows:
        yield f"MIN{w}", divide(lowest[w][0], c)
    for w in windows:
        yield f"RSV{w}", divide(c - lowest[w][0], highest[w][0] - lowest[w][0] + EPS)
    for w in windows:
        yield f"IMAX{w}", highest[w][1] / w
    for w in windows:
        yield f"IMIN{w}", lowest[w][1] / w
    for w in windows:
        yield f"IMXD{w}", (highest[w][1] - lowest[w][1]) / w


def _extremes_on_close(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    windows = inputs.config.alpha158_windows
    c = panel.fields["close"]
    highest = rolling_extremes(c, windows, "max")
    lowest = rolling_extremes(c, windows, "min")
    for w in windows:
        yield f"MAX{w}", divide(highest[w][0], c)
    for w in windows:
        yield f"MIN{w}", divide(lowest[w][0], c)


def _volume(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    windows = inputs.config.alpha158_windows
    span = max(windows)
    c, v = panel.fields["close"], panel.fields["volume"]
    ratio = divide(c, lag(c, 1))
    level_corr = RollingMoments(c, log(v + 1.0), max_window=span)
    change_corr = RollingMoments(ratio, log(divide(v, lag(v, 1)) + 1.0), max_window=span)
    volume = RollingMoments(v, max_window=span)
    weighted = RollingMoments(np.abs(ratio - 1.0) * v, max_window=span)
    volume_change = v - lag(v, 1)
    abs_change = RollingMoments(np.abs(volume_change), max_window=span)
    for w in windows:
        yield f"CORR{w}", level_corr.corr(w)
    for w in windows:
        yield f"CORD{w}", change_corr.corr(w)
    for w in windows:
        yield f"VMA{w}", divide(volume.mean(w), v + EPS)
    for w in windows:
        yield f"VSTD{w}", divide(volume.std(w), v + EPS)
    for w in windows:
        yield f"WVMA{w}", divide(weighted.std(w), weighted.mean(w) + EPS)
    yield from _gain_loss_shares("V", v, abs_change, windows)


FAMILIES = (
    Family("alpha158_kbar", "alpha158", ("open", "high", "low"), lambda *_: list(KBAR), _kbar),
    Family("alpha158_price", "alpha158", ("open", "high", "low"), lambda *_: list(PRICE), _price),
    Family("alpha158_close", "alpha158", ("adj_close",), _rolling_names(CLOSE_OPS), _close),
    Family("alpha158_range", "alpha158", ("high", "low"), _rolling_names(RANGE_OPS), _range),
    Family(
        "alpha158_extremes",
        "alpha158",
        ("adj_close",),
        _rolling_names(EXTREME_OPS),
        _extremes_on_close,
        replaces="alpha158_range",
    ),
    Family("alpha158_volume", "alpha158", ("volume",), _rolling_names(VOLUME_OPS), _volume),
)
