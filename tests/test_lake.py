"""The open raw layer: Parquet files that any engine reads give exactly the raw store's rows."""

from pathlib import Path

import duckdb
import pytest

from ingestion.lake import (NULL_PARTITION, delivery_path, deliveries_path, escape_partition_value, export_raw,
                            manifest_path, quarantine_path, read_raw_sql)
from ingestion.load import Ingestor
from tests.conftest import PROGRAMME, TEST_KEY, enrolment, payment, person, write_delivery


def ingest(settings, contracts, key=TEST_KEY):
    Ingestor(settings.store_path, contracts, key, seeds_dir=settings.seeds_dir, rejected_dir=settings.rejected_dir,
             feedback_dir=settings.feedback_dir, code_version="test").ingest(settings.landing_dir)


def export(settings, contracts, **kw):
    return export_raw(settings.store_path, settings.lake_dir, contracts, **kw)


def first_month(settings, contracts, n=6):
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(n)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv", [enrolment(i) for i in range(n)])
    return write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          [payment(i) for i in range(n)])


def differences(settings, contracts) -> dict[str, tuple[int, int]]:
    """Per source: (rows only in the lake, rows only in the store), over every raw column."""
    con = duckdb.connect()
    con.execute(f"attach '{settings.store_path}' as store (read_only)")
    out = {}
    for source, contract in contracts.items():
        cols = ", ".join(contract.raw_columns)
        lake = f"select {cols} from {read_raw_sql(settings.lake_dir, source)}"
        raw = f"select {cols} from store.raw.{source}"
        out[source] = con.execute(f"select (select count(*) from ({lake} except all {raw})), "
                                  f"(select count(*) from ({raw} except all {lake}))").fetchone()
    return out


def assert_lake_matches_store(settings, contracts):
    assert differences(settings, contracts) == {source: (0, 0) for source in contracts}
    con = duckdb.connect()
    con.execute(f"attach '{settings.store_path}' as store (read_only)")
    for source in contracts:  # same columns, same order, same types
        lake = con.execute(f"describe select * from {read_raw_sql(settings.lake_dir, source)}").fetchall()
        raw = con.execute(f"describe store.raw.{source}").fetchall()
        assert [(c[0], c[1]) for c in lake] == [(c[0], c[1]) for c in raw], source


def current_rows(settings, source: str) -> list[tuple]:
    return duckdb.connect().execute(
        f"select _delivery_id, _source_row, _is_current from {read_raw_sql(settings.lake_dir, source)} "
        "order by all").fetchall()


def test_export_raw_lake_matches_store_including_current_flags(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    export(settings, contracts)
    assert_lake_matches_store(settings, contracts)

    # A registry update supersedes some people's rows; a corrected payments file replaces the month.
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-02.csv",
                   [person(1, region_code="07", province_code="0701", commune_code="0701001"), person(2)])
    (settings.landing_dir / "msisf" / "paiements_2025-01.csv").unlink()
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i, amount_mad="400,00") for i in range(4)])
    ingest(settings, contracts)
    export(settings, contracts)
    assert_lake_matches_store(settings, contracts)
    con = duckdb.connect()
    lake_current = con.execute(f"select count(*), sum(amount_mad) from {read_raw_sql(settings.lake_dir, 'payments')} "
                               "where _is_current").fetchone()
    assert lake_current[0] == 4 and float(lake_current[1]) == 1600.0
    assert con.execute(f"select count(*) from {read_raw_sql(settings.lake_dir, 'beneficiaries')} "
                       "where not _is_current").fetchone()[0] == 2


def test_export_raw_partitions_by_source_and_batch_one_file_per_delivery(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    export(settings, contracts)
    store = duckdb.connect(str(settings.store_path), read_only=True)
    loaded = store.execute("select source, batch, delivery_id from meta.deliveries where status = 'loaded'").fetchall()
    files = sorted((settings.lake_dir / "raw").glob("*/_batch=2025-01/*.parquet"))
    assert sorted(files) == sorted(delivery_path(settings.lake_dir, s, b, d) for s, b, d in loaded)
    assert files[0].relative_to(settings.lake_dir).parts[:3] == ("raw", files[0].parts[-3], "_batch=2025-01")


def test_export_raw_writes_the_delivery_log_and_quarantine_ledger_as_in_the_store(settings, contracts):
    first_month(settings, contracts)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-02.csv",
                   [payment(1, month="2025-02"), payment(2, month="2025-02", amount_mad="-5,00")])
    ingest(settings, contracts)
    export(settings, contracts)
    con = duckdb.connect()
    con.execute(f"attach '{settings.store_path}' as store (read_only)")
    for table, path in (("meta.deliveries", deliveries_path(settings.lake_dir)),
                        ("quarantine.rows", quarantine_path(settings.lake_dir))):
        assert path.relative_to(settings.lake_dir).parts == (*table.split("."), path.name)
        both = con.execute(f"select (select count(*) from store.{table}), "
                           f"(select count(*) from (from store.{table} except all from '{path}')), "
                           f"(select count(*) from (from '{path}' except all from store.{table}))").fetchone()
        assert both[0] > 0 and both[1:] == (0, 0), table
    assert con.execute(f"select count(*) from '{quarantine_path(settings.lake_dir)}' "
                       "where rule = 'min:amount_mad'").fetchone()[0] == 1


def test_export_raw_writes_only_deliveries_not_yet_exported(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    first = export(settings, contracts)
    assert {(f.source, f.reason) for f in first.written} == {
        ("programmes", "new"), ("beneficiaries", "new"), ("enrolments", "new"), ("payments", "new")}
    mtimes = {p: p.stat().st_mtime_ns for p in (settings.lake_dir / "raw").glob("*/*/*.parquet")}

    again = export(settings, contracts)
    assert again.written == [] and again.removed == [] and again.unchanged == 4
    assert {p: p.stat().st_mtime_ns for p in (settings.lake_dir / "raw").glob("*/*/*.parquet")} == mtimes

    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-02.csv",
                   [payment(i, month="2025-02") for i in range(6)])
    ingest(settings, contracts)
    third = export(settings, contracts)
    assert [(f.source, f.batch, f.reason) for f in third.written] == [("payments", "2025-02", "new")]
    assert_lake_matches_store(settings, contracts)


def test_export_raw_rewrites_exactly_the_files_whose_current_flags_changed(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    export(settings, contracts)
    old_payments = current_rows(settings, "payments")
    assert all(flag for _, _, flag in old_payments)

    # February's registry supersedes person 1 of January; January's payments are re-delivered.
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-02.csv", [person(1, sex="M")])
    (settings.landing_dir / "msisf" / "paiements_2025-01.csv").unlink()
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i, amount_mad="360,00") for i in range(6)])
    ingest(settings, contracts)
    result = export(settings, contracts)
    written = sorted((f.source, f.batch, f.reason) for f in result.written)
    assert written == [("beneficiaries", "2025-01", "currency"), ("beneficiaries", "2025-02", "new"),
                       ("payments", "2025-01", "currency"), ("payments", "2025-01", "new")]
    old_delivery = old_payments[0][0]
    assert {flag for d, _, flag in current_rows(settings, "payments") if d == old_delivery} == {False}
    assert_lake_matches_store(settings, contracts)


def test_export_raw_gives_sources_without_delivery_an_empty_typed_table(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    export(settings, contracts)
    empty = settings.lake_dir / "raw" / "loans" / f"_batch={NULL_PARTITION}" / "empty.parquet"
    assert empty.exists()
    con = duckdb.connect()
    assert con.execute(f"select count(*) from {read_raw_sql(settings.lake_dir, 'loans')}").fetchone()[0] == 0
    assert_lake_matches_store(settings, contracts)  # includes the column names and types of every source

    write_delivery(settings.landing_dir, contracts["loans"], "loans_2025-01.jsonl", [
        {"loan_id": "L1", "borrower_cin": "AB100001", "programme_code": "DSD-01", "product": "agricultural",
         "principal_mad": 5000, "term_months": 12, "disbursement_date": "2025-01-10", "status": "active"}])
    ingest(settings, contracts)
    assert duckdb.connect(str(settings.store_path), read_only=True).execute(
        "select count(*) from raw.loans").fetchone()[0] == 1
    export(settings, contracts)
    assert not empty.exists() and not empty.parent.exists()
    assert_lake_matches_store(settings, contracts)


def test_export_raw_rewrites_a_rebuilt_store_and_removes_files_it_no_longer_holds(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    export(settings, contracts)
    stray = settings.lake_dir / "raw" / "payments" / "_batch=2024-12" / "payments-2024-12-000000000000.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not from the store")

    # The store is rebuilt from the same files with another key: same delivery ids, new pseudonyms.
    settings.store_path.unlink()
    ingest(settings, contracts, key=b"another-key-0123456789abcdef-not-secret")
    result = export(settings, contracts)
    assert {f.reason for f in result.written} == {"reload"} and len(result.written) == 4
    assert result.removed == [stray] and not stray.parent.exists()
    assert_lake_matches_store(settings, contracts)


def test_export_raw_rewrites_a_file_deleted_from_the_lake(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    export(settings, contracts)
    victim = next((settings.lake_dir / "raw" / "enrolments").glob("*/*.parquet"))
    victim.unlink()
    result = export(settings, contracts)
    assert [(f.path, f.reason) for f in result.written] == [(victim, "missing")]
    assert_lake_matches_store(settings, contracts)


def test_export_raw_of_some_sources_keeps_the_others_in_the_manifest(settings, contracts):
    first_month(settings, contracts)
    ingest(settings, contracts)
    export(settings, contracts)
    result = export(settings, contracts, sources=["payments"])
    assert result.written == [] and result.unchanged == 1
    listed = duckdb.connect().execute(f"select distinct source from '{manifest_path(settings.lake_dir)}'").fetchall()
    assert {s for (s,) in listed} == set(contracts)


@pytest.mark.parametrize("value, expected", [
    ("2025-01", "2025-01"), ("cct_2019", "cct_2019"), ("a/b=c", "a%2Fb%3Dc"), ("é", "%C3%A9"),
    (None, NULL_PARTITION), ("", NULL_PARTITION),
])
def test_escape_partition_value_escapes_like_hive(value, expected):
    assert escape_partition_value(value) == expected
