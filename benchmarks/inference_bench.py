"""Inference benchmark: seconds per ticker to predict the whole universe at every horizon.

Runs the served procedure at a small size on a synthetic panel (`--tickers` x `--days`,
`--features` features, horizons 1, 5 and 20; not timed): the replay of every registered
family over a short time plan, the members trained on the serving window, and the serving
ensemble (stacking and conformal calibration from the replay's history). Then times, for
the latest date and the whole universe, the steps the `predictions` asset runs:

    predict     `serve`: every family's predict(), `--mc-samples` Monte Carlo dropout passes
                of every PyTorch family, the stacked ensemble, the interval scale (member
                dispersion, recent volatility), conformal intervals, confidence, schema
    signals     signals and a ranking per horizon

    python benchmarks/inference_bench.py results.json [--tickers 100 --days 500]

Prints a table (median of `--repeats` runs) and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from training_bench import HORIZONS, demo_frames

from finpipe.core.keys import STACKED_ENSEMBLE
from finpipe.core.time_plan import PlanSettings, build_time_plan
from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.evaluation.walk_forward import run_replay
from finpipe.forecasting.signals import rank_universe, signal_table
from finpipe.forecasting.system import EnsembleFit, fit_ensemble, fold_windows, known_history, serve
from finpipe.forecasting.uncertainty import recent_volatility
from finpipe.models import Forecaster, PanelData, list_models
from finpipe.models.registry import is_pytorch_family
from finpipe.models.trainer import train_family, window_views

SMALL_TORCH = {
    "hidden_size": 16,
    "window": 10,
    "max_epochs": 1,
    "samples_per_epoch": 2048,
    "valid_samples": 1024,
    "device": "cpu",
}
SMALL = {
    "transformer": {"num_layers": 1, "n_heads": 2},
    "tft": {"n_heads": 2},
    "random_forest": {"n_estimators": 30, "max_samples": 5000},
    "hist_gbm": {"max_iter": 50},
}
LEVEL = 0.8
PLAN = PlanSettings(
    horizons=(1, 5, 20),
    retrain_every=60,
    valid_days=40,
    stack_days=60,
    calibration_days=60,
    min_train_days=100,
)


def small_params(name: str) -> dict[str, Any]:
    """A family's parameters at benchmark size (tiny networks, one epoch; small forests)."""
    extra = SMALL_TORCH if is_pytorch_family(name) else {}
    return {**extra, **SMALL.get(name, {})}


def predict_step(
    models: dict[str, Forecaster],
    fit: EnsembleFit,
    latest: PanelData,
    vol: pd.DataFrame,
    mc_samples: int,
    trained_through: pd.Timestamp,
) -> tuple[dict[str, float], pd.DataFrame]:
    """One timed run of the prediction step; (seconds per stage, predictions table)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    versions = dict.fromkeys([*models, STACKED_ENSEMBLE], "bench")
    through = dict.fromkeys(models, trained_through)
    table = serve(models, {}, latest, vol, fit, LEVEL, versions, through, mc_samples)
    seconds["predict"] = time.perf_counter() - started

    started = time.perf_counter()
    signal_table(table)
    for horizon in HORIZONS:
        rank_universe(table, horizon)
    seconds["signals"] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return seconds, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the JSON results")
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--days", type=int, default=500)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    features, labels = demo_frames(args.tickers, args.days, args.features, args.seed)
    cfg = SyntheticConfig(
        n_tickers=args.tickers, n_days=args.days, seed=args.seed, signal_strength=0.05
    )
    vol = recent_volatility(synthetic_panel(cfg))
    panel = PanelData.from_frames(features, labels)
    plan = build_time_plan(panel.dates, PLAN, panel.dates[len(panel.dates) // 2])
    families = {name: small_params(name) for name in list_models()}
    rows, _ = run_replay(panel, plan, families, labels, vol)
    train, valid = window_views(panel, plan.serving)
    models = {name: train_family(name, train, valid, p).model for name, p in families.items()}
    fit = fit_ensemble(
        known_history(rows, labels, plan.serving),
        plan.serving,
        sorted(families),
        fold_windows(plan.folds),
        (LEVEL,),
    )
    setup_s = time.perf_counter() - started
    latest = panel.select(panel.dates[-1], panel.dates[-1])
    step = (models, fit, latest, vol, args.mc_samples, plan.serving.trained_through)

    runs = [predict_step(*step)[0] for _ in range(args.repeats)]
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    per_ticker = stages["total"] / args.tickers
    _, table = predict_step(*step)

    print(
        f"{args.tickers} tickers x {len(HORIZONS)} horizons x {table['model'].nunique()} models "
        f"({len(table)} rows); {args.mc_samples} MC samples; threads {args.threads}; "
        f"setup (data, replay, training, ensemble) {setup_s:.1f}s"
    )
    print(f"{'stage':12s} {'seconds':>9s}")
    for stage, value in stages.items():
        print(f"{stage:12s} {value:9.4f}")
    print(f"{'per ticker':12s} {per_ticker:9.5f}")

    result: dict[str, Any] = {
        "tickers": args.tickers,
        "days": args.days,
        "features": args.features,
        "horizons": list(HORIZONS),
        "models": sorted(table["model"].unique()),
        "rows": len(table),
        "mc_samples": args.mc_samples,
        "repeats": args.repeats,
        "stage_seconds": stages,
        "seconds_per_ticker": per_ticker,
        "setup_s": setup_s,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
