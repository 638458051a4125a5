"""Fundamentals features: statements joined by the date they became public, values worked
by hand and by a plain per-cell reference, truncation invariance, and the path from
yfinance's statement frames through the yahoo source to the features."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.features import FeatureConfig, build_features
from finpipe.features.fundamentals import FAMILIES
from finpipe_tests.synthetic_fundamentals import synthetic_statements
from finpipe_tests.test_features_lookahead import assert_same_up_to
from finpipe_tests.test_source_yahoo import FakeYahoo, source, yahoo_history, yahoo_statement

pytestmark = pytest.mark.filterwarnings(
    # yfinance 1.7.0's own download() code on pandas 3.1; not ours to fix.
    "ignore:The inplace keyword:pandas.errors.Pandas4Warning"
)

ONLY = FeatureConfig(families=("fundamentals",))
COLUMNS = [
    "earnings_yield",
    "book_to_price",
    "roe",
    "gross_margin",
    "operating_margin",
    "net_margin",
    "debt_to_equity",
    "liabilities_to_assets",
    "revenue_growth_yoy",
    "earnings_growth_yoy",
]


def statements(*rows: tuple[str, str, str, dict[str, float]]) -> pd.DataFrame:
    """Fundamentals rows from (ticker, period_end, available_at, {field: value})."""
    return pd.DataFrame(
        [
            {"ticker": t, "period_end": end, "available_at": public, "field": f, "value": v}
            for t, end, public, items in rows
            for f, v in items.items()
        ]
    ).astype({"period_end": "datetime64[ns]", "available_at": "datetime64[ns]"})


SPLIT_DAY = pd.Timestamp("2024-04-01")
HAND_DATES = pd.bdate_range("2024-03-25", "2024-05-31")
# A reports 2023Q4 on 2024-03-28 and splits 2:1 on 2024-04-01 (close 10 -> 5); its 2024Q1
# shares (10, counted before the split) are public on 2024-05-15. B's 2024Q1 ended before
# every date here but is public only on 2024-05-20.
HAND_PRICES = pd.DataFrame(
    [
        {
            "date": d,
            "ticker": ticker,
            "close": close,
            "adj_close": close * 0.9,
            "split_ratio": 2.0 if (ticker, d) == ("A", SPLIT_DAY) else 1.0,
        }
        for d in HAND_DATES
        for ticker, close in (("A", 10.0 if d < SPLIT_DAY else 5.0), ("B", 20.0))
    ]
)
A_2023Q4 = {
    "net_income": 5,
    "total_revenue": 15,
    "stockholders_equity": 110,
    "ordinary_shares_number": 10,
    "gross_profit": 6,
    "operating_income": 3,
    "total_debt": 55,
    "total_liabilities_net_minority_interest": 90,
    "total_assets": 200,
}
HAND_STATEMENTS = statements(
    ("A", "2022-12-31", "2023-03-31", {"net_income": 1, "total_revenue": 10}),
    ("A", "2023-03-31", "2023-05-15", {"net_income": 2, "total_revenue": 11}),
    ("A", "2023-06-30", "2023-08-14", {"net_income": 3, "total_revenue": 12}),
    (
        "A",
        "2023-09-30",
        "2023-11-14",
        {
            "net_income": 4,
            "total_revenue": 13,
            "stockholders_equity": 100,
            "ordinary_shares_number": 10,
        },
    ),
    ("A", "2023-12-31", "2024-03-28", A_2023Q4),
    (
        "A",
        "2024-03-31",
        "2024-05-15",
        {
            "net_income": 6,
            "total_revenue": 16,
            "stockholders_equity": 120,
            "ordinary_shares_number": 10,
        },
    ),
    ("B", "2023-03-31", "2023-05-15", {"net_income": -4, "total_revenue": 18}),
    (
        "B",
        "2023-12-31",
        "2024-02-14",
        {
            "net_income": -2,
            "total_revenue": 20,
            "stockholders_equity": 50,
            "ordinary_shares_number": 5,
        },
    ),
    (
        "B",
        "2024-03-31",
        "2024-05-20",
        {
            "net_income": 1,
            "total_revenue": 25,
            "stockholders_equity": -10,
            "ordinary_shares_number": 5,
        },
    ),
)


def feature_rows(frame: pd.DataFrame, ticker: str, day: str) -> pd.Series:
    row = frame.loc[(frame["ticker"] == ticker) & (frame["date"] == pd.Timestamp(day))]
    return row[COLUMNS].iloc[0].astype(float)


def expect(frame: pd.DataFrame, ticker: str, days: list[str], **values: float) -> None:
    """The features of `ticker` on each of `days`: `values` as given, every other NaN."""
    want = pd.Series({c: values.get(c, np.nan) for c in COLUMNS}, dtype=float)
    for day in days:
        got = feature_rows(frame, ticker, day)
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{ticker} on {day}")


def test_hand_worked_statements() -> None:
    features = build_features(HAND_PRICES, fundamentals=HAND_STATEMENTS, config=ONLY)
    assert features.computed == [f.name for f in FAMILIES] and features.skipped == {}
    frame = features.frame
    # 2023Q3 only: trailing net income 1+2+3+4 over 10 x 10; no year-earlier quarter.
    expect(
        frame,
        "A",
        ["2024-03-25", "2024-03-27"],
        earnings_yield=10 / 100,
        book_to_price=100 / 100,
        roe=10 / 100,
        net_margin=4 / 13,
    )
    # 2023Q4, before and after the split: 5 x (10 shares x 2) is still a market cap of 100.
    q4 = {
        "earnings_yield": 14 / 100,
        "book_to_price": 110 / 100,
        "roe": 14 / 110,
        "gross_margin": 6 / 15,
        "operating_margin": 3 / 15,
        "net_margin": 5 / 15,
        "debt_to_equity": 55 / 110,
        "liabilities_to_assets": 90 / 200,
        "revenue_growth_yoy": 15 / 10 - 1,
        "earnings_growth_yoy": (5 - 1) / 1,
    }
    expect(frame, "A", ["2024-03-28", "2024-03-29", "2024-04-01", "2024-05-14"], **q4)
    # 2024Q1: items it lacks (gross profit, debt, ...) are not carried over from 2023Q4.
    expect(
        frame,
        "A",
        ["2024-05-15", "2024-05-31"],
        earnings_yield=18 / 100,
        book_to_price=120 / 100,
        roe=18 / 120,
        net_margin=6 / 16,
        revenue_growth_yoy=16 / 11 - 1,
        earnings_growth_yoy=(6 - 2) / 2,
    )
    # B: no trailing year; 2024Q1 is unseen until it is public, though its quarter has ended.
    b_q4 = {"book_to_price": 50 / (20 * 5), "net_margin": -2 / 20}
    expect(frame, "B", ["2024-03-25", "2024-04-01", "2024-05-17"], **b_q4)
    # Negative equity: book-to-price stays (negative), ROE and leverage would be NaN.
    # Earnings growth from a loss of 4 to a profit of 1: +5 over |-4|.
    expect(
        frame,
        "B",
        ["2024-05-20", "2024-05-31"],
        book_to_price=-10 / 100,
        net_margin=1 / 25,
        revenue_growth_yoy=25 / 18 - 1,
        earnings_growth_yoy=5 / 4,
    )


def test_a_statement_is_unseen_until_public_even_after_its_period_end() -> None:
    """A statement of B for a period ended 2024-01-31, before every date, but public only on
    2024-05-01: nothing changes before then; from then it is B's latest until 2024Q1's."""
    late = statements(
        ("B", "2024-01-31", "2024-05-01", {"net_income": 99, "total_revenue": 100}),
    )
    with_late = build_features(
        HAND_PRICES, fundamentals=pd.concat([HAND_STATEMENTS, late]), config=ONLY
    ).frame
    without = build_features(HAND_PRICES, fundamentals=HAND_STATEMENTS, config=ONLY).frame
    before = (with_late["date"] < pd.Timestamp("2024-05-01")).to_numpy()
    pd.testing.assert_frame_equal(with_late[before], without[before])
    assert feature_rows(with_late, "B", "2024-05-01")["net_margin"] == pytest.approx(0.99)
    assert feature_rows(with_late, "B", "2024-05-20")["net_margin"] == pytest.approx(0.04)


def test_tickers_see_only_their_own_statements() -> None:
    both = build_features(HAND_PRICES, fundamentals=HAND_STATEMENTS, config=ONLY).frame
    alone = build_features(
        HAND_PRICES[HAND_PRICES["ticker"] == "A"], fundamentals=HAND_STATEMENTS, config=ONLY
    ).frame
    pd.testing.assert_frame_equal(alone, both[both["ticker"] == "A"].reset_index(drop=True))
    c_only = HAND_PRICES.assign(ticker=HAND_PRICES["ticker"].map({"A": "A", "B": "C"}))
    frame = build_features(c_only, fundamentals=HAND_STATEMENTS, config=ONLY).frame
    assert frame.loc[frame["ticker"] == "C", COLUMNS].isna().all().all()


def synthetic_inputs(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    config = SyntheticConfig(n_tickers=3, n_days=260, seed=seed, start="2021-01-04")
    prices = synthetic_panel(config)
    rng = np.random.default_rng(seed)
    splits = rng.random(len(prices)) < 0.01
    prices = prices.assign(split_ratio=np.where(splits, rng.choice([2.0, 3.0, 0.5]), 1.0))
    return prices, synthetic_statements(list(config.tickers), config.dates, seed)


@pytest.mark.parametrize("seed", [1, 2])
def test_truncation_invariance(seed: int) -> None:
    prices, fundamentals = synthetic_inputs(seed)
    full = build_features(prices, fundamentals=fundamentals, config=ONLY)
    assert full.skipped == {}
    assert full.frame[COLUMNS].notna().any().all()
    dates = pd.DatetimeIndex(prices["date"].unique())
    for quarter_end in ("2021-03-31", "2021-06-30", "2021-09-30", "2021-11-15"):
        cut = dates[dates >= pd.Timestamp(quarter_end) + pd.Timedelta(days=10)][0]
        # the quarter has ended by the cut, but no statement of it is public before day 20
        unreported = fundamentals["period_end"].le(cut) & fundamentals["available_at"].gt(cut)
        assert unreported.any()
        truncated = build_features(
            prices.loc[prices["date"] <= cut],
            fundamentals=fundamentals.loc[fundamentals["available_at"] <= cut],
            config=ONLY,
        )
        assert_same_up_to(full.frame, truncated.frame, cut)


def reference(prices: pd.DataFrame, fundamentals: pd.DataFrame) -> pd.DataFrame:
    """Some of the features cell by cell, straight from the module docstring's definitions."""
    items = list(fundamentals.itertuples(index=False))
    out = []
    for row in prices.itertuples(index=False):
        public = [i for i in items if i.ticker == row.ticker and i.available_at <= row.date]
        values = {"date": row.date, "ticker": row.ticker}
        out.append(values)
        if not public:
            continue
        latest = max(i.period_end for i in public)

        def item(field: str, quarters_back: int = 0, public=public, latest=latest) -> float:
            target = latest - pd.DateOffset(months=3 * quarters_back)
            found = [
                i.value
                for i in public
                if i.field == field and abs(i.period_end - target) <= pd.Timedelta(days=15)
            ]
            return found[0] if found else np.nan

        trailing = sum(item("net_income", k) for k in range(4))
        equity, revenue = item("stockholders_equity"), item("total_revenue")
        before = item("net_income", 4)
        splits = prices.loc[
            (prices["ticker"] == row.ticker)
            & (prices["date"] > latest)
            & (prices["date"] <= row.date),
            "split_ratio",
        ].prod()
        cap = row.close * item("ordinary_shares_number") * splits
        values.update(
            earnings_yield=trailing / cap,
            roe=trailing / equity if equity > 0 else np.nan,
            net_margin=item("net_income") / revenue if revenue > 0 else np.nan,
            revenue_growth_yoy=revenue / item("total_revenue", 4) - 1,
            earnings_growth_yoy=(item("net_income") - before) / abs(before),
        )
    return pd.DataFrame(out)


def test_matches_a_cell_by_cell_reference() -> None:
    prices, fundamentals = synthetic_inputs(3)
    prices = prices[prices["date"] >= prices["date"].iloc[-1] - pd.Timedelta(days=120)]
    got = build_features(prices, fundamentals=fundamentals, config=ONLY).frame
    want = reference(prices.sort_values(["date", "ticker"]), fundamentals)
    for column in ("earnings_yield", "roe", "net_margin", "revenue_growth_yoy"):
        assert want[column].notna().sum() > 20, column
        np.testing.assert_allclose(got[column], want[column], rtol=1e-5, err_msg=column)
    np.testing.assert_allclose(got["earnings_growth_yoy"], want["earnings_growth_yoy"], rtol=1e-5)


def test_families_name_what_they_lack() -> None:
    none = build_features(HAND_PRICES, config=ONLY)
    assert none.computed == []
    assert none.skipped["fundamentals_roe"] == (
        "needs fundamentals net_income, stockholders_equity; source has no fundamentals"
    )
    assert all("source has no fundamentals" in r for r in none.skipped.values())
    empty = build_features(HAND_PRICES, fundamentals=HAND_STATEMENTS.head(0), config=ONLY)
    assert empty.skipped == none.skipped

    no_gross = HAND_STATEMENTS[HAND_STATEMENTS["field"] != "gross_profit"]
    partial = build_features(HAND_PRICES, fundamentals=no_gross, config=ONLY)
    assert partial.skipped == {
        "fundamentals_gross_margin": "needs fundamentals gross_profit; "
        "the fundamentals have no such field"
    }

    adjusted_only = HAND_PRICES[["date", "ticker", "adj_close"]]
    unpriced = build_features(adjusted_only, fundamentals=HAND_STATEMENTS, config=ONLY)
    assert unpriced.skipped == {
        "fundamentals_earnings_yield": "needs close (as traded) for a market cap; the prices "
        "have adj_close only",
        "fundamentals_book_to_price": "needs close (as traded) for a market cap; the prices "
        "have adj_close only",
    }
    no_splits = build_features(
        HAND_PRICES.drop(columns="split_ratio"), fundamentals=HAND_STATEMENTS, config=ONLY
    )
    assert set(no_splits.skipped) == {"fundamentals_earnings_yield", "fundamentals_book_to_price"}
    assert "needs split_ratio" in no_splits.skipped["fundamentals_earnings_yield"]


def test_bad_fundamentals_get_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"fundamentals lack columns \['available_at'\]"):
        build_features(HAND_PRICES, fundamentals=HAND_STATEMENTS.drop(columns="available_at"))
    twice = pd.concat([HAND_STATEMENTS, HAND_STATEMENTS.head(1)])
    with pytest.raises(ValueError, match="duplicate"):
        build_features(HAND_PRICES, fundamentals=twice, config=ONLY)


# -- from yfinance's statement frames through the yahoo source -----------------------------

AAPL_INCOME = {  # quarterly_income_stmt: Yahoo's camelCase keys; a NaN gap in 2024Q2
    "TotalRevenue": {
        "2023-06-30": 80.0e9,
        "2023-09-30": 90.0e9,
        "2023-12-31": 120.0e9,
        "2024-03-31": 90.0e9,
        "2024-06-30": 86.0e9,
    },
    "GrossProfit": {"2024-03-31": 41.0e9, "2024-06-30": 40.0e9},
    "OperatingIncome": {"2024-03-31": 27.0e9, "2024-06-30": 25.0e9},
    "NetIncome": {
        "2023-06-30": 20.0e9,
        "2023-09-30": 23.0e9,
        "2023-12-31": 34.0e9,
        "2024-03-31": 24.0e9,
    },
    "DilutedEPS": {"2024-03-31": 1.53, "2024-06-30": 1.40},
}
AAPL_BALANCE = {  # quarterly_balance_sheet
    "StockholdersEquity": {"2024-03-31": 75.0e9, "2024-06-30": 67.0e9},
    "OrdinarySharesNumber": {"2024-03-31": 15.3e9, "2024-06-30": 15.2e9},
    "TotalDebt": {"2024-03-31": 105.0e9, "2024-06-30": 101.0e9},
    "TotalLiabilitiesNetMinorityInterest": {"2024-03-31": 262.0e9, "2024-06-30": 265.0e9},
    "TotalAssets": {"2024-03-31": 337.0e9, "2024-06-30": 332.0e9},
}
AAPL_ANNUAL = {"TotalRevenue": {"2022-09-30": 394.0e9, "2023-09-30": 383.0e9}}


def test_yahoo_statements_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    days = [str(d.date()) for d in pd.bdate_range("2024-05-13", "2024-08-16")]
    closes = np.linspace(180.0, 220.0, len(days))
    yahoo = FakeYahoo(
        monkeypatch,
        histories={"AAPL": yahoo_history(days, list(closes))},
        statements={
            ("AAPL", "quarterly_income_stmt"): yahoo_statement(AAPL_INCOME),
            ("AAPL", "quarterly_balance_sheet"): yahoo_statement(AAPL_BALANCE),
            ("AAPL", "income_stmt"): yahoo_statement(AAPL_ANNUAL),
        },
    )
    yahoo_source = source(yahoo)
    prices = yahoo_source.prices(["AAPL"], date(2024, 5, 13), date(2024, 8, 16))
    fundamentals = yahoo_source.fundamentals(["AAPL"], date(2023, 1, 1), date(2024, 8, 16))
    frame = build_features(prices, fundamentals=fundamentals, config=ONLY).frame
    close = pd.Series(closes, index=pd.to_datetime(days))
    # 2024Q1 (10-Q) is public on 2024-03-31 + 45 days; 2024Q2 on 2024-08-14.
    q1 = pd.bdate_range("2024-05-15", "2024-08-13")
    cap = close[q1] * 15.3e9
    trailing = (23.0 + 34.0 + 24.0 + 20.0) * 1e9  # 2023Q2 to 2024Q1: four quarters, one year
    day = frame.set_index("date")
    np.testing.assert_allclose(day.loc[q1, "earnings_yield"], trailing / cap, rtol=1e-6)
    np.testing.assert_allclose(day.loc[q1, "book_to_price"], 75.0e9 / cap, rtol=1e-6)
    np.testing.assert_allclose(day.loc[q1, "gross_margin"], 41 / 90, rtol=1e-6)
    np.testing.assert_allclose(day.loc[q1, "debt_to_equity"], 105 / 75, rtol=1e-6)
    assert day.loc[q1, "revenue_growth_yoy"].isna().all()  # no 2023Q1 in the statements
    # Before 2024Q1 is public, 2023Q4 (public 2024-02-14) is the latest: it has no shares,
    # and its trailing year and year-earlier quarter reach before the statements begin.
    expect(frame, "AAPL", ["2024-05-13", "2024-05-14"], net_margin=34 / 120)
    # 2024Q2 has no net income (NaN in Yahoo's frame): no earnings features, not 2024Q1's.
    q2 = day.loc["2024-08-14":]
    assert q2["earnings_yield"].isna().all() and q2["net_margin"].isna().all()
    np.testing.assert_allclose(q2["revenue_growth_yoy"], 86 / 80 - 1, rtol=1e-6)
    np.testing.assert_allclose(q2["liabilities_to_assets"], 265 / 332, rtol=1e-6)
