"""Dagster's own storage in a real PostgreSQL server, configured by the repo's dagster.yaml."""

import shutil
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from finpipe.definitions import build_defs
from finpipe.defs.resources import MarketDataResource, StorageResource
from finpipe_tests.postgres_server import postgres_server

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.postgres


def test_materialization_runs_and_events_live_in_postgres(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with postgres_server() as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        defs = build_defs(
            {
                "market_data": MarketDataResource(
                    source="synthetic", synthetic_n_tickers=3, synthetic_n_days=40
                ),
                "storage": StorageResource(root=str(tmp_path / "data")),
            }
        )
        with dg.DagsterInstance.get() as instance:
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            result = defs.resolve_job_def("ingest").execute_in_process(instance=instance)
            assert result.success
            run_id = result.run_id

        with dg.DagsterInstance.get() as fresh:
            run = fresh.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
            event = fresh.get_latest_materialization_event(dg.AssetKey("raw_prices"))
            assert event is not None and event.run_id == run_id
            assert event.asset_materialization.metadata["rows_added"].value == 3 * 40

        with (
            psycopg2.connect(
                host=server.host, port=server.port, user=server.user, dbname=server.db_name
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert cur.fetchall() == [("SUCCESS",)]
            cur.execute(
                "SELECT asset_key FROM event_logs WHERE run_id = %s"
                " AND dagster_event_type = 'ASSET_MATERIALIZATION' ORDER BY asset_key",
                (run_id,),
            )
            keys = [row[0] for row in cur.fetchall()]
            assert '["raw_prices"]' in keys and '["universe"]' in keys
