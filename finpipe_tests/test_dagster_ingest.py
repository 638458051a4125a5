import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from finpipe.core.contracts import FUNDAMENTALS, conform
from finpipe.core.storage import ParquetStore
from finpipe.data.sources.synthetic import SyntheticConfig
from finpipe.definitions import build_defs, defs
from finpipe.defs.resources import MarketDataResource, ResearchSettings, StorageResource
from finpipe.features import FAMILIES
from finpipe_tests.synthetic_fundamentals import synthetic_statements

REPO = Path(__file__).resolve().parents[1]


def synthetic_defs(root: Path, **market) -> dg.Definitions:
    config = {"source": "synthetic", "synthetic_n_tickers": 4, "synthetic_n_days": 80, **market}
    return build_defs(
        {"market_data": MarketDataResource(**config), "storage": StorageResource(root=str(root))}
    )


def run_ingest(definitions: dg.Definitions) -> dg.ExecuteInProcessResult:
    return definitions.resolve_job_def("ingest").execute_in_process(raise_on_error=False)


def materialization(result: dg.ExecuteInProcessResult, key: str) -> dict:
    events = result.asset_materializations_for_node(key)
    return {k: v.value for k, v in events[-1].metadata.items()}


def test_definitions_load_with_the_ingest_group():
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"universe", "raw_prices", "raw_macro", "raw_fundamentals", "benchmark_prices"} <= keys


def test_ingest_job_on_synthetic_source_passes_every_check_and_is_idempotent(tmp_path):
    definitions = synthetic_defs(tmp_path)
    first = run_ingest(definitions)
    assert first.success
    checks = first.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    assert materialization(first, "raw_prices")["rows_added"] == 4 * 80
    assert materialization(first, "benchmark_prices")["ticker"] == "^SYN"
    assert "no macro" in materialization(first, "raw_macro")["skipped"]

    second = run_ingest(definitions)
    assert second.success
    assert materialization(second, "raw_prices")["rows_added"] == 0
    assert materialization(second, "raw_prices")["actions"] == {"unchanged": 4}

    longer = run_ingest(synthetic_defs(tmp_path, synthetic_n_days=90))
    assert materialization(longer, "raw_prices")["rows_added"] == 4 * 10


def test_a_bad_stored_row_fails_the_blocking_check(tmp_path):
    definitions = synthetic_defs(tmp_path)
    assert run_ingest(definitions).success
    store = ParquetStore(str(tmp_path))
    table = store.read("raw", "prices", "S0001")
    table.loc[5, "high"] = table.loc[5, "low"] / 2
    store.write(
        table, "raw", "prices", "S0001", metadata=store.read_metadata("raw", "prices", "S0001")
    )
    result = run_ingest(definitions)
    failed = {c.check_name: c for c in result.get_asset_check_evaluations() if not c.passed}
    assert "ohlc_inconsistent" in failed
    assert failed["ohlc_inconsistent"].severity == dg.AssetCheckSeverity.ERROR
    assert failed["ohlc_inconsistent"].metadata["failing_rows"].value == 1


def test_cli_validates_checks_and_materializes_the_ingest_group_from_bundled_data(tmp_path):
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "FINPIPE_DATA_ROOT": str(tmp_path / "data"),
    }
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    dagster = str(Path(sys.executable).parent / "dagster")
    validate = subprocess.run(
        [dagster, "definitions", "validate", "-m", "finpipe.definitions"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert validate.returncode == 0, validate.stderr[-2000:]
    check = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    run = subprocess.run(
        [dagster, "asset", "materialize", "-m", "finpipe.definitions", "--select", "group:ingest"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RUN_SUCCESS" in run.stderr + run.stdout
    store = ParquetStore(str(tmp_path / "data"))
    assert len(store.names("raw", "prices")) == 20
    aapl = store.read("raw", "prices", "AAPL")
    assert aapl["date"].max() == pd.Timestamp("2022-12-28")


def test_ingest_and_features_on_the_bundled_ohlcv_universe(tmp_path):
    market = MarketDataResource(source="bundled", universe="bokeh_ohlcv")
    definitions = build_defs(
        {"market_data": market, "storage": StorageResource(root=str(tmp_path))}
    )
    result = definitions.resolve_job_def("refresh_features").execute_in_process(
        raise_on_error=False
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    failed = [(c.asset_key.to_user_string(), c.check_name) for c in checks if not c.passed]
    # the bundled VIX starts in 2014, after this universe ends: named in a warning
    assert checks and failed == [("raw_macro", "every_name_stored")], failed
    (warning,) = [c for c in checks if not c.passed]
    assert warning.severity == dg.AssetCheckSeverity.WARN
    assert list(warning.metadata["missing"].value) == ["VIXCLS"]
    prices = materialization(result, "raw_prices")
    assert prices["rows_added"] == 12154 and prices["rows_quarantined"] == 0
    assert (prices["first_date"], prices["last_date"]) == ("2000-03-01", "2013-03-01")
    assert set(prices["fields_available"]) >= {"open", "high", "low", "close", "volume"}
    assert materialization(result, "benchmark_prices")["rows_stored"] == 3270
    features = materialization(result, "features")
    computed = set(features["families_computed"])
    assert {"alpha158_kbar", "technical_range", "microstructure_gap", "garch"} <= computed
    # arch's VIX starts in 2014, after this data ends: no invented VIX, the family is skipped;
    # the bundled source has no fundamentals, and says so.
    skipped = features["families_skipped"]
    fundamentals = {f.name for f in FAMILIES if f.group == "fundamentals"}
    assert set(skipped) == {"alpha158_extremes", "macro_vix", *fundamentals}
    assert all(skipped[f].endswith("; source has no fundamentals") for f in fundamentals)


def test_features_join_the_stored_fundamentals(tmp_path):
    """Statements stored in raw/fundamentals reach the features; the synthetic source fetches
    none, so they are stored as the live source's ingest would store them."""
    research = ResearchSettings(
        feature_families=["fundamentals"],
        min_train_days=260,
        research_fraction=0.75,
        valid_days=10,
        stack_days=10,
        calibration_days=10,
        retrain_every=50,
    )
    definitions = build_defs(
        {
            "market_data": MarketDataResource(
                source="synthetic", synthetic_n_tickers=3, synthetic_n_days=500
            ),
            "storage": StorageResource(root=str(tmp_path)),
            "research": research,
        }
    )
    config = SyntheticConfig(n_tickers=3, n_days=500)
    statements = synthetic_statements(list(config.tickers), config.dates, seed=0)
    store = ParquetStore(str(tmp_path))
    for ticker, rows in statements.groupby("ticker"):
        store.write(conform(rows, FUNDAMENTALS), *store.raw_key("fundamentals", ticker))
    result = definitions.resolve_job_def("refresh_features").execute_in_process(
        raise_on_error=False
    )
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    features = materialization(result, "features")
    # synthetic prices carry no split ratios: no market cap, so no price ratios
    assert set(features["families_skipped"]) == {
        "fundamentals_earnings_yield",
        "fundamentals_book_to_price",
    }
    assert "split_ratio" in features["families_skipped"]["fundamentals_earnings_yield"]
    assert len(features["families_computed"]) == 8
    stored = store.read("features", "features")
    assert stored["roe"].notna().sum() > 100
