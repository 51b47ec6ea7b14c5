"""Audit checks (quality/checks.py) and their configuration, each on a hand-made warehouse."""

import types
from datetime import date, datetime

import duckdb
import pytest
import yaml

from ingestion import store
from quality import disclosure
from quality.disclosure import Violation
from quality.checks import (CheckResult, blocking_failures, check_freshness, check_identifiers, check_person_level,
                            check_reconciliation, check_references, check_row_counts, check_small_cells)
from quality.config import QualityConfigError, config_for, parse_config


@pytest.fixture
def cfg(settings):
    return config_for(settings)


def with_params(cfg, check, **params):
    data = yaml.safe_load(yaml.safe_dump(cfg.raw))
    data["checks"][check].update(params)
    return parse_config(data)


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute("create schema marts; create schema impact; create schema detail")
    yield con
    con.close()


def attach_store(con, settings, contracts, deliveries=()):
    """A raw store with the given meta.deliveries rows (source, partner, batch, status)."""
    s = store.connect(settings.store_path)
    store.ensure_schema(s, contracts)
    for i, (source, partner, batch, status) in enumerate(deliveries):
        s.execute("insert into meta.deliveries (delivery_id, source, partner, file_name, batch, content_hash, "
                  "loaded_at, status, run_id) values (?, ?, ?, ?, ?, ?, ?, ?, 'r')",
                  [f"d{i}", source, partner, f"{source}_{batch}.csv", batch, f"h{i}", datetime(2025, 1, 1), status])
    s.close()
    con.execute(f"attach '{settings.store_path}' as ingest (read_only)")


# --- referential integrity -------------------------------------------------------------------------


def test_references_flag_fact_keys_missing_from_their_dimension(con, cfg):
    """Facts and dimensions are found in the published and the internal schema alike."""
    con.execute("create table marts.dim_programmes as select * from (values ('P1'), ('P2')) t(programme_code)")
    con.execute("create table detail.dim_beneficiaries as select * from (values (1), (2)) t(person_key)")
    con.execute("create table detail.fct_payments as select * from (values (1, 'P1'), (2, 'P9'), (3, 'P9'), "
                "(null, 'P2')) t(person_key, programme_code)")
    con.execute("create table marts.fct_visits as select * from (values ('P1'), ('P3')) t(programme_code)")
    con.execute("create table marts.mart_summary as select 'P404' as programme_code")  # not a fact: not checked
    results = check_references(con, cfg)
    assert [r.target for r in results] == ["detail.fct_payments", "marts.fct_visits"]
    r = results[0]
    assert not r.passed and r.severity == "block"
    assert r.metadata["orphans"]["programme_code -> marts.dim_programmes.programme_code"] == {"rows": 2,
                                                                                          "examples": ["P9"]}
    assert r.metadata["orphans"]["person_key -> detail.dim_beneficiaries.person_key"]["rows"] == 1
    assert "2 row(s) with programme_code -> marts.dim_programmes.programme_code missing" in r.description
    assert results[1].metadata["orphans"] == {"programme_code -> marts.dim_programmes.programme_code":
                                              {"rows": 1, "examples": ["P3"]}}


def test_references_pass_when_every_key_resolves_and_honour_ignore(con, cfg):
    con.execute("create table marts.dim_programmes as select 'P1' as programme_code")
    con.execute("create table marts.fct_enrolments as select 'P1' as programme_code")
    con.execute("create table marts.fct_legacy as select 'OLD' as programme_code")
    cfg = with_params(cfg, "references_resolve_to_dimensions", ignore=["marts.fct_legacy.programme_code"])
    results = check_references(con, cfg)
    assert [(r.target, r.passed) for r in results] == [("marts.fct_enrolments", True)]


# --- reconciliation ------------------------------------------------------------------------------


def _store_with_payments(con, settings, contracts, amounts):
    attach_store(con, settings, contracts)
    con.execute("detach ingest")
    s = duckdb.connect(str(settings.store_path))
    for i, (amount, current) in enumerate(amounts):
        s.execute("insert into raw.payments (payment_id, amount_mad, _is_current) values (?, ?, ?)",
                  [f"P{i}", amount, current])
    s.close()
    con.execute(f"attach '{settings.store_path}' as ingest (read_only)")


def test_reconciliation_compares_raw_and_mart_totals(con, settings, contracts, cfg):
    _store_with_payments(con, settings, contracts, [(100, True), (250.5, True), (999, False)])
    cfg = with_params(cfg, "totals_reconcile_with_raw", reconciliations=[
        {"name": "payments_total_mad", "table": "fct_payments", "tolerance": 0.01,
         "raw": "select sum(amount_mad) from ingest.raw.payments where _is_current",
         "mart": "select sum(amount_mad) from marts.fct_payments"}])
    con.execute("create table marts.fct_payments as select 350.5::decimal(18,2) as amount_mad")
    ok = check_reconciliation(con, cfg)[0]
    assert ok.passed and ok.target == "marts.fct_payments" and ok.metadata["raw"] == 350.5
    con.execute("create or replace table marts.fct_payments as select 100.0::decimal(18,2) as amount_mad")
    bad = check_reconciliation(con, cfg)[0]
    assert not bad.passed and bad.metadata["difference"] == pytest.approx(-250.5)
    assert "raw 350.50 but warehouse 100.00" in bad.description


def test_reconciliation_that_cannot_run_is_a_failure(con, settings, contracts, cfg):
    cfg = with_params(cfg, "totals_reconcile_with_raw", reconciliations=[
        {"name": "people", "table": "dim_beneficiaries", "raw": "select count(*) from ingest.raw.beneficiaries",
         "mart": "select count(*) from marts.dim_beneficiaries"}])
    no_store = check_reconciliation(con, cfg)[0]
    assert not no_store.passed and "raw store is not available" in no_store.description
    attach_store(con, settings, contracts)
    missing_table = check_reconciliation(con, cfg)[0]  # marts.dim_beneficiaries does not exist
    assert not missing_table.passed and "could not be computed" in missing_table.description


# --- row counts ----------------------------------------------------------------------------------------


def test_row_counts_fail_on_a_drop_beyond_the_share_or_a_lost_table(cfg):
    cfg = with_params(cfg, "row_counts_within_tolerance", max_drop_share=0.2, min_rows=10)
    previous = {"marts.a": 1000, "marts.b": 1000, "marts.c": 5, "marts.gone": 50}
    current = {"marts.a": 810, "marts.b": 700, "marts.c": 0, "marts.new": 3}
    r = check_row_counts(current, previous, cfg, "run-1")[0]
    assert not r.passed
    assert r.metadata["problems"] == ["marts.b dropped from 1000 to 700 rows (30% > 20%)",
                                      "marts.gone disappeared (50 rows before)"]


def test_row_counts_let_a_withdrawn_table_disappear(cfg):
    cfg = with_params(cfg, "row_counts_within_tolerance", withdrawn=["marts.fct_payments"])
    previous = {"marts.a": 100, "marts.fct_payments": 5000, "marts.fct_loans": 300}
    r = check_row_counts({"marts.a": 100}, previous, cfg, "run-1")[0]
    assert not r.passed and r.metadata["problems"] == ["marts.fct_loans disappeared (300 rows before)"]
    assert check_row_counts({"marts.a": 100, "marts.fct_loans": 300}, previous, cfg, "run-1")[0].passed


def test_person_level_check_flags_tables_keyed_by_a_pseudonym(con, cfg):
    con.execute("create table marts.mart_cells as select 'R1' as region_code, 12 as people")
    con.execute("create table marts.fct_payments as select 1::bigint as person_key, 10 as amount")
    con.execute("create table marts.mart_panel as select 'U1' as unit_id, 2::bigint as household_key")
    con.execute("create table detail.dim_beneficiaries as select 1::bigint as person_key")  # internal: not checked
    results = {r.target: r for r in check_person_level(con, cfg, ["marts", "impact"])}
    assert set(results) == {"marts.mart_cells", "marts.fct_payments", "marts.mart_panel"}
    assert results["marts.mart_cells"].passed
    assert not results["marts.fct_payments"].passed and results["marts.fct_payments"].blocks
    assert results["marts.mart_panel"].metadata["key_columns"] == ["unit_id", "household_key"]
    assert "internal schema detail" in results["marts.mart_panel"].description


def test_row_counts_pass_on_growth_and_on_the_first_publication(cfg):
    assert check_row_counts({"marts.a": 5}, None, cfg)[0].passed
    assert check_row_counts({"marts.a": 2000}, {"marts.a": 1000}, cfg, "run-1")[0].passed


# --- freshness -----------------------------------------------------------------------------------------


def test_freshness_measures_each_source_against_the_newest_delivered_month(con, settings, contracts, cfg):
    attach_store(con, settings, contracts, [
        ("payments", "msisf", "2025-06", "loaded"), ("payments", "msisf", "2025-05", "superseded"),
        ("beneficiaries", "msisf", "2025-03", "loaded"), ("loans", "cdg_finance", "2025-05", "loaded"),
        ("loans", "cdg_finance", "2025-07", "rejected"),
    ])
    cfg = with_params(cfg, "partner_deliveries_are_fresh", max_age_days=45, exclude=[],
                      max_age_days_by_partner={"cdg_finance": 10})
    wanted = {s: contracts[s] for s in ("payments", "beneficiaries", "loans", "ventures")}
    results = {r.target: r for r in check_freshness(con, cfg, wanted)}
    assert results["payments"].passed and results["payments"].metadata["age_days"] == 0
    assert not results["beneficiaries"].passed and results["beneficiaries"].metadata["age_days"] == 91
    assert not results["loans"].passed and results["loans"].metadata["age_days"] == 30  # 30 > 10 for cdg_finance
    assert not results["ventures"].passed and "no monthly delivery yet" in results["ventures"].description
    assert all(r.severity == "warn" for r in results.values())


def test_freshness_against_today_and_excluded_sources(con, settings, contracts, cfg):
    attach_store(con, settings, contracts, [("payments", "msisf", "2025-06", "loaded")])
    cfg = with_params(cfg, "partner_deliveries_are_fresh", reference="now", exclude=["programmes"])
    results = check_freshness(con, cfg, {s: contracts[s] for s in ("payments", "programmes")}, today=date(2025, 7, 10))
    assert [(r.target, r.passed, r.metadata["age_days"]) for r in results] == [("payments", True, 10)]


def test_a_month_far_smaller_than_the_months_before_it_is_reported(con, settings, contracts, cfg):
    """A payments file of 300 rows for a month of about 1,800 (an export cut short, the first
    part of a month delivered in pieces) loaded as a month of its own: no gate compared it
    with anything, and the month's transfers were published a sixth of their size."""
    from quality.checks import check_monthly_volume

    months = [f"2025-{m:02d}" for m in range(1, 10)]
    attach_store(con, settings, contracts, [("payments", "msisf", m, "loaded") for m in months]
                 + [("loans", "cdg_finance", m, "loaded") for m in months]
                 + [("service_requests", "digital", m, "loaded") for m in months])
    con.execute("detach ingest")
    with duckdb.connect(str(settings.store_path)) as s:
        s.execute("update meta.deliveries set rows_loaded = case when source = 'loans' then 20 "
                  "when batch = '2025-08' and source = 'payments' then 300 else 1800 end")
    con.execute(f"attach '{settings.store_path}' as ingest (read_only)")
    results = {r.target: r for r in check_monthly_volume(con, cfg, {s: contracts[s] for s in (
        "payments", "loans", "service_requests", "ventures")})}
    assert set(results) == {"payments", "loans", "service_requests"}  # ventures: excluded in config/quality.yml
    failed = results["payments"]
    assert not failed.passed and failed.severity == "warn"
    assert failed.description.startswith("payments (msisf): 2025-08 has 300 rows loaded, under 50% of the median "
                                         "of the 6 months before it (1,800)")
    assert [m["month"] for m in failed.metadata["months"]] == ["2025-08"]  # 2025-09 compared with 2025-08 in its history
    assert results["service_requests"].passed and results["service_requests"].metadata["months_compared"] == 6
    assert results["loans"].passed and results["loans"].metadata["months_compared"] == 0  # 20 rows: under min_rows
    with pytest.raises(QualityConfigError, match="min_share must be between 0 and 1"):
        parse_config({"checks": {"monthly_volume_within_history": {"min_share": 2}}})


# --- direct identifiers --------------------------------------------------------------------------------


def test_identifiers_flag_named_columns_and_identifier_shaped_values(con, cfg):
    con.execute("create table marts.dim_people as select 1 as person_key, 'Amina' as first_name, "
                "'x' as telephone, 42 as first_name_fr_key")
    con.execute("create table marts.fct_events as select 'AB123456' as note, '0612345678' as contact_note, "
                "'DSD-01' as programme_code, 'Aide sociale' as programme_name, "
                "'missing column(s); found columns: ''AB123456'', ''Amina''' as reason, "
                "'registre_2025-01.csv: 0612345678 rows' as other_note, 'REF-AB123456X' as code_in_code, "
                "'found columns: ''telephone'', ''date_inscription_rsuAB123456'', ''Samira''' as glued, "
                "'XAB123456' as longer_code")
    con.execute("create table impact.impact_estimates as select 'E123' as label")
    results = {r.target: r for r in check_identifiers(con, cfg, ["marts", "impact"])}
    people = results["marts.dim_people"]
    assert not people.passed
    assert people.metadata["findings"] == ["column first_name is named like a direct identifier",
                                           "column telephone is named like a direct identifier"]
    events = results["marts.fct_events"]
    # whole values, and identifiers inside a longer text (a rejection reason quoting a record)
    assert events.metadata["findings"] == ["1 value(s) of column note are or contain text shaped like a cin",
                                           "1 value(s) of column contact_note are or contain text shaped like a phone",
                                           "1 value(s) of column reason are or contain text shaped like a cin",
                                           "1 value(s) of column other_note are or contain text shaped like a phone",
                                           # a header line run into a record glues a header to the CIN after it
                                           "1 value(s) of column glued are or contain text shaped like a cin"]
    assert results["impact.impact_estimates"].passed


def test_identifiers_allowed_columns_are_exempt(con, cfg):
    con.execute("create table marts.fct_codes as select 'AB123456' as legacy_code")
    cfg = with_params(cfg, "no_direct_identifiers_published", allowed_columns=["marts.fct_codes.legacy_code"])
    assert check_identifiers(con, cfg, ["marts"])[0].passed
    cfg = with_params(cfg, "no_direct_identifiers_published", allowed_columns=["marts.*.legacy_*"])
    assert check_identifiers(con, cfg, ["marts"])[0].passed
    cfg = with_params(cfg, "no_direct_identifiers_published", allowed_columns=["impact.*.legacy_code"])
    assert not check_identifiers(con, cfg, ["marts"])[0].passed


def test_a_code_version_shaped_like_a_phone_number_does_not_block_publication(con, cfg):
    # a commit hash whose last ten characters are digits starting 06, after a letter
    con.execute("create table impact.impact_estimates as select 'e3b0ca0612345678' as code_version, "
                "'e3b0ca0612345678' as label")
    result = check_identifiers(con, cfg, ["impact"])[0]
    assert result.metadata["findings"] == ["1 value(s) of column label are or contain text shaped like a phone"]


# --- small cells ---------------------------------------------------------------------------------------


def test_small_cells_error_is_a_failure(con, settings, cfg, monkeypatch):
    def broken(con, settings):
        raise RuntimeError("config/disclosure.yml is invalid")

    monkeypatch.setattr(disclosure, "review", broken)
    r = check_small_cells(con, settings, cfg)[0]
    assert not r.passed and "errored: config/disclosure.yml is invalid" in r.description


def test_small_cells_violations_fail_and_none_pass(con, settings, cfg, monkeypatch):
    found: list = []
    monkeypatch.setattr(disclosure, "review", lambda con, settings: found)
    assert check_small_cells(con, settings, cfg)[0].passed
    found.append(Violation("marts.mart_coverage", "small_cell", "1 published cells count fewer than 10 people"))
    r = check_small_cells(con, settings, cfg)[0]
    assert not r.passed and r.blocks
    assert r.metadata["violations"] == ["marts.mart_coverage: small_cell: 1 published cells count fewer than 10 people"]
    assert "1 disclosure violation(s): marts.mart_coverage: small_cell" in r.description


def test_small_cells_warnings_are_reported_without_blocking(con, settings, cfg, monkeypatch):
    found = [Violation("marts.mart_sparse", "determined_by_totals", "1 suppressed cells are determined by "
                       "the line totals alone", blocking=False, examples="region_code='01', sex='M'"),
             Violation("marts.mart_new", "unconfigured_table", "published with breakdown columns but neither "
                       "configured nor exempt", blocking=False)]
    monkeypatch.setattr(disclosure, "review", lambda con, settings: found)
    r = check_small_cells(con, settings, cfg)[0]
    assert r.passed and "2 warning(s), not blocking" in r.description
    assert r.metadata["warnings"] == [v.brief for v in found]
    # the result goes into the publication's log, which evaluators read: not the cells concerned
    assert "region_code='01'" not in r.description + str(r.metadata)
    found.insert(0, Violation("marts.mart_coverage", "small_cell", "1 published cells count fewer than 10 people"))
    r = check_small_cells(con, settings, cfg)[0]
    assert not r.passed and r.blocks and "marts.mart_coverage: small_cell" in r.metadata["violations"][0]
    assert len(r.metadata["warnings"]) == 2


def test_small_cells_set_to_warn_publish_no_cell_in_the_log(con, settings, cfg, monkeypatch):
    """With the check set to warn, a violation does not stop the publication and its result
    goes into the published log: the cells (and their small counts) stay out of it."""
    found = [Violation("marts.mart_coverage", "small_cell", "1 published cells count fewer than 10 people",
                       examples="region_code='01', sex='F' (beneficiaries=3)")]
    monkeypatch.setattr(disclosure, "review", lambda con, settings: found)
    r = check_small_cells(con, settings, with_params(cfg, "no_small_cells_published", severity="warn"))[0]
    assert not r.passed and not r.blocks
    assert "beneficiaries=3" not in r.description + str(r.metadata)
    assert r.metadata["violations"] == ["marts.mart_coverage: small_cell: 1 published cells count fewer than 10 people"]
    r = check_small_cells(con, settings, cfg)[0]  # blocking: never published, the cells help who fixes it
    assert r.blocks and "beneficiaries=3" in r.metadata["violations"][0]


def test_small_cells_checks_a_real_serving_file(tmp_path, cfg):
    """The check on a protected table and on the same table with a small cell published again."""
    from tests.test_disclosure import CONFIG, COUNTS, coverage_rows, make_warehouse

    serving = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    disclosure.protect(serving, config=CONFIG)
    (tmp_path / disclosure.CONFIG_FILE).write_text(yaml.safe_dump({**CONFIG, "exempt_tables": ["marts.mart_other"]}))
    settings = types.SimpleNamespace(config_dir=tmp_path)  # what review() reads of the settings
    r = check_small_cells(serving, settings, cfg)[0]
    assert r.passed and r.metadata == {"violations": []}
    serving.execute("update marts.mart_coverage set beneficiaries = 3, is_suppressed = false "
                    "where region_code = '01' and sex = 'F'")
    r = check_small_cells(serving, settings, cfg)[0]
    assert not r.passed and "small_cell" in r.description


# --- configuration ---------------------------------------------------------------------------------------


def test_config_severities_default_to_block_and_are_validated(cfg):
    assert cfg.severity("partner_deliveries_are_fresh") == "warn"
    assert parse_config({}).severity("no_direct_identifiers_published") == "block"
    with pytest.raises(QualityConfigError, match="severity must be one of"):
        parse_config({"checks": {"no_small_cells_published": {"severity": "fatal"}}})
    with pytest.raises(QualityConfigError, match="unknown checks"):
        parse_config({"checks": {"no_typos": {"severity": "warn"}}})
    with pytest.raises(QualityConfigError, match="history_keep"):
        parse_config({"publish": {"history_keep": 0}})


def test_config_deliveries_set_how_much_smaller_a_file_may_be_than_the_one_it_replaces(settings, monkeypatch):
    """The ``deliveries`` section reaches the ingestion of a refresh; a hash that is not a
    SHA-256 is refused (a prefix would accept any file that shares it)."""
    import quality.config
    from ingestion.contracts import VolumeRule
    from orchestration.assets.ingest import run_ingestion

    assert config_for(settings).deliveries == VolumeRule(max_drop_share=0.2, min_rows=20)
    sha = "ab" * 32
    rule = parse_config({"deliveries": {"max_drop_share": 0.5, "min_rows": 3, "accept_smaller": [sha.upper()]}}).deliveries
    assert rule == VolumeRule(max_drop_share=0.5, min_rows=3, accept_smaller=frozenset({sha}))
    with pytest.raises(QualityConfigError, match="is not a SHA-256"):
        parse_config({"deliveries": {"accept_smaller": [sha[:12]]}})
    with pytest.raises(QualityConfigError, match="unknown keys"):
        parse_config({"deliveries": {"max_drop": 0.5}})
    with pytest.raises(QualityConfigError, match="max_drop_share must be between 0 and 1"):
        parse_config({"deliveries": {"max_drop_share": 20}})
    seen = []
    monkeypatch.setattr(quality.config, "config_for", lambda s: parse_config({"deliveries": {"min_rows": 3}}))
    monkeypatch.setattr("ingestion.load.Ingestor.ingest", lambda self, landing, sources=None: seen.append(self.volume))
    run_ingestion(settings, "run")
    assert seen == [VolumeRule(min_rows=3)]


def test_blocking_failures_are_failed_block_checks_only():
    results = [CheckResult("a", False, "block", "x"), CheckResult("b", False, "warn", "y"),
               CheckResult("c", True, "block", "z")]
    assert [r.check for r in blocking_failures(results)] == ["a"]


def test_the_quality_report_records_what_stopped_a_dbt_build(settings, tmp_path):
    """A run stopped by a dbt test says so in its quality report (written before the build by
    the delivery checks): the failing test blocks, a warning warns, skipped nodes are counted."""
    import json

    from quality.checks import dbt_build_results
    from quality.report import write_report

    def result(uid, status, message=None):
        return {"unique_id": uid, "status": status, "message": message, "failures": 1 if status == "fail" else 0}

    path = tmp_path / "run_results.json"
    path.write_text(json.dumps({"results": [
        result("model.jisr.fct_payments", "success", "OK"),
        result("test.jisr.unique_stg_msisf__payments_payment_id.f8f949e537", "fail",
               "Got 1892 results, configured to fail if != 0"),
        result("test.jisr.accepted_values_fct_payments_channel.1", "warn", "Got 3 results, configured to warn if != 0"),
        result("test.jisr.not_null_fct_payments.2", "pass"),
        result("model.jisr.mart_transfers_monthly", "skipped"),
        result("model.jisr.dim_dates", "error", "Conversion Error: date field value out of range"),
    ]}))
    found = {(r.check, r.passed, r.severity) for r in dbt_build_results(path)}
    assert found == {("dbt test unique_stg_msisf__payments_payment_id", False, "block"),
                     ("dbt test accepted_values_fct_payments_channel", False, "warn"),
                     ("dbt model dim_dates", False, "block"),
                     ("dbt build skipped nodes", False, "warn")}
    write_report(settings, "run-1", [CheckResult("freshness", True, "warn", "fresh")])  # the delivery checks
    page = write_report(settings, "run-1", dbt_build_results(path)).read_text()
    assert "Audit: BLOCKED: publication refused (5 results, 4 failing, 2 blocking)" in page
    assert "Got 1892 results, configured to fail if != 0" in page

    # with the build warehouse, a failing test gives the first rows it failed on
    import duckdb

    build = tmp_path / "build.duckdb"
    with duckdb.connect(str(build)) as con:
        con.execute("create schema detail; create table detail.fct_x as select range as x, 'd1' as _delivery_id "
                    "from range(1, 8) order by range desc")
    settings.store_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.store_path)) as con:
        con.execute("create schema meta; create table meta.deliveries (delivery_id varchar, file_name varchar); "
                    "insert into meta.deliveries values ('d1', 'x_2025-01.csv')")
    rows = [dict(result("test.jisr.assert_x.1", "fail", "Got 7 results"), failures=7,
                 compiled_code='-- x is never positive\nselect x, _delivery_id from "build"."detail"."fct_x"\n-- end'),
            dict(result("test.jisr.assert_y.1", "warn", "Got 1 result"), compiled_code="select * from nowhere")]
    path.write_text(json.dumps({"results": rows}))
    found = {r.check: r for r in dbt_build_results(path, warehouse=build, store=settings.store_path)}
    assert found["dbt test assert_x"].description == (
        "dbt test fail: Got 7 results; the first 5 of the 7 rows it failed on: "
        + "; ".join(f"x={i}, _delivery_id=d1, _file_name=x_2025-01.csv" for i in range(1, 6)))
    assert len(found["dbt test assert_x"].metadata["rows"]) == 5
    assert found["dbt test assert_y"].description.startswith(
        "dbt test warn: Got 1 result (its rows could not be read again: Catalog Error")
    assert not found["dbt test assert_y"].blocks

    # with the build's manifest, a failing test also says what it checks
    manifest = {"nodes": {"test.jisr.assert_x.1": {"name": "assert_x", "raw_code": "-- x is never positive\nselect x"},
                          "test.jisr.assert_y.1": {"name": "assert_y", "test_metadata": {"name": "unique"},
                                                   "column_name": "y", "config": {"severity": "warn"}}}}
    found = {r.check: r for r in dbt_build_results(path, manifest=manifest)}
    assert found["dbt test assert_x"].metadata == {
        "checks": "x is never positive (dbt test assert_x; blocks publication when it fails)"}
    assert found["dbt test assert_y"].metadata["checks"] == "y is unique (dbt test assert_y; warns when it fails)"
    assert found["dbt test assert_x"].description == "dbt test fail: Got 7 results"  # no rows read: no warehouse

    path.write_text(json.dumps({"results": [result("test.jisr.not_null_fct_payments.2", "pass"),
                                            result("model.jisr.fct_payments", "success")]}))
    assert [(r.check, r.passed) for r in dbt_build_results(path)] == [("dbt tests", True)]
    assert dbt_build_results(tmp_path / "missing.json") == []


def test_config_deliveries_min_rows_is_a_count():
    with pytest.raises(QualityConfigError, match="min_rows must be a whole number, 0 or more"):
        parse_config({"deliveries": {"min_rows": -1}})
    with pytest.raises(QualityConfigError, match="min_rows must be a whole number, 0 or more"):
        parse_config({"deliveries": {"min_rows": 2.5}})
    assert parse_config({"deliveries": {"min_rows": 0}}).deliveries.min_rows == 0


def test_a_failing_test_whose_count_is_not_its_rows_shows_all_its_rows_as_all(tmp_path):
    """not_null_columns fails with one row per column holding nulls, and dbt counts the null
    cells (its fail_calc): 7 nulls in one column are one row, all of it shown, not 'the first
    1 of the 7 rows'."""
    import json

    from quality.checks import dbt_build_results

    build = tmp_path / "build.duckdb"
    with duckdb.connect(str(build)) as con:
        con.execute("create schema staging; create table staging.stg_x as "
                    "select case when range < 7 then null else range end as loan_id, 'k' as person_key from range(20)")
    code = ("with counted as (select sum(case when loan_id is null then 1 else 0 end) as loan_id, "
            "sum(case when person_key is null then 1 else 0 end) as person_key from \"build\".\"staging\".\"stg_x\")\n"
            "select 'loan_id' as column_name, loan_id as null_rows from counted where loan_id > 0\nunion all\n"
            "select 'person_key' as column_name, person_key as null_rows from counted where person_key > 0")
    path = tmp_path / "run_results.json"
    path.write_text(json.dumps({"results": [{"unique_id": "test.jisr.not_null_columns_stg_x.1", "status": "fail",
                                             "message": "Got 7 results, configured to fail if != 0", "failures": 7,
                                             "compiled_code": code}]}))
    [failed] = dbt_build_results(path, warehouse=build)
    assert failed.description == ("dbt test fail: Got 7 results, configured to fail if != 0; the row it failed on: "
                                  "column_name=loan_id, null_rows=7")
