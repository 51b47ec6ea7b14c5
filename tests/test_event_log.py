"""The local instance's event log (orchestration/event_log.py): Dagster's SQLite files, one
connection pool per file."""

import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from jisr.settings import PROJECT_DIR
from orchestration.event_log import PooledSqliteEventLogStorage


@dg.asset
def numbers():
    return [1, 2, 3]


@dg.asset_check(asset=numbers)
def numbers_are_positive(numbers):
    return dg.AssetCheckResult(passed=all(n > 0 for n in numbers))


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """A Dagster instance configured by the project's orchestration/dagster.yaml."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(PROJECT_DIR / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        yield instance


def _run(instance):
    job = dg.define_asset_job("numbers_job", selection=[numbers])
    defs = dg.Definitions(assets=[numbers], asset_checks=[numbers_are_positive], jobs=[job])
    result = defs.resolve_job_def("numbers_job").execute_in_process(instance=instance)
    assert result.success
    return result.run_id


def test_the_local_instance_records_events_through_one_pool_per_file(instance, tmp_path):
    storage = instance.event_log_storage
    assert isinstance(storage, PooledSqliteEventLogStorage)
    assert storage._base_dir.rstrip("/") == str(tmp_path / "dagster" / "history" / "runs")
    run_id = _run(instance)
    # one engine for the run's file and one for the index, reused by every event of the run
    assert set(storage._engines) == {run_id, "index"}
    engine = storage._engines[run_id]
    _run(instance)
    assert storage._engines[run_id] is engine
    with storage.run_connection(run_id) as conn:
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 1  # NORMAL: no sync per commit
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"


def test_dagster_own_sqlite_storage_reads_what_it_wrote(instance):
    """Removing the storage from dagster.yaml loses nothing: the files are Dagster's."""
    run_id = _run(instance)
    written = [e.dagster_event_type for e in instance.all_logs(run_id) if e.is_dagster_event]
    plain = SqliteEventLogStorage(instance.event_log_storage._base_dir)
    read = [e.dagster_event_type for e in plain.get_logs_for_run(run_id) if e.is_dagster_event]
    assert read == written
    assert dg.DagsterEventType.ASSET_MATERIALIZATION in read
    assert dg.DagsterEventType.ASSET_CHECK_EVALUATION in read
    # the index file (what the UI's asset pages read) has the materialization and the check
    assert plain.get_latest_materialization_events([numbers.key])[numbers.key].run_id == run_id
    check_key = dg.AssetCheckKey(numbers.key, "numbers_are_positive")
    latest = plain.get_latest_asset_check_execution_by_key([check_key])[check_key]
    assert latest.run_id == run_id and latest.status.value == "SUCCEEDED"


def test_least_recently_used_files_are_closed(tmp_path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"), max_open_files=3)
    for shard in ("a", "b", "c", "d"):
        with storage.run_connection(shard):
            pass
    assert list(storage._engines) == ["b", "c", "d"]  # the index was opened first, then "a"
    with storage.run_connection("b"):
        pass
    with storage.run_connection("e"):
        pass
    assert list(storage._engines) == ["d", "b", "e"]
    storage.dispose()
    assert not storage._engines


def test_wipe_closes_the_files_before_deleting_them(instance):
    storage = instance.event_log_storage
    run_id = _run(instance)
    assert storage.has_table("asset_check_executions") and "asset_check_executions" in storage._known_tables
    instance.wipe()
    assert list(storage._engines) == ["index"]  # the run's file is closed (wipe empties the index)
    assert not list(Path(storage._base_dir).glob(f"{run_id}.db*"))
    # and the storage goes on writing to new files afterwards
    run_id = _run(instance)
    assert [e for e in instance.all_logs(run_id) if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION]
    with sqlite3.connect(f"{storage._base_dir}/{run_id}.db") as conn:
        assert conn.execute("select count(*) from event_logs").fetchone()[0] > 0


def test_the_ui_follows_a_running_run_event_by_event(tmp_path):
    """The webserver (same storage class under `make dev`) follows a run by watching the
    run's file: each event must reach it while the run goes on, also when a reader holds a
    snapshot of the log at the moment the event is written, not when the writer exits."""
    import time

    from dagster._core.events.log import EventLogEntry

    writer = PooledSqliteEventLogStorage(str(tmp_path))
    webserver = PooledSqliteEventLogStorage(str(tmp_path))
    seen: list[str] = []

    def event(message):
        return EventLogEntry(error_info=None, level="INFO", user_message=message, run_id="run", timestamp=time.time())

    def wait_for(message):
        deadline = time.time() + 10
        while message not in seen and time.time() < deadline:
            time.sleep(0.05)
        assert message in seen, f"the watcher saw {seen}, not {message!r}"

    try:
        writer.store_event(event("first"))
        webserver.watch("run", None, lambda entry, _cursor: seen.append(entry.user_message))
        time.sleep(0.3)  # the watcher is a file-system observer thread
        writer.store_event(event("second"))
        wait_for("second")
        reader = sqlite3.connect(tmp_path / "run.db")
        try:
            reader.execute("begin")
            reader.execute("select count(*) from event_logs").fetchone()  # a snapshot held open
            writer.store_event(event("last"))
            wait_for("last")
        finally:
            reader.close()
        assert writer._engines and webserver._engines  # both kept their connections
    finally:
        webserver.dispose()
        writer.dispose()
