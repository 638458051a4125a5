"""YahooSource against yfinance 1.7.0's real response shapes, with no network.

The client is the real `yfinance.download` code (it aligns tickers, builds the
['Price', 'Ticker'] MultiIndex and logs per-ticker failures) with only the per-ticker fetch,
`yfinance.multi.Ticker`, replaced by FakeTicker. FakeTicker returns frames shaped like
`Ticker.history(auto_adjust=False, actions=True)` and statements shaped like
`Ticker.quarterly_income_stmt`, and fails as yfinance does: it raises when
`yfinance.config.debug.hide_exceptions` is False and otherwise logs, hides the cause and
returns an empty frame. yfinance 1.7.0 no longer imports or fills `yfinance.shared._ERRORS`,
so the fake has none either.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yfinance
import yfinance.multi
from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
from yfinance import utils as yf_utils
from yfinance.exceptions import YFException, YFPricesMissingError, YFTzMissingError

from finpipe.core.contracts import FUNDAMENTALS, PRICES, ContractError, schema_violations
from finpipe.core.identifiers import InvalidIdentifierError
from finpipe.data.sources.base import FundamentalsSource, PriceSource, SourceUnavailableError
from finpipe.data.sources.yahoo import YahooSource

pytestmark = pytest.mark.filterwarnings(
    # yfinance 1.7.0's own download() code on pandas 3.1; not ours to fix.
    "ignore:The inplace keyword:pandas.errors.Pandas4Warning"
)

NEW_YORK = "America/New_York"
DNS_FAILURE = "Failed to perform, curl: (6) Could not resolve host: query2.finance.yahoo.com."
OFFLINE_CONFIG = '{"resources": {"market_data": {"config": {"source": "bundled"}}}}'


def yahoo_history(
    dates: list[str],
    close: list[float],
    *,
    dividends: dict[str, float] | None = None,
    splits: dict[str, float] | None = None,
    actions: bool = True,
) -> pd.DataFrame:
    """A frame as yfinance 1.7.0's Ticker.history(auto_adjust=False) returns it: midnight
    exchange-time index named 'Date', int64 Volume, 0 on days without a dividend or split."""
    index = pd.DatetimeIndex(pd.to_datetime(dates)).tz_localize(NEW_YORK).rename("Date")
    close_ = np.asarray(close, dtype=float)
    frame = pd.DataFrame(
        {
            "Open": close_ - 1.0,
            "High": close_ + 2.0,
            "Low": close_ - 2.0,
            "Close": close_,
            "Adj Close": close_ * 0.9,
            "Volume": np.arange(1, len(dates) + 1, dtype=np.int64) * 1000,
        },
        index=index,
    )
    if actions:
        frame["Dividends"] = [(dividends or {}).get(d, 0.0) for d in dates]
        frame["Stock Splits"] = [(splits or {}).get(d, 0.0) for d in dates]
    return frame


def yahoo_statement(items: dict[str, dict[str, float]]) -> pd.DataFrame:
    """A statement as yfinance 1.7.0 builds quarterly_income_stmt: Yahoo's camelCase keys
    made pretty ('TotalRevenue' -> 'Total Revenue'), period ends newest first, NaN gaps."""
    dates = pd.to_datetime(sorted({d for values in items.values() for d in values}))
    frame = pd.DataFrame(columns=dates, index=list(items))
    for key, values in items.items():
        frame.loc[key] = {pd.Timestamp(d): v for d, v in values.items()}
    for column in frame.columns:
        frame[column] = frame[column].astype("float")
    frame = frame[sorted(frame.columns, reverse=True)]
    frame.index = yf_utils.camel2title(
        frame.index, sep=" ", acronyms=["EBIT", "EBITDA", "EPS", "NI"]
    )
    return frame


class FakePriceHistory:
    _last_error: str | None = None


class FakeTicker:
    """yfinance.Ticker with Yahoo's answers canned per symbol."""

    def __init__(self, symbol: str, yahoo: FakeYahoo) -> None:
        self.ticker = symbol
        self.yahoo = yahoo
        self._price_history = FakePriceHistory()

    def history(self, start: str, end: str, **kwargs: Any) -> pd.DataFrame:
        self.yahoo.history_calls.append(
            {"ticker": self.ticker, "start": start, "end": end, **kwargs}
        )
        self.yahoo.flags_seen.append(yfinance.config.debug.hide_exceptions)
        answer = self.yahoo.answer(self.yahoo.histories, self.ticker)
        if isinstance(answer, Exception):
            return self._fail(answer, start, end)
        dates = answer.index.tz_localize(None)
        return answer[(dates >= pd.Timestamp(start)) & (dates < pd.Timestamp(end))]

    def _fail(self, error: Exception, start: str, end: str) -> pd.DataFrame:
        if not yfinance.config.debug.hide_exceptions:
            raise error
        if isinstance(error, CurlConnectionError):
            # With the timezone cached, yfinance swallows the failed request and reports this:
            error = YFPricesMissingError(self.ticker, f"(1d {start} -> {end})")
        message = str(error)
        self._price_history._last_error = message.split(": ", 1)[1]
        logging.getLogger("yfinance").error(message)
        return yf_utils.empty_df()

    def _statement(self, attribute: str) -> pd.DataFrame:
        answer = self.yahoo.answer(self.yahoo.statements, (self.ticker, attribute))
        if isinstance(answer, Exception):
            if not yfinance.config.debug.hide_exceptions:
                raise answer
            return pd.DataFrame()
        return answer

    @property
    def quarterly_income_stmt(self) -> pd.DataFrame:
        return self._statement("quarterly_income_stmt")

    @property
    def quarterly_balance_sheet(self) -> pd.DataFrame:
        return self._statement("quarterly_balance_sheet")

    @property
    def income_stmt(self) -> pd.DataFrame:
        return self._statement("income_stmt")


class FakeYahoo:
    """The yfinance module as YahooSource uses it: real download(), canned per-ticker data."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        histories: dict[str, Any] | None = None,
        statements: dict[tuple[str, str], Any] | None = None,
        **download_overrides: Any,
    ) -> None:
        self.histories = histories or {}
        self.statements = statements or {}
        self.download_overrides = download_overrides
        self.config = yfinance.config
        self.download_calls: list[dict[str, Any]] = []
        self.history_calls: list[dict[str, Any]] = []
        self.flags_seen: list[bool] = []
        monkeypatch.setattr(yfinance.multi, "Ticker", self.Ticker)

    @staticmethod
    def answer(answers: dict[Any, Any], key: Any) -> Any:
        """The canned answer for `key`; a list is answered in turn, its last item for good."""
        answer = answers.get(key, YFTzMissingError(str(key)))
        if isinstance(answer, list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer

    def Ticker(self, symbol: str) -> FakeTicker:
        """yfinance.Ticker, under yfinance's own name."""
        return FakeTicker(symbol, self)

    def download(self, tickers: list[str], **kwargs: Any) -> pd.DataFrame | None:
        self.download_calls.append({"tickers": tickers, **kwargs})
        return yfinance.download(tickers, **{**kwargs, **self.download_overrides})


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(autouse=True)
def _yfinance_config_restored() -> Any:
    hidden = yfinance.config.debug.hide_exceptions
    yield
    yfinance.config.debug.hide_exceptions = hidden


def source(yahoo: FakeYahoo, sleeps: Sleeps | None = None) -> YahooSource:
    return YahooSource(client=yahoo, sleep=sleeps if sleeps is not None else Sleeps())


def test_is_a_price_and_fundamentals_source(monkeypatch: pytest.MonkeyPatch) -> None:
    yahoo_source = source(FakeYahoo(monkeypatch))
    assert isinstance(yahoo_source, PriceSource)
    assert isinstance(yahoo_source, FundamentalsSource)
    assert yahoo_source.name == "yahoo"


def test_default_client_is_yfinance() -> None:
    assert YahooSource().client is yfinance


def test_multi_ticker_prices_in_contract_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    days = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    yahoo = FakeYahoo(
        monkeypatch,
        histories={
            "AAPL": yahoo_history(days, [10.0, 11.0, 12.0, 13.0]),
            # MSFT did not trade on the 2nd: yfinance's alignment gives it a NaN row there.
            "MSFT": yahoo_history(days[1:], [20.0, 21.0, 22.0]),
        },
    )
    prices = source(yahoo).prices(["MSFT", "AAPL"], date(2024, 1, 2), date(2024, 1, 4))

    assert schema_violations(prices, PRICES) == []
    assert list(prices.columns) == [c for c in PRICES.columns if c in prices.columns]
    assert set(prices.columns) == set(PRICES.columns)
    assert prices[["ticker", "date"]].astype(str).values.tolist() == [
        ["AAPL", "2024-01-02"],
        ["AAPL", "2024-01-03"],
        ["AAPL", "2024-01-04"],
        ["MSFT", "2024-01-03"],
        ["MSFT", "2024-01-04"],
    ]
    aapl = prices[prices["ticker"] == "AAPL"].iloc[0]
    assert (aapl["open"], aapl["high"], aapl["low"], aapl["close"]) == (9.0, 12.0, 8.0, 10.0)
    assert aapl["adj_close"] == pytest.approx(9.0)
    assert aapl["volume"] == 1000.0
    # yfinance's end is exclusive: the 4th is asked for as end="2024-01-05".
    assert {c["start"] for c in yahoo.history_calls} == {"2024-01-02"}
    assert {c["end"] for c in yahoo.history_calls} == {"2024-01-05"}
    call = yahoo.download_calls[0]
    assert call["auto_adjust"] is False
    assert call["actions"] is True
    assert call["group_by"] == "column"
    assert call["multi_level_index"] is True
    assert call["threads"] is False
    assert call["progress"] is False


@pytest.mark.parametrize("multi_level_index", [True, False])
def test_single_ticker_multiindex_or_flat(
    monkeypatch: pytest.MonkeyPatch, multi_level_index: bool
) -> None:
    days = ["2024-01-02", "2024-01-03"]
    yahoo = FakeYahoo(
        monkeypatch,
        histories={"AAPL": yahoo_history(days, [10.0, 11.0])},
        multi_level_index=multi_level_index,
    )
    response = yahoo.download(["AAPL"], start="2024-01-02", end="2024-01-04", actions=True)
    assert isinstance(response.columns, pd.MultiIndex) is multi_level_index

    prices = source(yahoo).prices(["AAPL"], date(2024, 1, 2), date(2024, 1, 3))
    assert prices["ticker"].tolist() == ["AAPL", "AAPL"]
    assert prices["close"].tolist() == [10.0, 11.0]


def test_tz_aware_index_keeps_exchange_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    days = ["2024-01-02", "2024-01-03"]
    yahoo = FakeYahoo(
        monkeypatch, histories={"AAPL": yahoo_history(days, [10.0, 11.0])}, ignore_tz=False
    )
    assert yahoo.download(["AAPL"], start="2024-01-02", end="2024-01-04").index.tz is not None

    prices = source(yahoo).prices(["AAPL"], date(2024, 1, 2), date(2024, 1, 3))
    assert prices["date"].astype(str).tolist() == days


def test_splits_and_dividends(monkeypatch: pytest.MonkeyPatch) -> None:
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    history = yahoo_history(
        days, [400.0, 100.0, 101.0], dividends={"2024-01-04": 0.24}, splits={"2024-01-03": 4.0}
    )
    yahoo = FakeYahoo(monkeypatch, histories={"AAPL": history})
    prices = source(yahoo).prices(["AAPL"], date(2024, 1, 2), date(2024, 1, 4))

    assert prices["split_ratio"].tolist() == [1.0, 4.0, 1.0]
    assert prices["dividends"].tolist() == [0.0, 0.0, 0.24]


def test_missing_optional_columns_stay_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    days = ["2024-01-02", "2024-01-03"]
    yahoo = FakeYahoo(
        monkeypatch, histories={"AAPL": yahoo_history(days, [10.0, 11.0], actions=False)}
    )
    prices = source(yahoo).prices(["AAPL"], date(2024, 1, 2), date(2024, 1, 3))

    assert "dividends" not in prices.columns
    assert "split_ratio" not in prices.columns
    assert schema_violations(prices, PRICES) == []


def test_missing_adjusted_close_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    days = ["2024-01-02", "2024-01-03"]
    auto_adjusted = yahoo_history(days, [10.0, 11.0]).drop(columns="Adj Close")
    yahoo = FakeYahoo(monkeypatch, histories={"AAPL": auto_adjusted})

    with pytest.raises(ContractError, match="no 'Adj Close' column"):
        source(yahoo).prices(["AAPL"], date(2024, 1, 2), date(2024, 1, 3))


def test_unknown_ticker_gives_no_rows_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    days = ["2024-01-02", "2024-01-03"]
    sleeps = Sleeps()
    yahoo = FakeYahoo(
        monkeypatch,
        histories={"AAPL": yahoo_history(days, [10.0, 11.0]), "ZZZZ": YFTzMissingError("ZZZZ")},
    )
    with caplog.at_level(logging.WARNING, logger="finpipe.data.sources.yahoo"):
        prices = source(yahoo, sleeps).prices(["AAPL", "ZZZZ"], date(2024, 1, 2), date(2024, 1, 3))

    assert set(prices["ticker"]) == {"AAPL"}
    assert sleeps == []
    warnings = [r for r in caplog.records if r.name == "finpipe.data.sources.yahoo"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "ZZZZ" in warnings[0].getMessage()
    assert "no timezone found" in warnings[0].getMessage()


def test_empty_response_gives_an_empty_contract_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    yahoo = FakeYahoo(monkeypatch, histories={"ZZZZ": YFTzMissingError("ZZZZ")})
    response = yahoo.download(["ZZZZ"], start="2024-01-02", end="2024-01-04")
    assert response.empty

    prices = source(yahoo).prices(["ZZZZ"], date(2024, 1, 2), date(2024, 1, 3))
    assert prices.empty
    assert schema_violations(prices, PRICES) == []


def test_network_failure_is_retried_then_explained(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps = Sleeps()
    yahoo = FakeYahoo(
        monkeypatch,
        histories={
            "AAPL": CurlConnectionError(DNS_FAILURE),
            "MSFT": CurlConnectionError(DNS_FAILURE),
        },
    )
    with pytest.raises(SourceUnavailableError) as raised:
        source(yahoo, sleeps).prices(["AAPL", "MSFT"], date(2024, 1, 2), date(2024, 1, 3))

    message = str(raised.value)
    assert "after 3 attempts" in message
    assert "network is unreachable" in message
    assert "Could not resolve host" in message
    assert '"bundled"' in message
    assert OFFLINE_CONFIG in message
    assert len(yahoo.download_calls) == 3
    assert sleeps == [1.0, 2.0]
    # yfinance hides network errors as "possibly delisted" unless told not to: the source
    # turns that off during its calls and puts the setting back afterwards.
    assert set(yahoo.flags_seen) == {False}
    assert yfinance.config.debug.hide_exceptions is True


def test_retry_succeeds_on_second_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    days = ["2024-01-02", "2024-01-03"]
    yahoo = FakeYahoo(
        monkeypatch,
        histories={"AAPL": [CurlConnectionError(DNS_FAILURE), yahoo_history(days, [10.0, 11.0])]},
    )
    yahoo_source = YahooSource(client=yahoo, backoff_seconds=0.5, sleep=sleeps)
    prices = yahoo_source.prices(["AAPL"], date(2024, 1, 2), date(2024, 1, 3))

    assert prices["close"].tolist() == [10.0, 11.0]
    assert sleeps == [0.5]
    assert len(yahoo.download_calls) == 2


def test_download_that_raises_a_timeout_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    yahoo = FakeYahoo(monkeypatch)
    calls = []

    def timing_out_download(tickers: list[str], **kwargs: Any) -> pd.DataFrame:
        calls.append(tickers)
        raise TimeoutError("The read operation timed out")

    monkeypatch.setattr(yahoo, "download", timing_out_download)
    with pytest.raises(SourceUnavailableError, match="timed out"):
        YahooSource(client=yahoo, max_attempts=2, sleep=sleeps).prices(
            ["AAPL"], date(2024, 1, 2), date(2024, 1, 3)
        )
    assert len(calls) == 2
    assert sleeps == [1.0]
    assert yfinance.config.debug.hide_exceptions is True


@pytest.mark.parametrize("bad", ["../../etc", "aapl", "AAPL/..", ""])
def test_tickers_are_validated_before_any_call(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    yahoo = FakeYahoo(monkeypatch)
    with pytest.raises(InvalidIdentifierError):
        source(yahoo).prices(["AAPL", bad], date(2024, 1, 2), date(2024, 1, 3))
    with pytest.raises(InvalidIdentifierError):
        source(yahoo).fundamentals([bad], date(2024, 1, 2), date(2024, 1, 3))
    assert yahoo.download_calls == []
    assert yahoo.history_calls == []


INCOME = {
    "TotalRevenue": {"2023-06-30": 81.8e9, "2023-09-30": 89.5e9, "2023-12-31": 119.6e9},
    "NetIncome": {"2023-06-30": 19.9e9, "2023-12-31": 33.9e9},
    "DilutedEPS": {"2023-09-30": 1.46, "2023-12-31": 2.18},
}
BALANCE = {"TotalAssets": {"2023-09-30": 352.6e9, "2023-12-31": 353.5e9}}
ANNUAL_INCOME = {"TotalRevenue": {"2022-09-30": 394.3e9, "2023-09-30": 383.3e9}}


def test_fundamentals_melt_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    yahoo = FakeYahoo(
        monkeypatch,
        statements={
            ("AAPL", "quarterly_income_stmt"): yahoo_statement(INCOME),
            ("AAPL", "quarterly_balance_sheet"): yahoo_statement(BALANCE),
            ("AAPL", "income_stmt"): yahoo_statement(ANNUAL_INCOME),
        },
    )
    rows = source(yahoo).fundamentals(["AAPL"], date(2023, 7, 1), date(2023, 12, 31))

    assert schema_violations(rows, FUNDAMENTALS) == []
    as_text = rows.astype(str).values.tolist()
    # 2023-09-30 ends AAPL's fiscal year (10-K: + 90 days); 2023-12-31 is a 10-Q (+ 45 days).
    assert as_text == [
        ["AAPL", "2023-09-30", "2023-12-29", "diluted_eps", "1.46"],
        ["AAPL", "2023-09-30", "2023-12-29", "total_assets", "352600000000.0"],
        ["AAPL", "2023-09-30", "2023-12-29", "total_revenue", "89500000000.0"],
        ["AAPL", "2023-12-31", "2024-02-14", "diluted_eps", "2.18"],
        ["AAPL", "2023-12-31", "2024-02-14", "net_income", "33900000000.0"],
        ["AAPL", "2023-12-31", "2024-02-14", "total_assets", "353500000000.0"],
        ["AAPL", "2023-12-31", "2024-02-14", "total_revenue", "119600000000.0"],
    ]
    # Net income for 2023-09-30 is NaN in the statement: absent, not zero.
    assert not ((rows["field"] == "net_income") & (rows["period_end"] == "2023-09-30")).any()


def test_fundamentals_without_fiscal_year_ends_take_the_10k_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    yahoo = FakeYahoo(
        monkeypatch,
        statements={
            ("AAPL", "quarterly_income_stmt"): yahoo_statement(INCOME),
            ("AAPL", "quarterly_balance_sheet"): yahoo_statement(BALANCE),
            ("AAPL", "income_stmt"): pd.DataFrame(),
        },
    )
    rows = source(yahoo).fundamentals(["AAPL"], date(2023, 7, 1), date(2023, 12, 31))
    lag = (rows["available_at"] - rows["period_end"]).dt.days
    assert (lag == 90).all()


def test_fundamentals_empty_or_unknown_give_no_rows_and_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    not_found = YFException("Empty fundamentals-timeseries result")
    yahoo = FakeYahoo(
        monkeypatch,
        statements={
            ("SPY", "quarterly_income_stmt"): pd.DataFrame(),
            ("SPY", "quarterly_balance_sheet"): pd.DataFrame(),
            ("ZZZZ", "quarterly_income_stmt"): not_found,
            ("ZZZZ", "quarterly_balance_sheet"): not_found,
            ("AAPL", "quarterly_income_stmt"): yahoo_statement(INCOME),
            ("AAPL", "quarterly_balance_sheet"): not_found,
        },
    )
    with caplog.at_level(logging.WARNING, logger="finpipe.data.sources.yahoo"):
        rows = source(yahoo).fundamentals(
            ["SPY", "ZZZZ", "AAPL"], date(2023, 1, 1), date(2024, 1, 1)
        )

    assert set(rows["ticker"]) == {"AAPL"}
    assert len(rows) == 7
    warned = [r.getMessage() for r in caplog.records if r.name == "finpipe.data.sources.yahoo"]
    assert len(warned) == 2
    assert "SPY" in warned[0]
    assert "ZZZZ" in warned[1]
    assert "Empty fundamentals-timeseries result" in warned[1]


def test_fundamentals_network_failure_is_retried_then_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps = Sleeps()
    yahoo = FakeYahoo(
        monkeypatch,
        statements={
            ("AAPL", "quarterly_income_stmt"): CurlConnectionError(DNS_FAILURE),
            ("AAPL", "quarterly_balance_sheet"): yahoo_statement(BALANCE),
        },
    )
    with pytest.raises(SourceUnavailableError, match="bundled") as raised:
        source(yahoo, sleeps).fundamentals(["AAPL"], date(2023, 1, 1), date(2024, 1, 1))

    assert "download fundamentals for AAPL after 3 attempts" in str(raised.value)
    assert sleeps == [1.0, 2.0]
    assert yfinance.config.debug.hide_exceptions is True


def test_retry_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        YahooSource(client=object(), max_attempts=0)
    with pytest.raises(ValueError, match="backoff_seconds"):
        YahooSource(client=object(), backoff_seconds=-1.0)
