"""The prediction service as a real uvicorn process on loopback (`finpipe serve`), over data
the pipeline produced, with a real Dagster webserver for the run requests.

The data: the `full` job on a small synthetic panel (five tickers, ridge only), run in-process
as test_dagster_models.py does (about 45 s), plus three older days of prediction history
recorded from the replay with their realised returns filled, both through the pipeline's own
functions. The portfolio tables are small fixtures written here in the shapes the portfolio
stage writes. A second service over a copy of the root takes the hostile cases: files
changed, touched, corrupted and removed under it. The webserver (with a queued run
coordinator and no daemon, so requested runs stay queued) starts before the pipeline runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from finpipe.core.calendar import count_sessions
from finpipe.core.storage import ParquetStore
from finpipe.definitions import build_defs
from finpipe.defs.demo import record_history
from finpipe.defs.resources import (
    EvaluationSettings,
    ForecastSettings,
    MarketDataResource,
    RegistryResource,
    ResearchSettings,
    StorageResource,
    TrainingSettings,
)
from finpipe.forecasting.predictions import fill_realised, write_prediction_history
from finpipe.serving.auth import create_key
from finpipe_tests.deployment_processes import (
    DagsterApi,
    ManagedProcess,
    api_service,
    free_port,
    start_process,
    wait_until,
    webserver_command,
)

TICKERS = [f"S{i:04d}" for i in range(5)]
RESEARCH = ResearchSettings(
    feature_families=["momentum"],
    research_fraction=0.5,
    retrain_every=100,
    valid_days=60,
    stack_days=100,
    calibration_days=80,
    min_train_days=150,
)
WORKSPACE = """load_from:
  - python_module: {module_name: finpipe.definitions, location_name: finpipe}
"""
QUEUED_INSTANCE = """run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
telemetry: {enabled: false}
"""
READ_ENDPOINTS = [
    "/health",
    "/predictions/latest",
    "/predictions/signals",
    "/predictions/ranking",
    "/predictions/history/S0001",
    "/portfolio/weights",
    "/portfolio/risk",
    "/portfolio/summary",
    "/backtest/summary",
    "/models",
    "/models/ridge/versions",
]
LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
RATE, BURST = 50, 100


@dataclass
class Keys:
    reader: str
    operator: str
    burster: str


@dataclass
class Service:
    url: str
    root: Path
    keys: Keys
    process: ManagedProcess

    def get(self, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["X-API-Key"] = key
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def post(self, path: str, key: str | None = None) -> httpx.Response:
        headers = {} if key is None else {"X-API-Key": key}
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=30)


def pipeline_root(root: Path) -> None:
    """The `full` job on a tiny synthetic panel, the newest day's history, and three older
    days of history recorded from the replay with their realised returns."""
    resources = {
        "market_data": MarketDataResource(
            source="synthetic",
            synthetic_n_tickers=len(TICKERS),
            synthetic_n_days=620,
            synthetic_signal_strength=0.1,
        ),
        "storage": StorageResource(root=str(root)),
        "research": RESEARCH,
        "training": TrainingSettings(families=["ridge"], tune_families=["ridge"]),
        "forecasting": ForecastSettings(),
        "evaluation": EvaluationSettings(n_boot=100, portfolio_horizon=1),
        "registry": RegistryResource(),
    }
    defs = build_defs(resources)
    with dg.instance_for_test() as instance:
        full = defs.resolve_job_def("full").execute_in_process(instance=instance)
        assert record_history(full, defs, instance).success
    store = ParquetStore(str(root))
    replay = store.read("evaluation", "replay")
    days = np.sort(replay["date"].unique())[[-90, -60, -30]]
    rows = replay[replay["date"].isin(days)].drop(columns=["fold", "horizon_vol", "scale"])
    write_prediction_history(store, rows)
    assert fill_realised(store, store.read("features", "labels")) > 0


def write_portfolio(root: Path, day: pd.Timestamp) -> None:
    """Portfolio tables in the shapes the portfolio stage writes (two dates, two methods)."""
    store = ParquetStore(str(root))
    weights = pd.DataFrame(
        [
            {
                "date": date,
                "method": method,
                "ticker": ticker,
                "weight": (1 if i % 2 else -1) * 0.2,
                "expected_return": 0.001 * i,
                "model_version": "models:/finpipe-ensemble/1",
            }
            for date in (day - pd.Timedelta(days=7), day)
            for method in ("mean_variance", "risk_parity")
            for i, ticker in enumerate(TICKERS)
        ]
    )
    store.write(weights, "portfolio", "target_weights")
    risk = pd.DataFrame(
        [
            {
                "method": method,
                "measure": measure,
                "model": model,
                "horizon_days": horizon,
                "level": level,
                "value": 0.01 * horizon * level * (2 if measure == "cvar" else 1),
            }
            for method in ("mean_variance", "risk_parity")
            for measure in ("var", "cvar")
            for model in ("historical", "gaussian", "garch")
            for horizon in (1, 10)
            for level in (0.95, 0.99)
        ]
    )
    store.write(risk, "portfolio", "risk_report")
    summary = {
        method: {"beta": 0.1, "gross": 1.0, "net": 0.0, "n_names": 5, "as_of": str(day.date())}
        for method in ("mean_variance", "risk_parity")
    }
    store.write_json(summary, "portfolio", "summary")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="module")
def webserver(workdir: Path) -> Iterator[str]:
    """A real dagster-webserver over finpipe's definitions; runs stay queued (no daemon).
    Started before the pipeline runs; `ready` waits for its code location."""
    home = workdir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(QUEUED_INSTANCE)
    (home / "workspace.yaml").write_text(WORKSPACE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "FINPIPE_"))}
    env |= {"DAGSTER_HOME": str(home), "FINPIPE_DATA_ROOT": str(workdir / "data")}
    port = free_port()
    argv = webserver_command("127.0.0.1", port, str(home / "workspace.yaml"))
    process = start_process(home, env, "webserver", argv)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def ready(webserver: str) -> DagsterApi:
    api = DagsterApi(f"{webserver}/graphql")

    def loaded() -> bool:
        try:
            entries = api.query(LOCATIONS)
        except (OSError, RuntimeError):  # not listening yet (requests' errors are OSErrors)
            return False
        statuses = entries["workspaceOrError"]["locationEntries"]
        return [(e["name"], e["loadStatus"]) for e in statuses] == [("finpipe", "LOADED")]

    wait_until("the Dagster webserver", loaded, timeout=180, interval=0.5)
    return api


@pytest.fixture(scope="module")
def keys(workdir: Path) -> tuple[Keys, dict[str, str]]:
    """A read key and a burst-testing read key in a key file, an admin key in the
    environment; (the keys, the environment naming them)."""
    made = {name: create_key(name, scope) for name, scope in
            [("reader", "read"), ("operator", "admin"), ("burster", "read")]}  # fmt: skip
    key_file = workdir / "keys.txt"
    key_file.write_text(
        f"# finpipe API keys\n{made['reader'][1]}\n{made['burster'][1]}  # load tests\n"
    )
    env = {"FINPIPE_API_KEYS_FILE": str(key_file), "FINPIPE_API_KEYS": made["operator"][1]}
    return Keys(*(made[n][0] for n in ("reader", "operator", "burster"))), env


def service_env(root: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINPIPE_", "MLFLOW_"))}
    return env | {
        "FINPIPE_DATA_ROOT": str(root),
        "FINPIPE_API_RATE_PER_S": str(RATE),
        "FINPIPE_API_BURST": str(BURST),
        **extra,
    }


@pytest.fixture(scope="module")
def root(workdir: Path, webserver: str) -> Path:
    data = workdir / "data"
    pipeline_root(data)
    latest = ParquetStore(str(data)).read("predictions", "latest")
    write_portfolio(data, latest["date"].max())
    return data


@pytest.fixture(scope="module")
def service(
    workdir: Path, root: Path, webserver: str, keys: tuple[Keys, dict[str, str]]
) -> Iterator[Service]:
    """The service over the pipeline's root, healthy whatever the data's age."""
    env = service_env(
        root,
        {**keys[1], "FINPIPE_API_MAX_AGE_DAYS": "100000", "FINPIPE_DAGSTER_URL": webserver},
    )
    with api_service(workdir, env, "api") as (url, process):
        yield Service(url, root, keys[0], process)


@pytest.fixture(scope="module")
def scratch(workdir: Path, root: Path, keys: tuple[Keys, dict[str, str]]) -> Iterator[Service]:
    """A second service over a copy of the root without the model registry and the portfolio
    tables, with the default maximum data age, checking files for changes every 0.1 s."""
    copy = workdir / "scratch"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("mlflow", "portfolio"))
    env = service_env(copy, {**keys[1], "FINPIPE_API_RELOAD_CHECK_S": "0.1"})
    with api_service(workdir, env, "scratch") as (url, process):
        yield Service(url, copy, keys[0], process)


def table(service: Service, *parts: str) -> pd.DataFrame:
    return pd.read_parquet(service.root.joinpath(*parts[:-1], parts[-1] + ".parquet"))


# -- keys, scopes, documentation -------------------------------------------------------------


def test_the_openapi_schema_documents_every_endpoint(service: Service) -> None:
    schema = service.get("/openapi.json").json()
    paths = set(schema["paths"])
    expected = {p for p in READ_ENDPOINTS if "S0001" not in p and "ridge" not in p}
    expected |= {"/predictions/history/{ticker}", "/models/{component}/versions"}
    assert expected | {"/runs/{job}", "/runs/{run_id}"} <= paths
    latest = schema["paths"]["/predictions/latest"]["get"]
    assert {"ticker", "horizon", "model", "limit", "offset"} <= {
        p["name"] for p in latest["parameters"]
    }
    assert "Page_Prediction_" in schema["components"]["schemas"]
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]
    docs = service.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.parametrize("path", READ_ENDPOINTS)
def test_read_endpoints_need_a_known_key(service: Service, path: str) -> None:
    missing = service.get(path)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
    assert missing.headers["WWW-Authenticate"] == "ApiKey"
    wrong = service.get(path, key=service.keys.reader + "x")
    assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown API key"
    for key in (service.keys.reader, service.keys.operator):  # admin keys may read too
        answer = service.get(path, key=key)
        assert answer.status_code == 200, answer.text


def test_run_requests_need_an_admin_key(service: Service) -> None:
    assert service.post("/runs/retrain").status_code == 401
    refused = service.post("/runs/retrain", key=service.keys.reader)
    assert refused.status_code == 403
    assert "scope 'read'" in refused.json()["detail"] and "'admin'" in refused.json()["detail"]
    status = service.get("/runs/00000000-0000-0000-0000-000000000000", key=service.keys.reader)
    assert status.status_code == 403


def test_a_run_request_reaches_the_dagster_webserver(service: Service, webserver: str) -> None:
    api = ready(webserver)
    answer = service.post("/runs/daily_refresh", key=service.keys.operator)
    assert answer.status_code == 202, answer.text
    run = answer.json()
    assert run["job"] == "daily_refresh" and run["status"] == "QUEUED"
    seen = api.run(run["run_id"])  # straight from the webserver's GraphQL API
    assert seen["jobName"] == "daily_refresh" and seen["status"] == "QUEUED"
    assert seen["tags"]["finpipe/requested_by"] == "operator"
    status = service.get(f"/runs/{run['run_id']}", key=service.keys.operator).json()
    assert status == {
        "run_id": run["run_id"],
        "job": "daily_refresh",
        "status": "QUEUED",
        "start_time": None,
        "end_time": None,
        "requested_by": "operator",
    }
    unknown = service.get("/runs/00000000-0000-0000-0000-000000000000", key=service.keys.operator)
    assert unknown.status_code == 404 and "no run" in unknown.json()["detail"]
    for bad in ("/runs/train", "/runs/..%2Fetc"):
        wrong = service.post(bad, key=service.keys.operator)
        assert wrong.status_code in (404, 405, 422), wrong.text
    malformed = service.get("/runs/not-a-run-id", key=service.keys.operator)
    assert malformed.status_code == 422 and "path.run_id" in malformed.json()["detail"]


# -- the read endpoints ----------------------------------------------------------------------


def test_latest_predictions_filter_and_paginate_the_table(service: Service) -> None:
    latest = table(service, "predictions", "latest")
    key = service.keys.reader
    whole = service.get("/predictions/latest", key=key, params={"limit": 1000}).json()
    assert whole["total"] == len(latest) == len(whole["items"])
    assert {(i["ticker"], i["horizon"], i["model"]) for i in whole["items"]} == set(
        zip(latest["ticker"], latest["horizon"], latest["model"], strict=True)
    )
    one = service.get(
        "/predictions/latest", key=key, params={"ticker": "S0002", "horizon": 5, "model": "ridge"}
    ).json()
    (item,) = one["items"]
    row = latest[
        (latest["ticker"] == "S0002") & (latest["horizon"] == 5) & (latest["model"] == "ridge")
    ].iloc[0]
    assert item["prediction"] == pytest.approx(row["prediction"])
    assert item["lower"] == pytest.approx(row["lower"]) and item["upper"] == pytest.approx(
        row["upper"]
    )
    assert item["model_version"] == row["model_version"]
    assert item["date"] == str(row["date"].date())
    assert item["trained_through"] == str(row["trained_through"].date())
    pages = [
        service.get("/predictions/latest", key=key, params={"limit": 7, "offset": o}).json()
        for o in range(0, len(latest), 7)
    ]
    assert [i for p in pages for i in p["items"]] == whole["items"]
    assert pages[0]["limit"] == 7 and pages[0]["total"] == len(latest)


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"ticker": "ZZZZ"}, 404, "ticker 'ZZZZ' is not in the latest predictions"),
        ({"model": "gru"}, 404, "model 'gru' is not in the latest predictions"),
        ({"horizon": 7}, 404, "horizon 7 is not in the latest predictions"),
        ({"ticker": "../../etc/passwd"}, 422, "invalid ticker '../../etc/passwd'"),
        ({"ticker": "aapl"}, 422, "invalid ticker 'aapl'"),
        ({"model": "Ridge"}, 422, "invalid model 'Ridge'"),
        ({"model": "../ridge"}, 422, "invalid model"),
        ({"horizon": "five"}, 422, "query.horizon: Input should be a valid integer"),
        ({"horizon": 0}, 422, "query.horizon"),
        ({"limit": 0}, 422, "query.limit"),
        ({"limit": 100_000}, 422, "query.limit"),
        ({"offset": -1}, 422, "query.offset"),
    ],
)
def test_bad_parameters_get_a_clear_error(
    service: Service, params: dict, status: int, words: str
) -> None:
    answer = service.get("/predictions/latest", key=service.keys.reader, params=params)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]
    assert "Traceback" not in answer.text


def test_signals_and_ranking_are_the_stored_tables(service: Service) -> None:
    key = service.keys.reader
    signals = table(service, "predictions", "signals")
    served = service.get("/predictions/signals", key=key, params={"limit": 1000}).json()
    assert served["total"] == len(signals)
    assert {(i["ticker"], i["horizon"], i["signal"]) for i in served["items"]} == set(
        zip(signals["ticker"], signals["horizon"], signals["signal"], strict=True)
    )
    some = signals["signal"].iloc[0]
    only = service.get("/predictions/signals", key=key, params={"signal": some}).json()
    assert only["total"] == int((signals["signal"] == some).sum())
    assert (
        service.get("/predictions/signals", key=key, params={"signal": "MAYBE"}).status_code == 422
    )
    ranking = table(service, "predictions", "ranking")
    ranked = service.get("/predictions/ranking", key=key).json()["items"]
    assert [i["ticker"] for i in ranked] == ranking.sort_values("rank")["ticker"].tolist()
    assert [i["rank"] for i in ranked] == list(range(1, len(ranking) + 1))


def test_history_has_the_served_days_with_realised_returns(service: Service) -> None:
    key = service.keys.reader
    history = pd.read_parquet(service.root / "predictions" / "history")
    mine = history[history["ticker"] == "S0001"]
    served = service.get("/predictions/history/S0001", key=key, params={"limit": 1000}).json()
    assert served["total"] == len(mine)
    days = [i["date"] for i in served["items"]]
    assert days == sorted(days, reverse=True) and len(set(days)) == 4
    newest, oldest = days[0], days[-1]
    assert all(i["realised_return"] is None for i in served["items"] if i["date"] == newest)
    older = [i for i in served["items"] if i["date"] == oldest]
    assert older and all(i["realised_return"] is not None for i in older)
    expected = mine[(mine["date"] == pd.Timestamp(oldest)) & (mine["horizon"] == 1)]
    got = {i["model"]: i["realised_return"] for i in older if i["horizon"] == 1}
    assert got == pytest.approx(expected.set_index("model")["realised_return"].to_dict())
    window = service.get(
        "/predictions/history/S0001",
        key=key,
        params={"start": oldest, "end": oldest, "horizon": 20, "model": "ensemble"},
    ).json()
    assert {(i["date"], i["horizon"], i["model"]) for i in window["items"]} == {
        (oldest, 20, "ensemble")
    }
    unknown = service.get("/predictions/history/ZZZZ", key=key)
    assert unknown.status_code == 404 and "no prediction history" in unknown.json()["detail"]
    traversal = service.get("/predictions/history/..%2F..%2Fetc%2Fpasswd", key=key)
    assert traversal.status_code == 422
    assert "invalid ticker '../../etc/passwd'" in traversal.json()["detail"]
    bad_date = service.get("/predictions/history/S0001", key=key, params={"start": "yesterday"})
    assert bad_date.status_code == 422 and "query.start" in bad_date.json()["detail"]


def test_portfolio_endpoints_read_the_portfolio_tables(service: Service) -> None:
    key = service.keys.reader
    weights = table(service, "portfolio", "target_weights")
    newest = weights["date"].max()
    served = service.get("/portfolio/weights", key=key).json()
    assert served["total"] == int((weights["date"] == newest).sum())
    assert {i["date"] for i in served["items"]} == {str(newest.date())}
    older = str(weights["date"].min().date())
    one = service.get(
        "/portfolio/weights",
        key=key,
        params={"date": older, "method": "risk_parity", "ticker": "S0003"},
    ).json()
    (item,) = one["items"]
    assert item["weight"] == pytest.approx(0.2) and item["date"] == older
    missing_day = service.get("/portfolio/weights", key=key, params={"date": "1999-01-04"})
    assert missing_day.status_code == 404
    unknown = service.get("/portfolio/weights", key=key, params={"method": "kelly"})
    assert unknown.status_code == 404 and "method 'kelly'" in unknown.json()["detail"]
    assert (
        service.get("/portfolio/weights", key=key, params={"method": "Kelly!"}).status_code == 422
    )

    unknown = service.get("/portfolio/risk", key=key, params={"method": "kelly"})
    assert unknown.status_code == 404 and "not in the risk report" in unknown.json()["detail"]
    risk = service.get("/portfolio/risk", key=key, params={"method": "mean_variance"}).json()
    assert len(risk) == 24 and {r["measure"] for r in risk} == {"var", "cvar"}
    assert {r["model"] for r in risk} == {"historical", "gaussian", "garch"}
    summary = service.get("/portfolio/summary", key=key).json()
    assert set(summary) == {"mean_variance", "risk_parity"}
    assert summary["risk_parity"]["as_of"] == str(newest.date())


def test_backtest_summary_is_the_report_metrics(service: Service) -> None:
    metrics = json.loads((service.root / "reports" / "backtest" / "metrics.json").read_text())
    served = service.get("/backtest/summary", key=service.keys.reader).json()
    assert served["test_period"] == metrics["test_period"]
    assert served["procedure"] == metrics["procedure"]
    for part in ("performance", "forecast", "coverage", "coverage_by_year"):
        assert len(served[part]) == len(metrics[part]) > 0, part
    assert {r["strategy"] for r in served["performance"]} == {
        r["strategy"] for r in metrics["performance"]
    }


def test_model_versions_come_from_the_registry(service: Service) -> None:
    key = service.keys.reader
    latest = table(service, "predictions", "latest")
    components = {c["component"]: c for c in service.get("/models", key=key).json()}
    assert set(components) == {"ensemble", "ridge"}
    served_versions = set(latest["model_version"])
    for component in components.values():
        champion = component["champion"]
        assert champion["uri"] in served_versions and champion["aliases"] == ["champion"]
        assert component["challenger"] is None and component["versions"] == 1
        assert champion["trained_through"] == champion["tags"]["trained_through"]
        assert champion["trained_through"] == str(latest["trained_through"].max().date())
    ridge = service.get("/models/ridge/versions", key=key).json()
    (version,) = ridge["items"]
    assert version["uri"] == "models:/finpipe-ridge/1"
    assert {"rank_ic_h1", "valid_loss"} <= set(version["metrics"])
    assert version["tags"]["as_of"] == str(latest["date"].max().date())
    missing = service.get("/models/gru/versions", key=key)
    assert missing.status_code == 404 and "finpipe-gru" in missing.json()["detail"]
    assert service.get("/models/..%2Fetc/versions", key=key).status_code in (404, 422)
    assert service.get("/models/GRU/versions", key=key).status_code == 422


def test_health_reports_the_newest_date_its_age_and_the_champions(service: Service) -> None:
    newest = table(service, "predictions", "latest")["date"].max()
    health = service.get("/health", key=service.keys.reader)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy" and body["reasons"] == []
    assert body["newest_prediction_date"] == str(newest.date())
    today = pd.Timestamp.now(tz="America/New_York").date()
    assert body["age_trading_days"] == int(count_sessions(newest, today)[0]) > 1000
    assert body["champions"] == {
        "ensemble": "models:/finpipe-ensemble/1",
        "ridge": "models:/finpipe-ridge/1",
    }


# -- caching, limits ---------------------------------------------------------------------------


def test_repeated_requests_get_an_etag_and_304(service: Service) -> None:
    key = service.keys.reader
    for path, params in [
        ("/predictions/latest", {"ticker": "S0001"}),
        ("/predictions/history/S0001", {}),
        ("/models", {}),
        ("/backtest/summary", {}),
    ]:
        first = service.get(path, key=key, params=params)
        again = service.get(path, key=key, params=params)  # from the response cache
        assert first.status_code == again.status_code == 200
        etag = first.headers["ETag"]
        assert again.headers["ETag"] == etag and again.content == first.content
        revalidated = service.get(path, key=key, params=params, headers={"If-None-Match": etag})
        assert revalidated.status_code == 304 and revalidated.content == b""
        assert revalidated.headers["ETag"] == etag
        stale = service.get(path, key=key, params=params, headers={"If-None-Match": '"other"'})
        assert stale.status_code == 200
    other = service.get("/predictions/latest", key=key, params={"ticker": "S0002"})
    assert (
        other.headers["ETag"]
        != service.get("/predictions/latest", key=key, params={"ticker": "S0001"}).headers["ETag"]
    )
    # A 304 still needs a key.
    assert service.get("/predictions/latest", headers={"If-None-Match": etag}).status_code == 401


def test_a_burst_gets_429_with_retry_after_and_other_keys_are_served(service: Service) -> None:
    """The bucket holds BURST tokens and refills at RATE per second: requests faster than that
    are refused once the burst is spent."""
    answers = []
    with httpx.Client(base_url=service.url, headers={"X-API-Key": service.keys.burster}) as c:
        while len(answers) < 20 * BURST and (not answers or answers[-1].status_code == 200):
            answers.append(c.get("/predictions/ranking"))
    codes = [a.status_code for a in answers]
    assert codes[-1] == 429 and set(codes[:-1]) == {200} and len(codes) > BURST
    refused = answers[-1]
    assert int(refused.headers["Retry-After"]) >= 1
    assert "rate limit" in refused.json()["detail"] and "'burster'" in refused.json()["detail"]
    assert service.get("/predictions/ranking", key=service.keys.reader).status_code == 200
    time.sleep(int(refused.headers["Retry-After"]))
    assert service.get("/predictions/ranking", key=service.keys.burster).status_code == 200


def test_an_oversized_query_string_or_path_gets_414(service: Service) -> None:
    answer = service.get(
        "/predictions/latest", key=service.keys.reader, params={"ticker": "A" * 5000}
    )
    assert answer.status_code == 414 and "at most 2048" in answer.json()["detail"]
    long_path = service.get("/predictions/history/" + "A" * 3000, key=service.keys.reader)
    assert long_path.status_code == 414 and long_path.json()["detail"].startswith("path of")
    long_ticker = service.get("/predictions/history/" + "A" * 2000, key=service.keys.reader)
    assert long_ticker.status_code == 422 and len(long_ticker.text) < 1500
    assert service.get("/predictions/latest", key=service.keys.reader).status_code == 200


# -- hostile data under a running service ------------------------------------------------------


def test_stale_data_makes_health_unhealthy(scratch: Service) -> None:
    health = scratch.get("/health", key=scratch.keys.reader)
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "unhealthy" and body["max_age_trading_days"] == 1
    assert any("trading days old" in r for r in body["reasons"]), body["reasons"]
    assert any("no model registry" in r for r in body["reasons"]), body["reasons"]


def test_a_replaced_table_is_reloaded_with_a_new_etag(scratch: Service) -> None:
    key = scratch.keys.reader
    path = scratch.root / "predictions" / "latest.parquet"
    first = scratch.get("/predictions/latest", key=key, params={"limit": 1})
    etag = first.headers["ETag"]
    os.utime(path)  # touched, same content: same data, same ETag
    time.sleep(0.3)
    touched = scratch.get("/predictions/latest", key=key, params={"limit": 1})
    assert touched.headers["ETag"] == etag and touched.content == first.content
    counters = scratch.get("/health", key=key).json()["cache"]
    assert counters["table_unchanged_reads"] >= 1

    frame = pd.read_parquet(path)
    frame["prediction"] += 0.5
    frame["upper"] += 0.5
    frame["lower"] += 0.5
    store = ParquetStore(str(scratch.root))
    store.write(frame, "predictions", "latest")

    def changed() -> httpx.Response | None:
        answer = scratch.get("/predictions/latest", key=key, params={"limit": 1})
        return answer if answer.headers["ETag"] != etag else None

    new = wait_until("the new table", changed, timeout=10, interval=0.05)
    old_value = first.json()["items"][0]["prediction"]
    assert new.json()["items"][0]["prediction"] == pytest.approx(old_value + 0.5)
    stale = scratch.get("/predictions/latest", key=key, params={"limit": 1},
                        headers={"If-None-Match": etag})  # fmt: skip
    assert stale.status_code == 200


def test_corrupt_missing_and_malformed_files_get_503_and_the_rest_still_serves(
    scratch: Service,
) -> None:
    key = scratch.keys.reader
    signals = scratch.root / "predictions" / "signals.parquet"
    assert scratch.get("/predictions/signals", key=key).status_code == 200
    signals.write_bytes(b"PAR1 this is not a parquet file")
    time.sleep(0.3)
    broken = scratch.get("/predictions/signals", key=key)
    assert broken.status_code == 503
    detail = broken.json()["detail"]
    assert detail.startswith("predictions/signals.parquet is unreadable")
    assert "re-materialize the `predictions` asset" in detail and "Traceback" not in broken.text

    (scratch.root / "predictions" / "ranking.parquet").unlink()
    time.sleep(0.3)
    gone = scratch.get("/predictions/ranking", key=key)
    assert gone.status_code == 503
    assert gone.json()["detail"] == (
        "predictions/ranking.parquet is missing: materialize the `predictions` asset "
        "(group `predictions`)"
    )
    for path, asset in [
        ("/portfolio/weights", "`target_weights` asset (group `portfolio`)"),
        ("/portfolio/risk", "`risk_report` asset (group `portfolio`)"),
        ("/portfolio/summary", "the `portfolio` asset group"),
    ]:
        answer = scratch.get(path, key=key)
        assert answer.status_code == 503 and asset in answer.json()["detail"], answer.text
    models = scratch.get("/models", key=key)
    assert models.status_code == 503
    assert "materialize the `models` asset group" in models.json()["detail"]

    latest = pd.read_parquet(scratch.root / "predictions" / "latest.parquet")
    ParquetStore(str(scratch.root)).write(
        latest.drop(columns="confidence"), "predictions", "latest"
    )
    time.sleep(0.3)
    malformed = scratch.get("/predictions/latest", key=key)
    assert malformed.status_code == 503
    assert "latest.parquet is unreadable" in malformed.json()["detail"]
    assert "confidence" in malformed.json()["detail"]

    assert scratch.process.alive()
    assert scratch.get("/predictions/history/S0001", key=key).status_code == 200
    assert scratch.get("/backtest/summary", key=key).status_code == 200


def test_the_service_refuses_to_start_without_keys(tmp_path: Path) -> None:
    env = service_env(tmp_path, {})
    result = subprocess.run(
        [sys.executable, "-m", "finpipe.serving.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "no API keys" in result.stderr and "finpipe keys create" in result.stderr
