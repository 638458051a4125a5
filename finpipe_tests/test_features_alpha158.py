"""Alpha158 against an independent pandas/NumPy reimplementation of Qlib's formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.features import FeatureConfig, build_features

WINDOWS = (5, 10, 20)
TRAILING = 40  # dates compared at the end of the panel (covers every window)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    """Full OHLCV, with a ticker listed late and another with a two-day gap."""
    frame = synthetic_panel(SyntheticConfig(n_tickers=4, n_days=120, seed=11))
    dates = np.sort(frame["date"].unique())
    late = (frame["ticker"] == "S0001") & (frame["date"] < dates[30])
    gap = (frame["ticker"] == "S0002") & frame["date"].isin(dates[70:72])
    return frame.loc[~late & ~gap].reset_index(drop=True)


def _fit(window: np.ndarray) -> np.ndarray:
    return np.polyfit(np.arange(len(window)), window, 1)


def qlib_reference(bars: pd.DataFrame) -> pd.DataFrame:
    """Qlib's Alpha158 formulas for one ticker (bars on the panel calendar, NaN where absent),
    with pandas rolling(d, min_periods=d) as the window operator."""
    o, h, lo, c, v = (bars[k] for k in ("open", "high", "low", "adj_close", "volume"))
    out = {
        "KMID": (c - o) / o,
        "KLEN": (h - lo) / o,
        "KMID2": (c - o) / (h - lo + 1e-12),
        "KUP": (h - np.maximum(o, c)) / o,
        "KUP2": (h - np.maximum(o, c)) / (h - lo + 1e-12),
        "KLOW": (np.minimum(o, c) - lo) / o,
        "KLOW2": (np.minimum(o, c) - lo) / (h - lo + 1e-12),
        "KSFT": (2 * c - h - lo) / o,
        "KSFT2": (2 * c - h - lo) / (h - lo + 1e-12),
        "OPEN0": o / c,
        "HIGH0": h / c,
        "LOW0": lo / c,
        "VWAP0": (h + lo + c) / 3 / c,
    }
    diff = c - c.shift(1)
    dv = v - v.shift(1)
    wv = (c / c.shift(1) - 1).abs() * v
    for d in WINDOWS:
        roll = c.rolling(d, min_periods=d)

        def on_close(fn, roll=roll):
            return roll.apply(fn, raw=True)

        hmax, lmin = h.rolling(d, min_periods=d).max(), lo.rolling(d, min_periods=d).min()
        imax = h.rolling(d, min_periods=d).apply(lambda a: a.argmax() + 1, raw=True)
        imin = lo.rolling(d, min_periods=d).apply(lambda a: a.argmin() + 1, raw=True)
        out |= {
            f"ROC{d}": c.shift(d) / c,
            f"MA{d}": roll.mean() / c,
            f"STD{d}": roll.std() / c,
            f"BETA{d}": on_close(lambda a: _fit(a)[0]) / c,
            f"RSQR{d}": on_close(lambda a: np.corrcoef(np.arange(len(a)), a)[0, 1] ** 2),
            f"RESI{d}": on_close(lambda a: a[-1] - np.polyval(_fit(a), len(a) - 1)) / c,
            f"MAX{d}": hmax / c,
            f"MIN{d}": lmin / c,
            f"QTLU{d}": roll.quantile(0.8) / c,
            f"QTLD{d}": roll.quantile(0.2) / c,
            f"RANK{d}": roll.rank(pct=True),
            f"RSV{d}": (c - lmin) / (hmax - lmin + 1e-12),
            f"IMAX{d}": imax / d,
            f"IMIN{d}": imin / d,
            f"IMXD{d}": (imax - imin) / d,
            f"CORR{d}": c.rolling(d, min_periods=d).corr(np.log(v + 1)),
            f"CORD{d}": (c / c.shift(1)).rolling(d, min_periods=d).corr(np.log(v / v.shift(1) + 1)),
            f"CNTP{d}": (diff > 0).where(diff.notna()).rolling(d, min_periods=d).mean(),
            f"CNTN{d}": (diff < 0).where(diff.notna()).rolling(d, min_periods=d).mean(),
            f"SUMP{d}": diff.clip(lower=0).rolling(d, min_periods=d).sum()
            / (diff.abs().rolling(d, min_periods=d).sum() + 1e-12),
            f"SUMN{d}": (-diff).clip(lower=0).rolling(d, min_periods=d).sum()
            / (diff.abs().rolling(d, min_periods=d).sum() + 1e-12),
            f"VMA{d}": v.rolling(d, min_periods=d).mean() / (v + 1e-12),
            f"VSTD{d}": v.rolling(d, min_periods=d).std() / (v + 1e-12),
            f"WVMA{d}": wv.rolling(d, min_periods=d).std()
            / (wv.rolling(d, min_periods=d).mean() + 1e-12),
            f"VSUMP{d}": dv.clip(lower=0).rolling(d, min_periods=d).sum()
            / (dv.abs().rolling(d, min_periods=d).sum() + 1e-12),
            f"VSUMN{d}": (-dv).clip(lower=0).rolling(d, min_periods=d).sum()
            / (dv.abs().rolling(d, min_periods=d).sum() + 1e-12),
        }
        out[f"CNTD{d}"] = out[f"CNTP{d}"] - out[f"CNTN{d}"]
        out[f"SUMD{d}"] = out[f"SUMP{d}"] - out[f"SUMN{d}"]
        out[f"VSUMD{d}"] = out[f"VSUMP{d}"] - out[f"VSUMN{d}"]
    return pd.DataFrame(out)


def reference_frame(prices: pd.DataFrame) -> pd.DataFrame:
    calendar = np.sort(prices["date"].unique())
    parts = []
    for ticker, bars in prices.groupby("ticker"):
        bars = bars.set_index("date").reindex(calendar)
        ref = qlib_reference(bars).reset_index(drop=True).assign(date=calendar, ticker=ticker)
        ref = ref.loc[bars["adj_close"].notna().to_numpy()]
        parts.append(ref)
    return pd.concat(parts).sort_values(["date", "ticker"]).reset_index(drop=True)


def test_alpha158_matches_qlib_formulas(prices: pd.DataFrame) -> None:
    features = build_features(
        prices, config=FeatureConfig(families=("alpha158",), alpha158_windows=WINDOWS)
    )
    ours, ref = features.frame, reference_frame(prices)
    assert len(features.frame.columns) - 2 == 13 + 29 * len(WINDOWS)
    assert ours[["date", "ticker"]].equals(
        ref[["date", "ticker"]].astype(ours[["date", "ticker"]].dtypes)
    )
    for name in ours.columns[2:]:
        got, want = ours[name].to_numpy(np.float64), ref[name].to_numpy(np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{name}: NaN pattern")
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6, equal_nan=True, err_msg=name)


def test_alpha158_has_158_columns_with_qlib_windows() -> None:
    prices = synthetic_panel(SyntheticConfig(n_tickers=2, n_days=80, seed=1))
    features = build_features(prices, config=FeatureConfig(families=("alpha158",)))
    assert features.frame.shape[1] - 2 == 158
    assert features.computed == [
        "alpha158_kbar",
        "alpha158_price",
        "alpha158_close",
        "alpha158_range",
        "alpha158_volume",
    ]


def test_close_only_source_keeps_close_features_and_max_min_on_close(prices: pd.DataFrame) -> None:
    close_only = prices[["date", "ticker", "adj_close"]]
    config = FeatureConfig(families=("alpha158",), alpha158_windows=WINDOWS)
    features = build_features(close_only, config=config)
    assert features.computed == ["alpha158_close", "alpha158_extremes"]
    assert features.skipped["alpha158_volume"] == "needs volume; source has adj_close only"
    assert features.skipped["alpha158_kbar"] == "needs open, high, low; source has adj_close only"
    full = build_features(prices, config=config).frame
    shared = features.columns["alpha158_close"]
    pd.testing.assert_frame_equal(features.frame[shared], full[shared])
    c = close_only.pivot(index="date", columns="ticker", values="adj_close")
    want = (c.rolling(10, min_periods=10).max() / c).stack().sort_index()
    got = features.frame.set_index(["date", "ticker"])["MAX10"].dropna().sort_index()
    np.testing.assert_allclose(got.to_numpy(), want.loc[got.index].to_numpy(), rtol=1e-6)
