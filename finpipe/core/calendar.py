"""The NYSE exchange calendar: trading sessions, holidays, ad-hoc closures and early closes.

The one home of the exchange calendar in finpipe. It is a thin, typed view of the XNYS calendar
of `exchange_calendars` (a maintained library), covering FIRST_DAY through LAST_DAY:

- FIRST_DAY is 1953-01-01: the NYSE stopped trading on Saturdays in 1952, and the library
  models every year as a Monday-to-Friday week, so earlier years would be wrong here.
- LAST_DAY is 2099-12-31. Beyond the closures the library already knows, future sessions
  follow its regular holiday rules; an unscheduled closure (a national day of mourning, a
  storm) appears only once a newer `exchange_calendars` release records it.

A day outside that range raises CalendarRangeError naming the range. Days are calendar dates
in New York; a datetime counts by its own date (its local wall-clock date when tz-aware).

The library is imported and the calendar built on first use, once per process, so importing
this module stays cheap.
"""

from __future__ import annotations

import warnings
from datetime import date, time
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

EXCHANGE = "XNYS"
FIRST_DAY = date(1953, 1, 1)
LAST_DAY = date(2099, 12, 31)
NEW_YORK = "America/New_York"

AD_HOC_CLOSURE = "ad-hoc closure"  # the library lists these closures by date, without a name

DayLike = date | str | np.datetime64


class CalendarRangeError(ValueError):
    """A day outside FIRST_DAY..LAST_DAY, the range this calendar covers."""


@cache
def exchange_calendar() -> ExchangeCalendar:
    """The library's XNYS calendar over FIRST_DAY..LAST_DAY, built once per process."""
    import exchange_calendars

    with warnings.catch_warnings():
        # exchange_calendars 4.13 reads tz-aware `Series.values` while building, which pandas
        # 3.1 deprecates (a Pandas4Warning on every build); the values it reads are unchanged.
        warnings.filterwarnings(
            "ignore", message="Series.values returning an ndarray", category=DeprecationWarning
        )
        return exchange_calendars.get_calendar(EXCHANGE, start=FIRST_DAY, end=LAST_DAY)


@cache
def _sessions() -> pd.DatetimeIndex:
    return pd.DatetimeIndex(exchange_calendar().sessions).as_unit("ns")


@cache
def _holiday_names() -> dict[pd.Timestamp, str]:
    names = exchange_calendar().regular_holidays.holidays(
        pd.Timestamp(FIRST_DAY), pd.Timestamp(LAST_DAY), return_name=True
    )
    return {pd.Timestamp(day): str(name) for day, name in names.items()}


def _range_error(what: object) -> CalendarRangeError:
    return CalendarRangeError(
        f"{what} is outside the {EXCHANGE} calendar's range {FIRST_DAY} .. {LAST_DAY} "
        "(exchange_calendars; see finpipe/core/calendar.py)"
    )


def _day(value: DayLike) -> pd.Timestamp:
    """A naive midnight Timestamp for `value`, checked against the calendar's range."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_localize(None)
    stamp = stamp.normalize()
    if not pd.Timestamp(FIRST_DAY) <= stamp <= pd.Timestamp(LAST_DAY):
        raise _range_error(stamp.date())
    return stamp


def _days(values: object) -> np.ndarray:
    """Day-resolution datetime64[ns] values of an array-like, checked against the range."""
    days = np.asarray(pd.to_datetime(pd.Index(np.ravel(np.asarray(values))))).astype(
        "datetime64[D]"
    )
    if days.size:
        low, high = days.min(), days.max()
        if low < np.datetime64(FIRST_DAY) or high > np.datetime64(LAST_DAY):
            bad = low if low < np.datetime64(FIRST_DAY) else high
            raise _range_error(bad)
    return days.astype("datetime64[ns]")


def sessions(start: DayLike, end: DayLike) -> pd.DatetimeIndex:
    """The NYSE trading sessions from `start` through `end`, both included (naive midnights)."""
    first, last = _day(start), _day(end)
    index = _sessions()
    return index[index.searchsorted(first, "left") : index.searchsorted(last, "right")]


def is_trading_day(day: DayLike) -> bool:
    """True when the NYSE holds a trading session on `day` (an early close counts)."""
    return _day(day) in _sessions()


def closed_reason(day: DayLike) -> str | None:
    """Why the NYSE is closed on `day`, or None when it trades.

    "weekend", the holiday's name as the library gives it (e.g. "Thanksgiving", "Good Friday",
    "Christmas" on its observed day), or "ad-hoc closure" for unscheduled closures such as
    1994-04-27 (Nixon's funeral) or 2012-10-29 (Hurricane Sandy).
    """
    stamp = _day(day)
    if stamp.weekday() >= 5:
        return "weekend"
    if stamp in _sessions():
        return None
    return _holiday_names().get(stamp, AD_HOC_CLOSURE)


def early_close(day: DayLike) -> time | None:
    """The New York closing time when `day` is a session that closes early, else None."""
    stamp = _day(day)
    calendar = exchange_calendar()
    if stamp not in calendar.early_closes:
        return None
    return calendar.session_close(stamp).tz_convert(NEW_YORK).time()


def count_sessions(after: object, through: object) -> np.ndarray:
    """Per pair, how many sessions s satisfy after < s <= through (negative when reversed).

    Vectorised over array-likes of equal length (scalars broadcast). Sessions behind an
    as-of date: `count_sessions(newest, as_of)`; sessions missing strictly between two
    dates a < b: `count_sessions(a, b - 1 day)`.
    """
    index = _sessions().to_numpy()
    low = np.searchsorted(index, _days(after), side="right")
    high = np.searchsorted(index, _days(through), side="right")
    return (high - low).astype(np.int64)
