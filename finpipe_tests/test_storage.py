import subprocess
import sys
import textwrap

import pandas as pd
import pandas.testing as pdt
import pytest

from finpipe.core import storage
from finpipe.core.contracts import PRICES, ContractError, conform, schema_violations
from finpipe.core.storage import ParquetStore


def frame(n: int = 5, offset: float = 0.0) -> pd.DataFrame:
    dates = pd.bdate_range("2020-01-01", periods=n)
    return conform(
        pd.DataFrame(
            {"date": dates, "ticker": "AAPL", "adj_close": [offset + i for i in range(n)]}
        ),
        PRICES,
    )


def test_round_trip_and_metadata(tmp_path):
    store = ParquetStore(str(tmp_path))
    store.write(frame(), "raw", "prices", "AAPL", metadata={"fetched_from": "2020-01-01"})
    pdt.assert_frame_equal(store.read("raw", "prices", "AAPL"), frame())
    assert store.read_metadata("raw", "prices", "AAPL") == {"fetched_from": "2020-01-01"}
    assert store.names("raw", "prices") == ["AAPL"]
    assert store.read("raw", "prices", "MSFT") is None


def test_fsspec_url_root():
    store = ParquetStore("memory://finpipe-test")
    store.write(frame(), "raw", "prices", "AAPL")
    pdt.assert_frame_equal(store.read_all("raw", "prices"), frame())


def test_failed_rename_keeps_previous_version_and_leaves_no_temp(tmp_path, monkeypatch):
    store = ParquetStore(str(tmp_path))
    store.write(frame(), "t")

    def broken_mv(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store.fs, "mv", broken_mv)
    with pytest.raises(OSError, match="disk full"):
        store.write(frame(offset=100.0), "t")
    pdt.assert_frame_equal(store.read("t"), frame())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_a_write_that_fails_midway_keeps_the_previous_version(tmp_path, monkeypatch):
    """Tables stream to their temporary file; an error halfway leaves no trace."""
    store = ParquetStore(str(tmp_path))
    store.write(frame(), "t")

    def failing_write(table, where, **kwargs):
        where.write(b"PAR1 half a table")
        raise OSError("no space left on device")

    monkeypatch.setattr(storage.pq, "write_table", failing_write)
    with pytest.raises(OSError, match="no space"):
        store.write(frame(offset=100.0), "t")
    pdt.assert_frame_equal(store.read("t"), frame())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_process_killed_mid_write_leaves_previous_data_intact(tmp_path):
    """A real crash: the writing process dies after writing half of the new file."""
    store = ParquetStore(str(tmp_path))
    store.write(frame(), "t")
    script = textwrap.dedent(
        f"""
        import os
        import fsspec.implementations.local as local
        from finpipe_tests.test_storage import frame
        from finpipe.core.storage import ParquetStore

        real_write = local.LocalFileOpener.write
        def dying_write(self, data):
            real_write(self, data[: len(data) // 2])
            self.flush()
            os._exit(9)
        local.LocalFileOpener.write = dying_write
        ParquetStore({str(tmp_path)!r}).write(frame(n=500, offset=100.0), "t")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    pdt.assert_frame_equal(store.read("t"), frame())
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "t.parquet"]
    # The torn file is a hidden temporary beside the table, which readers skip.
    assert len(leftovers) == 1 and leftovers[0].startswith(".t.parquet.")
    assert leftovers[0].endswith(".tmp") and store.names() == ["t"]


def test_conform_names_missing_and_unknown_columns():
    with pytest.raises(ContractError, match=r"missing columns \['adj_close'\].*\['px'\]"):
        conform(pd.DataFrame({"date": [], "ticker": [], "px": []}), PRICES)


def test_schema_violations_report_dtypes():
    bad = frame().assign(adj_close=lambda f: f["adj_close"].astype(str))
    assert schema_violations(bad, PRICES) == ["column 'adj_close' has dtype str, expected float64"]
    assert schema_violations(frame(), PRICES) == []
