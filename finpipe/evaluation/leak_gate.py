"""The leak gate: out-of-sample skill beyond what daily equity data allows is a leak until
proven otherwise, and must fail loudly instead of being published.

Good daily cross-sectional signals have a rank IC of 0.02-0.05 and long-short Sharpe
ratios of one or two; a mean rank IC of 0.2, or a Sharpe ratio of 5, on daily equity returns
means a feature or label reads the future (or the data are not equity returns).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from finpipe.core.keys import ROW_KEY, STACKED_ENSEMBLE
from finpipe.core.metrics import daily_rank_ic, sharpe_ratio
from finpipe.core.prices import daily_returns
from finpipe.evaluation.simulation import simulate_portfolio


def implausible_skill(
    replay: pd.DataFrame,
    labels: pd.DataFrame,
    prices: pd.DataFrame,
    max_rank_ic: float = 0.2,
    max_sharpe: float = 5.0,
    k: float = 0.2,
) -> list[str]:
    """What in the replay's predictions (the test period's rows) breaks the gate: every
    model and horizon whose mean daily rank IC exceeds `max_rank_ic`, and the ensemble's
    gross long-short Sharpe ratio at the shortest horizon if it exceeds `max_sharpe`. Each
    message names the gate, the metric and its value."""
    rows = replay.merge(labels[[*ROW_KEY, "fwd_return"]], on=list(ROW_KEY), how="inner")
    found = []
    for (model, horizon), part in rows.groupby(["model", "horizon"], sort=True):
        ic = daily_rank_ic(part["prediction"], part["fwd_return"], part["date"]).mean()
        if np.isfinite(ic) and ic > max_rank_ic:
            found.append(
                f"leak gate: {model} h{horizon} mean daily rank IC {ic:.3f} is above "
                f"max_rank_ic {max_rank_ic} (good daily signals are 0.02-0.05)"
            )
    ensemble = replay[replay["model"] == STACKED_ENSEMBLE]
    if not ensemble.empty:
        horizon = int(ensemble["horizon"].min())
        book = simulate_portfolio(
            ensemble[ensemble["horizon"] == horizon][["date", "ticker", "prediction"]],
            daily_returns(prices),
            k=k,
            kind="long_short",
            cost_bps=0.0,
        )
        sharpe = sharpe_ratio(book.gross_returns)
        if np.isfinite(sharpe) and sharpe > max_sharpe:
            found.append(
                f"leak gate: ensemble long-short Sharpe ratio {sharpe:.2f} (h{horizon}, gross) "
                f"is above max_sharpe {max_sharpe}"
            )
    return found
