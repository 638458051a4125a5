"""NYSE trading days: weekdays that are not exchange holidays.

Holiday rules of the NYSE since 2000 (Juneteenth since 2022), with Saturday holidays observed
on Friday and Sunday holidays on Monday; New Year's Day falling on a Saturday is not observed.
One-off closures (national days of mourning, 9/11, Hurricane Sandy) are listed by date.
"""

from __future__ import annotations

from datetime import date
from functools import cache

import pandas as pd
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

SPECIAL_CLOSURES = (
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
)


class NYSEHolidayCalendar(AbstractHolidayCalendar):
    """Regular NYSE holidays."""

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


@cache
def _holidays(year: int) -> dict[date, str]:
    frame = NYSEHolidayCalendar().holidays(
        pd.Timestamp(year, 1, 1), pd.Timestamp(year, 12, 31), return_name=True
    )
    out = {ts.date(): str(name) for ts, name in frame.items()}
    out.update(
        {
            pd.Timestamp(d).date(): "special closure"
            for d in SPECIAL_CLOSURES
            if d.startswith(str(year))
        }
    )
    return out


def holiday_name(day: date) -> str | None:
    """The holiday closing the NYSE on `day`, or None."""
    return _holidays(day.year).get(day)


def is_trading_day(day: date) -> bool:
    """True on weekdays the NYSE is open."""
    return day.weekday() < 5 and holiday_name(day) is None


def closed_reason(day: date) -> str | None:
    """Why the NYSE is closed on `day` ("weekend" or the holiday), or None when open."""
    if day.weekday() >= 5:
        return "weekend"
    return holiday_name(day)
