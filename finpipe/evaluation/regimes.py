"""Performance by market regime and in named stress windows.

The regimes are those of `finpipe.features.regime`, the one definition of bull, bear and
high volatility (from the benchmark's past closes only), as categorical labels. A
strategy's return on date d is earned from the close of d - 1, so `metrics_by_regime`
labels it with the regime known at that close (the regimes shifted one date); a daily IC at
date t belongs to the regime of t. Named stress windows are reported where the data spans
them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.special import ndtr

from finpipe.core.metrics import (
    TRADING_DAYS,
    annualized_volatility,
    hit_rate,
    max_drawdown,
    mean_stderr,
    mean_t_stat,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
)
from finpipe.features.regime import trend_state, volatility_state

TREND_REGIMES = ("bull", "sideways", "bear")
VOL_REGIMES = ("low", "normal", "high")

# Named stress periods (inclusive), from the S&P 500's moves: the acute phase of the global
# financial crisis (Lehman's month to the March 2009 low), the COVID crash (February 2020 high
# to March 2020 low) and the 2022 drawdown (January high to October low).
STRESS_WINDOWS: dict[str, tuple[str, str]] = {
    "gfc_2008_09": ("2008-09-01", "2009-03-09"),
    "covid_2020": ("2020-02-19", "2020-03-23"),
    "drawdown_2022": ("2022-01-03", "2022-10-12"),
}


def benchmark_close(benchmark: pd.DataFrame) -> pd.Series:
    """Adjusted (else plain) close of a one-ticker benchmark frame, indexed by date."""
    column = "adj_close" if "adj_close" in benchmark else "close"
    if benchmark.get("ticker") is not None and benchmark["ticker"].nunique() > 1:
        raise ValueError("benchmark frame holds several tickers; pass one")
    close = benchmark.set_index("date")[column].astype(np.float64).sort_index()
    return close[close > 0].rename("close")


def equal_weight_index(returns: pd.DataFrame) -> pd.Series:
    """Level of the daily-rebalanced equal-weight universe, a benchmark when none is given."""
    return (1.0 + returns.mean(axis=1, skipna=True).fillna(0.0)).cumprod().rename("close")


def trend_regime(close: pd.Series) -> pd.Series:
    """bull / bear / sideways per date (NaN before enough history), from `trend_state`."""
    return _labelled(
        trend_state(close), {1.0: "bull", 0.0: "sideways", -1.0: "bear"}, TREND_REGIMES, "trend"
    )


def volatility_regime(close: pd.Series) -> pd.Series:
    """low / normal / high per date (NaN before enough history), from `volatility_state`."""
    return _labelled(
        volatility_state(close),
        {-1.0: "low", 0.0: "normal", 1.0: "high"},
        VOL_REGIMES,
        "volatility",
    )


def _labelled(
    state: pd.Series, names: dict[float, str], categories: tuple[str, ...], name: str
) -> pd.Series:
    return pd.Series(
        pd.Categorical(state.map(names), categories=categories), index=state.index, name=name
    )


def market_regimes(close: pd.Series) -> pd.DataFrame:
    """Trend and volatility regime of every date of a benchmark close series."""
    return pd.concat([trend_regime(close), volatility_regime(close)], axis=1)


def covered_stress_windows(
    dates: pd.DatetimeIndex, windows: Mapping[str, tuple[str, str]] = STRESS_WINDOWS
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """The stress windows that `dates` span from start to end."""
    if len(dates) == 0:
        return {}
    first, last = dates.min(), dates.max()
    out = {}
    for name, (start, end) in windows.items():
        lo, hi = pd.Timestamp(start), pd.Timestamp(end)
        if first <= lo and last >= hi:
            out[name] = (lo, hi)
    return out


def stress_labels(
    dates: pd.DatetimeIndex, windows: Mapping[str, tuple[str, str]] = STRESS_WINDOWS
) -> pd.DataFrame:
    """A `stress` column naming the covered stress window each date falls in (else NaN)."""
    label = pd.Series(pd.NA, index=dates, dtype=object, name="stress")
    for name, (lo, hi) in covered_stress_windows(dates, windows).items():
        label[(dates >= lo) & (dates <= hi)] = name
    return label.to_frame()


def _return_row(r: pd.Series, contiguous: bool) -> dict[str, float]:
    t_stat, p_value = mean_t_stat(r)
    return {
        "n": float(len(r)),
        "mean": float(r.mean()) if len(r) else float("nan"),
        "t_stat": t_stat,
        "p_value": p_value,
        "annual_return": float(r.mean() * TRADING_DAYS) if len(r) else float("nan"),
        "annual_volatility": annualized_volatility(r),
        "sharpe": sharpe_ratio(r),
        "psr": probabilistic_sharpe_ratio(r),
        "hit_rate": hit_rate(r),
        "total_return": float(np.prod(1.0 + r.to_numpy()) - 1.0) if len(r) else float("nan"),
        "max_drawdown": max_drawdown(r) if contiguous else float("nan"),
    }


def _ic_row(ic: pd.Series, lags: int) -> dict[str, float]:
    mean, se = mean_stderr(ic, lags, "uniform")
    t = mean / se if se > 0 else float("nan")
    return {
        "n": float(len(ic)),
        "mean": mean,
        "t_stat": t,
        "p_value": float(2.0 * ndtr(-abs(t))) if np.isfinite(t) else float("nan"),
    }


def _present(labels: pd.Series, *aligned: pd.Series) -> list[object]:
    """Regimes that occur in any aligned series, in category order (else sorted)."""
    present = set().union(*(set(a.dropna().astype(object)) for a in aligned))
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return [c for c in labels.cat.categories if c in present]
    return sorted(present)


def metrics_by_regime(
    returns: pd.DataFrame,
    regimes: pd.DataFrame,
    ic: pd.DataFrame | None = None,
    ic_lags: int = 0,
    return_lag: int = 1,
    contiguous: bool = False,
) -> pd.DataFrame:
    """Per regime, per strategy and model: metrics with their significance.

    `returns`: daily strategy returns (dates x strategies); `regimes`: one column per regime
    type (e.g. trend, volatility), labels by date; `ic`: daily rank IC (dates x models).
    Returns are labelled with the regime `return_lag` dates earlier (known when the position
    was set). Rows: regime_type, regime, series ("return" or "rank_ic"), name; columns n,
    mean, t_stat, p_value (Newey-West for returns, Hansen-Hodrick with `ic_lags` for IC) and,
    for returns, annual_return (mean x 252), annual_volatility, sharpe, psr, hit_rate,
    total_return, and max_drawdown when `contiguous` (each regime one unbroken window, as
    stress windows are; use return_lag=0 for them, since they are named by calendar dates).
    """
    rows = []
    for regime_type in regimes.columns:
        labels = regimes[regime_type]
        by_return = labels.shift(return_lag).reindex(returns.index)
        by_ic = labels.reindex(ic.index) if ic is not None else pd.Series(dtype=object)
        for regime in _present(labels, by_return, by_ic):
            for name in returns.columns:
                r = returns.loc[by_return == regime, name].dropna()
                rows.append(
                    {
                        "regime_type": regime_type,
                        "regime": regime,
                        "series": "return",
                        "name": name,
                        **_return_row(r, contiguous),
                    }
                )
            for name in ic.columns if ic is not None else ():
                values = ic.loc[by_ic == regime, name].dropna()
                rows.append(
                    {
                        "regime_type": regime_type,
                        "regime": regime,
                        "series": "rank_ic",
                        "name": name,
                        **_ic_row(values, ic_lags),
                    }
                )
    return pd.DataFrame(rows)
