"""The bundled `bokeh_ohlcv` universe: bokeh-sampledata's daily OHLCV, served and featurised.

Reference values are computed here from the packaged file read by hand (plain pandas, `ta`).
"""

from datetime import date

import numpy as np
import pandas as pd
import pytest
from bokeh_sampledata import package_path
from ta.volatility import AverageTrueRange

from finpipe.core.calendar import is_trading_day
from finpipe.core.contracts import PRICE_FIELDS, PRICES, schema_violations
from finpipe.data.quality import PRICE_RULES, check_gaps, quarantine_split
from finpipe.data.sources.bundled import PRESET_STOCKS, BundledSource
from finpipe.data.universe import BOKEH_OHLCV, PRESETS
from finpipe.defs.resources import MarketDataResource
from finpipe.features import FeatureConfig, build_features

TICKERS = sorted(t for t, _, _ in BOKEH_OHLCV)
MARKET = MarketDataResource(source="bundled", universe="bokeh_ohlcv")
OHLCV_FAMILIES = {
    "alpha158_kbar",
    "alpha158_price",
    "alpha158_range",
    "alpha158_volume",
    "technical_range",
    "technical_volume",
    "technical_flow",
    "microstructure_range",
    "microstructure_volume",
    "microstructure_gap",
}


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    """The packaged file, with the bars on the adj_close basis (as Qlib and `ta` users do)."""
    frame = pd.read_csv(package_path("stocks.csv.gz"), parse_dates=["Date"])
    factor = frame["Adj Close"] / frame["Close"]
    return frame.assign(
        adj_open=frame["Open"] * factor,
        adj_high=frame["High"] * factor,
        adj_low=frame["Low"] * factor,
        adj_volume=frame["Volume"] / factor,
    )


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return MARKET.price_source().prices(TICKERS, *MARKET.date_range())


@pytest.fixture(scope="module")
def features(prices) -> pd.DataFrame:
    config = FeatureConfig(families=("alpha158", "technical", "microstructure"))
    result = build_features(prices, config=config)
    assert set(result.computed) >= OHLCV_FAMILIES, result.skipped
    assert not OHLCV_FAMILIES & set(result.skipped)
    return result.frame.set_index(["ticker", "date"])


def _bars(raw: pd.DataFrame, ticker: str) -> pd.DataFrame:
    return raw[raw["Ticker"] == ticker].set_index("Date")


def test_preset_serves_every_ohlcv_field_of_the_packaged_file(prices, raw):
    assert MARKET.date_range() == (date(2000, 3, 1), date(2013, 3, 1))
    assert schema_violations(prices, PRICES) == []
    assert set(prices.columns) == {"date", "ticker", *PRICE_FIELDS}
    assert sorted(prices["ticker"].unique()) == TICKERS
    assert prices.notna().all().all()
    assert len(prices) == len(raw) == 12154
    merged = prices.merge(raw, left_on=["ticker", "date"], right_on=["Ticker", "Date"])
    assert len(merged) == len(prices)
    for ours, theirs in [("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close")]:
        np.testing.assert_array_equal(merged[ours], merged[theirs])
    np.testing.assert_array_equal(merged["adj_close"], merged["Adj Close"])
    np.testing.assert_array_equal(merged["volume"], merged["Volume"].astype(float))
    firsts = prices.groupby("ticker")["date"].min().dt.strftime("%Y-%m-%d").to_dict()
    assert firsts == {
        "AAPL": "2000-03-01",
        "FB": "2012-05-18",
        "GOOG": "2004-08-19",
        "IBM": "2000-03-01",
        "MSFT": "2000-03-01",
    }


def test_every_row_passes_the_quality_rules_on_nyse_trading_days(prices):
    clean, quarantined = quarantine_split(prices, PRICE_RULES, pd.Timestamp.today())
    reasons = quarantined.groupby("rule").size().to_dict() if len(quarantined) else {}
    assert quarantined.empty, f"quarantined rows by rule: {reasons}"
    assert len(clean) == len(prices)
    assert check_gaps(prices, MARKET.max_gap_days).passed
    days = pd.DatetimeIndex(prices["date"].unique())
    assert all(is_trading_day(d.date()) for d in days)


def test_adj_close_moves_off_close_only_on_splits_and_dividends(prices):
    factor = (prices["adj_close"] / prices["close"]).groupby(prices["ticker"])
    jumps = prices.assign(step=factor.pct_change())
    splits = jumps[jumps["step"] > 0.5]  # 2:1 splits double adj_close / close
    assert splits[["ticker", "date"]].astype(str).values.tolist() == [
        ["AAPL", "2000-06-21"],
        ["AAPL", "2005-02-28"],
        ["MSFT", "2003-02-18"],
    ]
    # Constant between corporate actions: at most quarterly dividends and the splits move it.
    moves = jumps[jumps["step"].abs() > 1e-6].groupby("ticker").size()
    assert moves.reindex(TICKERS, fill_value=0).to_dict() == {
        "AAPL": 5,  # two splits, three dividends (from 2012)
        "FB": 0,
        "GOOG": 0,
        "IBM": 52,
        "MSFT": 38,  # the 2003 split, the 2004 special dividend, quarterly dividends
    }
    fb = prices[prices["ticker"] == "FB"]
    np.testing.assert_array_equal(fb["adj_close"], fb["close"])  # no action before 2013


def test_presets_name_their_dataset_and_the_default_is_unchanged():
    for preset, rows in PRESETS.items():
        served = BundledSource(PRESET_STOCKS[preset]).available_tickers()
        assert {t for t, _, _ in rows} <= set(served), preset
    default = MarketDataResource(source="bundled")
    assert default.date_range() == (date(1990, 1, 2), date(2022, 12, 28))
    aapl = default.price_source().prices(["AAPL"], date(2000, 3, 1), date(2013, 3, 1))
    assert list(aapl.columns) == ["date", "ticker", "adj_close"]
    ohlcv = MARKET.price_source().prices(["AAPL"], date(2000, 3, 1), date(2013, 3, 1))
    assert not np.allclose(aapl["adj_close"], ohlcv["adj_close"])  # two histories, not merged
    with pytest.raises(KeyError, match="bokeh stocks"):
        MARKET.price_source().prices(["KO"], date(2000, 3, 1), date(2013, 3, 1))
    with pytest.raises(KeyError, match="skfolio stocks"):
        default.price_source().prices(["IBM"], date(2000, 3, 1), date(2013, 3, 1))
    gspc = [m.price_source().prices(["^GSPC"], *MARKET.date_range()) for m in (default, MARKET)]
    pd.testing.assert_frame_equal(gspc[0], gspc[1])
    assert len(gspc[0]) == 3270 and gspc[0]["open"].notna().all()  # the benchmark, with bars


def test_kbar_and_gap_match_a_hand_computation(features, raw):
    day = pd.Timestamp("2005-02-28")  # AAPL's 2:1 split: the raw bars halve overnight
    bars = _bars(raw, "AAPL")
    o, h, lo, c = (bars.loc[day, k] for k in ("Open", "High", "Low", "Close"))
    assert features.loc[("AAPL", day), "KSFT"] == pytest.approx((2 * c - h - lo) / o, rel=1e-5)
    previous = bars["Adj Close"].shift(1).loc[day]
    gap = np.log(bars.loc[day, "adj_open"] / previous)
    assert abs(gap) < 0.05  # on raw bars it would be ln(44.86 / 88.99)
    assert features.loc[("AAPL", day), "gap"] == pytest.approx(gap, rel=1e-5)


def test_atr_and_stochastic_match_ta_on_adjusted_bars(features, raw):
    day = pd.Timestamp("2005-03-10")  # eight trading days after AAPL's split
    bars = _bars(raw, "AAPL")
    h, lo, c = bars["adj_high"], bars["adj_low"], bars["Adj Close"]
    atr = AverageTrueRange(h, lo, c, window=14).average_true_range()
    assert features.loc[("AAPL", day), "atr_14"] == pytest.approx(atr[day] / c[day], rel=1e-4)
    highest, lowest = h.rolling(14).max()[day], lo.rolling(14).min()[day]
    stoch = 100 * (c[day] - lowest) / (highest - lowest)
    assert features.loc[("AAPL", day), "stoch_k"] == pytest.approx(stoch, rel=1e-5)


def test_volume_features_match_a_hand_computation(features, raw):
    day = pd.Timestamp("2003-02-20")  # two trading days after MSFT's 2:1 split
    v = _bars(raw, "MSFT")["adj_volume"]
    vma5 = v.rolling(5).mean()[day] / (v[day] + 1e-12)
    assert features.loc[("MSFT", day), "VMA5"] == pytest.approx(vma5, rel=1e-5)
    ibm = _bars(raw, "IBM")
    returns = np.log(ibm["Adj Close"]).diff().abs()
    dollars = ibm["Close"] * ibm["Volume"]  # = adj_close x adjusted volume
    amihud = (1e6 * returns / dollars).rolling(21).mean()
    day = pd.Timestamp("2010-06-15")
    assert features.loc[("IBM", day), "amihud_21"] == pytest.approx(amihud[day], rel=1e-5)
