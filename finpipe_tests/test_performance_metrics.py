"""Performance metrics against hand-worked values, scipy, the published PSR/DSR formulas and
(when installed) empyrical as an independent implementation."""

from __future__ import annotations

import math
from statistics import NormalDist

import empyrical
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from finpipe.core.metrics import (
    accuracy_ci,
    annualized_return,
    annualized_volatility,
    bootstrap_ci,
    bootstrap_indices,
    calmar_ratio,
    deflated_sharpe_ratios,
    drawdown_series,
    dsr_from_moments,
    expected_max_sharpe,
    hit_rate,
    ic_summary,
    interval_coverage,
    mae,
    max_drawdown,
    mean_t_stat,
    performance_summary,
    probabilistic_sharpe_ratio,
    profit_factor,
    psr_from_moments,
    rmse,
    sharpe_ci,
    sharpe_moments,
    sharpe_ratio,
    sortino_ratio,
)

R = [0.10, -0.05, 0.02, -0.10, 0.04]
PHI = NormalDist().cdf


def test_return_metrics_hand_worked() -> None:
    # mean 0.002; squared deviations sum to 0.02448, so the sample sd is sqrt(0.02448 / 4).
    sd = math.sqrt(0.02448 / 4)
    assert sharpe_ratio(R) == pytest.approx(0.002 / sd * math.sqrt(252))
    assert annualized_volatility(R) == pytest.approx(sd * math.sqrt(252))
    growth = 1.10 * 0.95 * 1.02 * 0.90 * 1.04
    assert annualized_return(R) == pytest.approx(growth ** (252 / 5) - 1)
    # Downside deviation: sqrt((0.05^2 + 0.10^2) / 5) = 0.05.
    assert sortino_ratio(R) == pytest.approx(0.002 / 0.05 * math.sqrt(252))
    # Wealth 1.1, 1.045, 1.0659, 0.95931, ...: the worst fall is from 1.1 to 0.95931.
    assert max_drawdown(R) == pytest.approx(0.95931 / 1.1 - 1)
    assert calmar_ratio(R) == pytest.approx(annualized_return(R) / (1 - 0.95931 / 1.1))
    assert profit_factor(R) == pytest.approx(0.16 / 0.15)
    assert hit_rate([0.01, 0.0, -0.02, 0.03]) == pytest.approx(2 / 3)
    dd = drawdown_series(pd.Series(R))
    assert dd.min() == pytest.approx(max_drawdown(R)) and dd.iloc[0] == 0.0
    # A loss on the first day is a drawdown from the starting wealth of 1.
    assert max_drawdown([-0.1, 0.05]) == pytest.approx(-0.1)
    assert math.isnan(calmar_ratio([0.01, 0.02]))


def test_forecast_error_metrics_hand_worked() -> None:
    p, y = [0.01, -0.02, 0.03, np.nan], [0.02, -0.02, 0.0, 0.1]
    assert mae(p, y) == pytest.approx((0.01 + 0.0 + 0.03) / 3)
    assert rmse(p, y) == pytest.approx(math.sqrt((0.01**2 + 0.03**2) / 3))
    assert interval_coverage([1, 2, 3, np.nan], [0, 2.5, 2, 0], [1, 3, 4, 1]) == pytest.approx(
        2 / 3
    )


def test_ic_summary_and_t_stats_against_scipy() -> None:
    x = np.random.default_rng(0).normal(0.02, 0.1, 300)
    summary = ic_summary(x)
    assert summary["t_stat"] == pytest.approx(stats.ttest_1samp(x, 0.0).statistic)
    assert summary["icir"] == pytest.approx(x.mean() / x.std(ddof=1))
    assert summary["n"] == 300
    t, p = mean_t_stat(x)
    assert t == pytest.approx(summary["t_stat"])
    assert p == pytest.approx(2 * (1 - PHI(abs(t))))
    # Overlapping labels: the Hansen-Hodrick error of an MA(4) series is wider.
    overlapping = np.convolve(np.random.default_rng(1).normal(size=2000), np.ones(5), "valid")
    assert ic_summary(overlapping, lags=4)["se"] > 1.8 * ic_summary(overlapping)["se"]


def test_against_empyrical() -> None:
    rng = np.random.default_rng(7)
    for r in (
        pd.Series(rng.standard_t(4, 1000) * 0.01 + 3e-4),
        pd.Series(np.r_[-0.08, rng.normal(0.001, 0.01, 300)]),
    ):
        assert sharpe_ratio(r) == pytest.approx(empyrical.sharpe_ratio(r), rel=1e-10)
        assert sortino_ratio(r) == pytest.approx(empyrical.sortino_ratio(r), rel=1e-10)
        assert max_drawdown(r) == pytest.approx(empyrical.max_drawdown(r), rel=1e-10)
        assert annualized_return(r) == pytest.approx(empyrical.annual_return(r), rel=1e-10)
        assert annualized_volatility(r) == pytest.approx(empyrical.annual_volatility(r), rel=1e-10)
        assert calmar_ratio(r) == pytest.approx(empyrical.calmar_ratio(r), rel=1e-10)


def test_psr_from_its_formula() -> None:
    # PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)).
    z = 0.1 * math.sqrt(252) / math.sqrt(1 + 0.5 * 0.01)  # normal: g3 = 0, g4 = 3
    assert psr_from_moments(0.1, 253) == pytest.approx(PHI(z))
    z = (0.1 - 0.05) * math.sqrt(99) / math.sqrt(1 + 0.5 * 0.1 + 9 / 4 * 0.01)
    assert psr_from_moments(0.1, 100, skew=-0.5, kurtosis=10, benchmark_sharpe=0.05) == (
        pytest.approx(PHI(z))
    )
    x = np.random.default_rng(3).normal(0.001, 0.01, 500)
    sr, n, skew, kurt = sharpe_moments(x)
    assert skew == pytest.approx(stats.skew(x)) and kurt == pytest.approx(stats.kurtosis(x) + 3)
    assert probabilistic_sharpe_ratio(x) == pytest.approx(psr_from_moments(sr, n, skew, kurt))


def test_dsr_worked_example_of_bailey_and_lopez_de_prado() -> None:
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", numerical example:
    # N = 100 trials with V[SR] = 1/2 (annualised), the best annualised SR = 2.5 over
    # T = 1250 daily observations (250 a year), skewness -3, kurtosis 10.
    # Published: SR0 = 0.1132 per day (about 1.79 annualised) and DSR = 0.9004.
    variance = 0.5 / 250
    sr0 = expected_max_sharpe(100, variance)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = dsr_from_moments(2.5 / math.sqrt(250), 1250, -3.0, 10.0, 100, variance)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    # By hand from the formula: Phi((0.1581 - 0.1132) sqrt(1249) / sqrt(1 + 3 * 0.1581 +
    # 9 / 4 * 0.1581^2)).
    sr = 2.5 / math.sqrt(250)
    z = (sr - sr0) * math.sqrt(1249) / math.sqrt(1 + 3 * sr + 9 / 4 * sr**2)
    assert dsr == pytest.approx(PHI(z))


def test_expected_max_sharpe_against_simulation() -> None:
    rng = np.random.default_rng(11)
    simulated = rng.normal(0.0, 0.3, (4000, 50)).max(axis=1).mean()
    assert expected_max_sharpe(50, 0.09) == pytest.approx(simulated, rel=0.03)
    assert expected_max_sharpe(1, 0.09) == 0.0


def test_deflated_sharpe_ratios_deflate_for_every_column() -> None:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(0.0005, 0.01, (750, 4)), columns=list("abcd"))
    dsr = deflated_sharpe_ratios(frame)
    moments = {c: sharpe_moments(frame[c]) for c in frame}
    variance = np.var([m[0] for m in moments.values()], ddof=1)
    for name, (sr, n, skew, kurt) in moments.items():
        assert dsr[name] == pytest.approx(dsr_from_moments(sr, n, skew, kurt, 4, variance))
        assert dsr[name] < probabilistic_sharpe_ratio(frame[name])
    assert (deflated_sharpe_ratios(frame, n_trials=1000) < dsr).all()


def test_psr_is_calibrated_under_the_null() -> None:
    rng = np.random.default_rng(2)
    psr = np.array([probabilistic_sharpe_ratio(x) for x in rng.normal(0, 0.01, (2000, 250))])
    assert abs(psr.mean() - 0.5) < 0.02
    assert abs((psr > 0.95).mean() - 0.05) < 0.015


def test_iid_bootstrap_matches_scipy() -> None:
    x = np.random.default_rng(4).exponential(1.0, 400)
    _, lo, hi = bootstrap_ci(x, lambda s: s.mean(axis=-1), n_boot=4000, seed=1)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=4000, method="percentile", random_state=1
    ).confidence_interval
    assert lo == pytest.approx(ref.low, rel=0.02) and hi == pytest.approx(ref.high, rel=0.02)


def test_stationary_bootstrap_blocks() -> None:
    idx = bootstrap_indices(5000, 20, np.random.default_rng(0), block=10.0)
    continues = np.diff(idx, axis=1) == 1
    assert 1.0 / (1.0 - continues.mean()) == pytest.approx(10.0, rel=0.1)  # mean block length
    assert idx.min() >= 0 and idx.max() < 5000


def test_sharpe_and_accuracy_intervals_match_their_standard_errors() -> None:
    rng = np.random.default_rng(9)
    r = rng.normal(0.0008, 0.01, 1500)
    sr, lo, hi = sharpe_ci(r, n_boot=2000, block=5.0)
    assert sr == pytest.approx(sharpe_ratio(r))
    daily = sr / math.sqrt(252)
    width = 2 * 1.96 * math.sqrt((1 + daily**2 / 2) / 1500) * math.sqrt(252)
    assert hi - lo == pytest.approx(width, rel=0.15)
    assert lo < sr < hi
    hits = (rng.random(2000) < 0.53).astype(float)
    mean, lo, hi = accuracy_ci(hits, n_boot=2000)
    assert mean == pytest.approx(hits.mean())
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.53 * 0.47 / 2000), rel=0.1)


def test_performance_summary_is_consistent() -> None:
    r = pd.Series(np.random.default_rng(1).normal(0.0005, 0.01, 500))
    turnover = pd.Series(0.5, index=r.index)
    summary = performance_summary(r, turnover)
    assert summary["sharpe"] == sharpe_ratio(r)
    assert summary["max_drawdown"] == max_drawdown(r)
    assert summary["psr"] == probabilistic_sharpe_ratio(r)
    assert summary["turnover"] == 0.5 and summary["n_days"] == 500
    assert summary["mean_t_stat"] == pytest.approx(
        sharpe_ratio(r) / math.sqrt(252) * math.sqrt(500)
    )
