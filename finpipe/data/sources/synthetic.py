"""Seeded synthetic OHLCV panels: leakage canaries, planted-signal tests and scale benchmarks.

Returns follow a one-factor model, r[t, i] = beta_i * m[t] + e[t, i], with:

* `signal_strength` s in [0, 1): the idiosyncratic part is
  e[t, i] = vol_i * (s * z[t-1, i] + sqrt(1 - s^2) * u[t, i]) where z[t-1, i] is the
  standardised sum of the last `signal_lookback` shocks u. z is known at the close of t-1,
  so it is predictable from past returns (a planted time-series momentum). With s = 0 every
  ticker is a pure random walk: returns carry no autocorrelation.
* `regimes`: a two-state Markov chain (calm-bull / turbulent-bear) switches the market
  factor's drift and volatility; off by default so the zero-strength panel has no drift.

Every random component draws from its own child stream, so the first T days of a panel
are identical whatever `n_days` is. Dates are business days from `start`, but never later
than `end` (empty: today): a panel that would pass it ends on the last business day on or
before it instead, with the same values on earlier dates. So extending a panel appends
dates while it still ends before `end`; beyond that, a longer panel reaches further back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from finpipe.core.contracts import PRICES, conform

BENCHMARK_TICKER = "^SYN"

# (drift, volatility) of the daily market factor in each regime; sticky transitions.
REGIME_PARAMS = {0: (0.0005, 0.008), 1: (-0.0010, 0.020)}
REGIME_STAY = 0.99


@dataclass(frozen=True)
class SyntheticConfig:
    """Size, seed and planted structure of a synthetic panel; its dates run from `start`
    and end no later than `end` (ISO date; empty: today)."""

    n_tickers: int = 50
    n_days: int = 1500
    seed: int = 0
    start: str = "2005-01-03"
    signal_strength: float = 0.0
    signal_lookback: int = 20
    regimes: bool = False
    n_sectors: int = 5
    end: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.signal_strength < 1.0:
            raise ValueError(f"signal_strength must be in [0, 1), got {self.signal_strength}")
        if self.n_tickers < 1 or self.n_days < 2:
            raise ValueError("a synthetic panel needs at least 1 ticker and 2 days")

    @property
    def tickers(self) -> list[str]:
        return [f"S{i:04d}" for i in range(self.n_tickers)]

    @property
    def dates(self) -> pd.DatetimeIndex:
        """`n_days` business days from `start`, or, where they would pass `end` (empty:
        today), the `n_days` business days ending on the last one on or before it."""
        dates = pd.bdate_range(self.start, periods=self.n_days)
        limit = pd.Timestamp(self.end) if self.end else pd.Timestamp.today().normalize()
        if dates[-1] > limit:
            dates = pd.bdate_range(end=limit, periods=self.n_days)
        return dates


def synthetic_universe(cfg: SyntheticConfig) -> pd.DataFrame:
    """Tickers with names and round-robin sectors."""
    return pd.DataFrame(
        {
            "ticker": cfg.tickers,
            "name": [f"Synthetic {t}" for t in cfg.tickers],
            "sector": [f"Sector{i % cfg.n_sectors}" for i in range(cfg.n_tickers)],
        }
    )


def _streams(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def regime_path(cfg: SyntheticConfig) -> np.ndarray:
    """Daily regime labels (0 calm-bull, 1 turbulent-bear); all zeros when regimes are off."""
    if not cfg.regimes:
        return np.zeros(cfg.n_days, dtype=np.int8)
    flips = _streams(cfg.seed, 8)[7].random(cfg.n_days) > REGIME_STAY
    return (np.cumsum(flips) % 2).astype(np.int8)


def ticker_params(cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(market beta [N], idiosyncratic daily volatility [N]) of each ticker."""
    g_params = _streams(cfg.seed, 8)[0]
    return g_params.uniform(0.5, 1.5, cfg.n_tickers), g_params.uniform(0.010, 0.025, cfg.n_tickers)


def synthetic_returns(cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """(market factor returns [T], ticker log returns [T, N]) for the panel."""
    t, n = cfg.n_days, cfg.n_tickers
    _, g_market, g_idio, *_ = _streams(cfg.seed, 8)
    beta, vol = ticker_params(cfg)
    regime = regime_path(cfg)
    drift = np.array([REGIME_PARAMS[int(r)][0] for r in (0, 1)])[regime]
    mvol = np.array([REGIME_PARAMS[int(r)][1] for r in (0, 1)])[regime]
    if not cfg.regimes:
        drift = np.zeros(t)
    market = drift + mvol * g_market.standard_normal(t)

    u = g_idio.standard_normal((t, n))
    csum = np.cumsum(u, axis=0)
    lag = cfg.signal_lookback
    window_sum = csum - np.vstack([np.zeros((lag, n)), csum[:-lag]])
    z = window_sum / np.sqrt(np.minimum(np.arange(1, t + 1), lag))[:, None]
    z_prev = np.vstack([np.zeros((1, n)), z[:-1]])
    s = cfg.signal_strength
    idio = vol * (s * z_prev + np.sqrt(1.0 - s * s) * u)
    return market, beta * market[:, None] + idio


def synthetic_panel(cfg: SyntheticConfig) -> pd.DataFrame:
    """Long-format OHLCV prices (prices contract) for every ticker and business day."""
    t, n = cfg.n_days, cfg.n_tickers
    _, ret = synthetic_returns(cfg)
    *_, g_open, g_high, g_low, g_volume, _ = _streams(cfg.seed, 8)
    close = 50.0 * np.exp(np.cumsum(ret, axis=0))
    prev_close = np.vstack([np.full((1, n), 50.0), close[:-1]])
    scale = ticker_params(cfg)[1]
    opn = prev_close * np.exp(0.3 * scale * g_open.standard_normal((t, n)))
    high = np.maximum(opn, close) * np.exp(0.5 * scale * np.abs(g_high.standard_normal((t, n))))
    low = np.minimum(opn, close) * np.exp(-0.5 * scale * np.abs(g_low.standard_normal((t, n))))
    volume = np.round(g_volume.lognormal(13.0, 0.5, (t, n)))
    frame = pd.DataFrame(
        {
            "date": np.repeat(cfg.dates.values, n),
            "ticker": np.tile(np.array(cfg.tickers, dtype=object), t),
            "open": opn.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "adj_close": close.ravel(),
            "volume": volume.ravel(),
        }
    )
    return conform(frame, PRICES)


def synthetic_benchmark(cfg: SyntheticConfig) -> pd.DataFrame:
    """The market factor as an index (close-only bars) under ticker ^SYN."""
    market, _ = synthetic_returns(cfg)
    level = 1000.0 * np.exp(np.cumsum(market))
    frame = pd.DataFrame(
        {"date": cfg.dates, "ticker": BENCHMARK_TICKER, "close": level, "adj_close": level}
    )
    return conform(frame, PRICES)


class SyntheticSource:
    """PriceSource over a seeded synthetic panel; the benchmark ticker ^SYN is served too."""

    name = "synthetic"

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()
        self._panel: pd.DataFrame | None = None

    def _full_panel(self) -> pd.DataFrame:
        if self._panel is None:
            self._panel = pd.concat(
                [synthetic_panel(self.config), synthetic_benchmark(self.config)],
                ignore_index=True,
            )
        return self._panel

    def prices(self, tickers: list[str], start: date, end: date) -> pd.DataFrame:
        panel = self._full_panel()
        unknown = sorted(set(tickers) - set(panel["ticker"].unique()))
        if unknown:
            raise KeyError(f"synthetic source has no tickers {unknown}; it serves S0000.. and ^SYN")
        mask = (
            panel["ticker"].isin(tickers)
            & (panel["date"] >= pd.Timestamp(start))
            & (panel["date"] <= pd.Timestamp(end))
        )
        return conform(panel.loc[mask], PRICES)
