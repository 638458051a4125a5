"""Group `evaluation`: the walk-forward replay of the served procedure, fanned out one step
per fold (Dagster runs them in parallel under the multiprocess or k8s executors; a fold
already stored with the same fingerprint is reused), the leak gate on it, and the backtest
report with baselines, regimes and significance."""

import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from finpipe.core.contracts import LABELS, PRICES, REPLAY
from finpipe.core.provenance import code_fingerprint
from finpipe.core.storage import ParquetStore
from finpipe.data.ingest import read_table, universe_prices
from finpipe.defs.assets.features import labels, time_plan
from finpipe.defs.assets.ingest import benchmark_prices, raw_prices
from finpipe.defs.metadata import contract_schema, embedded_png, md_table
from finpipe.defs.resources import (
    DECISIONS,
    EvaluationSettings,
    ForecastSettings,
    MarketDataResource,
    RegistryResource,
    StorageResource,
    TrainingSettings,
)
from finpipe.evaluation.backtest import BacktestConfig, run_backtest, with_baselines
from finpipe.evaluation.reports import (
    PLOTS,
    render_plots,
    summary_tables_markdown,
    write_report,
)
from finpipe.evaluation.walk_forward import (
    FoldForecasts,
    ensemble_weights,
    fold_fingerprint,
    fold_forecasts,
    fold_summary,
    procedure_text,
    replay,
)
from finpipe.forecasting.uncertainty import recent_volatility
from finpipe.models.trainer import same_fit, training_curve_png

GROUP = "evaluation"
FOLDS = ("evaluation", "folds")
REPLAY_PATH = ("evaluation", "replay")


def fold_families(
    storage: StorageResource, training: TrainingSettings
) -> dict[str, dict[str, Any]]:
    """The families every fold trains, with the parameters serving trains them with (tuned
    values come from the research period only, so the test period stays unseen)."""
    return {f: training.resolved_params(f, storage)[0] for f in sorted(training.families)}


def read_fold(store: ParquetStore, name: str, window) -> FoldForecasts:
    points = store.read(*FOLDS, f"{name}_points")
    scale = store.read(*FOLDS, f"{name}_scale")
    validation = json.loads(store.read_metadata(*FOLDS, f"{name}_points")["validation"])
    return FoldForecasts(window, points, scale, validation)


@dg.op(
    ins={
        name: dg.In(dg.Nothing)
        for name in ("plan", "panel", "labels", "prices", "decided", "tuned")
    },
    out=dg.DynamicOut(str),
)
def plan_folds(context: dg.OpExecutionContext, storage: StorageResource):
    """One dynamic output per fold of the time plan, so each fold is its own step."""
    plan = storage.read_plan()
    context.log.info(
        "replay: %d folds from %s, retraining every %d dates; test period from %s",
        len(plan.folds),
        plan.folds[0].as_of.date(),
        plan.settings.retrain_every,
        plan.test_start.date(),
    )
    for fold in plan.folds:
        yield dg.DynamicOutput(fold.name, mapping_key=fold.name)


@dg.op
def run_replay_fold(
    context: dg.OpExecutionContext,
    fold: str,
    storage: StorageResource,
    training: TrainingSettings,
    forecasting: ForecastSettings,
    registry: RegistryResource,
) -> str:
    """Train every family on the fold's window and predict its dates, unless a stored fold
    with the same fingerprint already covers them; every trained fold is an MLflow run."""
    store = storage.store()
    plan = storage.read_plan()
    window = plan.fold(fold)
    panel = storage.read_panel()
    families = fold_families(storage, training)
    extra = {"code": code_fingerprint(), "mc_samples": forecasting.mc_samples}
    fingerprint = fold_fingerprint(window, families, panel.feature_names, extra)
    stored = store.read_metadata(*FOLDS, f"{fold}_points")
    if stored.get("fingerprint") == fingerprint and stored.get("predicted_through") == str(
        window.predict_end.date()
    ):
        context.log.info("%s: stored with the same fingerprint, reused", fold)
        return fold
    prices = universe_prices(store)

    def log_epoch(record: dict[str, Any]) -> None:
        context.log.info(
            "%s %s epoch %d: valid %.5f",
            fold,
            record["family"],
            record["epoch"],
            record.get("valid_loss", float("nan")),
        )

    fitted = {
        family: run
        for family, run in storage.read_research_fits(window).items()
        if family in families and same_fit(run.model, family, families[family], panel.horizons)
    }
    if fitted:
        context.log.info("%s: reuses the research window's fits of %s", fold, sorted(fitted))
    forecasts, runs = fold_forecasts(
        window,
        panel,
        families,
        recent_volatility(prices),
        forecasting.mc_samples,
        log_epoch,
        fitted,
    )
    tracker = registry.registry(storage)
    tags = {"finpipe.kind": "replay_fold", "finpipe.fold": fold, "code_version": extra["code"]}
    with tracker.run(f"replay {fold}", tags, {"families": list(families)}) as run_id:
        for family, run in runs.items():
            tracker.log_metrics(run_id, {f"{family}.{k}": v for k, v in run.model.metrics.items()})
            tracker.log_history(run_id, run.model.history, prefix=f"{family}.")
            png = training_curve_png(run.model.history, f"{family} {fold}")
            if png is not None:
                tracker.log_bytes(run_id, f"{family}_training_curve.png", png)
    metadata = {
        "fingerprint": fingerprint,
        "predicted_through": str(window.predict_end.date()),
        "validation": json.dumps(forecasts.validation, default=float),
        "mlflow_run": run_id,
        "dagster_run": context.run_id,
    }
    store.write(forecasts.scale, *FOLDS, f"{fold}_scale")
    store.write(forecasts.points, *FOLDS, f"{fold}_points", metadata=metadata)
    context.log.info(
        "%s: trained %s on %s..%s, predicted %s..%s (%d rows)",
        fold,
        list(families),
        window.train_start.date(),
        window.valid_end.date(),
        window.predict_start.date(),
        window.predict_end.date(),
        len(forecasts.points),
    )
    return fold


@dg.op
def collect_replay(
    context: dg.OpExecutionContext,
    folds: list[str],
    storage: StorageResource,
    training: TrainingSettings,
    forecasting: ForecastSettings,
    registry: RegistryResource,
) -> dg.Output:
    """Serve every fold in date order from the history of the folds before it: stacking
    weights, conformal intervals and versions, exactly as the serving fit does."""
    store = storage.store()
    plan = storage.read_plan()
    stored = [read_fold(store, name, plan.fold(name)) for name in folds]
    stored_meta = {name: store.read_metadata(*FOLDS, f"{name}_points") for name in folds}
    reused = [name for name, meta in stored_meta.items() if meta["dagster_run"] != context.run_id]
    tracker = registry.registry(storage)
    runs = {name: registry.link(tracker, meta["mlflow_run"]) for name, meta in stored_meta.items()}
    label_frame = store.read("features", "labels")[list(LABELS.required)]
    rows, fits = replay(stored, label_frame, tuple(forecasting.levels), forecasting.interval_level)
    for fit in fits:
        for note in fit.notes:
            context.log.info("replay %s: %s", fit.window.name, note)
    path = store.write(rows, *REPLAY_PATH)
    store.write(fold_summary(fits), "evaluation", "replay_folds")
    store.write(ensemble_weights(fits), "evaluation", "ensemble_weights")
    context.log.info("replay: %d rows over %d folds in %s", len(rows), len(fits), path)
    return dg.Output(
        None,
        metadata={
            "folds": dg.MetadataValue.int(len(fits)),
            "folds_reused": dg.MetadataValue.json(reused),
            "mlflow_runs": dg.MetadataValue.json(runs),
            "families": dg.MetadataValue.json(sorted(training.families)),
            "first_date": dg.MetadataValue.text(str(rows["date"].min().date())),
            "last_date": dg.MetadataValue.text(str(rows["date"].max().date())),
            "test_start": dg.MetadataValue.text(str(plan.test_start.date())),
            "procedure": dg.MetadataValue.md(procedure_text(plan, sorted(training.families))),
            "dagster/row_count": dg.MetadataValue.int(len(rows)),
            **contract_schema(REPLAY),
            "path": dg.MetadataValue.path(path),
        },
    )


@dg.graph_asset(
    group_name=GROUP,
    ins={
        "plan_ready": dg.AssetIn(key="time_plan", dagster_type=dg.Nothing),
        "panel_ready": dg.AssetIn(key="model_panel", dagster_type=dg.Nothing),
        "labels_ready": dg.AssetIn(key="labels", dagster_type=dg.Nothing),
        "prices_ready": dg.AssetIn(key="raw_prices", dagster_type=dg.Nothing),
        "decided": dg.AssetIn(key="research_decisions", dagster_type=dg.Nothing),
        "tuned": dg.AssetIn(key="tuned_params_table", dagster_type=dg.Nothing),
    },
)
def walk_forward_predictions(plan_ready, panel_ready, labels_ready, prices_ready, decided, tuned):
    """The served procedure replayed at every retrain date of the time plan: members,
    stacked ensemble and calibrated intervals, out of sample, over the research and test
    periods (its leak gate, a blocking check, runs before anything downstream)."""
    folds = plan_folds(
        plan=plan_ready,
        panel=panel_ready,
        labels=labels_ready,
        prices=prices_ready,
        decided=decided,
        tuned=tuned,
    )
    return collect_replay(folds.map(run_replay_fold).collect())


@dg.asset(
    group_name=GROUP,
    deps=[
        walk_forward_predictions,
        labels,
        raw_prices,
        benchmark_prices,
        time_plan,
        dg.AssetKey("portfolio_replay"),  # the construction methods replayed (group portfolio)
        dg.AssetKey("research_decisions"),  # the decision log (group research)
    ],
    kinds={"html"},
    code_version="4",
)
def backtest_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    training: TrainingSettings,
    evaluation: EvaluationSettings,
    market_data: MarketDataResource,
) -> dg.MaterializeResult:
    """The replay's test period beside the baselines, net of costs, by regime, with
    uncertainty and interval coverage per year, and the construction methods compared: an
    HTML report, a Markdown summary, PNG plots and metric tables (JSON and Parquet)."""
    store = storage.store()
    plan = storage.read_plan()
    rows = read_replay(storage)
    oos = rows[rows["date"] >= plan.test_start]
    prices = universe_prices(store)
    benchmark = read_table(store, "benchmark", PRICES, [market_data.benchmark_ticker()])
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
        folds=store.read("evaluation", "replay_folds"),
        decisions=store.read(*DECISIONS),
        procedure=procedure_text(plan, sorted(training.families)),
        constructions=store.read("portfolio", "replay_weights"),
        construction_fallbacks=store.read("portfolio", "replay_fallbacks"),
    )
    plots = render_plots(result)
    if "://" in storage.root:
        with tempfile.TemporaryDirectory() as tmp:
            write_report(result, tmp, evaluation.report_title, plots)
            folder = store.put_folder(tmp, "reports", "backtest")
    else:
        folder = str(storage.local_folder("reports", "backtest"))
        write_report(result, folder, evaluation.report_title, plots)
    report = Path(folder) / "report.html"
    context.log.info("backtest report: %s", report)
    key_plots = [embedded_png(k, plots[k]) for k in PLOTS if k in evaluation.metadata_plots]
    summary = summary_tables_markdown(result, evaluation.report_title)
    summary += "\n## Key plots\n\n" + "\n\n".join(key_plots)
    ensemble = result.forecast[result.forecast["model"] == "ensemble"]
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(summary),
            "report": dg.MetadataValue.path(str(report)),
            "strategies": dg.MetadataValue.int(len(result.performance)),
            "constructions": md_table(
                result.constructions[["strategy", "sharpe", "sharpe_lo", "sharpe_hi", "turnover"]]
            )
            if len(result.constructions)
            else dg.MetadataValue.text("no construction replay stored"),
            "ensemble_rank_ic": md_table(
                ensemble[["horizon", "rank_ic", "rank_ic_t", "directional_accuracy"]]
            ),
            "test_start": dg.MetadataValue.text(str(oos["date"].min().date())),
            "test_end": dg.MetadataValue.text(str(oos["date"].max().date())),
        }
    )


EVALUATION_ASSETS = [walk_forward_predictions, backtest_report]


def read_replay(storage: StorageResource) -> pd.DataFrame:
    """The stored replay (what walk_forward_predictions wrote)."""
    rows = storage.store().read(*REPLAY_PATH)
    if rows is None:
        raise FileNotFoundError(
            "the replay is not stored yet: materialize walk_forward_predictions"
        )
    return rows
