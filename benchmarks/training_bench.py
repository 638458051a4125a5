"""Training benchmark: samples/second per model family and the share of step time spent
outside the model (gathering windows and moving them to the device; target under 10%).

Runs every registered family with its default (demo) parameters on a synthetic panel of
demo size: `--tickers` x `--days`, `--features` trailing-return/volatility features, labels
at horizons 1, 5 and 20. Uses CUDA with bf16 when present (FORCE_CPU=1 or FINPIPE_DEVICE
override it), timing with CUDA synchronisation so the data share is exact.

    python benchmarks/training_bench.py results.json [--tickers 20 --days 8000 --features 158]

Prints a table and writes the same numbers, with the machine's details, as JSON. CPU time
is reported beside wall time: on a shared machine it is the steadier figure (with one
thread it is what the wall time would be on an idle core).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.models import (
    PanelData,
    create_model,
    list_models,
    model_class,
    time_split,
)
from finpipe.models.sequence import SequenceForecaster
from finpipe.models.torch_loop import autocast_dtype, select_device

HORIZONS = (1, 5, 20)


def demo_frames(
    n_tickers: int, n_days: int, n_features: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features (trailing log returns and mean absolute returns over 1..k days) and labels."""
    cfg = SyntheticConfig(n_tickers=n_tickers, n_days=n_days, seed=seed, signal_strength=0.05)
    prices = synthetic_panel(cfg).pivot(index="date", columns="ticker", values="adj_close")
    dates, tickers = prices.index.values, np.asarray(prices.columns, dtype=object)
    log_price = np.log(prices.to_numpy())
    ret = np.vstack([np.zeros((1, n_tickers)), np.diff(log_price, axis=0)])
    csum_ret, csum_abs = np.cumsum(ret, axis=0), np.cumsum(np.abs(ret), axis=0)
    columns: dict[str, np.ndarray] = {}
    for k in range(n_features):
        window = k // 2 + 1
        csum = csum_ret if k % 2 == 0 else csum_abs
        values = csum.copy()
        values[window:] -= csum[:-window]
        values[:window] = np.nan
        columns[f"{'ret' if k % 2 == 0 else 'absret'}_{window}"] = (values / window).ravel()
    features = pd.DataFrame(
        {"date": np.repeat(dates, n_tickers), "ticker": np.tile(tickers, len(dates)), **columns}
    )
    labels = []
    for h in HORIZONS:
        fwd = np.full_like(log_price, np.nan)
        fwd[:-h] = log_price[h:] - log_price[:-h]
        ends = np.full(len(dates), np.datetime64("NaT"), "datetime64[ns]")
        ends[:-h] = dates[h:]
        frame = pd.DataFrame(
            {
                "date": np.repeat(dates, n_tickers),
                "ticker": np.tile(tickers, len(dates)),
                "horizon": np.int64(h),
                "fwd_return": fwd.ravel(),
                "label_end": np.repeat(ends, n_tickers),
            }
        )
        labels.append(frame[np.isfinite(frame["fwd_return"])])
    return features, pd.concat(labels, ignore_index=True)


def bench_family(
    name: str, train: PanelData, valid: PanelData, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Fit one family with its defaults (plus overrides) and summarise the run."""
    model = create_model(name, **overrides.get(name, {}))
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(train, valid)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    history = model.history
    samples = sum(r["samples"] for r in history)
    seconds = sum(r["seconds"] for r in history)
    row: dict[str, Any] = {
        "model": name,
        "wall_s": wall,
        "cpu_s": cpu,
        "epochs": len(history),
        "train_samples": samples,
        "samples_per_s": samples / max(seconds, 1e-9),
        "data_share": None,
        "valid_rank_ic_h1": model.metrics.get("rank_ic_h1"),
        "valid_loss": model.metrics["valid_loss"],
    }
    if isinstance(model, SequenceForecaster):
        data_seconds = sum(r["data_share"] * r["seconds"] for r in history)
        row["data_share"] = data_seconds / max(seconds, 1e-9)
        row["params"] = sum(p.numel() for p in model.module.parameters())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--tickers", type=int, default=20)
    parser.add_argument("--days", type=int, default=8000)
    parser.add_argument("--features", type=int, default=158)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--families", nargs="*", default=list_models())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = select_device()
    built = time.perf_counter()
    features, labels = demo_frames(args.tickers, args.days, args.features, args.seed)
    panel = PanelData.from_frames(features, labels)
    train, valid = time_split(panel, valid_fraction=0.2)
    build_s = time.perf_counter() - built
    overrides = {
        name: {"sync_timing": True}
        for name in args.families
        if issubclass(model_class(name), SequenceForecaster)
    }

    rows = []
    print(
        f"panel {args.tickers} tickers x {args.days} days x {args.features} features; "
        f"device {device}; threads {args.threads}; panel build {build_s:.1f}s"
    )
    print(
        f"{'model':14s} {'wall s':>7s} {'cpu s':>7s} {'epochs':>6s} {'samples/s':>10s} "
        f"{'data %':>7s} {'valid IC1':>9s}"
    )
    for name in args.families:
        row = bench_family(name, train, valid, overrides)
        rows.append(row)
        share = "-" if row["data_share"] is None else f"{100 * row['data_share']:.1f}"
        print(
            f"{name:14s} {row['wall_s']:7.1f} {row['cpu_s']:7.1f} {row['epochs']:6d} "
            f"{row['samples_per_s']:10.0f} {share:>7s} {row['valid_rank_ic_h1']:9.4f}",
            flush=True,
        )
    total = sum(r["wall_s"] for r in rows)
    total_cpu = sum(r["cpu_s"] for r in rows)
    print(f"{'total':14s} {total:7.1f} {total_cpu:7.1f}")

    result = {
        "panel": {
            "tickers": args.tickers,
            "days": args.days,
            "features": args.features,
            "train_samples": train.n_samples,
            "valid_samples": valid.n_samples,
            "build_s": build_s,
        },
        "machine": {
            "device": str(device),
            "device_name": (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else platform.processor() or platform.machine()
            ),
            "bf16": autocast_dtype(device, "auto") is torch.bfloat16,
            "torch": torch.__version__,
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
        },
        "families": rows,
        "total_wall_s": total,
        "total_cpu_s": total_cpu,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
