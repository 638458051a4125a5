"""Optuna tuning: persistent, resumable studies; per-epoch losses reach the pruner."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from finpipe.models import PanelData, create_model, time_split
from finpipe.models.tuning import open_study, storage_url, tune
from finpipe_tests.synthetic_model_data import model_frames

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def split() -> tuple[PanelData, PanelData]:
    features, labels = model_frames(n_tickers=6, n_days=220, seed=4, signal_strength=0.1)
    return time_split(PanelData.from_frames(features, labels), valid_fraction=0.3)


def test_storage_url(tmp_path: Path) -> None:
    assert storage_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert storage_url(tmp_path / "a" / "s.db") == f"sqlite:///{tmp_path / 'a' / 's.db'}"
    assert (tmp_path / "a").is_dir()


def test_study_resumes_from_its_storage(split: tuple[PanelData, PanelData], tmp_path: Path) -> None:
    train, valid = split
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    best = tune("ridge", train, valid, storage=storage, n_trials=3)
    assert set(best) == {"alpha"}
    assert len(open_study("ridge", storage).trials) == 3
    best = tune("ridge", train, valid, storage=storage, n_trials=5)  # e.g. after a crash
    study = open_study("ridge", storage)
    assert len(study.trials) == 5
    assert best["alpha"] == study.best_trial.params["alpha"]
    tune("ridge", train, valid, storage=storage, n_trials=5)
    assert len(open_study("ridge", storage).trials) == 5
    create_model("ridge", **best).fit(train, valid)


def test_pruner_sees_every_epoch(split: tuple[PanelData, PanelData], tmp_path: Path) -> None:
    train, valid = split
    storage = tmp_path / "torch.db"
    base = {
        "window": 8,
        "max_epochs": 3,
        "patience": 5,
        "samples_per_epoch": 256,
        "batch_size": 128,
        "valid_samples": 256,
        "checkpoint_dir": str(tmp_path / "ignored"),
    }
    best = tune(
        "gru", train, valid, storage=storage, n_trials=4, base_params=base, n_startup_trials=1
    )
    assert {"hidden_size", "lr", "dropout", "window"} <= set(best)
    assert best["max_epochs"] == 3 and "checkpoint_dir" not in best
    assert not (tmp_path / "ignored").exists()
    study = open_study("gru", storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert finished
    for trial in finished:
        assert sorted(trial.intermediate_values) == [0, 1, 2]
        assert trial.value == pytest.approx(min(trial.intermediate_values.values()))
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    for trial in pruned:  # stopped at the epoch the pruner said so, after reporting it
        assert sorted(trial.intermediate_values) == list(range(len(trial.intermediate_values)))


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="registered models"):
        open_study("xgboost", tmp_path / "s.db")
