from datetime import date

import numpy as np
import pandas as pd
import pytest
from arch.data import sp500
from skfolio.datasets import load_sp500_dataset

from finpipe.core.contracts import MACRO, PRICES, schema_violations
from finpipe.data.sources.base import MacroSource, PriceSource
from finpipe.data.sources.bundled import BundledSource
from finpipe.data.universe import SP500_20

SOURCE = BundledSource()


def test_implements_price_and_macro_interfaces():
    assert isinstance(SOURCE, PriceSource) and isinstance(SOURCE, MacroSource)


def test_stocks_are_the_packaged_adjusted_closes_and_nothing_else():
    tickers = [t for t, _, _ in SP500_20]
    prices = SOURCE.prices(tickers, date(1990, 1, 1), date(2022, 12, 31))
    assert schema_violations(prices, PRICES) == []
    assert list(prices.columns) == ["date", "ticker", "adj_close"]  # no invented OHLCV
    raw = load_sp500_dataset()
    assert len(prices) == raw.notna().sum().sum()
    aapl = prices[prices["ticker"] == "AAPL"].set_index("date")["adj_close"]
    np.testing.assert_array_equal(aapl.to_numpy(), raw["AAPL"].dropna().to_numpy())


def test_gspc_has_ohlcv_only_where_arch_has_it():
    gspc = SOURCE.prices(["^GSPC"], date(1990, 1, 1), date(2022, 12, 31)).set_index("date")
    assert gspc.index.min() == pd.Timestamp("1990-01-02")
    assert gspc.index.max() == pd.Timestamp("2022-12-28")
    bars = sp500.load()
    inside = gspc.loc[bars.index]
    np.testing.assert_allclose(inside["high"], bars["High"])
    np.testing.assert_allclose(inside["close"], bars["Close"], atol=1e-3)
    outside = gspc[(gspc.index < bars.index.min()) | (gspc.index > bars.index.max())]
    assert outside["high"].isna().all() and outside["adj_close"].notna().all()


def test_date_filter_is_inclusive():
    rows = SOURCE.prices(["MSFT"], date(2020, 1, 2), date(2020, 1, 3))
    assert rows["date"].dt.strftime("%Y-%m-%d").tolist() == ["2020-01-02", "2020-01-03"]


def test_macro_series_have_conservative_availability():
    macro = SOURCE.macro(["VIXCLS", "CPILFESL", "AAA", "BAA"], date(1950, 1, 1), date(2022, 12, 31))
    assert schema_violations(macro, MACRO) == []
    assert (macro["available_at"] > macro["date"]).all()
    cpi = macro[macro["series_id"] == "CPILFESL"].set_index("date")
    # January 2018 core CPI: month end + 30 days.
    assert cpi.loc["2018-01-01", "available_at"] == pd.Timestamp("2018-03-02")
    vix = macro[macro["series_id"] == "VIXCLS"].set_index("date")
    assert vix.loc["2018-02-02", "available_at"] == pd.Timestamp("2018-02-05")  # Fri -> Mon


def test_fama_french_factors_are_monthly_with_their_dates():
    ff = SOURCE.macro(["FF_MKT_RF"], date(1926, 1, 1), date(2022, 12, 31))
    assert ff["date"].min() == pd.Timestamp("1926-07-01")
    assert (ff["date"].dt.day == 1).all()


def test_unknown_tickers_and_series_name_what_exists():
    with pytest.raises(KeyError, match="has no tickers"):
        SOURCE.prices(["ZZZZ"], date(2020, 1, 1), date(2020, 2, 1))
    with pytest.raises(KeyError, match="has no series"):
        SOURCE.macro(["GDP"], date(2020, 1, 1), date(2020, 2, 1))
