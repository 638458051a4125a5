from datetime import date

import pandas as pd
import pandas.testing as pdt

from finpipe.core.contracts import PRICES
from finpipe.core.storage import ParquetStore
from finpipe.data.ingest import read_table, refresh_dataset
from finpipe.data.sources.synthetic import SyntheticConfig, SyntheticSource

TODAY = pd.Timestamp("2030-01-01")
CONFIG = SyntheticConfig(n_tickers=3, n_days=120, seed=3)


class RecordingSource:
    """Wraps a price source and records every (tickers, start, end) it is asked for."""

    def __init__(self, inner, restate_after: date | None = None):
        self.inner, self.calls, self.restate_after = inner, [], restate_after

    def prices(self, tickers, start, end):
        self.calls.append((tuple(tickers), start, end))
        out = self.inner.prices(tickers, start, end)
        if self.restate_after is not None:
            out = out.assign(adj_close=out["adj_close"] * 0.5)
        return out


def refresh(store, source, end, start=date(2005, 1, 3)):
    return refresh_dataset(store, "prices", source.prices, CONFIG.tickers, start, end, TODAY)


def files(store):
    return {
        n: open(store.path("raw", "prices", n), "rb").read() for n in store.names("raw", "prices")
    }


def test_second_run_fetches_nothing_and_changes_no_byte(tmp_path):
    store = ParquetStore(str(tmp_path))
    source = RecordingSource(SyntheticSource(CONFIG))
    first = refresh(store, source, date(2005, 4, 29))
    assert first.actions() == {"created": 3}
    before = files(store)
    second = refresh(store, source, date(2005, 4, 29))
    assert second.actions() == {"unchanged": 3} and second.total("rows_added") == 0
    assert files(store) == before
    stored = read_table(store, "prices", PRICES)
    assert not stored.duplicated(["ticker", "date"]).any()


def test_extending_the_end_date_fetches_only_new_dates(tmp_path):
    store = ParquetStore(str(tmp_path))
    source = RecordingSource(SyntheticSource(CONFIG))
    refresh(store, source, date(2005, 4, 29))
    source.calls.clear()
    summary = refresh(store, source, date(2005, 6, 17))
    # Each ticker is asked from its last stored date (the overlap that detects restatements).
    assert {call[1] for call in source.calls} == {date(2005, 4, 29)}
    assert summary.actions() == {"appended": 3}
    assert summary.total("rows_added") == 3 * 35  # May 2 .. Jun 17 = 35 business days
    full = ParquetStore(str(tmp_path / "full"))
    refresh(full, SyntheticSource(CONFIG), date(2005, 6, 17))
    pdt.assert_frame_equal(read_table(store, "prices", PRICES), read_table(full, "prices", PRICES))


def test_restated_history_is_refetched_whole(tmp_path):
    store = ParquetStore(str(tmp_path))
    refresh(store, SyntheticSource(CONFIG), date(2005, 4, 29))
    restating = RecordingSource(SyntheticSource(CONFIG), restate_after=date(2005, 4, 29))
    summary = refresh(store, restating, date(2005, 5, 31))
    assert summary.actions() == {"rewritten": 3}
    assert any(call[1] == date(2005, 1, 3) for call in restating.calls)
    stored = read_table(store, "prices", PRICES)
    expected = SyntheticSource(CONFIG).prices(CONFIG.tickers, date(2005, 1, 3), date(2005, 5, 31))
    pdt.assert_series_equal(stored["adj_close"], expected["adj_close"] * 0.5)


def test_earlier_start_backfills_once(tmp_path):
    store = ParquetStore(str(tmp_path))
    refresh(store, SyntheticSource(CONFIG), date(2005, 4, 29), start=date(2005, 3, 1))
    summary = refresh(store, SyntheticSource(CONFIG), date(2005, 4, 29))
    assert summary.actions() == {"rewritten": 3}
    assert read_table(store, "prices", PRICES)["date"].min() == pd.Timestamp("2005-01-03")
    assert refresh(store, SyntheticSource(CONFIG), date(2005, 4, 29)).actions() == {"unchanged": 3}


class BadRowSource(RecordingSource):
    def prices(self, tickers, start, end):
        out = super().prices(tickers, start, end)
        planted = out["date"] == pd.Timestamp("2005-01-05")
        out.loc[planted, "high"] = out.loc[planted, "low"] * 0.5
        return out


def test_bad_rows_are_quarantined_once_with_their_rule(tmp_path):
    store = ParquetStore(str(tmp_path))
    source = BadRowSource(SyntheticSource(CONFIG))
    summary = refresh(store, source, date(2005, 4, 29))
    assert summary.total("rows_quarantined") == 3
    held = store.read("quarantine", "prices")
    assert held["rule"].tolist() == ["ohlc_inconsistent"] * 3
    assert "high < max(open, close)" in held["reason"].iloc[0]
    stored = read_table(store, "prices", PRICES)
    assert len(stored) == 3 * (len(pd.bdate_range("2005-01-03", "2005-04-29")) - 1)
    # Refetching the same bad row (S0000 cut back to its first day) quarantines it once only.
    store.write(store.read("raw", "prices", "S0000").iloc[:1], "raw", "prices", "S0000")
    again = refresh(store, source, date(2005, 4, 29))
    assert again.total("rows_quarantined") == 0
    assert len(store.read("quarantine", "prices")) == 3
