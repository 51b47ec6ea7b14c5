"""The jisr command line, as a person who is not in the Dagster UI uses it."""

import re

import pytest

from jisr.cli import main
from jisr.lock import refresh_lock
from jisr.settings import get_settings


def test_refresh_without_a_key_refuses_with_a_clear_message(tmp_path, monkeypatch, capsys):
    for var in ("JISR_PSEUDONYM_KEY", "JISR_PSEUDONYM_KEY_FILE", "JISR_DEMO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("JISR_HOME", str(tmp_path))
    assert main(["refresh"]) == 2
    err = capsys.readouterr().err
    assert "No pseudonymisation key is configured" in err and "JISR_PSEUDONYM_KEY_FILE" in err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("value", ["\n", "abc"])
def test_refresh_with_a_blank_or_short_key_variable_refuses(tmp_path, monkeypatch, capsys, value):
    """A blank or short JISR_PSEUDONYM_KEY must not pseudonymise with a weak (or empty) HMAC key."""
    monkeypatch.delenv("JISR_PSEUDONYM_KEY_FILE", raising=False)
    monkeypatch.delenv("JISR_DEMO", raising=False)
    monkeypatch.setenv("JISR_HOME", str(tmp_path))
    monkeypatch.setenv("JISR_PSEUDONYM_KEY", value)
    assert main(["refresh"]) == 2
    err = capsys.readouterr().err
    assert ("is set but blank" if value.isspace() else "shorter than 16 bytes") in err
    assert not (tmp_path / "store").exists()


def test_second_refresh_refuses_while_one_is_running(settings, capsys):
    with refresh_lock(settings, timeout=0):
        # another process holding the lock is what matters; a child process shows it
        import subprocess
        import sys

        code = "import sys; from jisr.cli import main; sys.exit(main(['refresh']))"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "another refresh is running" in done.stderr


def test_contracts_list_names_every_source(capsys, contracts):
    assert main(["contracts", "list"]) == 0
    out = capsys.readouterr().out
    assert all(source in out for source in contracts)


def test_status_before_any_refresh_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JISR_HOME", str(tmp_path))
    assert main(["status"]) == 2  # nothing to tell yet
    assert "run `jisr refresh`" in capsys.readouterr().out
    assert get_settings().home == tmp_path.resolve()


def test_status_while_another_process_writes_the_raw_store_says_it_is_busy(settings, capsys):
    import subprocess
    import sys

    settings.store_path.parent.mkdir(parents=True)
    code = ("import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()")
    writer = subprocess.Popen([sys.executable, "-c", code, str(settings.store_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        assert main(["status"]) == 2  # the state cannot be read now
    finally:
        writer.communicate("", timeout=60)
    out = capsys.readouterr().out
    assert out.startswith("The raw store is busy: another process holds its write lock") and f"(PID {writer.pid})" in out
    assert "try `jisr status` again when the refresh has finished" in out


def test_unknown_command_is_an_error():
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_every_option_of_every_command_says_what_it_does_in_its_help():
    from jisr.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    undocumented = [f"{name} {action.option_strings or action.dest}"
                    for name, sub in commands.items() for action in sub._actions
                    if action.dest != "help" and not action.help]
    assert undocumented == []


def test_disclosure_lists_findings_of_a_warehouse_file(settings, tmp_path, capsys):
    assert main(["disclosure"]) == 2  # nothing published yet
    assert "no warehouse at" in capsys.readouterr().err
    import duckdb

    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    con.execute("create table marts.mart_new (region_code varchar, sex varchar, people bigint)")
    con.close()
    assert main(["disclosure", "--warehouse", str(path)]) == 1  # the configured marts are missing: blocking
    out = capsys.readouterr().out
    assert "BLOCKING  marts.mart_coverage_targeting: missing_table" in out
    assert "warning   marts.mart_new: unconfigured_table" in out
    assert "published cells" not in out  # no protected table

    con = duckdb.connect(str(path))
    con.execute("create table marts.mart_programme_costs (programme_code varchar, beneficiaries_reached bigint, "
                "people_paid bigint, transfers_paid_mad double, cost_per_beneficiary_mad double, budget_mad double, "
                "is_suppressed boolean)")
    con.execute("insert into marts.mart_programme_costs values ('A', 40, 40, 4.0, 0.1, 9.0, false), "
                "('B', null, null, null, null, 9.0, true)")
    con.close()
    main(["disclosure", "--warehouse", str(path)])
    assert re.search(r"published cells .*\n(.*\n)*  marts\.mart_programme_costs +1 of +2 +50%", capsys.readouterr().out)


def test_the_refresh_report_lists_a_landing_file_that_repeats_a_rejected_delivery(settings, contracts):
    """The ingestion step tells the refresh's report, through its materialization, which files
    it left in the landing area as they repeat a rejected delivery."""
    import dagster as dg

    from jisr.refresh import RefreshResult, run_outcome
    from orchestration.assets.ingest import ingest_landing, raw_key
    from tests.test_ingestion import cut_off_jsonl_delivery

    from orchestration.runlock import RefreshLock

    job = dg.Definitions(assets=[ingest_landing], resources={"refresh_lock": RefreshLock()}, jobs=[dg.define_asset_job(
        "ingest", selection=[raw_key("service_requests")], executor_def=dg.in_process_executor)]).resolve_job_def("ingest")
    cut_off_jsonl_delivery(settings.landing_dir, contracts)
    with dg.DagsterInstance.ephemeral() as instance:
        assert job.execute_in_process(instance=instance).success  # the file is rejected
        rejected = settings.rejected_dir / "digital" / "requests_2026-03.jsonl"
        (settings.landing_dir / "digital" / "requests_2026-03.jsonl").write_bytes(rejected.read_bytes())
        again = job.execute_in_process(instance=instance)
    failures, not_loaded, _ = run_outcome(again.all_events)
    assert failures == [] and [f for f, _ in not_loaded] == ["digital/requests_2026-03.jsonl"]
    report = RefreshResult(True, again.run_id, settings, not_loaded=not_loaded).report()
    assert "Files not loaded, as they repeat a rejected delivery" in report
    assert "  digital/requests_2026-03.jsonl: same content as rejected delivery service_requests-2026-03-" in report
    assert "line 10: Unterminated string" in report


def test_the_refresh_report_lists_a_landing_file_skipped_as_it_left_before_it_was_read(settings, contracts,
                                                                                        monkeypatch):
    """A file gone from the landing area before it was read is skipped with a warning; the
    ingestion step tells the refresh's report too, through its materialization."""
    import dagster as dg

    import ingestion.load as load
    from jisr.refresh import RefreshResult, run_outcome, run_skipped
    from orchestration.assets.ingest import ingest_landing, raw_key
    from orchestration.runlock import RefreshLock
    from tests.test_ingestion import cut_off_jsonl_delivery

    job = dg.Definitions(assets=[ingest_landing], resources={"refresh_lock": RefreshLock()}, jobs=[dg.define_asset_job(
        "ingest", selection=[raw_key("service_requests")], executor_def=dg.in_process_executor)]).resolve_job_def("ingest")
    cut_off_jsonl_delivery(settings.landing_dir, contracts)
    real_hash = load.Ingestor._content_hash

    def content_hash(self, path):
        path.unlink()  # deleted after the refresh found it, before it was read
        return real_hash(self, path)

    monkeypatch.setattr(load.Ingestor, "_content_hash", content_hash)
    with dg.DagsterInstance.ephemeral() as instance:
        run = job.execute_in_process(instance=instance)
    assert run.success
    failures, not_loaded, _ = run_outcome(run.all_events)
    skipped = run_skipped(run.all_events)
    assert failures == [] and not_loaded == [] and len(skipped) == 1
    assert skipped[0].startswith("digital/requests_2026-03.jsonl left the landing area")
    report = RefreshResult(True, run.run_id, settings, skipped=skipped).report()
    assert "Files skipped (nothing of them was loaded or recorded):" in report
    assert f"  {skipped[0]}" in report


def test_the_refresh_report_lists_failed_warn_checks_apart_from_failures(settings):
    """config/quality.yml: a failed warn check is reported in the `jisr refresh` output, and
    does not fail the refresh; a failed blocking check does."""
    import dagster as dg

    from jisr.refresh import RefreshResult, run_outcome

    @dg.asset(key=["raw", "service_requests"])
    def service_requests():
        return 1

    def check(name, passed, severity, description):
        @dg.asset_check(asset=service_requests, name=name)
        def _check():
            return dg.AssetCheckResult(passed=passed, severity=severity, description=description)
        return _check

    stale = "no delivery for\n2025-02, 2025-03"
    checks = [check("freshness", False, dg.AssetCheckSeverity.WARN, stale),
              check("volume", True, dg.AssetCheckSeverity.WARN, "as expected"),
              check("keys", False, dg.AssetCheckSeverity.ERROR, "3 duplicate keys")]
    job = dg.Definitions(assets=[service_requests], asset_checks=checks, jobs=[dg.define_asset_job(
        "j", executor_def=dg.in_process_executor)]).resolve_job_def("j")
    with dg.DagsterInstance.ephemeral() as instance:
        run = job.execute_in_process(instance=instance, raise_on_error=False)
    failures, _, warnings = run_outcome(run.all_events)
    assert failures == ["check keys on raw/service_requests failed"]
    assert warnings == ["check freshness on raw/service_requests: no delivery for 2025-02, 2025-03"]
    report = RefreshResult(True, run.run_id, settings, warnings=warnings).report()
    assert "\nWarnings (failed checks of severity warn" in report
    assert "  - check freshness on raw/service_requests: no delivery for 2025-02, 2025-03" in report
    assert "FAILED" not in report


def test_a_dbt_node_missing_from_the_manifest_fails_with_a_reload_message():
    """dagster-dbt raises KeyError('model.jisr.<name>') for a node its manifest lacks: the
    dbt project changed after the definitions were loaded."""
    import dagster as dg

    from jisr.refresh import run_outcome

    @dg.asset
    def warehouse_dbt():
        raise KeyError("model.jisr.stg_renamed")

    @dg.asset
    def other():
        raise KeyError("region")

    job = dg.Definitions(assets=[warehouse_dbt, other], jobs=[dg.define_asset_job(
        "j", executor_def=dg.in_process_executor)]).resolve_job_def("j")
    with dg.DagsterInstance.ephemeral() as instance:
        run = job.execute_in_process(instance=instance, raise_on_error=False)
    failures, _, _ = run_outcome(run.all_events)
    assert sorted(failures) == [
        "step other: KeyError: 'region'",
        "step warehouse_dbt: the dbt project changed after the Dagster definitions were loaded "
        "(model.jisr.stg_renamed is not in their dbt manifest): reload the code location (UI: Deployment > "
        "Reload) or run the command again"]


def test_a_step_that_fails_with_its_own_message_is_reported_by_that_message():
    """A step of the project that raises dagster's Failure (a dbt build stopped by a test,
    a configuration error, a refused publication) is reported by its description, without
    Dagster's class path before it."""
    import dagster as dg

    from jisr.refresh import run_outcome

    @dg.asset
    def warehouse_dbt():
        raise dg.Failure("dbt build failed, nothing was published:\n    * dbt test t: the row it failed on: x=1")

    job = dg.Definitions(assets=[warehouse_dbt], jobs=[dg.define_asset_job(
        "j", executor_def=dg.in_process_executor)]).resolve_job_def("j")
    with dg.DagsterInstance.ephemeral() as instance:
        run = job.execute_in_process(instance=instance, raise_on_error=False)
    assert run_outcome(run.all_events)[0] == [
        "step warehouse_dbt: dbt build failed, nothing was published:\n    * dbt test t: the row it failed on: x=1"]


def test_generate_refuses_too_few_beneficiaries_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--beneficiaries", "5"])
    assert exit_.value.code == 2 and "--beneficiaries: 5 is below the minimum 100" in capsys.readouterr().err


def test_disclosure_all_lists_every_cell_of_a_finding_one_per_line(settings, tmp_path, capsys, monkeypatch):
    import duckdb

    import quality.disclosure as disclosure

    cells = tuple(f"region_code='0{i}', sex='F' (beneficiaries=2)" for i in range(1, 6))
    found = [disclosure.Violation("marts.mart_coverage", "small_cell", "5 published cells count fewer than 10 people",
                                  examples=disclosure._examples(list(cells)), cells=cells)]
    monkeypatch.setattr(disclosure, "review", lambda con, settings: found)
    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    assert main(["disclosure", "--warehouse", str(path)]) == 1
    assert capsys.readouterr().out.strip().endswith("; ... (5 in all)")
    assert main(["disclosure", "--warehouse", str(path), "--all"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "BLOCKING  marts.mart_coverage: small_cell: 5 published cells count fewer than 10 people: 5 cell(s):",
        *[f"          {cell}" for cell in cells]]


def test_a_refresh_that_failed_before_loading_does_not_say_nothing_was_new(settings, contracts):
    """A run whose ingestion failed (say, the pseudonymisation key does not match the raw
    store's) loaded nothing: its report says the run failed, not that the landing area held
    nothing new (it may hold every file of the month)."""
    from ingestion import store
    from jisr.refresh import RefreshResult

    con = store.connect(settings.store_path)
    store.ensure_schema(con, contracts)
    con.close()
    failed = RefreshResult(False, "run-1", settings, failures=["step ingest_landing: KeyMismatchError: ..."]).report()
    assert "No delivery was loaded by this run (it failed: see below)." in failed
    assert "No new delivery" not in failed and "\nThe refresh FAILED:" in failed
    assert "No new delivery in the landing area" in RefreshResult(True, "run-2", settings).report()


def test_a_refresh_uses_the_dagster_home_the_environment_names(tmp_path, monkeypatch):
    """DAGSTER_HOME set to a folder not made yet (the Configuration table: default
    `$JISR_HOME/dagster`) stopped `jisr refresh` with Dagster's traceback ("$DAGSTER_HOME ... is
    not a directory"), while it prepared `$JISR_HOME/dagster`, which nothing then used. The
    refresh prepares the instance the variable names, with the project's settings."""
    import dagster as dg

    from jisr.refresh import prepare_dagster_home
    from jisr.settings import get_settings

    elsewhere = tmp_path / "elsewhere" / "dagster"
    monkeypatch.setenv("JISR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(elsewhere))
    settings = get_settings()
    assert settings.dagster_home == elsewhere
    prepare_dagster_home(settings)
    assert (elsewhere / "dagster.yaml").is_file() and not (tmp_path / "home" / "dagster").exists()
    with dg.DagsterInstance.get() as instance:
        assert instance.root_directory == str(elsewhere)
    monkeypatch.delenv("DAGSTER_HOME")
    assert get_settings().dagster_home == tmp_path / "home" / "dagster"


def test_the_refresh_report_names_dbt_s_output_only_when_dbt_wrote_some(settings, tmp_path):
    """A refresh that stopped before dbt ran (an ingestion error) pointed to dbt's output in a
    file left empty."""
    from jisr.refresh import RefreshResult

    log = tmp_path / "refresh.log"
    log.write_text("")
    result = RefreshResult(False, "run-1", settings, failures=["step ingest_landing: failed"], tool_log=log)
    assert "dbt's output" not in result.report()
    log.write_text("1 of 400 START sql table model ...\n")
    assert f"dbt's output (every model and test): {log}" in result.report()
