"""The console logger of every finpipe run: Dagster's INFO-level lines, and when the run
ends, a short summary of what it changed (a line per materialized asset with the figures
worth reading, the asset checks, and what was skipped), so a CLI run ends like the demo."""

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

# The metadata worth a line in the summary, where an asset has it.
SHOWN = (
    "tickers",
    "actions",
    "rows_added",
    "rows_stored",
    "unavailable",
    "last_date",
    "feature_count",
    "folds",
    "folds_reused",
    "rank_ic_h1",
    "model_version",
    "role",
    "wall_seconds",
    "date",
    "rows",
    "strategies",
    "served",
    "horizon",
    "rebalances",
)


def asset_line(key: str, metadata: dict[str, Any]) -> str:
    shown = {
        k: round(v, 4) if isinstance(v, float) else v
        for k, v in metadata.items()
        if k in SHOWN and v not in ({}, [], "")
    }
    return f"  asset {key:<26} {shown}"


def check_lines(checks: list[tuple[str, bool, str, str]]) -> list[str]:
    """(asset:check, passed, severity, description) as a count and a line per failure."""
    if not checks:
        return []
    failed = [c for c in checks if not c[1]]
    lines = [f"  asset checks: {len(checks) - len(failed)} passed, {len(failed)} failed"]
    return lines + [f"    FAILED {name} ({severity}) {why}" for name, _, severity, why in failed]


@dataclass
class RunRecord:
    """What one run changed so far, shared by every logger Dagster builds for the run."""

    started: float = field(default_factory=time.perf_counter)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[tuple[str, bool, str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# Open runs by id: Dagster builds the run's loggers more than once (the steps' and the
# run's end), so their summaries meet here; a run's entry goes when its summary is printed.
OPEN_RUNS: dict[str, RunRecord] = {}


class RunSummary(logging.Handler):
    """Collects the run's materializations, checks and skipped steps from Dagster's log
    records; prints the summary when the run ends."""

    def __init__(self, stream: Any, run_id: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.stream = stream
        self.run_id = run_id
        self.record = OPEN_RUNS.setdefault(run_id, RunRecord())

    def emit(self, record: logging.LogRecord) -> None:
        event = record.__dict__.get("dagster_event")
        if event is None:
            return
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            self.record.assets[materialization.asset_key.to_user_string()] = {
                k: v.value for k, v in materialization.metadata.items()
            }
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            self.record.checks.append(
                (
                    f"{check.asset_key.to_user_string()}:{check.check_name}",
                    check.passed,
                    check.severity.value,
                    check.description or "",
                )
            )
        elif kind == "STEP_SKIPPED":
            self.record.skipped.append(event.step_key or "")
        elif kind in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE"):  # a run's end, by its old name
            self.stream.write(self.render(kind == "PIPELINE_SUCCESS") + "\n")
            self.stream.flush()
            OPEN_RUNS.pop(self.run_id, None)

    def render(self, success: bool) -> str:
        verdict = "succeeded" if success else "FAILED"
        run = self.record
        lines = [f"finpipe: run {verdict} in {time.perf_counter() - run.started:.1f} s"]
        lines += [asset_line(key, meta) for key, meta in run.assets.items()]
        lines += check_lines(run.checks)
        if run.skipped:
            lines.append(f"  skipped steps: {', '.join(run.skipped)}")
        return "\n".join(lines)


@dg.logger(
    {"log_level": dg.Field(str, default_value="INFO", is_required=False)},
    description="Dagster's console lines at the configured level (INFO by default), and a "
    "summary of what the run changed when it ends.",
)
def finpipe_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("finpipe", level=logging.DEBUG)
    lines = logging.StreamHandler(sys.stderr)
    lines.setLevel(init_context.logger_config["log_level"].upper())
    lines.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    logger.addHandler(lines)
    logger.addHandler(RunSummary(sys.stderr, init_context.run_id or ""))
    return logger


# Every job's default run config: this console logger at INFO (a run launched with its
# own config keeps Dagster's default logger unless it names this one too).
CONSOLE_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
