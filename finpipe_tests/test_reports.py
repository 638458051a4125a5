"""The backtest report of a replayed serving procedure renders: a self-contained HTML page
embedding every PNG, a Markdown summary linking them, the metric tables as Parquet and JSON,
interval coverage by year and the replayed procedure with its folds."""

from __future__ import annotations

import base64
import html
import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finpipe.core.metrics import forecast_metrics
from finpipe.core.prices import daily_returns
from finpipe.core.time_plan import PlanSettings, TimePlan, build_time_plan
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_benchmark, synthetic_panel
from finpipe.evaluation.backtest import BacktestConfig, BacktestResult, run_backtest, with_baselines
from finpipe.evaluation.reports import PLOTS, write_report
from finpipe.evaluation.walk_forward import (
    ensemble_weights,
    fold_summary,
    procedure_text,
    run_replay,
)
from finpipe.features.labels import forward_returns
from finpipe.forecasting.uncertainty import recent_volatility
from finpipe.models.panel_data import PanelData
from finpipe.portfolio.risk_model import RiskModelConfig
from finpipe.portfolio.targets import PortfolioSpec, replay_targets
from finpipe_tests.headless_chromium import chromium_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


FAMILIES = {"ridge": {}, "elastic_net": {"alpha": 1e-4}}
SETTINGS = PlanSettings(
    horizons=(1, 5),
    execution_lag=1,
    embargo=2,
    retrain_every=40,
    valid_days=20,
    stack_days=80,
    calibration_days=40,
    min_train_days=60,
)


@pytest.fixture(scope="module")
def run() -> tuple[BacktestResult, pd.DataFrame, TimePlan]:
    """The backtest of a small replay's test period, its predictions joined to labels, and
    the time plan it replayed."""
    # 2019-2020: the test period spans the COVID crash, so the stress table has a row.
    cfg = SyntheticConfig(
        n_tickers=15, n_days=420, seed=2, start="2019-03-01", signal_strength=0.2, regimes=True
    )
    prices = synthetic_panel(cfg)
    close = prices.pivot(index="date", columns="ticker", values="adj_close")
    features = pd.DataFrame({"ret_5": (close / close.shift(5) - 1).stack()}).reset_index().dropna()
    labels = forward_returns(prices, (1, 5))
    panel = PanelData.from_frames(features, labels)
    plan = build_time_plan(panel.dates, SETTINGS, research_end=panel.dates[199])
    rows, fits = run_replay(panel, plan, FAMILIES, labels, recent_volatility(prices))
    predictions = with_baselines(rows[rows["date"] >= plan.test_start], prices)
    ensemble = predictions[(predictions["model"] == "ensemble") & (predictions["horizon"] == 5)]
    rebalances = pd.DatetimeIndex(sorted(ensemble["date"].unique()))[::21]
    spec = PortfolioSpec(
        methods=("top_k", "hrp"), horizon=5, risk=RiskModelConfig(lookback=120, min_observations=60)
    )
    constructions = replay_targets(spec, ensemble, daily_returns(prices), rebalances)
    result = run_backtest(
        predictions,
        labels,
        prices,
        benchmark=synthetic_benchmark(cfg),
        weights=ensemble_weights(fits),
        config=BacktestConfig(n_boot=100),
        folds=fold_summary(fits),
        procedure=procedure_text(plan, list(FAMILIES)),
        constructions=constructions.weights,
        construction_fallbacks=constructions.fallbacks,
    )
    return result, predictions.merge(labels, on=["date", "ticker", "horizon"]), plan


@pytest.fixture(scope="module")
def result(run: tuple[BacktestResult, pd.DataFrame, TimePlan]) -> BacktestResult:
    return run[0]


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.sources.append(values.get("src") or "")
        for key in ("href", "src"):
            if tag != "img" and values.get(key):
                self.links.append(values[key] or "")


def test_report_renders_every_plot_and_table(result: BacktestResult, tmp_path: Path) -> None:
    paths = write_report(result, tmp_path / "report", title="Synthetic backtest")
    page = paths["html"].read_text()
    parser = _Images()
    parser.feed(page)
    assert len(parser.sources) == len(PLOTS)
    assert not parser.links, "the page must not load anything from elsewhere"
    for name, source in zip(PLOTS, parser.sources, strict=True):
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        embedded = base64.b64decode(source[len(prefix) :])
        assert embedded.startswith(PNG_SIGNATURE)
        assert embedded == (tmp_path / "report" / "plots" / f"{name}.png").read_bytes()
    new_sections = ("Interval coverage by year", "Replayed procedure", "Construction comparison")
    for heading in ("Portfolio performance", "Forecast skill", "Sharpe by regime", "Stress"):
        assert heading in page
    for heading in new_sections:
        assert f"<h2>{heading}</h2>" in page
    assert "covid_2020" in page and "ensemble/long_short" in page
    assert html.escape(result.procedure) in page
    assert all(fold in page for fold in result.folds["fold"])

    summary = paths["markdown"].read_text()
    for heading in new_sections:
        assert f"## {heading}" in summary
    assert result.procedure in summary
    assert all(fold in summary for fold in result.folds["fold"])
    for name in PLOTS:
        assert f"(plots/{name}.png)" in summary
        assert (tmp_path / "report" / "plots" / f"{name}.png").stat().st_size > 5_000

    performance = pd.read_parquet(paths["table_performance"])
    pd.testing.assert_frame_equal(performance, result.performance)
    daily = pd.read_parquet(paths["table_daily_returns"])
    assert list(daily.columns) == ["date", *result.daily_returns.columns]
    machine = json.loads(paths["json"].read_text())
    assert {row["strategy"] for row in machine["performance"]} == set(
        result.performance["strategy"]
    )
    assert machine["config"]["cost_bps"] == result.config.cost_bps
    assert machine["procedure"] == result.procedure
    assert len(machine["coverage_by_year"]) == len(result.coverage_by_year)
    folds = pd.read_parquet(paths["table_replay_folds"])
    assert list(folds["fold"]) == list(result.folds["fold"])
    constructions = pd.read_parquet(paths["table_constructions"])
    assert {row["strategy"] for row in machine["constructions"]} == set(constructions["strategy"])
    assert "construction/hrp" in page and "construction/hrp" in summary


def test_forecast_skill_agrees_with_forecast_metrics(
    run: tuple[BacktestResult, pd.DataFrame, TimePlan],
) -> None:
    # One metrics module: the backtest's skill table reproduces forecast_metrics.
    result, labelled, _ = run
    reference = forecast_metrics(labelled[labelled["model"] == "ensemble"])
    mine = result.forecast[result.forecast["model"] == "ensemble"].set_index("horizon")
    for column in reference.columns.drop("mse"):
        np.testing.assert_allclose(mine[column], reference[column], rtol=1e-12)


def test_backtest_tables_hold_what_the_report_shows(result: BacktestResult) -> None:
    strategies = set(result.performance["strategy"])
    assert "equal_weight/buy_and_hold" in strategies
    assert {"ensemble/long_short", "momentum_12_1/long_only", "random/long_short"} <= strategies
    assert result.performance["deflated_sharpe"].between(0, 1).all()
    assert set(result.stress["regime"]) == {"covid_2020"}
    assert set(result.by_regime["regime_type"]) == {"trend", "volatility"}
    coverage = result.coverage.set_index("model").loc["ensemble"]
    assert set(coverage["interval_level"]) == {0.8}
    assert coverage["coverage"].between(0, 1).all()
    assert set(result.weights["model"]) == set(FAMILIES)
    # Each construction method beside the top-k book and the baselines of its kind.
    table = result.constructions.set_index("strategy")
    assert set(table.index) == {
        "construction/top_k",
        "construction/hrp",
        "ensemble/long_only",
        "equal_weight/buy_and_hold",
        "momentum_12_1/long_only",
        "reversal_5d/long_only",
        "random/long_only",
    }
    assert (table.loc[["construction/top_k", "construction/hrp"], "rebalances"] > 3).all()
    assert (table.loc[["construction/top_k", "construction/hrp"], "fallbacks"] == 0).all()
    # The references' rows are the performance table's.
    performance = result.performance.set_index("strategy")
    assert (
        table.loc["ensemble/long_only", "sharpe"] == performance.loc["ensemble/long_only", "sharpe"]
    )
    assert set(result.construction_returns.columns) == set(table.index)


def test_replayed_procedure_is_recorded(run: tuple[BacktestResult, pd.DataFrame, TimePlan]) -> None:
    result, labelled, plan = run
    # Every fit of the plan is in the folds table; the test period is the plan's.
    assert list(result.folds["fold"]) == [w.name for w in plan.folds]
    assert labelled["date"].min() == plan.test_start
    assert str(plan.test_start.date()) in result.procedure
    # The conformal intervals are real: bounded in the test period, each year covered.
    ensemble = labelled[labelled["model"] == "ensemble"]
    assert np.isfinite(ensemble[["lower", "upper"]]).all().all()
    by_year = result.coverage_by_year.set_index("model").loc["ensemble"]
    assert set(by_year["year"]) == {2019, 2020}
    assert by_year["coverage"].between(0, 1).all() and (by_year["interval_level"] == 0.8).all()


def test_report_screenshot_in_headless_chromium(result: BacktestResult, tmp_path: Path) -> None:
    paths = write_report(result, tmp_path / "report")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            *chromium_command(tmp_path / "chromium-profile"),
            "--window-size=1400,6000",
            f"--screenshot={shot}",
            paths["html"].resolve().as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert shot.read_bytes().startswith(PNG_SIGNATURE) and shot.stat().st_size > 50_000


def test_every_model_in_the_report_has_a_kind() -> None:
    from finpipe.evaluation.reports import model_kind

    kinds = {
        m: model_kind(m)
        for m in ("ensemble", "lstm", "ridge@challenger", "momentum_factor", "momentum_12_1")
    }
    assert kinds == {
        "ensemble": "ensemble",
        "lstm": "deep",
        "ridge@challenger": "tabular",
        "momentum_factor": "factor",
        "momentum_12_1": "baseline",
    }
