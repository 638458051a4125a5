"""Group `evaluation`: walk-forward out-of-sample predictions, fanned out one step per fold
(Dagster runs them in parallel under the multiprocess or k8s executors), and the backtest
report with baselines, regimes and significance."""

import base64
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from finpipe.core.contracts import PRICES
from finpipe.data.ingest import read_table
from finpipe.defs.assets.models import load_research_frames, research_panel
from finpipe.defs.resources import EvaluationSettings, ResearchSettings, StorageResource
from finpipe.evaluation.backtest import BacktestConfig, run_backtest, with_baselines
from finpipe.evaluation.reports import PLOTS, render_markdown, render_plots, write_report
from finpipe.evaluation.walk_forward import (
    Fold,
    label_end_by_date,
    run_fold,
    validation_weighted_combiner,
    walk_forward_splits,
)

GROUP = "evaluation"


def plan(
    frame: pd.DataFrame,
    label_frame: pd.DataFrame,
    research: ResearchSettings,
    evaluation: EvaluationSettings,
) -> list[Fold]:
    """The walk-forward folds over the test period that starts after `train_end`."""
    train_end = research.train_end_date(frame["date"])
    dates = pd.DatetimeIndex(frame["date"].unique()).sort_values()
    return walk_forward_splits(
        dates,
        label_end_by_date(label_frame),
        first_test=dates[dates > train_end][0],
        retrain_every=evaluation.retrain_every,
        window=evaluation.window,
        train_days=evaluation.train_days or None,
        embargo=evaluation.embargo,
    )


@dg.op(
    ins={"features_ready": dg.In(dg.Nothing), "labels_ready": dg.In(dg.Nothing)},
    out=dg.DynamicOut(int),
)
def plan_folds(
    context: dg.OpExecutionContext,
    storage: StorageResource,
    research: ResearchSettings,
    evaluation: EvaluationSettings,
):
    """One dynamic output per fold, so each fold is its own step."""
    folds = plan(*load_research_frames(storage.store()), research, evaluation)
    context.log.info(
        "walk-forward: %d folds, test %s..%s, retrain every %d dates, %s window",
        len(folds),
        folds[0].test_start.date(),
        folds[-1].test_dates[-1].date(),
        evaluation.retrain_every,
        evaluation.window,
    )
    for fold in folds:
        yield dg.DynamicOutput(fold.index, mapping_key=f"fold_{fold.index:03d}")


@dg.op
def run_walk_forward_fold(
    context: dg.OpExecutionContext,
    fold_index: int,
    storage: StorageResource,
    research: ResearchSettings,
    evaluation: EvaluationSettings,
) -> str:
    """Train every evaluated family on the fold's purged window and predict its test dates."""
    store = storage.store()
    frame, label_frame = load_research_frames(store)
    fold = plan(frame, label_frame, research, evaluation)[fold_index]
    panel, _ = research_panel(frame, label_frame, research)
    models = {
        family: {"family": family, **evaluation.params_for(family)}
        for family in evaluation.families
    }
    result = run_fold(fold, panel, models, validation_weighted_combiner())
    context.log.info(
        "fold %d: trained on %d dates to %s, predicted %s..%s (%d rows)",
        fold.index,
        len(fold.train_dates),
        fold.train_dates[-1].date(),
        fold.test_start.date(),
        fold.test_dates[-1].date(),
        len(result.predictions),
    )
    name = f"fold_{fold.index:03d}"
    store.write(result.predictions, "evaluation", "folds", f"{name}_predictions")
    store.write(result.weights, "evaluation", "folds", f"{name}_weights")
    store.write(result.validation, "evaluation", "folds", f"{name}_validation")
    return name


@dg.op
def collect_folds(
    context: dg.OpExecutionContext, fold_names: list[str], storage: StorageResource
) -> dg.Output:
    """Concatenate the folds' out-of-sample predictions over the whole test period."""
    store = storage.store()
    names = sorted(fold_names)
    predictions = pd.concat([store.read("evaluation", "folds", f"{n}_predictions") for n in names])
    weights = pd.concat([store.read("evaluation", "folds", f"{n}_weights") for n in names])
    path = store.write(predictions.reset_index(drop=True), "evaluation", "walk_forward_predictions")
    store.write(weights.reset_index(drop=True), "evaluation", "ensemble_weights")
    context.log.info("walk-forward: %d out-of-sample rows in %s", len(predictions), path)
    return dg.Output(
        None,
        metadata={
            "folds": dg.MetadataValue.int(len(names)),
            "models": dg.MetadataValue.json(sorted(predictions["model"].unique())),
            "first_date": dg.MetadataValue.text(str(predictions["date"].min().date())),
            "last_date": dg.MetadataValue.text(str(predictions["date"].max().date())),
            "dagster/row_count": dg.MetadataValue.int(len(predictions)),
            "path": dg.MetadataValue.path(path),
        },
    )


@dg.graph_asset(
    group_name=GROUP,
    ins={
        "features_ready": dg.AssetIn(key="features", dagster_type=dg.Nothing),
        "labels_ready": dg.AssetIn(key="labels", dagster_type=dg.Nothing),
    },
)
def walk_forward_predictions(features_ready, labels_ready):
    """Out-of-sample predictions of every evaluated family and their ensemble over the test
    period, retrained every `evaluation.retrain_every` dates, purged and embargoed."""
    folds = plan_folds(features_ready=features_ready, labels_ready=labels_ready)
    return collect_folds(folds.map(run_walk_forward_fold).collect())


def embedded_png(name: str, png: bytes) -> str:
    return f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})"


@dg.asset(group_name=GROUP, deps=[walk_forward_predictions], kinds={"html"})
def backtest_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    evaluation: EvaluationSettings,
) -> dg.MaterializeResult:
    """Walk-forward backtest beside the baselines, net of costs, by regime, with uncertainty:
    an HTML report, a Markdown summary, PNG plots and metric tables (JSON and Parquet)."""
    store = storage.store()
    oos = store.read("evaluation", "walk_forward_predictions")
    prices = read_table(store, "prices", PRICES)
    benchmark = read_table(store, "benchmark", PRICES)
    config = BacktestConfig(
        horizon=evaluation.portfolio_horizon or None,
        k=evaluation.top_k,
        cost_bps=evaluation.cost_bps,
        n_boot=evaluation.n_boot,
    )
    result = run_backtest(
        with_baselines(oos, prices),
        store.read("features", "labels"),
        prices,
        benchmark=benchmark if not benchmark.empty else None,
        weights=store.read("evaluation", "ensemble_weights"),
        config=config,
    )
    if "://" in storage.root:
        with tempfile.TemporaryDirectory() as tmp:
            write_report(result, tmp, evaluation.report_title)
            folder = store.put_folder(tmp, "reports", "backtest")
    else:
        folder = str(storage.local_folder("reports", "backtest"))
        write_report(result, folder, evaluation.report_title)
    report = Path(folder) / "report.html"
    context.log.info("backtest report: %s", report)
    plots = render_plots(result)
    key_plots = {k: v for k, v in plots.items() if k in evaluation.metadata_plots}
    tables = render_markdown(result, dict.fromkeys(PLOTS, ""), evaluation.report_title)
    summary = tables.split("## Plots")[0] + "## Key plots\n\n"
    summary += "\n\n".join(embedded_png(k, v) for k, v in key_plots.items())
    perf = result.performance
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(summary),
            "report": dg.MetadataValue.path(str(report)),
            "strategies": dg.MetadataValue.int(len(perf)),
            "test_start": dg.MetadataValue.text(str(oos["date"].min().date())),
            "test_end": dg.MetadataValue.text(str(oos["date"].max().date())),
        }
    )


EVALUATION_ASSETS = [walk_forward_predictions, backtest_report]
