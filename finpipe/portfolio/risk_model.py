"""The risk model: a covariance of recent daily returns, shrunk, fitted as of a date.

`estimate_risk_model` learns from the last `lookback` daily simple returns dated on or
before the as-of date and nothing later. The covariance is Ledoit-Wolf (shrinkage toward a
scaled identity, intensity chosen from the data; scikit-learn's estimator), which keeps it
well conditioned with few dates per name. With `garch`, every return is first rescaled to
the volatility the per-asset GARCH(1,1) of `finpipe.features.garch` forecasts for the day
after the as-of date (filtered historical simulation): r[t] * sigma[as_of + 1] / sigma[t],
where sigma[t] is the forecast made at the close before t. The covariance and the return
scenarios then describe today's volatility level rather than the window's average.

Names with fewer than `min_observations` returns in the window, or with none that move,
are left out and named in `notes`; other missing returns count as flat days. When the
shrunk covariance is still near singular (smallest eigenvalue below `eigen_floor` times the
mean eigenvalue: duplicated names, very short windows) its eigenvalues are raised to that
floor, which is noted; a window where nothing moves raises RiskModelError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finpipe.core.prices import close_matrix
from finpipe.features.garch import GarchParams, garch_forecast


class RiskModelError(ValueError):
    """No usable risk model on this window; the message says why."""


@dataclass(frozen=True)
class RiskModelConfig:
    """Window, coverage and conditioning rules of the risk model (trading dates)."""

    lookback: int = 252
    min_observations: int = 126
    garch: bool = False
    eigen_floor: float = 1e-6

    def __post_init__(self) -> None:
        if not 2 <= self.min_observations <= self.lookback:
            raise ValueError(
                f"need 2 <= min_observations <= lookback, got {self.min_observations} "
                f"and {self.lookback}"
            )
        if not 0 < self.eigen_floor < 1:
            raise ValueError(f"eigen_floor must be in (0, 1), got {self.eigen_floor}")


@dataclass
class RiskModel:
    """Daily covariance and return scenarios (window dates x names) of simple returns,
    as of `as_of`; `scenarios` are GARCH-filtered when the model is."""

    as_of: pd.Timestamp
    tickers: list[str]
    covariance: np.ndarray
    scenarios: np.ndarray
    dates: pd.DatetimeIndex
    shrinkage: float
    garch: bool
    notes: list[str] = field(default_factory=list)

    def subset(self, tickers: list[str]) -> RiskModel:
        """The same model restricted to `tickers` (each must be in it)."""
        idx = [self.tickers.index(t) for t in tickers]
        return RiskModel(
            self.as_of,
            list(tickers),
            self.covariance[np.ix_(idx, idx)],
            self.scenarios[:, idx],
            self.dates,
            self.shrinkage,
            self.garch,
            list(self.notes),
        )


def garch_volatility(prices: pd.DataFrame, params: GarchParams) -> pd.DataFrame:
    """The GARCH(1,1) daily volatility forecast for the next day made at each close, wide
    (dates x tickers), with parameters fitted beforehand (`fit_garch`); causal, so its
    value at a date depends on no later price."""
    close = close_matrix(prices)
    log_returns = np.log(close / close.shift(1)).to_numpy(np.float64)
    omega, alpha, beta, start = params.for_tickers(close.columns)
    variance = garch_forecast(log_returns, omega, alpha, beta, start)
    return pd.DataFrame(np.sqrt(variance), index=close.index, columns=close.columns)


def _floor_eigenvalues(cov: np.ndarray, floor: float) -> tuple[np.ndarray, bool]:
    values, vectors = np.linalg.eigh((cov + cov.T) / 2.0)
    mean = float(values.mean())
    if not np.isfinite(mean) or mean <= 0:
        raise RiskModelError("the covariance has no positive variance: nothing moved")
    low = values < floor * mean
    if not low.any():
        return cov, False
    values = np.maximum(values, floor * mean)
    return (vectors * values) @ vectors.T, True


def estimate_risk_model(
    returns: pd.DataFrame,
    as_of: object,
    config: RiskModelConfig = RiskModelConfig(),
    volatility: pd.DataFrame | None = None,
) -> RiskModel:
    """The risk model as of `as_of` from wide daily simple returns (see the module rules);
    `volatility` (`garch_volatility`) is required when `config.garch`."""
    as_of = pd.Timestamp(as_of)
    window = returns.loc[:as_of].iloc[-config.lookback :]
    notes: list[str] = []
    counts = window.notna().sum()
    moving = (window.fillna(0.0) != 0).any()
    keep = counts.index[(counts >= config.min_observations) & moving]
    dropped = sorted(set(window.columns) - set(keep))
    if dropped:
        notes.append(
            f"left out {dropped}: fewer than {config.min_observations} returns in the "
            f"{len(window)} dates to {as_of.date()}, or none that moved"
        )
    if len(keep) == 0:
        raise RiskModelError(
            f"no name has {config.min_observations} returns in the {len(window)} dates "
            f"to {as_of.date()}"
        )
    window = window[keep]
    values = window.to_numpy(np.float64)
    if config.garch:
        if volatility is None:
            raise ValueError("a GARCH risk model needs the GARCH volatility forecasts")
        sigma = volatility.reindex(columns=keep).loc[:as_of]
        if as_of not in sigma.index:
            raise RiskModelError(f"no GARCH volatility forecast at {as_of.date()}")
        # The volatility of the return on t is the forecast made at the close before t.
        before = sigma.shift(1).reindex(window.index).to_numpy(np.float64)
        now = sigma.loc[as_of].to_numpy(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = values * (now / before)
    missing = ~np.isfinite(values)
    if missing.any():
        notes.append(f"{int(missing.sum())} missing returns counted as flat days")
    values = np.where(missing, 0.0, values)
    from sklearn.covariance import ledoit_wolf  # slow to import; only risk models need it

    cov, shrinkage = ledoit_wolf(values)
    cov, floored = _floor_eigenvalues(cov, config.eigen_floor)
    if floored:
        notes.append(
            f"near-singular covariance: eigenvalues raised to {config.eigen_floor:g} of the "
            "mean eigenvalue"
        )
    return RiskModel(
        as_of=as_of,
        tickers=[str(t) for t in keep],
        covariance=cov,
        scenarios=values,
        dates=pd.DatetimeIndex(window.index),
        shrinkage=float(shrinkage),
        garch=config.garch,
        notes=notes,
    )
