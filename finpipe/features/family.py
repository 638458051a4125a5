"""What a feature family is: its inputs, its columns and how it computes them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from finpipe.features.config import FeatureConfig
from finpipe.features.price_panel import PricePanel

# A family's compute yields (column, values); values are (n_dates, n_tickers) for the panel
# block it was given, or (n_dates,) for a date-level feature shared by every ticker.
Columns = Iterator[tuple[str, np.ndarray]]


@dataclass
class FamilyInputs:
    """Everything beside the price panel that families read."""

    config: FeatureConfig
    benchmark_close: np.ndarray | None = None  # benchmark adj_close as of each panel date
    macro: pd.DataFrame | None = None
    fundamentals: pd.DataFrame | None = None  # fundamentals.statement_table
    # The prices' traded close and split ratios on the whole panel, given with fundamentals.
    traded_close: np.ndarray | None = None
    split_ratio: np.ndarray | None = None
    universe: pd.DataFrame | None = None
    read: Callable[[str], np.ndarray] | None = None  # earlier features, (n_dates, n_tickers)
    available: frozenset[str] = frozenset()  # columns of the families planned so far


@dataclass(frozen=True)
class Family:
    """A group of features with the price fields and other inputs it needs.

    `needs` names price columns of the source ("adj_close", "open", "high", "low",
    "volume"). `unavailable` returns why the family cannot run on these inputs (None if it
    can), for needs beyond price columns: a benchmark, macro series, fundamentals, fitted
    parameters.
    `scope` "ticker" families see one block of tickers at a time; "panel" ones see the whole
    cross-section (and earlier families' outputs through `FamilyInputs.read`).
    `replaces` names a family whose columns this one computes from fewer inputs; it runs
    only when that family is skipped.
    """

    name: str
    group: str
    needs: tuple[str, ...]
    columns: Callable[[FeatureConfig, frozenset[str]], list[str]]
    compute: Callable[[PricePanel, FamilyInputs], Columns]
    scope: str = "ticker"
    unavailable: Callable[[FamilyInputs], str | None] | None = None
    replaces: str | None = None
