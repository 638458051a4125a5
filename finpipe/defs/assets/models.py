"""Group `models`: one asset per registered model family (an asset factory over the registry),
so each family trains, retries and scales out on its own; group `tuning`: Optuna studies."""

import base64
import json
import tempfile
from typing import Any

import dagster as dg
import pandas as pd

from finpipe.core.storage import ParquetStore
from finpipe.defs.assets.features import features, labels
from finpipe.defs.resources import ResearchSettings, StorageResource, TrainingSettings
from finpipe.models import PanelData
from finpipe.models.registry import is_pytorch_family, list_models, model_class
from finpipe.models.trainer import train_family, train_valid_split, training_curve_png
from finpipe.models.tuning import tune

GROUP = "models"


def load_research_frames(store: ParquetStore) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(stored features, stored labels)."""
    frame = store.read("features", "features")
    label_frame = store.read("features", "labels")
    if frame is None or label_frame is None:
        raise FileNotFoundError(
            "features and labels are not stored yet: materialize group features"
        )
    return frame, label_frame


def research_panel(
    frame: pd.DataFrame, label_frame: pd.DataFrame, research: ResearchSettings
) -> tuple[PanelData, Any]:
    """(panel of features and labels for the configured horizons, train_end)."""
    panel = PanelData.from_frames(frame, label_frame, horizons=tuple(research.horizons))
    return panel, research.train_end_date(frame["date"])


def load_research_panel(store: ParquetStore, research: ResearchSettings) -> tuple[PanelData, Any]:
    """`research_panel` of the stored features and labels."""
    return research_panel(*load_research_frames(store), research)


def tuned_params(store: ParquetStore, family: str) -> dict[str, Any]:
    """Best parameters the tune job stored for `family` (empty when it has not run)."""
    table = store.read("models", "tuned_params")
    if table is None or family not in set(table["family"]):
        return {}
    return json.loads(table.loc[table["family"] == family, "params_json"].iloc[-1])


def metric_metadata(metrics: dict[str, float], horizons: list[int]) -> dict[str, dg.MetadataValue]:
    out = {"valid_loss": dg.MetadataValue.float(float(metrics["valid_loss"]))}
    for h in horizons:
        for key in ("mse", "rank_ic", "rank_ic_se", "directional_accuracy"):
            name = f"{key}_h{h}"
            if name in metrics:
                out[name] = dg.MetadataValue.float(float(metrics[name]))
    return out


def model_asset(family: str) -> dg.AssetsDefinition:
    """The asset that trains `family` on the research period and stores it under models/."""

    @dg.asset(
        name=f"model_{family}",
        group_name=GROUP,
        deps=[features, labels],
        kinds={"pytorch" if is_pytorch_family(family) else "scikitlearn"},
        description=f"{model_class(family).__doc__ or family}".strip().splitlines()[0],
        retry_policy=dg.RetryPolicy(max_retries=1),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        research: ResearchSettings,
        training: TrainingSettings,
    ) -> dg.MaterializeResult:
        store = storage.store()
        panel, train_end = load_research_panel(store, research)
        train, valid = train_valid_split(panel, train_end, training.valid_fraction)
        params = {**training.params_for(family), **tuned_params(store, family)}
        if is_pytorch_family(family):
            params.setdefault("checkpoint_dir", storage.checkpoint_dir(family))
        context.log.info(
            "%s: training on %d samples up to %s with %s",
            family,
            train.n_samples,
            pd.Timestamp(train_end).date(),
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
        with tempfile.TemporaryDirectory() as tmp:
            run.model.save(tmp)
            path = store.put_folder(tmp, "models", family)
        epochs = [h for h in run.model.history if "epoch" in h]
        metadata = {
            **metric_metadata(run.model.metrics, list(research.horizons)),
            "device": dg.MetadataValue.text(run.device),
            "epochs": dg.MetadataValue.int(len(epochs)),
            "wall_seconds": dg.MetadataValue.float(round(run.wall_seconds, 2)),
            "train_samples": dg.MetadataValue.int(run.train_samples),
            "valid_samples": dg.MetadataValue.int(run.valid_samples),
            "train_end": dg.MetadataValue.text(str(pd.Timestamp(train_end).date())),
            "params": dg.MetadataValue.json(run.model.get_params()),
            "path": dg.MetadataValue.path(path),
        }
        if run.parameter_count is not None:
            metadata["parameter_count"] = dg.MetadataValue.int(run.parameter_count)
        if epochs:
            rate = sum(h["samples_per_s"] for h in epochs) / len(epochs)
            metadata["samples_per_second"] = dg.MetadataValue.float(round(rate, 1))
        png = training_curve_png(run.model.history, f"{family} training curve")
        if png is not None:
            encoded = base64.b64encode(png).decode()
            metadata["training_curve"] = dg.MetadataValue.md(
                f"![training curve](data:image/png;base64,{encoded})"
            )
        context.log.info("%s: validation %s", family, run.model.metrics)
        return dg.MaterializeResult(metadata=metadata)

    return _asset


MODEL_ASSETS = [model_asset(family) for family in list_models()]


@dg.asset(group_name="tuning", deps=[features, labels], kinds={"optuna"})
def tuned_params_table(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    research: ResearchSettings,
    training: TrainingSettings,
) -> dg.MaterializeResult:
    """Best parameters per family from a resumable Optuna study (TPE, median pruner).

    Model assets use them when present. The study lives in `training.optuna_storage`
    (default: a SQLite file in the data root; a Postgres URL in deployment), so a re-run
    resumes where the last one stopped.
    """
    store = storage.store()
    panel, train_end = load_research_panel(store, research)
    train, valid = train_valid_split(panel, train_end, training.valid_fraction)
    rows = []
    for family in training.tune_families:
        context.log.info(
            "tuning %s: %d trials in %s", family, training.tune_trials, training.optuna_url(storage)
        )
        best = tune(
            family,
            train,
            valid,
            training.optuna_url(storage),
            n_trials=training.tune_trials,
            base_params=training.params_for(family),
        )
        context.log.info("tuning %s: best %s", family, best)
        rows.append({"family": family, "params_json": json.dumps(best, sort_keys=True)})
    table = pd.DataFrame(rows, columns=["family", "params_json"])
    existing = store.read("models", "tuned_params")
    if existing is not None:
        table = pd.concat([existing[~existing["family"].isin(table["family"])], table])
    store.write(table.reset_index(drop=True), "models", "tuned_params")
    return dg.MaterializeResult(
        metadata={
            "best_params": dg.MetadataValue.json(
                {r["family"]: json.loads(r["params_json"]) for r in rows}
            )
        }
    )
