"""Feature engine benchmark on the ANCHORS.md panel: 500 tickers x 6,300 days of OHLCV.

Usage: python benchmarks/features_bench.py OUT.json [--tickers 500] [--days 6300] [--seed 7]
                                           [--n-jobs 1] [--runs alpha158,full]

The panel is the one /work/shared/bench/synth_panel.py writes (the same generator and seed,
replicated here), so Alpha158 compares like for like with Qlib's handler on it. Each run
("alpha158": the Alpha158 families alone; "full": every family, with a benchmark index,
sectors, macro series and GARCH parameters fitted on the first half) happens in a fresh
process that builds the panel in memory, so its peak RSS (getrusage) is its own and includes
the input panel. Besides wall time it records the run's CPU time (user + system) and the
load average before it: on a shared machine wall time alone overstates the cost.
Prints a table and writes the numbers to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finpipe.data.sources.release_lag import conservative_available_at
from finpipe.features import FeatureConfig, build_features, fit_garch


def synthetic_ohlcv(n_tickers: int, n_days: int, seed: int) -> pd.DataFrame:
    """The random-walk panel of /work/shared/bench/synth_panel.py, plus adj_close = close."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2000-01-03", periods=n_days)
    vol = rng.uniform(0.01, 0.03, n_tickers)
    ret = rng.standard_normal((n_days, n_tickers)) * vol
    close = 50 * np.exp(np.cumsum(ret, axis=0))
    opn = close * np.exp(rng.standard_normal((n_days, n_tickers)) * vol * 0.3)
    high = np.maximum(opn, close) * np.exp(
        np.abs(rng.standard_normal((n_days, n_tickers))) * vol * 0.5
    )
    low = np.minimum(opn, close) * np.exp(
        -np.abs(rng.standard_normal((n_days, n_tickers))) * vol * 0.5
    )
    volume = rng.lognormal(13, 0.5, (n_days, n_tickers)).round()
    tickers = np.array([f"T{i:04d}" for i in range(n_tickers)])
    return pd.DataFrame(
        {
            "date": np.repeat(dates.values, n_tickers),
            "ticker": np.tile(tickers, n_days),
            "open": opn.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "adj_close": close.ravel(),
            "volume": volume.ravel(),
        }
    )


def side_inputs(prices: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """Benchmark (equal-weighted index of the panel), sectors and synthetic macro series."""
    wide = prices.pivot(index="date", columns="ticker", values="adj_close")
    index_level = 1000 * np.exp(np.log(wide).diff().mean(axis=1).fillna(0).cumsum())
    benchmark = pd.DataFrame(
        {"date": wide.index, "ticker": "^EW", "adj_close": index_level.to_numpy()}
    )
    tickers = wide.columns.to_numpy()
    universe = pd.DataFrame(
        {"ticker": tickers, "name": tickers, "sector": [f"S{i % 11}" for i in range(len(tickers))]}
    )
    rng = np.random.default_rng(seed + 1)
    days = pd.bdate_range(wide.index[0], wide.index[-1])
    months = pd.date_range(wide.index[0], wide.index[-1], freq="MS")
    series = {
        "VIXCLS": (days, 20 * np.exp(np.cumsum(rng.normal(0, 0.05, len(days))) * 0.1)),
        "BAA": (months, 6 + np.cumsum(rng.normal(0, 0.1, len(months)))),
        "AAA": (months, 5 + np.cumsum(rng.normal(0, 0.1, len(months)))),
        "CPILFESL": (months, 200 * np.exp(np.cumsum(rng.normal(0.002, 0.001, len(months))))),
    }
    macro = pd.concat(
        [
            pd.DataFrame(
                {
                    "date": when,
                    "series_id": sid,
                    "value": values,
                    "available_at": conservative_available_at(pd.Series(when)).to_numpy(),
                }
            )
            for sid, (when, values) in series.items()
        ],
        ignore_index=True,
    )
    return {"benchmark": benchmark, "universe": universe, "macro": macro}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def run(kind: str, n_tickers: int, n_days: int, n_jobs: int, seed: int) -> dict:
    """One timed run in this process; returns its numbers."""
    prices = synthetic_ohlcv(n_tickers, n_days, seed)
    result: dict = {
        "run": kind,
        "rows": len(prices),
        "input_rss_gb": round(peak_rss_gb(), 3),
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    if kind == "alpha158":
        config = FeatureConfig(families=("alpha158",), n_jobs=n_jobs)
        extra = {}
    else:
        extra = side_inputs(prices, seed)
        dates = np.sort(prices["date"].unique())
        start = time.perf_counter()
        garch = fit_garch(prices, dates[len(dates) // 2])
        result["fit_garch_s"] = round(time.perf_counter() - start, 3)
        config = FeatureConfig(garch=garch, n_jobs=n_jobs)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    features = build_features(prices, config=config, **extra)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    frame = features.frame
    result.update(
        wall_s=round(wall, 3),
        cpu_s=round(after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime, 3),
        rows_per_s=round(len(frame) / wall),
        features=frame.shape[1] - 2,
        peak_rss_gb=round(peak_rss_gb(), 3),
        n_jobs=n_jobs,
        computed=features.computed,
        skipped=features.skipped,
        seconds={k: round(v, 3) for k, v in features.seconds.items()},
    )
    return result


def print_table(results: list[dict]) -> None:
    for r in results:
        print(
            f"\n{r['run']}: {r['features']} features x {r['rows']:,} rows in {r['wall_s']:.2f} s "
            f"({r['rows_per_s']:,} rows/s; CPU {r['cpu_s']:.2f} s), peak RSS "
            f"{r['peak_rss_gb']:.2f} GB (input panel {r['input_rss_gb']:.2f} GB), "
            f"n_jobs={r['n_jobs']}, load average before {r['load_average_before']}"
        )
        if "fit_garch_s" in r:
            print(f"  fit_garch (separate, before): {r['fit_garch_s']:.2f} s")
        total = sum(r["seconds"].values())
        for name, secs in sorted(r["seconds"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:<24}{secs:8.3f} s {100 * secs / total:6.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="where to write the JSON results")
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--days", type=int, default=6300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n-jobs", type=int, default=FeatureConfig().n_jobs)
    parser.add_argument("--runs", default="alpha158,full")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args.tickers, args.days, args.n_jobs, args.seed)))
        return
    results = []
    for kind in args.runs.split(","):
        command = [sys.executable, __file__, args.out, "--child", kind]
        for flag in ("tickers", "days", "seed", "n_jobs"):
            command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        child = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print_table(results)
    meta = {"tickers": args.tickers, "days": args.days, "seed": args.seed}
    Path(args.out).write_text(json.dumps({"panel": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
