"""Settings of the feature engine: windows, horizons and which families to run."""

from __future__ import annotations

from dataclasses import dataclass

from finpipe.features.garch import GarchParams


@dataclass(frozen=True)
class FeatureConfig:
    """Windows and options of every feature family; the defaults are the published ones.

    `families` selects families by name (e.g. "alpha158_close") or by group ("alpha158",
    "technical", "volatility", "momentum", "microstructure", "cross_asset", "macro",
    "regime", "fundamentals"); None runs them all. Windows count trading dates of the
    panel's calendar. `garch` holds parameters from `fit_garch` on the training window;
    without them the GARCH feature is skipped.
    """

    families: tuple[str, ...] | None = None

    alpha158_windows: tuple[int, ...] = (5, 10, 20, 30, 60)

    rsi_windows: tuple[int, ...] = (9, 14, 21)
    macd_spans: tuple[int, int, int] = (12, 26, 9)
    bollinger_window: int = 20
    bollinger_width: float = 2.0
    stochastic_window: int = 14
    stochastic_smooth: int = 3
    williams_window: int = 14
    atr_window: int = 14
    obv_window: int = 20
    mfi_window: int = 14
    vwap_window: int = 20

    volatility_windows: tuple[int, ...] = (5, 21, 63, 126)
    range_volatility_window: int = 21
    ewma_lambda: float = 0.94
    ewma_min_periods: int = 21
    garch: GarchParams | None = None
    annualization: int = 252

    momentum_horizons: tuple[int, ...] = (21, 63, 126, 252)
    skip_momentum_months: tuple[tuple[int, int], ...] = ((12, 1), (6, 1))
    days_per_month: int = 21
    reversal_horizons: tuple[int, ...] = (1, 5)
    ma_gap_windows: tuple[int, ...] = (20, 50, 200)
    volume_short: int = 5
    volume_long: int = 60
    volume_window: int = 20

    microstructure_window: int = 21

    benchmark_windows: tuple[int, ...] = (63, 252)
    cross_sectional_bases: tuple[str, ...] = (
        "mom_12_1",
        "mom_63",
        "strev_5",
        "rv_21",
        "amihud_21",
        "bench_beta_252",
        "dollar_volume_20",
    )
    sector_horizon: int = 63

    vix_change: int = 5
    credit_change: int = 21

    dtype: str = "float32"  # of the output columns; computation runs in float64
    tickers_per_block: int = 16  # bounds the working memory of a thread
    n_jobs: int = 2  # threads over blocks of tickers

    def __post_init__(self) -> None:
        windows = (
            *self.alpha158_windows,
            *self.volatility_windows,
            *self.momentum_horizons,
            *self.benchmark_windows,
        )
        if min(windows) < 2:
            raise ValueError(f"windows must span at least 2 dates, got {sorted(windows)}")
        if not 0.0 < self.ewma_lambda < 1.0:
            raise ValueError(f"ewma_lambda must be in (0, 1), got {self.ewma_lambda}")
        if self.n_jobs < 1 or self.tickers_per_block < 1:
            raise ValueError("n_jobs and tickers_per_block must be positive")
