"""Dagster in production shape: the instance of deploy/dagster.yaml keeps runs, event logs and
schedule state in PostgreSQL, and a refresh run is read back from there.

Needs a PostgreSQL server: ``make test-dagster-postgres`` starts a throwaway one
(scripts/postgres-ci.sh exports JISR_PG_ADMIN_DSN). Without it every test is skipped.
"""

from __future__ import annotations

import os
import secrets
import shutil

import pytest

from jisr.settings import PROJECT_DIR, Settings
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.postgres

DEPLOY_YAML = PROJECT_DIR / "deploy" / "dagster.yaml"
WAREHOUSE_TAG = "jisr/warehouse"


def admin_connection():
    dsn = os.environ.get("JISR_PG_ADMIN_DSN")
    if not dsn:
        pytest.skip("no PostgreSQL server: `make test-dagster-postgres` starts a throwaway one "
                    "(JISR_PG_ADMIN_DSN not set)")
    import psycopg2

    try:
        con = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL at JISR_PG_ADMIN_DSN is not reachable: {exc}".strip())
    con.autocommit = True
    return con


@pytest.fixture
def dagster_db():
    """A fresh database and role for Dagster's storage, dropped afterwards."""
    from psycopg2.extensions import parse_dsn

    admin = admin_connection()
    name = f"dagster_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    with admin.cursor() as cur:
        cur.execute(f"create role {name} login password %s", [password])
        cur.execute(f"create database {name} owner {name}")
    params = parse_dsn(os.environ["JISR_PG_ADMIN_DSN"])
    yield {"DAGSTER_PG_HOST": params.get("host", "127.0.0.1"), "DAGSTER_PG_PORT": params.get("port", "5432"),
           "DAGSTER_PG_USER": name, "DAGSTER_PG_PASSWORD": password, "DAGSTER_PG_DB": name}
    with admin.cursor() as cur:
        cur.execute(f"drop database if exists {name} with (force)")
        cur.execute(f"drop role if exists {name}")
    admin.close()


@pytest.fixture
def production_home(tmp_path, monkeypatch, dagster_db):
    """DAGSTER_HOME with the production dagster.yaml, its connection from the environment."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(DEPLOY_YAML, dagster_home / "dagster.yaml")
    for name, value in dagster_db.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_DIR", str(tmp_path / "compute-logs"))
    monkeypatch.setenv("JISR_HOME", str(tmp_path / "jisr"))
    monkeypatch.setenv("JISR_PSEUDONYM_KEY", TEST_KEY.decode())
    return dagster_home


def storage_query(dagster_db: dict, sql: str, params=()) -> list[tuple]:
    """Ask PostgreSQL itself, not Dagster, what was stored."""
    import psycopg2

    con = psycopg2.connect(host=dagster_db["DAGSTER_PG_HOST"], port=dagster_db["DAGSTER_PG_PORT"],
                           user=dagster_db["DAGSTER_PG_USER"], password=dagster_db["DAGSTER_PG_PASSWORD"],
                           dbname=dagster_db["DAGSTER_PG_DB"])
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        con.close()


def test_dagster_postgres_instance_uses_postgres_storage_and_the_warehouse_queue(production_home):
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from orchestration.definitions import defs

    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        # the limit applies to the tag the refresh job really carries, once per warehouse
        assert [(l["key"], l["value"], l["limit"]) for l in limits] == [
            (WAREHOUSE_TAG, {"applyLimitPerUniqueValue": True}, 1),
            ("dagster/code_location", {"applyLimitPerUniqueValue": True}, 1)]
        assert WAREHOUSE_TAG in defs.resolve_job_def("refresh_job").tags


def test_dagster_postgres_records_a_refresh_run_that_a_new_instance_reads_back(production_home, dagster_db):
    import dagster as dg

    from ingestion.generate import generate
    from jisr.refresh import run_refresh
    from jisr.settings import get_settings

    settings: Settings = get_settings()
    generate(settings.landing_dir, beneficiaries=150, months=2, seed=3)
    result = run_refresh(settings)
    assert result.success, result.failures

    # A new instance (as the webserver or the daemon would open it) sees the run in PostgreSQL.
    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.job_name == "refresh_job" and run.tags[WAREHOUSE_TAG] == "default"
        latest = instance.get_latest_materialization_event(dg.AssetKey(["raw", "beneficiaries"]))
        assert latest is not None and latest.run_id == result.run_id
        records = instance.get_records_for_run(result.run_id).records
        assert any(r.event_log_entry.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for r in records)

    stored = storage_query(dagster_db, "select status, pipeline_name from runs where run_id = %s", [result.run_id])
    assert stored == [("SUCCESS", "refresh_job")]
    materialized = storage_query(
        dagster_db, "select count(distinct asset_key) from event_logs where run_id = %s "
                    "and dagster_event_type = 'ASSET_MATERIALIZATION'", [result.run_id])[0][0]
    assert materialized >= 12  # at least every raw source, plus the warehouse models
    # nothing fell back to the local SQLite storage
    assert not list(production_home.rglob("*.db"))
