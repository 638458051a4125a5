"""Portfolio construction: target weights from a signal and a risk model, by methods that
share one interface.

`construct(method, signal, risk, constraints, settings, current)` returns a `Construction`
for every method in `METHODS`; each is a config choice:

* `top_k`: equal weights on the names the signal ranks highest (long-short: and short the
  lowest), the book the backtest's daily top-k trades;
* `hrp`: hierarchical risk parity (skfolio's `HierarchicalRiskParity`) of the names the
  signal ranks in the top (and bottom) `select` fraction: the signal picks, the risk model
  sizes;
* `risk_parity`: equal risk contributions (skfolio's `RiskBudgeting`) of the same names;
* `min_cvar`: minimum CVaR at `cvar_level` (skfolio's `MeanRisk`) of the same names, on the
  risk model's return scenarios;
* `mean_variance`: maximum Sharpe ratio (skfolio's `MeanRisk`, `MAXIMIZE_RATIO`) over the
  whole universe with the signal as expected returns (long-only: fully invested; long-short:
  net exposure fixed, gross up to its cap, scaled up to it when net is 0).

Long-short books of the selection methods are sized long-only on each side (the long side
to (gross + net) / 2, the short side to (gross - net) / 2). A book has at least as many
names as `max_weight` needs to hold its budget. A method that fails (no feasible or
finite solution, weights beyond their bounds) falls back to equal weights on its book and
says why in `fallback`. Then, against current holdings, a turnover above `max_turnover`
moves only that far toward the target: w = current + (cap / turnover) (target - current).
`weight_problems` lists every broken constraint of a result, for tests and asset checks.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from finpipe.portfolio.risk_model import RiskModel

PortfolioKind = Literal["long_short", "long_only"]
METHODS = ("top_k", "hrp", "mean_variance", "risk_parity", "min_cvar")
TOLERANCE = 1e-6  # how far a weight may pass a bound before it counts as broken


class ConstructionError(ValueError):
    """Constraints that no portfolio of these names can meet; says what to change."""


@dataclass(frozen=True)
class Constraints:
    """What every target must satisfy: signs, gross (sum |w|) and net (sum w) exposure,
    the largest |weight| per name, and the most turnover (sum |w - current|; 0: no cap)."""

    long_only: bool = True
    gross: float = 1.0
    net: float = 1.0
    max_weight: float = 0.25
    max_turnover: float = 0.0

    def __post_init__(self) -> None:
        if self.gross <= 0 or self.max_weight <= 0 or self.max_turnover < 0:
            raise ConstructionError("gross and max_weight must be > 0, max_turnover >= 0")
        if self.long_only and not math.isclose(self.net, self.gross):
            raise ConstructionError(
                f"a long-only book has net = gross; got net {self.net}, gross {self.gross}"
            )
        if abs(self.net) > self.gross:
            raise ConstructionError(f"|net| {self.net} cannot exceed gross {self.gross}")

    @property
    def long_budget(self) -> float:
        return (self.gross + self.net) / 2.0

    @property
    def short_budget(self) -> float:
        return (self.gross - self.net) / 2.0


@dataclass(frozen=True)
class ConstructionSettings:
    """`top_k`: names per side of the top-k book (a fraction of the names with a signal, at
    least one); `select`: the fraction the selection methods size; `cvar_level`: the CVaR
    confidence of `min_cvar`."""

    top_k: float = 0.2
    select: float = 0.5
    cvar_level: float = 0.95

    def __post_init__(self) -> None:
        for name in ("top_k", "select"):
            if not 0 < getattr(self, name) <= 1:
                raise ConstructionError(f"{name} must be in (0, 1], got {getattr(self, name)}")


@dataclass
class Construction:
    """Target weights by ticker (signed), the method, why it fell back (empty: it did not)
    and whether the turnover cap moved the weights short of the method's target."""

    method: str
    weights: pd.Series
    fallback: str = ""
    turnover_limited: bool = False


@functools.cache
def given_prior() -> type:
    """A skfolio prior that hands the optimisers our risk model (expected returns,
    covariance and return scenarios) instead of estimating its own. skfolio is imported
    on first use: it is slow to import and only the constructions need it."""
    from skfolio.prior import BasePrior, ReturnDistribution

    class GivenPrior(BasePrior):
        def __init__(self, mu=None, covariance=None, returns=None) -> None:
            self.mu = mu
            self.covariance = covariance
            self.returns = returns

        def fit(self, X, y=None, **fit_params) -> Any:
            self.return_distribution_ = ReturnDistribution(
                mu=np.asarray(self.mu, dtype=np.float64),
                covariance=np.asarray(self.covariance, dtype=np.float64),
                returns=np.asarray(self.returns, dtype=np.float64),
            )
            return self

    return GivenPrior


PERCENT = 100.0  # the optimisers see returns in percent: better scaled for the solver


def _fit(optimiser: Any, risk: RiskModel, mu: np.ndarray) -> np.ndarray:
    """Weights of a skfolio optimiser fitted on our risk model (every method here is
    invariant to the unit of returns, so they are given in percent)."""
    scenarios = PERCENT * risk.scenarios
    prior = given_prior()(PERCENT * mu, PERCENT**2 * risk.covariance, scenarios)
    optimiser.set_params(prior_estimator=prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimiser.fit(scenarios)
    return np.asarray(optimiser.weights_, dtype=np.float64)


def _book_weights(
    method: str, risk: RiskModel, budget: float, max_weight: float, settings: ConstructionSettings
) -> np.ndarray:
    """Long-only weights of one book (the risk model's names) summing to `budget`."""
    from skfolio.measures import RiskMeasure
    from skfolio.optimization import (
        HierarchicalRiskParity,
        MeanRisk,
        ObjectiveFunction,
        RiskBudgeting,
    )

    n = len(risk.tickers)
    if method == "top_k" or n == 1:
        return np.full(n, budget / n)
    cap = min(1.0, max_weight / budget)
    if method == "hrp":
        optimiser = HierarchicalRiskParity(max_weights=cap)
    elif method == "risk_parity":
        optimiser = RiskBudgeting(max_weights=cap)
    elif method == "min_cvar":
        optimiser = MeanRisk(
            objective_function=ObjectiveFunction.MINIMIZE_RISK,
            risk_measure=RiskMeasure.CVAR,
            cvar_beta=settings.cvar_level,
            max_weights=cap,
        )
    else:
        raise ValueError(f"unknown construction method {method!r}; expected one of {METHODS}")
    return budget * _fit(optimiser, risk, np.zeros(n))


def _mean_variance(
    signal: np.ndarray, risk: RiskModel, constraints: Constraints, horizon: int
) -> np.ndarray:
    from skfolio.optimization import MeanRisk, ObjectiveFunction

    mu = signal / horizon  # per day, like the covariance
    c = constraints
    if c.long_only:
        optimiser = MeanRisk(
            objective_function=ObjectiveFunction.MAXIMIZE_RATIO,
            max_weights=min(1.0, c.max_weight / c.gross),
        )
        return c.gross * _fit(optimiser, risk, mu)
    optimiser = MeanRisk(
        objective_function=ObjectiveFunction.MAXIMIZE_RATIO,
        min_weights=-c.max_weight,
        max_weights=c.max_weight,
        budget=c.net,
        max_long=c.long_budget,
        max_short=c.short_budget if c.short_budget > 0 else None,
    )
    weights = _fit(optimiser, risk, mu)
    gross = np.abs(weights).sum()
    if c.net == 0 and gross > 0:  # the ratio does not change with scale: use the cap
        weights *= min(c.gross / gross, c.max_weight / np.abs(weights).max())
    return weights


def book_size(fraction: float, n: int, budget: float, max_weight: float, limit: int) -> int:
    """Names in a book: `fraction` of `n` (at least one), raised to what `max_weight` needs
    to hold `budget`; ConstructionError when more than `limit` names would be needed."""
    needed = math.ceil(budget / max_weight - 1e-9)
    size = max(math.floor(fraction * n), 1, needed)
    if size > limit:
        raise ConstructionError(
            f"a book of budget {budget:g} needs {needed} names at max_weight {max_weight:g}, "
            f"but only {limit} are available; raise max_weight or lower gross"
        )
    return size


def _books(
    ranked: list[str], fraction: float, constraints: Constraints
) -> list[tuple[list[str], float, float]]:
    """(names, budget, sign) of the long book and, long-short, the short book."""
    n = len(ranked)
    c = constraints
    if c.long_only:
        return [(ranked[: book_size(fraction, n, c.gross, c.max_weight, n)], c.gross, 1.0)]
    books = []
    for budget, sign in ((c.long_budget, 1.0), (c.short_budget, -1.0)):
        if budget <= 0:
            continue
        size = book_size(fraction, n, budget, c.max_weight, n // 2)
        books.append((ranked[:size] if sign > 0 else ranked[-size:], budget, sign))
    return books


def limit_turnover(
    target: pd.Series, current: pd.Series | None, cap: float
) -> tuple[pd.Series, bool]:
    """Move from `current` toward `target` no further than turnover `cap` (0: no cap);
    returns the weights (over both sets of names) and whether the cap bound."""
    if current is None or cap <= 0:
        return target, False
    names = target.index.union(current.index)
    t, cur = target.reindex(names, fill_value=0.0), current.reindex(names, fill_value=0.0)
    turnover = float((t - cur).abs().sum())
    if turnover <= cap:
        return t, False
    return cur + (cap / turnover) * (t - cur), True


def construct(
    method: str,
    signal: pd.Series,
    risk: RiskModel,
    constraints: Constraints = Constraints(),
    settings: ConstructionSettings = ConstructionSettings(),
    current: pd.Series | None = None,
    horizon: int = 1,
) -> Construction:
    """Target weights of `method` for the names with both a finite `signal` (expected
    return over `horizon` days, by ticker) and a place in the risk model; see the module
    rules. `current` holds the current weights by ticker (None: cash)."""
    if method not in METHODS:
        raise ValueError(f"unknown construction method {method!r}; expected one of {METHODS}")
    usable = signal[np.isfinite(signal.to_numpy(np.float64))]
    usable = usable[usable.index.isin(risk.tickers)]
    if usable.empty:
        raise ConstructionError("no name has both a signal and a place in the risk model")
    # Ranked by signal, ties by ticker.
    ranked = usable.sort_index().sort_values(ascending=False, kind="stable")
    fraction = settings.top_k if method == "top_k" else settings.select
    books = _books(list(ranked.index), fraction, constraints)
    weights = pd.Series(0.0, index=ranked.index)
    fallback = ""
    try:
        if method == "mean_variance":
            model = risk.subset(list(ranked.index))
            values = _mean_variance(ranked.to_numpy(np.float64), model, constraints, horizon)
            weights[:] = values
        else:
            for names, budget, sign in books:
                values = _book_weights(
                    method, risk.subset(names), budget, constraints.max_weight, settings
                )
                weights[names] = sign * values
        weights[weights.abs() < 1e-8] = 0.0  # solver noise
        problems = weight_problems(weights, constraints)
        if problems:
            raise ConstructionError("; ".join(problems))
    except Exception as error:  # any optimiser failure falls back, and says why
        fallback = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        weights[:] = 0.0
        for names, budget, sign in books:
            weights[names] = sign * budget / len(names)
    final, limited = limit_turnover(weights, current, constraints.max_turnover)
    return Construction(method, final.sort_index(), fallback, limited)


def weight_problems(
    weights: pd.Series,
    constraints: Constraints,
    current: pd.Series | None = None,
    turnover_limited: bool = False,
) -> list[str]:
    """Every constraint `weights` break (empty: none). With `turnover_limited` the weights
    are a partial move from `current`: the sum lies between current's and the net target,
    and a name may keep a current weight beyond `max_weight` it is moving away from."""
    w = weights.to_numpy(np.float64)
    c = constraints
    if not np.isfinite(w).all():
        return ["weights are not all finite"]
    cur = (
        current.reindex(weights.index, fill_value=0.0).to_numpy(np.float64)
        if current is not None
        else np.zeros_like(w)
    )
    problems = []
    if c.long_only and (w < -TOLERANCE).any():
        problems.append(f"{int((w < -TOLERANCE).sum())} negative weights in a long-only book")
    bound = np.maximum(c.max_weight, np.abs(cur)) if turnover_limited else c.max_weight
    over = np.abs(w) > bound + TOLERANCE
    if over.any():
        problems.append(f"{int(over.sum())} weights beyond max_weight {c.max_weight:g}")
    total = w.sum()
    if turnover_limited:
        low, high = sorted((cur.sum(), c.net))
        if not low - TOLERANCE <= total <= high + TOLERANCE:
            problems.append(f"weights sum to {total:.6f}, outside [{low:.6f}, {high:.6f}]")
    elif abs(total - c.net) > TOLERANCE:
        problems.append(f"weights sum to {total:.6f}, not the net exposure {c.net:g}")
    if np.abs(w).sum() > max(c.gross, np.abs(cur).sum()) + TOLERANCE:
        problems.append(f"gross exposure {np.abs(w).sum():.6f} above {c.gross:g}")
    if c.max_turnover > 0 and current is not None:
        names = weights.index.union(current.index)
        moved = (
            (weights.reindex(names, fill_value=0.0) - current.reindex(names, fill_value=0.0))
            .abs()
            .sum()
        )
        if moved > c.max_turnover + TOLERANCE:
            problems.append(f"turnover {moved:.6f} above max_turnover {c.max_turnover:g}")
    return problems


def top_k_weights(
    signal: pd.DataFrame, k: int | float, kind: PortfolioKind = "long_short"
) -> pd.DataFrame:
    """Top-k (and bottom-k) equal weights per date from a wide signal; NaN rows stay NaN.

    long_short holds +1/k on each of the k highest predictions and -1/k on each of the k
    lowest (gross 2, net 0); long_only holds +1/k on the k highest. `k` is a count, or a
    fraction of the names with a prediction that date (at least one). Ties go to the
    earlier ticker in sort order. This is the backtest's daily book.
    """
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
