"""Checks on the portfolios: every method's target weights are in their contract and meet
the constraints, and the orders take the holdings exactly to the target shares. Both
block what is downstream (risk and orders; nothing reads an order that does not add up)."""

import dagster as dg
import numpy as np

from finpipe.core.contracts import ORDERS, PRICES, TARGET_WEIGHTS, schema_violations
from finpipe.data.ingest import read_table
from finpipe.defs.assets.portfolio import read_targets, rebalance_orders, target_weights
from finpipe.defs.resources import PortfolioSettings, StorageResource
from finpipe.portfolio.construction import weight_problems
from finpipe.portfolio.orders import current_weights, read_holdings, trade_prices


@dg.asset_check(asset=target_weights, blocking=True)
def weights_within_constraints(
    storage: StorageResource, portfolio: PortfolioSettings
) -> dg.AssetCheckResult:
    """Each method's weights are finite, sum to the net exposure, stay within max_weight
    and the gross exposure (long-only: no negative weight), and move no more than
    max_turnover from the current holdings."""
    store = storage.store()
    table = read_targets(store)
    plan = storage.read_plan()
    constraints = portfolio.spec(plan.settings.horizons).constraints
    holdings = read_holdings(portfolio.holdings_path)
    current = None
    if not holdings.empty:
        prices = trade_prices(read_table(store, "prices", PRICES), table["date"].max())
        current = current_weights(holdings, prices, portfolio.capital)
    problems = [f"contract: {p}" for p in schema_violations(table, TARGET_WEIGHTS)]
    for method, part in table.groupby("method", sort=True):
        weights = part.set_index("ticker")["weight"]
        # A capped move from the holdings may fall short of the net exposure: then the
        # bounds of a partial move apply.
        limited = current is not None and constraints.max_turnover > 0
        found = weight_problems(weights, constraints, current, limited)
        problems += [f"{method}: {p}" for p in found]
    sums = table.groupby("method")["weight"].sum().round(6).to_dict()
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or "every method's weights meet the constraints",
        metadata={
            "problems": dg.MetadataValue.json(problems[:20]),
            "weight_sums": dg.MetadataValue.json(sums),
        },
    )


@dg.asset_check(asset=rebalance_orders, blocking=True)
def orders_reach_targets(storage: StorageResource) -> dg.AssetCheckResult:
    """Every order takes its current shares to the target shares, its side and notional
    match the trade, and its estimated cost is not negative."""
    table = storage.store().read("portfolio", "orders")
    problems = [f"contract: {p}" for p in schema_violations(table, ORDERS)]
    if not problems:
        reach = table["current_shares"] + table["trade_shares"] - table["target_shares"]
        if not np.allclose(reach, 0.0, atol=1e-9):
            problems.append("current + trade shares differ from the target shares")
        if not np.allclose(table["notional"], table["trade_shares"] * table["price"]):
            problems.append("notional is not trade shares x price")
        side = np.where(table["trade_shares"] > 0, "BUY", "SELL")
        if (side != table["side"].to_numpy()).any():
            problems.append("a side does not match the sign of its trade")
        if (table["estimated_cost"] < 0).any():
            problems.append("negative estimated costs")
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or "the orders reach the target shares",
        metadata={"orders": dg.MetadataValue.int(len(table))},
    )


PORTFOLIO_CHECKS = [weights_within_constraints, orders_reach_targets]
