"""What a portfolio risks: VaR and CVaR, risk contributions, beta, stress losses, and the
Kupiec test of stated VaRs.

Losses are positive fractions of capital. For returns r_(1) <= ... <= r_(n) and level a,
with k = ceil(n (1 - a)) the number of tail scenarios:

* historical: VaR = -r_(k) and CVaR = -(r_(1) + ... + r_(k)) / k, on daily portfolio
  returns for 1 day and on overlapping compounded h-day returns for h days;
* gaussian: with the daily mean m and standard deviation s, over h days
  VaR = -(h m + sqrt(h) s z) and CVaR = -(h m - sqrt(h) s phi(z) / (1 - a)), z = Phi^-1(1 - a);
* garch: historical on the GARCH-filtered scenarios of the risk model (each name's returns
  rescaled to its volatility forecast for the next day, held over the h days).

Risk contributions are the Euler shares of portfolio volatility,
w_i (C w)_i / (w' C w), which sum to 1. Beta is cov(portfolio, benchmark) / var(benchmark)
over the risk model's dates. A stress loss is what the weights, bought at the close before a
window and held through it, lose: -sum_i w_i (P_i(end) / P_i(before start) - 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from finpipe.portfolio.risk_model import RiskModel

LEVELS = (0.95, 0.99)
HORIZONS = (1, 10)
RISK_MODELS = ("historical", "gaussian", "garch")


def tail_count(n: int, level: float) -> int:
    """Scenarios in the tail at `level`: ceil(n (1 - level)), at least one."""
    return max(math.ceil(n * (1.0 - level) - 1e-9), 1)


def historical_var_cvar(returns: np.ndarray, level: float) -> tuple[float, float]:
    """(VaR, CVaR) at `level` of a sample of returns, as positive losses."""
    r = np.sort(np.asarray(returns, dtype=np.float64)[np.isfinite(returns)])
    if len(r) == 0:
        return float("nan"), float("nan")
    k = tail_count(len(r), level)
    return float(-r[k - 1]), float(-r[:k].mean())


def gaussian_var_cvar(
    mean: float, std: float, level: float, horizon: int = 1
) -> tuple[float, float]:
    """(VaR, CVaR) at `level` over `horizon` days of normal daily returns (mean, std)."""
    z = stats.norm.ppf(1.0 - level)
    m, s = horizon * mean, math.sqrt(horizon) * std
    return float(-(m + s * z)), float(-(m - s * stats.norm.pdf(z) / (1.0 - level)))


def horizon_returns(daily: np.ndarray, horizon: int) -> np.ndarray:
    """Overlapping compounded `horizon`-day returns of a daily return series."""
    daily = np.asarray(daily, dtype=np.float64)
    if horizon == 1:
        return daily
    growth = np.cumsum(np.log1p(daily))
    growth = np.concatenate([[0.0], growth])
    return np.expm1(growth[horizon:] - growth[:-horizon])


def var_table(
    weights: pd.Series,
    historical: RiskModel,
    filtered: RiskModel | None = None,
    levels: tuple[float, ...] = LEVELS,
    horizons: tuple[int, ...] = HORIZONS,
) -> pd.DataFrame:
    """`measure, model, horizon_days, level, value` of a portfolio: VaR and CVaR by the
    historical, gaussian and (with a `filtered` GARCH risk model) garch models."""
    samples = {"historical": _portfolio_returns(weights, historical)}
    if filtered is not None:
        samples["garch"] = _portfolio_returns(weights, filtered)
    rows = []
    for horizon in horizons:
        for level in levels:
            values = {
                model: historical_var_cvar(horizon_returns(r, horizon), level)
                for model, r in samples.items()
            }
            daily = samples["historical"]
            values["gaussian"] = gaussian_var_cvar(
                float(daily.mean()), float(daily.std(ddof=1)), level, horizon
            )
            for model in RISK_MODELS:
                if model not in values:
                    continue
                var, cvar = values[model]
                for measure, value in (("var", var), ("cvar", cvar)):
                    rows.append(
                        {
                            "measure": measure,
                            "model": model,
                            "horizon_days": horizon,
                            "level": level,
                            "value": value,
                        }
                    )
    return pd.DataFrame(rows)


def _portfolio_returns(weights: pd.Series, risk: RiskModel) -> np.ndarray:
    w = weights.reindex(risk.tickers, fill_value=0.0).to_numpy(np.float64)
    return risk.scenarios @ w


def risk_contributions(weights: pd.Series, risk: RiskModel) -> pd.DataFrame:
    """`ticker, weight, contribution`: each name's share of portfolio volatility (they sum
    to 1) under the risk model's covariance."""
    w = weights.reindex(risk.tickers, fill_value=0.0).to_numpy(np.float64)
    marginal = risk.covariance @ w
    variance = float(w @ marginal)
    share = w * marginal / variance if variance > 0 else np.zeros_like(w)
    table = pd.DataFrame({"ticker": risk.tickers, "weight": w, "contribution": share})
    return table[table["weight"] != 0].reset_index(drop=True)


def beta(weights: pd.Series, risk: RiskModel, benchmark: pd.Series) -> float:
    """Beta of the portfolio's (unfiltered) scenario returns to the benchmark's daily
    returns (indexed by date) on the dates both have."""
    portfolio = pd.Series(_portfolio_returns(weights, risk), index=risk.dates)
    both = pd.concat([portfolio, benchmark], axis=1, join="inner").dropna()
    if len(both) < 2 or both.iloc[:, 1].var() == 0:
        return float("nan")
    cov = np.cov(both.iloc[:, 0], both.iloc[:, 1], ddof=1)
    return float(cov[0, 1] / cov[1, 1])


def stress_losses(
    weights: pd.Series, close: pd.DataFrame, windows: Mapping[str, tuple[str, str]]
) -> pd.DataFrame:
    """`window, start, end, loss, missing`: the loss of holding `weights` through each
    window (adjusted closes `close`, dates x tickers); names without prices at both ends
    count as flat and are listed in `missing`."""
    rows = []
    held = weights[weights != 0]
    for name, (start, end) in windows.items():
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        before = close.loc[: start - pd.Timedelta(days=1)]
        during = close.loc[start:end]
        if before.empty or during.empty:
            continue
        first = before.iloc[-1].reindex(held.index)
        last = during.ffill().iloc[-1].reindex(held.index)
        growth = (last / first - 1.0).to_numpy(np.float64)
        missing = sorted(held.index[~np.isfinite(growth)])
        loss = -float(np.nansum(held.to_numpy(np.float64) * growth))
        rows.append({"window": name, "start": start, "end": end, "loss": loss, "missing": missing})
    return pd.DataFrame(rows, columns=["window", "start", "end", "loss", "missing"])


def kupiec_test(breaches: int, n: int, level: float) -> tuple[float, float]:
    """Kupiec's unconditional coverage test of `breaches` VaR exceedances in `n` days at
    VaR `level`: (likelihood ratio, chi-square(1) p-value).

    LR = -2 ln[(1 - p)^(n - x) p^x / ((1 - x/n)^(n - x) (x/n)^x)], p = 1 - level.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p, x = 1.0 - level, breaches

    def loglik(q: float) -> float:
        # 0 ln 0 = 0: an empty class contributes nothing.
        return (n - x) * (math.log1p(-q) if x < n else 0.0) + (x * math.log(q) if x else 0.0)

    lr = max(-2.0 * (loglik(p) - loglik(x / n)), 0.0)
    return float(lr), float(stats.chi2.sf(lr, df=1))


def var_backtest(returns: pd.Series, stated: pd.Series, level: float) -> dict[str, float]:
    """Breaches of stated 1-day VaRs by realised daily returns (both indexed by date; the
    VaR of a date stated before it) and Kupiec's test: n, breaches, expected, kupiec_lr,
    p_value."""
    both = pd.concat([returns.rename("r"), stated.rename("var")], axis=1, join="inner").dropna()
    n = len(both)
    breaches = int((-both["r"] > both["var"]).sum())
    lr, p_value = kupiec_test(breaches, n, level)
    return {
        "n": n,
        "breaches": breaches,
        "expected": n * (1.0 - level),
        "kupiec_lr": lr,
        "p_value": p_value,
    }
