"""Great Expectations suites from the contracts: what they expect, which rows they send to
quarantine, errored expectations counting as failures, chunking, and the HTML report."""

import csv
import json
import threading
import time
from datetime import datetime

import duckdb

import quality.expectations as gxmod
from ingestion.contracts import seed_values
from jisr.settings import Settings
from quality.checks import check_suite_validated
from quality.config import config_for
from quality.expectations import ExpectationSpec, SuiteValidator, build_suite, export_suites, suite_specs
from quality.report import write_report
from tests.conftest import person
from tests.test_publish import ingest_sample


def _by_type(specs):
    out = {}
    for s in specs:
        out.setdefault(s.type, []).append(s)
    return out


def test_suite_specs_follow_the_contract(contracts, settings):
    ben = contracts["beneficiaries"]
    specs = suite_specs(ben, settings.seeds_dir)
    kinds = _by_type(specs)
    not_null = {s.kwargs["column"] for s in kinds["expect_column_values_to_not_be_null"]}
    assert {c.name for c in ben.columns if c.required} <= not_null
    assert {f"{c.name}__typed" for c in ben.columns if c.type != "varchar"} <= not_null
    typed = next(s for s in kinds["expect_column_values_to_not_be_null"] if s.kwargs["column"] == "birth_date__typed")
    assert typed.when_present == "birth_date"  # a value that does not parse; an empty one is not_null's
    regex = {s.kwargs["column"]: s.kwargs["regex"] for s in kinds["expect_column_values_to_match_regex"]}
    assert regex == {c.name: f"^(?:{c.pattern})$" for c in ben.columns if c.pattern}
    in_set = {s.kwargs["column"]: set(s.kwargs["value_set"]) for s in kinds["expect_column_values_to_be_in_set"]}
    assert in_set["sex"] == {"F", "M"}
    assert in_set["region_code"] == set(seed_values(settings.seeds_dir, "geo_regions.region_code"))
    between = {s.kwargs["column"]: s.kwargs for s in kinds["expect_column_values_to_be_between"]}
    assert between["birth_date__typed"]["min_value"] == datetime(1900, 1, 1)
    assert (between["socio_economic_score__typed"]["min_value"], between["socio_economic_score__typed"]["max_value"]) == (0, 100)
    assert [s.kwargs["column"] for s in kinds["expect_column_values_to_be_unique"]] == ["cin"]
    assert {s.column for s in specs if s.pii} >= {"cin", "phone", "household_id"}
    occupancy = _by_type(suite_specs(contracts["occupancy"], settings.seeds_dir))
    compound = occupancy["expect_compound_columns_to_be_unique"][0]
    assert compound.kwargs["column_list"] == ["establishment_id", "month"]
    assert compound.rule == "gx:expect_compound_columns_to_be_unique:establishment_id,month"


def test_suites_use_no_deprecated_row_conditions(contracts, settings):
    """GX 1.9 deprecated string row conditions (removed in 2.0): the suites use Condition objects."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suite = build_suite(contracts["beneficiaries"], settings.seeds_dir)
    assert not [w for w in caught if "row_condition" in str(w.message) or "condition_parser" in str(w.message)]
    conditions = [e.row_condition for e in suite.expectations if getattr(e, "row_condition", None) is not None]
    assert conditions and all(type(c).__name__ == "NullityCondition" for c in conditions)


def test_suites_build_for_every_contract_and_export_as_json(contracts, settings, tmp_path):
    for contract in contracts.values():
        suite = build_suite(contract, settings.seeds_dir)
        assert len(suite.expectations) == len(suite_specs(contract, settings.seeds_dir)), contract.source
    paths = export_suites(contracts, settings.seeds_dir, tmp_path / "suites")
    data = json.loads((tmp_path / "suites" / "payments.json").read_text())
    assert len(paths) == len(contracts) and data["name"] == "jisr.payments"
    assert any(e["type"] == "expect_column_values_to_be_unique" for e in data["expectations"])


def _quarantine(settings, rule_prefix="gx:"):
    con = duckdb.connect(str(settings.store_path), read_only=True)
    try:
        return con.execute("select file_name, source_row, rule, column_name, message from quarantine.rows "
                           "where rule like ? order by file_name, source_row, rule", [rule_prefix + "%"]).fetchall()
    finally:
        con.close()


def _write_people(settings, contracts, rows, name="registre_2025-01.csv"):
    from tests.conftest import write_delivery

    write_delivery(settings.landing_dir, contracts["beneficiaries"], name, rows)


def _ingest(settings, contracts, validator):
    from ingestion.load import Ingestor
    from tests.conftest import TEST_KEY

    return Ingestor(settings.store_path, contracts, TEST_KEY, seeds_dir=settings.seeds_dir,
                    rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir, run_id="run-gx",
                    code_version="test", validators=[validator]).ingest(settings.landing_dir)


def test_suite_validator_sends_each_failing_row_to_quarantine(settings, contracts):
    rows = [person(i) for i in range(10)]
    rows[1]["cin"] = "Z9"                          # row 2: pattern
    rows[2]["sex"] = "X"                           # row 3: code list
    rows[3]["birth_date"] = "01/01/1850"           # row 4: range
    rows[4]["socio_economic_score"] = "beaucoup"   # row 5: type
    rows[5]["commune_code"] = ""                   # row 6: required
    rows[7]["cin"] = rows[8]["cin"]                # rows 8, 9: duplicate key
    _write_people(settings, contracts, rows)
    summary = _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx"))
    result = summary.files[0]
    assert result.rows_delivered == result.rows_loaded + result.rows_quarantined == 10
    found = {(row, rule) for _, row, rule, _, _ in _quarantine(settings)}
    assert found == {
        (2, "gx:expect_column_values_to_match_regex:cin"),
        (3, "gx:expect_column_values_to_be_in_set:sex"),
        (4, "gx:expect_column_values_to_be_between:birth_date"),
        (5, "gx:expect_column_values_to_not_be_null:socio_economic_score__typed"),
        (6, "gx:expect_column_values_to_not_be_null:commune_code"),
        (8, "gx:expect_column_values_to_be_unique:cin"),
        (9, "gx:expect_column_values_to_be_unique:cin"),
    }
    messages = {row: msg for _, row, _, _, msg in _quarantine(settings)}
    assert "'X'" in messages[3] and "'beaucoup'" in messages[5] and "1850-01-01" in messages[4]
    assert "column birth_date is below the minimum 1900-01-01" in messages[4]  # no maximum: no "[1900-01-01, ]"
    assert "(identifier withheld)" in messages[2] and "Z9" not in messages[2]
    assert "AB100007" not in " ".join(messages.values())
    con = duckdb.connect(str(settings.store_path), read_only=True)
    gx = con.execute("select rule, success, raised_exception, element_count, unexpected_count from quality.gx_results "
                     "where run_id = 'run-gx'").fetchall()
    con.close()
    assert len(gx) == len(suite_specs(contracts["beneficiaries"], settings.seeds_dir))
    failed = {r[0]: r[4] for r in gx if not r[1]}
    assert failed["gx:expect_column_values_to_be_unique:cin"] == 2 and not any(r[2] for r in gx)


def test_suite_validator_failures_reach_partner_feedback(settings, contracts):
    rows = [person(i) for i in range(4)]
    rows[0]["sex"] = "?"
    _write_people(settings, contracts, rows)
    _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx"))
    feedback = settings.feedback_dir / "msisf" / "registre_2025-01.csv.rejected_rows.csv"
    with open(feedback, encoding="utf-8") as fh:
        rules = {(r["source_row"], r["rule"]) for r in csv.DictReader(fh)}
    assert ("1", "gx:expect_column_values_to_be_in_set:sex") in rules
    summary = (settings.feedback_dir / "msisf" / "registre_2025-01.csv.summary.txt").read_text()
    assert "gx:expect_column_values_to_be_in_set:sex: 1" in summary


def test_suite_validator_counts_an_errored_expectation_as_a_failure(settings, contracts, monkeypatch):
    real = gxmod.suite_specs

    def with_broken(contract, seeds_dir):
        specs = real(contract, seeds_dir)
        return specs + [ExpectationSpec("expect_column_values_to_not_be_null", {"column": "no_such_column"},
                                        "no_such_column", describes="broken")]

    monkeypatch.setattr(gxmod, "suite_specs", with_broken)
    _write_people(settings, contracts, [person(i) for i in range(5)])
    summary = _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx"))
    assert summary.files[0].rows_loaded == 0 and summary.files[0].rows_quarantined == 5
    rows = [r for r in _quarantine(settings) if r[2] == "gx:expect_column_values_to_not_be_null:no_such_column"]
    assert [r[1] for r in rows] == [1, 2, 3, 4, 5]
    assert "could not evaluate" in rows[0][4]
    con = duckdb.connect()
    con.execute(f"attach '{settings.store_path}' as ingest (read_only)")
    raised = con.execute("select raised_exception from ingest.quality.gx_results where rule like '%no_such_column'").fetchone()
    result = check_suite_validated(con, config_for(settings), "run-gx", sources=["beneficiaries"])
    con.close()
    assert raised == (True,)
    assert not result[0].passed and "errored" in result[0].description


def test_suite_validator_chunks_keep_duplicate_keys_together(settings, contracts):
    rows = [person(i) for i in range(40)]
    rows[39]["cin"] = rows[0]["cin"]  # first and last row share a key
    _write_people(settings, contracts, rows)
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=7)
    _ingest(settings, contracts, validator)
    found = {(row, rule) for _, row, rule, _, _ in _quarantine(settings)}
    assert found == {(1, "gx:expect_column_values_to_be_unique:cin"), (40, "gx:expect_column_values_to_be_unique:cin")}
    con = duckdb.connect(str(settings.store_path), read_only=True)
    chunks, rows_seen = con.execute("select max(chunks), max(element_count) from quality.gx_results "
                                    "where rule = 'gx:expect_column_values_to_not_be_null:cin'").fetchone()
    con.close()
    assert chunks == 6 and rows_seen == 40


def test_suite_validator_workers_find_what_one_process_finds(settings, contracts):
    rows = [person(i) for i in range(40)]
    rows[39]["cin"] = rows[0]["cin"]   # duplicate key across the file
    rows[5]["sex"] = "X"
    rows[17]["birth_date"] = "01/01/1850"
    _write_people(settings, contracts, rows)
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=7, workers=1)
    validator.start(wait=True)  # else this process may validate every chunk while the worker imports GX
    summary = _ingest(settings, contracts, validator)
    assert validator.worker_chunks >= 1
    assert validator._pool is None  # the ingestion stopped the worker at the end of its pass
    assert summary.files[0].rows_quarantined == 4
    found = {(row, rule) for _, row, rule, _, _ in _quarantine(settings)}
    assert found == {(1, "gx:expect_column_values_to_be_unique:cin"), (40, "gx:expect_column_values_to_be_unique:cin"),
                     (6, "gx:expect_column_values_to_be_in_set:sex"),
                     (18, "gx:expect_column_values_to_be_between:birth_date")}
    con = duckdb.connect(str(settings.store_path), read_only=True)
    recorded = con.execute("select rule, success, element_count, unexpected_count, unexpected_examples "
                           "from quality.gx_results order by rule").fetchall()
    con.close()
    assert ("gx:expect_column_values_to_be_in_set:sex", False, 40, 1, '["X"]') in recorded
    assert all(r[2] == 40 for r in recorded if r[0].endswith(":cin") and "unique" not in r[0])


def test_worker_validates_deliveries_of_one_chunk_while_the_next_is_typed(settings, contracts, tmp_path):
    """Three monthly registry files of one chunk each: the worker validates them (the
    ingestion types the next file meanwhile), and finds what one process finds."""
    months = ["2025-01", "2025-02", "2025-03"]
    for n, month in enumerate(months):
        rows = [person(i) for i in range(12)]
        rows[n + 2]["sex"] = "X"
        rows[11]["birth_date"] = "01/01/1850" if month == "2025-02" else rows[11]["birth_date"]
        _write_people(settings, contracts, rows, name=f"registre_{month}.csv")
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=100, workers=1)
    validator.start(wait=True)
    summary = _ingest(settings, contracts, validator)
    assert validator.worker_chunks == 3 and validator.batches == 3
    by_worker = _quarantine(settings)
    assert [f.rows_quarantined for f in summary.files] == [1, 2, 1]
    assert {(name, row, rule) for name, row, rule, _, _ in by_worker} == {
        ("registre_2025-01.csv", 3, "gx:expect_column_values_to_be_in_set:sex"),
        ("registre_2025-02.csv", 4, "gx:expect_column_values_to_be_in_set:sex"),
        ("registre_2025-02.csv", 12, "gx:expect_column_values_to_be_between:birth_date"),
        ("registre_2025-03.csv", 5, "gx:expect_column_values_to_be_in_set:sex")}
    con = duckdb.connect(str(settings.store_path), read_only=True)
    recorded = con.execute("select batch, count(*), sum(unexpected_count), max(chunks) from quality.gx_results "
                           "group by batch order by batch").fetchall()
    con.close()
    assert [(b, n > 0, bad, chunks) for b, n, bad, chunks in recorded] == [
        ("2025-01", True, 1, 1), ("2025-02", True, 2, 1), ("2025-03", True, 1, 1)]

    # the same deliveries in one process (no worker): the same quarantined rows and messages
    alone = Settings(home=tmp_path / "alone", key_value=settings.key_value)
    partner = contracts["beneficiaries"].partner
    for month in months:
        target = alone.landing_dir / partner / f"registre_{month}.csv"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((settings.landing_dir / partner / f"registre_{month}.csv").read_bytes())
    _ingest(alone, contracts, SuiteValidator(alone.seeds_dir, run_id="run-gx", workers=0))
    assert _quarantine(alone) == by_worker


def test_small_deliveries_do_not_start_the_worker(settings, contracts, monkeypatch):
    """Importing GX in a worker costs more than validating a few small deliveries here."""
    started = []
    monkeypatch.setattr(SuiteValidator, "start", lambda self, wait=False: started.append(self))
    for n, month in enumerate(("2025-01", "2025-02")):
        _write_people(settings, contracts, [person(i) for i in range(n, 12 + n)], name=f"registre_{month}.csv")
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=100, workers=1)
    _ingest(settings, contracts, validator)
    assert not started and validator.batches == 2
    monkeypatch.setattr(gxmod, "WORKER_START_ROWS", 10)
    _write_people(settings, contracts, [person(i) for i in range(2, 14)], name="registre_2025-03.csv")
    _ingest(settings, contracts, validator)
    assert started


def _gx_built_here(monkeypatch) -> list[str]:
    """As in a process that has not imported GX: the names of the threads that build this
    process's GX context, in order."""
    built_on = []

    class Recording(gxmod._GX):
        def __init__(self):
            built_on.append(threading.current_thread().name)
            super().__init__()

    monkeypatch.setattr(gxmod, "_GX", Recording)
    monkeypatch.setattr(gxmod, "_GX_SINGLETON", None)
    monkeypatch.setattr(gxmod, "_GX_IMPORT", None)
    return built_on


def test_gx_is_imported_in_a_thread_while_the_next_file_is_typed(settings, contracts, monkeypatch):
    """A delivery validated in this process (at commit, after the next file is read and
    typed) starts this process's GX import when it is typed, in a background thread."""
    built_on = _gx_built_here(monkeypatch)
    for n, month in enumerate(("2025-01", "2025-02")):
        rows = [person(i) for i in range(12)]
        rows[n + 2]["sex"] = "X"
        _write_people(settings, contracts, rows, name=f"registre_{month}.csv")
    summary = _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx", workers=0))
    assert built_on == ["jisr-gx-import"]
    assert [f.rows_quarantined for f in summary.files] == [1, 1]
    assert {(name, row, rule) for name, row, rule, _, _ in _quarantine(settings)} == {
        ("registre_2025-01.csv", 3, "gx:expect_column_values_to_be_in_set:sex"),
        ("registre_2025-02.csv", 4, "gx:expect_column_values_to_be_in_set:sex")}


def test_a_process_without_gx_hands_deliveries_of_few_chunks_whole_to_the_worker(settings, contracts, monkeypatch):
    """A monthly refresh: deliveries of up to two chunks per worker go to the worker even
    while it imports GX, and the ingestion process never imports GX; a larger delivery is
    shared, and makes this process import GX."""
    built_here = _gx_built_here(monkeypatch)
    monkeypatch.setattr(gxmod, "WORKER_START_ROWS", 10)
    for n, month in enumerate(("2025-01", "2025-02")):
        rows = [person(i) for i in range(12)]  # two chunks of at most 7 rows
        rows[n + 2]["sex"] = "X"
        _write_people(settings, contracts, rows, name=f"registre_{month}.csv")
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=7, workers=1)
    summary = _ingest(settings, contracts, validator)  # the worker starts at the first delivery, not warmed up
    assert built_here == []
    assert validator.worker_chunks == 4 and validator.batches == 2
    assert [f.rows_quarantined for f in summary.files] == [1, 1]
    assert {(name, row, rule) for name, row, rule, _, _ in _quarantine(settings)} == {
        ("registre_2025-01.csv", 3, "gx:expect_column_values_to_be_in_set:sex"),
        ("registre_2025-02.csv", 4, "gx:expect_column_values_to_be_in_set:sex")}

    rows = [person(i) for i in range(20)]  # three chunks: shared with this process
    rows[7]["sex"] = "X"
    _write_people(settings, contracts, rows, name="registre_2025-03.csv")
    summary = _ingest(settings, contracts, validator)
    assert built_here == ["jisr-gx-import"]
    assert [f.rows_quarantined for f in summary.files if f.status == "loaded"] == [1]
    assert ("registre_2025-03.csv", 8, "gx:expect_column_values_to_be_in_set:sex") in {
        (name, row, rule) for name, row, rule, _, _ in _quarantine(settings)}


def test_a_delivery_queued_behind_a_failing_warm_up_is_validated_here(settings, contracts, monkeypatch):
    """Handed to the worker while it imports GX, and that import fails: the ingestion
    stops the worker and validates the delivery itself."""
    monkeypatch.setattr(gxmod, "_warm_up", _failing_warm_up)  # what the spawned worker runs
    monkeypatch.setattr(gxmod, "_GX_SINGLETON", None)
    monkeypatch.setattr(gxmod, "_GX_IMPORT", None)
    monkeypatch.setattr(gxmod, "WORKER_START_ROWS", 10)
    handed, submit_to_worker = [], SuiteValidator._submit

    def submit(self, fn, contract, *args):
        future = submit_to_worker(self, fn, contract, *args)
        handed.append(future is not None)
        return future

    monkeypatch.setattr(SuiteValidator, "_submit", submit)
    rows = [person(i) for i in range(12)]
    rows[5]["sex"] = "X"
    _write_people(settings, contracts, rows)
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=100, workers=1)
    summary = _ingest(settings, contracts, validator)
    assert handed == [True]
    assert validator.workers == 0 and validator.worker_chunks == 0 and validator.batches == 1
    assert summary.files[0].rows_quarantined == 1
    assert {(row, rule) for _, row, rule, _, _ in _quarantine(settings)} == {
        (6, "gx:expect_column_values_to_be_in_set:sex")}


def test_a_failing_background_import_of_gx_fails_the_validation(settings, contracts, monkeypatch):
    """The thread importing GX keeps its error to itself; validating imports again and raises
    it, so no delivery is loaded unvalidated."""
    import pytest

    tried_on = []

    class Broken:
        def __init__(self):
            tried_on.append(threading.current_thread().name)
            raise ImportError("great_expectations is broken here")

    monkeypatch.setattr(gxmod, "_GX", Broken)
    monkeypatch.setattr(gxmod, "_GX_SINGLETON", None)
    monkeypatch.setattr(gxmod, "_GX_IMPORT", None)
    _write_people(settings, contracts, [person(i) for i in range(12)])
    with pytest.raises(ImportError, match="great_expectations is broken here"):
        _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx", workers=0))
    assert tried_on == ["jisr-gx-import", "MainThread"]  # failed in the thread, then raised here
    con = duckdb.connect(str(settings.store_path), read_only=True)
    assert con.execute("select count(*) from raw.beneficiaries").fetchone()[0] == 0
    con.close()


def _failing_warm_up():
    raise RuntimeError("this worker cannot import GX")


def test_suite_validator_validates_alone_when_its_worker_cannot_start(settings, contracts, monkeypatch):
    monkeypatch.setattr(gxmod, "_warm_up", _failing_warm_up)  # what the spawned worker runs
    rows = [person(i) for i in range(20)]
    rows[5]["sex"] = "X"
    _write_people(settings, contracts, rows)
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=7, workers=1)
    validator.start(wait=True)
    assert validator.workers == 0 and validator._pool is None
    summary = _ingest(settings, contracts, validator)
    assert validator.worker_chunks == 0
    assert summary.files[0].rows_quarantined == 1
    assert {(row, rule) for _, row, rule, _, _ in _quarantine(settings)} == {
        (6, "gx:expect_column_values_to_be_in_set:sex")}


def test_suite_validator_validates_alone_when_its_worker_dies_idle(settings, contracts):
    import os
    import signal

    rows = [person(i) for i in range(20)]
    rows[5]["sex"] = "X"
    _write_people(settings, contracts, rows)
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=7, workers=1)
    validator.start(wait=True)
    for process in list(validator._pool._processes.values()):  # the worker is killed while it waits
        os.kill(process.pid, signal.SIGKILL)
    deadline = time.time() + 30
    while not validator._pool._broken and time.time() < deadline:
        time.sleep(0.05)
    summary = _ingest(settings, contracts, validator)
    assert validator.workers == 0 and validator.worker_chunks == 0
    assert {(row, rule) for _, row, rule, _, _ in _quarantine(settings)} == {
        (6, "gx:expect_column_values_to_be_in_set:sex")}
    assert summary.files[0].rows_quarantined == 1


_VALIDATE_CHUNK = gxmod.validate_chunk


def _validate_chunk_slowly_in_a_worker(*args):
    """``validate_chunk``, but a worker process takes long enough to be killed mid-chunk."""
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        time.sleep(60)
    return _VALIDATE_CHUNK(*args)


def test_suite_validator_validates_here_when_its_worker_dies_holding_a_delivery(settings, contracts, monkeypatch):
    """A one-chunk delivery handed to the worker when it was typed, and the worker killed
    before the ingestion commits it: the ingestion validates it itself, nothing is lost."""
    import os
    import signal

    for n, month in enumerate(("2025-01", "2025-02")):
        rows = [person(i) for i in range(12)]
        rows[n + 2]["sex"] = "X"
        _write_people(settings, contracts, rows, name=f"registre_{month}.csv")
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=100, workers=1)
    validator.start(wait=True)
    monkeypatch.setattr(gxmod, "validate_chunk", _validate_chunk_slowly_in_a_worker)
    handed, submit_to_worker = [], SuiteValidator._submit

    def submit_then_kill_the_worker(self, fn, contract, *args):
        future = submit_to_worker(self, fn, contract, *args)
        if future is not None:
            handed.append(contract.source)
            for process in list(self._pool._processes.values()):
                os.kill(process.pid, signal.SIGKILL)
            deadline = time.monotonic() + 30  # until the pool knows: no later delivery is handed over
            while not self._pool._broken and time.monotonic() < deadline:
                time.sleep(0.01)
        return future

    monkeypatch.setattr(SuiteValidator, "_submit", submit_then_kill_the_worker)
    started = time.monotonic()
    summary = _ingest(settings, contracts, validator)
    assert handed == ["beneficiaries"]  # the first delivery went to the worker; then none was left
    assert time.monotonic() - started < 30  # nobody waited for the killed worker's chunk
    assert validator.workers == 0 and validator.worker_chunks == 0 and validator.batches == 2
    assert [f.rows_quarantined for f in summary.files] == [1, 1]
    assert {(name, row, rule) for name, row, rule, _, _ in _quarantine(settings)} == {
        ("registre_2025-01.csv", 3, "gx:expect_column_values_to_be_in_set:sex"),
        ("registre_2025-02.csv", 4, "gx:expect_column_values_to_be_in_set:sex")}


def test_a_failed_commit_does_not_wait_for_the_worker_holding_its_delivery(settings, contracts, monkeypatch):
    """The commit of a delivery fails while the worker still validates it: the error reaches
    the caller at once, the worker is stopped without waiting for its chunk, nothing of the
    delivery is written."""
    import os
    import signal

    import pytest

    import ingestion.load as load

    _write_people(settings, contracts, [person(i) for i in range(12)])
    validator = SuiteValidator(settings.seeds_dir, run_id="run-gx", chunk_rows=100, workers=1)
    validator.start(wait=True)
    workers = [p.pid for p in validator._pool._processes.values()]
    monkeypatch.setattr(gxmod, "validate_chunk", _validate_chunk_slowly_in_a_worker)

    def failing(*args):
        raise RuntimeError("the store's disk is full")

    monkeypatch.setattr(load, "_violations_sql", failing)
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="disk is full"):
            _ingest(settings, contracts, validator)
        assert time.monotonic() - started < 30  # the worker's chunk (60 s) was not waited for
        assert validator._pool is None
    finally:
        for pid in workers:  # the worker would finish its chunk, then exit
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    con = duckdb.connect(str(settings.store_path), read_only=True)
    try:
        assert con.execute("select count(*) from raw.beneficiaries").fetchone()[0] == 0
        assert con.execute("select count(*) from meta.deliveries").fetchone()[0] == 0
    finally:
        con.close()


def test_suites_do_not_fingerprint_or_keep_each_batch(settings, contracts, monkeypatch):
    """GX hashes every value of a pandas batch to label it (most of the time of a large
    delivery) and keeps every result in its context's store; the suites turn both off, and
    still find the failing rows."""
    from great_expectations.execution_engine import pandas_execution_engine

    hashed = []
    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", lambda df: hashed.append(len(df)) or "x")
    rows = [person(i) for i in range(12)]
    rows[3]["sex"] = "X"
    _write_people(settings, contracts, rows)
    summary = _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx"))
    assert summary.files[0].rows_quarantined == 1
    assert hashed == []
    assert gxmod._gx().context.validation_results_store.list_keys() == []


def test_suite_validator_passes_clean_deliveries_untouched(settings, contracts):
    summary = ingest_sample(settings, contracts, validators=[SuiteValidator(settings.seeds_dir, run_id="run-gx")],
                            run_id="run-gx")
    assert all(f.rows_quarantined == 0 for f in summary.files)
    con = duckdb.connect()
    con.execute(f"attach '{settings.store_path}' as ingest (read_only)")
    results = check_suite_validated(con, config_for(settings), "run-gx", sources=["payments", "loans"])
    con.close()
    assert {r.target: r.passed for r in results} == {s: True for s in ("beneficiaries", "enrolments", "loans",
                                                                        "payments", "programmes")}
    assert "1 delivery(ies) validated" in next(r for r in results if r.target == "payments").description
    assert "no new delivery" in next(r for r in results if r.target == "loans").description


def test_suite_validated_check_fails_for_a_delivery_the_suite_never_saw(settings, contracts):
    ingest_sample(settings, contracts, run_id="run-without-gx")
    con = duckdb.connect()
    con.execute(f"attach '{settings.store_path}' as ingest (read_only)")
    results = check_suite_validated(con, config_for(settings), "run-without-gx")
    con.close()
    assert results and not any(r.passed for r in results)
    assert "not validated" in results[0].description


def test_quality_report_shows_validation_and_withholds_identifiers(settings, contracts):
    rows = [person(i) for i in range(6)]
    rows[2]["cin"] = "QQ1"
    rows[3]["sex"] = "Z"
    _write_people(settings, contracts, rows)
    _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx"))
    path = write_report(settings, "run-gx")
    assert path == settings.reports_dir / "run-gx" / "quality" / "index.html"
    page = path.read_text()
    assert "expect_column_values_to_match_regex" in page and "FAILED" in page
    assert "beneficiaries 2025-01" in page and "registre_2025-01.csv" in page
    assert "QQ1" not in page and not any(f"AB{100000 + i}" in page for i in range(6))
    assert "Hélène" not in page


def test_suite_validator_quarantines_dates_outside_the_nanosecond_range(settings, contracts):
    rows = [person(i) for i in range(4)]
    rows[1]["birth_date"] = "01/01/1500"  # before 1678: pandas cannot hold it in nanoseconds
    _write_people(settings, contracts, rows)
    summary = _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx"))
    assert summary.files[0].rows_loaded == 3
    found = {(row, rule) for _, row, rule, _, _ in _quarantine(settings)}
    assert found == {(2, "gx:expect_column_values_to_be_between:birth_date")}
    assert "1500-01-01" in _quarantine(settings)[0][4]


def test_suite_validator_records_the_rows_a_conditional_expectation_evaluated(settings, contracts):
    rows = [person(i, has_disability="") for i in range(5)]  # optional column, empty in every row
    rows[0]["socio_economic_score"] = "n/a"
    _write_people(settings, contracts, rows)
    _ingest(settings, contracts, SuiteValidator(settings.seeds_dir, run_id="run-gx"))
    con = duckdb.connect(str(settings.store_path), read_only=True)
    counts = dict(con.execute("select column_name, element_count from quality.gx_results "
                              "where expectation = 'expect_column_values_to_not_be_null'").fetchall())
    con.close()
    assert counts["has_disability__typed"] == 0  # no delivered value to parse
    assert counts["socio_economic_score__typed"] == 5 and counts["cin"] == 5


def test_fetch_frame_gives_the_types_the_expectations_expect(tmp_path):
    con = duckdb.connect(str(tmp_path / "f.duckdb"))
    con.execute("create table t as select i::bigint as _source_row, case when i > 0 then 'v' || i end as text, "
                "case when i > 0 then i end::integer as n, i::integer as n_full, case when i > 0 then i % 2 = 0 end as flag, "
                "(i + 0.25)::decimal(12, 2) as amount, case when i = 1 then date '1500-01-01' else date '2020-01-02' end as old, "
                "date '2020-01-02' + i::integer as day, timestamp '2025-01-01 10:00:00' as at from range(3) r(i)")
    frame = gxmod.fetch_frame(con, "select * from t order by _source_row")
    expected = con.execute("select * from t order by _source_row").df()
    dates = {"old": "datetime64[us]", "day": "datetime64[ns]", "at": "datetime64[ns]"}
    assert {c: str(t) for c, t in frame.dtypes.items()} == {c: dates.get(c, str(t)) for c, t in expected.dtypes.items()}
    assert str(frame.dtypes["n"]) == "Int32" and str(frame.dtypes["flag"]) == "boolean"
    for column in frame.columns:
        assert frame[column].tolist() == expected[column].tolist() or column == "text", column
    assert frame["text"].isna().tolist() == [True, False, False] and frame["text"].tolist()[1:] == ["v1", "v2"]


def _typed_batch(contract, rows):
    """A typed batch as ingestion builds it (text columns, then ``<column>__typed``)."""
    from ingestion.load import typed_expr

    con = duckdb.connect()
    names = [c.name for c in contract.columns]
    con.execute(f"create table stg (_source_row bigint, {', '.join(n + ' varchar' for n in names)})")
    con.executemany(f"insert into stg values ({', '.join('?' * (len(names) + 1))})",
                    [[i + 1, *(row.get(n) for n in names)] for i, row in enumerate(rows)])
    typed = ", ".join(f"{typed_expr(contract, c)} as {c.name}__typed" for c in contract.columns)
    con.execute(f"create table typed_delivery as select *, {typed} from stg")
    return con


def test_suite_validator_lists_every_failing_row_of_a_large_batch(contracts, settings):
    # more failing rows than GX's partial lists (20) hold: every one must reach quarantine
    contract = contracts["occupancy"]
    rows = [{"establishment_id": f"EPS-{i:04d}", "month": "2025-01" if i % 3 else "janvier", "residents": "10",
             "admissions": "1", "departures": "0"} for i in range(300)]
    con = _typed_batch(contract, rows)
    found = SuiteValidator(settings.seeds_dir, run_id="run-gx")(con, contract, "typed_delivery", "2025-01")
    failing = sorted(r for r, rule, _, _ in found if rule == "gx:expect_column_values_to_match_regex:month")
    assert failing == [i + 1 for i in range(300) if i % 3 == 0] and len(failing) == 100


def test_suite_validator_quarantines_both_rows_of_a_duplicate_compound_key(contracts, settings):
    contract = contracts["occupancy"]
    rows = [{"establishment_id": f"EPS-{i % 4:04d}", "month": "2025-01", "residents": str(i), "admissions": "1",
             "departures": "0", "inspection_score": None} for i in range(5)]  # rows 1 and 5 share a key
    con = _typed_batch(contract, rows)
    found = SuiteValidator(settings.seeds_dir, run_id="run-gx")(con, contract, "typed_delivery", "2025-01")
    assert {(r, rule) for r, rule, _, _ in found} == {
        (1, "gx:expect_compound_columns_to_be_unique:establishment_id,month"),
        (5, "gx:expect_compound_columns_to_be_unique:establishment_id,month")}
    message = next(m for r, _, _, m in found if r == 5)
    assert "EPS-0000" in message and "2025-01" in message
