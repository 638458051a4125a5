"""The one training loop every PyTorch forecaster uses.

* Device: `select_device` picks CUDA, then Apple MPS, then CPU; an explicit choice, the
  `FINPIPE_DEVICE` environment variable or `FORCE_CPU=1` override it (FORCE_CPU wins).
* bf16 autocast on CUDA; AdamW with linear warm-up then cosine decay; gradient clipping;
  early stopping on validation loss.
* Seeded: module init, the per-epoch sample draw and dropout are seeded from (seed, epoch),
  so a run resumed from its last checkpoint continues exactly as if never interrupted.
* `CheckpointManager` keeps the best `keep` epochs by validation loss plus `last.pt`
  (full training state for resuming); every file is written atomically and checked to load
  with `torch.load(..., weights_only=True)` before anything older is removed.
* A non-finite or exploding loss aborts the attempt; training restarts once from scratch at
  a lower learning rate and, if that fails too, raises `TrainingFailedError` saying why.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from finpipe.core.storage import atomic_write_bytes
from finpipe.models.base import ProgressCallback, TrainingFailedError
from finpipe.models.windows import WindowDataset

logger = logging.getLogger(__name__)

LOSSES = ("mse", "huber", "quantile")


class DeviceUnavailableError(RuntimeError):
    """A device was requested (argument or FINPIPE_DEVICE) that this machine does not have."""


class CheckpointError(RuntimeError):
    """A checkpoint that was written but does not load back."""


class TrainingDivergedError(RuntimeError):
    """One training attempt produced a non-finite or exploding loss."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def select_device(preference: str | None = None) -> torch.device:
    """The device to train on: FORCE_CPU=1 > `preference` > FINPIPE_DEVICE > auto.

    Auto means CUDA if visible, else Apple MPS, else CPU. Asking for a device that is not
    present raises DeviceUnavailableError instead of silently falling back.
    """
    if _truthy(os.environ.get("FORCE_CPU")):
        return torch.device("cpu")
    name = (preference or os.environ.get("FINPIPE_DEVICE") or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceUnavailableError(
            f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {name!r} requested but no CUDA device is visible; "
            "unset FINPIPE_DEVICE or set FORCE_CPU=1"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(
            f"device {name!r} requested but Apple MPS is not available; "
            "unset FINPIPE_DEVICE or set FORCE_CPU=1"
        )
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 for `precision="bf16"`, or for "auto" on a CUDA device that supports it; else None."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision when `dtype` is set, a no-op otherwise."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def forecast_loss(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    loss: str,
    quantiles: torch.Tensor | None = None,
    huber_delta: float = 1.0,
) -> torch.Tensor:
    """Mean loss over the labelled (sample, horizon) cells.

    outputs [B, H, K] (K = 1 point output, or one per quantile), targets and mask [B, H].
    """
    if loss == "quantile":
        if quantiles is None:
            raise ValueError("quantile loss needs the quantile levels")
        diff = targets.unsqueeze(-1) - outputs
        cell = torch.maximum(quantiles * diff, (quantiles - 1.0) * diff).mean(-1)
    elif loss == "mse":
        cell = (outputs[..., 0] - targets) ** 2
    elif loss == "huber":
        cell = nn.functional.huber_loss(
            outputs[..., 0], targets, reduction="none", delta=huber_delta
        )
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    weight = mask.to(cell.dtype)
    return (cell * weight).sum() / weight.sum().clamp_min(1.0)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_checked(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} does not load: {err}; delete {path.parent} to train from scratch"
        ) from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} has no model state")
    return state


class CheckpointManager:
    """Best-`keep` checkpoints by validation loss, plus `last.pt` for resuming.

    Files: `epoch-NNNN.pt` ({epoch, valid_loss, model}), `last.pt` (full training state) and
    `checkpoints.json` (the kept epochs, best first). A new checkpoint is verified to load
    before the index changes and before any older file is deleted.
    """

    INDEX = "checkpoints.json"
    LAST = "last.pt"

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    @property
    def entries(self) -> list[dict[str, Any]]:
        """Kept checkpoints, best (lowest validation loss) first."""
        index = self.directory / self.INDEX
        if not index.exists():
            return []
        try:
            return json.loads(index.read_text())
        except ValueError as error:
            raise CheckpointError(
                f"checkpoint index {index} is unreadable ({error}); delete {self.directory} "
                "to train from scratch"
            ) from error

    def _write_index(self, entries: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.directory / self.INDEX, json.dumps(entries).encode())

    def save(self, epoch: int, valid_loss: float, model_state: dict[str, torch.Tensor]) -> bool:
        """Keep this epoch if it ranks among the best; returns whether it was kept."""
        entries = [e for e in self.entries if e["epoch"] != epoch]
        if len(entries) >= self.keep and valid_loss >= entries[self.keep - 1]["valid_loss"]:
            return False
        name = f"epoch-{epoch:04d}.pt"
        path = self.directory / name
        cpu_state = {k: v.detach().cpu() for k, v in model_state.items()}
        _atomic_torch_save({"epoch": epoch, "valid_loss": valid_loss, "model": cpu_state}, path)
        _load_checked(path)
        entries.append({"epoch": epoch, "valid_loss": valid_loss, "file": name})
        entries.sort(key=lambda e: (e["valid_loss"], e["epoch"]))
        kept, dropped = entries[: self.keep], entries[self.keep :]
        self._write_index(kept)
        for entry in dropped:
            (self.directory / entry["file"]).unlink(missing_ok=True)
        return True

    def best(self) -> dict[str, Any] | None:
        entries = self.entries
        return entries[0] if entries else None

    def load_best(self) -> dict[str, Any]:
        """The best checkpoint's contents ({epoch, valid_loss, model})."""
        best = self.best()
        if best is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        return _load_checked(self.directory / best["file"])

    def save_last(self, state: dict[str, Any]) -> None:
        path = self.directory / self.LAST
        _atomic_torch_save(state, path)
        _load_checked(path)

    def load_last(self) -> dict[str, Any] | None:
        """The last training state, or None if there is none or it does not load."""
        path = self.directory / self.LAST
        if not path.exists():
            return None
        try:
            return _load_checked(path)
        except CheckpointError as err:
            logger.warning("ignoring unreadable %s: %s", path, err)
            return None

    def clear(self) -> None:
        """Remove every checkpoint this manager wrote."""
        for entry in self.entries:
            (self.directory / entry["file"]).unlink(missing_ok=True)
        (self.directory / self.INDEX).unlink(missing_ok=True)
        (self.directory / self.LAST).unlink(missing_ok=True)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every PyTorch family."""

    loss: str = "huber"
    quantiles: tuple[float, ...] = ()
    huber_delta: float = 1.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 8
    patience: int = 3
    warmup_frac: float = 0.1
    grad_clip: float = 1.0
    samples_per_epoch: int | None = 16384
    valid_samples: int | None = 8192
    seed: int = 0
    precision: str = "auto"
    divergence_factor: float = 10.0
    retry_lr_factor: float = 0.1
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 3
    sync_timing: bool = False


@dataclass
class TrainResult:
    """Best weights and the record of how they were found."""

    state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_valid_loss: float
    history: list[dict[str, Any]]
    lr: float
    attempts: int
    failures: list[str] = field(default_factory=list)


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _valid_ids(n: int, limit: int | None) -> torch.Tensor:
    """A fixed, evenly spread subset of validation samples (all of them if within `limit`)."""
    if limit is None or n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long().unique()


def evaluate_loss(
    module: nn.Module,
    data: WindowDataset,
    ids: torch.Tensor,
    config: TrainConfig,
    device: torch.device,
    amp: torch.dtype | None,
    quantiles: torch.Tensor | None,
) -> float:
    """Mean validation loss over `ids` (weighted by labelled cells), in eval mode."""
    module.eval()
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for batch in ids.split(max(config.batch_size * 4, 1)):
            x, y, m = (t.to(device, non_blocking=True) for t in data.gather(batch))
            with autocast(device, amp):
                out = module(x)
            cells = float(m.sum())
            loss = forecast_loss(out.float(), y, m, config.loss, quantiles, config.huber_delta)
            total += float(loss) * cells
            weight += cells
    return total / max(weight, 1.0)


def _zero_prediction_loss(
    data: WindowDataset, ids: torch.Tensor, config: TrainConfig, quantiles: torch.Tensor | None
) -> float:
    """Validation loss of always predicting zero (the training mean of standardised targets):
    the yardstick for calling a loss exploded."""
    ids = ids.to(data.date_idx.device)
    d, t = data.date_idx[ids], data.ticker_idx[ids]
    y, m = data.targets[d, t], data.target_mask[d, t]
    outputs = torch.zeros((*y.shape, len(config.quantiles) if quantiles is not None else 1))
    q = quantiles.cpu() if quantiles is not None else None
    loss = forecast_loss(outputs, y.cpu().float(), m.cpu(), config.loss, q, config.huber_delta)
    return max(float(loss), 1e-8)


def train_module(
    build_module: Callable[[], nn.Module],
    train_data: WindowDataset,
    valid_data: WindowDataset,
    config: TrainConfig,
    device: torch.device,
    progress: ProgressCallback | None = None,
    fingerprint: str = "",
) -> TrainResult:
    """Train a fresh module from `build_module` and return the best weights by validation loss.

    With `config.checkpoint_dir` set, training resumes from its `last.pt` when that was
    written by a run with the same `fingerprint`; otherwise checkpoints live in a temporary
    directory for the duration of the call. `progress` receives one dict per epoch, after the
    epoch's checkpoint is safely written (an exception it raises stops training cleanly).
    """
    if len(train_data) == 0 or len(valid_data) == 0:
        raise ValueError(
            f"need training and validation samples, got {len(train_data)} and {len(valid_data)}"
        )
    with tempfile.TemporaryDirectory(prefix="finpipe-ckpt-") as scratch:
        manager = CheckpointManager(config.checkpoint_dir or scratch, config.keep_checkpoints)
        resume = manager.load_last()
        if resume is not None and resume.get("fingerprint") != fingerprint:
            logger.warning(
                "checkpoints in %s belong to another model or data set; starting afresh",
                manager.directory,
            )
            manager.clear()
            resume = None
        attempt = int(resume["attempt"]) if resume else 1
        lr = float(resume["lr"]) if resume else config.lr
        failures: list[str] = list(resume.get("failures", [])) if resume else []
        while True:
            try:
                return _run_attempt(
                    build_module,
                    train_data,
                    valid_data,
                    config,
                    device,
                    progress,
                    manager,
                    resume,
                    attempt,
                    lr,
                    fingerprint,
                    failures,
                )
            except TrainingDivergedError as err:
                failures.append(f"attempt {attempt} at lr={lr:.3g}: {err}")
                if attempt >= 2:
                    raise TrainingFailedError(
                        "training failed twice; " + "; ".join(failures) + ". Check the inputs "
                        "for extreme values, or lower lr / raise grad clipping."
                    ) from err
                logger.warning("%s; retrying once at lr=%.3g", failures[-1], lr)
                manager.clear()
                resume = None
                attempt += 1
                lr *= config.retry_lr_factor


def _run_attempt(
    build_module: Callable[[], nn.Module],
    train_data: WindowDataset,
    valid_data: WindowDataset,
    config: TrainConfig,
    device: torch.device,
    progress: ProgressCallback | None,
    manager: CheckpointManager,
    resume: dict[str, Any] | None,
    attempt: int,
    lr: float,
    fingerprint: str,
    failures: list[str],
) -> TrainResult:
    torch.manual_seed(config.seed)
    module = build_module().to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=config.weight_decay)
    n_train = len(train_data)
    per_epoch = min(n_train, config.samples_per_epoch or n_train)
    steps_per_epoch = math.ceil(per_epoch / config.batch_size)
    total_steps = steps_per_epoch * config.max_epochs
    warmup = max(1, int(config.warmup_frac * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, total_steps))
    amp = autocast_dtype(device, config.precision)
    quantiles = (
        torch.tensor(config.quantiles, dtype=torch.float32, device=device)
        if config.loss == "quantile"
        else None
    )
    valid_ids = _valid_ids(len(valid_data), config.valid_samples)
    baseline = _zero_prediction_loss(valid_data, valid_ids, config, quantiles)

    start_epoch, history, bad_epochs, finished = 0, [], 0, False
    best_loss = math.inf
    if resume is not None:
        module.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch = int(resume["epoch"]) + 1
        history = list(resume["history"])
        bad_epochs = int(resume["bad_epochs"])
        best_loss = float(resume["best_valid_loss"])
        finished = bool(resume["finished"])

    epoch = start_epoch
    while not finished and epoch < config.max_epochs:
        record = _train_epoch(
            module,
            optimizer,
            scheduler,
            train_data,
            config,
            device,
            amp,
            quantiles,
            epoch,
            per_epoch,
        )
        valid_loss = evaluate_loss(module, valid_data, valid_ids, config, device, amp, quantiles)
        if not math.isfinite(valid_loss):
            raise TrainingDivergedError(f"validation loss is {valid_loss} at epoch {epoch}")
        if valid_loss > config.divergence_factor * baseline:
            raise TrainingDivergedError(
                f"validation loss exploded to {valid_loss:.4g} at epoch {epoch}, over "
                f"{config.divergence_factor:g}x the {baseline:.4g} of predicting the training mean"
            )
        improved = valid_loss < best_loss
        best_loss = min(best_loss, valid_loss)
        bad_epochs = 0 if improved else bad_epochs + 1
        finished = bad_epochs >= config.patience or epoch + 1 >= config.max_epochs
        record.update(
            attempt=attempt, valid_loss=valid_loss, best_valid_loss=best_loss, improved=improved
        )
        history.append(record)
        manager.save(epoch, valid_loss, module.state_dict())
        manager.save_last(
            {
                "fingerprint": fingerprint,
                "attempt": attempt,
                "lr": lr,
                "failures": failures,
                "epoch": epoch,
                "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "bad_epochs": bad_epochs,
                "best_valid_loss": best_loss,
                "finished": finished,
            }
        )
        if progress is not None:
            progress(dict(record))
        epoch += 1

    best = manager.load_best()
    return TrainResult(
        state_dict=best["model"],
        best_epoch=int(best["epoch"]),
        best_valid_loss=float(best["valid_loss"]),
        history=history,
        lr=lr,
        attempts=attempt,
        failures=list(failures),
    )


def _train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: WindowDataset,
    config: TrainConfig,
    device: torch.device,
    amp: torch.dtype | None,
    quantiles: torch.Tensor | None,
    epoch: int,
    per_epoch: int,
) -> dict[str, Any]:
    """One pass over a seeded random draw of `per_epoch` training samples."""
    module.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    torch.manual_seed(config.seed * 7_919 + epoch)
    ids = torch.randperm(len(data), generator=generator)[:per_epoch]
    sync = config.sync_timing and device.type == "cuda"
    loss_sum = torch.zeros((), device=device)
    data_seconds = 0.0
    started = time.perf_counter()
    for batch in ids.split(config.batch_size):
        t0 = time.perf_counter()
        x, y, m = (t.to(device, non_blocking=True) for t in data.gather(batch))
        if sync:
            torch.cuda.synchronize(device)
        data_seconds += time.perf_counter() - t0
        with autocast(device, amp):
            out = module(x)
        loss = forecast_loss(out.float(), y, m, config.loss, quantiles, config.huber_delta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(batch)
    if sync:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    train_loss = float(loss_sum) / max(per_epoch, 1)
    if not math.isfinite(train_loss):
        raise TrainingDivergedError(f"training loss is {train_loss} at epoch {epoch}")
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "samples": per_epoch,
        "seconds": seconds,
        "samples_per_s": per_epoch / max(seconds, 1e-9),
        "data_share": data_seconds / max(seconds, 1e-9),
    }
