"""Versioned models in MLflow: every training is a run and an immutable registered version;
an alias marks the champion that serves, another the challenger that shadows it.

Registered models are named `finpipe-<component>` (a model family, or `ensemble` for the
stacking weights and conformal calibration). A version's tags hold its fit window, data
fingerprint and code version; `models:/finpipe-<component>/<version>` is what the
predictions table's `model_version` says, and `load_version` opens it. Rolling back is
moving the champion alias to an older version (`set_alias`), which nothing deletes.

A challenger becomes champion only if it is not significantly worse than the champion on
the most recent dates where both are out of sample (`compare_on_window`).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finpipe.core.keys import ROW_KEY
from finpipe.core.metrics import daily_rank_ic, mean_stderr
from finpipe.core.time_plan import FitWindow
from finpipe.models.base import Forecaster
from finpipe.models.panel_data import PanelData
from finpipe.models.registry import UnreadableModelError, load_model
from finpipe.models.trainer import TrainingRun

EXPERIMENT = "finpipe"
CHAMPION, CHALLENGER = "champion", "challenger"
MODEL_ARTIFACTS = "model"
PREFIX = "finpipe-"


def registered_name(component: str) -> str:
    """The registered model of a family (or of `ensemble`)."""
    return f"{PREFIX}{component}"


def challenger_model(family: str) -> str:
    """The `model` name of a challenger's rows in the predictions tables."""
    return f"{family}@{CHALLENGER}"


def base_model(model: str) -> str:
    """The family a predictions table's `model` belongs to (`lstm@challenger` -> `lstm`)."""
    return model.partition("@")[0]


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version."""

    name: str
    version: str
    run_id: str
    tags: Mapping[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def component(self) -> str:
        return self.name.removeprefix(PREFIX)

    def date(self, tag: str) -> pd.Timestamp:
        """A date the version records in its tags (e.g. `trained_through`, `valid_end`)."""
        return pd.Timestamp(self.tags[tag])


class ModelRegistry:
    """MLflow tracking and model registry behind a few calls finpipe needs.

    `tracking_uri` is a database URI (`sqlite:///...` locally, `postgresql+psycopg2://...`
    in deployment); `artifact_location` where the experiment's artifacts go (a folder or an
    fsspec-style URI), used when the experiment is created.
    """

    def __init__(self, tracking_uri: str, artifact_location: str | None = None) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None

    @classmethod
    def local(cls, folder: str | os.PathLike[str]) -> ModelRegistry:
        """A registry in a local folder: `mlflow.db` (SQLite) and `artifacts/`."""
        path = Path(folder).resolve()
        path.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path / 'mlflow.db'}", (path / "artifacts").as_uri())

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(EXPERIMENT)
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else self.client.create_experiment(
                    EXPERIMENT, artifact_location=self.artifact_location
                )
            )
        return self._experiment_id

    # -- runs ------------------------------------------------------------------------------

    @contextmanager
    def run(
        self, name: str, tags: Mapping[str, str], params: Mapping[str, Any] | None = None
    ) -> Iterator[str]:
        """An MLflow run for the block: yields its id; it ends FINISHED, or FAILED when the
        block raises."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        run_id = run.info.run_id
        for key, value in (params or {}).items():
            self.client.log_param(run_id, key, _param(value))
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        for key, value in metrics.items():
            if isinstance(value, int | float) and np.isfinite(value):
                self.client.log_metric(run_id, key, float(value), step=step or 0)

    def log_history(self, run_id: str, history: list[dict[str, Any]], prefix: str = "") -> None:
        """Per-epoch losses and throughput as metrics with the epoch as their step."""
        for record in history:
            if "epoch" not in record:
                continue
            values = {
                f"{prefix}{k}": v
                for k, v in record.items()
                if k in ("train_loss", "valid_loss", "samples_per_s", "lr")
            }
            self.log_metrics(run_id, values, step=int(record["epoch"]))

    def log_bytes(self, run_id: str, name: str, data: bytes, folder: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.client.log_artifact(run_id, str(path), folder)

    def log_folder(self, run_id: str, local: str | os.PathLike[str], folder: str) -> None:
        self.client.log_artifacts(run_id, str(local), folder)

    def run_link(self, run_id: str, ui_url: str) -> str:
        """The run's page in an MLflow UI at `ui_url`."""
        return f"{ui_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    # -- registered versions ---------------------------------------------------------------

    def register(self, component: str, run_id: str, tags: Mapping[str, str]) -> ModelVersion:
        """A new version of `finpipe-<component>` from the run's `model/` artifacts."""
        from mlflow.exceptions import MlflowException

        name = registered_name(component)
        try:
            self.client.create_registered_model(name)
        except MlflowException as error:
            if "already exists" not in str(error).lower():
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACTS}"
        made = self.client.create_model_version(name, source, run_id=run_id, tags=dict(tags))
        return self._version(made)

    def _version(self, made: Any) -> ModelVersion:
        return ModelVersion(made.name, str(made.version), made.run_id, dict(made.tags or {}))

    def version(self, uri: str) -> ModelVersion:
        """The version a `models:/<name>/<version>` URI names."""
        name, _, number = uri.removeprefix("models:/").rpartition("/")
        if not name or not number.isdigit():
            raise ValueError(f"{uri!r} is not a models:/<name>/<version> URI")
        return self._version(self.client.get_model_version(name, number))

    def by_alias(self, component: str, alias: str) -> ModelVersion | None:
        """The version holding `alias` (None when no version does)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(registered_name(component), alias)
        except MlflowException:
            return None
        return self._version(found)

    def set_alias(self, component: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(registered_name(component), alias, version)

    def clear_alias(self, component: str, alias: str) -> None:
        if self.by_alias(component, alias) is not None:
            self.client.delete_registered_model_alias(registered_name(component), alias)

    def versions(self, component: str) -> list[ModelVersion]:
        """Every version of a component, oldest first."""
        found = self.client.search_model_versions(f"name = '{registered_name(component)}'")
        return sorted((self._version(v) for v in found), key=lambda v: int(v.version))

    def download(self, version: ModelVersion, folder: str | os.PathLike[str]) -> Path:
        """Copy a version's model artifacts into `folder`; returns where they are."""
        from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

        previous = os.environ.get(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
        os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"  # no bars in run logs
        try:
            path = self.client.download_artifacts(version.run_id, MODEL_ARTIFACTS, str(folder))
        finally:
            if previous is None:
                os.environ.pop(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
            else:
                os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = previous
        return Path(path)


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 500 else text[:497] + "..."


# -- champion and challenger ---------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A challenger against the champion on the dates both are out of sample."""

    promote: bool
    reason: str
    n_dates: int
    difference: float
    t_stat: float


def compare_on_window(
    challenger: pd.DataFrame,
    champion: pd.DataFrame,
    labels: pd.DataFrame,
    min_dates: int = 20,
    lags: int = 0,
    threshold: float = -1.645,
) -> Comparison:
    """Whether a challenger may replace the champion.

    Both predict the same rows (`date, ticker, horizon, prediction`), dated where neither
    learned the outcome. Per date, the rank IC (averaged over horizons) of the challenger
    minus the champion's; its mean over dates and a HAC t-statistic (`lags`, overlapping
    labels). The challenger is promoted unless it is significantly worse: t < `threshold`
    (one-sided 5% by default). With fewer than `min_dates` shared dates the test has no
    power and cannot show it worse, so the challenger (the same procedure on newer data)
    is promoted and the reason says why.
    """
    daily = {}
    for name, frame in (("challenger", challenger), ("champion", champion)):
        rows = frame.merge(labels[[*ROW_KEY, "fwd_return"]], on=list(ROW_KEY), how="inner")
        per_horizon = [
            daily_rank_ic(part["prediction"], part["fwd_return"], part["date"])
            for _, part in rows.groupby("horizon")
        ]
        daily[name] = (
            pd.concat(per_horizon, axis=1).mean(axis=1) if per_horizon else pd.Series(dtype=float)
        )
    difference = (daily["challenger"] - daily["champion"]).dropna()
    n = len(difference)
    if n < min_dates:
        return Comparison(
            True,
            f"{n} shared out-of-sample dates, fewer than {min_dates}: no evidence against the "
            "challenger, promoted",
            n,
            float(difference.mean()) if n else float("nan"),
            float("nan"),
        )
    mean, se = mean_stderr(difference, lags, "uniform")
    t = mean / se if se > 0 else math.copysign(math.inf, mean) if mean != 0 else 0.0
    promote = t >= threshold
    verdict = "not significantly worse: promoted" if promote else "significantly worse: kept"
    return Comparison(
        promote,
        f"rank IC difference {mean:+.4f} over {n} dates (t {t:.2f}): {verdict}",
        n,
        float(mean),
        float(t),
    )


# -- publishing a training -----------------------------------------------------------------


def window_tags(window: FitWindow) -> dict[str, str]:
    """A fit window as version tags (dates as ISO strings)."""
    return {k: v for k, v in window.to_dict().items() if v is not None}


def publish_training(
    registry: ModelRegistry,
    family: str,
    run: TrainingRun,
    window: FitWindow,
    provenance: Mapping[str, str],
    curve_png: bytes | None = None,
) -> tuple[ModelVersion, str]:
    """Log a serving model's training as an MLflow run (parameters, validation metrics,
    the per-epoch history, the training curve and the saved model) and register it as a new
    version of `finpipe-<family>`; returns (the version, the run id)."""
    tags = {"finpipe.family": family, "finpipe.kind": "serving", **provenance}
    with registry.run(
        f"{family} as of {window.as_of.date()}", tags, run.model.get_params()
    ) as run_id:
        registry.log_metrics(run_id, run.model.metrics)
        registry.log_metrics(run_id, {"wall_seconds": run.wall_seconds})
        registry.log_history(run_id, run.model.history)
        if curve_png is not None:
            registry.log_bytes(run_id, "training_curve.png", curve_png)
        with tempfile.TemporaryDirectory() as tmp:
            run.model.save(Path(tmp) / MODEL_ARTIFACTS)
            registry.log_folder(run_id, Path(tmp) / MODEL_ARTIFACTS, MODEL_ARTIFACTS)
    version = registry.register(family, run_id, {**window_tags(window), **provenance})
    return version, run_id


def load_version(registry: ModelRegistry, version: ModelVersion) -> Forecaster:
    """The fitted model a registered version holds; UnreadableModelError naming the version
    and what to do when its artifacts are missing or do not load."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return load_model(registry.download(version, tmp))
        except (UnreadableModelError, OSError, MlflowException) as error:
            raise UnreadableModelError(
                f"{version.uri} (run {version.run_id}) is unreadable: {error}. Re-materialize "
                f"model_{version.component} to register a new version, or move the "
                f"{CHAMPION} alias to another one"
            ) from error


def settle_challenger(
    registry: ModelRegistry,
    family: str,
    new: ModelVersion,
    panel: PanelData,
    min_dates: int,
) -> Comparison:
    """Make `new` the champion, or keep it as the challenger that shadows the champion.

    The two are compared on the dates where both are out of sample: after the champion's
    last training date and within the new version's early-stopping tail (which it did not
    fit on). Rolling back is `registry.set_alias(family, CHAMPION, <older version>)`.
    """
    champion = registry.by_alias(family, CHAMPION)
    if champion is None:
        comparison = Comparison(True, "no champion yet: the first version serves", 0, 0.0, 0.0)
    else:
        start = max(champion.date("valid_end") + pd.Timedelta(days=1), new.date("valid_start"))
        view = panel.select(start, new.date("valid_end"))
        labels = view.labels_frame()
        comparison = compare_on_window(
            load_version(registry, new).predict(view),
            load_version(registry, champion).predict(view),
            labels,
            min_dates=min_dates,
            lags=max(panel.horizons) - 1,
        )
    if comparison.promote:
        registry.set_alias(family, CHAMPION, new.version)
        registry.clear_alias(family, CHALLENGER)
    else:
        registry.set_alias(family, CHALLENGER, new.version)
    return comparison
