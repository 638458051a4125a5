"""The console logger of every finpipe run: Dagster's INFO-level lines, and when the run
ends, a short summary of what it changed (a line per materialized asset with the figures
worth reading, the asset checks, and what was skipped), so a CLI run ends like the demo."""

import logging
import sys
import time
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


class RunSummary(logging.Handler):
    """Collects the run's materializations, checks and skipped steps from Dagster's log
    records; prints the summary when the run ends."""

    def __init__(self, stream: Any) -> None:
        super().__init__(level=logging.DEBUG)
        self.stream = stream
        self.started = time.perf_counter()
        self.assets: dict[str, dict[str, Any]] = {}
        self.checks: list[tuple[str, bool, str, str]] = []
        self.skipped: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = record.__dict__.get("dagster_event")
        if event is None:
            return
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            self.assets[materialization.asset_key.to_user_string()] = {
                k: v.value for k, v in materialization.metadata.items()
            }
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            self.checks.append(
                (
                    f"{check.asset_key.to_user_string()}:{check.check_name}",
                    check.passed,
                    check.severity.value,
                    check.description or "",
                )
            )
        elif kind == "STEP_SKIPPED":
            self.skipped.append(event.step_key or "")
        elif kind in ("PIPELINE_SUCCESS", "PIPELINE_FAILURE"):  # a run's end, by its old name
            self.stream.write(self.render(kind == "PIPELINE_SUCCESS") + "\n")
            self.stream.flush()

    def render(self, success: bool) -> str:
        verdict = "succeeded" if success else "FAILED"
        lines = [f"finpipe: run {verdict} in {time.perf_counter() - self.started:.1f} s"]
        lines += [asset_line(key, meta) for key, meta in self.assets.items()]
        lines += check_lines(self.checks)
        if self.skipped:
            lines.append(f"  skipped steps: {', '.join(self.skipped)}")
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
    logger.addHandler(RunSummary(sys.stderr))
    return logger


# Every job's default run config: this console logger at INFO (a run launched with its
# own config keeps Dagster's default logger unless it names this one too).
CONSOLE_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
