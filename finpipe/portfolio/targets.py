"""Target portfolios of a date: one procedure for the served targets and their replay.

`build_targets` makes, as of one date, the risk model (`finpipe.portfolio.risk_model`),
the signal and each configured method's target weights (`finpipe.portfolio.construction`).
The signal is the ensemble's expected return at the portfolio horizon, times its
confidence when `shrink_by_confidence` (an uncertain forecast counts for less), or with
`factor_weights` the multi-factor score on the forecast's scale
(`finpipe.portfolio.factors`). Only data dated on or before the as-of date enters.

`replay_targets` runs the same procedure at every rebalance date of the backtest on the
replay's out-of-sample predictions, starting from cash, and states the 1-day VaR of each
target as it goes, for the VaR backtest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finpipe.portfolio.construction import (
    METHODS,
    Constraints,
    Construction,
    ConstructionSettings,
    construct,
)
from finpipe.portfolio.factors import FactorScores, factor_scores, score_signal
from finpipe.portfolio.risk import LEVELS, var_table
from finpipe.portfolio.risk_model import (
    RiskModel,
    RiskModelConfig,
    RiskModelError,
    estimate_risk_model,
)


@dataclass(frozen=True)
class PortfolioSpec:
    """Everything that decides a target: methods, constraints, construction settings, the
    risk model, the forecast horizon, confidence shrinkage and optional factor weights."""

    methods: tuple[str, ...] = METHODS
    constraints: Constraints = field(default_factory=Constraints)
    settings: ConstructionSettings = field(default_factory=ConstructionSettings)
    risk: RiskModelConfig = field(default_factory=RiskModelConfig)
    horizon: int = 20
    shrink_by_confidence: bool = True
    factor_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise ValueError(f"methods must be some of {METHODS}, got {list(self.methods)}")


@dataclass
class Targets:
    """One date's targets by method, the risk models (plain, and GARCH-filtered when the
    volatility was given), the signal and factor scores they came from, and notes."""

    as_of: pd.Timestamp
    constructions: dict[str, Construction]
    risk: RiskModel
    filtered: RiskModel | None
    signal: pd.Series
    factors: FactorScores | None = None
    notes: list[str] = field(default_factory=list)


def build_targets(
    spec: PortfolioSpec,
    as_of: object,
    forecasts: pd.DataFrame,
    returns: pd.DataFrame,
    volatility: pd.DataFrame | None = None,
    current: pd.Series | Mapping[str, pd.Series] | None = None,
    features: pd.DataFrame | None = None,
    fundamentals: pd.DataFrame | None = None,
    close: pd.DataFrame | None = None,
) -> Targets:
    """Every method's target at `as_of` (see the module rules). `forecasts`: the date's
    ensemble rows at the horizon, indexed by ticker, with `prediction` and `confidence`;
    `returns`: wide daily simple returns; `volatility`: GARCH forecasts (wide) for the
    filtered model; `current`: current weights by ticker, or by method (None: cash);
    `features`, `fundamentals`, `close` (wide closes as traded): factor inputs."""
    as_of = pd.Timestamp(as_of)
    returns = returns.loc[:as_of]
    plain = estimate_risk_model(returns, as_of, dataclasses.replace(spec.risk, garch=False))
    filtered = None
    if volatility is not None:
        filtered = estimate_risk_model(
            returns, as_of, dataclasses.replace(spec.risk, garch=True), volatility.loc[:as_of]
        )
    risk = filtered if spec.risk.garch and filtered is not None else plain
    if spec.risk.garch and filtered is None:
        raise ValueError("risk.garch is set but no GARCH volatility was given")
    signal = forecasts["prediction"].astype(np.float64)
    if spec.shrink_by_confidence:
        signal = signal * forecasts["confidence"].astype(np.float64)
    scores = None
    if spec.factor_weights:
        closes = close.loc[:as_of].iloc[-1] if close is not None else None
        scores = factor_scores(
            risk.tickers,
            as_of,
            signal,
            pd.Series(np.sqrt(np.diag(risk.covariance)), index=risk.tickers),
            features=features,
            fundamentals=fundamentals,
            close=closes,
            weights=spec.factor_weights,
        )
        signal = score_signal(scores.score, signal)
    currents = current if isinstance(current, Mapping) else dict.fromkeys(spec.methods, current)
    constructions = {
        method: construct(
            method,
            signal,
            risk,
            spec.constraints,
            spec.settings,
            currents.get(method),
            spec.horizon,
        )
        for method in spec.methods
    }
    return Targets(as_of, constructions, plain, filtered, signal, scores, list(risk.notes))


@dataclass
class ConstructionReplay:
    """Long tables of a replay: `weights` (date, method, ticker, weight), `fallbacks`
    (date, method, reason) and `stated_var` (date, method, model, level, value: the 1-day
    VaR stated for each target when it was made)."""

    weights: pd.DataFrame
    fallbacks: pd.DataFrame
    stated_var: pd.DataFrame


def _drifted(weights: pd.Series, returns: pd.DataFrame) -> pd.Series:
    """Weights after holding them over `returns` (dates x tickers) without trading."""
    growth = (1.0 + returns.reindex(columns=weights.index).fillna(0.0)).prod()
    value = weights * growth
    return value / (1.0 + float((weights * (growth - 1.0)).sum()))


def replay_targets(
    spec: PortfolioSpec,
    forecasts: pd.DataFrame,
    returns: pd.DataFrame,
    dates: Sequence[pd.Timestamp],
    volatility: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
    fundamentals: pd.DataFrame | None = None,
    close: pd.DataFrame | None = None,
    levels: tuple[float, ...] = LEVELS,
) -> ConstructionReplay:
    """`build_targets` at each of `dates` on long `forecasts` (`date, ticker, prediction,
    confidence`), from cash; with a turnover cap, each date starts from the previous
    targets drifted with the returns since. A date without a usable risk model keeps the
    previous targets and is recorded as a fallback of every method."""
    weights, fallbacks, stated = [], [], []
    wanted = forecasts[forecasts["date"].isin(pd.DatetimeIndex(dates))]
    by_date = dict(tuple(wanted.groupby("date", sort=True)))
    held: dict[str, pd.Series] = {}
    previous: pd.Timestamp | None = None
    for date in dates:
        rows = by_date.get(pd.Timestamp(date))
        if rows is None:
            continue
        currents = None
        if spec.constraints.max_turnover > 0 and previous is not None:
            since = returns.loc[previous:date].iloc[1:]
            currents = {m: _drifted(w, since) for m, w in held.items()}
        try:
            targets = build_targets(
                spec,
                date,
                rows.set_index("ticker"),
                returns,
                volatility,
                currents,
                features,
                fundamentals,
                close,
            )
        except RiskModelError as error:
            fallbacks += [{"date": date, "method": m, "reason": str(error)} for m in spec.methods]
            continue
        for method, built in targets.constructions.items():
            target = held[method] = built.weights
            weights.append(
                pd.DataFrame(
                    {"date": date, "method": method, "ticker": target.index, "weight": target}
                )
            )
            if built.fallback:
                fallbacks.append({"date": date, "method": method, "reason": built.fallback})
            var = var_table(target, targets.risk, targets.filtered, levels, (1,))
            var = var[var["measure"] == "var"]
            stated.append(var[["model", "level", "value"]].assign(date=date, method=method))
        previous = pd.Timestamp(date)
    return ConstructionReplay(
        weights=pd.concat(weights, ignore_index=True)
        if weights
        else pd.DataFrame(columns=["date", "method", "ticker", "weight"]),
        fallbacks=pd.DataFrame(fallbacks, columns=["date", "method", "reason"]),
        stated_var=pd.concat(stated, ignore_index=True)[
            ["date", "method", "model", "level", "value"]
        ]
        if stated
        else pd.DataFrame(columns=["date", "method", "model", "level", "value"]),
    )
