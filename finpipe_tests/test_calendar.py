"""The NYSE calendar (finpipe.core.calendar, XNYS of exchange_calendars) against independent
references: the hand-written rules finpipe used before, known historic closures, and the
trading days of the bundled real prices."""

import os
import re
import subprocess
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.holiday import (
    AbstractHolidayCalendar,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMartinLutherKingJr,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)

from finpipe.core.calendar import (
    FIRST_DAY,
    LAST_DAY,
    CalendarRangeError,
    closed_reason,
    count_sessions,
    early_close,
    is_trading_day,
    sessions,
)

# --- The reference: finpipe's former hand-written calendar (valid 2000 onwards), kept here
# --- only as an independent check of the library. Not product code.


class OldNYSEHolidays(AbstractHolidayCalendar):
    rules = [  # noqa: RUF012 (pandas reads this class attribute)
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMartinLutherKingJr,
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas Day", month=12, day=25, observance=nearest_workday),
    ]


OLD_SPECIAL_CLOSURES = pd.to_datetime(
    [
        "2001-09-11",
        "2001-09-12",
        "2001-09-13",
        "2001-09-14",  # September 11
        "2004-06-11",  # Reagan
        "2007-01-02",  # Ford
        "2012-10-29",
        "2012-10-30",  # Hurricane Sandy
        "2018-12-05",  # G. H. W. Bush
        "2025-01-09",  # Carter
    ]
)

# Days on which the library and the old rules disagree, with who is right and why. Compared
# day by day over 2001-2025 they agree on every day, so there is none.
KNOWN_DISAGREEMENTS: dict[str, str] = {}


def old_sessions(start: str, end: str) -> pd.DatetimeIndex:
    weekdays = pd.bdate_range(start, end)
    holidays = OldNYSEHolidays().holidays(pd.Timestamp(start), pd.Timestamp(end))
    return weekdays.difference(holidays).difference(OLD_SPECIAL_CLOSURES)


def test_library_matches_the_old_hand_written_calendar_every_day_2001_2025():
    new = set(sessions("2001-01-01", "2025-12-31"))
    old = set(old_sessions("2001-01-01", "2025-12-31"))
    disagreements = {str(d.date()) for d in new ^ old}
    assert disagreements == set(KNOWN_DISAGREEMENTS)
    assert len(new) == 6287  # 25 years, about 251.5 sessions a year
    for day in pd.date_range("2001-01-01", "2025-12-31"):  # the scalar API says the same
        assert is_trading_day(day.date()) == (day in new)


def test_the_comparison_sees_a_difference_where_there_is_one():
    # Before 2000 the old rules were never meant to hold: they close on MLK day (pandas has it
    # since 1986), which the NYSE first observed in 1998, and they miss Nixon's funeral.
    new = set(sessions("1994-01-01", "1995-12-31"))
    old = set(old_sessions("1994-01-01", "1995-12-31"))
    assert sorted(str(d.date()) for d in new ^ old) == [
        "1994-01-17",
        "1994-04-27",
        "1995-01-16",
    ]


def test_known_pre_2001_closures():
    assert closed_reason(date(1994, 4, 27)) == "ad-hoc closure"  # Nixon's funeral
    assert closed_reason(date(1985, 9, 27)) == "ad-hoc closure"  # Hurricane Gloria
    assert closed_reason(date(1963, 11, 25)) == "ad-hoc closure"  # Kennedy's funeral
    assert is_trading_day(date(1994, 4, 26)) and is_trading_day(date(1994, 4, 28))


def test_the_regular_holidays_of_1995():
    weekdays = pd.bdate_range("1995-01-01", "1995-12-31")
    closed = {str(d.date()): closed_reason(d) for d in weekdays if not is_trading_day(d)}
    assert closed == {
        "1995-01-02": "New Year's Day",  # Sunday Jan 1, observed Monday
        "1995-02-20": "President's Day",
        "1995-04-14": "Good Friday",
        "1995-05-29": "Memorial Day",
        "1995-07-04": "July 4th",
        "1995-09-04": "Labor Day",
        "1995-11-23": "Thanksgiving",
        "1995-12-25": "Christmas",
    }
    assert is_trading_day(date(1995, 1, 16))  # MLK day: a NYSE holiday only since 1998


def test_the_holidays_of_2024_and_reasons():
    closed = {
        str(d.date()) for d in pd.bdate_range("2024-01-01", "2024-12-31") if not is_trading_day(d)
    }
    assert closed == {
        "2024-01-01",
        "2024-01-15",
        "2024-02-19",
        "2024-03-29",
        "2024-05-27",
        "2024-06-19",
        "2024-07-04",
        "2024-09-02",
        "2024-11-28",
        "2024-12-25",
    }
    assert closed_reason(date(2021, 12, 24)) == "Christmas"  # Saturday Christmas, observed Friday
    assert closed_reason(date(2022, 12, 31)) == "weekend"  # Saturday New Year: not observed
    assert is_trading_day(date(2021, 12, 31))
    assert closed_reason(date(2012, 10, 29)) == "ad-hoc closure"  # Hurricane Sandy
    assert closed_reason(date(2026, 11, 21)) == "weekend"
    assert closed_reason(date(2026, 11, 20)) is None


def test_early_closes():
    assert early_close(date(2024, 11, 29)) == time(13)  # the day after Thanksgiving
    assert early_close(date(2024, 12, 24)) == time(13)
    assert early_close(date(2024, 11, 27)) is None  # a full session
    assert early_close(date(2024, 11, 28)) is None  # closed, not early
    assert is_trading_day(date(2024, 11, 29))


def test_days_and_datetimes():
    ny = ZoneInfo("America/New_York")
    assert is_trading_day(datetime(2024, 11, 29, 23, 30, tzinfo=ny))  # its New York date
    assert is_trading_day(pd.Timestamp("2024-11-29 18:30"))
    assert not is_trading_day("2024-11-28")


def test_sessions_and_counts():
    assert [str(d.date()) for d in sessions("2024-07-03", "2024-07-08")] == [
        "2024-07-03",
        "2024-07-05",
        "2024-07-08",
    ]
    assert len(sessions("2024-07-06", "2024-07-07")) == 0
    # after < s <= through: Wed Jul 3 -> Mon Jul 8 holds Jul 5 and Jul 8.
    assert count_sessions("2024-07-03", "2024-07-08").tolist() == [2]
    counts = count_sessions(
        pd.to_datetime(["2024-07-03", "2024-07-05", "2024-07-08"]),
        pd.to_datetime(["2024-07-04", "2024-07-07", "2024-07-05"]),
    )
    assert counts.tolist() == [0, 0, -1]
    assert np.issubdtype(counts.dtype, np.integer)


def test_days_outside_the_range_name_it():
    assert is_trading_day(FIRST_DAY + timedelta(days=1)) and is_trading_day(LAST_DAY)
    with pytest.raises(CalendarRangeError, match=re.escape("range 1953-01-01 .. 2099-12-31")):
        is_trading_day(date(1952, 12, 31))
    with pytest.raises(CalendarRangeError, match="2100-01-04"):
        count_sessions(["2024-01-02", "2024-01-03"], ["2024-01-05", "2100-01-04"])
    with pytest.raises(CalendarRangeError):
        sessions("1900-01-01", "2000-01-01")


def test_the_bundled_real_prices_trade_on_exactly_the_sessions():
    from finpipe.data.sources.bundled import bundled_prices

    traded = pd.DatetimeIndex(bundled_prices()["date"].unique()).sort_values()
    expected = sessions(traded[0], traded[-1])
    assert len(traded) > 8000
    assert traded.difference(expected).empty and expected.difference(traded).empty


def test_importing_the_module_does_not_build_the_calendar():
    code = (
        "import sys, finpipe.core.calendar as c;"
        "assert 'exchange_calendars' not in sys.modules;"
        "c.is_trading_day('2024-01-02');"
        "assert 'exchange_calendars' in sys.modules;"
        "print(c.__file__)"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(root))
