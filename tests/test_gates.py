"""The quality gates in Dagster: blocking checks stop publication in the run, the publish step
cannot be run around them, and the serving warehouse only changes when everything passed.

These tests use the real ingestion, check and publish assets around a small stand-in for
the dbt step (a Python multi-asset writing a hand-made build warehouse, with a blocking
check standing for a dbt test of severity error), so they stay fast.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import duckdb
import pytest

from jisr.publish import publish_log
from jisr.settings import PROJECT_DIR
from orchestration.assets.ingest import CONTRACTS, ingest_landing
from orchestration.assets.publish import SERVING_KEY, build_publish_assets
from orchestration.checks import CANDIDATE_KEY, build_quality_checks
from orchestration.runlock import RefreshLock
from tests.conftest import PROGRAMME, enrolment, payment, person, write_delivery
from tests.test_publish import make_build, stub_disclosure

LOCK = {"refresh_lock": RefreshLock()}

MARTS = [dg.AssetKey(path) for path in (["marts", "dim_programmes"], ["detail", "dim_beneficiaries"],
                                        ["detail", "fct_payments"], ["marts", "mart_payments"])]
IMPACT = dg.AssetKey(["impact", "impact_estimates"])
DBT_TEST = "not_null_fct_payments"


def stand_in_defs(flags: dict) -> dg.Definitions:
    @dg.multi_asset(specs=[dg.AssetSpec(k, deps=[dg.AssetKey(["raw", s]) for s in ("programmes", "beneficiaries",
                                                                                    "payments")]) for k in MARTS],
                    check_specs=[dg.AssetCheckSpec(DBT_TEST, asset=MARTS[2], blocking=True)], name="warehouse_dbt")
    def warehouse(context):
        from jisr.settings import get_settings

        make_build(get_settings(), payments_scale=flags.get("payments_scale", 1.0),
                   estimate=flags.get("estimate", 1.5), extra_sql=flags.get("extra_sql", ()))
        for key in MARTS:
            yield dg.MaterializeResult(asset_key=key)
        yield dg.AssetCheckResult(asset_key=MARTS[2], check_name=DBT_TEST, passed=not flags.get("fail_dbt_test"),
                                  severity=dg.AssetCheckSeverity.ERROR)

    @dg.asset(key=IMPACT, deps=[MARTS[2]])
    def impact(context):
        flags.setdefault("impact_runs", []).append(context.run.run_id)

    return dg.Definitions(
        assets=[ingest_landing, warehouse, impact, *build_publish_assets([*MARTS, IMPACT])],
        asset_checks=build_quality_checks(CONTRACTS, [warehouse]),
        resources={"refresh_lock": RefreshLock()},
        jobs=[dg.define_asset_job("refresh_job", selection=dg.AssetSelection.all(),
                                  executor_def=dg.in_process_executor)],
    )


def deliver(settings, contracts, month="2025-01", n=12, bad_sex_row=None):
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    people = [person(i) for i in range(n)]
    if bad_sex_row is not None:
        people[bad_sex_row]["sex"] = "?"
    write_delivery(settings.landing_dir, contracts["beneficiaries"], f"registre_{month}.csv", people)
    write_delivery(settings.landing_dir, contracts["enrolments"], f"inscriptions_{month}.csv",
                   [enrolment(i) for i in range(n)])
    write_delivery(settings.landing_dir, contracts["payments"], f"paiements_{month}.csv",
                   [payment(i, month) for i in range(n)])


def run(defs, instance, selection=None):
    job = defs.resolve_job_def("refresh_job")
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=selection)


def failures(result) -> list[str]:
    """What `jisr refresh` reports: failed steps (with the user's message), a run that could not
    start, and failed blocking checks (with their description)."""
    out = []
    for event in result.all_events:
        if event.is_step_failure or event.event_type_value == "RESOURCE_INIT_FAILURE":
            err = event.step_failure_data.error if event.is_step_failure else event.event_specific_data.error
            while err is not None and err.cause is not None:
                err = err.cause
            out.append(f"step {event.step_key}: {err.message.strip() if err else 'failed'}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed and data.severity == dg.AssetCheckSeverity.ERROR:
                out.append(f"check {data.check_name} on {data.asset_key.to_user_string()} failed: {data.description}")
    return out


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gate_env(tmp_path_factory, contracts):
    """One Dagster instance and JISR_HOME for this module, with a first successful refresh."""
    from jisr.settings import Settings
    from tests.conftest import TEST_KEY

    home = tmp_path_factory.mktemp("gates")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JISR_HOME", str(home))
        mp.setenv("JISR_PSEUDONYM_KEY", TEST_KEY.decode())
        stub_disclosure(mp)
        settings = Settings(home=home, key_value=TEST_KEY.decode())
        flags: dict = {}
        defs = stand_in_defs(flags)
        with dg.instance_for_test() as instance:
            deliver(settings, contracts)
            first = run(defs, instance)
            assert first.success, failures(first)
            yield settings, contracts, defs, instance, flags, first


@pytest.fixture
def gate(gate_env):
    """The module's environment with the stand-in warehouse back to a clean build."""
    flags = gate_env[4]
    runs = flags.get("impact_runs", [])
    flags.clear()
    flags["impact_runs"] = runs
    return gate_env


def test_gates_full_run_publishes_with_checks_and_linked_reports(gate):
    settings, _, defs, instance, _, first = gate
    assert publish_log(settings)[-1]["run_id"] == first.run_id
    assert {"serving/candidate", "serving/warehouse"} <= materialized(first)
    evaluations = [e.event_specific_data for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    by_key = {(ev.asset_key.to_user_string(), ev.check_name): ev for ev in evaluations}
    for key in [("detail/fct_payments", "references_resolve_to_dimensions"),
                ("detail/fct_payments", "totals_reconcile_with_raw"),
                ("detail/dim_beneficiaries", "totals_reconcile_with_raw"),
                ("serving/candidate", "no_direct_identifiers_published"),
                ("serving/candidate", "no_small_cells_published"),
                ("serving/candidate", "row_counts_within_tolerance"),
                ("raw/payments", "partner_deliveries_are_fresh"),
                ("raw/payments", "deliveries_validated_by_suite")]:
        assert key in by_key, key
        report = by_key[key].metadata["report"].value
        assert report == str(settings.reports_dir / first.run_id / "quality" / "index.html")
    page = (settings.reports_dir / first.run_id / "quality" / "index.html").read_text()
    assert "totals_reconcile_with_raw" in page and "no_direct_identifiers_published" in page
    graph = defs.resolve_asset_graph()
    assert graph.get_check_spec(dg.AssetCheckKey(CANDIDATE_KEY, "no_small_cells_published")).blocking
    assert not graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey(["raw", "payments"]),
                                                     "partner_deliveries_are_fresh")).blocking


def test_gates_blocking_check_failure_fails_the_run_and_leaves_serving_unchanged(gate):
    settings, contracts, defs, instance, flags, _ = gate
    before = sha256(settings.serving_path)
    deliver(settings, contracts, month="2025-02", bad_sex_row=3)  # new files, one quarantined row
    flags["payments_scale"] = 3.0  # marts no longer reconcile with the raw layer
    result = run(defs, instance)
    assert not result.success
    text = "\n".join(failures(result))
    assert "check totals_reconcile_with_raw on detail/fct_payments failed" in text and "payments_total_mad" in text
    assert not {"serving/candidate", "serving/warehouse"} & materialized(result)
    assert sha256(settings.serving_path) == before
    # what happened is still recorded: quarantine, partner feedback, quality report
    con = duckdb.connect(str(settings.store_path), read_only=True)
    quarantined = con.execute("select count(*) from quarantine.rows where run_id = ?", [result.run_id]).fetchone()[0]
    con.close()
    assert quarantined >= 1
    assert (settings.feedback_dir / "msisf" / "registre_2025-02.csv.rejected_rows.csv").exists()
    page = (settings.reports_dir / result.run_id / "quality" / "index.html").read_text()
    assert "BLOCKED" in page and "payments_total_mad" in page and "registre_2025-02.csv" in page


def test_gates_dbt_test_failure_stops_publication(gate):
    settings, _, defs, instance, flags, _ = gate
    before = sha256(settings.serving_path)
    impact_runs = len(flags["impact_runs"])
    flags["fail_dbt_test"] = True
    flags["estimate"] = 9.0
    result = run(defs, instance)
    assert not result.success
    assert f"check {DBT_TEST} on detail/fct_payments failed" in "\n".join(failures(result))
    assert not {"impact/impact_estimates", "serving/candidate", "serving/warehouse"} & materialized(result)
    assert len(flags["impact_runs"]) == impact_runs  # the downstream step did not run
    assert sha256(settings.serving_path) == before


def test_gates_python_check_failure_stops_publication(gate):
    settings, _, defs, instance, flags, _ = gate
    before = sha256(settings.serving_path)
    flags["extra_sql"] = ["create table marts.fct_contacts as select 'AB123456' as contact"]
    log = publish_log(settings)
    result = run(defs, instance)
    assert not result.success
    assert "check no_direct_identifiers_published on serving/candidate failed" in "\n".join(failures(result))
    assert "serving/warehouse" not in materialized(result)
    assert sha256(settings.serving_path) == before
    assert publish_log(settings) == log


def test_gates_publishing_alone_after_a_failed_run_is_refused(gate):
    settings, _, defs, instance, flags, _ = gate
    before = sha256(settings.serving_path)
    flags["payments_scale"] = 3.0
    assert not run(defs, instance).success
    alone = run(defs, instance, selection=[SERVING_KEY])
    assert not alone.success
    text = "\n".join(failures(alone))
    assert "Publication refused" in text and "totals_reconcile_with_raw on detail/fct_payments failed" in text
    assert sha256(settings.serving_path) == before


def test_gates_a_run_refuses_while_another_process_holds_the_refresh_lock(gate):
    """A run launched from the UI, the schedule or the sensor while `jisr refresh` (another
    process) refreshes the same warehouse refuses at once, naming it, instead of racing it
    for the store and the candidate; the refresh holding the lock runs its own job."""
    import subprocess
    import sys

    from jisr.lock import refresh_lock

    settings, _, defs, instance, _, _ = gate
    before = sha256(settings.serving_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from jisr.lock import refresh_lock; from jisr.settings import "
         "get_settings\nwith refresh_lock(get_settings(), run_id='cli-run'):\n    print('held', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True, env=dict(os.environ, JISR_HOME=str(settings.home)))
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = run(defs, instance)
        assert not refused.success
        text = "\n".join(failures(refused))
        assert f"another refresh is running (pid {holder.pid}, run cli-run" in text, text
        assert sha256(settings.serving_path) == before
    finally:
        holder.kill()
        holder.wait()
    with refresh_lock(settings):  # what `jisr refresh` does: the lock, then the job in the same process
        assert run(defs, instance).success


def test_gates_publishing_alone_after_a_run_refused_before_its_checks(gate):
    """A run that failed before it built anything leaves checks planned, never evaluated:
    publishing the last build alone looks at the evaluations before them."""
    import subprocess
    import sys

    settings, _, defs, instance, _, _ = gate
    assert run(defs, instance).success
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from jisr.lock import refresh_lock; from jisr.settings import "
         "get_settings\nwith refresh_lock(get_settings()):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, JISR_HOME=str(settings.home)))
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not run(defs, instance).success
    finally:
        holder.kill()
        holder.wait()
    alone = run(defs, instance, selection=[SERVING_KEY])
    assert alone.success, failures(alone)


def test_a_refresh_whose_process_was_killed_is_marked_failed_by_the_next(gate):
    """A refresh killed outright stays "started" in the instance and would hold the run
    queue's slot for ever: the next run that takes the refresh lock marks it failed."""
    import subprocess
    import sys

    from orchestration.runlock import HOST_TAG, PID_TAG, process_tag

    settings, _, defs, instance, _, _ = gate
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = instance.create_run_for_job(defs.resolve_job_def("refresh_job"))
    instance.add_run_tags(dead.run_id, {PID_TAG: process_tag(dead.run_id, gone.pid), HOST_TAG: os.uname().nodename})
    instance.handle_run_event(dead.run_id, dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_START.value, job_name=dead.job_name))
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.STARTED
    assert run(defs, instance).success
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE


def test_gates_publish_step_audits_the_build_it_publishes(gate):
    """Checks passed in the instance, then the build changed behind Dagster's back: the
    publish step's own audit still refuses."""
    settings, _, defs, instance, _, _ = gate
    assert run(defs, instance).success  # every check passes on the current build...
    before = sha256(settings.serving_path)
    make_build(settings, payments_scale=5.0)  # ...then the build is changed outside Dagster
    alone = run(defs, instance, selection=[SERVING_KEY])
    assert not alone.success
    assert "totals_reconcile_with_raw" in "\n".join(failures(alone))
    assert sha256(settings.serving_path) == before



def test_gates_publish_step_checks_references_of_a_fact_without_its_own_check(gate):
    """A fact the warehouse checks do not cover (no asset check of its own): the run's
    references results on the other facts do not stand for it, the publish step checks it."""
    settings, _, defs, instance, flags, _ = gate
    before = sha256(settings.serving_path)
    flags["extra_sql"] = ["create table detail.fct_extra as select -1::bigint as person_key, 1 as n"]
    result = run(defs, instance)
    assert not result.success
    text = "\n".join(failures(result))
    assert "step serving__warehouse" in text and "references_resolve_to_dimensions [detail.fct_extra]" in text
    assert sha256(settings.serving_path) == before


def test_gates_publish_step_alone_after_an_ingestion_logs_the_deliveries_of_the_build(tmp_path, contracts,
                                                                                       monkeypatch):
    """A delivery ingested without a build, then serving/warehouse materialised alone: it
    publishes the last build, and its log lists the deliveries that build was made from."""
    from jisr.settings import Settings
    from jisr.status import status_report
    from tests.conftest import TEST_KEY

    monkeypatch.setenv("JISR_HOME", str(tmp_path))
    monkeypatch.setenv("JISR_PSEUDONYM_KEY", TEST_KEY.decode())
    stub_disclosure(monkeypatch)
    settings = Settings(home=tmp_path, key_value=TEST_KEY.decode())
    defs = stand_in_defs({})
    with dg.instance_for_test() as instance:
        deliver(settings, contracts)
        assert run(defs, instance).success
        write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-02.csv",
                       [dict(PROGRAMME, name_fr="Nouveau nom")])
        raw = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "raw"]
        assert run(defs, instance, selection=raw).success  # ingestion only
        alone = run(defs, instance, selection=[SERVING_KEY])
        assert alone.success, failures(alone)
    con = duckdb.connect(str(settings.serving_path), read_only=True)
    name = con.execute("select programme_name from marts.dim_programmes").fetchone()[0]
    con.close()
    logged = {d["file_name"] for d in json.loads(publish_log(settings)[0]["deliveries"])}
    assert name == "Aide sociale directe" and "programmes_2025-02.csv" not in logged
    assert "programmes_2025-01.csv" in logged
    assert "NOT PUBLISHED: 1 current delivery(ies)" in status_report(settings)


def test_gates_code_location_publishes_after_every_mart_and_blocking_dbt_test():
    """In the real code location: the candidate depends on every published mart and impact
    table, and every dbt test of severity error is a blocking check upstream of publishing."""
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    published = {k for k in graph.get_all_asset_keys() if k.path[0] in ("marts", "impact")}
    internal = {k for k in graph.get_all_asset_keys() if k.path[0] == "detail"}
    assert published and internal and graph.get(CANDIDATE_KEY).parent_keys == published | internal
    assert graph.get(SERVING_KEY).parent_keys == {CANDIDATE_KEY}
    ancestors = graph.get_ancestor_asset_keys(SERVING_KEY)
    dbt_checks = [ck for ck in graph.asset_check_keys if ck.asset_key.path[0] in ("marts", "detail", "staging", "intermediate")
                  and graph.get_check_spec(ck).blocking]
    assert len(dbt_checks) > 50 and all(ck.asset_key in ancestors for ck in dbt_checks)
    ours = {ck.name for ck in graph.asset_check_keys if graph.get_check_spec(ck).blocking}
    assert {"references_resolve_to_dimensions", "totals_reconcile_with_raw", "row_counts_within_tolerance",
            "no_direct_identifiers_published", "no_person_level_data_published", "no_small_cells_published"} <= ours

# --- the real refresh, killed and raced (slow: each refresh runs dbt) -------------------------------------

REFRESH = """
import json, os, sys, time
from pathlib import Path
home, mode = sys.argv[1], sys.argv[2]
os.environ.update(JISR_HOME=home, DAGSTER_HOME=home + "/dagster", JISR_PSEUDONYM_KEY=sys.argv[3])
os.environ.pop("JISR_DEMO", None)
from jisr.lock import LockBusy, refresh_lock
from jisr.settings import get_settings
import jisr.publish as publish
if mode == "kill-in-publish":
    marker = Path(sys.argv[4])
    def fault(name):
        if name == "before_replace":
            marker.write_text(name)
            time.sleep(600)
    publish._fault_point = fault
from jisr.refresh import run_refresh
settings = get_settings()
try:
    with refresh_lock(settings):
        result = run_refresh(settings)
except LockBusy as exc:
    print(f"REFUSED: {exc}")
    sys.exit(2)
print("RESULT " + json.dumps({"success": result.success, "run_id": result.run_id, "failures": result.failures}))
sys.exit(0 if result.success else 1)
"""

SERVING_READER = """
import duckdb, json, sys, time
from pathlib import Path
path, ready, go = sys.argv[1:4]
con = duckdb.connect(path, read_only=True)
q = ("select (select sum(transfers_paid_mad)::double from marts.mart_programme_costs), "
     "(select count(*) from marts.mart_transfers_monthly), (select max(run_id) from meta.publish_log)")
before = con.execute(q).fetchone()
Path(ready).write_text("ready")
while not Path(go).exists():
    before_again = con.execute(q).fetchone()  # keep reading during the refresh
    assert before_again == before, (before, before_again)
    time.sleep(0.2)
after = con.execute(q).fetchone()
print(json.dumps({"before": before, "after": after}))
"""


def start_refresh(home, tmp_path, name, mode="run", *extra):
    from tests.conftest import TEST_KEY

    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", REFRESH, str(home), mode, TEST_KEY.decode(), *map(str, extra)],
                            cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = tmp_path / f"{name}.log"
    return proc


def finish(proc, timeout=1800) -> str:
    proc.wait(timeout=timeout)
    return proc.log_path.read_text()


def kill_group(proc) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def serving_state(settings):
    con = duckdb.connect(str(settings.serving_path), read_only=True)
    try:
        return con.execute("select (select sum(transfers_paid_mad)::double from marts.mart_programme_costs), "
                           "(select list(run_id order by published_at) from meta.publish_log)").fetchone()
    finally:
        con.close()


def wait_for(predicate, proc, what, timeout=1200):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the refresh ended before {what}:\n{proc.log_path.read_text()[-4000:]}")
        if time.time() > deadline:
            kill_group(proc)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def refreshed_home(tmp_path_factory, contracts):
    """A JISR_HOME with a first real refresh published."""
    from jisr.settings import Settings

    home = tmp_path_factory.mktemp("refresh")
    settings = Settings(home=home)
    deliver(settings, contracts, n=40)
    proc = start_refresh(home, home, "first")
    out = finish(proc)
    assert proc.returncode == 0 and "RESULT" in out, out[-4000:]
    return settings


@pytest.mark.slow
def test_refresh_killed_during_dbt_build_then_next_refresh_publishes_while_a_reader_reads(refreshed_home, contracts,
                                                                                           tmp_path):
    import psutil

    settings = refreshed_home
    before_sha, before = sha256(settings.serving_path), serving_state(settings)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-02.csv",
                   [payment(i, "2025-02") for i in range(40)])

    def dbt_building(proc):
        try:
            return any("dbt" in " ".join(c.cmdline()) and "build" in c.cmdline()
                       for c in psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error:
            return False

    killed = start_refresh(settings.home, tmp_path, "killed-in-dbt")
    wait_for(lambda: dbt_building(killed), killed, "dbt build started")
    time.sleep(2)  # well inside the build
    kill_group(killed)
    assert sha256(settings.serving_path) == before_sha
    assert serving_state(settings) == before  # intact and readable

    # The next refresh completes while a reader holds the serving file open, and a second
    # refresh started meanwhile refuses with a clear message.
    ready, go = tmp_path / "ready", tmp_path / "go"
    reader = subprocess.Popen([sys.executable, "-c", SERVING_READER, str(settings.serving_path), str(ready), str(go)],
                              cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(ready.exists, reader, "the reader opened the serving file", timeout=120)
    refresh = start_refresh(settings.home, tmp_path, "next")
    lock = settings.home / "refresh.lock"
    wait_for(lambda: lock.exists() and f'"pid": {refresh.pid}' in lock.read_text(), refresh, "the refresh lock")
    second = start_refresh(settings.home, tmp_path, "second")
    out2 = finish(second, timeout=600)
    assert second.returncode == 2 and "another refresh is running" in out2 and f"pid {refresh.pid}" in out2, out2
    out = finish(refresh)
    assert refresh.returncode == 0, out[-4000:]
    go.write_text("go")
    seen, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    seen = json.loads(seen)
    assert seen["before"] == seen["after"] == [before[0], seen["before"][1], before[1][-1]]
    count, runs = serving_state(settings)
    assert count == 80 * 350.0 and runs[:-1] == before[1] and len(runs) == len(before[1]) + 1


@pytest.mark.slow
def test_refresh_killed_during_publish_leaves_serving_intact_and_next_refresh_publishes(refreshed_home, tmp_path):
    settings = refreshed_home
    before_sha, before = sha256(settings.serving_path), serving_state(settings)
    marker = tmp_path / "publishing"
    killed = start_refresh(settings.home, tmp_path, "killed-in-publish", "kill-in-publish", marker)
    wait_for(marker.exists, killed, "the publish step")
    kill_group(killed)
    assert sha256(settings.serving_path) == before_sha
    assert serving_state(settings) == before
    proc = start_refresh(settings.home, tmp_path, "after-kill")
    out = finish(proc)
    assert proc.returncode == 0, out[-4000:]
    count, runs = serving_state(settings)
    assert runs[:-1] == before[1] and len(runs) == len(before[1]) + 1 and count == before[0]
    assert not list(settings.serving_path.parent.glob(".candidate-*"))


def test_a_refresh_rejects_a_file_no_contract_matches(tmp_path, contracts, monkeypatch):
    """A partner's file whose name matches no contract is moved to rejected/ with a report
    and logged as rejected, by a run of every source; a run of some sources leaves it."""
    from jisr.settings import Settings
    from tests.conftest import TEST_KEY

    monkeypatch.setenv("JISR_HOME", str(tmp_path))
    monkeypatch.setenv("JISR_PSEUDONYM_KEY", TEST_KEY.decode())
    settings = Settings(home=tmp_path, key_value=TEST_KEY.decode())
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    stray = settings.landing_dir / "msisf" / "Registre_2026-06.csv"
    stray.write_text("x")
    uploading = [settings.landing_dir / "msisf" / name for name in
                 ("paiements_2025-02.csv.filepart", "~$ventures_2025-01.xlsx", "Thumbs.db", ".paiements_2025-03.csv")]
    for path in uploading:
        path.write_text("x")
    with dg.instance_for_test() as instance:
        some = dg.materialize([ingest_landing], instance=instance, selection=[dg.AssetKey(["raw", "programmes"])],
                              resources=LOCK)
        assert some.success and stray.exists()
        every = dg.materialize([ingest_landing], instance=instance, resources=LOCK)
    assert every.success
    assert not stray.exists() and (settings.rejected_dir / "msisf" / stray.name).exists()
    assert all(path.exists() for path in uploading)  # files being written or opened are not deliveries
    assert (settings.feedback_dir / "msisf" / f"{stray.name}.report.txt").exists()
    con = duckdb.connect(str(settings.store_path), read_only=True)
    status, reason = con.execute("select status, reason from meta.deliveries where file_name = ?", [stray.name]).fetchone()
    con.close()
    assert status == "rejected" and "no contract matches file name 'Registre_2026-06.csv'" in reason


def test_a_configuration_error_stops_the_refresh_before_anything_is_ingested(tmp_path, contracts, monkeypatch):
    """A typo in config/evaluation.yml (read by the impact stage, late in a refresh) fails the
    first step with the file named; nothing is ingested."""
    import shutil

    from jisr.settings import PROJECT_DIR, Settings
    from tests.conftest import TEST_KEY

    config = tmp_path / "config"
    shutil.copytree(PROJECT_DIR / "config", config)
    text = (config / "evaluation.yml").read_text()
    assert "\ncluster: cluster_id\n" in text
    (config / "evaluation.yml").write_text(text.replace("\ncluster: cluster_id\n", "\nclustr: cluster_id\n"))
    monkeypatch.setattr(Settings, "config_dir", property(lambda self: config))
    monkeypatch.setenv("JISR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JISR_PSEUDONYM_KEY", TEST_KEY.decode())
    settings = Settings(home=tmp_path / "home", key_value=TEST_KEY.decode())
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    with dg.instance_for_test() as instance:
        result = dg.materialize([ingest_landing], instance=instance, raise_on_error=False, resources=LOCK)
    assert not result.success
    message = next(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)
    assert "nothing was ingested" in message and "config/evaluation.yml" in message and "clustr" in message
    assert not settings.store_path.exists()
