"""Group `monitoring`: drift of recent features against what the serving models trained on,
and of live performance against the replay's recent out-of-sample level; the drift sensor
reads this asset's metadata."""

import dagster as dg
import pandas as pd

from finpipe.defs.assets.evaluation import read_replay, walk_forward_predictions
from finpipe.defs.assets.features import labels, model_panel, time_plan
from finpipe.defs.assets.models import serving_ensemble
from finpipe.defs.assets.predictions import prediction_history
from finpipe.defs.metadata import md_table
from finpipe.defs.resources import MonitoringSettings, RegistryResource, StorageResource
from finpipe.forecasting.predictions import read_prediction_history
from finpipe.forecasting.system import ENSEMBLE
from finpipe.models.versions import CHAMPION
from finpipe.monitoring.drift import build_drift_report, recent_rank_ics

STATE = ("monitoring", "drift_state")


@dg.asset(
    group_name="monitoring",
    deps=[
        model_panel,
        time_plan,
        labels,
        prediction_history,
        walk_forward_predictions,
        serving_ensemble,
    ],
    kinds={"parquet"},
    code_version="2",
)
def drift_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    monitoring: MonitoringSettings,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    """PSI and KS of the last `monitoring.recent_days` dates of every feature against the
    dates the champion ensemble's members trained on, live rank IC of every served model
    against its recent out-of-sample level, and the drift verdict and episode."""
    store = storage.store()
    panel, plan = storage.read_panel(), storage.read_plan()
    champion = registry.registry(storage).by_alias(ENSEMBLE, CHAMPION)
    window = (
        (champion.date("train_start"), champion.date("valid_end"))
        if champion is not None
        else (plan.serving.train_start, plan.serving.valid_end)
    )
    state = store.read(*STATE)
    previous = None if state is None or state.empty else state["episode"].iloc[-1] or None
    report = build_drift_report(
        panel,
        window,
        monitoring.recent_days,
        monitoring.reference_rows,
        read_prediction_history(store),
        recent_rank_ics(read_replay(storage), panel.labels_frame(), plan.serving.stack_start),
        monitoring.thresholds(),
        previous,
    )
    store.write(pd.DataFrame({"episode": [report.episode or ""]}), *STATE)
    store.write(report.features, "monitoring", "drift_report")
    verdict = report.verdict
    context.log.info(
        "drift: %s (%.0f%% of %d features drifted against %s..%s)%s",
        "DETECTED" if verdict.detected else "none",
        100 * verdict.drifted_share,
        len(report.features),
        report.reference[0].date(),
        report.reference[1].date(),
        "".join(f"; {r}" for r in verdict.reasons),
    )
    return dg.MaterializeResult(
        metadata={
            "drift_detected": dg.MetadataValue.bool(verdict.detected),
            "episode": dg.MetadataValue.text(report.episode or ""),
            "drifted_share": dg.MetadataValue.float(round(verdict.drifted_share, 4)),
            "reasons": dg.MetadataValue.json(verdict.reasons),
            "psi_bands": dg.MetadataValue.json(
                report.features["psi_band"].value_counts().to_dict()
            ),
            "reference_window": dg.MetadataValue.text(
                f"{report.reference[0].date()}..{report.reference[1].date()}"
            ),
            "recent_window": dg.MetadataValue.text(
                f"{report.recent[0].date()}..{report.recent[1].date()}"
            ),
            "top_psi": md_table(report.features.nlargest(10, "psi")),
            "live_performance": md_table(report.live)
            if len(report.live)
            else dg.MetadataValue.md("no realised rows yet"),
        }
    )


MONITORING_ASSETS = [drift_report]
