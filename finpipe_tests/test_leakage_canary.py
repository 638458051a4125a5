"""Leakage canary: the served procedure replayed over history (feature engine, labels, the
time plan's purged and embargoed fits with retraining, stacked ensemble and conformal
intervals from earlier folds, portfolio, metrics) scores like a coin on random walks and
finds a planted signal.

Zero strength: ensemble rank IC, directional accuracy (against the accuracy of a call
independent of the outcome with the same up-shares), the gross long-short Sharpe ratio, and
the Sharpe ratio of every construction method's long-only portfolio (risk model, optimiser
and rebalancing on the replay's forecasts) are all within 3 standard errors of chance. A
leak of the future into features, training labels, the risk model or portfolio timing shows
up here as skill that cannot exist.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from finpipe.core.metrics import daily_rank_ic, mean_stderr
from finpipe.core.prices import daily_returns
from finpipe.core.time_plan import PlanSettings, build_time_plan
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.evaluation.backtest import BacktestConfig, BacktestResult, run_backtest
from finpipe.evaluation.walk_forward import ensemble_weights, run_replay
from finpipe.features.config import FeatureConfig
from finpipe.features.engine import build_features
from finpipe.features.labels import forward_returns
from finpipe.forecasting.uncertainty import recent_volatility
from finpipe.models.panel_data import NO_LABEL_END, PanelData
from finpipe.models.trainer import window_views
from finpipe.portfolio.construction import METHODS
from finpipe.portfolio.targets import PortfolioSpec, replay_targets

FAMILIES = {
    "ridge": {},
    "hist_gbm": {"max_iter": 50, "max_train_samples": 20_000},
}
SETTINGS = PlanSettings(
    horizons=(1, 5),
    execution_lag=1,
    embargo=5,
    retrain_every=84,
    valid_days=42,
    stack_days=126,
    calibration_days=84,
    min_train_days=150,
)
RESEARCH_END = 299  # calendar position: the test period is the last 600 of 900 dates
FEATURES = ["mom_21", "mom_63", "strev_1", "strev_5", "ma_gap_20", "ma_gap_50"]
# Every input option of issue 13 at once: targets, scalings, selections and factor members.
OPTIONS = {
    "ridge": {
        "target": "rank",
        "feature_scaling": "cross_sectional",
        "feature_selection": "rfe",
        "max_features": 4,
    },
    "elastic_net": {"target": "demeaned", "feature_selection": "permutation", "max_features": 4},
    "hist_gbm": {"max_iter": 50, "max_train_samples": 20_000, "target": "zscore"},
    "momentum_factor": {},
    "reversal_factor": {},
    "low_vol_factor": {},
}
FACTOR_FEATURES = [*FEATURES, "mom_12_1", "rv_63"]


def _replay(
    signal_strength: float,
    seed: int,
    families: dict = FAMILIES,
    columns: list[str] = FEATURES,
) -> tuple[pd.DataFrame, list, pd.DataFrame, pd.DataFrame, object]:
    """The served procedure replayed on a synthetic panel: (rows, fits, labels, prices,
    plan)."""
    cfg = SyntheticConfig(n_tickers=40, n_days=900, seed=seed, signal_strength=signal_strength)
    prices = synthetic_panel(cfg)
    config = FeatureConfig(families=("momentum", "volatility"))
    features = build_features(prices, config=config).frame
    labels = forward_returns(prices, (1, 5), execution_lag=1)
    panel = PanelData.from_frames(features[["date", "ticker", *columns]], labels)
    plan = build_time_plan(panel.dates, SETTINGS, research_end=panel.dates[RESEARCH_END])
    assert len(plan.folds) >= 6
    label_end = labels.groupby("date")["label_end"].max()
    for window in plan.folds:
        # Purged: nothing a fit learns from has a label ending at or after its cutoff,
        # read from the panel views it trains on and, independently, from the labels table.
        for view in window_views(panel, window):
            ends = view.label_end[view.sample_mask]
            ends = ends[ends != NO_LABEL_END]
            assert len(ends) and ends.max() < window.label_cutoff.value, window.name
        trained = label_end[window.train_start : window.valid_end]
        assert trained.max() < window.label_cutoff < window.as_of, window.name
    # One thread per library: boosting on 2 shared cores is several times faster this way.
    with threadpool_limits(1):
        rows, fits = run_replay(panel, plan, families, labels, recent_volatility(prices))
    return rows, fits, labels, prices, plan


def _pipeline(
    signal_strength: float,
    seed: int,
    families: dict = FAMILIES,
    columns: list[str] = FEATURES,
    constructions: bool = False,
) -> BacktestResult:
    rows, fits, labels, prices, plan = _replay(signal_strength, seed, families, columns)
    # The test period is scored on the whole served procedure: stacked and calibrated.
    tested = [fit for fit in fits if fit.window.as_of >= plan.test_start]
    assert tested and all(fit.stack is not None and fit.conformal is not None for fit in tested)
    oos = rows[rows["date"] >= plan.test_start]
    replayed = None
    if constructions:
        # Every construction method, long-only, on the 5-day ensemble forecast, monthly.
        ensemble = oos[(oos["model"] == "ensemble") & (oos["horizon"] == 5)]
        dates = pd.DatetimeIndex(sorted(ensemble["date"].unique()))[::21]
        with threadpool_limits(1):
            replayed = replay_targets(
                PortfolioSpec(horizon=5), ensemble, daily_returns(prices), dates
            )
    return run_backtest(
        oos,
        labels,
        prices,
        weights=ensemble_weights(fits),
        config=BacktestConfig(n_boot=100, kinds=("long_short",)),
        constructions=None if replayed is None else replayed.weights,
        construction_fallbacks=None if replayed is None else replayed.fallbacks,
    )


def _sharpe_z(row: pd.Series) -> float:
    sharpe, n = row["gross_sharpe"], row["n_days"]
    # Standard error of an annualised Sharpe ratio: sqrt((1 + SR_daily^2 / 2) / n) sqrt(252).
    return float(sharpe / np.sqrt((1.0 + sharpe**2 / (2 * 252)) / n * 252))


def _z_scores(result: BacktestResult) -> dict[str, float]:
    forecast = result.forecast[result.forecast["model"] == "ensemble"].set_index("horizon")
    z = {"sharpe": _sharpe_z(result.performance.set_index("strategy").loc["ensemble/long_short"])}
    for h, row in forecast.iterrows():
        z[f"rank_ic_h{h}"] = row["rank_ic"] / row["rank_ic_se"]
        excess = row["directional_accuracy"] - row["chance_accuracy"]
        z[f"accuracy_h{h}"] = excess / row["directional_accuracy_se"]
    return z


@pytest.fixture(scope="module")
def random_walk_result() -> BacktestResult:
    return _pipeline(signal_strength=0.0, seed=1, constructions=True)


def _at_chance(result: BacktestResult) -> None:
    z = _z_scores(result)
    assert set(z) == {"sharpe", "rank_ic_h1", "rank_ic_h5", "accuracy_h1", "accuracy_h5"}
    beyond = {k: round(v, 2) for k, v in z.items() if not abs(v) < 3.0}
    assert not beyond, f"skill on random walks (z-scores beyond 3): {beyond}"


def test_random_walk_scores_like_a_coin(random_walk_result: BacktestResult) -> None:
    _at_chance(random_walk_result)


def test_random_walk_scores_like_a_coin_with_every_input_option() -> None:
    """Cross-sectional targets, cross-sectional scaling, feature selection and the factor
    members, all in one replay: still a coin."""
    _at_chance(_pipeline(signal_strength=0.0, seed=2, families=OPTIONS, columns=FACTOR_FEATURES))


def test_no_construction_method_has_skill_on_random_walks(
    random_walk_result: BacktestResult,
) -> None:
    table = random_walk_result.constructions.set_index("strategy")
    methods = [f"construction/{m}" for m in METHODS]
    assert set(methods) <= set(table.index)
    assert (table.loc[methods, "n_days"] > 500).all()
    assert (table.loc[methods, "rebalances"] >= 25).all()
    z = {name: _sharpe_z(table.loc[name]) for name in methods}
    beyond = {k: round(v, 2) for k, v in z.items() if not abs(v) < 3.0}
    assert not beyond, f"construction skill on random walks (z-scores beyond 3): {beyond}"


def test_random_walk_ensemble_predictions_cover_the_test_period(
    random_walk_result: BacktestResult,
) -> None:
    ic = random_walk_result.daily_ic["ensemble"]
    returns = random_walk_result.daily_returns["ensemble/long_short"].dropna()
    assert len(ic) > 500 and len(returns) > 500
    assert pd.Timestamp(returns.index[-1]) >= pd.Timestamp(ic.index[-1])


def test_planted_signal_is_found() -> None:
    z = _z_scores(_pipeline(signal_strength=0.1, seed=1))
    missed = {k: round(v, 2) for k, v in z.items() if not v > 3.0}
    assert not missed, f"planted signal not found (z-scores at or below 3): {missed}"


def test_the_ensemble_is_within_noise_of_its_best_member_on_a_realistic_signal() -> None:
    """Strength 0.05 (the synthetic source's realistic setting), learned and factor members:
    at every horizon the stacked ensemble's test-period rank IC is at least its best
    member's less two standard errors of their daily difference (Hansen-Hodrick, h - 1
    lags), so the stacker does not collapse onto a weak member."""
    families = {name: params for name, params in OPTIONS.items() if name != "elastic_net"}
    rows, _, labels, _, plan = _replay(0.05, seed=3, families=families, columns=FACTOR_FEATURES)
    scored = rows[rows["date"] >= plan.test_start].merge(labels, on=["date", "ticker", "horizon"])
    for h, part in scored.groupby("horizon"):
        daily = {
            model: daily_rank_ic(g["prediction"], g["fwd_return"], g["date"])
            for model, g in part.groupby("model")
        }
        ensemble = daily.pop("ensemble")
        best = max(daily, key=lambda m: daily[m].mean())
        difference = (ensemble - daily[best]).dropna()
        gap, se = mean_stderr(difference, max(int(h) - 1, 0), "uniform")
        assert gap > -2 * se, (h, best, round(daily[best].mean(), 4), round(ensemble.mean(), 4))
