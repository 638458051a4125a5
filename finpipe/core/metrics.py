"""Forecast metrics every stage reports: rank IC, IC, directional accuracy, MSE, and their errors.

Cross-sectional metrics are computed per date and then averaged, because that is how a daily
long-short signal is used; their standard errors come from the per-date values, with the
Hansen-Hodrick correction when h-day labels on consecutive dates overlap.
Everything is vectorised with groupby sums: no per-date Python loop.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


def _frame(predictions: ArrayLike, targets: ArrayLike, dates: ArrayLike) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "date": np.asarray(dates),
            "p": np.asarray(predictions, dtype=np.float64),
            "y": np.asarray(targets, dtype=np.float64),
        }
    )
    return frame[np.isfinite(frame["p"]) & np.isfinite(frame["y"])]


def daily_ic(
    predictions: ArrayLike,
    targets: ArrayLike,
    dates: ArrayLike,
    method: Literal["pearson", "spearman"] = "pearson",
) -> pd.Series:
    """Per-date cross-sectional correlation of predictions with targets, indexed by date.

    `method="spearman"` correlates average ranks (ties share their mean rank), which is the
    rank IC. Dates with fewer than two names or a constant prediction/target give NaN and
    are dropped, since no cross-sectional bet can be read from them.
    """
    frame = _frame(predictions, targets, dates)
    groups = frame.groupby("date", sort=True)
    if method == "spearman":
        frame = frame.assign(p=groups["p"].rank(), y=groups["y"].rank())
        groups = frame.groupby("date", sort=True)
    elif method != "pearson":
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    dp = frame["p"] - groups["p"].transform("mean")
    dy = frame["y"] - groups["y"].transform("mean")
    sums = pd.DataFrame(
        {
            "date": frame["date"],
            "pp": dp * dp,
            "yy": dy * dy,
            "py": dp * dy,
            "p2": frame["p"] ** 2,
            "y2": frame["y"] ** 2,
        }
    )
    agg = sums.groupby("date", sort=True).sum()
    # A cross-section counts only if both sides vary beyond rounding noise of their level.
    valid = (agg["pp"] > 1e-20 + 1e-14 * agg["p2"]) & (agg["yy"] > 1e-20 + 1e-14 * agg["y2"])
    corr = (agg["py"] / np.sqrt(agg["pp"] * agg["yy"]).where(valid)).clip(-1.0, 1.0)
    return corr[valid].rename("rank_ic" if method == "spearman" else "ic")


def daily_rank_ic(predictions: ArrayLike, targets: ArrayLike, dates: ArrayLike) -> pd.Series:
    """Per-date Spearman correlation of predictions with targets."""
    return daily_ic(predictions, targets, dates, method="spearman")


def rank_ic(predictions: ArrayLike, targets: ArrayLike, dates: ArrayLike) -> float:
    """Mean over dates of the cross-sectional Spearman correlation (NaN if no usable date)."""
    values = daily_rank_ic(predictions, targets, dates)
    return float(values.mean()) if len(values) else float("nan")


def ic(predictions: ArrayLike, targets: ArrayLike, dates: ArrayLike) -> float:
    """Mean over dates of the cross-sectional Pearson correlation (NaN if no usable date)."""
    values = daily_ic(predictions, targets, dates)
    return float(values.mean()) if len(values) else float("nan")


def _hits(predictions: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Hit indicator and usable-row mask: a zero prediction makes no call, a zero target no move."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    usable = np.isfinite(p) & np.isfinite(y) & (p != 0) & (y != 0)
    return (np.sign(p) == np.sign(y)) & usable, usable


def directional_accuracy(predictions: ArrayLike, targets: ArrayLike) -> float:
    """Share of rows whose predicted sign matches the realised sign, pooled over all rows.

    Rows with a zero prediction (no call) or a zero/NaN target are left out.
    """
    hits, usable = _hits(predictions, targets)
    n = int(usable.sum())
    return float(hits.sum() / n) if n else float("nan")


def daily_directional_accuracy(
    predictions: ArrayLike, targets: ArrayLike, dates: ArrayLike
) -> pd.Series:
    """Per-date directional accuracy, indexed by date; its mean and error are the honest ones,
    since one market move makes a whole date's calls right or wrong together."""
    hits, usable = _hits(predictions, targets)
    frame = pd.DataFrame({"date": np.asarray(dates), "hit": hits, "n": usable})
    agg = frame[usable].groupby("date", sort=True)[["hit", "n"]].sum()
    return (agg["hit"] / agg["n"]).rename("directional_accuracy")


def mse(predictions: ArrayLike, targets: ArrayLike) -> float:
    """Mean squared error over rows where both values are finite."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    usable = np.isfinite(p) & np.isfinite(y)
    return float(np.mean((p[usable] - y[usable]) ** 2)) if usable.any() else float("nan")


def mean_stderr(
    values: ArrayLike, lags: int = 0, kernel: Literal["bartlett", "uniform"] = "bartlett"
) -> tuple[float, float]:
    """Mean of a series and its standard error, robust to autocorrelation up to `lags`.

    kernel="bartlett" is Newey-West. kernel="uniform" is Hansen-Hodrick, the right one for
    per-date values of overlapping h-day labels with lags = h - 1: overlap makes the series
    MA(h - 1), whose autocovariances Bartlett weights shrink (understating the error by
    ~20% at h = 5 or 20). If the uniform estimate is not positive, Newey-West is used.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 2:
        return (float(x.mean()) if n else float("nan")), float("nan")
    if kernel not in ("bartlett", "uniform"):
        raise ValueError(f"kernel must be 'bartlett' or 'uniform', got {kernel!r}")
    d = x - x.mean()
    autocov = [d @ d / n] + [(d[k:] @ d[:-k]) / n for k in range(1, min(lags, n - 1) + 1)]
    bartlett = autocov[0] + 2.0 * sum(
        (1.0 - k / (lags + 1)) * autocov[k] for k in range(1, len(autocov))
    )
    variance = bartlett
    if kernel == "uniform":
        uniform = autocov[0] + 2.0 * sum(autocov[1:])
        variance = uniform if uniform > 0 else bartlett
    variance *= n / (n - 1)
    return float(x.mean()), float(np.sqrt(max(variance, 0.0) / n))


def forecast_metrics(
    frame: pd.DataFrame, prediction: str = "prediction", target: str = "fwd_return"
) -> pd.DataFrame:
    """Per-horizon metrics of a long frame with `date, horizon, <prediction>, <target>`.

    Columns: n, n_dates, rank_ic, rank_ic_se, ic, ic_se, directional_accuracy (mean of
    daily accuracies), directional_accuracy_se, mse. Standard errors are Hansen-Hodrick
    with horizon - 1 lags, because h-day labels on consecutive dates overlap.
    """
    rows = []
    for horizon, part in frame.groupby("horizon", sort=True):
        p, y, d = part[prediction], part[target], part["date"]
        lags = max(int(horizon) - 1, 0)
        ric, ric_se = mean_stderr(daily_rank_ic(p, y, d), lags, "uniform")
        pic, pic_se = mean_stderr(daily_ic(p, y, d), lags, "uniform")
        da, da_se = mean_stderr(daily_directional_accuracy(p, y, d), lags, "uniform")
        rows.append(
            {
                "horizon": int(horizon),
                "n": int((np.isfinite(p) & np.isfinite(y)).sum()),
                "n_dates": int(d.nunique()),
                "rank_ic": ric,
                "rank_ic_se": ric_se,
                "ic": pic,
                "ic_se": pic_se,
                "directional_accuracy": da,
                "directional_accuracy_se": da_se,
                "mse": mse(p, y),
            }
        )
    return pd.DataFrame(rows).set_index("horizon")


# =============================================================================================
# Performance metrics of daily strategy returns, IC summaries, PSR/DSR and bootstrap intervals.
#
# Returns are simple (not log) per-period returns; `periods` is the number of periods in a
# year (252 trading days). Annualisation follows the usual conventions (the ones empyrical
# uses): geometric annual return, sample standard deviation (ddof=1) times sqrt(periods),
# Sharpe = mean / std * sqrt(periods), Sortino = annualised mean / annualised downside
# deviation (root mean square of the shortfall below the required return, over all periods),
# max drawdown from the running peak of wealth starting at 1 (a negative number).
# The probabilistic and deflated Sharpe ratios take per-period (not annualised) Sharpe ratios,
# as in Bailey & López de Prado (2012, 2014).
# =============================================================================================

from collections.abc import Callable  # noqa: E402

from scipy import special, stats  # noqa: E402

TRADING_DAYS = 252
EULER_GAMMA = 0.5772156649015329


def _finite(values: ArrayLike) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def annualized_return(returns: ArrayLike, periods: int = TRADING_DAYS) -> float:
    """Compound annual growth rate of simple per-period returns."""
    r = _finite(returns)
    if len(r) == 0:
        return float("nan")
    growth = float(np.prod(1.0 + r))
    return growth ** (periods / len(r)) - 1.0 if growth > 0 else -1.0


def annualized_volatility(returns: ArrayLike, periods: int = TRADING_DAYS) -> float:
    """Sample standard deviation of the returns times sqrt(periods)."""
    r = _finite(returns)
    return float(np.std(r, ddof=1) * np.sqrt(periods)) if len(r) > 1 else float("nan")


def sharpe_ratio(returns: ArrayLike, periods: int = TRADING_DAYS, risk_free: float = 0.0) -> float:
    """Annualised Sharpe ratio: mean excess return over its sample standard deviation."""
    r = _finite(returns) - risk_free
    if len(r) < 2:
        return float("nan")
    sd = np.std(r, ddof=1)
    return float(r.mean() / sd * np.sqrt(periods)) if sd > 0 else float("nan")


def sortino_ratio(
    returns: ArrayLike, periods: int = TRADING_DAYS, required_return: float = 0.0
) -> float:
    """Annualised mean excess return over the annualised downside deviation."""
    r = _finite(returns) - required_return
    if len(r) < 2:
        return float("nan")
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    if downside == 0:
        return float("inf") if r.mean() > 0 else float("nan")
    return float(r.mean() / downside * np.sqrt(periods))


def drawdown_series(returns: pd.Series) -> pd.Series:
    """Drawdown of wealth (starting at 1) from its running peak after each period; <= 0."""
    wealth = (1.0 + returns.fillna(0.0)).cumprod()
    peak = np.maximum(wealth.cummax(), 1.0)
    return (wealth / peak - 1.0).rename("drawdown")


def max_drawdown(returns: ArrayLike) -> float:
    """Largest peak-to-trough loss of wealth as a negative fraction (0 if it never fell)."""
    r = _finite(returns)
    if len(r) == 0:
        return float("nan")
    wealth = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    return float(np.min(wealth / np.maximum.accumulate(wealth) - 1.0))


def calmar_ratio(returns: ArrayLike, periods: int = TRADING_DAYS) -> float:
    """Annual return over the absolute max drawdown (NaN without a drawdown)."""
    mdd = max_drawdown(returns)
    return annualized_return(returns, periods) / abs(mdd) if mdd < 0 else float("nan")


def profit_factor(returns: ArrayLike) -> float:
    """Sum of gains over the absolute sum of losses."""
    r = _finite(returns)
    losses = -r[r < 0].sum()
    gains = r[r > 0].sum()
    if losses == 0:
        return float("inf") if gains > 0 else float("nan")
    return float(gains / losses)


def hit_rate(returns: ArrayLike) -> float:
    """Share of periods with a gain among periods that moved (zero returns left out)."""
    r = _finite(returns)
    r = r[r != 0]
    return float((r > 0).mean()) if len(r) else float("nan")


def mae(predictions: ArrayLike, targets: ArrayLike) -> float:
    """Mean absolute error over rows where both values are finite."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    usable = np.isfinite(p) & np.isfinite(y)
    return float(np.mean(np.abs(p[usable] - y[usable]))) if usable.any() else float("nan")


def rmse(predictions: ArrayLike, targets: ArrayLike) -> float:
    """Root mean squared error over rows where both values are finite."""
    return float(np.sqrt(mse(predictions, targets)))


def interval_coverage(targets: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> float:
    """Share of finite targets inside their [lower, upper] interval (infinite bounds allowed,
    for one-sided intervals; NaN bounds leave the row out)."""
    y = np.asarray(targets, dtype=np.float64)
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    usable = np.isfinite(y) & ~np.isnan(lo) & ~np.isnan(hi)
    inside = (y[usable] >= lo[usable]) & (y[usable] <= hi[usable])
    return float(inside.mean()) if usable.any() else float("nan")


def ic_summary(daily_values: ArrayLike, lags: int = 0) -> dict[str, float]:
    """Mean, standard deviation, ICIR (mean / std), standard error, t-stat and count of a
    per-date IC series; the error is Hansen-Hodrick with `lags` (horizon - 1 for h-day labels)."""
    x = _finite(daily_values)
    mean, se = mean_stderr(x, lags, "uniform")
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")
    return {
        "mean": mean,
        "std": sd,
        "icir": mean / sd if sd > 0 else float("nan"),
        "se": se,
        "t_stat": mean / se if se > 0 else float("nan"),
        "n": float(len(x)),
    }


def mean_t_stat(returns: ArrayLike, lags: int = 0) -> tuple[float, float]:
    """(t-stat, two-sided normal p-value) of the mean of a series (Newey-West with `lags`)."""
    mean, se = mean_stderr(returns, lags, "bartlett")
    if not se > 0:
        return float("nan"), float("nan")
    t = mean / se
    return float(t), float(2.0 * special.ndtr(-abs(t)))


def sharpe_moments(returns: ArrayLike) -> tuple[float, int, float, float]:
    """(per-period Sharpe ratio, number of periods, skewness, kurtosis (normal = 3))."""
    r = _finite(returns)
    if len(r) < 3 or np.std(r) == 0:
        return float("nan"), len(r), float("nan"), float("nan")
    return (
        float(r.mean() / np.std(r, ddof=1)),
        len(r),
        float(stats.skew(r)),
        float(stats.kurtosis(r, fisher=False)),
    )


def psr_from_moments(
    sharpe: float,
    n_obs: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    benchmark_sharpe: float = 0.0,
) -> float:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012): the probability that the true
    per-period Sharpe ratio exceeds `benchmark_sharpe`, given an estimate `sharpe` from
    `n_obs` periods with that skewness and (non-excess) kurtosis:

        PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurtosis - 1) / 4 SR^2))
    """
    if not (np.isfinite(sharpe) and n_obs > 1):
        return float("nan")
    variance = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not variance > 0:
        return float("nan")
    z = (sharpe - benchmark_sharpe) * np.sqrt(n_obs - 1.0) / np.sqrt(variance)
    return float(special.ndtr(z))


def probabilistic_sharpe_ratio(returns: ArrayLike, benchmark_sharpe: float = 0.0) -> float:
    """PSR of a return series against a per-period benchmark Sharpe ratio (default 0)."""
    sharpe, n, skew, kurtosis = sharpe_moments(returns)
    return psr_from_moments(sharpe, n, skew, kurtosis, benchmark_sharpe)


def expected_max_sharpe(n_trials: int, trial_variance: float) -> float:
    """Expected maximum of `n_trials` Sharpe ratios with variance `trial_variance` across
    trials when the true Sharpe ratio is 0 (Bailey & López de Prado 2014):

        E[max SR] = sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e))),  g = Euler's
    """
    if n_trials < 2 or not trial_variance > 0:
        return 0.0
    n = float(n_trials)
    return float(
        np.sqrt(trial_variance)
        * (
            (1.0 - EULER_GAMMA) * special.ndtri(1.0 - 1.0 / n)
            + EULER_GAMMA * special.ndtri(1.0 - 1.0 / (n * np.e))
        )
    )


def dsr_from_moments(
    sharpe: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    n_trials: int,
    trial_variance: float,
) -> float:
    """Deflated Sharpe ratio: the PSR against the Sharpe ratio the best of `n_trials`
    skill-less strategies would be expected to reach (all Sharpe ratios per period)."""
    benchmark = expected_max_sharpe(n_trials, trial_variance)
    return psr_from_moments(sharpe, n_obs, skew, kurtosis, benchmark)


def deflated_sharpe_ratios(returns: pd.DataFrame, n_trials: int | None = None) -> pd.Series:
    """DSR of every column (strategy) of a frame of per-period returns, deflated for all
    the strategies tried: N = `n_trials` (at least the number of columns; pass more when
    other configurations were tried and discarded), V = sample variance of the columns'
    Sharpe ratios."""
    moments = {name: sharpe_moments(returns[name]) for name in returns.columns}
    sharpes = np.array([m[0] for m in moments.values()])
    finite = sharpes[np.isfinite(sharpes)]
    variance = float(np.var(finite, ddof=1)) if len(finite) > 1 else 0.0
    trials = max(len(finite), n_trials or 0)
    return pd.Series(
        {
            name: dsr_from_moments(sr, n, skew, kurt, trials, variance)
            for name, (sr, n, skew, kurt) in moments.items()
        },
        name="deflated_sharpe",
        dtype=np.float64,
    )


def bootstrap_indices(
    n: int, n_boot: int, rng: np.random.Generator, block: float | None = None
) -> np.ndarray:
    """Resampling positions [n_boot, n]: iid without `block`, else the stationary bootstrap
    of Politis & Romano (1994) with geometric block lengths of mean `block`, wrapping around."""
    if block is None or block <= 1:
        return rng.integers(0, n, size=(n_boot, n))
    starts_new = rng.random((n_boot, n)) < 1.0 / block
    starts_new[:, 0] = True
    position = np.arange(n)
    block_start = np.maximum.accumulate(np.where(starts_new, position, 0), axis=1)
    origin = np.where(starts_new, rng.integers(0, n, size=(n_boot, n)), 0)
    origin = np.take_along_axis(origin, block_start, axis=1)
    return (origin + position - block_start) % n


@functools.lru_cache(maxsize=4)
def _resamples(n: int, n_boot: int, block: float | None, seed: int) -> tuple[np.ndarray, ...]:
    """`bootstrap_indices` for `n_boot` resamples in batches of at most 4M positions, drawn
    from `seed`. Cached: a report bootstraps many series of the same length (every model at
    a horizon), and the same seed gives them the same resamples anyway."""
    rng = np.random.default_rng(seed)
    batch = max(1, 4_000_000 // n)
    batches = tuple(
        bootstrap_indices(n, min(batch, n_boot - i), rng, block) for i in range(0, n_boot, batch)
    )
    for positions in batches:
        positions.setflags(write=False)
    return batches


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_boot: int = 1000,
    level: float = 0.95,
    block: float | None = None,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, lower, upper) percentile bootstrap interval of `statistic`.

    `statistic` maps an array [..., n] to [...] along its last axis (vectorised over
    resamples). `block` > 1 uses the stationary bootstrap, which keeps serial dependence
    (volatility clustering, overlapping labels); None resamples iid.
    """
    x = _finite(values)
    if len(x) < 2:
        return float("nan"), float("nan"), float("nan")
    estimate = float(statistic(x[None, :])[0])
    draws = np.concatenate(
        [statistic(x[positions]) for positions in _resamples(len(x), n_boot, block, seed)]
    )
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return estimate, float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lower, upper = np.quantile(draws, [tail, 1.0 - tail])
    return estimate, float(lower), float(upper)


def _sharpe_rows(periods: int) -> Callable[[np.ndarray], np.ndarray]:
    def statistic(samples: np.ndarray) -> np.ndarray:
        sd = samples.std(axis=-1, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sd > 0, samples.mean(axis=-1) / sd * np.sqrt(periods), np.nan)

    return statistic


def sharpe_ci(
    returns: ArrayLike,
    periods: int = TRADING_DAYS,
    n_boot: int = 1000,
    level: float = 0.95,
    block: float | None = 10.0,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(Sharpe, lower, upper): stationary-bootstrap interval of the annualised Sharpe ratio."""
    return bootstrap_ci(returns, _sharpe_rows(periods), n_boot, level, block, seed)


def accuracy_ci(
    daily_accuracy: ArrayLike,
    n_boot: int = 1000,
    level: float = 0.95,
    block: float | None = None,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, lower, upper): bootstrap interval of the mean of per-date accuracies (iid by
    default; pass `block` for overlapping multi-day labels)."""
    return bootstrap_ci(daily_accuracy, lambda s: s.mean(axis=-1), n_boot, level, block, seed)


def performance_summary(
    returns: pd.Series,
    turnover: pd.Series | None = None,
    periods: int = TRADING_DAYS,
) -> dict[str, float]:
    """Every per-strategy number the reports show, for one series of daily returns."""
    r = returns.dropna()
    t_stat, p_value = mean_t_stat(r)
    return {
        "n_days": float(len(r)),
        "total_return": float(np.prod(1.0 + r.to_numpy()) - 1.0) if len(r) else float("nan"),
        "annual_return": annualized_return(r, periods),
        "annual_volatility": annualized_volatility(r, periods),
        "sharpe": sharpe_ratio(r, periods),
        "sortino": sortino_ratio(r, periods),
        "calmar": calmar_ratio(r, periods),
        "max_drawdown": max_drawdown(r),
        "profit_factor": profit_factor(r),
        "hit_rate": hit_rate(r),
        "mean_t_stat": t_stat,
        "mean_p_value": p_value,
        "psr": probabilistic_sharpe_ratio(r),
        "turnover": float(turnover.mean()) if turnover is not None else float("nan"),
    }
