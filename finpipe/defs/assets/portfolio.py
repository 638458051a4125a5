"""Group `portfolio`: from the served forecasts to portfolios. Target weights per
construction method for the newest prediction date, what they risk (VaR, CVaR, risk
contributions, beta, stress losses), the orders from current holdings, and the
construction methods replayed over the test period with the VaR backtest. Everything is
stored under `portfolio/`."""

import dataclasses

import dagster as dg
import pandas as pd

from finpipe.core.contracts import (
    CONSTRUCTION_REPLAY,
    FUNDAMENTALS,
    ORDERS,
    PRICES,
    RISK_CONTRIBUTIONS,
    RISK_REPORT,
    STRESS,
    TARGET_WEIGHTS,
    VAR_BACKTEST,
    conform,
)
from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.core.prices import close_matrix, daily_returns
from finpipe.core.storage import ParquetStore
from finpipe.core.time_plan import TimePlan
from finpipe.data.ingest import read_table
from finpipe.defs.assets.evaluation import read_replay, walk_forward_predictions
from finpipe.defs.assets.features import features, time_plan
from finpipe.defs.assets.ingest import benchmark_prices, raw_fundamentals, raw_prices
from finpipe.defs.assets.predictions import predictions
from finpipe.defs.metadata import contract_schema, embedded_png, md_table
from finpipe.defs.resources import PortfolioSettings, StorageResource
from finpipe.evaluation.backtest import construction_var_backtest
from finpipe.evaluation.regimes import STRESS_WINDOWS
from finpipe.features.garch import fit_garch
from finpipe.forecasting.predictions import read_predictions
from finpipe.portfolio.orders import current_weights, market_close, read_holdings, trade_prices
from finpipe.portfolio.orders import rebalance_orders as orders_to_target
from finpipe.portfolio.plots import risk_png, weights_png
from finpipe.portfolio.risk import beta, risk_contributions, stress_losses, var_table
from finpipe.portfolio.risk_model import RiskModelConfig, estimate_risk_model, garch_volatility
from finpipe.portfolio.targets import PortfolioSpec, build_targets, replay_targets

GROUP = "portfolio"
FOLDER = "portfolio"


def _volatility(prices: pd.DataFrame, plan: TimePlan) -> tuple[pd.DataFrame | None, str]:
    """GARCH volatility forecasts with parameters fitted on the dates before the replay's
    first fit (as the features' are), or None and why not."""
    try:
        params = fit_garch(prices, plan.transform_end)
    except ValueError as error:
        return None, f"no GARCH model: {error}"
    return garch_volatility(prices, params), f"GARCH fitted through {plan.transform_end.date()}"


def _factor_inputs(
    store: ParquetStore, spec: PortfolioSpec
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The features and fundamentals tables when the factor weights use them."""
    weights = spec.factor_weights or {}
    feature_table = store.read("features", "features") if weights.get("momentum") else None
    fundamentals = None
    if weights.get("value") or weights.get("quality"):
        fundamentals = read_table(store, "fundamentals", FUNDAMENTALS)
    return feature_table, fundamentals


def _write(store: ParquetStore, frame: pd.DataFrame, contract, name: str) -> str:
    table = conform(frame[list(contract.required)], contract) if len(frame) else contract.empty()
    return store.write(table, FOLDER, name)


@dg.asset(
    group_name=GROUP,
    deps=[predictions, raw_prices, time_plan, features, raw_fundamentals],
    kinds={"parquet"},
    code_version="1",
)
def target_weights(
    context: dg.AssetExecutionContext, storage: StorageResource, portfolio: PortfolioSettings
) -> dg.MaterializeResult:
    """Target weights of every configured construction method for the newest prediction
    date, from the served ensemble's forecasts and a risk model of the prices up to that
    date, within the constraints (long-only or long-short, gross and net exposure, weight
    per name, turnover against current holdings)."""
    store = storage.store()
    plan = storage.read_plan()
    spec = portfolio.spec(plan.settings.horizons)
    latest = read_predictions(store)
    if latest is None:
        raise FileNotFoundError("no served predictions yet: materialize predictions")
    rows = latest[(latest["model"] == STACKED_ENSEMBLE) & (latest["horizon"] == spec.horizon)]
    as_of = rows["date"].max()
    prices = read_table(store, "prices", PRICES)
    volatility, garch_note = _volatility(prices, plan) if spec.risk.garch else (None, "")
    holdings = read_holdings(portfolio.holdings_path)
    current = None
    if not holdings.empty:
        current = current_weights(holdings, trade_prices(prices, as_of), portfolio.capital)
    feature_table, fundamentals = _factor_inputs(store, spec)
    targets = build_targets(
        spec,
        as_of,
        rows.set_index("ticker"),
        daily_returns(prices),
        volatility,
        current,
        feature_table,
        fundamentals,
        market_close(prices),
    )
    expected = rows.set_index("ticker")["prediction"]
    version = ",".join(sorted(rows["model_version"].unique()))
    table = pd.concat(
        [
            pd.DataFrame(
                {
                    "date": as_of,
                    "method": method,
                    "ticker": built.weights.index,
                    "weight": built.weights.to_numpy(),
                    "expected_return": expected.reindex(built.weights.index).to_numpy(),
                    "model_version": version,
                }
            )
            for method, built in targets.constructions.items()
        ],
        ignore_index=True,
    )
    path = _write(store, table, TARGET_WEIGHTS, "target_weights")
    wide = table.pivot(index="ticker", columns="method", values="weight")[list(spec.methods)]
    fallbacks = {m: b.fallback for m, b in targets.constructions.items() if b.fallback}
    limited = [m for m, b in targets.constructions.items() if b.turnover_limited]
    notes = [*targets.notes, *([garch_note] if garch_note else [])]
    for note in notes:
        context.log.info("target_weights: %s", note)
    for method, reason in fallbacks.items():
        context.log.warning("target_weights: %s fell back to equal weights: %s", method, reason)
    metadata = {
        "date": dg.MetadataValue.text(str(as_of.date())),
        "horizon": dg.MetadataValue.int(spec.horizon),
        "methods": dg.MetadataValue.json(list(spec.methods)),
        "model_version": dg.MetadataValue.text(version),
        "weights": md_table(wide.reset_index()),
        "weights_plot": dg.MetadataValue.md(embedded_png("target weights", weights_png(wide))),
        "fallbacks": dg.MetadataValue.json(fallbacks),
        "turnover_limited": dg.MetadataValue.json(limited),
        "current_holdings": dg.MetadataValue.text(portfolio.holdings_path or "none (cash)"),
        "risk_model": dg.MetadataValue.json(
            {
                "lookback": spec.risk.lookback,
                "shrinkage": round(targets.risk.shrinkage, 4),
                "garch": spec.risk.garch,
                "notes": notes,
            }
        ),
        "dagster/row_count": dg.MetadataValue.int(len(table)),
        **contract_schema(TARGET_WEIGHTS),
        "path": dg.MetadataValue.path(path),
    }
    if targets.factors is not None:
        metadata["factor_scores"] = md_table(
            targets.factors.table.assign(score=targets.factors.score).reset_index(names="ticker")
        )
        metadata["factors_skipped"] = dg.MetadataValue.json(targets.factors.skipped)
    return dg.MaterializeResult(metadata=metadata)


def read_targets(store: ParquetStore) -> pd.DataFrame:
    """The stored target weights (what target_weights wrote)."""
    table = store.read(FOLDER, "target_weights")
    if table is None:
        raise FileNotFoundError("no target weights yet: materialize target_weights")
    return table


@dg.asset(
    group_name=GROUP,
    deps=[target_weights, raw_prices, benchmark_prices, time_plan],
    kinds={"parquet"},
    code_version="1",
)
def portfolio_risk(
    context: dg.AssetExecutionContext, storage: StorageResource, portfolio: PortfolioSettings
) -> dg.MaterializeResult:
    """What each target portfolio risks: 1- and 10-day VaR and CVaR at 95% and 99%
    (historical, Gaussian and GARCH-filtered), each name's share of its volatility, beta to
    the benchmark, and its loss in the stress windows the backtest knows; a summary per
    method in `portfolio/summary.json`."""
    store = storage.store()
    plan = storage.read_plan()
    targets = read_targets(store)
    as_of = targets["date"].max()
    prices = read_table(store, "prices", PRICES)
    returns = daily_returns(prices)
    config = RiskModelConfig(portfolio.lookback, portfolio.min_observations)
    plain = estimate_risk_model(returns, as_of, config)
    volatility, garch_note = _volatility(prices, plan)
    filtered = None
    if volatility is not None:
        garch_config = dataclasses.replace(config, garch=True)
        filtered = estimate_risk_model(returns, as_of, garch_config, volatility.loc[:as_of])
    benchmark = read_table(store, "benchmark", PRICES)
    benchmark_returns = daily_returns(benchmark).iloc[:, 0] if not benchmark.empty else None
    close = close_matrix(prices)
    reports, contributions, stresses, summary = [], [], [], {}
    for method, part in targets.groupby("method", sort=True):
        weights = part.set_index("ticker")["weight"]
        reports.append(var_table(weights, plain, filtered).assign(method=method))
        contributions.append(risk_contributions(weights, plain).assign(method=method))
        stress = stress_losses(weights, close.loc[:as_of], STRESS_WINDOWS)
        stresses.append(stress.assign(method=method))
        held = weights[weights != 0]
        summary[method] = {
            "beta": beta(weights, plain, benchmark_returns)
            if benchmark_returns is not None
            else None,
            "gross": float(held.abs().sum()),
            "net": float(held.sum()),
            "n_names": len(held),
            "as_of": str(as_of.date()),
        }
    report = pd.concat(reports, ignore_index=True)
    shares = pd.concat(contributions, ignore_index=True)
    stress_table = pd.concat(stresses, ignore_index=True)
    paths = {
        "risk_report": _write(store, report, RISK_REPORT, "risk_report"),
        "risk_contributions": _write(store, shares, RISK_CONTRIBUTIONS, "risk_contributions"),
        "stress": _write(store, stress_table, STRESS, "stress"),
        "summary": store.write_json(summary, FOLDER, "summary"),
    }
    context.log.info("portfolio_risk: %s; %s", garch_note, "; ".join(plain.notes) or "no notes")
    wide = report.pivot_table(
        index=["measure", "model", "horizon_days", "level"], columns="method", values="value"
    ).reset_index()
    return dg.MaterializeResult(
        metadata={
            "date": dg.MetadataValue.text(str(as_of.date())),
            "risk": md_table(wide),
            "risk_plot": dg.MetadataValue.md(embedded_png("VaR and CVaR", risk_png(report))),
            "beta": dg.MetadataValue.json({m: s["beta"] for m, s in summary.items()}),
            "summary": dg.MetadataValue.json(summary),
            "stress": md_table(
                stress_table.pivot(index="window", columns="method", values="loss").reset_index()
            ),
            "stress_missing": dg.MetadataValue.json(
                {
                    f"{m}/{w}": names
                    for m, w, names in stress_table[["method", "window", "missing"]].itertuples(
                        index=False
                    )
                    if names
                }
            ),
            "risk_contributions": md_table(
                shares.pivot(index="ticker", columns="method", values="contribution").reset_index()
            ),
            "garch": dg.MetadataValue.text(garch_note),
            **contract_schema(RISK_REPORT),
            **{f"path_{k}": dg.MetadataValue.path(v) for k, v in paths.items()},
        }
    )


@dg.asset(group_name=GROUP, deps=[target_weights, raw_prices], kinds={"parquet"}, code_version="1")
def rebalance_orders(
    context: dg.AssetExecutionContext, storage: StorageResource, portfolio: PortfolioSettings
) -> dg.MaterializeResult:
    """The trades from the current holdings (`portfolio.holdings_path`; none: cash) to
    each method's target, in shares and notional at the last close, with their estimated
    cost. Nothing is sent anywhere."""
    store = storage.store()
    targets = read_targets(store)
    as_of = targets["date"].max()
    prices = trade_prices(read_table(store, "prices", PRICES), as_of)
    holdings = read_holdings(portfolio.holdings_path)
    orders = pd.concat(
        [
            orders_to_target(
                part.set_index("ticker")["weight"],
                holdings,
                prices,
                portfolio.capital,
                portfolio.cost_bps,
                portfolio.whole_shares,
            ).assign(method=method)
            for method, part in targets.groupby("method", sort=True)
        ],
        ignore_index=True,
    )
    path = _write(store, orders, ORDERS, "orders")
    totals = orders.groupby("method").agg(
        trades=("ticker", "size"),
        bought=("notional", lambda x: float(x[x > 0].sum())),
        sold=("notional", lambda x: float(-x[x < 0].sum())),
        estimated_cost=("estimated_cost", "sum"),
    )
    context.log.info("orders: %d trades over %d methods", len(orders), len(totals))
    return dg.MaterializeResult(
        metadata={
            "date": dg.MetadataValue.text(str(as_of.date())),
            "holdings": dg.MetadataValue.text(portfolio.holdings_path or "none (cash)"),
            "totals": md_table(totals.reset_index()),
            "dagster/row_count": dg.MetadataValue.int(len(orders)),
            **contract_schema(ORDERS),
            "path": dg.MetadataValue.path(path),
        }
    )


@dg.asset(
    group_name=GROUP,
    deps=[walk_forward_predictions, raw_prices, time_plan, features, raw_fundamentals],
    kinds={"parquet"},
    code_version="1",
)
def portfolio_replay(
    context: dg.AssetExecutionContext, storage: StorageResource, portfolio: PortfolioSettings
) -> dg.MaterializeResult:
    """Each replayed construction method over the test period: the serving procedure's
    targets every `rebalance_every` dates on the replay's out-of-sample ensemble forecasts
    (the backtest report compares them), and Kupiec's test of the 1-day VaRs stated for
    them: do they breach at their rate?"""
    store = storage.store()
    plan = storage.read_plan()
    spec = portfolio.spec(plan.settings.horizons, replay=True)
    rows = read_replay(storage)
    rows = rows[
        (rows["model"] == STACKED_ENSEMBLE)
        & (rows["horizon"] == spec.horizon)
        & (rows["date"] >= plan.test_start)
    ]
    dates = pd.DatetimeIndex(sorted(rows["date"].unique()))[:: portfolio.rebalance_every]
    prices = read_table(store, "prices", PRICES)
    returns = daily_returns(prices)
    volatility, garch_note = _volatility(prices, plan)
    feature_table, fundamentals = _factor_inputs(store, spec)
    replay = replay_targets(
        spec,
        rows[["date", "ticker", "prediction", "confidence"]],
        returns,
        dates,
        volatility,
        feature_table,
        fundamentals,
        market_close(prices),
    )
    lag = plan.settings.execution_lag
    backtest = construction_var_backtest(
        replay.weights, replay.stated_var, returns, rows["date"].max(), lag
    )
    paths = {
        "weights": _write(store, replay.weights, CONSTRUCTION_REPLAY, "replay_weights"),
        "fallbacks": store.write(replay.fallbacks, FOLDER, "replay_fallbacks"),
        "stated_var": store.write(replay.stated_var, FOLDER, "replay_stated_var"),
        "var_backtest": _write(store, backtest, VAR_BACKTEST, "var_backtest"),
    }
    counts = replay.fallbacks.groupby("method").size().to_dict()
    context.log.info(
        "portfolio_replay: %d rebalances of %s from %s; fallbacks %s; %s",
        len(dates),
        list(spec.methods),
        dates[0].date() if len(dates) else "-",
        counts,
        garch_note,
    )
    return dg.MaterializeResult(
        metadata={
            "rebalances": dg.MetadataValue.int(len(dates)),
            "rebalance_every": dg.MetadataValue.int(portfolio.rebalance_every),
            "methods": dg.MetadataValue.json(list(spec.methods)),
            "fallbacks": dg.MetadataValue.json({k: int(v) for k, v in counts.items()}),
            "var_backtest": md_table(backtest),
            "garch": dg.MetadataValue.text(garch_note),
            **contract_schema(VAR_BACKTEST),
            **{f"path_{k}": dg.MetadataValue.path(v) for k, v in paths.items()},
        }
    )


PORTFOLIO_ASSETS = [target_weights, portfolio_risk, rebalance_orders, portfolio_replay]
