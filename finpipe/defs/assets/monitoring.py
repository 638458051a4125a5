"""Group `monitoring`: drift of recent features against the training reference, and of live
performance against validation; the drift sensor reads this asset's metadata."""

import json

import dagster as dg
import numpy as np
import pandas as pd

from finpipe.core.storage import ParquetStore
from finpipe.defs.assets.features import features
from finpipe.defs.resources import MonitoringSettings, ResearchSettings, StorageResource
from finpipe.forecasting.predictions import read_prediction_history
from finpipe.models.registry import list_models
from finpipe.monitoring.drift import assess_drift, drift_episode, feature_drift, live_performance


def validation_rank_ics(store: ParquetStore) -> dict[str, float]:
    """`<model>|<horizon>` -> validation rank IC, from each stored model's model.json."""
    out = {}
    for family in list_models():
        path = f"{store.root}/models/{family}/model.json"
        if store.fs.exists(path):
            with store.fs.open(path, "r") as fh:
                metrics = json.load(fh).get("metrics", {})
            out.update(
                {
                    f"{family}|{key.removeprefix('rank_ic_h')}": float(value)
                    for key, value in metrics.items()
                    if key.startswith("rank_ic_h")
                }
            )
    return out


@dg.asset(group_name="monitoring", deps=[features], kinds={"parquet"})
def drift_report(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    research: ResearchSettings,
    monitoring: MonitoringSettings,
) -> dg.MaterializeResult:
    """PSI and KS of the last `monitoring.recent_days` dates of every feature against the
    models' training window, live rank IC against validation, and the drift verdict."""
    store = storage.store()
    frame = store.read("features", "features")
    train_end = research.train_end_date(frame["date"])
    dates = np.sort(frame["date"].unique())
    recent = frame[frame["date"] >= dates[-monitoring.recent_days]]
    reference = frame[frame["date"] <= train_end]
    reference = reference.sample(min(len(reference), monitoring.reference_rows), random_state=0)
    columns = [c for c in frame.columns if c not in ("date", "ticker")]
    table = feature_drift(reference, recent, columns)
    live = live_performance(read_prediction_history(store), validation_rank_ics(store))
    verdict = assess_drift(table, live, monitoring.thresholds())
    state = store.read("monitoring", "drift_state")
    previous = None if state is None or state.empty else state["episode"].iloc[-1]
    episode = drift_episode(
        previous if isinstance(previous, str) else None, verdict.detected, dates[-1]
    )
    store.write(pd.DataFrame({"episode": [episode or ""]}), "monitoring", "drift_state")
    store.write(table, "monitoring", "drift_report")
    context.log.info(
        "drift: %s (%.0f%% of %d features drifted)%s",
        "DETECTED" if verdict.detected else "none",
        100 * verdict.drifted_share,
        len(columns),
        "".join(f"; {r}" for r in verdict.reasons),
    )
    bands = table["psi_band"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "drift_detected": dg.MetadataValue.bool(verdict.detected),
            "episode": dg.MetadataValue.text(episode or ""),
            "drifted_share": dg.MetadataValue.float(round(verdict.drifted_share, 4)),
            "reasons": dg.MetadataValue.json(verdict.reasons),
            "psi_bands": dg.MetadataValue.json(bands),
            "recent_window": dg.MetadataValue.text(
                f"{pd.Timestamp(recent['date'].min()).date()}..{pd.Timestamp(dates[-1]).date()}"
            ),
            "top_psi": dg.MetadataValue.md(
                table.nlargest(10, "psi").to_markdown(index=False, floatfmt=".4f")
            ),
            "live_performance": dg.MetadataValue.md(
                live.to_markdown(index=False, floatfmt=".4f")
                if len(live)
                else "no realised rows yet"
            ),
        }
    )


MONITORING_ASSETS = [drift_report]
