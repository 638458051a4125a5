"""FRED macro series through fredapi, point in time.

* Where FRED keeps vintages (ALFRED), each observation gets its first release: `value` is
  the value first published and `available_at` the day it was published (the earliest
  `realtime_start`). Later revisions are not used: they were not known on that day.
  Releases whose value is '.' (missing) are skipped, so `available_at` is when a number was
  first published. Missing values are absent, never zero.
* Vintages are requested from `realtime_start = start`: FRED reports a release older than
  that as starting on `start`, with the value current then, which was public on that day,
  so the result stays look-ahead safe. `realtime_end` is 9999-12-31 (FRED's "latest"), so
  observations inside the range that were published after `end` are still returned.
* Series FRED has no vintages for (fredapi raises ValueError) fall back to current values
  with `available_at` from `release_lag.conservative_available_at`, at the frequency FRED
  states for the series (inferred from the dates only where FRED states none).
* The API key comes from the argument or the FRED_API_KEY environment variable. fredapi
  puts it into every request URL, so it is never logged and is scrubbed from every error
  message, and errors are raised without chained exceptions that could still hold it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable
from datetime import date
from typing import Any
from xml.etree.ElementTree import ParseError

import pandas as pd
from fredapi import Fred

from finpipe.core.contracts import MACRO, conform
from finpipe.core.identifiers import validate_series_id
from finpipe.data.sources.base import SourceUnavailableError
from finpipe.data.sources.network import (
    OFFLINE_ADVICE,
    TransientSourceError,
    call_with_retries,
    check_retry_settings,
    looks_transient,
)
from finpipe.data.sources.release_lag import conservative_available_at

logger = logging.getLogger(__name__)

API_KEY_VARIABLE = "FRED_API_KEY"
API_KEY_HELP = "https://fred.stlouisfed.org/docs/api/api_key.html"
API_KEY_PATTERN = re.compile(r"[a-z0-9]{32}")
FRED_LATEST = "9999-12-31"
# FRED's frequency_short codes -> release_lag frequencies. Biweekly and semiannual take the
# next longer period's lag, which is later than their own release.
FRED_FREQUENCIES = {
    "D": "daily",
    "W": "weekly",
    "BW": "monthly",
    "M": "monthly",
    "Q": "quarterly",
    "SA": "annual",
    "A": "annual",
}


class FredRequestError(ValueError):
    """FRED refused a request for a series (unknown id, no vintages); keeps FRED's message."""

    def __init__(self, series_id: str, fred_message: str) -> None:
        super().__init__(
            f"fred: FRED refused the request for series {series_id}: {fred_message} "
            f"(check the id at https://fred.stlouisfed.org/series/{series_id})"
        )
        self.fred_message = fred_message


def _day(value: date) -> pd.Timestamp:
    return pd.Timestamp(value).normalize()


def first_releases(
    releases: pd.DataFrame, series_id: str, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """First published value of each observation dated `start`..`end`, from fredapi's
    all-releases frame (columns realtime_start, date, value; one row per release)."""
    if releases.empty:
        return MACRO.empty()
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(releases["date"]).dt.normalize(),
            "available_at": pd.to_datetime(releases["realtime_start"]).dt.normalize(),
            "value": pd.to_numeric(releases["value"], errors="coerce"),
        }
    )
    frame = frame[frame["value"].notna() & frame["date"].between(start, end)]
    frame = frame.sort_values(["date", "available_at"], kind="mergesort")
    return frame.drop_duplicates("date", keep="first").assign(series_id=series_id)


class FredSource:
    """MacroSource over the FRED API (network and a free API key needed)."""

    name = "fred"

    def __init__(
        self,
        api_key: str | None = None,
        fred_factory: Callable[..., Any] = Fred,
        max_attempts: int = 3,
        backoff_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        check_retry_settings(max_attempts, backoff_seconds)
        key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE, "")
        self._api_key = key.strip()
        self._fred_factory = fred_factory
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def macro(self, series_ids: list[str], start: date, end: date) -> pd.DataFrame:
        """Observations dated `start`..`end` inclusive, with the day each became public."""
        ids = list(dict.fromkeys(validate_series_id(s) for s in series_ids))
        if not ids:
            return MACRO.empty()
        fred = self._fred_factory(api_key=self._checked_key())
        first, last = _day(start), _day(end)
        frames = [self._series(fred, series_id, first, last) for series_id in ids]
        filled = [f for f in frames if not f.empty]
        frame = pd.concat(filled, ignore_index=True) if filled else MACRO.empty()
        return conform(frame, MACRO)

    def _checked_key(self) -> str:
        if not self._api_key:
            raise SourceUnavailableError(
                f"fred: no FRED API key: set the {API_KEY_VARIABLE} environment variable to "
                f"your key (free at {API_KEY_HELP}). {OFFLINE_ADVICE}"
            )
        if not API_KEY_PATTERN.fullmatch(self._api_key):
            raise SourceUnavailableError(
                f"fred: the FRED API key is malformed: FRED keys are 32 lower-case letters and "
                f"digits; check the {API_KEY_VARIABLE} environment variable ({API_KEY_HELP}). "
                f"{OFFLINE_ADVICE}"
            )
        return self._api_key

    def _series(
        self, fred: Any, series_id: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """One series: first releases from its vintages, else current values with a lag."""
        try:
            releases = self._request(
                functools.partial(
                    fred.get_series_all_releases,
                    series_id,
                    realtime_start=start.strftime("%Y-%m-%d"),
                    realtime_end=FRED_LATEST,
                ),
                series_id,
            )
        except FredRequestError as exc:
            reason = exc.fred_message
        else:
            return first_releases(releases, series_id, start, end)
        logger.info(
            "fred: no vintages for %s (%s); using current values with a conservative "
            "publication lag",
            series_id,
            reason,
        )
        return self._current_values(fred, series_id, start, end)

    def _current_values(
        self, fred: Any, series_id: str, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Latest values with available_at from the series' conservative publication lag."""
        values = self._request(
            functools.partial(
                fred.get_series,
                series_id,
                observation_start=start.strftime("%Y-%m-%d"),
                observation_end=end.strftime("%Y-%m-%d"),
            ),
            series_id,
        )
        values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
        dates = pd.Series(pd.to_datetime(values.index)).dt.normalize()
        in_range = dates.between(start, end).to_numpy()
        values, dates = values[in_range], dates[in_range].reset_index(drop=True)
        if values.empty:
            return MACRO.empty()
        info = self._request(functools.partial(fred.get_series_info, series_id), series_id)
        frequency = FRED_FREQUENCIES.get(str(info.get("frequency_short", "")))
        return pd.DataFrame(
            {
                "date": dates,
                "series_id": series_id,
                "value": values.to_numpy(dtype="float64"),
                "available_at": conservative_available_at(dates, frequency),
            }
        )

    def _request(self, call: Callable[[], Any], series_id: str) -> Any:
        return call_with_retries(
            functools.partial(self._call_safely, call, series_id),
            source=self.name,
            action=f"download series {series_id} from FRED",
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            sleep=self.sleep,
            logger=logger,
        )

    def _call_safely(self, call: Callable[[], Any], series_id: str) -> Any:
        """Run one fredapi call; re-raise its failure without the API key and unchained."""
        try:
            return call()
        except Exception as exc:
            failure = self._safe_error(exc, series_id)
        raise failure

    def _safe_error(self, exc: Exception, series_id: str) -> Exception:
        """The error to raise for a fredapi failure, its message scrubbed of the API key."""
        text = self._scrub(str(exc))
        refused = type(exc) is ValueError  # fredapi turns FRED's HTTP errors into ValueError
        # ParseError: the answer was not XML, e.g. a proxy's or load balancer's error page.
        if looks_transient(exc) or isinstance(exc, ParseError):
            return TransientSourceError(f"{type(exc).__name__}: {text}")
        if refused and "api_key" in text:
            return SourceUnavailableError(
                f"fred: FRED rejected the API key ({text}); check the {API_KEY_VARIABLE} "
                f"environment variable ({API_KEY_HELP}). {OFFLINE_ADVICE}"
            )
        if refused:
            return FredRequestError(series_id, text)
        return RuntimeError(
            f"fred: unexpected {type(exc).__name__} from fredapi for series {series_id}: {text}"
        )

    def _scrub(self, text: str) -> str:
        text = re.sub(r"api_key=[^&\s'\"]*", "api_key=***", text)
        return text.replace(self._api_key, "***") if self._api_key else text
