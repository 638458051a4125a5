"""FredSource running the real fredapi code, with only its HTTP call replaced.

fredapi 0.5.2 fetches every URL through `fredapi.fred.urlopen`; FakeFredServer stands in
for it and answers with FRED's real XML documents (observations with real-time periods,
series info, error documents) or raises what urllib raises when the network is down.
"""

from __future__ import annotations

import http.client
import io
import logging
import socket
from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import parse_qs, urlsplit

import fredapi.fred
import pytest

from finpipe.core.contracts import MACRO, schema_violations
from finpipe.core.identifiers import InvalidIdentifierError
from finpipe.data.sources.base import MacroSource, SourceUnavailableError
from finpipe.data.sources.fred import FredRequestError, FredSource

API_KEY = "0123456789abcdef0123456789abcdef"
OFFLINE_CONFIG = '{"resources": {"market_data": {"config": {"source": "bundled"}}}}'


def observations(rows: list[tuple[str, str, str, str]], realtime: tuple[str, str]) -> bytes:
    """FRED's series/observations XML; rows are (realtime_start, realtime_end, date, value)."""
    body = "\n".join(
        f'  <observation realtime_start="{start}" realtime_end="{end}" '
        f'date="{day}" value="{value}"/>'
        for start, end, day, value in rows
    )
    return (
        '<?xml version="1.0" encoding="utf-8" ?>\n'
        f'<observations realtime_start="{realtime[0]}" realtime_end="{realtime[1]}" '
        'observation_start="1776-07-04" observation_end="9999-12-31" units="lin" '
        'output_type="1" file_type="xml" order_by="observation_date" sort_order="asc" '
        f'count="{len(rows)}" offset="0" limit="100000">\n{body}\n</observations>'
    ).encode()


def series_info(series_id: str, frequency: str, frequency_short: str) -> bytes:
    """FRED's series XML (the series' metadata)."""
    return (
        '<?xml version="1.0" encoding="utf-8" ?>\n'
        '<seriess realtime_start="2024-05-01" realtime_end="2024-05-01">\n'
        f'  <series id="{series_id}" realtime_start="2024-05-01" realtime_end="2024-05-01" '
        f'title="{series_id}" observation_start="1990-01-02" observation_end="2024-04-30" '
        f'frequency="{frequency}" frequency_short="{frequency_short}" units="Percent" '
        'units_short="%" seasonal_adjustment="Not Seasonally Adjusted" '
        'seasonal_adjustment_short="NSA" last_updated="2024-05-01 07:36:03-05" '
        'popularity="80" notes=""/>\n</seriess>'
    ).encode()


def http_error(code: int, message: str) -> Callable[[str], Exception]:
    """What urlopen raises for a FRED error: HTTPError whose body is FRED's error XML."""
    document = (
        f'<?xml version="1.0" encoding="utf-8" ?>\n<error code="{code}" message="{message}"/>'
    )
    reason = {400: "Bad Request", 429: "Too Many Requests"}[code]
    return lambda url: HTTPError(url, code, reason, None, io.BytesIO(document.encode()))  # type: ignore[arg-type]


def dns_failure(url: str) -> Exception:
    return URLError(socket.gaierror(-3, "Temporary failure in name resolution"))


class FakeFredServer:
    """Answers fredapi's requests by (endpoint, series_id); a list is answered in turn."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, dict[str, str]]] = []

    def urlopen(self, url: str) -> io.BytesIO:
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        endpoint = parts.path.removeprefix("/fred/")
        self.requests.append((endpoint, query))
        answer = self.answers[(endpoint, query["series_id"])]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if callable(answer):
            raise answer(url)
        return io.BytesIO(answer)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def serve(monkeypatch: pytest.MonkeyPatch, answers: dict[tuple[str, str], Any]) -> FakeFredServer:
    server = FakeFredServer(answers)
    monkeypatch.setattr(fredapi.fred, "urlopen", server.urlopen)
    return server


# CPI-like monthly series with revisions: January first published 258.682 on 2020-02-13,
# revised twice; February's first release was missing ('.') and filled a month later;
# December 2019 is outside the requested range.
CPI_VINTAGES = observations(
    [
        ("2020-01-01", "2020-02-12", "2019-12-01", "258.444"),
        ("2020-02-13", "2020-03-10", "2020-01-01", "258.682"),
        ("2020-03-11", "2021-02-09", "2020-01-01", "258.687"),
        ("2021-02-10", "9999-12-31", "2020-01-01", "259.050"),
        ("2020-03-11", "2020-04-09", "2020-02-01", "."),
        ("2020-04-10", "9999-12-31", "2020-02-01", "259.246"),
        ("2020-04-10", "9999-12-31", "2020-03-01", "."),
    ],
    realtime=("2020-01-01", "9999-12-31"),
)
NOT_IN_ALFRED = "Bad Request.  The series does not exist in ALFRED but may exist in FRED."


def test_is_a_macro_source() -> None:
    assert isinstance(FredSource(api_key=API_KEY), MacroSource)
    assert FredSource(api_key=API_KEY).name == "fred"


def test_first_release_is_the_point_in_time_value(monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(monkeypatch, {("series/observations", "CPIAUCSL"): CPI_VINTAGES})
    macro = FredSource(api_key=API_KEY).macro(["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31))

    assert schema_violations(macro, MACRO) == []
    assert macro.astype(str).values.tolist() == [
        ["2020-01-01", "CPIAUCSL", "258.682", "2020-02-13"],
        ["2020-02-01", "CPIAUCSL", "259.246", "2020-04-10"],
    ]
    endpoint, query = server.requests[0]
    assert endpoint == "series/observations"
    assert query["realtime_start"] == "2020-01-01"
    assert query["realtime_end"] == "9999-12-31"
    assert query["api_key"] == API_KEY


def test_no_vintages_falls_back_to_a_conservative_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    current = observations(
        [
            ("2024-05-01", "2024-05-01", "2020-01-01", "50.9"),
            ("2024-05-01", "2024-05-01", "2020-02-01", "."),
            ("2024-05-01", "2024-05-01", "2020-03-01", "49.1"),
        ],
        realtime=("2024-05-01", "2024-05-01"),
    )
    one_day = observations(
        [("2024-05-01", "2024-05-01", "2020-01-03", "12.47")], realtime=("2024-05-01", "2024-05-01")
    )
    server = serve(
        monkeypatch,
        {
            ("series/observations", "NAPM"): [http_error(400, NOT_IN_ALFRED), current],
            ("series", "NAPM"): series_info("NAPM", "Monthly", "M"),
            ("series/observations", "VIXCLS"): [http_error(400, NOT_IN_ALFRED), one_day],
            ("series", "VIXCLS"): series_info("VIXCLS", "Daily, Close", "D"),
        },
    )
    macro = FredSource(api_key=API_KEY).macro(
        ["NAPM", "VIXCLS"], date(2020, 1, 1), date(2020, 3, 31)
    )

    # Monthly: month end + 30 days. Daily (one observation, so only FRED's stated
    # frequency can tell): the next business day.
    assert macro.astype(str).values.tolist() == [
        ["2020-01-01", "NAPM", "50.9", "2020-03-01"],
        ["2020-03-01", "NAPM", "49.1", "2020-04-30"],
        ["2020-01-03", "VIXCLS", "12.47", "2020-01-06"],
    ]
    fallback = [
        q for e, q in server.requests if e == "series/observations" and "realtime_start" not in q
    ]
    assert {(q["observation_start"], q["observation_end"]) for q in fallback} == {
        ("2020-01-01", "2020-03-31")
    }


def test_unknown_series_names_the_series(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    serve(
        monkeypatch,
        {
            ("series/observations", "NOSUCH"): http_error(
                400, "Bad Request.  The series does not exist."
            )
        },
    )
    with pytest.raises(
        FredRequestError, match=r"NOSUCH: Bad Request\.  The series does not exist\."
    ):
        FredSource(api_key=API_KEY, sleep=sleeps).macro(
            ["NOSUCH"], date(2020, 1, 1), date(2020, 3, 31)
        )
    assert sleeps == []


def test_empty_series_gives_an_empty_contract_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(
        monkeypatch,
        {
            ("series/observations", "CPIAUCSL"): observations(
                [], realtime=("2030-01-01", "9999-12-31")
            )
        },
    )
    macro = FredSource(api_key=API_KEY).macro(["CPIAUCSL"], date(2030, 1, 1), date(2030, 3, 31))
    assert macro.empty
    assert schema_violations(macro, MACRO) == []


def test_network_failure_is_retried_then_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    server = serve(monkeypatch, {("series/observations", "CPIAUCSL"): dns_failure})
    with pytest.raises(SourceUnavailableError) as raised:
        FredSource(api_key=API_KEY, sleep=sleeps).macro(
            ["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31)
        )

    message = str(raised.value)
    assert "download series CPIAUCSL from FRED after 3 attempts" in message
    assert "network is unreachable" in message
    assert "Temporary failure in name resolution" in message
    assert OFFLINE_CONFIG in message
    assert len(server.requests) == 3
    assert sleeps == [1.0, 2.0]


def test_retry_succeeds_on_second_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    serve(
        monkeypatch,
        {
            ("series/observations", "CPIAUCSL"): [
                http_error(429, "Too Many Requests.  Exceeded Rate Limit"),
                CPI_VINTAGES,
            ]
        },
    )
    fred_source = FredSource(api_key=API_KEY, backoff_seconds=0.25, sleep=sleeps)
    macro = fred_source.macro(["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31))

    assert macro["value"].tolist() == [258.682, 259.246]
    assert sleeps == [0.25]


def leaks_url(url: str) -> Exception:
    """What urllib raises for a URL it cannot send: the message quotes the URL, key included."""
    return http.client.InvalidURL(f"URL can't contain control characters. {url!r}")


def url_in_reason(url: str) -> Exception:
    return URLError(f"timed out fetching {url}")


@pytest.mark.parametrize(
    ("failure", "expected", "retried"),
    [(leaks_url, RuntimeError, False), (url_in_reason, SourceUnavailableError, True)],
)
def test_api_key_never_in_errors_or_logs(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: Callable[[str], Exception],
    expected: type[Exception],
    retried: bool,
) -> None:
    serve(monkeypatch, {("series/observations", "CPIAUCSL"): failure})
    with caplog.at_level(logging.DEBUG), pytest.raises(expected) as raised:
        FredSource(api_key=API_KEY, sleep=Sleeps()).macro(
            ["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31)
        )

    assert API_KEY not in str(raised.value)
    assert "api_key=***" in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None
    assert API_KEY not in caplog.text
    # Retries are logged with the error text, scrubbed too.
    assert ("api_key=***" in caplog.text) is retried


def test_rejected_key_points_to_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = (
        "Bad Request.  The value for variable api_key is not registered.  Read "
        "https://fred.stlouisfed.org/docs/api/api_key.html for more information."
    )
    serve(monkeypatch, {("series/observations", "CPIAUCSL"): http_error(400, message)})
    with pytest.raises(SourceUnavailableError, match="FRED_API_KEY") as raised:
        FredSource(api_key=API_KEY).macro(["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31))
    assert "not registered" in str(raised.value)
    assert API_KEY not in str(raised.value)


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRED_API_KEY", raising=False)
    server = serve(monkeypatch, {})
    with pytest.raises(SourceUnavailableError, match="FRED_API_KEY") as raised:
        FredSource().macro(["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31))
    assert "bundled" in str(raised.value)
    assert server.requests == []


def test_malformed_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(monkeypatch, {})
    malformed = "Not-A-Key-But-Secret"
    with pytest.raises(SourceUnavailableError, match="malformed") as raised:
        FredSource(api_key=malformed).macro(["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31))
    assert malformed not in str(raised.value)
    assert server.requests == []


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRED_API_KEY", f"{API_KEY}\n")
    server = serve(monkeypatch, {("series/observations", "CPIAUCSL"): CPI_VINTAGES})
    FredSource().macro(["CPIAUCSL"], date(2020, 1, 1), date(2020, 3, 31))
    assert server.requests[0][1]["api_key"] == API_KEY


@pytest.mark.parametrize("bad", ["../etc", "cpiaucsl", "CPI AUCSL", ""])
def test_series_ids_are_validated_before_any_request(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    server = serve(monkeypatch, {})
    with pytest.raises(InvalidIdentifierError):
        FredSource(api_key=API_KEY).macro(["CPIAUCSL", bad], date(2020, 1, 1), date(2020, 3, 31))
    assert server.requests == []
