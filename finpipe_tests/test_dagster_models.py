"""Serving through Dagster on a synthetic panel: the time plan, models trained through the
newest known labels and registered in MLflow, the replay, the served predictions and their
checks, the portfolios they lead to; new trading days arriving (daily refresh, retrain,
rollback); the leak gate."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from finpipe.core.contracts import (
    ORDERS,
    PREDICTIONS,
    RISK_CONTRIBUTIONS,
    RISK_REPORT,
    STRESS,
    TARGET_WEIGHTS,
    VAR_BACKTEST,
    schema_violations,
)
from finpipe.core.storage import ParquetStore
from finpipe.definitions import build_defs
from finpipe.defs.assets.evaluation import fold_families
from finpipe.defs.demo import record_history
from finpipe.defs.resources import (
    EvaluationSettings,
    ForecastSettings,
    MarketDataResource,
    PortfolioSettings,
    RegistryResource,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
)
from finpipe.models.registry import list_models
from finpipe.models.versions import CHAMPION, load_version
from finpipe.portfolio.construction import METHODS

FAMILIES = ["ridge", "hist_gbm", "lstm"]
TINY = {
    "lstm": {"hidden_size": 8, "max_epochs": 2, "samples_per_epoch": 1024, "valid_samples": 512},
    "hist_gbm": {"max_iter": 10},
}
RESEARCH = ResearchSettings(
    feature_families=["alpha158_close", "momentum"],
    research_fraction=0.5,
    retrain_every=100,
    valid_days=60,
    stack_days=100,
    calibration_days=80,
    min_train_days=150,
)


def definitions(root, n_days: int, **overrides) -> dg.Definitions:
    resources = {
        "market_data": MarketDataResource(
            source="synthetic",
            synthetic_n_tickers=8,
            synthetic_n_days=n_days,
            synthetic_signal_strength=0.1,
        ),
        "storage": StorageResource(root=str(root)),
        "research": RESEARCH,
        "training": TrainingSettings(
            families=FAMILIES, params_json=json.dumps(TINY), tune_families=["ridge"], tune_trials=3
        ),
        "forecasting": ForecastSettings(),
        "evaluation": EvaluationSettings(n_boot=100, portfolio_horizon=1),
        "registry": RegistryResource(),
    }
    return build_defs({**resources, **overrides})


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(key)[-1].metadata.items()}


def run(defs: dg.Definitions, job: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
    failed = [e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert result.success, failed
    return result


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(scope="module")
def served(tmp_path_factory, instance):
    root = tmp_path_factory.mktemp("data")
    defs = definitions(root, 700)
    full = run(defs, "full", instance)
    history = record_history(full, defs, instance)
    assert history is not None and history.success
    return {"root": root, "defs": defs, "full": full}


def registry_of(served: dict):
    return RegistryResource().registry(StorageResource(root=str(served["root"])))


def test_plan_features_and_checks(served):
    full = served["full"]
    plan = metadata(full, "time_plan")
    assert plan["folds"] >= 3 and plan["research_end"].endswith(
        "(50% of the history, recorded now)"
    )
    decisions = metadata(full, "research_decisions")
    assert set(decisions["decided"]) == set(FAMILIES) and "research period" in decisions["window"]
    assert set(decisions["decided"]["ridge"]) == {"target"}
    log = pd.read_parquet(served["root"] / "research" / "decisions.parquet")
    assert log.groupby("family")["chosen"].sum().eq(1).all() and len(log) >= 3 * 3
    storage = StorageResource(root=str(served["root"]))
    reusable = storage.read_research_fits(storage.read_plan().research_window)
    assert set(reusable) == set(FAMILIES)  # the chosen fits, which the first test fold reuses
    features = metadata(full, "features")
    assert "alpha158_close" in features["families_computed"] and features["feature_count"] > 50
    assert "dagster/column_schema" in features
    checks = {c.check_name: c.passed for c in full.get_asset_check_evaluations()}
    expected = {"no_infinities", "plausible_skill", "newest_date", "model_age", "ensemble_complete"}
    assert expected <= set(checks) and all(checks.values()), checks


def test_every_served_family_is_a_registered_champion(served):
    full, registry = served["full"], registry_of(served)
    for family in list_models():
        meta = metadata(full, f"model_{family}")
        if family not in FAMILIES:
            assert meta["served"] is False and "not in training.families" in meta["reason"]
            continue
        assert meta["role"] == CHAMPION and meta["model_version"] == f"models:/finpipe-{family}/1"
        assert meta["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")
        version = registry.by_alias(family, CHAMPION)
        assert version.uri == meta["model_version"]
        assert load_version(registry, version).horizons == (1, 5, 20)
        run = registry.client.get_run(version.run_id)
        assert "rank_ic_h1" in run.data.metrics and version.tags["code_version"]
    lstm = metadata(full, "model_lstm")
    assert lstm["parameter_count"] > 0 and lstm["training_curve"].startswith("![training curve]")
    names = {m.name for m in registry.client.search_registered_models()}
    assert names == {f"finpipe-{f}" for f in FAMILIES} | {"finpipe-ensemble"}


def test_served_predictions_are_current_and_open_in_the_registry(served):
    root, registry = served["root"], registry_of(served)
    latest = pd.read_parquet(root / "predictions" / "latest.parquet")
    assert {c: str(t) for c, t in latest.dtypes.items()} == PREDICTIONS.required
    assert set(latest["model"]) == {"ensemble", *FAMILIES}
    assert latest.groupby(["model", "horizon"]).size().eq(8).all()
    prices = pd.concat(pd.read_parquet(p) for p in (root / "raw" / "prices").glob("*.parquet"))
    calendar = pd.DatetimeIndex(sorted(prices["date"].unique()))
    date = latest["date"].iloc[0]
    assert date == calendar[-1]
    # trained_through: within the longest horizon (20) plus the embargo (5) of the date.
    age = calendar.get_loc(date) - calendar.get_loc(latest["trained_through"].min())
    assert 0 < age <= 20 + 5 + 2
    for uri in latest["model_version"].unique():
        version = registry.version(uri)
        assert version.tags["as_of"] == str(date.date())
    history = pd.read_parquet(root / "predictions" / "history")
    assert len(history) == len(latest) and history["date"].nunique() == 1


def test_replay_fans_out_folds_and_the_report_states_the_schedule(served):
    root, full = served["root"], served["full"]
    folds = [
        e.step_key
        for e in full.all_events
        if e.event_type_value == "STEP_SUCCESS" and "run_replay_fold[" in (e.step_key or "")
    ]
    assert len(folds) == metadata(full, "time_plan")["folds"]
    replay = pd.read_parquet(root / "evaluation" / "replay.parquet")
    assert set(replay["model"]) == {"ensemble", *FAMILIES}
    html = (root / "reports" / "backtest" / "report.html").read_text()
    assert "Replayed procedure" in html and "retrained every 100 trading dates" in html
    assert "Interval coverage by year" in html and "momentum_12_1" in html
    assert metadata(full, "walk_forward_predictions")["folds_reused"] == []
    again = run(served["defs"], "evaluate", dg.DagsterInstance.ephemeral())
    reused = metadata(again, "walk_forward_predictions")["folds_reused"]
    assert len(reused) == len(folds)


def test_new_days_daily_refresh_retrain_and_rollback(tmp_path, instance):
    first = definitions(tmp_path, 620)
    run(first, "full", instance)
    store = ParquetStore(str(tmp_path))
    old_features = store.read("features", "features")
    registry = RegistryResource().registry(StorageResource(root=str(tmp_path)))
    before = {f: registry.by_alias(f, CHAMPION) for f in FAMILIES}

    # No comparison window is long enough to keep a challenger: every retrain is promoted
    # (the champion/challenger rule has its own tests).
    later = definitions(tmp_path, 640, forecasting=ForecastSettings(promotion_min_dates=10_000))
    refresh = run(later, "daily_refresh", instance)
    newest = metadata(refresh, "predictions")["date"]
    prices = store.read_all("raw", "prices")
    assert newest == str(prices["date"].max().date())
    new_features = store.read("features", "features")
    merged = old_features.merge(new_features, on=["date", "ticker"], suffixes=("", "_new"))
    assert len(merged) == len(old_features)
    columns = [c for c in old_features.columns if c not in ("date", "ticker")]
    for column in columns:
        np.testing.assert_array_equal(merged[column], merged[f"{column}_new"], err_msg=column)
    latest = store.read("predictions", "latest")
    assert set(latest["model_version"]) <= {v.uri for v in before.values()} | {
        registry.by_alias("ensemble", CHAMPION).uri
    }

    retrain = run(later, "retrain", instance)
    for family in FAMILIES:
        meta = metadata(retrain, f"model_{family}")
        new = registry.version(meta["model_version"])
        assert int(new.version) == int(before[family].version) + 1
        assert new.date("trained_through") > before[family].date("trained_through")
        assert load_version(registry, before[family]).horizons == (1, 5, 20)
    served_now = store.read("predictions", "latest")
    assert served_now["trained_through"].min() > latest["trained_through"].min()

    registry.set_alias("ridge", CHAMPION, before["ridge"].version)
    rolled = run(later, "predict", instance)
    versions = metadata(rolled, "predictions")["model_versions"]
    assert versions["ridge"] == before["ridge"].uri


def test_leak_gate_fails_the_replay_on_a_feature_that_reads_the_label(tmp_path, instance):
    defs = definitions(tmp_path, 620)
    run(defs, "refresh_features", instance)
    store = ParquetStore(str(tmp_path))
    features = store.read("features", "features")
    prices = store.read_all("raw", "prices")
    close = prices.pivot(index="date", columns="ticker", values="adj_close")
    # The 1-day label: with an execution lag of 1, the close-to-close return from t+1 to t+2.
    leak = np.log(close.shift(-2) / close.shift(-1)).stack().rename("leak").reset_index()
    store.write(features.merge(leak, on=["date", "ticker"], how="left"), "features", "features")
    panel = defs.resolve_job_def("refresh_features").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("model_panel")]
    )
    assert panel.success
    result = defs.resolve_job_def("evaluate").execute_in_process(
        instance=instance, raise_on_error=False
    )
    gate = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "plausible_skill"
    )
    assert not gate.passed
    assert "leak gate" in gate.description and "rank IC" in gate.description
    skipped = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    assert "backtest_report" in skipped or not result.asset_materializations_for_node(
        "backtest_report"
    )


def test_explicit_settings_win_over_tuned_ones_with_provenance(served, instance):
    """Finding: after `tune`, params_json's alpha lost to the tuned one. Explicit config
    wins, the metadata says where each parameter came from, and the replay folds train
    with the same parameters as the served model."""
    defs = served["defs"]
    tuned = run(defs, "tune", instance)
    best = metadata(tuned, "tuned_params_table")["best_params"]["ridge"]
    assert (
        "alpha" in best and "research period" in metadata(tuned, "tuned_params_table")["tuned_on"]
    )
    again = defs.resolve_job_def("train").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("model_ridge")]
    )
    assert metadata(again, "model_ridge")["params"]["alpha"] == best["alpha"]
    assert metadata(again, "model_ridge")["param_sources"]["alpha"] == "tuned"
    storage = StorageResource(root=str(served["root"]))
    decided = storage.read_decided_params("ridge")
    assert set(decided) == {"target"}  # research_decisions, under tuning
    assert fold_families(storage, TrainingSettings(families=FAMILIES))["ridge"] == {
        **decided,
        **best,
    }
    explicit = definitions(
        served["root"],
        700,
        training=TrainingSettings(families=FAMILIES, params_json='{"ridge": {"alpha": 123.0}}'),
    )
    pinned = explicit.resolve_job_def("train").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("model_ridge")]
    )
    assert metadata(pinned, "model_ridge")["params"]["alpha"] == 123.0
    sources = metadata(pinned, "model_ridge")["param_sources"]
    assert sources["alpha"] == "config" and sources["target"] == "research"
    assert set(sources.values()) <= {"config", "tuned", "research", "default"}


PORTFOLIO_TABLES = {
    "target_weights": TARGET_WEIGHTS,
    "risk_report": RISK_REPORT,
    "risk_contributions": RISK_CONTRIBUTIONS,
    "stress": STRESS,
    "orders": ORDERS,
    "var_backtest": VAR_BACKTEST,
}


def test_portfolios_from_the_served_forecasts(served):
    root, full = served["root"], served["full"]
    folder = root / "portfolio"
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in PORTFOLIO_TABLES}
    for name, contract in PORTFOLIO_TABLES.items():
        assert schema_violations(tables[name], contract) == [], name
    weights, latest = (
        tables["target_weights"],
        pd.read_parquet(root / "predictions" / "latest.parquet"),
    )
    assert set(weights["method"]) == set(METHODS)
    assert (weights["date"] == latest["date"].max()).all()
    np.testing.assert_allclose(weights.groupby("method")["weight"].sum(), 1.0, atol=1e-6)
    assert weights["weight"].between(-1e-9, 0.25 + 1e-9).all()
    ensemble = latest[(latest["model"] == "ensemble") & (latest["horizon"] == 20)]
    assert set(weights["model_version"]) == set(ensemble["model_version"])
    merged = weights.merge(ensemble, on="ticker")
    np.testing.assert_allclose(merged["expected_return"], merged["prediction"])

    report = tables["risk_report"]
    assert set(report["model"]) == {"historical", "gaussian", "garch"}
    assert report.groupby("method").size().eq(3 * 2 * 2 * 2).all()
    assert (report["value"] > 0).all()
    var = report[report["measure"] == "var"].set_index(["method", "model", "horizon_days", "level"])
    cvar = report[report["measure"] == "cvar"].set_index(var.index.names)
    assert (cvar["value"] >= var["value"].reindex(cvar.index) - 1e-12).all()
    contributions = tables["risk_contributions"].groupby("method")["contribution"].sum()
    np.testing.assert_allclose(contributions, 1.0)
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary) == set(METHODS)
    assert all(np.isfinite(s["beta"]) and s["n_names"] >= 4 for s in summary.values())
    # From cash: every order buys, and the book spends at most the capital.
    orders = tables["orders"]
    assert (orders["side"] == "BUY").all()
    assert (orders.groupby("method")["notional"].sum() <= 1_000_000.0).all()
    backtest = tables["var_backtest"]
    assert len(backtest) == len(METHODS) * 3 * 2 and (backtest["n"] > 100).all()

    checks = {c.check_name: c.passed for c in full.get_asset_check_evaluations()}
    assert checks["weights_within_constraints"] and checks["orders_reach_targets"]
    meta = metadata(full, "target_weights")
    assert meta["weights_plot"].startswith("![target weights](data:image/png;base64,")
    assert "dagster/column_schema" in meta and meta["weights"].startswith("| ticker")
    risk = metadata(full, "portfolio_risk")
    assert risk["risk_plot"].startswith("![VaR and CVaR](data:image/png;base64,")
    assert set(risk["beta"]) == set(METHODS)
    replay = metadata(full, "portfolio_replay")
    assert replay["rebalances"] >= 4 and "kupiec_lr" in replay["var_backtest"]
    html = (root / "reports" / "backtest" / "report.html").read_text()
    assert "Construction comparison" in html and "construction/hrp" in html


def test_targets_from_holdings_respect_the_turnover_cap(served, tmp_path):
    root = served["root"]
    latest = pd.read_parquet(root / "predictions" / "latest.parquet")
    tickers = sorted(latest["ticker"].unique())
    holdings = tmp_path / "holdings.parquet"
    pd.DataFrame(
        {"ticker": [tickers[0], tickers[1], "CASH"], "shares": [100.0, 50.0, 1e4]}
    ).to_parquet(holdings)
    settings = PortfolioSettings(
        methods=["top_k", "hrp"], holdings_path=str(holdings), max_turnover=0.5
    )
    defs = definitions(root, 700, portfolio=settings)
    result = defs.resolve_job_def("portfolio").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        asset_selection=[dg.AssetKey("target_weights"), dg.AssetKey("rebalance_orders")],
    )
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    weights = pd.read_parquet(root / "portfolio" / "target_weights.parquet")
    orders = pd.read_parquet(root / "portfolio" / "orders.parquet")
    prices = pd.concat(pd.read_parquet(p) for p in (root / "raw" / "prices").glob("*.parquet"))
    last = prices[prices["date"] == prices["date"].max()].set_index("ticker")["adj_close"]
    value = 100 * last[tickers[0]] + 50 * last[tickers[1]] + 1e4
    current = pd.Series({tickers[0]: 100 * last[tickers[0]], tickers[1]: 50 * last[tickers[1]]})
    for method, part in weights.groupby("method"):
        moved = part.set_index("ticker")["weight"].sub(current / value, fill_value=0.0)
        assert moved.abs().sum() <= 0.5 + 1e-6, method
    held = orders[orders["ticker"] == tickers[0]]
    assert (held["current_shares"] == 100).all()
