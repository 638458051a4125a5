"""The shared training loop: device choice and overrides, losses, schedule, checkpoint
rotation and verification, resuming after an interruption, and NaN/divergence handling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from finpipe.models import PanelData, TrainingFailedError, create_model, time_split
from finpipe.models.panel_data import FeatureScaler, TargetScaler
from finpipe.models.torch_loop import (
    CheckpointError,
    CheckpointManager,
    DeviceUnavailableError,
    TrainConfig,
    _lr_lambda,
    autocast_dtype,
    forecast_loss,
    select_device,
    train_module,
)
from finpipe.models.windows import WindowDataset, window_dataset
from finpipe_tests.synthetic_model_data import model_frames

torch.set_num_threads(1)

TINY = {
    "hidden_size": 8,
    "window": 8,
    "max_epochs": 4,
    "patience": 10,
    "samples_per_epoch": 512,
    "batch_size": 128,
    "valid_samples": 256,
}


# -- device --------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("FORCE_CPU", raising=False)
    monkeypatch.delenv("FINPIPE_DEVICE", raising=False)
    return monkeypatch


def test_auto_device_prefers_cuda_then_mps_then_cpu(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device().type == "cuda"
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    clean_env.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device().type == "mps"
    clean_env.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device().type == "cpu"


def test_device_overrides(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setenv("FINPIPE_DEVICE", "cpu")
    assert select_device().type == "cpu"
    assert select_device("cuda").type == "cuda"  # an explicit argument beats the variable
    clean_env.setenv("FORCE_CPU", "1")
    assert select_device("cuda").type == "cpu"  # FORCE_CPU beats everything


def test_unavailable_device_is_an_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    clean_env.setattr(torch.backends.mps, "is_available", lambda: False)
    clean_env.setenv("FINPIPE_DEVICE", "cuda")
    with pytest.raises(DeviceUnavailableError, match="FORCE_CPU"):
        select_device()
    with pytest.raises(DeviceUnavailableError, match="mps"):
        select_device("mps")
    with pytest.raises(DeviceUnavailableError, match="unknown device"):
        select_device("tpu")


def test_device_override_reaches_training(
    clean_env: pytest.MonkeyPatch, tiny_split: tuple[PanelData, PanelData]
) -> None:
    clean_env.setattr(torch.cuda, "is_available", lambda: False)
    clean_env.setenv("FINPIPE_DEVICE", "cuda")
    train, valid = tiny_split
    with pytest.raises(DeviceUnavailableError):
        create_model("gru", **TINY).fit(train, valid)
    clean_env.setenv("FORCE_CPU", "1")
    model = create_model("gru", **TINY).fit(train, valid)
    assert next(model.module.parameters()).device.type == "cpu"


def test_bf16_only_on_cuda_by_default() -> None:
    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    with pytest.raises(ValueError):
        autocast_dtype(torch.device("cpu"), "fp8")


# -- losses and schedule ---------------------------------------------------------------


def test_losses_hand_worked() -> None:
    out = torch.tensor([[[1.0], [0.0]]])  # one sample, two horizons, one output
    y = torch.tensor([[3.0, 0.5]])
    both = torch.tensor([[True, True]])
    first = torch.tensor([[True, False]])
    assert forecast_loss(out, y, both, "mse").item() == pytest.approx((4 + 0.25) / 2)
    assert forecast_loss(out, y, first, "mse").item() == pytest.approx(4.0)
    # Huber (delta 1): |e| = 2 -> 2 - 0.5 = 1.5; |e| = 0.5 -> 0.125.
    assert forecast_loss(out, y, both, "huber").item() == pytest.approx((1.5 + 0.125) / 2)
    q = torch.tensor([0.1, 0.9])
    out_q = torch.tensor([[[2.0, 4.0]]])
    y_q = torch.tensor([[3.0]])
    # Pinball: y - q10 = 1 -> 0.1 * 1; y - q90 = -1 -> (0.9 - 1) * -1 = 0.1; mean 0.1.
    loss = forecast_loss(out_q, y_q, torch.tensor([[True]]), "quantile", q)
    assert loss.item() == pytest.approx(0.1)


def test_warmup_then_cosine() -> None:
    f = _lr_lambda(warmup=4, total=14)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(9) == pytest.approx(0.5)
    assert f(14) == pytest.approx(0.0)


# -- checkpoints -------------------------------------------------------------------------


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2,), value)}


def test_checkpoints_keep_the_best_three(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    for epoch, loss in enumerate([5.0, 4.0, 4.5, 3.0, 6.0, 2.0]):
        manager.save(epoch, loss, _state(loss))
    files = sorted(p.name for p in tmp_path.glob("epoch-*.pt"))
    assert files == ["epoch-0001.pt", "epoch-0003.pt", "epoch-0005.pt"]
    assert [e["valid_loss"] for e in manager.entries] == [2.0, 3.0, 4.0]
    best = manager.load_best()
    assert best["epoch"] == 5
    torch.testing.assert_close(best["model"]["w"], _state(2.0)["w"])
    on_disk = torch.load(tmp_path / "epoch-0003.pt", weights_only=True)
    assert on_disk["valid_loss"] == 3.0


def test_broken_checkpoint_keeps_the_previous_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    for epoch, loss in enumerate([3.0, 2.0, 1.0]):
        manager.save(epoch, loss, _state(loss))
    before = sorted(p.name for p in tmp_path.iterdir())

    def write_garbage(obj: object, path: Path) -> None:
        path.write_bytes(b"not a checkpoint")

    monkeypatch.setattr("finpipe.models.torch_loop._atomic_torch_save", write_garbage)
    with pytest.raises(CheckpointError, match="does not load"):
        manager.save(3, 0.5, _state(0.5))
    assert manager.best()["epoch"] == 2
    torch.testing.assert_close(manager.load_best()["model"]["w"], _state(1.0)["w"])
    assert all(n in sorted(p.name for p in tmp_path.iterdir()) for n in before)


# -- training runs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_split() -> tuple[PanelData, PanelData]:
    features, labels = model_frames(n_tickers=6, n_days=200, seed=2, signal_strength=0.1)
    return time_split(PanelData.from_frames(features, labels), valid_fraction=0.3)


class Interrupted(Exception):
    """Stands in for a killed process."""


def test_resume_after_interruption_matches_uninterrupted(
    tiny_split: tuple[PanelData, PanelData], tmp_path: Path
) -> None:
    train, valid = tiny_split
    reference = create_model("lstm", **TINY, checkpoint_dir=str(tmp_path / "ref")).fit(train, valid)

    def stop_after_epoch_1(record: dict) -> None:
        if record["epoch"] == 1:
            raise Interrupted

    ckpt = tmp_path / "run"
    with pytest.raises(Interrupted):
        create_model("lstm", **TINY, checkpoint_dir=str(ckpt)).fit(
            train, valid, progress=stop_after_epoch_1
        )
    assert (ckpt / "last.pt").exists()
    seen: list[int] = []
    resumed = create_model("lstm", **TINY, checkpoint_dir=str(ckpt)).fit(
        train, valid, progress=lambda r: seen.append(r["epoch"])
    )
    assert seen == [2, 3]  # epochs 0 and 1 were not run again
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(resumed.history, reference.history, strict=True):
        assert a["valid_loss"] == b["valid_loss"]
    pd.testing.assert_frame_equal(resumed.predict(valid), reference.predict(valid))
    assert len(json.loads((ckpt / "checkpoints.json").read_text())) == 3
    assert len(list(ckpt.glob("epoch-*.pt"))) == 3

    again: list[int] = []
    finished = create_model("lstm", **TINY, checkpoint_dir=str(ckpt)).fit(
        train, valid, progress=lambda r: again.append(r["epoch"])
    )
    assert again == []  # a finished run is not trained again
    pd.testing.assert_frame_equal(finished.predict(valid), reference.predict(valid))


def test_checkpoints_of_another_model_are_not_resumed(
    tiny_split: tuple[PanelData, PanelData], tmp_path: Path
) -> None:
    train, valid = tiny_split
    create_model("gru", **TINY, checkpoint_dir=str(tmp_path)).fit(train, valid)
    seen: list[int] = []
    params = {**TINY, "hidden_size": 4}
    create_model("gru", **params, checkpoint_dir=str(tmp_path)).fit(
        train, valid, progress=lambda r: seen.append(r["epoch"])
    )
    assert seen == [0, 1, 2, 3]


def _datasets(split: tuple[PanelData, PanelData]) -> tuple[WindowDataset, WindowDataset]:
    train, valid = split
    x = torch.from_numpy(FeatureScaler.fit(train).transform(train.features, pad=3))
    scaler = TargetScaler.fit(train)
    return (
        window_dataset(x, train, scaler, 4, True),
        window_dataset(x, valid, scaler, 4, True),
    )


class NaNOnFirstBuilds:
    """Builds linear nets; the first `bad` of them output NaN."""

    def __init__(self, bad: int) -> None:
        self.bad, self.built = bad, 0

    def __call__(self) -> nn.Module:
        self.built += 1
        poisoned = self.built <= self.bad

        class Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.linear = nn.Linear(4, 3)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out = self.linear(x[:, -1]).unsqueeze(-1)
                return out * float("nan") if poisoned else out

        return Net()


def test_nan_loss_is_retried_at_a_lower_learning_rate(
    tiny_split: tuple[PanelData, PanelData],
) -> None:
    train_data, valid_data = _datasets(tiny_split)
    config = TrainConfig(lr=1e-2, max_epochs=2, samples_per_epoch=256, retry_lr_factor=0.1)
    result = train_module(
        NaNOnFirstBuilds(bad=1), train_data, valid_data, config, torch.device("cpu")
    )
    assert result.attempts == 2
    assert result.lr == pytest.approx(1e-3)
    assert "nan" in result.failures[0].lower()
    assert all(r["attempt"] == 2 for r in result.history)
    assert all(math.isfinite(r["valid_loss"]) for r in result.history)


def test_repeated_nan_loss_fails_clearly(tiny_split: tuple[PanelData, PanelData]) -> None:
    train_data, valid_data = _datasets(tiny_split)
    config = TrainConfig(lr=1e-2, max_epochs=2, samples_per_epoch=256)
    with pytest.raises(TrainingFailedError, match=r"attempt 1 at lr=0\.01.*attempt 2 at lr=0\.001"):
        train_module(NaNOnFirstBuilds(bad=2), train_data, valid_data, config, torch.device("cpu"))


def test_exploding_learning_rate_is_reported(tiny_split: tuple[PanelData, PanelData]) -> None:
    train, valid = tiny_split
    model = create_model("gru", **TINY, lr=1e6, retry_lr_factor=1.0, grad_clip=1e9)
    with pytest.raises(TrainingFailedError, match="failed twice"):
        model.fit(train, valid)


def test_training_improves_on_predicting_the_mean(
    tiny_split: tuple[PanelData, PanelData],
) -> None:
    train, valid = tiny_split
    model = create_model("gru", **TINY).fit(train, valid)
    losses = [r["train_loss"] for r in model.history]
    assert losses[-1] < losses[0]
    assert np.isfinite(model.metrics["valid_loss"])
    assert all(0.0 <= r["data_share"] <= 1.0 for r in model.history)
