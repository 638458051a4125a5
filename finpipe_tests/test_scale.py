"""Scale: the dense panel is built once from the stored tables and shared by memory map, the
features table is read in full once per run, the feature checks, evaluated without reading
it back, still block; the replay's fan-out under the multiprocess executor."""

import shutil
import time

import dagster as dg
import numpy as np
import pandas as pd

from finpipe.core.storage import TABLE_READS, ParquetStore
from finpipe.definitions import build_defs
from finpipe.defs.checks import features as feature_checks
from finpipe.defs.resources import MarketDataResource, ResearchSettings, StorageResource
from finpipe.features.engine import ALL_MISSING, INFINITE
from finpipe.models.panel_data import PanelData
from finpipe_tests import replay_job

RESEARCH = {
    "research_fraction": 0.5,
    "retrain_every": 100,
    "valid_days": 20,
    "stack_days": 30,
    "calibration_days": 30,
    "min_train_days": 260,
}


def feature_defs(root, n_days: int, families: list[str]) -> dg.Definitions:
    return build_defs(
        {
            "market_data": MarketDataResource(
                source="synthetic", synthetic_n_tickers=5, synthetic_n_days=n_days
            ),
            "storage": StorageResource(root=str(root)),
            "research": ResearchSettings(feature_families=families, **RESEARCH),
        }
    )


def refresh(defs: dg.Definitions) -> tuple[dg.ExecuteInProcessResult, dict[str, int], list[str]]:
    """The refresh_features run, the tables it read in full, and its log messages."""
    before = dict(TABLE_READS)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("refresh_features")
    result = job.execute_in_process(instance=instance, raise_on_error=False)
    reads = {k: v - before.get(k, 0) for k, v in TABLE_READS.items() if v > before.get(k, 0)}
    return result, reads, [e.user_message for e in instance.all_logs(result.run_id)]


def test_the_shared_panel_equals_a_fresh_build_and_features_are_read_once(tmp_path):
    result, reads, messages = refresh(feature_defs(tmp_path, 700, ["alpha158_close", "momentum"]))
    assert result.success
    assert reads["features/features"] == 1
    logged = [m for m in messages if m.startswith("storage: tables read in full")]
    assert len(logged) == 1 and "features/features 1," in logged[0]

    shared = StorageResource(root=str(tmp_path)).read_panel()
    store = ParquetStore(str(tmp_path))
    fresh = PanelData.from_frames(
        store.read("features", "features"), store.read("features", "labels"), (1, 5, 20)
    )
    assert isinstance(shared.features, np.memmap) and not shared.features.flags.writeable
    pd.testing.assert_index_equal(shared.dates, fresh.dates)
    pd.testing.assert_index_equal(shared.tickers, fresh.tickers)
    assert shared.feature_names == fresh.feature_names and shared.horizons == fresh.horizons
    for name in ("features", "targets", "label_end", "sample_mask"):
        a, b = getattr(shared, name), getattr(fresh, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert np.isfinite(shared.features).mean() > 0.5 and np.isfinite(shared.targets).any()


def test_a_failed_feature_check_blocks_the_panel(tmp_path, monkeypatch):
    """The checks run in the features asset on the frame it writes (what they find is
    `invalid_columns`, tested with the engine); a failure blocks model_panel."""
    found = {INFINITE: ["mom_63"], ALL_MISSING: []}
    monkeypatch.setattr(feature_checks, "invalid_columns", lambda frame: found)
    result, _, _ = refresh(feature_defs(tmp_path, 700, ["momentum"]))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["no_infinities"].passed and checks["no_all_nan_feature"].passed
    assert checks["no_infinities"].metadata["features"].value == ["mom_63"]
    assert not result.success and result.asset_materializations_for_node("features")
    assert not result.asset_materializations_for_node("model_panel")
    assert not (tmp_path / "panel").exists()


def test_the_replay_fans_out_under_the_multiprocess_executor(tmp_path, monkeypatch):
    """One process per fold, two at a time, and the same replay rows as in-process."""
    monkeypatch.setenv("FINPIPE_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    replay = [dg.AssetKey("walk_forward_predictions")]
    defs = replay_job.small_defs()
    features = defs.resolve_job_def("refresh_features").execute_in_process()
    assert features.success
    local = replay_job.evaluate_job().execute_in_process(asset_selection=replay)
    assert local.success
    store = ParquetStore(str(tmp_path / "data"))
    expected = store.read("evaluation", "replay")
    shutil.rmtree(tmp_path / "data" / "evaluation")  # no fold is reused: all are recomputed

    monkeypatch.setenv("FINPIPE_EXECUTOR", "multiprocess")
    started = time.perf_counter()
    with dg.instance_for_test() as instance:
        result = dg.execute_job(
            dg.reconstructable(replay_job.evaluate_job),
            instance=instance,
            run_config={"execution": {"config": {"max_concurrent": 2}}},
            asset_selection=replay,
        )
        assert result.success
        folds = [
            e
            for e in result.all_events
            if e.event_type_value == "STEP_START" and "run_replay_fold[" in (e.step_key or "")
        ]
        pids = {e.pid for e in folds}
    seconds = time.perf_counter() - started
    assert len(folds) == 3 and len(pids) == 3, (len(folds), pids)
    rows = store.read("evaluation", "replay")
    key = ["date", "ticker", "horizon", "model"]
    pd.testing.assert_frame_equal(
        rows.sort_values(key, ignore_index=True), expected.sort_values(key, ignore_index=True)
    )
    assert seconds < 120, seconds
