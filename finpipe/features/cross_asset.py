"""Features relative to the market and to the other tickers on the same date.

* `bench_beta_w`, `bench_corr_w`: rolling beta and correlation of the ticker's daily log
  returns to the benchmark's (benchmark adj_close taken as of each panel date).
* `cs_rank_<f>`, `cs_z_<f>`: percentile rank (ties averaged) and z-score of feature f across
  the tickers that have it on the date, for the bases in `FeatureConfig.cross_sectional_bases`
  computed by other families.
* `sector_mom_h`: equal-weighted mean h-date log return of the ticker's sector (from the
  universe frame) on the date; `sector_rel_mom_h`: the ticker's own minus its sector's.

Cross-sectional sums run over each date's tickers in a fixed order, so a date's value never
depends on how many dates the panel holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from finpipe.features.config import FeatureConfig
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel
from finpipe.features.rolling import RollingMoments, lag, log


def _benchmark_names(config: FeatureConfig, _: frozenset[str]) -> list[str]:
    return [f"bench_{k}_{w}" for k in ("beta", "corr") for w in config.benchmark_windows]


def _benchmark(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    windows = inputs.config.benchmark_windows
    log_close = log(panel.fields["close"])
    returns = log_close - lag(log_close, 1)
    log_bench = log(inputs.benchmark_close)[:, None]
    market = np.broadcast_to(log_bench - lag(log_bench, 1), returns.shape)
    moments = RollingMoments(returns, market, max_window=max(windows))
    for w in windows:
        yield f"bench_beta_{w}", moments.beta(w)
    for w in windows:
        yield f"bench_corr_{w}", moments.corr(w)


def _no_benchmark(inputs: FamilyInputs) -> str | None:
    return None if inputs.benchmark_close is not None else "needs a benchmark frame; none given"


def cross_sectional_rank(x: np.ndarray) -> np.ndarray:
    """Percentile rank of each ticker among those with a value on the date (a row)."""
    ranks = rankdata(x, axis=1, nan_policy="omit")
    with np.errstate(invalid="ignore", divide="ignore"):
        return ranks / np.isfinite(x).sum(axis=1, keepdims=True)


def cross_sectional_zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std (ddof=1) across tickers on each date; NaN with fewer than 2 values."""
    valid = np.isfinite(x)
    count = valid.sum(axis=1, keepdims=True)
    filled = np.where(valid, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1, keepdims=True) / count
        deviation = np.where(valid, x - mean, 0.0)
        std = np.sqrt((deviation * deviation).sum(axis=1, keepdims=True) / (count - 1))
        return np.where(valid & (std > 0), (x - mean) / std, np.nan)


def _cross_sectional_names(config: FeatureConfig, upstream: frozenset[str]) -> list[str]:
    bases = [b for b in config.cross_sectional_bases if b in upstream]
    return [f"cs_{kind}_{b}" for b in bases for kind in ("rank", "z")]


def _cross_sectional(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    for name in _cross_sectional_names(inputs.config, inputs.available):
        kind, base = name.split("_", 2)[1:]
        if kind == "rank":
            values = inputs.read(base)
            yield name, cross_sectional_rank(values)
            yield f"cs_z_{base}", cross_sectional_zscore(values)


def sector_means(values: np.ndarray, sectors: np.ndarray) -> np.ndarray:
    """Per ticker, the mean of `values` (dates x tickers) over its sector's tickers each date.

    `sectors` holds a group code per ticker (-1: unknown sector, which gives NaN).
    """
    order = np.argsort(sectors, kind="stable")
    grouped = sectors[order]
    order, grouped = order[grouped >= 0], grouped[grouped >= 0]
    out = np.full(values.shape, np.nan)
    if len(order) == 0:
        return out
    starts = np.r_[0, np.nonzero(np.diff(grouped))[0] + 1]
    members = values[:, order]
    valid = np.isfinite(members)
    sums = np.add.reduceat(np.where(valid, members, 0.0), starts, axis=1)
    counts = np.add.reduceat(valid.astype(np.float64), starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    group_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
    out[:, order] = means[:, group_of]
    return out


def _sector(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    h = inputs.config.sector_horizon
    universe = inputs.universe.drop_duplicates("ticker").set_index("ticker")["sector"]
    sector = universe.reindex(panel.tickers)
    codes = pd.factorize(sector)[0]
    log_close = log(panel.fields["close"])
    momentum = log_close - lag(log_close, h)
    mean = sector_means(momentum, codes)
    yield f"sector_mom_{h}", mean
    yield f"sector_rel_mom_{h}", momentum - mean


def _no_universe(inputs: FamilyInputs) -> str | None:
    universe = inputs.universe
    if universe is None or not {"ticker", "sector"} <= set(universe.columns):
        return "needs a universe frame with ticker and sector; none given"
    return None


FAMILIES = (
    Family(
        "benchmark",
        "cross_asset",
        ("adj_close",),
        _benchmark_names,
        _benchmark,
        unavailable=_no_benchmark,
    ),
    Family(
        "cross_sectional",
        "cross_asset",
        (),
        _cross_sectional_names,
        _cross_sectional,
        scope="panel",
    ),
    Family(
        "sector",
        "cross_asset",
        ("adj_close",),
        lambda config, _: [
            f"sector_mom_{config.sector_horizon}",
            f"sector_rel_mom_{config.sector_horizon}",
        ],
        _sector,
        scope="panel",
        unavailable=_no_universe,
    ),
)
