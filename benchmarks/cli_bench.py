"""The README's ingest command, timed as a user runs it: a cold run, then a no-op re-run.

Usage: python benchmarks/cli_bench.py OUT.json [--repo PATH] [--runs 3] [--select group:ingest]
                                      [--config console.yaml]

Each run is `dagster asset materialize -m finpipe.definitions --select SELECT` in a fresh
process, against a fresh data root and Dagster home (the first run of each round ingests the
bundled data; the second finds nothing new). `--repo` runs the command from another checkout
of finpipe (for a before/after comparison: `git worktree add /tmp/before <commit>`), with that
checkout first on the import path; `--config` passes a run config file (`-c`), such as the
repository's console.yaml, which gives the run finpipe's console logger. Records wall
seconds, the number of output lines and whether the run succeeded; prints a table and
writes the numbers to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def timed_materialize(
    repo: Path, select: str, data_root: Path, home: Path, config: Path | None
) -> dict:
    """One CLI run: wall seconds, output lines and success."""
    env = {
        **os.environ,
        "FINPIPE_DATA_ROOT": str(data_root),
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": str(repo),
    }
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "asset", "materialize", "-m", "finpipe.definitions"]
    if config is not None:
        command += ["-c", str(config.resolve())]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--select", select], cwd=repo, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    return {
        "seconds": round(seconds, 2),
        "output_lines": len(output.splitlines()),
        "succeeded": done.returncode == 0,
        "tail": output.splitlines()[-3:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--select", default="group:ingest")
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rounds = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            (home / "dagster.yaml").write_text(DAGSTER_YAML)
            data = Path(tmp) / "data"
            cold = timed_materialize(args.repo, args.select, data, home, args.config)
            again = timed_materialize(args.repo, args.select, data, home, args.config)
        rounds.append({"cold": cold, "no_op": again})
        print(
            f"round {i + 1}/{args.runs}: cold {cold['seconds']:.1f} s "
            f"({cold['output_lines']} lines, ok={cold['succeeded']}), "
            f"no-op {again['seconds']:.1f} s ({again['output_lines']} lines)",
            flush=True,
        )
    summary = {
        kind: {
            "median_seconds": statistics.median(r[kind]["seconds"] for r in rounds),
            "min_seconds": min(r[kind]["seconds"] for r in rounds),
            "max_seconds": max(r[kind]["seconds"] for r in rounds),
            "output_lines": rounds[-1][kind]["output_lines"],
            "all_succeeded": all(r[kind]["succeeded"] for r in rounds),
        }
        for kind in ("cold", "no_op")
    }
    result = {
        "command": f"dagster asset materialize -m finpipe.definitions --select '{args.select}'"
        + (f" -c {args.config}" if args.config else ""),
        "repo": str(args.repo),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "summary": summary,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'run':8} {'median s':>9} {'min s':>7} {'max s':>7} {'lines':>6}")
    for kind, row in summary.items():
        print(
            f"{kind:8} {row['median_seconds']:9.1f} {row['min_seconds']:7.1f} "
            f"{row['max_seconds']:7.1f} {row['output_lines']:6d}"
        )
    print(f"written to {args.out}")
    return 0 if all(row["all_succeeded"] for row in summary.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
