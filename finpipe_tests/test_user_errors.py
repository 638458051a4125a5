"""Every mistake a user can make gets a clear answer. Each test names the finding it covers:
the universe honoured, corrupt files named (and repaired where the source can refetch),
nonsense config refused before anything is written, members that vanish, one unknown
ticker, runs killed outright, a live source without a FRED key, and a command line that
does not import PyTorch. Explicit settings over tuned ones is in test_dagster_models."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finpipe.core.storage import ParquetStore, UnreadableFileError
from finpipe.definitions import build_defs
from finpipe.defs.demo import reap_dead_runs
from finpipe.defs.resources import (
    EvaluationSettings,
    FredCredentials,
    MarketDataResource,
    ResearchSettings,
    StorageResource,
    config_problems,
)
from finpipe.forecasting.system import MissingModelError, load_served
from finpipe.models import PanelData
from finpipe.models.registry import UnreadableModelError
from finpipe.models.torch_loop import CheckpointError, CheckpointManager
from finpipe.models.trainer import train_family, window_views
from finpipe.models.tuning import open_study
from finpipe.models.versions import (
    CHAMPION,
    ModelRegistry,
    load_version,
    publish_training,
)
from finpipe_tests.synthetic_model_data import fit_window, model_frames


def synthetic(root: Path, **market) -> dg.Definitions:
    config = {"source": "synthetic", "synthetic_n_tickers": 4, "synthetic_n_days": 700, **market}
    return build_defs(
        {
            "market_data": MarketDataResource(**config),
            "storage": StorageResource(root=str(root)),
            "research": ResearchSettings(
                feature_families=["momentum"],
                min_train_days=260,
                research_fraction=0.75,
                valid_days=20,
                stack_days=20,
                calibration_days=20,
                retrain_every=50,
            ),
        }
    )


def run(defs: dg.Definitions, job: str, **kwargs) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(raise_on_error=False, **kwargs)


def step_errors(result: dg.ExecuteInProcessResult) -> str:
    """Every failure message of the run, with the errors that caused them."""
    messages = []
    for event in result.all_events:
        if event.event_type_value not in ("STEP_FAILURE", "RESOURCE_INIT_FAILURE"):
            continue
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return " ".join(messages)


# -- the configured universe is honoured -------------------------------------------------


def test_universe_is_honoured_when_shrunk_and_grown(tmp_path: Path) -> None:
    assert run(synthetic(tmp_path), "refresh_features").success
    store = ParquetStore(str(tmp_path))
    assert store.read("features", "features")["ticker"].nunique() == 4
    shrunk = run(synthetic(tmp_path, universe="S0000,S0001"), "refresh_features")
    assert shrunk.success
    assert set(store.read("features", "features")["ticker"]) == {"S0000", "S0001"}
    assert set(store.read("features", "labels")["ticker"]) == {"S0000", "S0001"}
    assert set(store.names("raw", "prices")) == {"S0000", "S0001", "S0002", "S0003"}  # kept
    grown = run(
        synthetic(tmp_path, universe="S0000,S0001,S0002", synthetic_n_tickers=4), "refresh_features"
    )
    assert grown.success
    assert set(store.read("features", "features")["ticker"]) == {"S0000", "S0001", "S0002"}


# -- corrupt files are named, and repaired where the source can refetch ------------------


def test_truncated_raw_table_is_moved_aside_and_refetched(tmp_path: Path) -> None:
    defs = synthetic(tmp_path)
    assert run(defs, "ingest").success
    path = tmp_path / "raw" / "prices" / "S0001.parquet"
    before = pd.read_parquet(path)
    os.truncate(path, 1000)
    again = run(defs, "ingest")
    assert again.success
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)
    (moved,) = (tmp_path / "quarantine" / "corrupt" / "prices").iterdir()
    assert moved.name.startswith("S0001-") and moved.stat().st_size == 1000


def test_truncated_features_table_names_the_file_and_the_fix(tmp_path: Path) -> None:
    defs = synthetic(tmp_path)
    assert run(defs, "refresh_features").success
    os.truncate(tmp_path / "features" / "features.parquet", 1000)
    result = run(defs, "refresh_features", asset_selection=[dg.AssetKey("model_panel")])
    message = step_errors(result)
    assert "features/features.parquet is unreadable" in message
    assert "re-materialize features" in message
    with pytest.raises(UnreadableFileError, match="re-materialize features"):
        ParquetStore(str(tmp_path)).read("features", "features")


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[ModelRegistry, PanelData, object]:
    registry = ModelRegistry.local(tmp_path_factory.mktemp("mlflow"))
    features, labels = model_frames(n_tickers=6, n_days=300, seed=1)
    panel = PanelData.from_frames(features, labels, horizons=(1, 5))
    window = fit_window(panel, 150, 250, "serving")
    fit, tail = window_views(panel, window)
    run_ = train_family("ridge", fit, tail, {})
    version, _ = publish_training(registry, "ridge", run_, window, {})
    registry.set_alias("ridge", CHAMPION, version.version)
    return registry, panel, version


def test_truncated_model_artifact_names_the_version_and_the_fix(registered) -> None:
    registry, _, version = registered
    source = Path(registry.client.get_run(version.run_id).info.artifact_uri.removeprefix("file://"))
    joblib_file = source / "model" / "estimators.joblib"
    data = joblib_file.read_bytes()
    try:
        joblib_file.write_bytes(data[:50])
        with pytest.raises(UnreadableModelError) as error:
            load_version(registry, version)
    finally:
        joblib_file.write_bytes(data)
    message = str(error.value)
    assert version.uri in message and "does not load" in message
    assert "Re-materialize model_ridge" in message


def test_a_served_member_without_a_champion_fails_naming_it(registered) -> None:
    registry, _, _ = registered
    with pytest.raises(MissingModelError, match=r"hist_gbm .* materialize model_hist_gbm"):
        load_served(registry, ["ridge", "hist_gbm"])


def test_corrupt_checkpoint_index_and_optuna_storage_are_named(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "checkpoints.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoints.json is unreadable.*delete"):
        manager.entries  # noqa: B018
    database = tmp_path / "studies.db"
    database.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match=r"(?s)studies.db is unreadable.*training.optuna_storage"):
        open_study("ridge", str(database))


# -- nonsense config is refused by name, before anything is written ----------------------

CASES = [
    ("forecasting", {"levels": [0.8], "interval_level": 0.9}, "forecasting: interval_level 0.9"),
    ("forecasting", {"mc_samples": -1}, "forecasting.mc_samples = -1"),
    ("evaluation", {"top_k": 2.0}, "evaluation.top_k = 2.0: Input should be less than or equal"),
    ("evaluation", {"top_k": 0.0}, "evaluation.top_k = 0.0: Input should be greater than 0"),
    ("evaluation", {"metadata_plots": ["equty_curves"]}, "unknown plots ['equty_curves']"),
    ("market_data", {"start_date": "2020-13-45"}, "market_data.start_date = '2020-13-45'"),
    ("market_data", {"start_date": "2021-01-05", "end_date": "2021-01-04"}, "is after end_date"),
    ("market_data", {"universe": "AAPL,../etc"}, "market_data.universe = 'AAPL,../etc'"),
    ("research", {"retrain_every": 0}, "research: retrain_every must be >= 1"),
    ("research", {"calibration_days": 0}, "research: calibration_days must be >= 1, got 0"),
    ("research", {"calibration_days": -5}, "research: calibration_days must be >= 1, got -5"),
    ("storage", {"root": ""}, "storage.root = '': String should have at least 1 character"),
    ("research", {"research_end": "yesterday"}, "research.research_end = 'yesterday'"),
    ("research", {"feature_families": ["alpha999"]}, "unknown feature families ['alpha999']"),
    ("training", {"families": ["ridge", "xgboost"]}, "unknown model families ['xgboost']"),
    ("training", {"params_json": '{"ridge": {"alfa": 3}}'}, "ridge does not take ['alfa']"),
    ("training", {"params_json": "{ridge"}, "training.params_json = '{ridge': is not JSON"),
    ("monitoring", {"ks_pvalue": 2.0}, "ks_pvalue must be in (0, 1)"),
]


@pytest.mark.parametrize(("key", "config", "message"), CASES)
def test_nonsense_config_is_refused_with_the_field_and_what_is_allowed(
    key: str, config: dict, message: str
) -> None:
    problems = config_problems({"resources": {key: {"config": config}}})
    assert any(message in p for p in problems), problems


def test_a_setting_read_from_the_environment_is_left_to_dagster() -> None:
    assert config_problems({"resources": {"fred": {"config": {"api_key": {"env": "NO"}}}}}) == []


def test_an_invalid_run_config_writes_nothing(tmp_path: Path) -> None:
    defs = build_defs({"storage": StorageResource(root=str(tmp_path))})
    bad = {"resources": {"evaluation": {"config": {"top_k": 2.0}}}}
    result = run(defs, "ingest", run_config=bad)
    assert not result.success
    assert "evaluation.top_k = 2.0" in step_errors(result)
    assert list(tmp_path.iterdir()) == []
    wrong_type = {"resources": {"market_data": {"config": {"source": "nope"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="source"):
        defs.resolve_job_def("ingest").execute_in_process(run_config=wrong_type)
    assert list(tmp_path.iterdir()) == []


FIELDS = {
    "market_data": ["synthetic_n_tickers", "synthetic_n_days", "start_date", "universe"],
    "research": ["retrain_every", "valid_days", "research_fraction", "embargo", "research_end"],
    "forecasting": ["mc_samples", "max_model_age", "interval_level"],
    "evaluation": ["top_k", "cost_bps", "n_boot", "metadata_plots"],
    "monitoring": ["recent_days", "reference_rows"],
}
BAD_VALUES = st.one_of(
    st.integers(max_value=-1),
    st.floats(min_value=1.5, max_value=1e9),
    st.just(0),
    st.text(alphabet="x/.-:", min_size=1, max_size=8),
    st.lists(st.just("nonsense_name"), min_size=1, max_size=2),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key_field=st.sampled_from([(k, f) for k, fields in FIELDS.items() for f in fields]),
    value=BAD_VALUES,
)
def test_random_malformed_config_names_the_field_and_writes_nothing(
    key_field: tuple[str, str], value
) -> None:
    """Whatever is put in a field (a wrong type, an out-of-range number, a bad date, an
    unknown name), a run with it fails naming the field and writes nothing; or the value
    is one the field accepts."""
    key, field = key_field
    run_config = {"resources": {key: {"config": {field: value}}}}
    if not config_problems(run_config):  # accepted: then it really is valid for that field
        resource = {"research": ResearchSettings, "evaluation": EvaluationSettings}.get(key)
        if resource is not None:
            resource(**{field: value})
        return
    with tempfile.TemporaryDirectory() as root:
        job = build_defs({"storage": StorageResource(root=root)}).resolve_job_def("ingest")
        try:
            result = job.execute_in_process(run_config=run_config, raise_on_error=False)
            assert not result.success
            message = step_errors(result)
        except dg.DagsterInvalidConfigError as error:  # a wrong type, refused by Dagster
            message = str(error)
        assert any(
            name in message for name in (f"{key}.{field}", f"{key}:", f"{key}:config:{field}")
        ), message
        assert "Traceback" not in message
        assert os.listdir(root) == []


# -- one unknown ticker does not take the others down ------------------------------------


def test_an_unknown_ticker_is_reported_and_the_others_proceed(tmp_path: Path) -> None:
    defs = build_defs(
        {
            "market_data": MarketDataResource(universe="AAPL,TSLA", start_date="2022-01-03"),
            "storage": StorageResource(root=str(tmp_path)),
        }
    )
    result = run(defs, "ingest")
    assert result.success
    store = ParquetStore(str(tmp_path))
    assert store.names("raw", "prices") == ["AAPL"]
    meta = {
        k: v.value
        for k, v in result.asset_materializations_for_node("raw_prices")[-1].metadata.items()
    }
    assert "TSLA" in meta["unavailable"] and "no tickers ['TSLA']" in meta["unavailable"]["TSLA"]
    quarantined = store.read("quarantine", "universe")
    assert quarantined.query("dataset == 'prices'")["name"].tolist() == ["TSLA"]
    # the bundled macro series end before 2022: named, with the window asked for
    assert all(quarantined.query("dataset == 'macro'")["reason"].str.contains("2022-01-03.."))
    check = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "every_name_stored" and c.asset_key.to_user_string() == "raw_prices"
    )
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


# -- deterministic errors are not retried; killed runs do not stay STARTED ---------------


def test_no_asset_retries_a_deterministic_error() -> None:
    """A bad config or a corrupt file fails the same way every time: retrying only delays
    the message, so no op carries a retry policy."""
    defs = build_defs()
    ops = [
        op
        for assets_def in defs.assets
        if isinstance(assets_def, dg.AssetsDefinition)
        for op in assets_def.node_def.iterate_op_defs()
    ]
    assert len(ops) > 10
    assert [op.name for op in ops if op.retry_policy is not None] == []


def test_a_run_left_started_by_a_killed_process_is_marked_failed() -> None:
    from dagster._core.events import DagsterEvent, DagsterEventType

    @dg.op
    def noop() -> None: ...

    @dg.job
    def killed() -> None:
        noop()

    with dg.instance_for_test() as instance:
        stale = instance.create_run_for_job(killed)
        instance.report_dagster_event(
            DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name="killed"),
            stale.run_id,
        )
        instance.report_engine_event("Executing steps in process (pid: 999999)", stale)
        alive = instance.create_run_for_job(killed)
        instance.report_dagster_event(
            DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name="killed"),
            alive.run_id,
        )
        instance.report_engine_event(f"Executing steps in process (pid: {os.getpid()})", alive)
        assert instance.get_run_by_id(stale.run_id).status == dg.DagsterRunStatus.STARTED
        assert reap_dead_runs(instance) == [stale.run_id]
        assert instance.get_run_by_id(stale.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED


# -- a live source without a FRED key skips macro with a warning -------------------------


def test_live_source_without_fred_key_skips_macro_with_a_reason() -> None:
    market = MarketDataResource(source="live")
    assert market.macro_source(FredCredentials()) is None
    assert "FRED_API_KEY is not set" in market.no_macro_reason(FredCredentials())
    assert market.macro_source(FredCredentials(api_key="k")) is not None


# -- the command line does not import PyTorch --------------------------------------------


def test_importing_the_definitions_does_not_import_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import finpipe.definitions"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "finpipe.definitions" in imported and "torch" not in imported
    assert not any(name.startswith("torch.") for name in imported)


def test_a_run_ends_with_a_summary_of_what_it_changed(tmp_path: Path, capfd) -> None:
    """Finding: 155 lines of DEBUG events and no closing summary. A run prints INFO lines
    and ends with what each asset changed and how the checks went."""
    defs = synthetic(tmp_path)
    assert run(defs, "ingest").success
    err = capfd.readouterr().err
    assert "DEBUG" not in err
    summary = err[err.index("finpipe: run succeeded") :]
    assert "asset raw_prices" in summary and "'rows_added':" in summary
    assert "asset checks:" in summary and " 0 failed" in summary
    assert run(defs, "ingest").success  # nothing new: nothing added
    again = capfd.readouterr().err
    assert "'actions': {'unchanged': 4}" in again[again.index("finpipe: run succeeded") :]
