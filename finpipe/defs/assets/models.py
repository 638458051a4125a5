"""Group `models`: one asset per registered model family (an asset factory over the registry)
that trains the serving model on the time plan's serving window and registers it in MLflow,
and the serving ensemble (stacking weights and conformal calibration from the replay's
out-of-sample history)."""

from typing import Any

import dagster as dg

from finpipe.core.contracts import LABELS
from finpipe.core.provenance import code_fingerprint
from finpipe.defs.assets.evaluation import read_replay, walk_forward_predictions
from finpipe.defs.assets.features import labels, model_panel, time_plan
from finpipe.defs.assets.research import research_decisions, tuned_params_table
from finpipe.defs.metadata import embedded_png
from finpipe.defs.resources import (
    ForecastSettings,
    RegistryResource,
    StorageResource,
    TrainingSettings,
)
from finpipe.forecasting.system import (
    fit_ensemble,
    fold_windows,
    known_history,
    publish_ensemble,
)
from finpipe.models.registry import FAMILIES, is_pytorch_family, list_models
from finpipe.models.trainer import train_family, training_curve_png, window_views
from finpipe.models.versions import (
    CHAMPION,
    publish_training,
    settle_challenger,
    window_tags,
)

GROUP = "models"


def metric_metadata(metrics: dict[str, float], horizons: tuple[int, ...]) -> dict:
    out = {"valid_loss": dg.MetadataValue.float(float(metrics["valid_loss"]))}
    for h in horizons:
        for key in ("mse", "rank_ic", "rank_ic_se", "directional_accuracy"):
            name = f"{key}_h{h}"
            if name in metrics:
                out[name] = dg.MetadataValue.float(float(metrics[name]))
    return out


def model_asset(family: str) -> dg.AssetsDefinition:
    """The asset that trains `family` on the serving window, registers the new version and
    makes it champion or challenger."""

    @dg.asset(
        name=f"model_{family}",
        group_name=GROUP,
        deps=[model_panel, time_plan, tuned_params_table, research_decisions],
        kinds={"pytorch" if is_pytorch_family(family) else "scikitlearn", "mlflow"},
        description=FAMILIES[family].summary,
        code_version="2",
    )
    def _asset(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        training: TrainingSettings,
        forecasting: ForecastSettings,
        registry: RegistryResource,
    ) -> dg.MaterializeResult:
        if family not in training.families:
            reason = f"{family} is not in training.families {training.families}: not trained"
            context.log.info(reason)
            return dg.MaterializeResult(
                metadata={"served": dg.MetadataValue.bool(False), "reason": reason}
            )
        panel, plan = storage.read_panel(), storage.read_plan()
        window = plan.serving
        train, valid = window_views(panel, window)
        params, sources = training.resolved_params(family, storage)
        if is_pytorch_family(family):
            params.setdefault("checkpoint_dir", storage.checkpoint_dir(family))
        context.log.info(
            "%s: fitting on %s..%s (%d samples), early-stopping on %s..%s, with %s",
            family,
            window.train_start.date(),
            window.fit_end.date(),
            train.n_samples,
            window.valid_start.date(),
            window.valid_end.date(),
            params,
        )

        def log_epoch(record: dict[str, Any]) -> None:
            context.log.info(
                "%s epoch %d: train %.5f valid %.5f (%.0f samples/s, data %.1f%%)",
                family,
                record["epoch"],
                record.get("train_loss", float("nan")),
                record.get("valid_loss", float("nan")),
                record.get("samples_per_s", 0.0),
                100 * record.get("data_share", 0.0),
            )

        run = train_family(family, train, valid, params, progress=log_epoch)
        tracker = registry.registry(storage)
        png = training_curve_png(run.model.history, f"{family} training curve")
        provenance = {
            "data_fingerprint": storage.panel_fingerprint(),
            "code_version": code_fingerprint(),
        }
        version, run_id = publish_training(tracker, family, run, window, provenance, png)
        comparison = settle_challenger(
            tracker, family, version, panel, forecasting.promotion_min_dates
        )
        role = CHAMPION if comparison.promote else "challenger"
        context.log.info(
            "%s: registered %s as %s (%s)", family, version.uri, role, comparison.reason
        )
        metadata = {
            **metric_metadata(run.model.metrics, panel.horizons),
            "model_version": dg.MetadataValue.text(version.uri),
            "role": dg.MetadataValue.text(role),
            "promotion": dg.MetadataValue.text(comparison.reason),
            "mlflow_run": dg.MetadataValue.url(registry.link(tracker, run_id)),
            "trained_through": dg.MetadataValue.text(str(window.trained_through.date())),
            "window": dg.MetadataValue.json(window_tags(window)),
            "device": dg.MetadataValue.text(run.device),
            "epochs": dg.MetadataValue.int(len([h for h in run.model.history if "epoch" in h])),
            "wall_seconds": dg.MetadataValue.float(round(run.wall_seconds, 2)),
            "train_samples": dg.MetadataValue.int(run.train_samples),
            "valid_samples": dg.MetadataValue.int(run.valid_samples),
            "params": dg.MetadataValue.json(run.model.get_params()),
            "param_sources": dg.MetadataValue.json(
                {k: sources.get(k, "default") for k in run.model.get_params()}
            ),
            "served": dg.MetadataValue.bool(True),
        }
        if run.parameter_count is not None:
            metadata["parameter_count"] = dg.MetadataValue.int(run.parameter_count)
        epochs = [h for h in run.model.history if "epoch" in h]
        if epochs:
            rate = sum(h["samples_per_s"] for h in epochs) / len(epochs)
            metadata["samples_per_second"] = dg.MetadataValue.float(round(rate, 1))
        if png is not None:
            metadata["training_curve"] = dg.MetadataValue.md(embedded_png("training curve", png))
        return dg.MaterializeResult(metadata=metadata)

    return _asset


MODEL_ASSETS = [model_asset(family) for family in list_models()]


@dg.asset(
    group_name=GROUP,
    deps=[walk_forward_predictions, labels, time_plan],
    kinds={"mlflow"},
    code_version="1",
)
def serving_ensemble(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    training: TrainingSettings,
    forecasting: ForecastSettings,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    """Stacking weights and conformal quantiles of the served ensemble, fitted at the serving
    window from the replay's out-of-sample rows whose labels are known by its cutoff (the
    same step every replay fold takes), registered as a version of `finpipe-ensemble`."""
    store = storage.store()
    plan = storage.read_plan()
    replay = read_replay(storage)
    label_frame = store.read("features", "labels")
    window = plan.serving
    fit = fit_ensemble(
        known_history(replay, label_frame[list(LABELS.required)], window),
        window,
        sorted(training.families),
        fold_windows(plan.folds),
        tuple(forecasting.levels),
    )
    for note in fit.notes:
        context.log.warning("serving_ensemble: %s", note)
    tracker = registry.registry(storage)
    version, run_id = publish_ensemble(tracker, fit, {"code_version": code_fingerprint()})
    weights = fit.stack.coefficients if fit.stack is not None else "equal weights"
    context.log.info("serving_ensemble: %s, weights %s", version.uri, weights)
    return dg.MaterializeResult(
        metadata={
            "model_version": dg.MetadataValue.text(version.uri),
            "mlflow_run": dg.MetadataValue.url(registry.link(tracker, run_id)),
            "members": dg.MetadataValue.json(list(fit.members)),
            "stacking_weights": dg.MetadataValue.json(weights),
            "history": dg.MetadataValue.json(fit.history),
            "notes": dg.MetadataValue.json(fit.notes),
            "window": dg.MetadataValue.json(window_tags(window)),
        }
    )
