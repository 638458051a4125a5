"""Uncertainty: the conformal quantile rule by hand, out-of-sample coverage of split-conformal
intervals on data with known noise, interval quality metrics, member dispersion, Monte Carlo
dropout and the confidence formula."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from finpipe.forecasting.uncertainty import (
    ConformalError,
    SplitConformal,
    confidence_from_width,
    conformal_rank,
    interval_coverage,
    interval_report,
    interval_scale,
    member_dispersion,
    normalised_width,
    recent_volatility,
)
from finpipe.models import PanelData, create_model
from finpipe_tests.synthetic_model_data import model_frames

torch.set_num_threads(1)

SCORES = [0.5, 0.1, 0.4, 0.2, 0.3, 0.9, 0.7, 0.8, 0.6]


@pytest.mark.parametrize(
    ("level", "rank", "q"),
    [(0.7, 7, 0.7), (0.8, 8, 0.8), (0.9, 9, 0.9), (0.95, 10, math.inf)],
)
def test_conformal_quantile_by_hand(level: float, rank: int, q: float) -> None:
    # n = 9 scores: rank = ceil((9 + 1) * level); (10 * 0.7 is 7.000000000000001 in floats).
    assert conformal_rank(9, level) == rank
    frame = pd.DataFrame(
        {"model": "m", "horizon": 1, "prediction": 1.0, "fwd_return": 1.0 + np.array(SCORES)}
    )
    conformal = SplitConformal(levels=(level,), scale_column=None).fit(frame)
    out = conformal.interval(frame.head(1), level)
    assert out["lower"].iloc[0] == pytest.approx(1.0 - q)
    assert out["upper"].iloc[0] == pytest.approx(1.0 + q)
    assert out["interval_level"].iloc[0] == level


def _noisy_panel(noise: str, n_dates: int, n_tickers: int, seed: int) -> pd.DataFrame:
    """y = f(x) + sigma_ticker * noise: Gaussian or unit-variance Student-t with 3 dof; the
    'model' predicts 0.8 f(x) (a mis-scaled fit), the scale is the known sigma."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(-1.0, 1.0, n_tickers)) * 0.01
    x = rng.standard_normal((n_dates, n_tickers))
    signal = 0.005 * np.tanh(x)
    if noise == "gaussian":
        eps = rng.standard_normal((n_dates, n_tickers))
    else:
        eps = rng.standard_t(3, (n_dates, n_tickers)) / math.sqrt(3.0)
    y = signal + sigma * eps
    return pd.DataFrame(
        {
            "date": np.repeat(pd.bdate_range("2020-01-01", periods=n_dates).values, n_tickers),
            "model": "m",
            "horizon": 1,
            "prediction": (0.8 * signal).ravel(),
            "fwd_return": y.ravel(),
            "scale": np.tile(sigma, n_dates),
        }
    )


@pytest.mark.parametrize("noise", ["gaussian", "student_t"])
def test_split_conformal_covers_nominal_level_out_of_sample(noise: str) -> None:
    # Calibrate on the first 100 dates (5,000 rows), evaluate on the next 400 (20,000): the
    # sampling error of the coverage is ~0.6 pp, so 3 pp is a strict bound.
    data = _noisy_panel(noise, n_dates=500, n_tickers=50, seed=1 if noise == "gaussian" else 2)
    dates = data["date"].unique()
    calibration, later = data[data["date"] < dates[100]], data[data["date"] >= dates[100]]
    for scale_column in ("scale", None):
        conformal = SplitConformal(levels=(0.8, 0.9), scale_column=scale_column).fit(calibration)
        widths = {}
        for level in (0.8, 0.9):
            out = conformal.interval(later, level)
            report = interval_report(out["fwd_return"], out["lower"], out["upper"], level)
            assert abs(report["picp"] - level) < 0.03, (noise, scale_column, level, report)
            widths[level] = report["mean_width"]
        assert widths[0.9] > widths[0.8]
    # Normalising by the scale also holds the level within volatility buckets, where plain
    # intervals over-cover quiet tickers and under-cover volatile ones.
    quiet = later["scale"] <= later["scale"].quantile(1 / 3)
    loud = later["scale"] >= later["scale"].quantile(2 / 3)
    for scale_column in ("scale", None):
        conformal = SplitConformal(levels=(0.8,), scale_column=scale_column).fit(calibration)
        out = conformal.interval(later, 0.8)
        cover = {
            name: interval_coverage(rows["fwd_return"], rows["lower"], rows["upper"])
            for name, rows in (("quiet", out[quiet]), ("loud", out[loud]))
        }
        if scale_column == "scale":
            assert abs(cover["quiet"] - 0.8) < 0.03 and abs(cover["loud"] - 0.8) < 0.03, cover
        else:
            assert cover["quiet"] > 0.9 and cover["loud"] < 0.7, cover


def test_split_conformal_state_and_errors() -> None:
    data = _noisy_panel("gaussian", n_dates=50, n_tickers=10, seed=3)
    conformal = SplitConformal().fit(data)
    again = SplitConformal.from_dict(conformal.to_dict())
    pd.testing.assert_frame_equal(conformal.interval(data, 0.9), again.interval(data, 0.9))
    with pytest.raises(ConformalError, match="not calibrated"):
        conformal.interval(data, 0.5)
    with pytest.raises(ConformalError, match="no calibration for"):
        conformal.interval(data.assign(model="other"), 0.8)
    with pytest.raises(ConformalError, match="lacks columns"):
        SplitConformal().fit(data.drop(columns="scale"))
    with pytest.raises(ConformalError, match="not fitted"):
        SplitConformal().interval(data, 0.8)


def test_interval_quality_by_hand() -> None:
    y = [0.0, 1.0, 2.0, 3.0]
    lower, upper = [-1.0, 1.5, 1.0, 3.0], [1.0, 2.0, 3.0, 4.0]
    assert interval_coverage(y, lower, upper) == 0.75
    assert normalised_width(lower, upper, y) == pytest.approx(1.375 / 3.0)
    report = interval_report(y, lower, upper, 0.8)
    assert report["picp"] == 0.75 and report["coverage_error"] == pytest.approx(-0.05)
    assert report["mean_width"] == 1.375 and report["n"] == 4


def test_confidence_formula() -> None:
    no_skill = 2 * 1.2815515655446004 * 0.02  # 80% Gaussian interval of 2% volatility
    widths = [no_skill, 0.0, no_skill / 2, 2 * no_skill, math.inf, 0.01, 0.01]
    vols = [0.02, 0.02, 0.02, 0.02, 0.02, 0.0, math.nan]
    confidence = confidence_from_width(widths, vols, 0.8)
    np.testing.assert_allclose(confidence, [0.5, 1.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.0], atol=1e-12)
    # The same width is a more confident statement at a higher level.
    assert confidence_from_width(0.04, 0.02, 0.9) > confidence_from_width(0.04, 0.02, 0.8)


def _points(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.Timestamp("2024-01-02"),
            "ticker": "AAA",
            "horizon": 5,
            "model": list(values),
            "prediction": list(values.values()),
        }
    )


def test_member_dispersion_adds_monte_carlo_variance() -> None:
    points = _points({"a": 1.0, "b": 3.0})  # variance between members: 1
    samples = pd.DataFrame(
        {
            "date": pd.Timestamp("2024-01-02"),
            "ticker": "AAA",
            "horizon": 5,
            "model": "a",
            "sample": [0, 1],
            "prediction": [0.0, 2.0],  # within-member variance 1; b has none: mean 0.5
        }
    )
    assert member_dispersion(points)["dispersion"].iloc[0] == pytest.approx(1.0)
    out = member_dispersion(points, samples)
    assert out["dispersion"].iloc[0] == pytest.approx(math.sqrt(1.5))
    assert out["n_models"].iloc[0] == 2


def test_interval_scale_and_recent_volatility() -> None:
    points = pd.concat(
        [_points({"a": 1.0, "b": 3.0}), _points({"a": 0.0, "b": 0.0}).assign(ticker="NEW")]
    )
    vol = pd.DataFrame(
        {"date": pd.Timestamp("2024-01-02"), "ticker": ["AAA", "BBB"], "recent_vol": [0.3, 0.5]}
    )
    out = interval_scale(points, vol).set_index("ticker")
    assert out.loc["AAA", "horizon_vol"] == pytest.approx(0.3 * math.sqrt(5))
    assert out.loc["AAA", "scale"] == pytest.approx(math.hypot(0.3 * math.sqrt(5), 1.0))
    assert out.loc["NEW", "scale"] == pytest.approx(0.4 * math.sqrt(5))  # median of the date

    prices = pd.DataFrame(
        {
            "date": pd.bdate_range("2024-01-01", periods=30),
            "ticker": "AAA",
            "adj_close": np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 30))),
        }
    )
    rv = recent_volatility(prices, window=20, min_periods=10)
    returns = np.diff(np.log(prices["adj_close"].to_numpy()))
    assert rv["recent_vol"].iloc[-1] == pytest.approx(np.std(returns[-20:], ddof=1))
    assert rv["recent_vol"].iloc[:10].isna().all() and rv["recent_vol"].iloc[10:].notna().all()


def test_mc_dropout_on_a_pytorch_member() -> None:
    features, labels = model_frames(n_tickers=5, n_days=160, seed=4, horizons=(1, 5))
    panel = PanelData.from_frames(features, labels)
    model = create_model(
        "lstm",
        hidden_size=8,
        window=5,
        dropout=0.3,
        max_epochs=1,
        samples_per_epoch=256,
        valid_samples=128,
    ).fit(panel)
    latest = panel.select(start=panel.dates[-1])
    samples = model.predict_samples(latest, n=16, seed=0)
    spread = samples.groupby(["date", "ticker", "horizon"])["prediction"].std(ddof=0)
    assert len(spread) == 5 * 2 and (spread > 0).all()
    points = model.predict(latest).assign(model="lstm")
    with_mc = member_dispersion(points, samples.assign(model="lstm"))
    merged = with_mc.merge(spread.rename("mc_std").reset_index(), on=["date", "ticker", "horizon"])
    # One member: its dispersion is exactly its Monte Carlo spread.
    np.testing.assert_allclose(merged["dispersion"], merged["mc_std"], rtol=1e-9)
