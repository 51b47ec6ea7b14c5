"""Write-audit-publish: the serving warehouse only ever changes to a complete, audited file;
readers keep a consistent snapshot; a killed publish changes nothing; rollback; locks."""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import jisr.publish as publish_mod
import quality.checks as checks_mod
from ingestion.load import Ingestor
from jisr.lock import LockBusy, refresh_lock
from jisr.publish import PublishError, publish, publish_log, rollback
from jisr.settings import PROJECT_DIR, Settings
from quality import disclosure
from quality.checks import ChecksFailed
from quality.config import config_for, parse_config
from tests.conftest import PROGRAMME, TEST_KEY, enrolment, payment, person, write_delivery

# --- helpers shared with the other quality tests ---------------------------------------------------


def ingest_sample(settings, contracts, n=12, months=("2025-01",), validators=(), run_id="ingest-run"):
    """A small, valid delivery of the msisf partner, ingested into the raw store."""
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                   [person(i) for i in range(n)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv",
                   [enrolment(i) for i in range(n)])
    for month in months:
        write_delivery(settings.landing_dir, contracts["payments"], f"paiements_{month}.csv",
                       [payment(i, month) for i in range(n)])
    return Ingestor(settings.store_path, contracts, TEST_KEY, seeds_dir=settings.seeds_dir,
                    rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir, run_id=run_id,
                    code_version="test", validators=validators).ingest(settings.landing_dir)


def make_build(settings, *, payments_scale=1.0, estimate=1.5, extra_sql=()):
    """A hand-made build warehouse over the raw store: person-level tables in the internal
    schema detail, a published dimension and aggregate, an impact table, a view."""
    settings.build_path.parent.mkdir(parents=True, exist_ok=True)
    if settings.build_path.exists():
        settings.build_path.unlink()
    con = duckdb.connect(str(settings.build_path))
    con.execute(f"attach '{settings.store_path}' as ingest (read_only)")
    con.execute("create schema marts; create schema impact; create schema staging; create schema detail")
    con.execute("create table marts.dim_programmes as select programme_code, name_fr as programme_name "
                "from ingest.raw.programmes where _is_current")
    con.execute("create table detail.dim_beneficiaries as select person_key, household_key, sex, region_code, "
                "true as is_current from ingest.raw.beneficiaries where _is_current")
    con.execute(f"create table detail.fct_payments as select payment_id, person_key, programme_code, payment_month, "
                f"amount_mad * {payments_scale} as amount_mad from ingest.raw.payments where _is_current")
    con.execute("create table marts.mart_payments as select programme_code, payment_month, count(*) as payments, "
                "sum(amount_mad) as amount_mad from detail.fct_payments group by all")
    con.execute(f"create table impact.impact_estimates as select 'DSD-01' as programme_code, {estimate} as estimate")
    con.execute("create view staging.stg_anything as select 1 as x")
    for sql in extra_sql:
        con.execute(sql)
    con.close()
    publish_mod.record_build_deliveries(settings, publish_mod.current_deliveries(settings))  # as the dbt step does


def stub_disclosure(monkeypatch, violations=()):
    """Replace disclosure control (tested on its own, tests/test_disclosure.py) by a stub:
    protect does nothing, review finds ``violations`` (blocking, one per text)."""
    calls = []

    def protect(con, settings, config=None, previous=None, previous_counts=None, others=()):
        calls.append("protect")
        others = [(kind, name) for file, kept in others for kind, name in (("other", file), ("its counts", kept))]
        for kind, name in (("previous", previous), ("counts", previous_counts), *others):
            if name is not None:  # the file served now and its counts, readable under those names
                tables = con.execute("select count(*) from duckdb_tables() where database_name = ?", [name]).fetchone()
                calls.append(f"{kind}: {name} ({'with' if tables[0] else 'without'} tables)")
        return []

    def review(con, settings):
        calls.append("check")
        return [disclosure.Violation("marts", "small_cell", v) for v in violations]

    monkeypatch.setattr(disclosure, "protect", protect)
    monkeypatch.setattr(disclosure, "review", review)
    return calls


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def serving_value(settings, sql="select estimate from impact.impact_estimates"):
    con = duckdb.connect(str(settings.serving_path), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


DRIVER_STUB = """
import sys, time
from pathlib import Path
import jisr.publish as P, quality.disclosure as D
from jisr.settings import Settings
D.protect = D.review = lambda con, settings, config=None, previous=None, previous_counts=None, others=(): []
"""


@pytest.fixture
def published(settings, contracts, monkeypatch):
    """A store, a build and a first publication (run-1)."""
    stub_disclosure(monkeypatch)
    ingest_sample(settings, contracts)
    make_build(settings)
    publish(settings, "run-1", "v1")
    return settings


# --- publish -----------------------------------------------------------------------------------------


def test_publish_copies_published_schemas_as_tables_with_a_publish_log(settings, contracts, monkeypatch):
    calls = stub_disclosure(monkeypatch)
    ingest_sample(settings, contracts)
    make_build(settings)
    result = publish(settings, "run-1", "v1")
    assert result.serving_path == settings.serving_path and result.archived_path is None
    con = duckdb.connect(str(settings.serving_path), read_only=True)
    tables = set(con.execute("select schema_name || '.' || table_name from duckdb_tables()").fetchall())
    assert {(t,) for t in ("marts.dim_programmes", "marts.mart_payments",
                           "impact.impact_estimates", "meta.publish_log")} == tables  # detail stays internal
    assert con.execute("select count(*) from duckdb_views() where not internal").fetchone()[0] == 0
    log = con.execute("select event, run_id, code_version, deliveries, delivery_count, check_results, checks_passed, "
                      "table_row_counts from meta.publish_log").fetchall()
    con.close()
    assert len(log) == 1
    event, run_id, code_version, deliveries, count, checks, passed, counts = log[0]
    assert (event, run_id, code_version, passed) == ("publish", "run-1", "v1", True)
    store = duckdb.connect(str(settings.store_path), read_only=True)
    expected = store.execute("select delivery_id, content_hash from meta.deliveries where status = 'loaded'").fetchall()
    store.close()
    assert count == len(expected) == 4
    assert {(d["delivery_id"], d["content_hash"]) for d in json.loads(deliveries)} == set(expected)
    assert json.loads(counts) == {"marts.dim_programmes": 1, "marts.mart_payments": 1, "impact.impact_estimates": 1}
    audit = json.loads(checks)["audit"]["checks"]
    assert {c["check"] for c in audit} >= {"totals_reconcile_with_raw", "references_resolve_to_dimensions",
                                           "no_direct_identifiers_published", "no_person_level_data_published",
                                           "no_small_cells_published"}
    # the warehouse checks read the internal tables of the build warehouse
    assert {c["target"] for c in audit if c["check"] == "totals_reconcile_with_raw"} == {
        "detail.fct_payments", "detail.dim_beneficiaries"}
    assert {c["target"] for c in audit if c["check"] == "references_resolve_to_dimensions"} == {"detail.fct_payments"}
    assert calls.count("protect") == 1 and calls.count("check") == 1
    assert not list(settings.serving_path.parent.glob(".candidate-*"))


def test_publish_serving_file_is_read_only_for_consumers(published):
    assert published.serving_path.stat().st_mode & 0o777 == 0o444
    assert serving_value(published) == 1.5


def test_publish_keeps_earlier_log_rows_and_previous_files(published, monkeypatch):
    make_build(published, estimate=2.5)
    calls = stub_disclosure(monkeypatch)
    result = publish(published, "run-2", "v2")
    # disclosure control saw the file served until then (it avoids hiding what that published)
    assert calls[:2] == ["protect", "previous: previous_serving (with tables)"]
    assert serving_value(published) == 2.5
    assert [r["run_id"] for r in publish_log(published)] == ["run-2", "run-1"]
    assert result.archived_path is not None and result.archived_path.parent == published.history_dir
    con = duckdb.connect(str(result.archived_path), read_only=True)
    assert con.execute("select estimate from impact.impact_estimates").fetchone()[0] == 1.5
    con.close()


def test_publish_prunes_history_to_the_configured_number(published):
    data = config_for(published).raw
    data["publish"]["history_keep"] = 2
    cfg = parse_config(data)
    for i in range(2, 6):
        make_build(published, estimate=float(i))
        publish(published, f"run-{i}", "v", cfg=cfg)
    files = publish_mod.history_files(published)
    assert [f.name.rsplit("-", 2)[-2:] for f in files] == [["run", "3.duckdb"], ["run", "4.duckdb"]]


COSTS_MART = ("create table marts.mart_programme_costs as select programme_code, 40 as beneficiaries_reached, "
              "{paid} as people_paid, 100.0 as transfers_paid_mad, 2.5 as cost_per_beneficiary_mad, 1000.0 as budget_mad "
              "from ingest.raw.programmes where _is_current")


def test_publish_keeps_each_publications_counts_before_suppression_for_the_next_one(published, monkeypatch):
    """Small counts a publication hides stay internal (the raw store's folder), one file per
    publication kept for rollback; the next publication sees the served one's (it must not
    give back its small cells), and they go when their publication leaves the history."""
    data = config_for(published).raw
    data["publish"]["history_keep"] = 2
    cfg = parse_config(data)
    calls = stub_disclosure(monkeypatch)
    for i, paid in enumerate([3, 4, 5, 6], start=2):
        make_build(published, estimate=float(i), extra_sql=[COSTS_MART.format(paid=paid)])
        calls.clear()
        publish(published, f"run-{i}", "v", cfg=cfg)
        kept = duckdb.connect(str(publish_mod.counts_path(published, f"run-{i}")), read_only=True)
        assert kept.execute("select distinct people_paid from marts.mart_programme_costs").fetchall() == [(paid,)]
        assert kept.execute("select count(*) from duckdb_tables()").fetchone() == (1,)  # protected tables only
        kept.close()
        assert calls[:3] == ["protect", "previous: previous_serving (with tables)",
                             "counts: previous_counts (with tables)" if i > 2 else "counts: previous_counts (without tables)"]
    assert str(publish_mod.counts_path(published, "run-5")).startswith(str(published.store_path.parent))
    assert sorted(p.stem for p in published.publication_counts_dir.glob("*.duckdb")) == ["run-3", "run-4", "run-5"]
    rollback(published)  # run-4 served again, with its counts
    calls.clear()
    make_build(published, estimate=9.0, extra_sql=[COSTS_MART.format(paid=7)])
    publish(published, "run-6", "v", cfg=cfg)
    assert calls[2] == "counts: previous_counts (with tables)"
    # run-5, served after run-4 and rolled back since: its readers may hold it too
    assert calls[3:] == ["other: other_0 (with tables)", "its counts: other_0_counts (with tables)", "check"]
    calls.clear()
    make_build(published, estimate=10.0, extra_sql=[COSTS_MART.format(paid=8)])
    publish(published, "run-7", "v", cfg=cfg)
    assert calls[1:] == ["previous: previous_serving (with tables)", "counts: previous_counts (with tables)", "check"]


def test_two_rollbacks_in_a_row_check_the_next_publication_against_both_files_rolled_back(published, monkeypatch):
    """run-3 and run-4 were served after run-1 and rolled back one after the other: the next
    publication is checked against run-1 (served again) and each of them, the last rolled back
    first."""
    calls = stub_disclosure(monkeypatch)
    for i in (3, 4):
        make_build(published, estimate=float(i), extra_sql=[COSTS_MART.format(paid=i)])
        publish(published, f"run-{i}", "v")
    rollback(published)
    rollback(published)
    assert publish_mod.serving_run_id(published.serving_path) == "run-1"
    calls.clear()
    make_build(published, estimate=5.0, extra_sql=[COSTS_MART.format(paid=5)])
    publish(published, "run-5", "v")
    files = {publish_mod.serving_run_id(path): path for path in (published.history_dir / "rolled_back").glob("*.duckdb")}
    assert sorted(files) == ["run-3", "run-4"]
    assert [c for c in calls if c.startswith("other")] == ["other: other_0 (with tables)", "other: other_1 (with tables)"]
    assert publish_mod._archived_at(files["run-3"]) > publish_mod._archived_at(files["run-4"])  # rolled back last


def test_files_rolled_back_in_earlier_rollbacks_are_still_checked(published, monkeypatch):
    """run-2 is rolled back, run-3 published then rolled back: run-1 is served again, and both
    were served after it. A restored file carries the log of the files published after it, so
    its newest 'publish' row is run-3's: the check reads run-1's own row, and run-4 is
    checked against run-3 and run-2 (before: run-3 only, and a reader of run-2 and run-4
    could recover a cell both hid)."""
    calls = stub_disclosure(monkeypatch)
    for i in (2, 3):
        make_build(published, estimate=float(i), extra_sql=[COSTS_MART.format(paid=i)])
        publish(published, f"run-{i}", "v")
        rollback(published)
    assert publish_mod.serving_run_id(published.serving_path) == "run-1"
    calls.clear()
    make_build(published, estimate=4.0, extra_sql=[COSTS_MART.format(paid=4)])
    publish(published, "run-4", "v")
    assert [c for c in calls if c.startswith("other:")] == ["other: other_0 (with tables)", "other: other_1 (with tables)"]


ONE_TABLE_DISCLOSURE = """
k: 10
suppress_zeros: false
assume_external_totals: true
flag_column: is_suppressed
total_label: all
check_against: previous
tables:
  - table: marts.mart_cells
    dimensions: [region_code]
    count_columns: [n]
exempt_tables: []
"""


def _cells(a, b, c, d):
    return (f"create table marts.mart_cells as select * from (values ('a', {a}), ('b', {b}), ('c', {c}), ('d', {d}), "
            f"('all', {a + b + c + d})) t(region_code, n)")


def test_a_reader_of_two_files_rolled_back_apart_recovers_no_small_cell(settings, contracts, monkeypatch, tmp_path):
    """Real disclosure control. run-2 (a=3, b=15, c=20, d=50) hides a and b; it is rolled
    back, run-3 published and rolled back. run-4 (a=3, b=15, c=12, d=60) on its own would
    hide a and c and publish b=15: with run-2's total, c and d, a reader gets a = 3. run-4 is
    checked against run-2 too, so b stays hidden."""
    config = tmp_path / "config"
    shutil.copytree(settings.config_dir, config)
    (config / "disclosure.yml").write_text(ONE_TABLE_DISCLOSURE, encoding="utf-8")
    monkeypatch.setattr(Settings, "config_dir", property(lambda self: config))
    monkeypatch.setattr(disclosure, "review", lambda con, settings: [])
    ingest_sample(settings, contracts)
    for run, cells in (("run-1", (100, 110, 120, 130)), ("run-2", (3, 15, 20, 50)), ("run-3", (100, 110, 120, 130))):
        make_build(settings, extra_sql=[_cells(*cells)])
        publish(settings, run, "v")
        if run != "run-1":
            rollback(settings)
    make_build(settings, extra_sql=[_cells(3, 15, 12, 60)])
    publish(settings, "run-4", "v")
    sql = "select n from marts.mart_cells where region_code = 'b'"
    assert serving_value(settings, sql) is None


def test_rollback_keeps_every_file_rolled_back_since_the_served_one_was_published(published):
    """With one file kept, publishing and rolling back twice leaves two files rolled back since
    run-1 was published: both are kept (the next publication is checked against each), and
    pruning resumes once a publication makes them older than the served file."""
    data = config_for(published).raw
    data["publish"]["history_keep"] = 1
    cfg = parse_config(data)
    for i in (2, 3):
        make_build(published, estimate=float(i), extra_sql=[COSTS_MART.format(paid=i)])
        publish(published, f"run-{i}", "v", cfg=cfg)
        rollback(published, cfg)
    rolled_back = published.history_dir / "rolled_back"
    assert sorted(publish_mod._archived_run(p) for p in publish_mod._archives(rolled_back)) == ["run-2", "run-3"]
    assert sorted(p.stem for p in published.publication_counts_dir.glob("*.duckdb")) == ["run-1", "run-2", "run-3"]
    make_build(published, estimate=4.0, extra_sql=[COSTS_MART.format(paid=4)])
    publish(published, "run-4", "v", cfg=cfg)
    make_build(published, estimate=5.0, extra_sql=[COSTS_MART.format(paid=5)])
    publish(published, "run-5", "v", cfg=cfg)
    rollback(published, cfg)  # run-4 served again: run-2 and run-3 were rolled back before it was published
    assert [publish_mod._archived_run(p) for p in publish_mod._archives(rolled_back)] == ["run-5"]


def test_a_candidate_staged_before_a_rollback_is_not_published(published, monkeypatch):
    """In a Dagster run the candidate is staged (and protected against the file served then)
    by one asset and committed by the next; a `jisr rollback` in between serves another file,
    against which the candidate was never checked: the commit refuses, names both, removes
    the candidate, and the serving file stays the restored one."""
    stub_disclosure(monkeypatch)
    make_build(published, estimate=2.0)
    publish(published, "run-2", "v")
    make_build(published, estimate=3.0)
    candidate = publish_mod.stage_candidate(published, "run-3")
    assert candidate.served.startswith("run run-2 (publish at ")
    assert publish_mod.load_candidate(published, "run-3").served == candidate.served
    rollback(published)
    before = sha256(published.serving_path)
    with pytest.raises(PublishError, match=r"changed since the candidate of run run-3 was staged \(run run-2 "
                                           r"\(publish at .*\) then, run run-1 \(rollback at .*\) now"):
        publish_mod.commit(published, candidate, "v")
    assert sha256(published.serving_path) == before and not candidate.path.exists()
    assert publish_mod.serving_run_id(published.serving_path) == "run-1"
    make_build(published, estimate=4.0)
    publish(published, "run-4", "v")  # the next refresh stages against the file served now
    assert publish_mod.serving_run_id(published.serving_path) == "run-4"


def test_check_against_kept_checks_a_publication_against_every_file_kept(published, monkeypatch, tmp_path):
    """``check_against: kept`` (config/disclosure.yml): besides the file served, every file
    kept for rollback and every file rolled back, newest first, each with its counts."""
    config = tmp_path / "config"
    shutil.copytree(published.config_dir, config)
    text = (config / "disclosure.yml").read_text(encoding="utf-8")
    assert "\ncheck_against: previous\n" in text
    (config / "disclosure.yml").write_text(text.replace("\ncheck_against: previous\n", "\ncheck_against: kept\n"),
                                           encoding="utf-8")
    monkeypatch.setattr(Settings, "config_dir", property(lambda self: config))
    calls = stub_disclosure(monkeypatch)
    for i in (2, 3, 4):
        make_build(published, estimate=float(i), extra_sql=[COSTS_MART.format(paid=i)])
        publish(published, f"run-{i}", "v")
    rollback(published)  # run-3 served again, run-4 rolled back; kept: run-1, run-2
    calls.clear()
    make_build(published, estimate=5.0, extra_sql=[COSTS_MART.format(paid=5)])
    publish(published, "run-5", "v")
    assert calls[1:3] == ["previous: previous_serving (with tables)", "counts: previous_counts (with tables)"]
    others = [c for c in calls if c.startswith("other")]
    assert others == [f"other: other_{n} (with tables)" for n in range(3)]
    kept = [publish_mod.serving_run_id(path) for path in publish_mod._kept_publications(published, "run-5")]
    assert kept == ["run-3", "run-2", "run-1", "run-4"]  # kept for rollback (run-3 now too), then rolled back


def test_the_publish_log_describes_itself_to_bi_tools(published):
    """meta.publish_log, the one table of meta that readers see, carries a description of the
    table and of every column, after a rollback too."""
    def undescribed(path):
        con = duckdb.connect(str(path), read_only=True)
        try:
            table = con.execute("select comment from duckdb_tables() where schema_name = 'meta' "
                                "and table_name = 'publish_log'").fetchone()[0]
            columns = con.execute("select column_name from duckdb_columns() where schema_name = 'meta' and "
                                  "table_name = 'publish_log' and coalesce(comment, '') = ''").fetchall()
            return table, columns
        finally:
            con.close()

    table, columns = undescribed(published.serving_path)
    assert table.startswith("One row per publication") and columns == []
    make_build(published, estimate=2.0)
    publish(published, "run-2", "v2")
    rollback(published)
    table, columns = undescribed(published.serving_path)
    assert table and columns == []


def test_publication_carries_the_descriptions_of_tables_and_columns(published):
    """dbt writes each model's and column's description as comments (``persist_docs``); the
    published copy keeps them, which BI tools show as descriptions."""
    make_build(published, estimate=2.0, extra_sql=[
        "comment on table marts.mart_payments is 'Payments by programme and month'",
        "comment on column marts.mart_payments.amount_mad is 'Sum of the amounts paid, in MAD (the payer''s figures)'",
        "comment on table staging.stg_anything is 'not published'"])
    publish(published, "run-2", "v")
    con = duckdb.connect(str(published.serving_path), read_only=True)
    try:
        assert con.execute("select comment from duckdb_tables() where table_name = 'mart_payments'").fetchall() == [
            ("Payments by programme and month",)]
        assert con.execute("select column_name, comment from duckdb_columns() where table_name = 'mart_payments' "
                           "and comment is not null").fetchall() == [
            ("amount_mad", "Sum of the amounts paid, in MAD (the payer's figures)")]
    finally:
        con.close()


def test_a_candidate_never_committed_leaves_no_counts_behind(published):
    """A run whose gate refused its publication staged a candidate (and kept its counts) but
    never committed it: the next staging removes both, whether or not it is committed."""
    make_build(published, estimate=2.0)
    publish_mod.stage_candidate(published, "run-refused")
    assert publish_mod.counts_path(published, "run-refused").exists()
    publish_mod.stage_candidate(published, "run-next")
    assert not publish_mod.counts_path(published, "run-refused").exists()
    assert publish_mod.counts_path(published, "run-next").exists()


def test_publish_refuses_on_a_blocking_check_and_leaves_serving_byte_identical(published):
    before = sha256(published.serving_path)
    make_build(published, payments_scale=2.0)  # marts no longer reconcile with the raw layer
    with pytest.raises(ChecksFailed) as info:
        publish(published, "run-bad", "v2")
    assert "totals_reconcile_with_raw" in str(info.value) and "payments_total_mad" in str(info.value)
    assert sha256(published.serving_path) == before
    assert publish_mod.history_files(published) == []
    assert not list(published.serving_path.parent.glob(".candidate-*"))
    assert not publish_mod.counts_path(published, "run-bad").exists()  # its counts go with it
    assert [r["run_id"] for r in publish_log(published)] == ["run-1"]


def test_publish_refuses_a_person_level_table_in_the_published_schema(published):
    before = sha256(published.serving_path)
    make_build(published, extra_sql=["create table marts.fct_enrolments as select 1::bigint as person_key, "
                                     "'DSD-01' as programme_code"])
    with pytest.raises(ChecksFailed) as info:
        publish(published, "run-2", "v2")
    assert "no_person_level_data_published" in str(info.value) and "marts.fct_enrolments" in str(info.value)
    assert sha256(published.serving_path) == before


def test_publish_does_not_run_again_the_checks_the_run_evaluated(published, monkeypatch):
    from quality.checks import CheckResult

    make_build(published, estimate=4.0)
    ran = []
    real = checks_mod.run_audit

    def spy(*args, only=None, **kwargs):
        ran.extend(only or ())
        return real(*args, only=only, **kwargs)

    monkeypatch.setattr(publish_mod, "run_audit", spy)
    evaluated = [CheckResult("totals_reconcile_with_raw", True, "block", "ok", "detail.fct_payments"),
                 CheckResult("no_small_cells_published", True, "block", "ok", None)]
    result = publish(published, "run-2", "v2", evaluated=evaluated)
    assert ran and "no_small_cells_published" not in ran  # no target: evaluated on the whole file
    assert "references_resolve_to_dimensions" in ran and "no_person_level_data_published" in ran
    # evaluated on one table: run on the other reconciled table only (config/quality.yml)
    totals = [c for c in result.checks if c.check == "totals_reconcile_with_raw"]
    assert totals[0] == evaluated[0] and [c.target for c in totals[1:]] == ["detail.dim_beneficiaries"]
    assert serving_value(published) == 4.0


def test_publish_checks_a_fact_the_run_did_not_evaluate_references_on(published):
    """A fact with no references check of its own in the run (the run evaluated the check on
    another fact): the publish step checks it, and refuses an unresolved key."""
    from quality.checks import CheckResult

    before = sha256(published.serving_path)
    make_build(published, extra_sql=["create table detail.fct_extra as select -1::bigint as person_key, 1 as n"])
    evaluated = [CheckResult("references_resolve_to_dimensions", True, "block", "ok", "detail.fct_payments")]
    with pytest.raises(ChecksFailed, match=r"references_resolve_to_dimensions \[detail.fct_extra\]"):
        publish(published, "run-2", "v2", evaluated=evaluated)
    assert sha256(published.serving_path) == before


def test_publish_small_cells_block_publication(published, monkeypatch):
    stub_disclosure(monkeypatch, violations=["marts.mart_x: cell (region 01, F) counts 3 people < 10"])
    before = sha256(published.serving_path)
    make_build(published, estimate=9.0)
    with pytest.raises(ChecksFailed, match="no_small_cells_published"):
        publish(published, "run-2", "v2")
    assert sha256(published.serving_path) == before


def test_publish_warn_failures_are_logged_and_do_not_block(published):
    make_build(published, estimate=3.0)
    result = publish(published, "run-2", "v2")  # freshness (warn): sources never delivered
    warnings = [c for c in result.checks if not c.passed]
    assert warnings and all(c.severity == "warn" for c in warnings)
    assert serving_value(published) == 3.0


def test_publish_logs_the_deliveries_the_build_was_made_from(published, contracts):
    """A delivery ingested after the build, then the build published (the publish step run
    alone): the log lists the deliveries of the build, status reports the new one unpublished."""
    from jisr.status import status_report

    built_from = json.loads(publish_log(published)[0]["deliveries"])
    write_delivery(published.landing_dir, contracts["programmes"], "programmes_2025-02.csv",
                   [dict(PROGRAMME, name_fr="Aide sociale directe (nouveau nom)")])
    Ingestor(published.store_path, contracts, TEST_KEY, seeds_dir=published.seeds_dir,
             rejected_dir=published.rejected_dir, feedback_dir=published.feedback_dir, run_id="ingest-2",
             code_version="test").ingest(published.landing_dir)
    publish(published, "run-2", "v1")  # the build of run-1 again: nothing was rebuilt
    logged = json.loads(publish_log(published)[0]["deliveries"])
    assert logged == built_from and "programmes_2025-02.csv" not in {d["file_name"] for d in logged}
    assert serving_value(published, "select programme_name from marts.dim_programmes") == "Aide sociale directe"
    assert "NOT PUBLISHED: 1 current delivery(ies)" in status_report(published)
    make_build(published)  # built again: the new delivery is in it, and in the log
    publish(published, "run-3", "v1")
    assert "programmes_2025-02.csv" in {d["file_name"] for d in json.loads(publish_log(published)[0]["deliveries"])}
    assert "NOT PUBLISHED" not in status_report(published)


def test_publish_of_a_build_that_recorded_no_deliveries_says_so(published):
    con = duckdb.connect(str(published.build_path))
    con.execute("drop table meta.build_deliveries")
    con.close()
    publish(published, "run-2", "v1")
    row = publish_log(published)[0]
    assert row["delivery_count"] == 4 and "the build did not record its own" in row["note"]


def test_a_build_started_forgets_the_deliveries_of_the_build_before(published):
    """The dbt step forgets the record when it starts and writes it when its build
    succeeded: a build that failed half-way, published alone, is not logged with the
    deliveries of the build before it."""
    from jisr.publish import record_build_deliveries

    record_build_deliveries(published, None)
    publish(published, "run-2", "v1")
    row = publish_log(published)[0]
    assert "the build did not record its own" in row["note"]


def test_publish_without_build_warehouse_fails_clearly(settings, monkeypatch):
    stub_disclosure(monkeypatch)
    with pytest.raises(PublishError, match="no build warehouse"):
        publish(settings, "run-1", "v1")
    assert not settings.serving_path.exists()


# --- rollback ----------------------------------------------------------------------------------------


def test_rollback_restores_the_previous_warehouse_and_logs_it(published):
    make_build(published, estimate=2.5)
    publish(published, "run-2", "v2")
    result = rollback(published)
    assert (result.restored_run_id, result.replaced_run_id) == ("run-1", "run-2")
    assert serving_value(published) == 1.5
    log = publish_log(published)
    assert [(r["event"], r["run_id"]) for r in log] == [("rollback", "run-1"), ("publish", "run-2"), ("publish", "run-1")]
    assert (published.history_dir / "rolled_back").is_dir()
    with pytest.raises(PublishError, match="nothing to roll back to"):
        rollback(published)
    assert serving_value(published) == 1.5


def test_rollback_after_publish_rollback_publish_logs_the_warehouse_it_restores(published, contracts):
    """run-1, run-2, rollback, run-3, rollback: the file restored the second time is run-1's,
    whose newest log row is the first rollback; the new row describes run-1, not run-2."""
    from jisr.status import status_report

    ingest_sample(published, contracts, months=("2025-01", "2025-02"), run_id="run-2")
    extra = ["create table marts.extra_v2 as select range as x from range(100)"]
    make_build(published, estimate=2.5, extra_sql=extra)
    publish(published, "run-2", "v2")
    rollback(published)
    make_build(published, estimate=3.5, extra_sql=extra)
    publish(published, "run-3", "v3")
    rollback(published)
    assert serving_value(published) == 1.5
    log = publish_log(published)
    first = [r for r in log if (r["event"], r["run_id"]) == ("publish", "run-1")][0]
    top = log[0]
    assert (top["event"], top["run_id"], top["code_version"]) == ("rollback", "run-1", "v1")
    for column in ("deliveries", "delivery_count", "check_results", "table_row_counts", "disclosure"):
        assert top[column] == first[column], column
    assert "marts.extra_v2" not in json.loads(top["table_row_counts"])
    report = status_report(published)
    assert "rolled back to the warehouse of run run-1" in report and "(code v1)" in report
    assert "NOT PUBLISHED: 1 current" in report  # run-2's second month of payments is not served


def test_publish_postgres_refuses_unless_the_raw_store_holds_what_is_served(published, contracts):
    """PostgreSQL builds its marts from the raw store: after a rollback it would serve the
    rolled-back deliveries. Refused before connecting; with the store as served, it goes on."""
    from jisr.postgres import PostgresPublishError, publish_postgres

    nowhere = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(PostgresPublishError, match="cannot connect to PostgreSQL"):
        publish_postgres(published, nowhere)  # the raw store holds what is served: on to the server
    ingest_sample(published, contracts, months=("2025-01", "2025-02"), run_id="run-2")
    make_build(published, estimate=2.5)
    publish(published, "run-2", "v2")
    rollback(published)
    with pytest.raises(PostgresPublishError) as info:
        publish_postgres(published, nowhere)
    message = str(info.value)
    assert "rolled back to the warehouse of run run-1" in message and "nothing was changed" in message
    assert "1 current delivery(ies) it was not built from (paiements_2025-02.csv)" in message
    # it tried to close on PostgreSQL a publication rolled back from, and says it could not
    assert "(cannot connect to PostgreSQL" in message and "it serves it still)" in message


def test_publish_postgres_refuses_without_a_published_warehouse(settings, contracts):
    from jisr.postgres import PostgresPublishError, publish_postgres

    ingest_sample(settings, contracts)
    with pytest.raises(PostgresPublishError, match="no warehouse is published"):
        publish_postgres(settings, "postgresql://nobody@127.0.0.1:1/nowhere")


def test_rollback_cli_restores_and_reports(published, capsys):
    from jisr.cli import main

    make_build(published, estimate=2.5)
    publish(published, "run-2", "v2")
    assert main(["rollback"]) == 0
    assert "run-1" in capsys.readouterr().out
    assert serving_value(published) == 1.5
    assert main(["rollback"]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err


def test_rollback_on_a_home_never_published_leaves_it_as_it_was(tmp_path, monkeypatch, capsys):
    """`jisr rollback` with a JISR_HOME that does not exist (a typo in the variable) created
    it, with a lock file in it: it says there is nothing to roll back to and writes nothing."""
    from jisr.cli import main

    home = tmp_path / "no-such-home"
    monkeypatch.setenv("JISR_HOME", str(home))
    assert main(["rollback"]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err
    assert not home.exists()


def test_status_says_what_is_served_and_what_a_failed_refresh_left_unpublished(published, contracts):
    from jisr.status import status_report

    report = status_report(published)
    assert "served: published by run run-1 at " in report and "NOT PUBLISHED" not in report
    ingest_sample(published, contracts, months=("2025-01", "2025-02"), run_id="run-2")  # then run-2 stops
    report = status_report(published)
    assert "served: published by run run-1 at " in report
    assert "NOT PUBLISHED: 1 current delivery(ies) the served warehouse was not built from; the last refresh " \
           "that loaded some (run run-2)" in report
    assert str(published.reports_dir / "run-2" / "quality" / "index.html") in report
    make_build(published)
    publish(published, "run-2", "v2")  # run-2 publishes after all: nothing left over
    assert "NOT PUBLISHED" not in status_report(published)
    rollback(published)  # back to run-1's warehouse, without run-2's delivery
    report = status_report(published)
    assert "served: rolled back to the warehouse of run run-1" in report and "NOT PUBLISHED: 1 current" in report


def test_status_exit_code_says_whether_something_needs_attention(published, contracts, capsys):
    """For monitoring: 0 when everything delivered is published and every landing file is read,
    1 otherwise (a delivery not published, a file nothing reads)."""
    from jisr.cli import main

    assert main(["status"]) == 0
    ingest_sample(published, contracts, months=("2025-01", "2025-02"), run_id="run-2")  # then run-2 stops
    assert main(["status"]) == 1 and "NOT PUBLISHED" in capsys.readouterr().out
    make_build(published)
    publish(published, "run-2", "v2")
    assert main(["status"]) == 0
    (published.landing_dir / "paiements_2025-03.csv").write_text("x\n")  # outside the partner folders
    assert main(["status"]) == 1 and "Files in the landing area that nothing reads" in capsys.readouterr().out


def test_status_names_the_serving_file_when_another_process_holds_it_for_writing(published):
    """A tool that opens the serving file read-write keeps readers out; status said the raw
    store was busy with a refresh, naming the tool's process."""
    from jisr.status import status_report

    published.serving_path.chmod(0o644)
    code = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(published.serving_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        report = status_report(published)
    finally:
        holder.communicate("", timeout=60)
    assert report.startswith("The serving warehouse cannot be read: another process holds it open for writing")
    assert f"(PID {holder.pid})" in report and str(published.serving_path) in report and "raw store" not in report


def test_status_says_when_rows_were_released_into_served_deliveries_since(published):
    """Ingestion loads held rows into their delivery once their reference arrives: the
    delivery is the same, its rows are not all in the served warehouse."""
    from jisr.status import status_report

    assert "NOT PUBLISHED" not in status_report(published)
    con = duckdb.connect(str(published.store_path))
    con.execute("update meta.deliveries set rows_loaded = rows_loaded + 1, rows_quarantined = rows_quarantined - 1 "
                "where delivery_id = (select min(delivery_id) from meta.deliveries where source = 'payments')")
    con.close()
    assert ("NOT PUBLISHED: rows held for a reference or a key were loaded since into 1 delivery(ies) the served "
            "warehouse was built from") in status_report(published)


# --- readers, crashes, locks ---------------------------------------------------------------------------

READER = """
import duckdb, json, sys, time
from pathlib import Path
path, ready, go = sys.argv[1:4]
con = duckdb.connect(path, read_only=True)
q = "select (select estimate::double from impact.impact_estimates), (select sum(payments) from marts.mart_payments), " \\
    "(select max(run_id) from meta.publish_log)"
before = con.execute(q).fetchone()
Path(ready).write_text("ready")
while not Path(go).exists():
    time.sleep(0.05)
after = con.execute(q).fetchone()
print(json.dumps({"before": before, "after": after}))
"""


def test_publish_reader_with_open_connection_keeps_a_consistent_snapshot(published, tmp_path):
    ready, go = tmp_path / "ready", tmp_path / "go"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(published.serving_path), str(ready), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_DIR)
    deadline = time.time() + 60
    while not ready.exists():
        assert reader.poll() is None and time.time() < deadline, reader.stderr.read()
        time.sleep(0.05)
    make_build(published, estimate=7.0)
    publish(published, "run-2", "v2")  # while the reader holds its connection
    go.write_text("go")
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen["before"] == seen["after"] == [1.5, 12, "run-1"]
    assert serving_value(published) == 7.0  # a new reader sees the new warehouse


def kill_publish_at(settings, tmp_path, point: str) -> None:
    """Publish run ``killed-run`` (version ``v-killed``) in another process and kill it at
    the fault point ``point`` of :mod:`jisr.publish`."""
    marker = tmp_path / f"at-{point}"
    driver = DRIVER_STUB + """
home, point, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
def fault(name):
    if name == point:
        marker.write_text(name)
        time.sleep(120)
P._fault_point = fault
P.publish(Settings(home=home), "killed-run", "v-killed")
"""
    proc = subprocess.Popen([sys.executable, "-c", driver, str(settings.home), point, str(marker)],
                            cwd=PROJECT_DIR, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("point", ["copied", "before_archive", "before_replace"])
def test_publish_killed_mid_way_leaves_serving_intact_and_next_publish_completes(published, tmp_path, point):
    before = sha256(published.serving_path)
    make_build(published, estimate=4.0)
    kill_publish_at(published, tmp_path, point)
    assert sha256(published.serving_path) == before
    assert serving_value(published) == 1.5  # intact and readable
    assert [r["run_id"] for r in publish_log(published)] == ["run-1"]
    result = publish(published, "run-2", "v2")  # the next publication completes
    assert serving_value(published) == 4.0 and result.run_id == "run-2"
    assert not list(published.serving_path.parent.glob(".candidate-*"))


HOLDER = """
import sys, time
from pathlib import Path
from jisr.lock import refresh_lock
from jisr.settings import Settings
home, marker, hold = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
with refresh_lock(Settings(home=home), run_id="first-refresh"):
    marker.write_text("locked")
    time.sleep(hold)
"""


def _hold_lock(settings, tmp_path, seconds):
    marker = tmp_path / "locked"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(settings.home), str(marker), str(seconds)],
                            cwd=PROJECT_DIR, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.05)
    return proc


def test_refresh_lock_second_refresh_refuses_with_a_clear_message(settings, tmp_path):
    proc = _hold_lock(settings, tmp_path, 120)
    try:
        with pytest.raises(LockBusy) as info:
            with refresh_lock(settings):
                pytest.fail("the lock was taken twice")
        message = str(info.value)
        assert "another refresh is running" in message and f"pid {proc.pid}" in message
        assert "first-refresh" in message
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with refresh_lock(settings):  # a killed holder leaves no stale lock
        pass


def test_refresh_lock_waits_up_to_its_timeout(settings, tmp_path):
    proc = _hold_lock(settings, tmp_path, 1.0)
    started = time.monotonic()
    with refresh_lock(settings, timeout=60):
        waited = time.monotonic() - started
    proc.wait(timeout=30)
    assert 0.2 < waited < 60


def test_rollback_waits_for_a_publication_in_progress(published, tmp_path):
    """Publish and rollback take the publish lock: never two writers of the serving path."""
    make_build(published, estimate=2.5)
    publish(published, "run-2", "v2")
    marker = tmp_path / "locked"
    holder = ("import sys, time; from pathlib import Path; from jisr.lock import publish_lock; "
              "from jisr.settings import Settings\n"
              "with publish_lock(Settings(home=Path(sys.argv[1]))):\n"
              "    Path(sys.argv[2]).write_text('x'); time.sleep(2)")
    proc = subprocess.Popen([sys.executable, "-c", holder, str(published.home), str(marker)], cwd=PROJECT_DIR)
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    result = rollback(published)  # waits for the other process to release the lock
    waited = time.monotonic() - started
    proc.wait(timeout=30)
    assert waited > 0.5 and result.restored_run_id == "run-1"
    assert serving_value(published) == 1.5


def test_refresh_lock_is_reentrant_within_a_process(settings):
    with refresh_lock(settings):
        with refresh_lock(settings):  # e.g. the CLI and run_refresh both take it
            pass
        code = ("import sys; from pathlib import Path; from jisr.lock import refresh_lock, LockBusy; "
                "from jisr.settings import Settings\n"
                "try:\n    refresh_lock(Settings(home=Path(sys.argv[1]))).__enter__()\nexcept LockBusy:\n    sys.exit(3)")
        still_held = subprocess.run([sys.executable, "-c", code, str(settings.home)], cwd=PROJECT_DIR)
        assert still_held.returncode == 3  # the inner exit did not release the outer lock
    with refresh_lock(settings):
        pass
