import numpy as np
import pandas as pd
import pytest

from finpipe.core.contracts import FUNDAMENTALS, MACRO, PRICES, conform
from finpipe.data.quality import (
    FUNDAMENTAL_RULES,
    MACRO_RULES,
    PRICE_RULES,
    check_gaps,
    check_rule,
    check_staleness,
    check_unique_key,
    quarantine_split,
    trading_gaps,
)

TODAY = pd.Timestamp("2024-06-14")  # a Friday


def good_prices(n: int = 6) -> pd.DataFrame:
    dates = pd.bdate_range("2024-06-03", periods=n)
    close = np.linspace(100, 105, n)
    return conform(
        pd.DataFrame(
            {
                "date": dates,
                "ticker": "AAPL",
                "open": close - 0.5,
                "high": close + 1.0,
                "low": close - 1.0,
                "close": close,
                "adj_close": close,
                "volume": 1e6,
            }
        ),
        PRICES,
    )


def plant(frame: pd.DataFrame, row: int, **values) -> pd.DataFrame:
    out = frame.copy()
    for col, value in values.items():
        out.loc[row, col] = value
    return out


PLANTED = {
    "missing_adj_close": {"adj_close": np.nan},
    "non_positive_price": {"close": -1.0, "open": -1.0, "low": -2.0},
    "negative_volume": {"volume": -5.0},
    "ohlc_inconsistent": {"high": 90.0},
    "future_date": {"date": pd.Timestamp("2024-06-17")},
    "non_trading_day": {"date": pd.Timestamp("2024-06-08")},  # Saturday
}


@pytest.mark.parametrize("rule_name", list(PLANTED))
def test_each_price_rule_catches_its_planted_row(rule_name):
    bad = plant(good_prices(), 2, **PLANTED[rule_name])
    clean, quarantined = quarantine_split(bad, PRICE_RULES, TODAY)
    assert len(clean) == 5 and len(quarantined) == 1
    assert rule_name in quarantined["rule"].iloc[0].split(";")
    rule = next(r for r in PRICE_RULES if r.name == rule_name)
    assert rule.description in quarantined["reason"].iloc[0]
    assert not check_rule(bad, rule, TODAY).passed
    assert check_rule(good_prices(), rule, TODAY).passed


def test_ohlc_low_above_body_and_high_below_low():
    bad = plant(good_prices(), 1, low=104.9)
    assert quarantine_split(bad, PRICE_RULES, TODAY)[1]["rule"].tolist() == ["ohlc_inconsistent"]


def test_close_only_rows_pass_ohlc_rule():
    close_only = good_prices()[["date", "ticker", "adj_close"]]
    clean, quarantined = quarantine_split(close_only, PRICE_RULES, TODAY)
    assert len(clean) == 6 and quarantined.empty


def test_duplicates_keep_first_and_quarantine_the_rest():
    frame = good_prices()
    doubled = pd.concat([frame, frame.iloc[[3]].assign(adj_close=999.0)], ignore_index=True)
    clean, quarantined = quarantine_split(doubled, PRICE_RULES, TODAY)
    assert len(clean) == 6 and quarantined["rule"].tolist() == ["duplicate_key"]
    assert quarantined["adj_close"].tolist() == [999.0]
    assert not check_unique_key(doubled, PRICES).passed
    assert check_unique_key(frame, PRICES).passed


def test_a_row_breaking_two_rules_names_both():
    bad = plant(good_prices(), 0, volume=-1.0, high=10.0)
    rules = quarantine_split(bad, PRICE_RULES, TODAY)[1]["rule"].iloc[0]
    assert rules == "negative_volume;ohlc_inconsistent"


def test_macro_rules():
    macro = conform(
        pd.DataFrame(
            {
                "date": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-07-01"]),
                "series_id": "CPILFESL",
                "value": [1.0, np.nan, 3.0, 4.0],
                "available_at": pd.to_datetime(
                    ["2024-02-15", "2024-03-15", "2024-02-01", "2024-08-15"]
                ),
            }
        ),
        MACRO,
    )
    clean, quarantined = quarantine_split(macro, MACRO_RULES, TODAY)
    assert clean["value"].tolist() == [1.0]
    assert quarantined["rule"].tolist() == [
        "missing_value",
        "released_before_observed",
        "future_date",
    ]


def test_fundamental_rules():
    funda = conform(
        pd.DataFrame(
            {
                "ticker": "AAPL",
                "period_end": pd.to_datetime(["2024-03-31", "2024-03-31"]),
                "available_at": pd.to_datetime(["2024-05-15", "2024-03-01"]),
                "field": ["total_revenue", "net_income"],
                "value": [1.0, 2.0],
            }
        ),
        FUNDAMENTALS,
    )
    _, quarantined = quarantine_split(funda, FUNDAMENTAL_RULES, TODAY)
    assert quarantined["rule"].tolist() == ["released_before_period_end"]


def test_gap_hand_example():
    # 2024-06-03 (Mon) then 2024-06-12 (Wed): Jun 4-7, 10-11 missing = 6 trading sessions.
    frame = good_prices().iloc[[0]]
    frame = pd.concat([frame, frame.assign(date=pd.Timestamp("2024-06-12"))], ignore_index=True)
    gaps = trading_gaps(frame, max_gap_days=5)
    assert gaps["missing_sessions"].tolist() == [6]
    assert check_gaps(frame, 6).passed and not check_gaps(frame, 5).passed


def prices_on(days: list[str]) -> pd.DataFrame:
    return good_prices(len(days)).assign(date=pd.to_datetime(days))


def test_a_missing_holiday_is_no_gap_and_two_missing_sessions_are_a_two_session_gap():
    # Thursday 2024-07-04 is Independence Day: Wed Jul 3 -> Fri Jul 5 misses no session.
    around_the_fourth = prices_on(["2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08"])
    assert trading_gaps(around_the_fourth, max_gap_days=0).empty
    assert check_gaps(around_the_fourth, 0).passed
    # Good Friday 2024-03-29 and a weekend lie inside a gap that misses Thu Mar 28 and Mon Apr 1.
    missing_two = prices_on(["2024-03-26", "2024-03-27", "2024-04-02"])
    gaps = trading_gaps(missing_two, max_gap_days=1)
    assert gaps["missing_sessions"].tolist() == [2]
    assert gaps["date"].tolist() == [pd.Timestamp("2024-04-02")]
    assert not check_gaps(missing_two, 1).passed and check_gaps(missing_two, 2).passed


def test_staleness_hand_example():
    frame = good_prices()  # newest 2024-06-10 (Mon)
    assert check_staleness(frame, pd.Timestamp("2024-06-17"), 5).passed  # 5 sessions behind
    outcome = check_staleness(frame, pd.Timestamp("2024-06-18"), 5)
    assert not outcome.passed and outcome.failing_rows == 1
    assert outcome.sample["sessions_behind"].tolist() == [6]


def test_staleness_counts_sessions_not_weekdays():
    # Newest row Wed 2024-07-03; by Mon Jul 8 only Fri Jul 5 and Mon Jul 8 were sessions.
    frame = prices_on(["2024-07-02", "2024-07-03"])
    assert check_staleness(frame, pd.Timestamp("2024-07-08"), 2).passed
    assert not check_staleness(frame, pd.Timestamp("2024-07-08"), 1).passed
    # Data through Friday are current on the Saturday and Sunday after.
    friday = prices_on(["2024-07-05"])
    assert check_staleness(friday, pd.Timestamp("2024-07-07"), 0).passed
