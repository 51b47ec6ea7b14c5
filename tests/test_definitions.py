"""The Dagster code location: what a data engineer sees in the UI."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import pytest

from jisr.settings import PROJECT_DIR
from tests.conftest import PROGRAMME, write_delivery


@pytest.fixture(scope="module")
def defs():
    from orchestration.definitions import defs

    return defs


def test_definitions_assemble_assets_jobs_schedules_and_sensors(defs, contracts):
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {f"raw/{s}" for s in contracts} <= keys
    assert {"detail/dim_beneficiaries", "detail/mart_evaluation_panel", "marts/mart_programme_costs"} <= keys
    assert defs.resolve_job_def("refresh_job") is not None
    assert defs.resolve_schedule_def("refresh_schedule").cron_schedule == "0 2 * * *"
    assert defs.resolve_sensor_def("landing_sensor") is not None
    checks = defs.resolve_asset_graph().asset_check_keys
    assert any(c.asset_key.path[0] == "marts" for c in checks), "dbt tests should appear as asset checks"


def test_loading_the_definitions_does_not_import_dbt():
    """dbt runs as its CLI; importing dbt-core's modules would cost every run, the UI's code
    server and every `jisr` command about a second (see orchestration/__init__.py)."""
    code = ("import sys; from orchestration.definitions import defs; defs.resolve_asset_graph(); "
            "print(sorted(m for m, module in sys.modules.items() "
            "if module is not None and (m == 'dbt' or m.startswith(('dbt.', 'dbt_common')))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


DBT_RESULTS_SNIPPET = """
import json, sys
if sys.argv[1] == "with-dbt-core":
    import dagster_dbt  # imported before orchestration: dbt-core's modules are loaded as usual
from orchestration.assets.warehouse import MANIFEST, TRANSLATOR
from dagster_dbt.compat import DBT_PYTHON_VERSION
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

manifest = json.loads(open(MANIFEST).read())
nodes = manifest["nodes"]
def first(kind, **config):
    return next(u for u, n in sorted(nodes.items()) if n["resource_type"] == kind and n.get("attached_node", True)
                and all(str(n["config"].get(k)).upper() == v for k, v in config.items()))
cases = [("LogModelResult", first("model", materialized="TABLE"), "success"),
         ("LogModelResult", first("model", materialized="INCREMENTAL"), "error"),
         ("LogSeedResult", first("seed"), "success"),
         *[("LogTestResult", first("test", severity=severity), status)
           for severity in ("ERROR", "WARN") for status in ("pass", "fail", "warn", "error", "skipped")]]
out = []
for name, uid, status in cases:
    data = {"node_info": {"unique_id": uid, "node_status": status, "node_started_at": "2026-01-01T00:00:00",
                          "node_finished_at": "2026-01-01T00:00:01"}, "status": status,
            "num_failures": 0 if status == "pass" else 3}
    event = DbtCoreCliEventMessage(raw_event={"info": {"name": name, "msg": "", "invocation_id": "i"}, "data": data},
                                   event_history_metadata={})
    for r in event.to_default_asset_events(manifest=manifest, dagster_dbt_translator=TRANSLATOR):
        out.append([uid, status, type(r).__name__, str(getattr(r, "asset_key", "")), getattr(r, "check_name", None),
                    getattr(r, "passed", None), str(getattr(r, "severity", "")),
                    sorted((k, str(getattr(v, "value", v))) for k, v in r.metadata.items())])
print(json.dumps({"dbt_core_imported": DBT_PYTHON_VERSION is not None, "events": out}))
"""


def test_dbt_results_become_the_same_dagster_events_without_dbt_core_imported():
    """dagster-dbt's path without dbt-core (orchestration/__init__.py) turns dbt's results
    into the very events its usual path gives: materialisations, and check results that
    fail, with their severity, whenever a test did not pass."""
    def events(mode):
        done = subprocess.run([sys.executable, "-c", DBT_RESULTS_SNIPPET, mode], cwd=PROJECT_DIR,
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    usual, ours = events("with-dbt-core"), events("as-the-refresh-loads-it")
    assert usual["dbt_core_imported"] and not ours["dbt_core_imported"]
    assert ours["events"] == usual["events"]
    checks = [(e[1], e[5]) for e in ours["events"] if e[2] == "AssetCheckEvaluation"]
    assert len(checks) == 8 and all(passed == (status == "pass") for status, passed in checks)
    assert any(e[2] == "AssetMaterialization" for e in ours["events"])


def test_every_singular_dbt_test_is_an_asset_check(defs):
    """A singular test reading several models names the one it checks (meta.dagster.ref):
    otherwise dagster-dbt logs it as an observation, outside the publish gate."""
    from jisr.settings import PROJECT_DIR

    singular = {p.stem for p in (PROJECT_DIR / "dbt_project" / "tests").glob("*.sql")}
    names = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert singular and singular <= names, sorted(singular - names)


def test_dbt_sources_and_raw_assets_are_the_same_nodes(defs):
    graph = defs.resolve_asset_graph()
    stg = graph.get(dg.AssetKey(["staging", "stg_msisf__programmes"]))
    assert dg.AssetKey(["raw", "programmes"]) in stg.parent_keys
    assert graph.get(dg.AssetKey(["raw", "programmes"])).is_materializable


def test_landing_sensor_requests_a_run_for_new_files_only(defs, settings, contracts):
    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.instance_for_test() as instance:
        def tick(cursor):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
            return sensor(ctx), ctx.cursor

        result, cursor = tick(None)
        assert isinstance(result, dg.SkipReason)
        write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
        waiting, cursor = tick(cursor)  # new: read once it is the same at the next tick
        assert isinstance(waiting, dg.SkipReason) and "msisf/programmes_2025-01.csv" in waiting.skip_message
        request, cursor = tick(cursor)
        assert isinstance(request, dg.RunRequest)
        assert isinstance(tick(cursor)[0], dg.SkipReason)


def test_landing_sensor_waits_for_a_file_still_being_written(defs, settings, contracts):
    """A partner's upload tool writing a file in place: the sensor started a refresh on the
    first part of the file (half a month of payments loaded and published). A new or changed
    file now starts a run only once it is the same at two ticks in a row."""
    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.instance_for_test() as instance:
        def tick(cursor):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
            return sensor(ctx), ctx.cursor

        path = write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # the first part written
        result, cursor = tick(None)
        assert isinstance(result, dg.SkipReason) and "still being written?" in result.skip_message
        with open(path, "ab") as fh:
            fh.write(whole[len(whole) // 2:])  # the rest, before the next tick
        result, cursor = tick(cursor)
        assert isinstance(result, dg.SkipReason) and "still being written?" in result.skip_message
        request, cursor = tick(cursor)  # the same as at the tick before: read
        assert isinstance(request, dg.RunRequest) and request.tags["jisr/files"] == "1"
        assert isinstance(tick(cursor)[0], dg.SkipReason)


def test_landing_sensor_marks_failed_a_refresh_whose_process_is_gone(defs, settings):
    """A refresh killed outright (its process gone) stays "started" and would hold the run
    queue's slot for good: the sensor's next tick marks it failed. Not a live run, nor one
    re-executed with its parent's tags, nor a run whose pid another process now has."""
    import subprocess
    import sys

    from orchestration.runlock import HOST_TAG, PID_TAG, process_tag

    sensor = defs.resolve_sensor_def("landing_sensor")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = os.uname().nodename
    try:
        with dg.instance_for_test() as instance:
            job = defs.resolve_job_def("refresh_job")
            runs = {name: instance.create_run_for_job(job) for name in ("dead", "alive", "reexecuted", "reused")}
            tags = {"dead": process_tag(runs["dead"].run_id, gone.pid),
                    "alive": process_tag(runs["alive"].run_id, other.pid),
                    "reexecuted": process_tag(runs["dead"].run_id, gone.pid),  # its parent's tag
                    "reused": f"{runs['reused'].run_id} {other.pid} 1"}  # started at another time than `other`
            for name, run in runs.items():
                instance.add_run_tags(run.run_id, {PID_TAG: tags[name], HOST_TAG: host})
                instance.handle_run_event(run.run_id, dg.DagsterEvent(
                    event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name))
            sensor(dg.build_sensor_context(instance=instance))
            status = {name: instance.get_run_by_id(run.run_id).status for name, run in runs.items()}
            assert status == {"dead": dg.DagsterRunStatus.FAILURE, "alive": dg.DagsterRunStatus.STARTED,
                              "reexecuted": dg.DagsterRunStatus.STARTED, "reused": dg.DagsterRunStatus.FAILURE}
            failure = instance.get_records_for_run(runs["dead"].run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
            assert "marked failed by the landing sensor" in failure[0].event_log_entry.dagster_event.message
    finally:
        other.kill()
        other.wait()


def test_landing_sensor_sees_a_file_moved_back_into_the_landing_area(defs, settings, contracts):
    """A rejected file moved back (``mv`` keeps its size and modification time) after its
    contract was fixed starts a run of its own; hidden and partial files start none."""
    sensor = defs.resolve_sensor_def("landing_sensor")
    landing = settings.landing_dir / "msisf"
    with dg.instance_for_test() as instance:
        def tick(cursor):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
            return sensor(ctx), ctx.cursor

        landing.mkdir(parents=True)
        for name in (".programmes_2025-01.csv", "programmes_2025-02.csv.part", "~$programmes.xlsx"):
            (landing / name).write_text("x")
        result, cursor = tick(None)
        assert isinstance(result, dg.SkipReason)
        path = write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
        result, cursor = tick(cursor)  # read once it is the same at the next tick
        assert isinstance(result, dg.SkipReason)
        first, cursor = tick(cursor)
        assert isinstance(first, dg.RunRequest)
        away = settings.rejected_dir / "msisf" / path.name
        away.parent.mkdir(parents=True)
        path.rename(away)  # what ingestion does with a file it rejects
        result, cursor = tick(cursor)
        assert isinstance(result, dg.SkipReason)
        away.rename(path)  # moved back, same size and modification time
        result, cursor = tick(cursor)
        assert isinstance(result, dg.SkipReason)
        again, cursor = tick(cursor)
        assert isinstance(again, dg.RunRequest) and again.run_key != first.run_key
        assert isinstance(tick(cursor)[0], dg.SkipReason)


def test_landing_sensor_starts_a_failed_run_again_with_a_growing_delay(defs, settings, contracts, monkeypatch):
    """A run the sensor started that failed (say, no key in the daemon's environment) is
    started again while its files are in the landing area as they were, a bounded number of
    times, each after a delay; a change in the landing area starts a new run."""
    import orchestration.sensors as sensors

    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.instance_for_test() as instance:
        def tick(cursor):
            ctx = dg.build_sensor_context(instance=instance, cursor=cursor)
            return sensor(ctx), ctx.cursor

        def launched(request, status):
            instance.add_run(dg.DagsterRun(job_name="refresh_job", run_id=str(uuid.uuid4()), status=status,
                                           tags={**request.tags, "dagster/sensor_name": "landing_sensor",
                                                 "dagster/run_key": request.run_key}))

        write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
        first, cursor = tick(tick(None)[1])  # read at the second tick: it did not change
        launched(first, dg.DagsterRunStatus.STARTED)
        assert isinstance(tick(cursor)[0], dg.SkipReason)  # running: nothing to do
        launched(first, dg.DagsterRunStatus.FAILURE)
        monkeypatch.setattr(sensors, "RETRY_DELAYS_SECONDS", (3600, 3600))
        wait, cursor = tick(cursor)
        assert isinstance(wait, dg.SkipReason) and "failed: it starts it again at" in wait.skip_message
        monkeypatch.setattr(sensors, "RETRY_DELAYS_SECONDS", (0, 0))
        retry, cursor = tick(cursor)
        assert isinstance(retry, dg.RunRequest) and retry.run_key == f"{first.run_key}-retry1"
        assert retry.tags["jisr/retry"] == "1"
        assert isinstance(tick(cursor)[0], dg.SkipReason)  # not launched (yet): no second request
        launched(retry, dg.DagsterRunStatus.FAILURE)
        retry2, cursor = tick(cursor)
        assert retry2.run_key == f"{first.run_key}-retry2"
        launched(retry2, dg.DagsterRunStatus.FAILURE)
        result, cursor = tick(cursor)  # the retries are used up: it waits for a change
        assert isinstance(result, dg.SkipReason) and result.skip_message == "no new file in the landing area"
        write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-02.csv", [PROGRAMME])
        new, cursor = tick(tick(cursor)[1])
        assert isinstance(new, dg.RunRequest) and new.tags["jisr/files"] == "1" and "jisr/retry" not in new.tags
        launched(new, dg.DagsterRunStatus.SUCCESS)
        assert isinstance(tick(cursor)[0], dg.SkipReason)  # a run that succeeded is not started again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


def test_webserver_serves_the_asset_graph_and_the_last_run(tmp_path, contracts):
    """What `make dev` serves: the assets of the code location and the runs in its history."""
    env = dict(os.environ, JISR_HOME=str(tmp_path), DAGSTER_HOME=str(tmp_path / "dagster"), JISR_DEMO="1")
    (tmp_path / "dagster").mkdir()
    shutil.copyfile(PROJECT_DIR / "orchestration" / "dagster.yaml", tmp_path / "dagster" / "dagster.yaml")
    write_delivery(tmp_path / "landing", contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    # a run of the refresh job's ingestion step, recorded in that instance
    code = ("from orchestration.definitions import defs; import dagster as dg; "
            "job = defs.resolve_job_def('refresh_job'); "
            "r = job.execute_in_process(instance=dg.DagsterInstance.get(), "
            "asset_selection=[dg.AssetKey(['raw', 'programmes'])]); print(r.run_id)")
    run_id = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_DIR, check=True,
                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = _free_port()
    web = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml",
                            "-h", "127.0.0.1", "-p", str(port)], env=env, cwd=PROJECT_DIR,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                break
            except OSError:
                if time.time() > deadline or web.poll() is not None:
                    pytest.fail("the Dagster webserver did not start")
                time.sleep(1)
        nodes = _graphql(port, "{ assetNodes { assetKey { path } } }")["assetNodes"]
        paths = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert "raw/programmes" in paths and "detail/dim_beneficiaries" in paths
        runs = _graphql(port, '{ runsOrError { ... on Runs { results { runId status jobName } } } }')
        results = runs["runsOrError"]["results"]
        assert {"runId": run_id, "status": "SUCCESS", "jobName": "refresh_job"} in results
        # the run's events, read through the instance's event log storage (orchestration/event_log.py)
        assert "PooledSqliteEventLogStorage" in _graphql(port, "{ instance { info } }")["instance"]["info"]
        asset = _graphql(port, '{ assetOrError(assetKey: {path: ["raw", "programmes"]}) '
                               '{ ... on Asset { assetMaterializations(limit: 1) { runId } } } }')
        assert asset["assetOrError"]["assetMaterializations"] == [{"runId": run_id}]
    finally:
        web.terminate()
        web.wait(timeout=30)


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(("info", message))

    def error(self, message):
        self.lines.append(("error", message))


def _ingested(settings, contracts):
    from tests.test_lake import first_month, ingest

    first_month(settings, contracts)
    ingest(settings, contracts)


def test_the_lake_is_exported_beside_dbt_on_duckdb(settings, contracts, monkeypatch):
    """On DuckDB (dbt reads the raw store) the lake export runs in a thread while the build
    runs; the step ends with the lake equal to the store."""
    import threading
    from types import SimpleNamespace

    from orchestration.assets import warehouse
    from tests.test_lake import assert_lake_matches_store

    monkeypatch.delenv("JISR_DBT_TARGET", raising=False)
    _ingested(settings, contracts)
    import ingestion.lake as lake

    export_threads, original = [], lake.export_raw

    def recording(*args, **kwargs):
        export_threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(lake, "export_raw", recording)
    context = SimpleNamespace(log=_Log())
    with warehouse._raw_lake_export(context, settings) as lake:
        pass  # the build
    lake.check()
    assert len(export_threads) == 1 and export_threads[0].startswith("jisr-lake")
    assert_lake_matches_store(settings, contracts)
    assert context.log.lines[-1][0] == "info" and "open raw layer (Parquet)" in context.log.lines[-1][1]


def test_the_lake_is_exported_before_dbt_on_targets_that_read_it(settings, contracts, monkeypatch):
    from types import SimpleNamespace

    from orchestration.assets import warehouse
    from tests.test_lake import assert_lake_matches_store

    monkeypatch.setenv("JISR_DBT_TARGET", "spark")
    _ingested(settings, contracts)
    context = SimpleNamespace(log=_Log())
    with warehouse._raw_lake_export(context, settings):
        assert_lake_matches_store(settings, contracts)  # what dbt on Spark reads: complete


def test_a_failed_lake_export_fails_the_warehouse_step_after_the_build(settings, contracts, monkeypatch):
    from types import SimpleNamespace

    import ingestion.lake as lake
    from orchestration.assets import warehouse

    monkeypatch.delenv("JISR_DBT_TARGET", raising=False)
    _ingested(settings, contracts)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lake, "export_raw", broken)
    built = []
    with warehouse._raw_lake_export(SimpleNamespace(log=_Log()), settings) as lake:
        built.append(True)
    assert built == [True]  # the build ran to its end
    with pytest.raises(dg.Failure, match="open raw layer.*disk full"):
        lake.check()  # raised by the step after it kept the build's parse state and docs


def test_every_step_of_the_code_location_holds_the_refresh_lock(defs):
    """Assets and checks alike (a check-only run from the UI reads the warehouse a refresh
    writes): every step requires the refresh_lock resource, and every job runs in one
    process, so the lock is held for the run."""
    nodes = [*defs.assets, *defs.asset_checks]
    assert len(defs.asset_checks) == 3
    missing = sorted(n.node_def.name for n in nodes if "refresh_lock" not in n.required_resource_keys)
    assert missing == []
    assert defs.resolve_job_def("__ASSET_JOB").executor_def.name == "in_process"


def test_every_table_and_seed_a_dbt_build_makes_carries_its_row_count(settings, contracts):
    """The Dagster UI shows an asset's rows (its page, the plot across materialisations) from
    its materialisation's dagster/row_count, which the dbt models had none of: each table,
    incremental table and seed now has the rows of its relation as built, an incremental
    fact's counted after its own post-hook removed the rows of vanished periods; views
    have none (counting one runs its query)."""
    import duckdb

    from orchestration.assets.warehouse import MANIFEST, TRANSLATOR, warehouse_dbt
    from orchestration.definitions import defs

    _ingested(settings, contracts)
    job = defs.resolve_implicit_global_asset_job_def()

    def build(selection):
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), asset_selection=selection)
        assert result.success
        return {m.asset_key: m.metadata for m in result.asset_materializations_for_node("warehouse_dbt")}

    def rows(relation):
        with duckdb.connect(str(settings.build_path), read_only=True) as con:
            return con.execute(f"select count(*) from {relation}").fetchone()[0]

    found = build(list(warehouse_dbt.keys))
    nodes = [n for n in json.loads(MANIFEST.read_text())["nodes"].values() if n["resource_type"] in ("model", "seed")]
    assert len(found) == len(nodes)
    for node in nodes:
        metadata = found[TRANSLATOR.get_asset_key(node)]
        if node["config"]["materialized"] == "view":
            assert "dagster/row_count" not in metadata, node["name"]
        else:
            assert metadata["dagster/row_count"].value == rows(node["relation_name"]), node["name"]
    payments = dg.AssetKey(["detail", "fct_payments"])
    assert found[payments]["dagster/row_count"].value == 6

    with duckdb.connect(str(settings.build_path)) as con:  # a month no delivery holds any more
        con.execute("insert into detail.fct_payments select * replace ('2099-12' as payment_month) "
                    "from detail.fct_payments limit 1")
    again = build([payments])  # incremental: its post-hook deletes that month
    assert again[payments]["dagster/row_count"].value == rows('"build"."detail"."fct_payments"') == 6


@pytest.mark.parametrize("target", ["duckdb", "postgres"])
def test_dbt_s_logged_row_counts_go_to_the_materialisations_of_their_models(target, monkeypatch):
    """The rows dbt logs for a table (its post-hook, on DuckDB) go to that table's
    materialisation; other events pass as they are. A build on another target logs none:
    its materialisations have no row count, and the step says why."""
    from types import SimpleNamespace

    from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

    from orchestration.assets import warehouse

    monkeypatch.setenv("JISR_DBT_TARGET", target)
    manifest = json.loads(warehouse.MANIFEST.read_text())
    table, view = "model.jisr.dim_programmes", "model.jisr.stg_msisf__programmes"

    def event(name, uid, msg="", status="success"):
        node = {"unique_id": uid, "node_status": status, "node_started_at": "2026-01-01T00:00:00",
                "node_finished_at": "2026-01-01T00:00:01"}
        return DbtCoreCliEventMessage(raw_event={"info": {"name": name, "msg": msg, "invocation_id": "i"},
                                                 "data": {"node_info": node, "status": status}},
                                      event_history_metadata={})

    rows = [event("JinjaLogInfo", table, 'Rows of "build"."marts"."dim_programmes": 13')]  # by the post-hook
    logged = rows if target == "duckdb" else []
    build = SimpleNamespace(manifest=manifest, dagster_dbt_translator=warehouse.TRANSLATOR, context=None,
                            target_path=None, project=None,
                            stream_raw_events=lambda: iter([event("LogModelResult", view), *logged,
                                                            event("LogModelResult", table)]))
    context = SimpleNamespace(log=_Log())
    found = {e.asset_key.path[-1]: e.metadata for e in warehouse._with_row_counts(context, build)}
    assert set(found) == {"dim_programmes", "stg_msisf__programmes"}
    assert "dagster/row_count" not in found["stg_msisf__programmes"]
    if target == "duckdb":
        assert found["dim_programmes"]["dagster/row_count"].value == 13 and not context.log.lines
    else:
        assert "dagster/row_count" not in found["dim_programmes"]
        assert context.log.lines == [("info", "dbt models' row counts (dagster/row_count) are logged by builds "
                                              "on DuckDB only, not on postgres")]


def test_a_run_of_some_dbt_assets_keeps_the_deliveries_of_the_whole_build_before(settings, contracts):
    """A run materialising one dbt asset (or running one dbt test) rebuilds nothing else: the
    build warehouse is still the whole build before it, and a delivery ingested since is in
    none of its other tables. The deliveries recorded as built from (the publish log lists
    them; `jisr status` says NOT PUBLISHED for the others) stay those of that whole build."""
    from jisr.publish import current_deliveries, record_build_deliveries, recorded_build_deliveries
    from orchestration.definitions import defs

    _ingested(settings, contracts)
    current = current_deliveries(settings)
    before = [d for d in current if d["source"] == "programmes"]  # the whole build before: programmes only
    assert before and len(before) < len(current)
    settings.build_path.parent.mkdir(parents=True, exist_ok=True)
    record_build_deliveries(settings, before)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(),
                                    asset_selection=[dg.AssetKey(["seeds", "geo_communes"])], raise_on_error=False)
    assert result.success
    recorded = recorded_build_deliveries(settings)
    assert [d["delivery_id"] for d in recorded] == [d["delivery_id"] for d in before]


def _alive(pid: int) -> bool:
    """The process runs (a zombie, ended but not reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_dbt_started_by_a_run_ends_when_the_run_process_is_killed(tmp_path):
    """A run killed outright (SIGKILL, the out-of-memory killer) releases the refresh lock
    with its process; the dbt it started must not keep building (and holding DuckDB's locks
    on the raw store and the build warehouse, which made the next refresh fail)."""
    code = ("import orchestration.assets.warehouse, sys, time\n"
            "from dagster_dbt.core import dbt_cli_invocation as inv\n"
            "child = inv.subprocess.Popen(['sleep', '300'], stdout=inv.subprocess.PIPE)  # as dagster-dbt starts dbt\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(300)\n")
    run = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True)
    assert not _outlives_its_killed_parent(run, lambda: int(run.stdout.readline())), \
        "the dbt process outlived the run that started it"


def _outlives_its_killed_parent(run: subprocess.Popen, child_pid) -> bool:
    """Kill ``run`` outright once its child (``child_pid()``, which waits for it) runs: whether
    the child is still alive 10 s later (it is killed then)."""
    child = None
    try:
        child = child_pid()
        assert _alive(child)
        run.kill()
        run.wait(timeout=30)
        deadline = time.time() + 10
        while _alive(child) and time.time() < deadline:
            time.sleep(0.1)
        return _alive(child)
    finally:
        run.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_the_dbt_of_a_postgresql_publication_ends_when_the_publication_is_killed(tmp_path):
    """`jisr publish-postgres` killed outright: its dbt went on building <schema>__next beside
    the next publication's (the advisory lock that keeps two publications apart went with the
    killed process's connection)."""
    pidfile = tmp_path / "dbt.pid"
    fake_dbt = tmp_path / "dbt"
    fake_dbt.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 300\n")
    fake_dbt.chmod(0o755)
    code = ("import os, jisr.dbt, jisr.postgres as pg\n"
            "from pathlib import Path\n"
            "from jisr.settings import Settings\n"
            f"jisr.dbt.dbt_executable = lambda: Path({str(fake_dbt)!r})\n"
            "pg.dbt_environment = lambda settings, dsn: dict(os.environ)\n"
            f"pg.run_dbt(Settings(home=Path({str(tmp_path)!r})), 'postgresql://unused')\n")
    run = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_DIR)

    def started() -> int:
        deadline = time.time() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()) and time.time() < deadline:
            time.sleep(0.1)
        return int(pidfile.read_text())

    assert not _outlives_its_killed_parent(run, started), "the publication's dbt outlived it"


@pytest.mark.parametrize("instance_file", ["orchestration/dagster.yaml", "deploy/dagster.yaml"])
def test_a_selection_materialised_from_the_ui_waits_for_the_refresh_in_the_queue(defs, instance_file):
    """Every step holds the refresh lock: a run of any job of the code location (a mart or a
    check materialised from the UI: Dagster's __ASSET_JOB, which carries no tag of the
    project) started while a refresh runs would fail at once on the lock. The run queue keeps
    it waiting instead, as it does a second refresh_job, and the refresh behind a selection."""
    import yaml
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    config = yaml.safe_load((PROJECT_DIR / instance_file).read_text())
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    location = yaml.safe_load((PROJECT_DIR / "workspace.yaml").read_text())["load_from"][0]["python_module"]["location_name"]
    launched = {"dagster/code_location": location}  # what the webserver, sensors and schedules add
    refresh = dg.DagsterRun(job_name="refresh_job", run_id="r1", tags={**launched, **defs.resolve_job_def("refresh_job").tags})
    selection = dg.DagsterRun(job_name="__ASSET_JOB", run_id="r2", tags=launched)
    assert TagConcurrencyLimitsCounter(limits, [refresh]).is_blocked(selection)
    assert TagConcurrencyLimitsCounter(limits, [selection]).is_blocked(refresh)
    assert TagConcurrencyLimitsCounter(limits, [refresh]).is_blocked(refresh)


def test_the_delivery_log_and_the_quarantine_ledger_are_assets_of_the_ingestion(defs, settings, contracts):
    """They were placeholders of the dbt sources, in the `default` group, with no description
    nor producer: the ingestion step writes them, and its runs now materialise them with
    their row counts (a run of one source too); the raw tables give Dagster's row count too
    (their rows in effect)."""
    from orchestration.assets.ingest import DELIVERY_LOG, QUARANTINE, ingest_landing, raw_key
    from orchestration.runlock import RefreshLock

    graph = defs.resolve_asset_graph()
    for key, model in ((DELIVERY_LOG, "stg_ingest__deliveries"), (QUARANTINE, "stg_ingest__quarantined_rows")):
        node = graph.get(key)
        assert node.is_materializable and node.group_name == "raw" and node.description
        assert dg.AssetKey(["staging", model]) in node.child_keys
        assert key in ingest_landing.keys
    job = dg.Definitions(assets=[ingest_landing], resources={"refresh_lock": RefreshLock()}, jobs=[dg.define_asset_job(
        "ingest", selection=[raw_key("programmes"), DELIVERY_LOG, QUARANTINE],
        executor_def=dg.in_process_executor)]).resolve_job_def("ingest")
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv",
                   [PROGRAMME, dict(PROGRAMME, programme_code=None)])
    with dg.DagsterInstance.ephemeral() as instance:
        run = job.execute_in_process(instance=instance)
    assert run.success
    found = {m.asset_key: m.metadata for m in run.asset_materializations_for_node("ingest_landing")}
    assert found[raw_key("programmes")]["dagster/row_count"].value == 1  # the rows in effect
    assert found[DELIVERY_LOG]["dagster/row_count"].value == 1
    assert found[DELIVERY_LOG]["files_this_run"].value == 1
    assert found[QUARANTINE]["rows_quarantined_this_run"].value == 1
    assert found[QUARANTINE]["dagster/row_count"].value >= 1


def test_every_asset_check_says_what_it_checks(defs):
    """222 of the 262 checks (dbt's generic tests, and singular tests, whose explanation is
    their leading SQL comment) had no description in the UI: each now says what it checks,
    and whether it blocks publication."""
    graph = defs.resolve_asset_graph()
    specs = {k.name: graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert all(spec.description for spec in specs.values()), sorted(n for n, s in specs.items() if not s.description)
    assert specs["unique_fct_loans_loan_id"].description == (
        "loan_id is unique (dbt test unique_fct_loans_loan_id; blocks publication when it fails)")
    assert specs["accepted_values_stg_msisf__beneficiaries_area_type__urban__rural"].description.startswith(
        "area_type is one of urban, rural (")
    assert specs["assert_enrolment_does_not_end_before_start"].description.startswith(
        "An enrolment cannot end before it starts. (dbt test")
    assert specs["assert_loan_principal_repaid_within_principal"].description.startswith(
        "A loan never repays more principal than it lent, whatever its opening position")
    assert specs["assert_payment_within_its_enrolment"].description.endswith("warns when it fails)")
