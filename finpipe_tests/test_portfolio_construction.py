"""Construction methods against hand-worked references and an independent linear program,
the constraints on every output, near-singular risk models, and no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from finpipe.core.prices import daily_returns
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.features.garch import fit_garch
from finpipe.portfolio.construction import (
    METHODS,
    Constraints,
    ConstructionError,
    ConstructionSettings,
    book_size,
    construct,
    limit_turnover,
    weight_problems,
)
from finpipe.portfolio.risk_model import (
    RiskModel,
    RiskModelConfig,
    RiskModelError,
    estimate_risk_model,
    garch_volatility,
)
from finpipe.portfolio.targets import PortfolioSpec, build_targets

EVERYTHING = ConstructionSettings(top_k=1.0, select=1.0)
LOOSE = Constraints(max_weight=1.0)


def scenarios_with(cov: np.ndarray, n: int = 500, seed: int = 0) -> np.ndarray:
    """Scenarios whose sample covariance is exactly `cov` (whitened, then coloured)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(cov)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False, ddof=1)).T)
    return z @ np.linalg.cholesky(cov).T


def model(cov: np.ndarray, scenarios: np.ndarray | None = None) -> RiskModel:
    tickers = [f"T{i}" for i in range(len(cov))]
    scenarios = scenarios_with(cov) if scenarios is None else scenarios
    dates = pd.bdate_range("2020-01-01", periods=len(scenarios))
    return RiskModel(pd.Timestamp(dates[-1]), tickers, cov, scenarios, dates, 0.0, False)


def signal(values: list[float]) -> pd.Series:
    return pd.Series(values, index=[f"T{i}" for i in range(len(values))])


COV3 = np.array([[0.040, 0.006, 0.002], [0.006, 0.090, 0.010], [0.002, 0.010, 0.160]]) * 1e-2


def test_mean_variance_equal_forecasts_is_the_closed_form_minimum_variance() -> None:
    # With equal expected returns the maximum Sharpe ratio is the minimum variance:
    # w = C^-1 1 / (1' C^-1 1), all positive here so the long-only bound does not bind.
    inverse = np.linalg.solve(COV3, np.ones(3))
    expected = inverse / inverse.sum()
    built = construct("mean_variance", signal([0.01] * 3), model(COV3), LOOSE, EVERYTHING)
    assert built.fallback == ""
    np.testing.assert_allclose(built.weights.to_numpy(), expected, atol=1e-5)


def test_mean_variance_is_the_closed_form_tangency_portfolio() -> None:
    mu = np.array([0.010, 0.012, 0.011])
    inverse = np.linalg.solve(COV3, mu)
    expected = inverse / inverse.sum()  # w = C^-1 mu / (1' C^-1 mu)
    assert (expected > 0).all()
    built = construct("mean_variance", signal(list(mu)), model(COV3), LOOSE, EVERYTHING)
    np.testing.assert_allclose(built.weights.to_numpy(), expected, atol=1e-5)


def test_hrp_bisects_a_block_diagonal_covariance_by_hand() -> None:
    # Two uncorrelated blocks, {T0, T1} and {T2, T3}, each correlated within.
    s = np.array([0.01, 0.02, 0.015, 0.03])
    corr = np.array(
        [[1.0, 0.8, 0.0, 0.0], [0.8, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.7], [0.0, 0.0, 0.7, 1.0]]
    )
    cov = corr * np.outer(s, s)
    built = construct("hrp", signal([0.0] * 4), model(cov), LOOSE, EVERYTHING)
    assert built.fallback == ""

    def cluster_variance(block: np.ndarray) -> float:
        inverse = 1.0 / np.diag(block)
        u = inverse / inverse.sum()
        return float(u @ block @ u)

    v_left, v_right = cluster_variance(cov[:2, :2]), cluster_variance(cov[2:, 2:])
    alpha = 1.0 - v_left / (v_left + v_right)  # the left block's share
    v = s**2
    expected = [
        alpha * v[1] / (v[0] + v[1]),
        alpha * v[0] / (v[0] + v[1]),
        (1 - alpha) * v[3] / (v[2] + v[3]),
        (1 - alpha) * v[2] / (v[2] + v[3]),
    ]
    np.testing.assert_allclose(built.weights.to_numpy(), expected, atol=1e-10)


def test_risk_parity_of_two_names_is_inverse_volatility() -> None:
    # With two names equal risk contributions are w_i proportional to 1 / sigma_i, whatever
    # the correlation.
    s = np.array([0.01, 0.03])
    cov = np.array([[1.0, 0.3], [0.3, 1.0]]) * np.outer(s, s)
    built = construct("risk_parity", signal([0.0, 0.0]), model(cov), LOOSE, EVERYTHING)
    expected = (1 / s) / (1 / s).sum()
    np.testing.assert_allclose(built.weights.to_numpy(), expected, atol=1e-5)


def min_cvar_by_linear_program(scenarios: np.ndarray, level: float) -> np.ndarray:
    """Rockafellar-Uryasev: min t + sum(u) / ((1 - a) n) s.t. u >= -Xw - t, u >= 0, sum w = 1,
    w >= 0, solved by scipy's HiGHS as an independent reference."""
    n, m = scenarios.shape
    c = np.concatenate([np.zeros(m), [1.0], np.full(n, 1.0 / ((1 - level) * n))])
    a_ub = np.hstack([-scenarios, -np.ones((n, 1)), -np.eye(n)])
    a_eq = np.concatenate([np.ones(m), [0.0], np.zeros(n)])[None, :]
    bounds = [(0, 1)] * m + [(None, None)] + [(0, None)] * n
    solved = linprog(c, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0], bounds=bounds)
    assert solved.status == 0
    return solved.x[:m]


def test_min_cvar_matches_an_independent_linear_program() -> None:
    rng = np.random.default_rng(3)
    scenarios = rng.standard_t(4, size=(300, 3)) * [0.01, 0.02, 0.015] + [0.0, 0.001, 0.0005]
    cov = np.cov(scenarios, rowvar=False)
    built = construct("min_cvar", signal([0.0] * 3), model(cov, scenarios), LOOSE, EVERYTHING)
    expected = min_cvar_by_linear_program(scenarios, 0.95)
    np.testing.assert_allclose(built.weights.to_numpy(), expected, atol=2e-4)


def test_min_cvar_finds_a_riskless_hedge() -> None:
    # T1 is exactly -T0 in every scenario: half in each loses nothing, anything else does.
    x = np.random.default_rng(0).normal(0, 0.01, 200)
    scenarios = np.column_stack([x, -x])
    cov = np.cov(scenarios, rowvar=False) + 1e-8 * np.eye(2)
    built = construct("min_cvar", signal([0.0, 0.0]), model(cov, scenarios), LOOSE, EVERYTHING)
    np.testing.assert_allclose(built.weights.to_numpy(), [0.5, 0.5], atol=1e-5)


def test_top_k_and_book_sizes() -> None:
    risk = model(np.diag(np.full(6, 1e-4)))
    ranked = signal([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    built = construct(
        "top_k", ranked, risk, Constraints(max_weight=0.5), ConstructionSettings(0.34)
    )
    np.testing.assert_allclose(built.weights.to_numpy(), [0.5, 0.5, 0, 0, 0, 0])
    long_short = Constraints(long_only=False, gross=2.0, net=0.0, max_weight=0.5)
    built = construct("top_k", ranked, risk, long_short, ConstructionSettings(0.34))
    np.testing.assert_allclose(built.weights.to_numpy(), [0.5, 0.5, 0, 0, -0.5, -0.5])
    # max_weight raises the book to as many names as it needs: 1 / 0.25 = 4.
    assert book_size(0.2, 20, 1.0, 0.25, 20) == 4
    assert book_size(0.5, 20, 1.0, 0.25, 20) == 10
    with pytest.raises(ConstructionError, match="needs 5 names"):
        book_size(0.2, 4, 1.0, 0.2, 4)


@pytest.mark.parametrize(
    "constraints",
    [
        Constraints(),
        Constraints(max_weight=0.15),
        Constraints(long_only=False, gross=2.0, net=0.0, max_weight=0.2),
        Constraints(long_only=False, gross=1.6, net=1.0, max_weight=0.25),
        Constraints(max_weight=0.2, max_turnover=0.3),
    ],
    ids=["long_only", "tight", "long_short", "130_30", "turnover"],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_method_meets_the_constraints(constraints: Constraints, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, t = 16, 300
    dates = pd.bdate_range("2020-01-01", periods=t)
    tickers = [f"N{i:02d}" for i in range(n)]
    market = rng.normal(0.0003, 0.01, (t, 1))
    returns = pd.DataFrame(
        market * rng.uniform(0.5, 1.5, n) + rng.normal(0, 0.015, (t, n)), dates, tickers
    )
    risk = estimate_risk_model(returns, dates[-1])
    forecast = pd.Series(rng.normal(0.002, 0.01, n), tickers)
    current = pd.Series(rng.dirichlet(np.ones(n)), tickers) if constraints.max_turnover else None
    for method in METHODS:
        built = construct(method, forecast, risk, constraints, current=current, horizon=5)
        found = weight_problems(built.weights, constraints, current, built.turnover_limited)
        assert not found, (method, found)
        assert np.isfinite(built.weights).all()
        if current is not None:
            moved = (built.weights - current.reindex(built.weights.index, fill_value=0)).abs()
            assert moved.sum() <= constraints.max_turnover + 1e-9
            assert built.turnover_limited  # from random holdings the cap binds


def test_turnover_cap_moves_part_way_by_hand() -> None:
    current = pd.Series({"A": 0.5, "B": 0.5})
    target = pd.Series({"B": 0.2, "C": 0.8})
    moved, limited = limit_turnover(target, current, cap=0.4)
    # Turnover to the target is 0.5 + 0.3 + 0.8 = 1.6: a quarter of the way.
    np.testing.assert_allclose(moved[["A", "B", "C"]], [0.375, 0.425, 0.2])
    assert limited
    same, limited = limit_turnover(target, current, cap=2.0)
    np.testing.assert_allclose(same[["A", "B", "C"]], [0.0, 0.2, 0.8])
    assert not limited


def test_weight_problems_names_what_is_broken() -> None:
    c = Constraints(max_weight=0.5)
    assert weight_problems(pd.Series([0.5, 0.5]), c) == []
    assert "beyond max_weight" in weight_problems(pd.Series([0.7, 0.3]), c)[0]
    assert "negative" in weight_problems(pd.Series([1.2, -0.2]), Constraints())[0]
    assert "sum to" in weight_problems(pd.Series([0.5, 0.4]), c)[0]
    assert weight_problems(pd.Series([np.nan, 1.0]), c) == ["weights are not all finite"]


def test_near_singular_covariance_gives_finite_weights_or_a_clear_error() -> None:
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2020-01-01", periods=200)
    base = rng.normal(0, 0.01, (200, 3))
    # A duplicated name, a name twice another, and fewer dates than names in a window.
    returns = pd.DataFrame(
        np.column_stack([base, base[:, 0], 2 * base[:, 1]]), dates, list("ABCDE")
    )
    tiny = RiskModelConfig(lookback=4, min_observations=3)
    floored = RiskModelConfig(eigen_floor=0.1)  # the floor binds: the fallback is taken
    for config in (RiskModelConfig(), tiny, floored):
        risk = estimate_risk_model(returns, dates[-1], config)
        assert np.linalg.eigvalsh(risk.covariance).min() > 0
        for method in METHODS:
            built = construct(method, pd.Series(0.01, list("ABCDE")), risk, Constraints())
            assert np.isfinite(built.weights).all(), method
            assert not weight_problems(built.weights, Constraints()), method
    notes = estimate_risk_model(returns, dates[-1], floored).notes
    assert any("near-singular" in note for note in notes)
    flat = pd.DataFrame(0.0, dates, list("ABC"))
    with pytest.raises(RiskModelError, match="no name has"):
        estimate_risk_model(flat, dates[-1])


def test_a_failing_optimiser_falls_back_and_says_why() -> None:
    # No positive expected return: the maximum Sharpe ratio does not exist long-only.
    risk = model(COV3)
    built = construct("mean_variance", signal([-0.01, -0.02, -0.03]), risk, LOOSE, EVERYTHING)
    assert built.fallback and "Error" in built.fallback
    np.testing.assert_allclose(built.weights.to_numpy(), [1 / 3] * 3)


def test_names_missing_from_the_risk_model_or_the_signal_are_left_out() -> None:
    dates = pd.bdate_range("2020-01-01", periods=300)
    rng = np.random.default_rng(1)
    returns = pd.DataFrame(rng.normal(0, 0.01, (300, 5)), dates, list("ABCDE"))
    returns.loc[dates[:250], "E"] = np.nan  # listed late: too few returns
    risk = estimate_risk_model(returns, dates[-1])
    assert "E" not in risk.tickers and "left out ['E']" in risk.notes[0]
    forecast = pd.Series([0.01, 0.02, np.nan, 0.01, 0.05], list("ABCDE"))
    built = construct("hrp", forecast, risk, Constraints(max_weight=0.5))
    assert set(built.weights.index) == {"A", "B", "D"}


def test_targets_are_truncation_invariant() -> None:
    # Everything a target fits uses prices up to its date: more history after it changes
    # nothing, with or without GARCH filtering and factors.
    prices = synthetic_panel(SyntheticConfig(n_tickers=12, n_days=700, seed=4))
    dates = pd.DatetimeIndex(sorted(prices["date"].unique()))
    as_of = dates[500]
    params = fit_garch(prices, dates[300])
    rng = np.random.default_rng(0)
    tickers = sorted(prices["ticker"].unique())
    forecasts = pd.DataFrame(
        {"prediction": rng.normal(0.002, 0.01, 12), "confidence": rng.uniform(0, 1, 12)},
        index=tickers,
    )
    spec = PortfolioSpec(
        risk=RiskModelConfig(garch=True),
        horizon=5,
        factor_weights={"forecast": 1.0, "low_risk": 0.5},
    )

    def targets(upto: pd.DataFrame):
        return build_targets(
            spec, as_of, forecasts, daily_returns(upto), garch_volatility(upto, params)
        )

    short = targets(prices[prices["date"] <= as_of])
    full = targets(prices)
    assert set(short.constructions) == set(METHODS)
    for method in METHODS:
        pd.testing.assert_series_equal(
            short.constructions[method].weights, full.constructions[method].weights
        )
    np.testing.assert_array_equal(short.filtered.covariance, full.filtered.covariance)
