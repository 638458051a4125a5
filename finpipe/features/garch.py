"""GARCH(1,1) on daily log returns: a fitted transform, fitted on a training window only.

`fit_garch` estimates omega, alpha and beta per ticker by Gaussian maximum likelihood on the
returns up to `train_end`, for all tickers at once: variance targeting (omega = v (1 - alpha -
beta), v the training mean of squared returns) leaves two parameters, found by BHHH steps
with a backtracking line search. The variance recursion and its derivatives are linear
recursions run with `linear_scan` over the whole panel.

`garch_forecast` then runs the causal recursion with those fixed parameters:
f[t] = omega + alpha * r[t]^2 + beta * f[t-1], the variance forecast for t+1 made at the close
of t, started from the training variance and held over days without a return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from finpipe.features.price_panel import build_price_panel
from finpipe.features.rolling import first_valid, lag, linear_scan, log

SCALE = 100.0  # fit on percent returns: better conditioned
MAX_PERSISTENCE = 0.9999
STARTS = ((0.05, 0.90), (0.10, 0.85), (0.03, 0.96), (0.15, 0.60))


@dataclass(frozen=True)
class GarchParams:
    """Per-ticker GARCH(1,1) parameters for raw daily log returns.

    `table` is indexed by ticker with columns omega, alpha, beta, variance (the training mean
    of squared returns, where the recursion starts), n_obs and fitted (False where the ticker
    had too few training returns and got the cross-sectional medians instead).
    """

    train_end: pd.Timestamp
    table: pd.DataFrame

    def for_tickers(self, tickers: pd.Index) -> tuple[np.ndarray, ...]:
        """(omega, alpha, beta, variance) per ticker; unknown tickers get the medians."""
        fitted = self.table[self.table["fitted"]]
        default = fitted[["omega", "alpha", "beta", "variance"]].median()
        rows = self.table.reindex(tickers)[["omega", "alpha", "beta", "variance"]]
        rows = rows.fillna(default)
        return tuple(
            rows[c].to_numpy(dtype=np.float64) for c in ("omega", "alpha", "beta", "variance")
        )


def garch_forecast(
    returns: np.ndarray, omega: np.ndarray, alpha: np.ndarray, beta: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Variance forecast for t+1 made at the close of t, per column of `returns` (T, n).

    Parameters are per column. Before a column's first return the forecast is NaN; on a day
    with no return it holds.
    """
    valid = np.isfinite(returns)
    first = first_valid(returns)
    listed = np.nonzero(first < len(returns))[0]
    coef = np.where(valid, beta, 1.0)
    drive = np.where(valid, omega + alpha * np.nan_to_num(returns) ** 2, 0.0)
    coef[first[listed], listed] = 0.0
    drive[first[listed], listed] += beta[listed] * start[listed]
    out = linear_scan(coef, drive)
    out[np.arange(len(returns))[:, None] < first] = np.nan
    return out


def _loglik_and_scores(r2, valid, alpha, beta, variance, want_scores):
    """Gaussian log-likelihood per ticker (constants dropped) and optionally per-date scores.

    Returns are packed: each column's observed returns first, in date order, then padding
    (valid False), so the recursion runs with a coefficient constant over time.
    """
    omega = variance * (1.0 - alpha - beta)
    coef = beta[None, :]
    drive = np.where(valid, omega + alpha * r2, 0.0)
    drive[0] += beta * variance
    h = np.empty_like(drive)
    h[0] = variance
    h[1:] = linear_scan(coef, drive)[:-1]  # the forecast made the day before
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(valid, -0.5 * (np.log(h) + r2 / h), 0.0)
    loglik = terms.sum(axis=0)
    if not want_scores:
        return loglik, None
    d_drive = np.stack([np.where(valid, r2 - variance, 0.0), np.where(valid, h - variance, 0.0)])
    d_h = np.zeros_like(d_drive)
    d_h[:, 1:] = linear_scan(coef, d_drive)[:, :-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(valid, 0.5 * (r2 / h - 1.0) / h, 0.0)
    return loglik, np.nan_to_num(weight * d_h)  # scores: (2, T, n)


def _feasible(alpha, beta):
    return (alpha > 1e-8) & (beta >= 0.0) & (alpha + beta < MAX_PERSISTENCE)


def _best_start(r2, valid, variance):
    """The best of a few usual (alpha, beta) pairs per ticker, by log-likelihood."""
    n = len(variance)
    alpha, beta, loglik = np.zeros(n), np.zeros(n), np.full(n, -np.inf)
    for a0, b0 in STARTS:
        a, b = np.full(n, a0), np.full(n, b0)
        ll, _ = _loglik_and_scores(r2, valid, a, b, variance, want_scores=False)
        better = ll > loglik
        alpha[better], beta[better], loglik[better] = a0, b0, ll[better]
    return alpha, beta, loglik


def _bhhh_step(r2, valid, alpha, beta, variance, loglik):
    """One BHHH step per ticker, halved until feasible and not lowering the likelihood.

    Returns the new (alpha, beta, loglik) and how far each ticker moved (0 if it could not).
    """
    _, scores = _loglik_and_scores(r2, valid, alpha, beta, variance, want_scores=True)
    grad = scores.sum(axis=1).T  # (n, 2)
    outer = np.einsum("itn,jtn->nij", scores, scores) + 1e-12 * np.eye(2)
    step = np.linalg.solve(outer, grad[..., None])[..., 0]
    alpha, beta, loglik = alpha.copy(), beta.copy(), loglik.copy()
    moved = np.zeros(len(alpha))
    pending = np.ones(len(alpha), dtype=bool)
    size = 1.0
    while size > 1e-4 and pending.any():
        a_try, b_try = alpha + size * step[:, 0], beta + size * step[:, 1]
        columns = np.nonzero(pending & _feasible(a_try, b_try))[0]
        if len(columns):
            ll, _ = _loglik_and_scores(
                r2[:, columns],
                valid[:, columns],
                a_try[columns],
                b_try[columns],
                variance[columns],
                False,
            )
            better = ll >= loglik[columns]
            won = columns[better]
            alpha[won], beta[won], loglik[won] = a_try[won], b_try[won], ll[better]
            moved[won] = size * np.abs(step[won]).max(axis=1)
            pending[won] = False
        size /= 2.0
    return alpha, beta, loglik, moved


def fit_garch(
    prices: pd.DataFrame,
    train_end: str | pd.Timestamp,
    *,
    min_obs: int = 250,
    max_iter: int = 50,
    tol: float = 1e-5,
) -> GarchParams:
    """Fit GARCH(1,1) per ticker on adj_close log returns dated <= train_end only.

    A ticker stops when its step moves the parameters less than `tol` or raises the
    log-likelihood by less than 1e-8 of it (a flat likelihood: returns without GARCH effects).
    """
    train_end = pd.Timestamp(train_end)
    prices = prices.loc[pd.to_datetime(prices["date"]) <= train_end]
    panel, _ = build_price_panel(prices)
    close = panel.fields["close"]
    returns = SCALE * (log(close) - log(lag(close, 1)))
    valid = np.isfinite(returns)
    r2 = np.where(valid, returns, 0.0) ** 2
    n_obs = valid.sum(axis=0)
    fitted = n_obs >= min_obs
    if not fitted.any():
        raise ValueError(
            f"no ticker has {min_obs} returns up to {train_end.date()}; move train_end later "
            "or lower min_obs"
        )
    order = np.argsort(~valid[:, fitted], axis=0, kind="stable")  # observed returns first
    r2 = np.take_along_axis(r2[:, fitted], order, axis=0)
    valid = np.take_along_axis(valid[:, fitted], order, axis=0)
    variance = r2.sum(axis=0) / n_obs[fitted]

    alpha, beta, loglik = _best_start(r2, valid, variance)
    active = np.ones(len(alpha), dtype=bool)
    for _ in range(max_iter):
        columns = np.nonzero(active)[0]
        before = loglik[columns]
        alpha[columns], beta[columns], loglik[columns], moved = _bhhh_step(
            r2[:, columns],
            valid[:, columns],
            alpha[columns],
            beta[columns],
            variance[columns],
            loglik[columns],
        )
        gain = loglik[columns] - before
        active[columns] = (moved > tol) & (gain > 1e-8 * np.abs(before))
        if not active.any():
            break

    table = pd.DataFrame(index=pd.Index(panel.tickers, name="ticker"))
    table["alpha"], table["beta"], table["variance"] = np.nan, np.nan, np.nan
    table.loc[fitted, "alpha"] = alpha
    table.loc[fitted, "beta"] = beta
    table.loc[fitted, "variance"] = variance / SCALE**2
    defaults = table.loc[fitted, ["alpha", "beta", "variance"]].median()
    table = table.fillna(defaults)
    table["omega"] = table["variance"] * (1.0 - table["alpha"] - table["beta"])
    table["n_obs"] = n_obs
    table["fitted"] = fitted
    return GarchParams(
        train_end=train_end, table=table[["omega", "alpha", "beta", "variance", "n_obs", "fitted"]]
    )
