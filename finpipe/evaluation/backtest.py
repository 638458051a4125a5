"""Backtest of out-of-sample predictions: forecast skill, portfolios, regimes and stress.

`run_backtest` takes long predictions of every model (walk-forward members, the ensemble and
the baselines, told apart by the `model` column), the labels and the prices, and returns every
table the reports show, all computed with `finpipe.core.metrics`:

* forecast skill per model and horizon: rank IC and IC (mean, ICIR, t-stat), directional
  accuracy against its chance level with a bootstrap interval, MAE/RMSE, interval coverage;
* daily portfolios per model (long-short and long-only top-k, net of costs; the equal-weight
  baseline as buy-and-hold) with performance, bootstrap Sharpe intervals, PSR, and the
  deflated Sharpe ratio across all strategies;
* the same per trend and volatility regime of the benchmark, and per named stress window;
* with the construction methods' replayed target weights (`finpipe.portfolio.targets`), each
  method's portfolio, rebalanced on its dates and drifting in between, beside the top-k
  book and the baselines of the same kind, net of costs (`construction_comparison`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE
from finpipe.core.metrics import (
    accuracy_ci,
    annualized_return,
    daily_directional_accuracy,
    daily_ic,
    daily_rank_ic,
    deflated_sharpe_ratios,
    ic_summary,
    interval_coverage,
    mae,
    mean_stderr,
    performance_summary,
    rmse,
    sharpe_ci,
    sharpe_ratio,
)
from finpipe.core.prices import daily_returns
from finpipe.evaluation.baselines import BASELINES, baseline_predictions
from finpipe.evaluation.regimes import (
    benchmark_close,
    equal_weight_index,
    market_regimes,
    metrics_by_regime,
    stress_labels,
)
from finpipe.evaluation.simulation import (
    PortfolioKind,
    PortfolioResult,
    buy_and_hold,
    simulate_portfolio,
    simulate_rebalanced,
)
from finpipe.portfolio.risk import var_backtest

BUY_AND_HOLD_MODEL = "equal_weight"  # the baseline run as buy-and-hold, not ranked


@dataclass(frozen=True)
class BacktestConfig:
    """How predictions become portfolios and how their uncertainty is measured.

    `horizon`: the prediction horizon the portfolios trade (None: the shortest). `k`: names
    per leg, a count or a fraction of the names that date. `cost_bps`: costs per unit traded.
    `execution_lag`: dates from signal to trade, as in the labels. `schedules`: how the
    ensemble's forecast of each horizon is also traded beside the daily book (every h dates,
    in h overlapping tranches, within a no-trade `band`; `simulate_portfolio`), named
    `ensemble/<kind>@<schedule>_h<h>`. `block`: mean block length
    of the stationary bootstrap of Sharpe ratios. `n_trials`: strategies tried in total for
    the deflated Sharpe ratio (None: those in this backtest).
    """

    horizon: int | None = None
    k: int | float = 0.2
    cost_bps: float = 5.0
    execution_lag: int = 1
    kinds: tuple[PortfolioKind, ...] = ("long_short", "long_only")
    schedules: tuple[str, ...] = ("every_h", "tranches", "band")
    band: float = 0.02
    n_boot: int = 1000
    block: float = 10.0
    level: float = 0.95
    calibration_bins: int = 5
    rolling_ic_window: int = 63
    n_trials: int | None = None
    seed: int = 0


@dataclass
class BacktestResult:
    """Every table of a backtest; `tables()` names them for Parquet/JSON output."""

    config: BacktestConfig
    forecast: pd.DataFrame
    performance: pd.DataFrame
    daily_returns: pd.DataFrame
    gross_returns: pd.DataFrame
    turnover: pd.DataFrame
    daily_ic: pd.DataFrame
    regimes: pd.DataFrame
    by_regime: pd.DataFrame
    stress: pd.DataFrame
    calibration: pd.DataFrame
    coverage: pd.DataFrame
    coverage_by_year: pd.DataFrame
    weights: pd.DataFrame = field(default_factory=pd.DataFrame)
    folds: pd.DataFrame = field(default_factory=pd.DataFrame)
    procedure: str = ""
    decisions: pd.DataFrame = field(default_factory=pd.DataFrame)
    constructions: pd.DataFrame = field(default_factory=pd.DataFrame)
    construction_returns: pd.DataFrame = field(default_factory=pd.DataFrame)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Long/flat frames by name, ready to write."""

        def dated(frame: pd.DataFrame) -> pd.DataFrame:
            return frame.rename_axis("date").reset_index()

        return {
            "forecast": self.forecast,
            "performance": self.performance,
            "daily_returns": dated(self.daily_returns),
            "gross_returns": dated(self.gross_returns),
            "turnover": dated(self.turnover),
            "daily_rank_ic": dated(self.daily_ic),
            "regimes": dated(self.regimes.astype(object)),
            "by_regime": self.by_regime,
            "stress": self.stress,
            "calibration": self.calibration,
            "coverage": self.coverage,
            "coverage_by_year": self.coverage_by_year,
            "ensemble_weights": self.weights,
            "replay_folds": self.folds,
            "research_decisions": self.decisions,
            "constructions": self.constructions,
            "construction_returns": dated(self.construction_returns),
        }

    def config_dict(self) -> dict[str, object]:
        return asdict(self.config)


def with_baselines(
    predictions: pd.DataFrame,
    prices: pd.DataFrame,
    names: Sequence[str] = BASELINES,
    seed: int = 0,
) -> pd.DataFrame:
    """Predictions plus the baselines' over the same dates and horizons."""
    dates = predictions["date"]
    horizons = tuple(int(h) for h in np.sort(predictions["horizon"].unique()))
    base = baseline_predictions(prices, horizons, names, dates.min(), dates.max(), seed)
    base = base[base["date"].isin(pd.unique(dates))]
    return pd.concat([predictions, base], ignore_index=True)


def _chance_accuracy(p: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a call independent of the outcome with the same up-shares."""
    usable = np.isfinite(p) & np.isfinite(y) & (p != 0) & (y != 0)
    if not usable.any():
        return float("nan")
    up_p, up_y = (p[usable] > 0).mean(), (y[usable] > 0).mean()
    return float(up_p * up_y + (1 - up_p) * (1 - up_y))


def _interval_columns(frame: pd.DataFrame) -> tuple[str, str, float] | None:
    """(lower, upper, nominal level) columns: lower/upper, else the outermost quantiles."""
    if {"lower", "upper"} <= set(frame.columns) and frame["lower"].notna().any():
        level = frame["interval_level"].dropna() if "interval_level" in frame else pd.Series()
        return "lower", "upper", float(level.iloc[0]) if len(level) else float("nan")
    quantiles = sorted(
        (float(c.removeprefix("quantile_")), c)
        for c in frame.columns
        if c.startswith("quantile_") and frame[c].notna().any()
    )
    if len(quantiles) >= 2:
        (lo, lo_col), (hi, hi_col) = quantiles[0], quantiles[-1]
        return lo_col, hi_col, hi - lo
    return None


def forecast_skill(
    labelled: pd.DataFrame, config: BacktestConfig = BacktestConfig()
) -> tuple[pd.DataFrame, dict[tuple[str, int], pd.Series]]:
    """Skill of every model and horizon on predictions joined to their labels, and the
    daily rank IC series behind it by (model, horizon).

    Columns as in `finpipe.core.metrics.forecast_metrics` (each daily series computed once),
    plus rank_icir, rank/IC t-stats, a bootstrap interval of directional accuracy, the
    chance accuracy, MAE/RMSE and, where the predictions carry intervals, their coverage.
    """
    rows, daily = [], {}
    for (model, horizon), part in labelled.groupby(["model", "horizon"], sort=True):
        p, y, d = part["prediction"], part["fwd_return"], part["date"]
        lags = max(int(horizon) - 1, 0)
        daily[(model, int(horizon))] = daily_rank_ic(p, y, d)
        rank = ic_summary(daily[(model, int(horizon))], lags)
        pearson = ic_summary(daily_ic(p, y, d), lags)
        accuracy = daily_directional_accuracy(p, y, d)
        da, da_se = mean_stderr(accuracy, lags, "uniform")
        _, da_lo, da_hi = accuracy_ci(
            accuracy, config.n_boot, config.level, float(horizon) if horizon > 1 else None
        )
        row = {
            "model": model,
            "horizon": int(horizon),
            "n": int((np.isfinite(p) & np.isfinite(y)).sum()),
            "n_dates": int(d.nunique()),
            "rank_ic": rank["mean"],
            "rank_ic_se": rank["se"],
            "rank_ic_t": rank["t_stat"],
            "rank_icir": rank["icir"],
            "ic": pearson["mean"],
            "ic_se": pearson["se"],
            "ic_t": pearson["t_stat"],
            "directional_accuracy": da,
            "directional_accuracy_se": da_se,
            "directional_accuracy_lo": da_lo,
            "directional_accuracy_hi": da_hi,
            "chance_accuracy": _chance_accuracy(p.to_numpy(), y.to_numpy()),
            # Baselines rank names; their values are not forecasts of the label.
            "mae": np.nan if model in BASELINES else mae(p, y),
            "rmse": np.nan if model in BASELINES else rmse(p, y),
        }
        interval = _interval_columns(part)
        if interval is not None:
            lo_col, hi_col, level = interval
            row["interval_level"] = level
            row["coverage"] = interval_coverage(y, part[lo_col], part[hi_col])
        rows.append(row)
    return pd.DataFrame(rows), daily


def coverage_by_year(labelled: pd.DataFrame) -> pd.DataFrame:
    """Share of outcomes inside the intervals per model, horizon and calendar year (models
    with intervals only): `model, horizon, year, interval_level, n, coverage`."""
    columns = ["model", "horizon", "year", "interval_level", "n", "coverage"]
    if not {"lower", "upper", "interval_level"} <= set(labelled.columns):
        return pd.DataFrame(columns=columns)
    rows = labelled.dropna(subset=["lower", "upper", "fwd_return"])
    if rows.empty:
        return pd.DataFrame(columns=columns)
    inside = (rows["fwd_return"] >= rows["lower"]) & (rows["fwd_return"] <= rows["upper"])
    table = (
        rows.assign(year=rows["date"].dt.year, inside=inside)
        .groupby(["model", "horizon", "year"], sort=True)
        .agg(
            interval_level=("interval_level", "first"),
            n=("inside", "size"),
            coverage=("inside", "mean"),
        )
    )
    return table.reset_index()[columns]


def calibration_table(labelled: pd.DataFrame, bins: int = 5) -> pd.DataFrame:
    """Per model and horizon, cross-sectional prediction bins (1 = lowest each date) with
    their mean prediction and mean realised return."""
    frame = labelled[np.isfinite(labelled["prediction"]) & np.isfinite(labelled["fwd_return"])]
    pct = frame.groupby(["model", "horizon", "date"])["prediction"].rank(pct=True)
    frame = frame.assign(bin=np.ceil(pct * bins).clip(1, bins).astype(np.int64))
    out = frame.groupby(["model", "horizon", "bin"], sort=True).agg(
        mean_prediction=("prediction", "mean"),
        mean_realised=("fwd_return", "mean"),
        n=("fwd_return", "size"),
    )
    return out.reset_index()


def _portfolios(
    predictions: pd.DataFrame, returns: pd.DataFrame, horizon: int, config: BacktestConfig
) -> dict[str, object]:
    results = {}
    chosen = predictions[predictions["horizon"] == horizon]
    for model, part in chosen.groupby("model", sort=True):
        if model == BUY_AND_HOLD_MODEL:
            # Bought when the first signal trades, held to the date the last one is earned.
            calendar, last = returns.index, len(returns.index) - 1
            entry = calendar.searchsorted(part["date"].min()) + config.execution_lag
            exit_ = calendar.searchsorted(part["date"].max()) + config.execution_lag + 1
            results[f"{model}/buy_and_hold"] = buy_and_hold(
                returns, calendar[min(entry, last)], calendar[min(exit_, last)], config.cost_bps
            )
            continue
        for kind in config.kinds:
            results[f"{model}/{kind}"] = simulate_portfolio(
                part, returns, config.k, kind, config.cost_bps, config.execution_lag
            )
    ensemble = predictions[predictions["model"] == STACKED_ENSEMBLE]
    for h, part in ensemble.groupby("horizon", sort=True):
        for schedule in config.schedules:
            if schedule != "band" and h == 1:
                continue  # a one-day forecast traded every day is the daily book
            for kind in config.kinds:
                results[f"{STACKED_ENSEMBLE}/{kind}@{schedule}_h{h}"] = simulate_portfolio(
                    part,
                    returns,
                    config.k,
                    kind,
                    config.cost_bps,
                    config.execution_lag,
                    horizon=int(h),
                    schedule=schedule,
                    band=config.band,
                )
    return results


def _performance_row(name: str, result: PortfolioResult, config: BacktestConfig) -> dict:
    r = result.returns
    _, lo, hi = sharpe_ci(
        r, n_boot=config.n_boot, level=config.level, block=config.block, seed=config.seed
    )
    return {
        "strategy": name,
        **performance_summary(r, result.turnover),
        "sharpe_lo": lo,
        "sharpe_hi": hi,
        "gross_sharpe": sharpe_ratio(result.gross_returns),
        "cost_drag": annualized_return(result.gross_returns) - annualized_return(r),
    }


def construction_comparison(
    targets: pd.DataFrame,
    returns: pd.DataFrame,
    last_signal: object,
    references: dict[str, PortfolioResult],
    config: BacktestConfig = BacktestConfig(),
    fallbacks: pd.DataFrame | None = None,
    known: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, daily net returns) of every construction method's replayed targets (`date,
    method, ticker, weight`) beside `references` (the top-k book and the baselines), net of
    costs: performance with a bootstrap Sharpe interval, mean daily turnover, the deflated
    Sharpe ratio across all of them, and how often each method fell back (`fallbacks`:
    `date, method, reason`). `known` (performance rows by strategy) saves recomputing the
    references' rows."""
    results = dict(references)
    rebalances = {}
    for method, part in targets.groupby("method", sort=True):
        wide = part.pivot_table(index="date", columns="ticker", values="weight", fill_value=0.0)
        results[f"construction/{method}"] = simulate_rebalanced(
            wide, returns, last_signal, config.cost_bps, config.execution_lag
        )
        rebalances[f"construction/{method}"] = len(wide)
    net = pd.DataFrame({name: result.returns for name, result in results.items()})
    dsr = deflated_sharpe_ratios(net, config.n_trials)
    counts = fallbacks.groupby("method").size() if fallbacks is not None else pd.Series()
    rows = []
    for name, result in results.items():
        method = name.removeprefix("construction/")
        if known is not None and name in known.index:
            row = {"strategy": name, **known.loc[name].to_dict()}
        else:
            row = _performance_row(name, result, config)
        rows.append(
            {
                **row,
                "rebalances": rebalances.get(name, np.nan),
                "fallbacks": float(counts.get(method, 0)) if name in rebalances else np.nan,
                "deflated_sharpe": float(dsr[name]),
            }
        )
    return pd.DataFrame(rows), net


def construction_var_backtest(
    targets: pd.DataFrame,
    stated: pd.DataFrame,
    returns: pd.DataFrame,
    last_signal: object,
    execution_lag: int = 1,
) -> pd.DataFrame:
    """Kupiec's test of the 1-day VaRs stated along a construction replay (`stated`: `date,
    method, model, level, value`) against the daily gross returns of holding each method's
    targets (`date, method, ticker, weight`): the VaR stated with a target applies to every
    day that target is held. Rows: method, model, level, n, breaches, expected, kupiec_lr,
    p_value."""
    calendar = returns.index
    rows = []
    for method, part in targets.groupby("method", sort=True):
        wide = part.pivot_table(index="date", columns="ticker", values="weight", fill_value=0.0)
        held = simulate_rebalanced(wide, returns, last_signal, 0.0, execution_lag)
        daily = held.gross_returns.iloc[1:]  # the first date is the opening trade
        for (model, level), var in stated[stated["method"] == method].groupby(["model", "level"]):
            starts = calendar.get_indexer(var["date"]) + execution_lag + 1
            inside = (starts > execution_lag) & (starts < len(calendar))
            applies = pd.Series(var["value"].to_numpy()[inside], index=calendar[starts[inside]])
            applies = applies.reindex(daily.index).ffill()
            rows.append(
                {
                    "method": method,
                    "model": model,
                    "level": float(level),
                    **var_backtest(daily, applies, float(level)),
                }
            )
    return pd.DataFrame(rows)


def run_backtest(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    prices: pd.DataFrame,
    benchmark: pd.DataFrame | None = None,
    weights: pd.DataFrame | None = None,
    config: BacktestConfig = BacktestConfig(),
    folds: pd.DataFrame | None = None,
    procedure: str = "",
    constructions: pd.DataFrame | None = None,
    construction_fallbacks: pd.DataFrame | None = None,
    decisions: pd.DataFrame | None = None,
) -> BacktestResult:
    """Evaluate long predictions (`date, ticker, horizon, model, prediction`, optional
    interval columns) of every model against labels and prices; see the module docstring.

    The benchmark (prices contract, one ticker) defines the regimes; without one, the
    equal-weight universe does. `weights` (the ensemble weights per fold), `folds` (the
    replayed fits), `procedure` (what was replayed, in words) and `decisions` (the research
    decision log) pass through to the report.
    `constructions` (`date, method, ticker, weight`: the construction methods' replayed
    targets) and their fallbacks add the construction comparison.
    """
    horizon = config.horizon or int(predictions["horizon"].min())
    labelled = predictions.merge(labels[[*ROW_KEY, "fwd_return"]], on=list(ROW_KEY), how="inner")
    returns = daily_returns(prices)
    portfolios = _portfolios(predictions, returns, horizon, config)
    net = pd.DataFrame({name: p.returns for name, p in portfolios.items()})
    gross = pd.DataFrame({name: p.gross_returns for name, p in portfolios.items()})
    turnover = pd.DataFrame({name: p.turnover for name, p in portfolios.items()})

    dsr = deflated_sharpe_ratios(net, config.n_trials)
    perf_rows = []
    for name, result in portfolios.items():
        model, kind = name.split("/", 1)
        row = _performance_row(name, result, config)
        perf_rows.append(
            {
                "strategy": name,
                "model": model,
                "kind": kind,
                **row,
                "deflated_sharpe": float(dsr[name]),
            }
        )
    performance = pd.DataFrame(perf_rows)
    comparison, comparison_returns = pd.DataFrame(), pd.DataFrame()
    if constructions is not None and len(constructions):
        kind = "long_short" if (constructions["weight"] < 0).any() else "long_only"
        references = {
            name: result
            for name, result in portfolios.items()
            if name.endswith(f"/{kind}") or name.endswith("/buy_and_hold")
        }
        references = {
            name: result
            for name, result in references.items()
            if name.split("/", 1)[0] in (STACKED_ENSEMBLE, *BASELINES)
        }
        comparison, comparison_returns = construction_comparison(
            constructions,
            returns,
            predictions["date"].max(),
            references,
            config,
            construction_fallbacks,
            performance.set_index("strategy").drop(columns=["model", "kind", "deflated_sharpe"]),
        )

    forecast, daily = forecast_skill(labelled, config)
    rank_ic_by_date = pd.DataFrame(
        {model: series for (model, h), series in daily.items() if h == horizon and len(series)}
    )  # constant predictions (equal weight) have no rank IC
    close = benchmark_close(benchmark) if benchmark is not None else equal_weight_index(returns)
    regimes = market_regimes(close)
    test_dates = net.index
    by_regime = metrics_by_regime(net, regimes, rank_ic_by_date, ic_lags=horizon - 1)
    stress = metrics_by_regime(
        net,
        stress_labels(test_dates),
        rank_ic_by_date,
        ic_lags=horizon - 1,
        return_lag=0,
        contiguous=True,
    )
    coverage_columns = ["model", "horizon", "interval_level", "coverage"]
    coverage = (
        forecast.dropna(subset=["coverage"])[coverage_columns]
        if "coverage" in forecast
        else pd.DataFrame(columns=coverage_columns)
    )
    return BacktestResult(
        config=config,
        forecast=forecast,
        performance=performance,
        daily_returns=net,
        gross_returns=gross,
        turnover=turnover,
        daily_ic=rank_ic_by_date,
        regimes=regimes.loc[test_dates.min() : test_dates.max()],
        by_regime=by_regime,
        stress=stress,
        calibration=calibration_table(
            labelled[labelled["horizon"] == horizon], config.calibration_bins
        ),
        coverage=coverage.reset_index(drop=True),
        coverage_by_year=coverage_by_year(labelled),
        weights=weights if weights is not None else pd.DataFrame(),
        folds=folds if folds is not None else pd.DataFrame(),
        procedure=procedure,
        decisions=decisions if decisions is not None else pd.DataFrame(),
        constructions=comparison,
        construction_returns=comparison_returns,
    )
