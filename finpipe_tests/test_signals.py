"""Signals from expected return and interval, with configurable thresholds, and the
ranking of the universe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finpipe.forecasting.signals import (
    BUY,
    HOLD,
    SELL,
    STRONG_BUY,
    STRONG_SELL,
    SignalThresholds,
    rank_universe,
    signal_from_interval,
    signal_table,
)

CASES = [
    # prediction, lower, upper, signal (default thresholds: buy_ratio 0.1, min_return 0)
    (0.03, 0.01, 0.05, STRONG_BUY),  # whole interval above zero
    (0.005, -0.015, 0.025, BUY),  # ratio 0.25
    (0.001, -0.019, 0.021, HOLD),  # ratio 0.05 < 0.1
    (0.0, -0.02, 0.02, HOLD),
    (-0.005, -0.025, 0.015, SELL),
    (-0.03, -0.05, -0.01, STRONG_SELL),
    (0.01, 0.01, 0.01, STRONG_BUY),  # zero-width interval above zero
    (np.nan, -0.01, 0.01, HOLD),
    (0.01, np.nan, 0.02, HOLD),
    (0.01, -np.inf, np.inf, HOLD),  # unbounded interval: ratio 0
]


def test_signals_by_hand() -> None:
    p, lo, hi, expected = zip(*CASES, strict=True)
    assert list(signal_from_interval(p, lo, hi)) == list(expected)


def test_thresholds_are_configurable() -> None:
    p, lo, hi = [0.005, 0.03, -0.005], [-0.015, 0.01, -0.025], [0.025, 0.05, 0.015]
    strict = SignalThresholds(buy_ratio=0.5)
    assert list(signal_from_interval(p, lo, hi, strict)) == [HOLD, STRONG_BUY, HOLD]
    costly = SignalThresholds(min_return=0.02)  # must clear 2% round-trip costs
    assert list(signal_from_interval(p, lo, hi, costly)) == [HOLD, BUY, HOLD]
    with pytest.raises(ValueError, match="buy_ratio"):
        SignalThresholds(buy_ratio=-1.0)
    with pytest.raises(ValueError, match="min_return"):
        SignalThresholds(min_return=float("nan"))


def _table() -> pd.DataFrame:
    rows = [
        ("2024-01-02", "AAA", 1, "ensemble", 0.02, -0.02, 0.06, 0.1),
        ("2024-01-02", "BBB", 1, "ensemble", 0.01, 0.005, 0.015, 0.8),
        ("2024-01-02", "CCC", 1, "ensemble", -0.01, -0.03, 0.01, 0.3),
        ("2024-01-02", "DDD", 1, "ensemble", 0.01, -0.03, 0.05, 0.0),
        ("2024-01-02", "EEE", 1, "ensemble", 0.01, -0.03, 0.05, 0.2),
        ("2024-01-02", "AAA", 5, "ensemble", 0.05, -0.05, 0.15, 0.1),
        ("2024-01-02", "AAA", 1, "ridge", 0.9, 0.8, 1.0, 0.9),
        ("2024-01-01", "ZZZ", 1, "ensemble", 0.9, 0.8, 1.0, 0.9),
    ]
    columns = ["date", "ticker", "horizon", "model", "prediction", "lower", "upper", "confidence"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.assign(date=pd.to_datetime(frame["date"]))


def test_rank_universe_by_interval_scaled_return() -> None:
    ranked = rank_universe(_table(), horizon=1)
    # scores: BBB 2.0, AAA 0.5, EEE = DDD 0.25 (EEE more confident), CCC -0.5
    assert ranked["ticker"].tolist() == ["BBB", "AAA", "EEE", "DDD", "CCC"]
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5]
    assert ranked["score"].tolist() == pytest.approx([2.0, 0.5, 0.25, 0.25, -0.5])
    assert ranked["signal"].tolist() == [STRONG_BUY, BUY, BUY, BUY, SELL]
    earlier = rank_universe(_table(), horizon=1, date="2024-01-01")
    assert earlier["ticker"].tolist() == ["ZZZ"]
    with pytest.raises(ValueError, match="horizon 20"):
        rank_universe(_table(), horizon=20)


def test_signal_table_per_ticker_and_horizon() -> None:
    table = signal_table(_table())
    assert len(table) == 7 and set(table["model"]) == {"ensemble"}
    assert str(table["signal"].dtype) == "str"
    assert table.set_index(["ticker", "horizon"]).loc[("AAA", 5), "signal"] == BUY
    with pytest.raises(ValueError, match="no predictions for model 'tft'"):
        signal_table(_table(), model="tft")
