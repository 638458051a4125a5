"""Hyperparameter tuning: one Optuna study per model family, resumable from its storage.

The study lives in an RDB (a sqlite file locally, Postgres in deployment), so a rerun with
the same storage and study name continues where the last one stopped: it runs only the
trials still missing from `n_trials`. Sampling is TPE; a median pruner stops trials whose
per-epoch validation loss (the `progress` records of the training loop) lags the others.
The objective is the best validation loss, on the validation view passed in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from finpipe.models.base import TrainingFailedError
from finpipe.models.panel_data import PanelData
from finpipe.models.registry import create_model, model_class

logger = logging.getLogger(__name__)

_DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def storage_url(storage: str | os.PathLike[str]) -> str:
    """An RDB URL as given, or `sqlite:///<absolute path>` for a plain file path."""
    text = str(storage)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_study(
    family: str,
    storage: str | os.PathLike[str],
    study_name: str | None = None,
    seed: int = 0,
    n_startup_trials: int = 5,
    n_warmup_steps: int = 2,
) -> optuna.Study:
    """Create or reopen the study `study_name` (default `finpipe-<family>`) in `storage`."""
    model_class(family)
    url = storage_url(storage)
    try:
        rdb = optuna.storages.RDBStorage(url)
    except Exception as error:
        # SQLAlchemy and Optuna raise their own types for a file that is not a database.
        raise ValueError(
            f"the Optuna storage {url} is unreadable ({type(error).__name__}: {error}); delete "
            "it (the studies start again) or set training.optuna_storage to another database"
        ) from error
    return optuna.create_study(
        storage=rdb,
        study_name=study_name or f"finpipe-{family}",
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps
        ),
        load_if_exists=True,
    )


def tune(
    family: str,
    train: PanelData,
    valid: PanelData,
    storage: str | os.PathLike[str],
    n_trials: int = 20,
    study_name: str | None = None,
    base_params: dict[str, Any] | None = None,
    timeout: float | None = None,
    seed: int = 0,
    n_startup_trials: int = 5,
    n_warmup_steps: int = 2,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
) -> dict[str, Any]:
    """Tune `family` until the study holds `n_trials` finished trials; return the best params.

    The returned dict is `base_params` updated with the best trial's values, ready for
    `create_model(family, **params)`. `timeout` (seconds) bounds this call's run time;
    `callbacks` see every finished trial (e.g. to log it to MLflow).
    """
    base = {k: v for k, v in (base_params or {}).items() if k != "checkpoint_dir"}
    klass = model_class(family)
    study = open_study(family, storage, study_name, seed, n_startup_trials, n_warmup_steps)
    remaining = n_trials - sum(t.state in _DONE for t in study.trials)

    def objective(trial: optuna.Trial) -> float:
        params = {**base, **klass.search_space(trial)}
        trial.set_user_attr("params", params)

        def report(record: dict[str, Any]) -> None:
            trial.report(float(record["valid_loss"]), step=int(record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {record['epoch']}: below the median")

        model = create_model(family, **params).fit(train, valid, progress=report)
        for key in ("rank_ic_h" + str(h) for h in model.horizons or ()):
            trial.set_user_attr(key, model.metrics.get(key))
        trial.set_user_attr(
            "history",
            [
                {k: r[k] for k in ("epoch", "train_loss", "valid_loss") if k in r}
                for r in model.history
                if "epoch" in r
            ],
        )
        return float(model.metrics["valid_loss"])

    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            catch=(TrainingFailedError,),
            callbacks=list(callbacks),
        )
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"study {study.study_name!r} has no completed trial to choose from")
    best = study.best_trial
    logger.info("%s: best trial %d, valid loss %.5g", family, best.number, best.value)
    return {**base, **best.user_attrs["params"]}
