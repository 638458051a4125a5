"""Macro features joined point in time by available_at, and benchmark regimes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_benchmark, synthetic_panel
from finpipe.features import FeatureConfig, build_features
from finpipe.features.macro import as_of

CONFIG = SyntheticConfig(n_tickers=2, n_days=60, seed=3, start="2021-01-04")


def _macro(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["series_id", "date", "value", "available_at"])
    return frame.assign(
        date=pd.to_datetime(frame["date"]), available_at=pd.to_datetime(frame["available_at"])
    )


def test_as_of_uses_release_dates_not_observation_dates() -> None:
    obs = _macro(
        [
            ("X", "2021-01-01", 1.0, "2021-01-05"),
            ("X", "2021-01-04", 2.0, "2021-01-08"),  # released late
            ("X", "2021-01-05", 3.0, "2021-01-06"),
        ]
    )
    dates = pd.DatetimeIndex(["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07", "2021-01-08"])
    got = as_of(obs, dates)
    # 01-05: only the 01-01 value is public; 01-06: the 01-05 observation (latest by date);
    # 01-08: the late 01-04 value is older than the 01-05 one, so it never takes over.
    np.testing.assert_array_equal(got, [np.nan, 1.0, 3.0, 3.0, 3.0])


def test_macro_families_and_skips() -> None:
    prices = synthetic_panel(CONFIG)
    dates = pd.bdate_range("2021-01-04", periods=60)
    next_day = [str((d + pd.offsets.BDay(1)).date()) for d in dates]
    vix = [
        ("VIXCLS", str(d.date()), 20.0 + i, nd)
        for i, (d, nd) in enumerate(zip(dates, next_day, strict=True))
    ]
    # Core CPI: 100 + month in 2020, 102 + month in 2021; public 30 days after month end.
    months = pd.date_range("2020-01-01", "2021-12-01", freq="MS")
    cpi = [
        (
            "CPILFESL",
            str(m.date()),
            (100.0 if m.year == 2020 else 102.0) + m.month,
            str((m + pd.offsets.MonthEnd(0) + pd.Timedelta(days=30)).date()),
        )
        for m in months
    ]
    features = build_features(
        prices, macro=_macro(vix + cpi), config=FeatureConfig(families=("macro",))
    )
    assert features.computed == ["macro_vix", "macro_cpi"]
    assert features.skipped == {
        "macro_credit": "needs macro series BAA, AAA; macro has CPILFESL, VIXCLS"
    }
    day = features.frame.loc[features.frame["ticker"] == "S0000"].set_index("date")
    # VIX of date d is public the next business day: the feature at d is the value of d - 1.
    np.testing.assert_allclose(day["vix"].iloc[1:], 20.0 + np.arange(59), rtol=1e-6)
    assert np.isnan(day["vix"].iloc[0])
    np.testing.assert_allclose(day["vix_chg_5"].iloc[6:], 5.0, rtol=1e-6)
    # The first year-on-year value is January 2021's, public on 2021-01-31 + 30 days.
    assert day.loc[:"2021-03-01", "core_cpi_yoy"].isna().all()
    assert day.loc["2021-03-02", "core_cpi_yoy"] == pytest.approx(103 / 101 - 1, rel=1e-6)
    nothing = build_features(prices, config=FeatureConfig(families=("macro",)))
    assert nothing.skipped["macro_vix"] == "needs macro series VIXCLS; no macro data given"


def test_credit_spread_is_baa_minus_aaa() -> None:
    prices = synthetic_panel(CONFIG)
    rows = [
        (sid, f"2020-{m:02d}-01", base + 0.1 * m, f"2020-{m:02d}-15")
        for sid, base in (("BAA", 6.0), ("AAA", 4.0))
        for m in range(1, 13)
    ]
    frame = build_features(
        prices, macro=_macro(rows), config=FeatureConfig(families=("macro_credit",))
    ).frame
    np.testing.assert_allclose(frame["credit_spread"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(frame["credit_spread_chg_21"].dropna(), 0.0, atol=1e-6)


def test_regime_features_follow_the_benchmark() -> None:
    config = SyntheticConfig(n_tickers=2, n_days=400, seed=9, regimes=True)
    prices, bench = synthetic_panel(config), synthetic_benchmark(config)
    frame = build_features(
        prices, benchmark=bench, config=FeatureConfig(families=("regime",))
    ).frame
    day = frame.loc[frame["ticker"] == "S0000"].set_index("date")
    level = bench.set_index("date")["adj_close"]
    trend = level / level.rolling(200, min_periods=200).mean() - 1
    np.testing.assert_allclose(day["regime_trend"], trend, rtol=1e-5, equal_nan=True)
    momentum = np.log(level / level.shift(60))
    bull, bear = (trend > 0.02) & (momentum > 0), (trend < -0.02) & (momentum < 0)
    state = pd.Series(np.where(bull, 1.0, np.where(bear, -1.0, 0.0)), index=level.index)
    state[trend.isna() | momentum.isna()] = np.nan
    np.testing.assert_array_equal(day["regime_trend_state"], state)
    vol = np.log(level).diff().rolling(21, min_periods=21).std() * np.sqrt(252)
    np.testing.assert_allclose(day["regime_vol"], vol, rtol=1e-5, equal_nan=True)
    # The percentile among all volatility values so far, by hand for one date.
    pct = day["regime_vol_pct"]
    t = pct.dropna().index[50]
    past = vol.loc[:t].dropna()
    assert pct[t] == pytest.approx((past <= past.iloc[-1]).mean(), rel=1e-6)
    state = np.where(pct <= 1 / 3, -1.0, np.where(pct > 2 / 3, 1.0, 0.0))
    np.testing.assert_array_equal(day["regime_vol_state"].dropna(), state[pct.notna()])
    both = frame.pivot(index="date", columns="ticker", values="regime_vol")
    np.testing.assert_array_equal(both["S0000"], both["S0001"])  # date-level
