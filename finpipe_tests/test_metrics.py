"""finpipe.core.metrics against hand-worked values and scipy references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import pearsonr, spearmanr

from finpipe.core.metrics import (
    daily_directional_accuracy,
    daily_ic,
    daily_rank_ic,
    directional_accuracy,
    forecast_metrics,
    ic,
    mean_stderr,
    mse,
    rank_ic,
)

D1, D2 = pd.Timestamp("2020-01-02"), pd.Timestamp("2020-01-03")


def test_rank_ic_hand_worked() -> None:
    # Date 1: predictions rank 1,2,3 and targets rank 1,3,2 -> rho = 1 - 6*2/(3*8) = 0.5.
    # Date 2: perfectly reversed ranks -> rho = -1. Mean = -0.25.
    dates = [D1, D1, D1, D2, D2, D2]
    pred = [0.1, 0.2, 0.3, 1.0, 2.0, 3.0]
    target = [-1.0, 5.0, 2.0, 3.0, 2.0, 1.0]
    daily = daily_rank_ic(pred, target, dates)
    assert daily.loc[D1] == pytest.approx(0.5)
    assert daily.loc[D2] == pytest.approx(-1.0)
    assert rank_ic(pred, target, dates) == pytest.approx(-0.25)


def test_ic_hand_worked() -> None:
    # p = (1, 2, 3), y = (2, 4, 9): deviations (-1, 0, 1) and (-3, -1, 4):
    # r = 7 / sqrt(2 * 26).
    dates = [D1] * 3
    assert ic([1, 2, 3], [2, 4, 9], dates) == pytest.approx(7 / np.sqrt(52))


def test_constant_and_single_name_dates_are_dropped() -> None:
    dates = [D1, D1, D1, D2]
    daily = daily_rank_ic([1.0, 1.0, 1.0, 2.0], [0.1, 0.2, 0.3, 0.4], dates)
    assert daily.empty
    assert np.isnan(rank_ic([1.0, 1.0, 1.0, 2.0], [0.1, 0.2, 0.3, 0.4], dates))


def test_nan_rows_are_ignored() -> None:
    dates = [D1] * 4
    assert rank_ic([1, 2, np.nan, 3], [1, 2, 5, 3], dates) == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(-5, 5), st.integers(-5, 5)),
        min_size=2,
        max_size=60,
    )
)
def test_daily_ics_match_scipy(rows: list[tuple[int, int, int]]) -> None:
    """Per date, with ties, rank IC equals scipy's spearmanr and IC equals pearsonr."""
    frame = pd.DataFrame(rows, columns=["d", "p", "y"]).astype({"p": float, "y": float})
    dates = pd.Timestamp("2021-01-01") + pd.to_timedelta(frame["d"], unit="D")
    ours_rank = daily_rank_ic(frame["p"], frame["y"], dates)
    ours = daily_ic(frame["p"], frame["y"], dates)
    for day, part in frame.groupby(dates):
        constant = part["p"].nunique() < 2 or part["y"].nunique() < 2
        if constant:
            assert day not in ours_rank.index
            continue
        assert ours_rank.loc[day] == pytest.approx(spearmanr(part["p"], part["y"])[0], abs=1e-9)
        assert ours.loc[day] == pytest.approx(pearsonr(part["p"], part["y"])[0], abs=1e-9)


def test_directional_accuracy_hand_worked() -> None:
    pred = [0.5, -0.2, 0.1, 0.0, 0.3, -1.0]
    target = [0.1, 0.3, 0.2, 0.4, 0.0, -0.5]
    # Rows 4 (no call) and 5 (no move) are left out; hits at rows 1, 3, 6 of 4 -> 0.75.
    assert directional_accuracy(pred, target) == pytest.approx(0.75)
    daily = daily_directional_accuracy(pred, target, [D1, D1, D1, D2, D2, D2])
    assert daily.loc[D1] == pytest.approx(2 / 3)
    assert daily.loc[D2] == pytest.approx(1.0)


def test_mse_hand_worked() -> None:
    assert mse([1.0, 2.0, np.nan], [0.0, 4.0, 1.0]) == pytest.approx(2.5)


def test_mean_stderr_plain_and_newey_west() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean, se = mean_stderr(x)
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(np.std(x, ddof=1) / 2)
    # One Bartlett lag by hand: d = (-1.5, -.5, .5, 1.5), gamma0 = 5/4,
    # gamma1 = (.75 - .25 + .75)/4 = 0.3125; var = (1.25 + 2 * 0.5 * 0.3125) * 4/3 = 2.0833..
    _, se_nw = mean_stderr(x, lags=1)
    assert se_nw == pytest.approx(np.sqrt(2.0833333333 / 4))
    # Hansen-Hodrick gives the lag full weight: var = (1.25 + 2 * 0.3125) * 4/3 = 2.5.
    _, se_hh = mean_stderr(x, lags=1, kernel="uniform")
    assert se_hh == pytest.approx(np.sqrt(2.5 / 4))


def test_overlapping_label_errors_are_calibrated() -> None:
    """Means of 5-day overlapping sums of noise: Hansen-Hodrick z-scores have unit spread,
    Newey-West with the same lags is too narrow (z spread well above 1)."""
    rng = np.random.default_rng(0)
    h, n = 5, 600
    z_hh, z_nw = [], []
    for _ in range(300):
        x = np.convolve(rng.standard_normal(n + h - 1), np.ones(h), "valid")
        mean, se = mean_stderr(x, h - 1, "uniform")
        z_hh.append(mean / se)
        mean, se = mean_stderr(x, h - 1, "bartlett")
        z_nw.append(mean / se)
    assert 0.9 < np.std(z_hh) < 1.12
    assert np.std(z_nw) > 1.15


def test_forecast_metrics_table() -> None:
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2020-01-01", periods=50)
    n = 10
    frame = pd.DataFrame(
        {
            "date": np.repeat(days, n * 2),
            "horizon": np.tile(np.repeat([1, 5], n), len(days)),
            "fwd_return": rng.standard_normal(len(days) * n * 2),
        }
    )
    frame["prediction"] = frame["fwd_return"] + rng.standard_normal(len(frame))
    table = forecast_metrics(frame)
    assert list(table.index) == [1, 5]
    assert {"rank_ic", "rank_ic_se", "ic", "directional_accuracy", "mse"} <= set(table.columns)
    part = frame[frame["horizon"] == 1]
    assert table.loc[1, "rank_ic"] == pytest.approx(
        rank_ic(part["prediction"], part["fwd_return"], part["date"])
    )
    assert table.loc[1, "n_dates"] == 50
    assert 0.6 < table.loc[1, "directional_accuracy"] < 0.9
