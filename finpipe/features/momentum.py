"""Momentum, mean reversion and volume activity of each ticker's own history.

* `mom_h`: log return over the last h dates; `mom_a_b`: log return from a months ago to b
  months ago (`mom_12_1` is the classic 12-1 month momentum, skipping the reversal month).
* `strev_h`: minus the log return over the last h dates (short-term reversal).
* `ma_gap_w`: close / (w-date moving average) - 1 (distance from the trend; mean reversion).
* `volume_surge_w`: volume / its w-date average; `volume_ratio_s_l`: short over long average
  volume; `volume_trend_w`: least-squares slope per date of ln(1 + volume) over w dates;
  `dollar_volume_w`: ln of the average close x volume over w dates (size and liquidity).
"""

from __future__ import annotations

from finpipe.features.config import FeatureConfig
from finpipe.features.family import Columns, Family, FamilyInputs
from finpipe.features.price_panel import PricePanel
from finpipe.features.rolling import RollingMoments, divide, lag, log


def _momentum_names(config: FeatureConfig, _: frozenset[str]) -> list[str]:
    return [
        *(f"mom_{h}" for h in config.momentum_horizons),
        *(f"mom_{a}_{b}" for a, b in config.skip_momentum_months),
        *(f"strev_{h}" for h in config.reversal_horizons),
        *(f"ma_gap_{w}" for w in config.ma_gap_windows),
    ]


def _momentum(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    log_close = log(panel.fields["close"])
    for h in config.momentum_horizons:
        yield f"mom_{h}", log_close - lag(log_close, h)
    for a, b in config.skip_momentum_months:
        far, near = a * config.days_per_month, b * config.days_per_month
        yield f"mom_{a}_{b}", lag(log_close, near) - lag(log_close, far)
    for h in config.reversal_horizons:
        yield f"strev_{h}", lag(log_close, h) - log_close
    close = panel.fields["close"]
    moments = RollingMoments(close, max_window=max(config.ma_gap_windows))
    for w in config.ma_gap_windows:
        yield f"ma_gap_{w}", divide(close, moments.mean(w)) - 1.0


def _volume_names(config: FeatureConfig, _: frozenset[str]) -> list[str]:
    w, s, long = config.volume_window, config.volume_short, config.volume_long
    return [
        f"volume_surge_{w}",
        f"volume_ratio_{s}_{long}",
        f"volume_trend_{w}",
        f"dollar_volume_{w}",
    ]


def _volume(panel: PricePanel, inputs: FamilyInputs) -> Columns:
    config = inputs.config
    w, short, long = config.volume_window, config.volume_short, config.volume_long
    v = panel.fields["volume"]
    volume = RollingMoments(v, max_window=max(w, short, long))
    yield f"volume_surge_{w}", divide(v, volume.mean(w))
    yield f"volume_ratio_{short}_{long}", divide(volume.mean(short), volume.mean(long))
    yield f"volume_trend_{w}", RollingMoments(log(v + 1.0), max_window=w).trend(w)[0]
    dollars = RollingMoments(panel.fields["close"] * v, max_window=w)
    yield f"dollar_volume_{w}", log(dollars.mean(w))


FAMILIES = (
    Family("momentum_close", "momentum", ("adj_close",), _momentum_names, _momentum),
    Family("momentum_volume", "momentum", ("volume",), _volume_names, _volume),
)
