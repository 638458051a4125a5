"""Choices made on the research period only, before anything is scored on the test period.
Group `research`: each served family's inputs (training target, feature scaling, feature
selection), with the decision log the report shows. Group `tuning` (its own job):
Optuna studies of the families' hyperparameters."""

import hashlib
import json

import dagster as dg
import optuna
import pandas as pd

from finpipe.core.provenance import code_fingerprint
from finpipe.defs.assets.features import model_panel, time_plan
from finpipe.defs.metadata import md_table
from finpipe.defs.resources import (
    DECIDED_PARAMS,
    DECISIONS,
    TUNED_PARAMS,
    RegistryResource,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
)
from finpipe.evaluation.research import INPUT_AXES, decide_inputs
from finpipe.models.trainer import training_curve_png, window_views
from finpipe.models.tuning import tune

GROUP = "research"


@dg.asset(group_name=GROUP, deps=[model_panel, time_plan], kinds={"pandas"}, code_version="1")
def research_decisions(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    training: TrainingSettings,
    research: ResearchSettings,
) -> dg.MaterializeResult:
    """Each served family's inputs along `research.decision_axes`, chosen on the research
    window (the first test fit's: fit on its dates, scored on its early-stopping tail) by
    validation rank IC with the one-standard-error rule; the test period is never read.
    The model assets and the replay train with the chosen inputs wherever the config (or
    tuning) sets none. Decisions are kept while the panel, window, settings and code are
    unchanged."""
    store = storage.store()
    plan = storage.read_plan()
    window = plan.research_window
    axes = {axis: INPUT_AXES[axis] for axis in research.decision_axes}
    bases = {
        family: {**storage.read_tuned_params(family), **training.params_for(family)}
        for family in sorted(training.families)
    }
    facts = [storage.panel_fingerprint(), window.to_dict(), axes, bases, code_fingerprint()]
    fingerprint = hashlib.sha256(
        json.dumps(facts, sort_keys=True, default=str).encode()
    ).hexdigest()
    stored = store.read_json(*DECIDED_PARAMS) or {}
    table = store.read(*DECISIONS)
    if stored.get("fingerprint") == fingerprint and table is not None:
        context.log.info("research decisions: unchanged inputs, kept %s", stored["params"])
    else:
        fit, tail = window_views(storage.read_panel(), window)
        context.log.info(
            "research decisions on %s..%s (validation %s..%s) along %s",
            window.train_start.date(),
            window.fit_end.date(),
            window.valid_start.date(),
            window.valid_end.date(),
            list(axes),
        )
        decisions = [
            decide_inputs(family, fit, tail, base, axes, progress=context.log.info)
            for family, base in bases.items()
        ]
        table = pd.concat([d.table for d in decisions], ignore_index=True)
        for column in ("rank_ic_by_horizon", "rank_ic_se_by_horizon"):
            table[column] = table[column].map(
                lambda v: json.dumps(v) if isinstance(v, dict) else None
            )
        table = table.astype(
            {"target": object, "feature_scaling": object, "feature_selection": object}
        )
        stored = {
            "fingerprint": fingerprint,
            "window": window.to_dict(),
            "axes": list(axes),
            "params": {d.family: d.params for d in decisions},
        }
        store.write(table, *DECISIONS)
        store.write_json(stored, *DECIDED_PARAMS)
        fits = {d.family: d.run for d in decisions if d.run is not None}
        where = storage.write_research_fits(fits, window)
        context.log.info(
            "research decisions: the chosen fits of %s stored in %s (the first test fold, "
            "which trains on this window, reuses them)",
            sorted(fits),
            where,
        )
    chosen = table[table["chosen"]]
    return dg.MaterializeResult(
        metadata={
            "decided": dg.MetadataValue.json(stored["params"]),
            "decision_log": md_table(
                table[["family", "step", *axes, "score", "score_se", "chosen"]].round(4)
            ),
            "chosen": md_table(chosen[["family", *axes, "score"]].round(4)),
            "window": dg.MetadataValue.text(
                f"fit {window.train_start.date()}..{window.fit_end.date()}, scored on "
                f"{window.valid_start.date()}..{window.valid_end.date()} (research period)"
            ),
        }
    )


@dg.asset(group_name="tuning", deps=[model_panel, time_plan], kinds={"optuna", "mlflow"})
def tuned_params_table(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    training: TrainingSettings,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    """Best parameters per family from a resumable Optuna study (TPE, median pruner), tuned
    on the research period only: the window of the first test fit, whose every label ends
    before the research boundary. Every trial is an MLflow run. Model assets use the best
    parameters where the config sets none."""
    plan = storage.read_plan()
    window = plan.research_window
    train, valid = window_views(storage.read_panel(), window)
    tracker = registry.registry(storage)
    rows = []
    for family in training.tune_families:
        context.log.info(
            "tuning %s on %s..%s: %d trials in %s",
            family,
            window.train_start.date(),
            window.valid_end.date(),
            training.tune_trials,
            training.optuna_url(storage),
        )

        def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, f=family) -> None:
            tags = {"finpipe.family": f, "finpipe.kind": "tuning", "optuna.study": study.study_name}
            params = trial.user_attrs.get("params", trial.params)
            with tracker.run(f"{f} trial {trial.number}", tags, params) as run_id:
                metrics = {k: v for k, v in trial.user_attrs.items() if k.startswith("rank_ic")}
                if trial.value is not None:
                    metrics["valid_loss"] = trial.value
                tracker.log_metrics(run_id, metrics)
                history = trial.user_attrs.get("history", [])
                tracker.log_history(run_id, history)
                png = training_curve_png(history, f"{f} trial {trial.number}")
                if png is not None:
                    tracker.log_bytes(run_id, "training_curve.png", png)

        best = tune(
            family,
            train,
            valid,
            training.optuna_url(storage),
            n_trials=training.tune_trials,
            base_params=training.params_for(family),
            callbacks=[log_trial],
        )
        context.log.info("tuning %s: best %s", family, best)
        rows.append({"family": family, "params_json": json.dumps(best, sort_keys=True)})
    store = storage.store()
    table = pd.DataFrame(rows, columns=["family", "params_json"])
    existing = store.read(*TUNED_PARAMS)
    if existing is not None:
        table = pd.concat([existing[~existing["family"].isin(table["family"])], table])
    store.write(table.reset_index(drop=True), *TUNED_PARAMS)
    return dg.MaterializeResult(
        metadata={
            "best_params": dg.MetadataValue.json(
                {r["family"]: json.loads(r["params_json"]) for r in rows}
            ),
            "tuned_on": dg.MetadataValue.text(
                f"{window.train_start.date()}..{window.valid_end.date()} (research period)"
            ),
        }
    )
