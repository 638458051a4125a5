"""Inference benchmark: seconds per ticker to predict the whole universe at every horizon.

Trains every registered family at a small size on a synthetic panel (`--tickers` x
`--days`, `--features` features, horizons 1, 5 and 20; training is not timed), fits the
stacking ensemble on the first half of the validation window (out of fold: the members never
trained on it) and split-conformal calibration on the second half. Then times, for the
latest date and the whole universe, the prediction step the `predictions` asset runs:

    predict     every family's predict(), `--mc-samples` Monte Carlo dropout passes of every
                PyTorch family, both ensembles with contributions, and the interval scale
                (member dispersion with MC variance, recent volatility): forecast.py
    table       conformal intervals, confidence, schema conform
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

from finpipe.data.sources.synthetic import SyntheticConfig, synthetic_panel
from finpipe.forecasting.predictions import predictions_table
from finpipe.forecasting.signals import rank_universe, signal_table
from finpipe.forecasting.system import ForecastSystem, fit_forecast_system
from finpipe.forecasting.uncertainty import recent_volatility
from finpipe.models import Forecaster, PanelData, create_model, list_models, time_split
from finpipe.models.sequence import SequenceForecaster

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
KEY = ["date", "ticker", "horizon"]


def small_model(name: str) -> Forecaster:
    """A family at benchmark size (tiny networks, one epoch; small forests)."""
    model = create_model(name)
    extra = SMALL_TORCH if isinstance(model, SequenceForecaster) else {}
    return create_model(name, **{**extra, **SMALL.get(name, {})})


def predict_step(
    system: ForecastSystem, latest: PanelData
) -> tuple[dict[str, float], pd.DataFrame]:
    """One timed run of the prediction step; (seconds per stage, predictions table)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    points, _contributions, scale = system.point_predictions(latest)
    seconds["predict"] = time.perf_counter() - started

    started = time.perf_counter()
    versions = {name: "bench" for name in points["model"].unique()}
    table = predictions_table(points, scale, system.conformal, LEVEL, versions)
    seconds["table"] = time.perf_counter() - started

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
    rest, _ = time_split(panel, valid_fraction=0.05)
    train, valid = time_split(rest, valid_fraction=0.3)
    models = {name: small_model(name).fit(train) for name in list_models()}
    dates = valid.sample_dates()
    middle = len(dates) // 2
    stack_view, calibration = valid.select(end=dates[middle - 1]), valid.select(dates[middle])
    system = fit_forecast_system(
        models, train, stack_view, calibration, vol, (LEVEL,), args.mc_samples
    )
    setup_s = time.perf_counter() - started
    latest = PanelData.from_frames(features).select(start=panel.dates[-1])

    runs = [predict_step(system, latest)[0] for _ in range(args.repeats)]
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    per_ticker = stages["total"] / args.tickers
    _, table = predict_step(system, latest)

    print(
        f"{args.tickers} tickers x {len(HORIZONS)} horizons x {table['model'].nunique()} models "
        f"({len(table)} rows); {args.mc_samples} MC samples; threads {args.threads}; "
        f"setup (data, training, stacking, calibration) {setup_s:.1f}s"
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
