"""The backtest report renders: a self-contained HTML page embedding every PNG, a Markdown
summary linking them, and the metric tables as Parquet and JSON."""

from __future__ import annotations

import base64
import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finpipe.core.metrics import forecast_metrics
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_benchmark, synthetic_panel
from finpipe.evaluation.backtest import BacktestConfig, BacktestResult, run_backtest, with_baselines
from finpipe.evaluation.reports import PLOTS, write_report
from finpipe.evaluation.walk_forward import label_end_by_date, run_walk_forward, walk_forward_splits
from finpipe.features.labels import forward_returns
from finpipe.models.panel_data import PanelData
from finpipe_tests.headless_chromium import chromium_command

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run() -> tuple[BacktestResult, pd.DataFrame]:
    """The backtest of a small walk-forward run, and its predictions joined to labels."""
    # 2019-2020: the test period spans the COVID crash, so the stress table has a row.
    cfg = SyntheticConfig(
        n_tickers=15, n_days=420, seed=2, start="2019-03-01", signal_strength=0.2, regimes=True
    )
    prices = synthetic_panel(cfg)
    close = prices.pivot(index="date", columns="ticker", values="adj_close")
    features = pd.DataFrame({"ret_5": (close / close.shift(5) - 1).stack()}).reset_index().dropna()
    labels = forward_returns(prices, (1, 5))
    panel = PanelData.from_frames(features, labels)
    folds = walk_forward_splits(
        panel.dates, label_end_by_date(labels), retrain_every=60, min_train_days=100
    )
    wf = run_walk_forward(
        panel, {"ridge": {"family": "ridge"}, "ridge_l": {"family": "ridge", "alpha": 1e4}}, folds
    )
    predictions = wf.predictions
    ensemble = predictions["model"] == "ensemble"
    predictions.loc[ensemble, "lower"] = predictions.loc[ensemble, "prediction"] - 0.02
    predictions.loc[ensemble, "upper"] = predictions.loc[ensemble, "prediction"] + 0.02
    predictions.loc[ensemble, "interval_level"] = 0.8
    predictions = with_baselines(predictions, prices)
    result = run_backtest(
        predictions,
        labels,
        prices,
        benchmark=synthetic_benchmark(cfg),
        weights=wf.weights,
        config=BacktestConfig(n_boot=100),
    )
    return result, predictions.merge(labels, on=["date", "ticker", "horizon"])


@pytest.fixture(scope="module")
def result(run: tuple[BacktestResult, pd.DataFrame]) -> BacktestResult:
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
    for heading in ("Portfolio performance", "Forecast skill", "Sharpe by regime", "Stress"):
        assert heading in page
    assert "covid_2020" in page and "ensemble/long_short" in page

    summary = paths["markdown"].read_text()
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


def test_forecast_skill_agrees_with_forecast_metrics(
    run: tuple[BacktestResult, pd.DataFrame],
) -> None:
    # One metrics module: the backtest's skill table reproduces forecast_metrics.
    result, labelled = run
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
    assert set(result.weights["model"]) == {"ridge", "ridge_l"}


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
