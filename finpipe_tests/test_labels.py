"""Forward-return labels: hand-worked values, label_end, and absent rows for unknown futures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.features.labels import forward_returns


def _prices() -> pd.DataFrame:
    dates = pd.bdate_range("2021-03-01", periods=6)
    return pd.DataFrame(
        {
            "date": np.tile(dates, 2),
            "ticker": np.repeat(["A", "B"], 6),
            "adj_close": [100, 101, 103, 102, 105, 110, 10, 11, 12, 13, 14, 15.0],
        }
    )


def test_hand_worked_labels_with_execution_lag() -> None:
    prices = _prices()
    dates = pd.bdate_range("2021-03-01", periods=6)
    labels = forward_returns(prices, horizons=(1, 2), execution_lag=1)
    assert list(labels.columns) == ["date", "ticker", "horizon", "fwd_return", "label_end"]
    assert labels["horizon"].dtype == np.int64
    assert labels["fwd_return"].dtype == np.float64
    assert labels["label_end"].dtype == "datetime64[ns]"
    a = labels.loc[labels["ticker"] == "A"].set_index(["date", "horizon"])
    # Signal at the close of day 0, traded at day 1's close, held one day: ln(103 / 101).
    assert a.loc[(dates[0], 1), "fwd_return"] == pytest.approx(np.log(103 / 101))
    assert a.loc[(dates[0], 1), "label_end"] == dates[2]
    assert a.loc[(dates[0], 2), "fwd_return"] == pytest.approx(np.log(102 / 101))
    assert a.loc[(dates[0], 2), "label_end"] == dates[3]
    # The last dates have no known future: absent, not NaN.
    assert (dates[4], 1) not in a.index and (dates[3], 2) not in a.index
    assert labels["fwd_return"].notna().all()
    assert len(labels) == 2 * (4 + 3)
    assert labels[["date", "ticker", "horizon"]].equals(
        labels[["date", "ticker", "horizon"]].sort_values(["date", "ticker", "horizon"])
    )


def test_zero_lag_and_missing_prices() -> None:
    prices = _prices().drop(index=3)  # A has no close on day 3
    labels = forward_returns(prices, horizons=(1,), execution_lag=0)
    a = labels.loc[labels["ticker"] == "A"].set_index("date")
    dates = pd.bdate_range("2021-03-01", periods=6)
    assert a.loc[dates[0], "fwd_return"] == pytest.approx(np.log(101 / 100))
    assert a.loc[dates[0], "label_end"] == dates[1]
    assert dates[2] not in a.index  # its exit close is missing
    assert dates[3] not in a.index  # no row for A that day


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="horizons"):
        forward_returns(_prices(), horizons=(0,))
    with pytest.raises(ValueError, match="execution_lag"):
        forward_returns(_prices(), execution_lag=-1)
