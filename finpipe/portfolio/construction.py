"""Portfolio construction: target weights from a cross-sectional signal.

`top_k_weights` is the equal-weight top-k (and bottom-k) book the backtest trades: long_short
holds +1/k on each of the k highest predictions and -1/k on each of the k lowest (gross 2,
net 0); long_only holds +1/k on the k highest. `k` is a count, or a fraction of the names
with a prediction that date (at least one). Ties go to the earlier ticker in sort order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

PortfolioKind = Literal["long_short", "long_only"]


def top_k_weights(
    signal: pd.DataFrame, k: int | float, kind: PortfolioKind = "long_short"
) -> pd.DataFrame:
    """Top-k (and bottom-k) equal weights per date from a wide signal; NaN rows stay NaN."""
    if kind not in ("long_short", "long_only"):
        raise ValueError(f"kind must be 'long_short' or 'long_only', got {kind!r}")
    values = signal.to_numpy(np.float64)
    valid = np.isfinite(values)
    n_valid = valid.sum(axis=1)
    if isinstance(k, float) and 0 < k < 1:
        k_eff = np.maximum(np.floor(k * n_valid), 1)
    elif k >= 1 and float(k).is_integer():
        k_eff = np.full(len(values), float(k))
    else:
        raise ValueError(f"k must be a positive count or a fraction in (0, 1), got {k}")
    k_eff = np.minimum(k_eff, n_valid // 2 if kind == "long_short" else n_valid)
    # Descending rank 0.. among valid names; ties by column order (stable sort).
    order = np.argsort(np.where(valid, -values, np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(values.shape[1])[None, :], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(k_eff > 0, 1.0 / k_eff, 0.0)[:, None]
    weights = np.where(rank < k_eff[:, None], unit, 0.0)
    if kind == "long_short":
        bottom = valid & (rank >= (n_valid - k_eff)[:, None])
        weights = weights - np.where(bottom, unit, 0.0)
    weights = np.where(valid, weights, 0.0)
    weights[n_valid == 0] = np.nan
    return pd.DataFrame(weights, index=signal.index, columns=signal.columns)
