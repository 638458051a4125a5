"""Scale benchmark: the `full` job, then `daily_refresh`, on synthetic panels of given sizes.

Usage: python benchmarks/scale_bench.py OUT_DIR [--sizes 100x2500,250x6300,500x6300]

Each size (tickers x dates; signal strength 0.05, default resources otherwise, so the demo's
model families and sizes) runs in its own subprocess, with a fresh storage root and a fresh
Dagster instance (SQLite) in a temporary folder and the in-process executor, so every step
runs in that process and its peak RSS is the size's own. Per step it records the wall time
(the run's STEP_START to STEP_SUCCESS or STEP_FAILURE events in the instance's event log)
and the process's resident memory while the step ran (VmRSS sampled every 0.2 s by a
background thread; in-process steps run one after another, so each sample belongs to the
step running at its time); per run the wall and CPU time, the peak RSS, the load average
before it (on a shared machine wall time overstates the cost) and the tables read in full
(`finpipe.core.storage.TABLE_READS`: the features table should be read once per run).

Writes OUT_DIR/scale.json (every number), scale.md (a table per step, sizes side by side),
scale.png (cost against panel size, tickers x dates) and each size's log (<size>.log), and
prints progress as it goes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

JOBS = ("full", "daily_refresh")
SIGNAL_STRENGTH = 0.05
# The leak gate's Sharpe bar for this planted signal: at 250 names the ensemble's gross
# long-short Sharpe on it was 8.1, above the 5.0 that real daily equity data allows, and the
# gate (rightly) stopped the run. This benchmark measures cost, not skill.
PLANTED_MAX_SHARPE = 20.0
SAMPLE_S = 0.2
FOLD_STEP = "walk_forward_predictions.run_replay_fold"
# Steps shorter than this at every size share one row of the Markdown table.
SHOWN_S = 1.0
PLOTTED = ("raw_prices", "features", "model_panel", "predictions", "drift_report")


def parse_size(text: str) -> tuple[int, int]:
    """'100x2500' as (tickers, dates)."""
    tickers, dates = text.lower().split("x")
    return int(tickers), int(dates)


def rss_gb() -> float:
    """This process's resident memory now (VmRSS), in GB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e6
    return float("nan")


class RssSampler(threading.Thread):
    """Samples (time, VmRSS) every `SAMPLE_S` seconds until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.time(), rss_gb()))
            self.stopped.wait(SAMPLE_S)

    def peak(self, start: float, end: float) -> float:
        """The highest sample in [start, end] (the nearest one before when none falls in it)."""
        inside = [rss for when, rss in self.samples if start <= when <= end]
        before = [rss for when, rss in self.samples if when <= start][-1:]
        return round(max(inside or before or [float("nan")]), 3)


def step_records(instance: Any, run_id: str, sampler: RssSampler) -> list[dict[str, Any]]:
    """Wall time and RSS of every step of a run, in the order the steps started."""
    from dagster import DagsterEventType

    kinds = {
        DagsterEventType.STEP_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
        DagsterEventType.STEP_SKIPPED,
    }
    starts: dict[str, float] = {}
    steps = []
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.step_key in starts:
            start = starts[event.step_key]
            steps.append(
                {
                    "step": event.step_key,
                    "status": event.event_type_value.removeprefix("STEP_").lower(),
                    "wall_s": round(entry.timestamp - start, 2),
                    "rss_start_gb": sampler.peak(start, start),
                    "peak_rss_gb": sampler.peak(start, entry.timestamp),
                    "started": start,
                }
            )
    return sorted(steps, key=lambda s: s["started"])


def run_job(defs: Any, job: str, instance: Any, sampler: RssSampler, label: str) -> dict:
    """One job run in this process, with its steps' and its own cost."""
    from finpipe.core.storage import TABLE_READS

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    reads_before = dict(TABLE_READS)
    load = os.getloadavg()[0]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time()
    print(f"[{label}] {job}: started", flush=True)
    progress = ProgressPrinter(instance, label, job, started)
    progress.start()
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, run_config=quiet, raise_on_error=False
    )
    ended = time.time()
    progress.stopped.set()
    progress.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    reads = {k: v - reads_before.get(k, 0) for k, v in TABLE_READS.items()}
    steps = step_records(instance, result.run_id, sampler)
    record = {
        "job": job,
        "success": result.success,
        "wall_s": round(ended - started, 1),
        "cpu_s": round(
            after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime,
            1,
        ),
        "peak_rss_gb": sampler.peak(started, ended),
        "load_average_before": round(load, 2),
        "features_table_reads": reads.get("features/features", 0),
        "table_reads": {k: v for k, v in sorted(reads.items()) if v},
        "steps": steps,
    }
    print(
        f"[{label}] {job}: {'succeeded' if result.success else 'FAILED'} in "
        f"{record['wall_s']:.0f} s (CPU {record['cpu_s']:.0f} s), peak RSS "
        f"{record['peak_rss_gb']:.2f} GB, features table read {record['features_table_reads']}x",
        flush=True,
    )
    return record


class ProgressPrinter(threading.Thread):
    """Prints each step of the newest run as it finishes (polls the event log)."""

    def __init__(self, instance: Any, label: str, job: str, started: float) -> None:
        super().__init__(daemon=True)
        self.instance, self.label, self.job, self.started = instance, label, job, started
        self.stopped = threading.Event()

    def run(self) -> None:
        from dagster import DagsterEventType

        done = {DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
        seen = 0
        while True:
            final = self.stopped.wait(2.0)
            runs = self.instance.get_runs(limit=1)
            if runs:
                entries = self.instance.all_logs(runs[0].run_id, of_type=done)
                for entry in entries[seen:]:
                    event = entry.dagster_event
                    print(
                        f"[{self.label}] {self.job}: {entry.timestamp - self.started:7.0f} s "
                        f"{event.event_type_value.removeprefix('STEP_').lower():<8} "
                        f"{event.step_key}  (RSS {rss_gb():.2f} GB)",
                        flush=True,
                    )
                seen = len(entries)
            if final:
                return


def run_size(size: str, out: Path) -> dict:
    """The child: `full` then `daily_refresh` at one size; writes and returns its record."""
    os.environ["FINPIPE_EXECUTOR"] = "in_process"
    for name in ("MLFLOW_TRACKING_URI", "FINPIPE_MLFLOW_ARTIFACTS", "FINPIPE_DATA_ROOT"):
        os.environ.pop(name, None)
    sampler = RssSampler()
    sampler.start()
    import dagster as dg

    from finpipe.definitions import build_defs
    from finpipe.defs.resources import EvaluationSettings, MarketDataResource, StorageResource

    tickers, dates = parse_size(size)
    record: dict[str, Any] = {"size": size, "tickers": tickers, "dates": dates}
    with tempfile.TemporaryDirectory(prefix=f"scale-{size}-") as tmp:
        defs = build_defs(
            {
                "market_data": MarketDataResource(
                    source="synthetic",
                    synthetic_n_tickers=tickers,
                    synthetic_n_days=dates,
                    synthetic_signal_strength=SIGNAL_STRENGTH,
                ),
                "storage": StorageResource(root=str(Path(tmp) / "data")),
                "evaluation": EvaluationSettings(max_sharpe=PLANTED_MAX_SHARPE),
            }
        )
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        instance = dg.DagsterInstance.local_temp(str(home))
        record["runs"] = [run_job(defs, job, instance, sampler, size) for job in JOBS]
    sampler.stopped.set()
    record["maxrss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)
    (out / f"{size}.json").write_text(json.dumps(record, indent=1))
    return record


def table_rows(results: list[dict], job: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """(step, [(seconds, peak GB) per size]) for a job: replay folds summed (their peak the
    highest), short steps gathered into one row."""
    per_size = []
    for result in results:
        run = next(r for r in result["runs"] if r["job"] == job)
        steps: dict[str, tuple[float, float]] = {}
        for step in run["steps"]:
            name = step["step"]
            if name.startswith(FOLD_STEP):
                name = f"{FOLD_STEP}[*]"
            seconds, peak = steps.get(name, (0.0, 0.0))
            steps[name] = (seconds + step["wall_s"], max(peak, step["peak_rss_gb"]))
        per_size.append(steps)
    order = list(dict.fromkeys(name for steps in per_size for name in steps))
    shown = [n for n in order if any(s.get(n, (0, 0))[0] >= SHOWN_S for s in per_size)]
    rows = [(n, [s.get(n, (float("nan"), float("nan"))) for s in per_size]) for n in shown]
    others = [n for n in order if n not in shown]
    if others:
        cells = [
            (sum(s.get(n, (0, 0))[0] for n in others), max(s.get(n, (0, 0))[1] for n in others))
            for s in per_size
        ]
        rows.append((f"{len(others)} other steps (each under {SHOWN_S:.0f} s)", cells))
    return rows


def markdown(results: list[dict], meta: dict) -> str:
    """The per-step tables of every job, sizes side by side, and the runs' totals."""
    head = " | ".join(f"{r['size']} s | {r['size']} peak RSS GB" for r in results)
    rule = " | ".join("---: | ---:" for _ in results)
    lines = [
        f"Command: `{meta['command']}`; {meta['date']}; {meta['machine']}.",
        "",
    ]
    for job in JOBS:
        lines += [f"`{job}`:", "", f"| step | {head} |", f"| --- | {rule} |"]
        for name, cells in table_rows(results, job):
            values = " | ".join(f"{s:.1f} | {gb:.2f}" for s, gb in cells)
            lines.append(f"| `{name}` | {values} |")
        runs = [next(r for r in res["runs"] if r["job"] == job) for res in results]
        values = " | ".join(f"**{r['wall_s']:.0f}** | **{r['peak_rss_gb']:.2f}**" for r in runs)
        lines.append(f"| **whole run** | {values} |")
        lines.append("")
        for res, run in zip(results, runs, strict=True):
            status = "succeeded" if run["success"] else "FAILED"
            lines.append(
                f"- {res['size']}: {status}, CPU {run['cpu_s']:.0f} s, load average before "
                f"{run['load_average_before']}, features table read in full "
                f"{run['features_table_reads']}x"
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """Wall time and peak RSS against tickers x dates, log-log, per main step and per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r["tickers"] * r["dates"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    for result in results:
        for run in result["runs"]:
            series.setdefault(f"{run['job']} (run)", []).append((run["wall_s"], run["peak_rss_gb"]))
        for name, [(seconds, peak)] in table_rows([result], "full"):
            if name in PLOTTED or name.startswith(("model_", FOLD_STEP)):
                series.setdefault(name, []).append((seconds, peak))
    for name, values in series.items():
        if len(values) != len(cells):
            continue
        style = "-o" if name.endswith("(run)") else "--."
        left.plot(cells, [v[0] for v in values], style, label=name)
        right.plot(cells, [v[1] for v in values], style, label=name)
    for axis, label in ((left, "wall time (s)"), (right, "peak RSS (GB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("panel size (tickers x dates)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=6, ncol=2)
    fig.suptitle("finpipe scale benchmark: synthetic source, in-process executor")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="output folder")
    parser.add_argument("--sizes", default="100x2500", help="e.g. 100x2500,250x6300,500x6300")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_size(args.child, out)
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for size in sizes:
        parse_size(size)
    meta = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({platform.platform()})",
        "python": platform.python_version(),
    }
    results = []
    for size in sizes:
        print(f"[{size}] starting a fresh process (log: {out / f'{size}.log'})", flush=True)
        with open(out / f"{size}.log", "w") as log:
            child = subprocess.run(
                [sys.executable, __file__, str(out), "--child", size], stderr=log, check=False
            )
        if child.returncode != 0:
            print(f"[{size}] the child process failed ({child.returncode}); see its log")
            continue
        results.append(json.loads((out / f"{size}.json").read_text()))
    if not results:
        sys.exit("no size finished")
    (out / "scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    table = markdown(results, meta)
    (out / "scale.md").write_text(table + "\n")
    plot(results, out / "scale.png")
    print("\n" + table)
    print(f"wrote {out / 'scale.json'}, {out / 'scale.md'}, {out / 'scale.png'} and the logs")


if __name__ == "__main__":
    main()
