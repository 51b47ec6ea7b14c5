"""Ingestion behaviour: bad files are rejected with a report, bad rows are quarantined,
every delivered row is accounted for, re-deliveries are idempotent or supersede."""

import dataclasses
import json
import re
from pathlib import Path

import duckdb
import pytest

from ingestion.load import Ingestor
from ingestion.store import KeyMismatchError
from tests.conftest import PROGRAMME, TEST_KEY, enrolment, payment, person, write_delivery


def make_ingestor(settings, contracts, key=TEST_KEY, **kw):
    return Ingestor(settings.store_path, contracts, key, seeds_dir=settings.seeds_dir,
                    rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir, code_version="test", **kw)


def ingest(settings, contracts, **kw):
    return make_ingestor(settings, contracts, **kw).ingest(settings.landing_dir)


def store(settings):
    return duckdb.connect(str(settings.store_path), read_only=True)


def base_delivery(settings, contracts, n=6):
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(n)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv", [enrolment(i) for i in range(n)])


def result_for(summary, file_name):
    return next(f for f in summary.files if f.file_name == file_name)


def test_ingest_loads_valid_delivery_with_lineage(settings, contracts):
    base_delivery(settings, contracts)
    summary = ingest(settings, contracts)
    assert summary.totals["rows_quarantined"] == 0
    assert summary.totals["rows_loaded"] == 1 + 6 + 6
    con = store(settings)
    row = con.execute("select programme_code, budget_mad, eligibility_score_max, start_date, _batch, _source_row, "
                      "_file_name, length(_content_hash), _is_current from raw.programmes").fetchone()
    assert row[0] == "DSD-01" and float(row[1]) == 1500000.50 and row[2] == 9.3
    assert str(row[3]) == "2024-01-01" and row[4] == "2025-01" and row[5] == 1
    assert row[6] == "programmes_2025-01.csv" and row[7] == 64 and row[8] is True
    assert con.execute("select count(distinct person_key) from raw.beneficiaries").fetchone()[0] == 6
    # enrolments link to the registry through the pseudonym
    assert con.execute("select count(*) from raw.enrolments e join raw.beneficiaries b using (person_key)").fetchone()[0] == 6


def test_ingest_never_writes_clear_identifiers(settings, contracts):
    base_delivery(settings, contracts)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(0, cin="ZZ12")])  # quarantined row: its values are kept, pseudonymised
    ingest(settings, contracts)
    con = store(settings)
    clear = {f"AB{100000 + i}" for i in range(6)} | {"ZZ12", "Aït Benhaddou"} | {f"06{12000000 + i}" for i in range(6)}
    tables = con.execute("select table_schema, table_name from information_schema.tables").fetchall()
    for schema, table in tables:
        text = con.execute(f"select * from {schema}.{table}").fetchall()
        flat = " ".join(str(v) for row in text for v in row)
        assert not any(c in flat for c in clear), f"clear identifier in {schema}.{table}"
        assert "Hélène" not in flat


@pytest.mark.parametrize(
    "kind, writer, reason",
    [
        ("wrong encoding (UTF-8 for windows-1252)",
         lambda L, c: write_delivery(L, c["beneficiaries"], "registre_2025-01.csv", [person(1)], encoding="utf-8"),
         "wrong encoding: the file is UTF-8 but its contract says windows-1252"),
        ("wrong encoding (windows-1252 for UTF-8)",
         lambda L, c: write_delivery(L, c["establishments"], "etablissements_2025-01.csv",
                                     [{"establishment_id": "EPS-0001", "establishment_name": "Dar Al Atfal Médina",
                                       "establishment_type": "children", "region_code": "06", "province_code": "0601",
                                       "commune_code": "0601001", "capacity": "40"}], encoding="cp1252"),
         "wrong encoding"),
        ("wrong delimiter",
         lambda L, c: write_delivery(L, c["beneficiaries"], "registre_2025-01.csv", [person(1)], delimiter=","),
         "wrong delimiter: the contract says ';'-separated but the header looks ','-separated"),
        ("missing required columns",
         lambda L, c: write_delivery(L, c["enrolments"], "inscriptions_2025-01.csv", [enrolment(1)],
                                     headers=["id_inscription", "CIN", "programme", "date_entree", "date_sortie", "motif_sortie"]),
         "missing required column(s): programme_code (expected header 'code_programme')"),
        ("empty file",
         lambda L, c: (L / "msisf").mkdir(parents=True, exist_ok=True) or (L / "msisf" / "paiements_2025-01.csv").write_bytes(b""),
         "the file is empty (0 bytes)"),
        ("header only",
         lambda L, c: write_delivery(L, c["payments"], "paiements_2025-01.csv", []),
         "the file has a header but no data rows"),
        ("truncated",
         lambda L, c: (lambda p: p.write_bytes(p.read_bytes()[:-40]))(
             write_delivery(L, c["payments"], "paiements_2025-01.csv", [payment(i) for i in range(3)])),
         "truncated or malformed at line 4"),
        ("not JSON lines",
         lambda L, c: (L / "cdg_finance").mkdir(parents=True, exist_ok=True) or (L / "cdg_finance" / "loans_2025-01.jsonl").write_text("loan_id;amount\nL1;100\n"),
         "not valid JSON lines"),
        ("truncated JSON lines",
         lambda L, c: (L / "cdg_finance").mkdir(parents=True, exist_ok=True) or (L / "cdg_finance" / "loans_2025-01.jsonl").write_text(
             '{"loan_id": "L1", "borrower_cin": "AB100001", "programme_code": "DSD-01", "product": "agricultural", '
             '"principal_mad": 1000, "term_months": 12, "disbursement_date": "2025-01-02", "status": "active"}\n{"loan_id": "L2", "borr'),
         "not valid JSON lines"),
        ("not a workbook",
         lambda L, c: (L / "cdg_incubation").mkdir(parents=True, exist_ok=True) or (L / "cdg_incubation" / "ventures_2025-01.xlsx").write_text("a;b\n1;2\n"),
         "not a valid Excel workbook"),
        ("impossible month in the file name",
         lambda L, c: write_delivery(L, c["beneficiaries"], "registre_2025-13.csv", [person(1)]),
         "the month 2025-13 in the file name is not a calendar month"),
        ("file name matches no contract",
         lambda L, c: (L / "msisf").mkdir(parents=True, exist_ok=True) or (L / "msisf" / "beneficiaires.csv").write_text("x"),
         "no contract matches file name 'beneficiaires.csv'"),
        # a month in Arabic-Indic digits matched \d: it stopped the pass at the first date
        # computed from the month, or sorted after every month as the latest
        ("month in other digits than 0-9",
         lambda L, c: write_delivery(L, c["beneficiaries"], "registre_\u0662\u0660\u0662\u0665-\u0660\u0662.csv",
                                     [person(1)]),
         "no contract matches file name 'registre_\u0662\u0660\u0662\u0665-\u0660\u0662.csv'"),
    ],
)
def test_ingest_rejects_unreadable_file_with_report_and_loads_the_rest(settings, contracts, kind, writer, reason):
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    path = writer(settings.landing_dir, contracts)
    summary = ingest(settings, contracts)
    rejected = [f for f in summary.files if f.status == "rejected"]
    assert len(rejected) == 1, kind
    bad = rejected[0]
    assert reason in bad.reason, bad.reason
    report = Path(bad.report_path).read_text()
    assert bad.file_name in report and reason in report
    assert (settings.rejected_dir / bad.partner / bad.file_name).exists()
    assert not (settings.landing_dir / bad.partner / bad.file_name).exists()
    assert (settings.feedback_dir / bad.partner / Path(bad.report_path).name).exists()
    # the other file of the delivery still loads
    assert result_for(summary, "programmes_2025-01.csv").status == "loaded"
    con = store(settings)
    assert con.execute("select status, reason from meta.deliveries where file_name = ?", [bad.file_name]).fetchone() == ("rejected", bad.reason)
    del path


def test_a_windows_1252_file_with_lines_in_utf8_is_rejected_naming_them(settings, contracts):
    """A file pieced together from two exports, one of its lines written in UTF-8: read as
    Windows-1252 that line would load garbled ('mÃ©nages'), its names under other pseudonyms."""
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    path = write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                          [person(1), person(2), person(3)])
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].decode("cp1252").encode("utf-8")  # the second record, in UTF-8
    path.write_bytes(b"\n".join(lines))
    bad = result_for(ingest(settings, contracts), "registre_2025-01.csv")
    assert bad.status == "rejected", bad
    assert ("the file mixes encodings: line 3 is written in UTF-8 where line 2 is in windows-1252"
            in bad.reason), bad.reason
    with store(settings) as con:
        assert con.execute("select count(*) from raw.beneficiaries").fetchone()[0] == 0


def test_a_byte_windows_1252_lacks_is_located_by_its_line_in_a_large_file(settings, contracts, monkeypatch):
    """The line of an invalid byte is the file's, not one counted from the start of the block
    it was read in."""
    from ingestion import readers

    monkeypatch.setattr(readers, "CHUNK", 64)  # several blocks in a small file
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    path = write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                          [person(i) for i in range(8)])
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"urban", b"urb\x81n")  # 0x81: no character in windows-1252
    path.write_bytes(b"\n".join(lines))
    bad = result_for(ingest(settings, contracts), "registre_2025-01.csv")
    assert bad.status == "rejected" and "byte 0x81 at line 7 " in bad.reason, bad.reason


def test_a_date_in_a_year_before_1900_is_quarantined(settings, contracts):
    """A year typed 0205 for 2025 (or 0001, a null date of some systems) read as a date:
    the warehouse's calendar starts at the earliest date delivered and holds 100,000 days, so
    a year-205 payment left the months of the reference period out of the calendar, and the
    monthly marts built on it empty. The row is set aside with the bound, the others load."""
    base_delivery(settings, contracts, n=3)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(0), payment(1, paid_date="05/01/0205"), payment(2, paid_date="01/01/0001")])
    result = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2), result
    assert result.rules_failed.get("min:paid_date") == 2, result.rules_failed
    with store(settings) as con:
        assert con.execute("select min(paid_date) from raw.payments").fetchone()[0].year == 2025


def test_a_date_after_the_month_its_file_describes_is_quarantined(settings, contracts):
    """A registry extract of January cannot register someone in March (a typing error in
    the year or month): the row is set aside with the rule, the others load."""
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                   [person(1), person(2, registered_date="31/01/2025"), person(3, registered_date="02/03/2025")])
    summary = ingest(settings, contracts)
    registry = result_for(summary, "registre_2025-01.csv")
    assert (registry.rows_loaded, registry.rows_quarantined) == (2, 1)
    assert registry.rules_failed == {"rule:registered_by_file_month": 1}
    with store(settings) as con:
        assert con.execute("select source_row, message from quarantine.rows").fetchall() == [
            (3, "registre_2025-01.csv, row 3: rule registered_by_file_month failed: A person is registered by the end "
                "of the month the file describes (a later date is a typing error).")]


def _without_header_line(path: Path) -> Path:
    path.write_bytes(path.read_bytes().split(b"\n", 1)[1])
    return path


@pytest.mark.parametrize("delimiter, expected", [
    (None, "none of them a column name of the contract (is the header line missing?"),
    (",", "none of them a column name of the contract (values not shown)"),
])
def test_a_file_without_its_header_line_is_rejected_without_quoting_its_first_record(settings, contracts, delimiter,
                                                                                    expected):
    """The first line of a file delivered without its header line is a record: its identity
    number, names and phone number stay out of the ledger, the partner's report and the
    warehouse (the rejection names the problem, not the values)."""
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    _without_header_line(write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                                        [person(1), person(2)], delimiter=delimiter))
    summary = ingest(settings, contracts)
    bad = result_for(summary, "registre_2025-01.csv")
    assert bad.status == "rejected" and expected in bad.reason, bad.reason
    report = Path(bad.report_path).read_text()
    with store(settings) as con:
        logged = con.execute("select reason from meta.deliveries where file_name = 'registre_2025-01.csv'").fetchone()[0]
    for text in (bad.reason, report, logged):
        for clear in ("AB100001", "Hélène1", "Aït Benhaddou", "0612000001"):
            assert clear not in text, text


def test_the_partners_summary_names_the_key_a_duplicate_repeats(settings, contracts):
    base_delivery(settings, contracts, n=3)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(0), payment(1), payment(1)])
    ingest(settings, contracts)
    text = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.summary.txt").read_text()
    assert "duplicate_key: 2 (the key (payment_id (header 'id_paiement' in the file)) appears" in text, text


def test_a_json_lines_file_with_other_field_names_is_rejected_without_quoting_them(settings, contracts):
    """A field name that is not the contract's is not quoted: a producer may key its objects
    by a value (an identity number); the names the contract knows are."""
    path = settings.landing_dir / "cdg_finance" / "loans_2025-01.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text('{"id_pret": "L1", "cin_emprunteur": "AB100001", "montant": 1000}\n'
                    '{"loan_id": "L2", "AB100002": {"montant": 1000}}\n')
    bad = result_for(ingest(settings, contracts), "loans_2025-01.jsonl")
    assert bad.status == "rejected"
    assert bad.reason.endswith("; found fields: (not shown), (not shown), (not shown), 'loan_id', (not shown) (a cell "
                               "that is no header name of the contract is not shown: it may be a value, such as an "
                               "identity number or a name in a header line run into the first record)"), bad.reason
    assert "AB100002" not in bad.reason and "id_pret" not in bad.reason


def test_a_header_line_run_into_the_first_record_shows_none_of_its_values(settings, contracts):
    """A header line without its line break runs into the first record: its last cell is a
    header glued to an identity number, the cells after it the person's values. The line
    names columns of the contract, so it was quoted whole in the rejection, which reaches
    the ledger, the published ``fct_deliveries`` and logs: only header names are shown."""
    people = [person(1), person(2)]
    path = write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", people)
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n", b"", 1))
    bad = result_for(ingest(settings, contracts), "registre_2025-01.csv")
    assert bad.status == "rejected" and "(not shown)" in bad.reason, bad.reason
    for value in ("AB100001", "Hélène1", "Benhaddou", "M00000", "0612000001"):
        assert value not in bad.reason, (value, bad.reason)
    with store(settings) as con:
        [(reason,)] = con.execute("select reason from meta.deliveries where file_name = 'registre_2025-01.csv'").fetchall()
    assert reason == bad.reason


def test_a_file_with_a_header_line_is_rejected_naming_its_headers(settings, contracts):
    """A header line names columns: a missing one is reported with the headers found."""
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv", [enrolment(1)],
                   headers=["id_inscription", "CIN", "programme", "date_entree", "date_sortie", "motif_sortie"])
    bad = result_for(ingest(settings, contracts), "inscriptions_2025-01.csv")
    assert "found columns: 'id_inscription', 'CIN', (not shown), 'date_entree'" in bad.reason  # 'programme': not a header of the contract


def service_request(i: int) -> dict:
    return {"request_id": f"REQ-2026-{i:05d}", "applicant_cin": f"AB{100000 + i}", "service_type": "complaint",
            "channel": "web", "region_code": "06", "submitted_at": "2026-03-02T08:00:00Z", "resolved_at": None,
            "status": "submitted"}


LINE_ENDINGS = {"LF": (b"\n", True), "CRLF": (b"\r\n", True), "LF, none after the last line": (b"\n", False)}


def jsonl_delivery(landing, contracts, edit, n=10, endings="LF", name="requests_2026-03.jsonl"):
    """A JSON-lines delivery of n records whose lines ``edit`` changes (a list of bytes)."""
    path = write_delivery(landing, contracts["service_requests"], name, [service_request(i) for i in range(n)])
    newline, last = LINE_ENDINGS[endings]
    path.write_bytes(newline.join(edit(path.read_bytes().split(b"\n")[:-1])) + (newline if last else b""))
    return path


def _set(lines, number, text):
    lines[number - 1] = text
    return lines


@pytest.mark.parametrize(
    "edit, endings, line, record, problem",
    [
        (lambda ls: _set(ls, 1, b"not json"), "LF", 1, 1, "Expecting value at column 1"),
        (lambda ls: _set(ls, 3, b"not json"), "LF", 3, 3, "Expecting value at column 1"),
        (lambda ls: _set(ls, 6, ls[5][:40]), "LF", 6, 6, "Unterminated string"),
        (lambda ls: _set(ls, 6, ls[5][:40]), "CRLF", 6, 6, "Unterminated string"),
        (lambda ls: _set(ls, 3, b"not json"), "CRLF", 3, 3, "Expecting value at column 1"),
        (lambda ls: _set(ls, 10, b"not json"), "LF", 10, 10, "Expecting value at column 1"),
        (lambda ls: ls[:2] + [b"", b"  "] + [b"not json"] + ls[5:], "LF", 5, 3, "Expecting value at column 1"),
        (lambda ls: _set(ls, 2, b"[1, 2]"), "LF", 2, 2, "an array where a JSON object is expected"),
        (lambda ls: _set(ls, 4, ls[3][:-1] + b', "channel": "web"}'), "LF", 4, 4, "the field 'channel' appears twice"),
        # DuckDB's reader accepts a trailing comma (line 2): it fails on line 6
        (lambda ls: _set(_set(ls, 2, ls[1][:-1] + b",}"), 6, ls[5][:40]), "LF", 6, 6, "Unterminated string"),
    ],
    ids=["first line", "middle line", "truncated line", "truncated line, CRLF", "middle line, CRLF", "last line",
         "after blank lines", "not an object", "a key twice", "after a line only DuckDB reads"],
)
def test_a_bad_json_line_is_staged_apart_named_by_its_line_number(contracts, tmp_path, edit, endings, line, record,
                                                                     problem):
    """DuckDB's reader counts records (not blank lines) and names the record after a malformed one:
    the line is found by reading the file, the other records are read without it, numbered as
    records of the file."""
    from ingestion.readers import stage_file

    path = jsonl_delivery(tmp_path / "landing", contracts, edit, endings=endings)
    con = duckdb.connect()
    staged = stage_file(con, path, contracts["service_requests"])
    [(row, message)] = con.execute(f"select * from {staged.malformed}").fetchall()
    assert row == record and message.startswith(f"line {line}: ") and problem in message, message
    numbers = [r[0] for r in con.execute(f"select _source_row from {staged.table} order by 1").fetchall()]
    assert sorted(numbers + [record]) == list(range(1, staged.rows + 1))
    assert str(tmp_path) not in message


@pytest.mark.parametrize(
    "edit, endings, line, problem",
    [
        (lambda ls: _set(ls, 10, ls[9][:40]), "LF, none after the last line", 10, "Unterminated string"),
        (lambda ls: _set(ls, 10, b"not json"), "LF, none after the last line", 10, "Expecting value at column 1"),
        (lambda ls: [b"not json"] * 6 + ls[6:], "LF", 1, "Expecting value at column 1"),
    ],
    ids=["last line truncated, no final newline", "last line, no final newline", "most lines"],
)
def test_a_json_lines_file_cut_off_or_mostly_bad_is_rejected_naming_the_line(contracts, tmp_path, edit, endings, line,
                                                                              problem):
    from ingestion.readers import FileRejected, stage_file

    path = jsonl_delivery(tmp_path / "landing", contracts, edit, endings=endings)
    with pytest.raises(FileRejected) as rejected:
        stage_file(duckdb.connect(), path, contracts["service_requests"])
    assert rejected.value.reason.startswith(f"not valid JSON lines: digital/requests_2026-03.jsonl, line {line}: ")
    assert problem in rejected.value.reason
    assert str(tmp_path) not in rejected.value.reason


def test_a_bad_json_line_after_the_sampled_lines_is_named_by_its_line_number(contracts, tmp_path):
    from ingestion.readers import stage_jsonl

    path = jsonl_delivery(tmp_path / "landing", contracts, lambda ls: _set(ls, 30, ls[29][:40]), n=40)
    con = duckdb.connect()
    staged = stage_jsonl(con, path, contracts["service_requests"], "staged", sample_lines=5)
    [(row, message)] = con.execute(f"select * from {staged.malformed}").fetchall()
    assert row == 30 and message.startswith("line 30: Unterminated string")


def test_a_json_field_first_seen_after_the_sampled_lines_is_read(settings, contracts):
    """A producer that omits null fields writes a write-off on the 1002nd loan only: its
    fields are read (not loaded as NULL, failing write_off_consistent), and a field the
    contract does not know, first seen there too, is reported."""
    base_delivery(settings, contracts, n=2)
    loan = {"borrower_cin": "AB100001", "programme_code": "DSD-01", "product": "agricultural", "principal_mad": 1000,
            "term_months": 12, "disbursement_date": "2025-01-02", "status": "active"}
    path = settings.landing_dir / "cdg_finance" / "loans_2025-01.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [dict(loan, loan_id=f"L{i}") for i in range(1001)]
    records.append(dict(loan, loan_id="L_wo", status="written_off", written_off_date="2025-01-20",
                        written_off_mad=800, branch="Rabat"))
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = ingest(settings, contracts)
    result = result_for(summary, "loans_2025-01.jsonl")
    assert (result.rows_loaded, result.rows_quarantined) == (1002, 0), result.rules_failed
    assert result.warnings == ["field 9 of the file has a header the contract does not know and was ignored (the "
                               "header is not shown: it may be a value, such as an identity number or a name)"]
    con = store(settings)
    assert con.execute("select written_off_date::varchar, written_off_mad::double from raw.loans "
                       "where loan_id = 'L_wo'").fetchone() == ("2025-01-20", 800.0)


def test_a_bad_json_line_is_quarantined_and_reported_without_a_machine_path(settings, contracts):
    jsonl_delivery(settings.landing_dir, contracts, lambda ls: _set(ls, 6, ls[5][:40]))
    summary = ingest(settings, contracts)
    result = result_for(summary, "requests_2026-03.jsonl")
    assert (result.status, result.rows_delivered, result.rows_loaded, result.rows_quarantined) == ("loaded", 10, 9, 1)
    con = store(settings)
    [(row, rule, message, values)] = con.execute("select source_row, rule, message, values_json from quarantine.rows").fetchall()
    assert (row, rule, values) == (6, "malformed_row", None)
    assert message.startswith("requests_2026-03.jsonl, row 6: line 6: Unterminated string starting at column")
    assert [r[0] for r in con.execute("select _source_row from raw.service_requests order by 1").fetchall()] == [
        1, 2, 3, 4, 5, 7, 8, 9, 10]
    text = (settings.feedback_dir / "digital" / "requests_2026-03.jsonl.rejected_rows.csv").read_text()
    assert "line 6: Unterminated string" in text and str(settings.home) not in text


def test_the_rejection_report_of_a_json_lines_file_names_the_line_and_no_machine_path(settings, contracts):
    cut_off_jsonl_delivery(settings.landing_dir, contracts)
    summary = ingest(settings, contracts)
    bad = result_for(summary, "requests_2026-03.jsonl")
    assert bad.status == "rejected"
    for report in (Path(bad.report_path), settings.feedback_dir / "digital" / "requests_2026-03.jsonl.report.txt"):
        text = report.read_text()
        assert "digital/requests_2026-03.jsonl, line 10: Unterminated string starting at column" in text
        assert str(settings.home) not in text


@pytest.mark.parametrize(
    "row, rule, message",
    [
        (person(90, birth_date="31/02/1990"), "type:birth_date", "column birth_date value '31/02/1990' is not a valid date"),
        # a two-digit year was read as the year 85 (then refused as below the minimum: the
        # reason was wrong), 'epoch' as 1970-01-01, a five-digit ISO year as such
        (person(96, birth_date="01/02/85"), "type:birth_date",
         "column birth_date value '01/02/85' is not a valid date (written %d/%m/%Y with a four-digit year, or yyyy-mm-dd)"),
        (person(97, birth_date="epoch"), "type:birth_date", "column birth_date value 'epoch' is not a valid date"),
        (person(98, birth_date="11985-02-01"), "type:birth_date", "value '11985-02-01' is not a valid date"),
        (person(91, region_code="13", province_code="1301", commune_code="1301001"), "allowed:region_code", "value '13' is not one of"),
        (person(92, cin="A12"), "pattern:cin", "column cin value (identifier withheld) does not match the pattern"),
        (person(93, sex=""), "required:sex", "column sex is required but empty"),
        (person(94, socio_economic_score="-3"), "min:socio_economic_score", "is below the minimum 0"),
        (person(95, province_code="0701", commune_code="0701001"), "rule:province_in_region", "rule province_in_region failed"),
    ],
)
def test_ingest_quarantines_rows_breaking_a_rule(settings, contracts, row, rule, message):
    rows = [person(i) for i in range(5)] + [row]
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", rows)
    summary = ingest(settings, contracts)
    f = result_for(summary, "registre_2025-01.csv")
    assert (f.rows_delivered, f.rows_loaded, f.rows_quarantined) == (6, 5, 1)
    con = store(settings)
    got = con.execute("select source_row, rule, message from quarantine.rows").fetchall()
    assert [(r[0], r[1]) for r in got] == [(6, rule)]
    assert got[0][2].startswith("registre_2025-01.csv, row 6: ") and message in got[0][2]
    feedback = (settings.feedback_dir / "msisf" / "registre_2025-01.csv.rejected_rows.csv").read_text()
    assert f"6,{rule}," in feedback


def test_ingest_quarantines_negative_amount_duplicates_and_broken_references(settings, contracts):
    base_delivery(settings, contracts, n=4)
    rows = [payment(0), payment(1, amount_mad="-50,00"), payment(2), payment(2), payment(3, enrolment_id="E999"),
            payment(0, payment_id="P-x", payment_month="2025-02")]
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", rows)
    summary = ingest(settings, contracts)
    f = result_for(summary, "paiements_2025-01.csv")
    assert (f.rows_delivered, f.rows_loaded, f.rows_quarantined) == (6, 1, 5)
    assert f.rules_failed == {"duplicate_key": 2, "min:amount_mad": 1, "references:enrolment_id": 1,
                              "rule:month_matches_file": 1}
    con = store(settings)
    assert con.execute("select count(*) from raw.payments").fetchone()[0] == 1
    log = con.execute("select rows_delivered, rows_loaded, rows_quarantined from meta.deliveries "
                      "where file_name = 'paiements_2025-01.csv'").fetchone()
    assert log == (6, 1, 5)


def test_a_decimal_comma_contract_reads_dots_only_as_thousands_separators(settings, contracts):
    """payments.yml says decimal ','. A dot that does not group thousands by three (200.00,
    12.5) is a broken convention: the row is quarantined, never loaded as 20000 or 125."""
    base_delivery(settings, contracts, n=8)
    amounts = ["1.234,50", "1.234", "12,5", "+0,75", "1 234,5", "200.00", "12.5", "1.23.456", "1.2345,6", "0.500",
               "inf", "0x10"]
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i, payment_id=f"P-{i}", enrolment_id=f"E{i % 8}", cin=f"AB{100000 + i % 8}", amount_mad=a)
                    for i, a in enumerate(amounts)])
    summary = ingest(settings, contracts)
    f = result_for(summary, "paiements_2025-01.csv")
    assert (f.rows_delivered, f.rows_loaded, f.rows_quarantined) == (12, 5, 7)
    con = store(settings)
    loaded = con.execute("select payment_id, amount_mad::varchar from raw.payments order by _source_row").fetchall()
    assert loaded == [("P-0", "1234.50"), ("P-1", "1234.00"), ("P-2", "12.50"), ("P-3", "0.75"), ("P-4", "1234.50")]
    rows = con.execute("select source_row, rule from quarantine.rows where rule like 'type:%' "
                       "order by source_row").fetchall()
    assert rows == [(n, "type:amount_mad") for n in range(6, 13)]
    message = con.execute("select message from quarantine.rows where source_row = 6").fetchone()[0]
    assert message == ("paiements_2025-01.csv, row 6: column amount_mad value '200.00' is not a valid decimal "
                       "(decimal comma, dots only between thousands: 1.234,50; at most 2 decimals)")


def test_an_amount_with_a_third_decimal_is_quarantined_not_rounded(settings, contracts):
    """An amount in dirhams has at most two decimals. 12,345 was loaded as 12.35 (DECIMAL(18,2)
    rounds on cast), losing what the partner wrote without a word; it is now quarantined by
    the type rule (the suites' type expectation reads the same typed value). The noise of a workbook's
    binary floats (1234,5600000000002: 16 significant digits or more) is not a third decimal and
    loads as 1234.56; a large amount's third decimal (50000000000,125) is one."""
    base_delivery(settings, contracts, n=8)
    amounts = ["12,345", "1234,5600000000002", "0,30000000000000004", "12,34001", "-0,005", "12,3400", "7",
               "50000000000,125", "12.000.000.000,004", "100000000,01000001"]
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i, payment_id=f"P-{i}", enrolment_id=f"E{i % 8}", cin=f"AB{100000 + i % 8}", amount_mad=a)
                    for i, a in enumerate(amounts)])
    f = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (f.rows_delivered, f.rows_loaded, f.rows_quarantined) == (10, 5, 5)
    con = store(settings)
    loaded = con.execute("select payment_id, amount_mad::varchar from raw.payments order by _source_row").fetchall()
    assert loaded == [("P-1", "1234.56"), ("P-2", "0.30"), ("P-5", "12.34"), ("P-6", "7.00"), ("P-9", "100000000.01")]
    rows = con.execute("select source_row, rule, message from quarantine.rows order by source_row, rule").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(n, "type:amount_mad") for n in (1, 4, 5, 8, 9)]
    assert ("paiements_2025-01.csv, row 1: column amount_mad value '12,345' is not a valid decimal "
            "(decimal comma, dots only between thousands: 1.234,50; at most 2 decimals)") in [r[2] for r in rows]


def test_a_file_rejected_for_its_month_loads_once_renamed(settings, contracts):
    """The rejection was about the name: the same content under a right name is loaded, not
    taken for a repeat of the rejected delivery."""
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    bad = write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-13.csv",
                         [person(i) for i in range(3)])
    content = bad.read_bytes()
    assert result_for(ingest(settings, contracts), "registre_2025-13.csv").status == "rejected"
    bad.write_bytes(content)  # dropped again as it was: a repeat of the rejected delivery
    again = result_for(ingest(settings, contracts), "registre_2025-13.csv")
    assert again.status == "duplicate" and "calendar month" in again.reason
    bad.rename(bad.with_name("registre_2025-12.csv"))
    renamed = result_for(ingest(settings, contracts), "registre_2025-12.csv")
    assert (renamed.status, renamed.rows_loaded) == ("loaded", 3)


def test_numeric_columns_refuse_what_a_cast_would_round_or_misread(contracts):
    """A whole-number column refuses 12,5 (a cast would round it to 13), and no numeric
    column takes hexadecimal, inf or nan; blanks, no-break spaces and zero decimals are fine."""
    from ingestion.load import typed_expr

    con = duckdb.connect()

    def typed(contract, column, value):
        expr = typed_expr(contract, contract.column(column)).replace(column, "v")
        return con.execute(f"select {expr} from (select ?::varchar as v)", [value]).fetchone()[0]

    occupancy, loans = contracts["occupancy"], contracts["loans"]  # decimal comma; JSON lines, decimal dot
    assert [typed(occupancy, "residents", v) for v in ("12", "12,0", "1.234", "1\u202f234", "12,5", "0x10", "0.500")] == [
        12, 12, 1234, 1234, None, None, None]
    assert [typed(loans, "term_months", v) for v in ("12", "12.0", "12.5", "1e1")] == [12, 12, None, None]
    assert [str(typed(loans, "principal_mad", v)) for v in ("1000", "1000.5", "1e3", "inf", "nan", "0x10")] == [
        "1000.00", "1000.50", "1000.00", "None", "None", "None"]


def test_a_payment_id_already_loaded_from_another_month_is_quarantined(settings, contracts):
    """payments replace a month as a whole: a payment id that February's file repeats from
    January would be current twice (and stop the warehouse's uniqueness test); the later row
    is quarantined naming January. A corrected January file may repeat its own ids."""
    base_delivery(settings, contracts, n=4)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(4)])
    ingest(settings, contracts)
    february = [payment(i, "2025-02") for i in range(4)]
    february[2]["payment_id"] = "P2025-01-2"
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-02.csv", february)
    corrected = [payment(i, amount_mad="360,00") for i in range(4)]
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", corrected)
    summary = ingest(settings, contracts)
    assert result_for(summary, "paiements_2025-01.csv").rows_quarantined == 0
    f = result_for(summary, "paiements_2025-02.csv")
    assert (f.rows_delivered, f.rows_loaded, f.rows_quarantined) == (4, 3, 1)
    assert f.rules_failed == {"key_in_other_batch": 1}
    con = store(settings)
    assert con.execute("select source_row, message from quarantine.rows where rule = 'key_in_other_batch'").fetchall() == [
        (3, "paiements_2025-02.csv, row 3: key (payment_id) is already loaded from batch 2025-01: a key belongs to "
            "one batch; the row is loaded once a delivery of batch 2025-01 no longer holds the key")]
    con.close()
    # following the message: January delivered again without the key; February's row is loaded
    # then, in February's delivery, with no new February file
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [c for c in corrected if c["payment_id"] != "P2025-01-2"])
    again = ingest(settings, contracts)
    [released] = again.released
    assert (released.file_name, released.delivery_id, released.rows_released, released.rows_loaded,
            released.rows_quarantined) == ("paiements_2025-02.csv", f.delivery_id, 1, 4, 0)
    con = store(settings)
    assert con.execute("select _batch, _delivery_id, _source_row, _run_id from raw.payments "
                       "where _is_current and payment_id = 'P2025-01-2'").fetchall() == [
        ("2025-02", f.delivery_id, 3, again.run_id)]
    assert con.execute("select resolved_by_delivery from quarantine.rows where rule = 'key_in_other_batch'").fetchall() == [
        (f.delivery_id,)]
    assert con.execute("select rows_delivered, rows_loaded, rows_quarantined from meta.deliveries "
                       "where delivery_id = ?", [f.delivery_id]).fetchone() == (4, 4, 0)
    assert con.execute("select count(*), count(distinct payment_id) from raw.payments where _is_current").fetchone() == (7, 7)
    feedback = settings.feedback_dir / "msisf"
    assert "1 were loaded later" in (feedback / "paiements_2025-02.csv.summary.txt").read_text()
    assert not (feedback / "paiements_2025-02.csv.rejected_rows.csv").exists()


def test_a_row_held_for_a_reference_not_loaded_yet_is_loaded_once_it_is(settings, contracts):
    """Partners deliver on their own rhythms: payments may come before the enrolments they
    refer to. The payments are quarantined (references:enrolment_id), then loaded, in their
    own delivery, by the pass that loads the enrolments; a row with another problem stays."""
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(5)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv", [enrolment(i) for i in range(2)])
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i) for i in range(4)] + [payment(4, amount_mad="abc")])
    first = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (first.rows_loaded, first.rows_quarantined) == (2, 3)
    assert first.rules_failed == {"references:enrolment_id": 3, "type:amount_mad": 1}
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv",
                   [enrolment(i) for i in range(2, 5)])
    second = ingest(settings, contracts)
    # row 5 stays for its amount; its enrolment has arrived, so that reason is cleared (as if
    # the enrolments had come first: the ledger does not depend on the order of the deliveries)
    assert [(r.file_name, r.rows_released, r.rows_loaded, r.rows_quarantined, r.rules_failed) for r in second.released] == [
        ("paiements_2025-01.csv", 2, 4, 1, {"type:amount_mad": 1})]
    assert second.totals["rows_released"] == 2
    con = store(settings)
    assert con.execute("select payment_id, _source_row, _is_current, _delivery_id = ? from raw.payments "
                       "order by _source_row", [first.delivery_id]).fetchall() == [
        (f"P2025-01-{i}", i + 1, True, True) for i in range(4)]
    assert con.execute("select source_row, rule, resolved_by_delivery is not null from quarantine.rows "
                       "order by source_row, rule").fetchall() == [
        (3, "references:enrolment_id", True), (4, "references:enrolment_id", True),
        (5, "references:enrolment_id", True), (5, "type:amount_mad", False)]
    rows = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.rejected_rows.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["5", "type:amount_mad"]]
    # delivered = loaded + still quarantined, for every delivery
    for delivered, loaded, quarantined, in_raw, held in con.execute(
            "select rows_delivered, rows_loaded, rows_quarantined, (select count(*) from raw.payments), "
            "(select count(distinct source_row) from quarantine.rows where resolved_by_delivery is null) "
            "from meta.deliveries where source = 'payments'").fetchall():
        assert delivered == loaded + quarantined == in_raw + held == 5


def test_the_ledger_of_a_row_quarantined_for_two_reasons_does_not_depend_on_the_order_of_deliveries(
        settings, contracts):
    """A payment repeated in its file (duplicate_key) whose enrolment comes later: once the
    enrolment is loaded, its ledger (and so the scorecard's validity) is the one it would have
    had with the enrolments delivered first: duplicate_key only."""
    payments = [payment(0), payment(1), payment(1, amount_mad="360,00")]

    def ledger(home, enrolments_first):
        s = dataclasses.replace(settings, home=home)
        write_delivery(s.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
        write_delivery(s.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(2)])
        later = []
        for name, contract, rows in [("inscriptions_2025-01.csv", "enrolments", [enrolment(0), enrolment(1)]),
                                     ("paiements_2025-01.csv", "payments", payments)][::1 if enrolments_first else -1]:
            later.append((name, contract, rows))
        write_delivery(s.landing_dir, contracts[later[0][1]], later[0][0], later[0][2])
        ingest(s, contracts)
        write_delivery(s.landing_dir, contracts[later[1][1]], later[1][0], later[1][2])
        ingest(s, contracts)
        con = store(s)
        try:
            return con.execute("select source_row, rule from quarantine.rows where resolved_by_delivery is null "
                               "and source = 'payments' order by all").fetchall()
        finally:
            con.close()

    first = ledger(settings.home / "enrolments-first", True)
    assert first and {rule for _, rule in first} <= {"duplicate_key", "gx:expect_column_values_to_be_unique:payment_id"}
    assert ledger(settings.home / "payments-first", False) == first


def _payments_waiting_for_enrolments(settings, contracts, payments):
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(5)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv", [enrolment(0)])
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", payments)
    return result_for(ingest(settings, contracts), "paiements_2025-01.csv")


def test_held_rows_are_released_by_a_refresh_of_their_source_with_no_new_file(settings, contracts):
    """The enrolments arrive in a run of the enrolments alone: the next run of the payments,
    with no new file, loads the payments that waited for them."""
    first = _payments_waiting_for_enrolments(settings, contracts, [payment(i) for i in range(3)])
    assert first.rules_failed == {"references:enrolment_id": 2}
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1), enrolment(2)])
    partial = make_ingestor(settings, contracts).ingest(settings.landing_dir, sources=["enrolments"])
    assert result_for(partial, "inscriptions_2025-02.csv").status == "loaded" and partial.released == []
    whole = ingest(settings, contracts)
    assert {f.status for f in whole.files} == {"duplicate"}
    assert [(r.file_name, r.rows_released) for r in whole.released] == [("paiements_2025-01.csv", 2)]
    assert store(settings).execute("select count(*) from raw.payments").fetchone() == (3,)


def test_feedback_rewritten_after_a_release_names_the_headers_the_file_used(settings, contracts):
    """The summary rewritten when held rows are released names each column with the header
    the delivered file used, as the first summary did (recorded in the delivery log), not
    the header the contract asks for."""
    names = [c.name for c in contracts["payments"].columns]  # contract names instead of partner headers
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(5)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv", [enrolment(0)])
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(0), payment(1), payment(2), payment(3, amount_mad="abc")], headers=names)
    first = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert first.rules_failed == {"references:enrolment_id": 3, "type:amount_mad": 1}
    summary = settings.feedback_dir / "msisf" / "paiements_2025-01.csv.summary.txt"
    type_line = "type:amount_mad: 1 (a value of column amount_mad is not a valid decimal)"
    assert type_line in summary.read_text() and "montant_mad" not in summary.read_text()
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1)])
    released = ingest(settings, contracts).released
    assert [(r.file_name, r.rows_released) for r in released] == [("paiements_2025-01.csv", 1)]
    text = summary.read_text()
    assert "were loaded later" in text and "references:enrolment_id: 2 (column enrolment_id refers to" in text
    assert type_line in text, text
    assert "montant_mad" not in text and "id_inscription" not in text
    with store(settings) as con:
        recorded = con.execute("select file_headers from meta.deliveries where file_name = 'paiements_2025-01.csv'"
                               ).fetchone()[0]
    assert json.loads(recorded) == {n: n for n in names}

def test_a_held_row_whose_reason_changed_says_the_new_one(settings, contracts):
    """January's payment K waits for its enrolment; March's file loads K meanwhile. Once the
    enrolment arrives, January's K stays set aside, now because K is in March."""
    _payments_waiting_for_enrolments(settings, contracts, [payment(0), payment(1, payment_id="K")])
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-03.csv",
                   [payment(0, month="2025-03", payment_id="K")])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1)])
    summary = ingest(settings, contracts)
    assert summary.released == []
    con = store(settings)
    assert con.execute("select rule, resolved_by_delivery = delivery_id from quarantine.rows "
                       "where file_name = 'paiements_2025-01.csv' order by first_seen_at").fetchall() == [
        ("references:enrolment_id", True), ("key_in_other_batch", None)]
    rows = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.rejected_rows.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["2", "key_in_other_batch"]]
    assert "key (payment_id) is already loaded from batch 2025-03" in rows[1]


UNIQUE_LEDGER = ("select delivery_id, source_row, rule, count(*) from quarantine.rows "
                 "group by all having count(*) > 1")  # dbt tests the ledger's (delivery, row, rule) unique


def _month_of_payments(settings, contracts, month, rows):
    write_delivery(settings.landing_dir, contracts["payments"], f"paiements_{month}.csv", rows)


def _registry_and_enrolments(settings, contracts, enrolments=(0,)):
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(5)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv",
                   [enrolment(i) for i in enrolments])


def test_a_cleared_reason_that_holds_again_is_opened_again_not_recorded_twice(settings, contracts):
    """January's K waits for its enrolment and for March (which holds K). March is corrected
    without K (that reason is cleared), then again with K (it holds again): the ledger keeps
    one row per (delivery, row, rule), open again."""
    _registry_and_enrolments(settings, contracts, enrolments=(0, 2))
    _month_of_payments(settings, contracts, "2025-03", [payment(0, "2025-03", payment_id="K")])
    ingest(settings, contracts)
    _month_of_payments(settings, contracts, "2025-01", [payment(0), payment(1, payment_id="K")])
    jan = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert jan.rules_failed == {"key_in_other_batch": 1, "references:enrolment_id": 1}
    _month_of_payments(settings, contracts, "2025-03", [payment(0, "2025-03")])
    ingest(settings, contracts)
    _month_of_payments(settings, contracts, "2025-03", [payment(0, "2025-03"), payment(2, "2025-03", payment_id="K")])
    ingest(settings, contracts)
    con = store(settings)
    assert con.execute(UNIQUE_LEDGER).fetchall() == []
    assert con.execute("select rule, resolved_by_delivery from quarantine.rows where delivery_id = ? order by rule",
                       [jan.delivery_id]).fetchall() == [("key_in_other_batch", None), ("references:enrolment_id", None)]


def test_a_row_left_behind_by_a_released_row_of_its_key_names_the_batch_now_holding_it(settings, contracts):
    """K is in March; January's and February's K wait for it. March is corrected without K:
    January's K is loaded, February's stays, and now names January."""
    _registry_and_enrolments(settings, contracts, enrolments=(0, 1, 2))
    _month_of_payments(settings, contracts, "2025-03", [payment(0, "2025-03", payment_id="K")])
    ingest(settings, contracts)
    _month_of_payments(settings, contracts, "2025-01", [payment(1, payment_id="K")])
    _month_of_payments(settings, contracts, "2025-02", [payment(2, "2025-02", payment_id="K")])
    ingest(settings, contracts)
    _month_of_payments(settings, contracts, "2025-03", [payment(0, "2025-03")])
    summary = ingest(settings, contracts)
    assert [(r.file_name, r.rows_released) for r in summary.released] == [("paiements_2025-01.csv", 1)]
    rows = (settings.feedback_dir / "msisf" / "paiements_2025-02.csv.rejected_rows.csv").read_text()
    assert "already loaded from batch 2025-01" in rows and "2025-03" not in rows, rows


def test_a_held_row_is_checked_again_under_the_contract_of_today(settings, contracts):
    """A payment held for its enrolment; the contract's date format changes before the
    enrolment arrives: the row is not loaded with an empty paid date, it stays set aside
    with the type rule as its reason."""
    _registry_and_enrolments(settings, contracts)
    _month_of_payments(settings, contracts, "2025-01", [payment(0), payment(1)])
    ingest(settings, contracts)
    changed = dict(contracts)
    changed["payments"] = dataclasses.replace(contracts["payments"], date_format="%Y-%m-%d", version="2")
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1)])
    assert ingest(settings, changed).released == []
    con = store(settings)
    assert con.execute("select count(*) from raw.payments where paid_date is null").fetchone() == (0,)
    assert con.execute("select rule, resolved_by_delivery = delivery_id from quarantine.rows order by rule").fetchall() == [
        ("references:enrolment_id", True), ("type:paid_date", None)]


@pytest.mark.parametrize("sql", ["(cin is null) = (enrolment_id is null)", '("CIN" is null) = (enrolment_id is null)'])
def test_a_contract_rule_reading_a_direct_identifier_is_not_checked_again_on_a_held_row(settings, contracts, sql):
    """The clear value of a direct identifier is not kept: a contract rule that reads one saw
    it at loading and is not checked again (here after a deploy, a new code version)."""
    from ingestion.contracts import Rule

    changed = dict(contracts)
    changed["payments"] = dataclasses.replace(contracts["payments"], rules=contracts["payments"].rules + (
        Rule("enrolled_payment_names_person", sql),))

    def run(code_version):
        return Ingestor(settings.store_path, changed, TEST_KEY, seeds_dir=settings.seeds_dir,
                        rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir,
                        code_version=code_version).ingest(settings.landing_dir)

    _registry_and_enrolments(settings, contracts)
    _month_of_payments(settings, contracts, "2025-01", [payment(0), payment(1)])
    assert result_for(run("v1"), "paiements_2025-01.csv").rules_failed == {"references:enrolment_id": 1}
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1)])
    assert [(r.file_name, r.rows_released) for r in run("v2").released] == [("paiements_2025-01.csv", 1)]


def test_a_held_row_of_a_source_without_identifiers_is_checked_against_the_rules_of_today(settings, contracts):
    """An occupancy report held for an establishment not delivered yet; the contract's minimum
    for residents rises before the establishment arrives: the report stays set aside."""
    establishment = {"establishment_id": "EPS-0001", "establishment_name": "Dar Al Atfal", "establishment_type": "children",
                     "region_code": "06", "province_code": "0601", "commune_code": "0601001", "capacity": "40"}
    write_delivery(settings.landing_dir, contracts["occupancy"], "occupation_2025-01.csv",
                   [{"establishment_id": "EPS-0001", "month": "2025-01", "residents": "5", "admissions": "1",
                     "departures": "0"}])
    assert result_for(ingest(settings, contracts), "occupation_2025-01.csv").rules_failed == {
        "references:establishment_id": 1}
    occupancy = contracts["occupancy"]
    changed = dict(contracts)
    changed["occupancy"] = dataclasses.replace(occupancy, version="2", columns=tuple(
        dataclasses.replace(c, min=10) if c.name == "residents" else c for c in occupancy.columns))
    write_delivery(settings.landing_dir, contracts["establishments"], "etablissements_2025-01.csv", [establishment])
    assert ingest(settings, changed).released == []
    assert store(settings).execute("select rule from quarantine.rows where resolved_by_delivery is null").fetchall() == [
        ("min:residents",)]


def test_counts_and_ledger_agree_after_a_release_an_idle_pass_and_a_supersede(settings, contracts):
    _registry_and_enrolments(settings, contracts)
    _month_of_payments(settings, contracts, "2025-03", [payment(0, "2025-03", payment_id="K")])
    ingest(settings, contracts)
    _month_of_payments(settings, contracts, "2025-01", [payment(0), payment(1, payment_id="K"), payment(2)])
    jan = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1), enrolment(2)])
    first = ingest(settings, contracts)
    assert [(r.file_name, r.rows_released) for r in first.released] == [("paiements_2025-01.csv", 1)]
    con = store(settings)
    for d, delivered, loaded, quarantined, in_raw, held in con.execute(
            "select d.delivery_id, d.rows_delivered, d.rows_loaded, d.rows_quarantined, "
            "(select count(*) from raw.payments r where r._delivery_id = d.delivery_id), "
            "(select count(distinct source_row) from quarantine.rows q where q.delivery_id = d.delivery_id "
            " and q.resolved_by_delivery is null) from meta.deliveries d "
            "where d.source = 'payments' and d.status = 'loaded'").fetchall():
        assert delivered == loaded + quarantined and loaded == in_raw and quarantined == held, d
    con.close()
    summary = settings.feedback_dir / "msisf" / "paiements_2025-01.csv.summary.txt"
    assert "1 were loaded later" in summary.read_text()
    written = summary.stat().st_mtime_ns
    assert ingest(settings, contracts).released == [] and summary.stat().st_mtime_ns == written  # an idle pass
    _month_of_payments(settings, contracts, "2025-01", [payment(0), payment(2)])  # January corrected
    ingest(settings, contracts)
    con = store(settings)
    assert con.execute("select rule, resolved_by_delivery = delivery_id from quarantine.rows where delivery_id = ? "
                       "and source_row = 2 order by rule", [jan.delivery_id]).fetchall() == [
        ("key_in_other_batch", False), ("references:enrolment_id", True)]
    assert con.execute(UNIQUE_LEDGER).fetchall() == []


def test_a_record_released_late_is_current_only_if_it_is_the_latest_of_its_key(settings, contracts):
    """A loan quarantined for a borrower not registered yet, then delivered again a month later:
    once the borrower is registered, both rows load and the later one is the current one."""
    def loan(i: int, cin: str, status: str = "active") -> dict:
        return {"loan_id": f"L{i}", "borrower_cin": cin, "programme_code": "DSD-01", "product": "agricultural",
                "principal_mad": 1000, "term_months": 12, "disbursement_date": "2025-01-02", "status": status}

    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(0)])
    write_delivery(settings.landing_dir, contracts["loans"], "loans_2025-01.jsonl",
                   [loan(1, cin="AB100001"), loan(2, cin="AB100002", status="active")])
    assert result_for(ingest(settings, contracts), "loans_2025-01.jsonl").rules_failed == {"references:borrower_cin": 2}
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-02.csv", [person(1), person(2)])
    write_delivery(settings.landing_dir, contracts["loans"], "loans_2025-02.jsonl",
                   [loan(2, cin="AB100002", status="closed")])
    summary = ingest(settings, contracts)
    assert [(r.file_name, r.rows_released) for r in summary.released] == [("loans_2025-01.jsonl", 2)]
    con = store(settings)
    assert con.execute("select loan_id, _batch, status, _is_current from raw.loans order by loan_id, _batch").fetchall() == [
        ("L1", "2025-01", "active", True), ("L2", "2025-01", "active", False), ("L2", "2025-02", "closed", True)]


def test_a_column_the_contract_does_not_know_is_dropped_and_reported(settings, contracts):
    """A partner adds an email column: it is not loaded (it is not in the contract), and the
    partner's summary and the refresh's report say so."""
    from jisr.status import run_report

    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    path = write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                          [person(i) for i in range(3)])
    lines = path.read_bytes().decode("cp1252").splitlines()
    path.write_bytes(("\n".join([lines[0] + ";email"] + [line + f";p{i}@example.ma" for i, line in enumerate(lines[1:])])
                      + "\n").encode("cp1252"))
    summary = ingest(settings, contracts)
    f = result_for(summary, "registre_2025-01.csv")
    assert (f.status, f.rows_loaded) == ("loaded", 3)
    ignored = ("column 17 of the file has a header the contract does not know and was ignored (the header is not "
               "shown: it may be a value, such as an identity number or a name)")
    assert f.warnings == [ignored]
    feedback = (settings.feedback_dir / "msisf" / "registre_2025-01.csv.summary.txt").read_text()
    assert "Warnings (the file was loaded; please check):\n  " + ignored in feedback
    assert "msisf/registre_2025-01.csv: " + ignored in run_report(
        settings, summary.run_id)
    con = store(settings)
    assert "email" not in [c[0] for c in con.execute("describe raw.beneficiaries").fetchall()]


def test_every_delivered_row_is_loaded_or_quarantined(settings, contracts):
    base_delivery(settings, contracts, n=8)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i) for i in range(8)] + [payment(1, amount_mad="abc"), payment(2, channel="pigeon")])
    ingest(settings, contracts)
    con = store(settings)
    for source, delivered, loaded, quarantined in con.execute(
            "select source, rows_delivered, rows_loaded, rows_quarantined from meta.deliveries").fetchall():
        in_raw = con.execute(f"select count(*) from raw.{source}").fetchone()[0]
        in_quarantine = con.execute("select count(distinct (delivery_id, source_row)) from quarantine.rows "
                                    "where source = ?", [source]).fetchone()[0]
        assert delivered == loaded + quarantined == in_raw + in_quarantine, source


def _payments_with_lines(landing, contracts, edit, n=8):
    """A payments delivery of n rows whose lines (header first) ``edit`` changes."""
    path = write_delivery(landing, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(n)])
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"\n".join(edit(lines)) + b"\n")
    return path


def _quoted_line_break(line: bytes) -> bytes:
    """The row with its last field (the channel) quoted over two lines: one row, two lines."""
    head, _, last = line.rpartition(b";")
    return head + b';"' + last[:2] + b"\n" + last[2:] + b'"'


def test_a_csv_row_without_the_header_fields_is_staged_apart_with_its_row_and_line(contracts, tmp_path):
    from ingestion.readers import stage_file

    def edit(lines):
        lines[2] = _quoted_line_break(lines[2])  # row 2 spans lines 3-4
        lines[3] += b";extra"                     # row 3, line 5: one field too many
        lines[5] = lines[5].rsplit(b";", 2)[0]    # row 5, line 7: two fields short
        return lines

    con = duckdb.connect()
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    assert staged.rows == 8
    assert [r[0] for r in con.execute(f"select _source_row from {staged.table} order by _source_row").fetchall()] == [
        1, 2, 4, 6, 7, 8]
    # the rows keep their own values: row 4 is payment 3
    assert con.execute(f"select payment_id from {staged.table} where _source_row = 4").fetchone()[0] == "P2025-01-3"
    assert con.execute(f"select * from {staged.malformed} order by _source_row").fetchall() == [
        (3, "line 5 has 9 fields where the header has 8: the row could not be read"),
        (5, "line 7 has 6 fields where the header has 8: the row could not be read"),
    ]


def test_a_csv_row_without_the_header_fields_is_quarantined_and_the_others_load(settings, contracts):
    base_delivery(settings, contracts, n=8)

    def edit(lines):
        lines[3] += b";extra"  # row 3
        return lines

    _payments_with_lines(settings.landing_dir, contracts, edit)
    summary = ingest(settings, contracts)
    result = result_for(summary, "paiements_2025-01.csv")
    assert (result.status, result.rows_delivered, result.rows_loaded, result.rows_quarantined) == ("loaded", 8, 7, 1)
    assert result.rules_failed == {"malformed_row": 1}
    con = store(settings)
    assert con.execute("select source_row, rule, message, values_json from quarantine.rows").fetchall() == [
        (3, "malformed_row", "paiements_2025-01.csv, row 3: line 4 has 9 fields where the header has 8: "
         "the row could not be read", None)]
    assert [r[0] for r in con.execute("select _source_row from raw.payments order by 1").fetchall()] == [
        1, 2, 4, 5, 6, 7, 8]
    feedback = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.rejected_rows.csv").read_text()
    assert '3,malformed_row,,"paiements_2025-01.csv, row 3: line 4 has 9 fields' in feedback


def test_empty_lines_count_as_rows_before_a_row_without_the_header_fields(settings, contracts):
    """DuckDB's reader counts empty lines in its record numbers but reads no row from them: a
    row after them is numbered as a spreadsheet shows the file, empty lines counted."""
    base_delivery(settings, contracts, n=8)

    def edit(lines):
        lines = lines[:2] + [b"", b""] + lines[2:]  # two empty lines after row 1
        lines[6] += b";extra"  # row 6 (payment 3), line 7
        return lines

    _payments_with_lines(settings.landing_dir, contracts, edit)
    ingest(settings, contracts)
    con = store(settings)
    assert con.execute("select source_row, message from quarantine.rows").fetchall() == [
        (6, "paiements_2025-01.csv, row 6: line 7 has 9 fields where the header has 8: the row could not be read")]
    assert con.execute("select _source_row from raw.payments where payment_id = 'P2025-01-4'").fetchone() == (7,)


def _quoted_empty_line(line: bytes) -> bytes:
    """The row with its last field (the channel) quoted over three lines, the middle one empty."""
    head, _, last = line.rpartition(b";")
    return head + b';"' + last[:2] + b"\n\n" + last[2:] + b'"'


@pytest.mark.parametrize("edit, row, line, blanks", [
    (lambda ls: ls[:2] + [_quoted_empty_line(ls[2])] + ls[3:4] + [ls[4] + b";x"] + ls[5:], 4, 7, []),
    (lambda ls: ls[:2] + [b"", _quoted_empty_line(ls[2]), b""] + ls[3:4] + [ls[4] + b";x"] + ls[5:], 6, 9, [2, 4]),
    (lambda ls: [ls[0], ls[1] + b";x"] + ls[2:], 1, 2, []),
], ids=["an empty line inside a quoted value", "and empty lines around it", "the first row"])
def test_an_unreadable_csv_row_is_numbered_as_a_row_of_the_file(contracts, tmp_path, edit, row, line, blanks):
    """Rows are numbered as a spreadsheet shows the file: a quoted value over several lines is
    one row, even with an empty line inside; an empty line outside quotes holds no row and
    keeps its number."""
    from ingestion.readers import stage_file

    con = duckdb.connect()
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    assert con.execute(f"select _source_row, split_part(message, ' has', 1) from {staged.malformed}").fetchall() == [
        (row, f"line {line}")]
    numbers = [r[0] for r in con.execute(f"select _source_row from {staged.table} order by 1").fetchall()]
    assert staged.rows == 8 and sorted(numbers + [row] + blanks) == list(range(1, 9 + len(blanks)))
    assert con.execute(f"select payment_id from {staged.table} where _source_row = {row + 1}").fetchone() == (
        f"P2025-01-{row - len(blanks)}",)


def test_the_line_of_a_byte_offset_is_counted_across_the_blocks_a_file_is_read_in(tmp_path, monkeypatch):
    from ingestion import readers

    text = b"h\n\n\r\na\n\n\nb\r\n\r\nc\n"
    path = tmp_path / "f.csv"
    path.write_bytes(text)
    offsets = list(range(len(text) + 1))
    for block in (1, 2, 3, 1 << 20):
        monkeypatch.setattr(readers, "CHUNK", block)
        assert readers._file_lines(path, offsets) == [text[:o].count(b"\n") + 1 for o in offsets], block


def _space_quoted_empty_line(line: bytes) -> bytes:
    """The last field (the channel) as ` "ba<LF><LF>nk"`: DuckDB's reader skips the space before
    the quote and reads one row over three lines."""
    head, _, last = line.rpartition(b";")
    return head + b'; "' + last[:2] + b"\n\n" + last[2:] + b'"'


def test_a_space_before_a_quoted_value_over_lines_keeps_the_row_numbers(contracts, tmp_path):
    from ingestion.readers import stage_file

    # line 1 header; row 1 line 2; row 2 lines 3-5; row 3 line 6; row 4 (one field too many) line 7
    edit = lambda ls: ls[:2] + [_space_quoted_empty_line(ls[2])] + ls[3:4] + [ls[4] + b";x"] + ls[5:]  # noqa: E731
    con = duckdb.connect()
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    assert con.execute(f"select channel from {staged.table} where payment_id = 'P2025-01-1'").fetchone() == ("ba\n\nnk",)
    assert con.execute(f"select _source_row, split_part(message, ' has', 1) from {staged.malformed}").fetchall() == [
        (4, "line 7")]
    assert con.execute(f"select _source_row from {staged.table} where payment_id = 'P2025-01-2'").fetchone() == (3,)


@pytest.mark.parametrize("edit, rows, malformed", [
    (lambda ls: [ln + b";" for ln in ls], 8, []),  # a spreadsheet's export: an empty last column
    (lambda ls: [ls[0] + b";"] + [ln + b";" for ln in ls[1:3]] + [ls[3] + b";x;y"] + [ln + b";" for ln in ls[4:]], 8,
     [3]),
    (lambda ls: [ls[0] + b';"it\'s ""x"""'] + [ln + b";" for ln in ls[1:]], 8, []),  # both quote characters
], ids=["an empty last column", "and an unreadable row", "a header cell with both quote characters"])
def test_a_header_cell_is_any_text_or_none(contracts, tmp_path, edit, rows, malformed):
    from ingestion.readers import stage_file

    con = duckdb.connect()
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    assert staged.rows == rows and len(staged.warnings) == 1, staged.warnings
    found = con.execute(f"select _source_row from {staged.malformed}").fetchall() if staged.malformed else []
    assert [r[0] for r in found] == malformed


QUOTE_RULE = ("(a value in quotes ends with a quote followed by the delimiter or the end of the line, a quote inside "
              "it is doubled, and a header name is on the header line)")


@pytest.mark.parametrize("edit, problem", [
    (lambda ls: [b'"' + ls[0]] + ls[1:], "a quote opened on it is not closed there"),
    (lambda ls: [ls[0].replace(b";CIN", b';"CIN')] + ls[1:], "a quote opened on it is not closed there"),
    # an open quote in the last cell: reading the whole file, it took every row into the header
    (lambda ls: [ls[0].replace(b";canal", b';"canal')] + ls[1:], "a quote opened on it is not closed there"),
    (lambda ls: [ls[0].replace(b";CIN", b';"CIN"x')] + ls[1:],
     "a quoted cell is followed by other characters before the next delimiter"),
], ids=["before the first cell", "before a cell", "before the last cell", "a quoted cell with more after it"])
def test_a_stray_quote_in_the_header_line_is_named_as_the_problem(contracts, tmp_path, edit, problem):
    """A header line with a quote left open is not taken for a missing header, nor does it
    take the rows after it: the rejection names the file, the quote and the quoting rule, and
    shows the line, which names columns of the contract."""
    from ingestion.readers import FileRejected, stage_file

    path = _payments_with_lines(tmp_path / "msisf", contracts, edit)
    with pytest.raises(FileRejected) as rejected:
        stage_file(duckdb.connect(), path, contracts["payments"])
    line = path.read_bytes().split(b"\n")[0].decode()
    if '"CIN"x' in line:  # a cell that is no header name of the contract, once its quotes are taken off
        line = ("'id_paiement', 'id_inscription', (not shown), 'code_programme', 'mois', 'montant_mad', "
                "'date_paiement', 'canal' (a cell that is no header name of the contract is not shown: it may be a "
                "value, such as an identity number or a name in a header line run into the first record)")
    else:
        line = repr(line)
    assert rejected.value.reason == (f"the header line of msisf/paiements_2025-01.csv could not be read: {problem} "
                                     f"{QUOTE_RULE}: {line}"), rejected.value.reason


def test_a_stray_quote_in_a_comma_separated_header_is_named_as_the_problem(contracts, tmp_path):
    from ingestion.readers import FileRejected, stage_file

    contract = contracts["survey_units"]
    path = tmp_path / contract.partner / "units.csv"
    path.parent.mkdir(parents=True)
    header = ",".join(c.header for c in contract.columns)
    path.write_text('"' + header + "\n" + ",".join("1" for _ in contract.columns) + "\n")
    with pytest.raises(FileRejected) as rejected:
        stage_file(duckdb.connect(), path, contract)
    assert rejected.value.reason.startswith(f"the header line of {contract.partner}/units.csv could not be read: a quote "
                                            f"opened on it is not closed there {QUOTE_RULE}: "), rejected.value.reason
    assert "header line missing" not in rejected.value.reason


def test_a_record_with_a_stray_quote_in_place_of_the_header_is_not_shown(settings, contracts):
    """A file delivered without its header line whose first record starts with a quote: the
    rejection says the quote stops the reading, without the record's values."""
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    path = _without_header_line(write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                                               [person(1), person(2)]))
    path.write_bytes(b'"' + path.read_bytes())
    bad = result_for(ingest(settings, contracts), "registre_2025-01.csv")
    assert bad.status == "rejected" and bad.reason == (
        "the header line of msisf/registre_2025-01.csv could not be read: a quote opened on it is not closed there "
        f"{QUOTE_RULE} (the line names no column of the contract; it is not shown: it may be personal data)"), bad.reason
    report = Path(bad.report_path).read_text()
    for clear in ("AB100001", "Hélène1", "Aït Benhaddou", "0612000001"):
        assert clear not in bad.reason and clear not in report


@pytest.mark.parametrize("edit", [
    lambda ls: [ls[0].replace(b";id_inscription", b'; "id_inscription"')] + ls[1:],
    lambda ls: [ls[0].replace(b";canal", b'; "canal"')] + ls[1:],
    lambda ls: [ls[0].replace(b";CIN", b';"CIN" ')] + ls[1:],
    lambda ls: [b'"id_paiement";' + ls[0].split(b";", 1)[1]] + ls[1:],
], ids=["a space before a quoted cell", "before the last cell", "a space after a quoted cell", "a quoted cell"])
def test_the_header_line_is_split_as_duckdb_splits_the_rows(contracts, tmp_path, edit):
    """The header line is read as DuckDB's reader reads the rows: a space before or after a
    quoted cell is not part of its name."""
    from ingestion.readers import stage_file

    con = duckdb.connect()
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    assert staged.rows == 8 and not staged.malformed and not staged.warnings, staged.warnings
    assert set(staged.header_map) == {c.name for c in contracts["payments"].columns}
    assert con.execute(f"select payment_id, enrolment_id, cin, channel from {staged.table} where _source_row = 2"
                       ).fetchone() == ("P2025-01-1", "E1", "AB100001", "bank")


def test_a_quote_inside_an_unquoted_header_cell_is_part_of_its_name(contracts, tmp_path):
    from ingestion.readers import stage_file

    con = duckdb.connect()
    edit = lambda ls: [ls[0] + b';no"te'] + [ln + b";x" for ln in ls[1:]]  # noqa: E731
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    assert staged.rows == 8 and staged.warnings == [
        "column 9 of the file has a header the contract does not know and was ignored (the header is not shown: it "
        "may be a value, such as an identity number or a name)"]


def test_a_header_line_longer_than_64k_is_read_whole_before_its_quotes_are_judged(contracts, tmp_path):
    """A long quoted extra column name that crosses 64 KiB is not a quote left open: the file
    loads, the column ignored with a warning; a header line beyond MAX_HEADER_LINE rejects its
    file, named as such."""
    from ingestion.readers import MAX_HEADER_LINE, FileRejected, stage_file

    est = contracts["establishments"]
    header = ";".join(c.header for c in est.columns)
    path = tmp_path / "eps" / "etablissements_2025-01.csv"
    path.parent.mkdir(parents=True)
    path.write_text(header + ';"' + "y" * 70000 + '"\nEPS-0001;Dar;children;06;0601;0601001;40;;;;x\n', encoding="utf-8")
    staged = stage_file(duckdb.connect(), path, est)
    assert staged.rows == 1 and staged.warnings == [
        "column 11 of the file has a header the contract does not know and was ignored (the header is not shown: it "
        "may be a value, such as an identity number or a name)"]
    path.write_text(header + ';"' + "y" * MAX_HEADER_LINE + '"\nEPS-0001;Dar;children;06;0601;0601001;40;;;;x\n',
                    encoding="utf-8")
    with pytest.raises(FileRejected, match="the header line is longer than 4 MiB"):
        stage_file(duckdb.connect(), path, est)


LONE_CR = ("the line holds a lone carriage return (CR, with no line feed after it: the line end of old Mac files), "
           "which is not a line end here: save the file with LF or CR LF line ends")


@pytest.mark.parametrize("write, reason", [
    (lambda ls: b"\r".join(ls) + b"\r", f"unreadable at line 1: {LONE_CR}"),
    (lambda ls: b"\r".join(ls), f"unreadable at line 1: {LONE_CR}"),
    (lambda ls: b"\r\n".join(ls[:3]) + b"\r" + b"\r\n".join(ls[3:]) + b"\r\n", f"unreadable at line 3: {LONE_CR}"),
    (lambda ls: b"\n".join(ls[:4] + [ls[4].replace(b"bank", b"ba\rnk")] + ls[5:]) + b"\n",
     f"unreadable at line 5: {LONE_CR}"),
    (lambda ls: b"\n".join(ls[:2] + [ls[2] + b"\r"] + ls[3:]) + b"\n",
     "unreadable at line 3: the line ends with CR LF where line 1 ends with LF alone: save the file with one kind "
     "of line end (LF or CR LF)"),
], ids=["old Mac line ends", "old Mac line ends, none after the last line", "one old Mac line end among CR LF",
        "a CR inside a value", "CR LF among LF"])
def test_line_ends_a_csv_reader_cannot_split_give_a_reason_a_partner_can_read(contracts, tmp_path, write, reason):
    """DuckDB's reader says only that its state machine reached an invalid state: the line
    ends are looked at then (and a lone CR in the header line, which a file of old Mac line
    ends is whole, rejects the file at once)."""
    from ingestion.readers import FileRejected, stage_file

    path = _payments_with_lines(tmp_path / "landing", contracts, lambda ls: ls)
    path.write_bytes(write(path.read_bytes().split(b"\n")[:-1]))
    with pytest.raises(FileRejected) as rejected:
        stage_file(duckdb.connect(), path, contracts["payments"])
    assert rejected.value.reason == reason


def _last_field(line: bytes, new: bytes) -> bytes:
    return line.rsplit(b";", 1)[0] + b";" + new


@pytest.mark.parametrize("edit, malformed, blanks", [
    # DuckDB skips one space before an opening quote, not two: `  "ba` is an unquoted value, and
    # the quote after `nk` too; line 4 is empty (row 3, holding none), line 5 a row of one field
    (lambda ls: ls[:2] + [_last_field(ls[2], b'  "ba\n\nnk"')] + ls[3:5] + [ls[5] + b";x"] + ls[6:],
     [(4, "line 5"), (7, "line 8")], [3]),
    # `  "P2025...` is an unquoted value for DuckDB: no quote is opened
    (lambda ls: ls[:2] + [b'  "' + ls[2]] + ls[3:5] + [ls[5] + b";x"] + ls[6:], [(5, "line 6")], []),
    # DuckDB's strict reader drops empty fields at the end of a row: `...;bank;` has 8 fields
    (lambda ls: ls[:2] + [ls[2] + b";", ls[3].rsplit(b";", 1)[0]] + ls[4:], [(3, "line 4")], []),
    (lambda ls: ls[:2] + [ls[2] + b';""', ls[3] + b";x"] + ls[4:], [(3, "line 4")], []),
    (lambda ls: [ls[0]] + [ln + b";;" for ln in ls[1:3]] + [ls[3] + b";;x"] + [ln + b";" for ln in ls[4:]],
     [(3, "line 4")], []),
    # a row wider than the rejects say (they count up to its first non-empty extra field), or
    # than a thousand fields
    (lambda ls: ls[:3] + [ls[3] + b";;;;;;;;;;;x"] + ls[4:], [(3, "line 4")], []),
    (lambda ls: ls[:3] + [ls[3] + b";x" * 1500] + ls[4:], [(3, "line 4")], []),
], ids=["two spaces before a quoted value over lines", "two spaces before a quote never closed",
        "an empty field at the end of a row", "a quoted empty field at the end of a row",
        "rows ending with empty fields", "a row wider than the rejects say", "a row of 1508 fields"])
def test_rows_are_numbered_as_duckdb_splits_them(contracts, tmp_path, edit, malformed, blanks):
    from ingestion.readers import stage_file

    con = duckdb.connect()
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    assert con.execute(f"select _source_row, split_part(message, ' has', 1) from {staged.malformed} order by 1"
                       ).fetchall() == malformed
    numbers = [r[0] for r in con.execute(f"select _source_row from {staged.table} order by 1").fetchall()]
    assert sorted(numbers + [row for row, _ in malformed] + blanks) == list(range(1, staged.rows + len(blanks) + 1))


WIDE = 20_000  # more empty fields than a spreadsheet has columns (16,384)


@pytest.mark.parametrize("edit, malformed", [
    (lambda ls: ls[:4] + [ls[4] + b";" * WIDE] + ls[5:], []),
    (lambda ls: ls[:3] + [ls[3] + b";" * WIDE] + ls[4:6] + [ls[6].rsplit(b";", 1)[0]] + ls[7:],
     [(6, "line 7 has 7 fields where the header has 8: the row could not be read")]),
    (lambda ls: ls[:3] + [ls[3] + b";" * WIDE + b"x"] + ls[4:],
     [(3, f"line 4 has {WIDE + 8} fields where the header has 8: the row could not be read")]),
    (lambda ls: ls[:3] + [ls[3] + b";x" + b";" * WIDE] + ls[4:6] + [ls[6] + b";" * WIDE, ls[7] + b";y"] + ls[8:],
     [(3, f"line 4 has {WIDE + 9} fields where the header has 8: the row could not be read"),
      (7, "line 8 has 9 fields where the header has 8: the row could not be read")]),
    (lambda ls: [ls[0]] + [_quoted_line_break(ls[1])] + ls[2:4] + [ls[4] + b";" * WIDE] + ls[5:6]
     + [ls[6] + b';"' + b";" * WIDE + b'\n"'] + ls[7:],
     [(6, "line 8 has 9 fields where the header has 8: the row could not be read")]),
], ids=["alone", "and a short row", "then a value", "a value then empty fields, and a row of one more field",
        "and delimiters ending a line inside a quoted value"])
def test_a_row_with_more_empty_fields_than_a_spreadsheet_has_columns_is_read(contracts, tmp_path, edit, malformed):
    """Empty fields ending a row are no values (DuckDB's strict reader reads the row): however
    many they are, the row is staged, and a row beside it without the header's fields is set
    apart with its row and line, not the whole file rejected."""
    from ingestion.readers import stage_file

    con = duckdb.connect()
    staged = stage_file(con, _payments_with_lines(tmp_path / "landing", contracts, edit), contracts["payments"])
    found = con.execute(f"select * from {staged.malformed} order by 1").fetchall() if staged.malformed else []
    assert found == malformed
    numbers = [r[0] for r in con.execute(f"select _source_row from {staged.table} order by 1").fetchall()]
    assert sorted(numbers + [row for row, _ in malformed]) == list(range(1, 9)) == list(range(1, staged.rows + 1))
    assert con.execute(f"select payment_id from {staged.table} where _source_row = 4").fetchone() == ("P2025-01-3",)


def test_a_row_of_many_empty_fields_loads_beside_a_quarantined_row(settings, contracts):
    base_delivery(settings, contracts, n=8)
    edit = lambda ls: ls[:3] + [ls[3] + b";" * WIDE] + ls[4:6] + [ls[6].rsplit(b";", 1)[0]] + ls[7:]  # noqa: E731
    _payments_with_lines(settings.landing_dir, contracts, edit)
    result = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (result.status, result.rows_delivered, result.rows_loaded, result.rows_quarantined) == ("loaded", 8, 7, 1)
    with store(settings) as con:
        assert con.execute("select source_row, rule, message from quarantine.rows").fetchall() == [
            (6, "malformed_row", "paiements_2025-01.csv, row 6: line 7 has 7 fields where the header has 8: "
                                 "the row could not be read")]
        assert con.execute("select _source_row from raw.payments where payment_id = 'P2025-01-2'").fetchone() == (3,)


@pytest.mark.parametrize("before, line", [
    (lambda ls: ls[:2] + [b""] + ls[2:], 10),
    (lambda ls: ls[:2] + [_quoted_empty_line(ls[2])] + ls[3:], 11),
    (lambda ls: ls[:2] + [_space_quoted_empty_line(ls[2])] + ls[3:], 11),
    (lambda ls: ls[:-1] + [b'P2025-01-7;E7;AB100007;"DSD\n-01"'], 9),
], ids=["an empty line", "an empty line inside quotes", "a space before a quoted value over lines",
        "a line break inside a quoted value of the last row"])
def test_a_cut_off_last_line_is_rejected_whatever_comes_before(settings, contracts, before, line):
    """The file stops in its last row, with no line break after it: rejected, however the rows
    before it are numbered (the check reads the bytes after the row)."""
    base_delivery(settings, contracts, n=8)
    path = _payments_with_lines(settings.landing_dir, contracts, lambda ls: before(ls[:-1] + [ls[-1][:25]]))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    result = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert result.status == "rejected" and result.reason.startswith(f"truncated or malformed at line {line}"), result.reason


@pytest.mark.parametrize("edit, reason", [
    (lambda ls: ls[:2] + [ln + b";x" for ln in ls[2:]], "malformed: 7 of the file's 8 rows do not have the header's 8 "
                                                        "fields (line 3 has 9 fields)"),
    (lambda ls: ls[:4] + [ls[4].replace(b"P2025", b'"P2025', 1)] + ls[5:], "unreadable at line 5: Value with "
                                                                           "unterminated quote found."),
], ids=["most rows malformed", "a quote never closed"])
def test_a_csv_file_whose_rows_cannot_be_told_apart_is_rejected(settings, contracts, edit, reason):
    base_delivery(settings, contracts, n=8)
    _payments_with_lines(settings.landing_dir, contracts, edit)
    result = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert result.status == "rejected" and result.reason == reason, result.reason


def test_loading_the_same_delivery_twice_changes_nothing(settings, contracts):
    base_delivery(settings, contracts)
    ingest(settings, contracts)

    def counts():
        con = store(settings)
        try:
            return {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                    for t in ("raw.programmes", "raw.beneficiaries", "raw.enrolments", "meta.deliveries", "quarantine.rows")}
        finally:
            con.close()

    before = counts()
    second = ingest(settings, contracts)
    assert {f.status for f in second.files} == {"duplicate"}
    assert counts() == before


def test_corrected_redelivery_of_a_month_replaces_it(settings, contracts):
    base_delivery(settings, contracts, n=4)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          [payment(i) for i in range(4)] + [payment(9, amount_mad="-1")])
    ingest(settings, contracts)
    path.unlink()
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i, amount_mad="400,00") for i in range(3)])
    ingest(settings, contracts)
    con = store(settings)
    current = con.execute("select count(*), sum(amount_mad) from raw.payments where _is_current").fetchone()
    assert current[0] == 3 and float(current[1]) == 1200.0
    assert con.execute("select count(*) from raw.payments").fetchone()[0] == 7  # history is kept
    statuses = con.execute("select status, superseded_by is not null from meta.deliveries where source = 'payments' "
                           "order by loaded_at").fetchall()
    assert statuses == [("superseded", True), ("loaded", False)]
    assert con.execute("select count(*) from quarantine.rows where resolved_by_delivery is null").fetchone()[0] == 0


def test_a_clean_redelivery_replaces_the_partners_feedback_on_the_file(settings, contracts):
    base_delivery(settings, contracts, n=4)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          [payment(i) for i in range(4)] + [payment(9, amount_mad="-1")])
    ingest(settings, contracts)
    feedback = settings.feedback_dir / "msisf"
    assert "quarantined: 1." in (feedback / "paiements_2025-01.csv.summary.txt").read_text()
    assert (feedback / "paiements_2025-01.csv.rejected_rows.csv").exists()
    path.unlink()
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(4)])
    corrected = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    summary = (feedback / "paiements_2025-01.csv.summary.txt").read_text()
    assert corrected.delivery_id in summary and "Rows delivered: 4; loaded: 4; quarantined: 0." in summary
    assert "All rows were loaded" in summary
    assert not (feedback / "paiements_2025-01.csv.rejected_rows.csv").exists()
    assert corrected.report_path == str(feedback / "paiements_2025-01.csv.summary.txt")


def test_a_corrected_file_for_a_month_rejected_earlier_leaves_no_rejection_report(settings, contracts):
    base_delivery(settings, contracts, n=4)
    folder = settings.landing_dir / "msisf"
    feedback = settings.feedback_dir / "msisf"
    for broken in (b"", b"x"):  # rejected twice: the second report's name carries its hash
        (folder / "paiements_2025-01.csv").write_bytes(broken)
        assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").status == "rejected"
    assert len(list(feedback.glob("paiements_2025-01*.report.txt"))) == 2
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(4)])
    loaded = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert loaded.status == "loaded"
    assert sorted(p.name for p in feedback.glob("paiements_2025-01*")) == ["paiements_2025-01.csv.summary.txt"]
    with store(settings) as con:  # the delivery log says which delivery answered the rejected ones
        assert con.execute("select status, superseded_by from meta.deliveries where source = 'payments' "
                           "order by loaded_at").fetchall() == [
            ("rejected", loaded.delivery_id), ("rejected", loaded.delivery_id), ("loaded", None)]
    assert "All rows were loaded" in (feedback / "paiements_2025-01.csv.summary.txt").read_text()


def cut_off_jsonl_delivery(landing, contracts):
    """A JSON-lines delivery cut off in its last line (line 10): rejected."""
    return jsonl_delivery(landing, contracts, lambda ls: _set(ls, 10, ls[9][:40]), endings="LF, none after the last line")


def test_an_unchanged_redrop_of_a_rejected_file_is_reported_as_not_loaded(settings, contracts):
    cut_off_jsonl_delivery(settings.landing_dir, contracts)
    rejected = result_for(ingest(settings, contracts), "requests_2026-03.jsonl")
    assert rejected.status == "rejected"
    kept = settings.rejected_dir / "digital" / "requests_2026-03.jsonl"
    for name in ("requests_2026-03.jsonl", "requests_2026-04.jsonl"):  # the same file, and under another name
        (settings.landing_dir / "digital" / name).write_bytes(kept.read_bytes())
    summary = ingest(settings, contracts)
    for f in summary.files:
        assert (f.status, f.repeats_rejected, f.delivery_id) == ("duplicate", True, rejected.delivery_id)
        assert f.reason.startswith(f"same content as rejected delivery {rejected.delivery_id} "
                                   "(requests_2026-03.jsonl, rejected on ")
        assert f.reason.endswith(f"not loaded; the problem: {rejected.reason}")
        assert (settings.landing_dir / "digital" / f.file_name).exists()  # left in place, as any duplicate
    report = (settings.feedback_dir / "digital" / "requests_2026-04.jsonl.report.txt").read_text()
    assert "did not load the file requests_2026-04.jsonl" in report
    assert "same content as the file requests_2026-03.jsonl" in report and rejected.reason in report


def _programmes_with_header(contracts, first_header):
    """The programmes contract's headers, the first one renamed."""
    headers = [c.header for c in contracts["programmes"].columns]
    headers[0] = first_header
    return headers


def test_a_file_rejected_under_a_contract_loads_once_the_contract_accepts_it(settings, contracts):
    """A file rejected for a header the contract did not know, delivered again unchanged once
    the contract accepts that header (a new contract version), is read again and loaded: a
    delivery of its own beside the rejected one, and the passes after it still run."""
    path = write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME],
                          headers=_programmes_with_header(contracts, "code_prog"))
    content = path.read_bytes()
    rejected = result_for(ingest(settings, contracts), "programmes_2025-01.csv")
    assert rejected.status == "rejected"
    fixed = dict(contracts)
    programmes = contracts["programmes"]
    code = programmes.columns[0]
    fixed["programmes"] = dataclasses.replace(programmes, version="2", columns=(
        dataclasses.replace(code, source_names=(*code.source_names, "code_prog")), *programmes.columns[1:]))
    path.write_bytes(content)  # the partner drops the same file again
    loaded = result_for(ingest(settings, fixed), "programmes_2025-01.csv")
    assert (loaded.status, loaded.rows_loaded) == ("loaded", 1)
    assert loaded.delivery_id != rejected.delivery_id
    assert result_for(ingest(settings, fixed), "programmes_2025-01.csv").status == "duplicate"  # and the next pass runs
    con = store(settings)
    assert con.execute("select delivery_id, status from meta.deliveries order by loaded_at").fetchall() == [
        (rejected.delivery_id, "rejected"), (loaded.delivery_id, "loaded")]
    assert con.execute("select distinct _delivery_id from raw.programmes").fetchall() == [(loaded.delivery_id,)]


def test_every_rejected_file_keeps_its_row_in_the_delivery_log(settings, contracts):
    """Rejected files with the same content (empty files under names no contract matches, in
    two partner folders; the same name again at the next pass; a month's file rejected again
    under a new contract version) each keep a row of the delivery log, as each keeps its file
    in the rejected area and its report."""
    for partner, name in (("msisf", "beneficiaires.csv"), ("cdg_finance", "prets.csv")):
        (settings.landing_dir / partner).mkdir(parents=True, exist_ok=True)
        (settings.landing_dir / partner / name).write_bytes(b"")
    (settings.landing_dir / "msisf" / "paiements_2025-01.csv").write_bytes(b"")
    first = ingest(settings, contracts)
    (settings.landing_dir / "msisf" / "beneficiaires.csv").write_bytes(b"")
    (settings.landing_dir / "msisf" / "paiements_2025-01.csv").write_bytes(b"")
    changed = dict(contracts)
    changed["payments"] = dataclasses.replace(contracts["payments"], version="2")
    second = ingest(settings, changed)
    results = first.files + second.files
    assert [f.status for f in results] == ["rejected"] * 5
    assert len({f.delivery_id for f in results}) == 5
    con = store(settings)
    assert sorted(con.execute("select delivery_id, file_name, status from meta.deliveries").fetchall()) == sorted(
        (f.delivery_id, f.file_name, "rejected") for f in results)
    assert len([p for p in settings.rejected_dir.glob("*/*") if not p.name.endswith(".report.txt")]) == 5
    assert len(list(settings.feedback_dir.glob("*/*.report.txt"))) == 5


def test_a_month_delivered_again_as_an_earlier_file_goes_back_to_it(settings, contracts):
    """A month delivered as A, replaced by B, then A again (the partner withdraws B): A is a
    new delivery of the month and supersedes B, as any new file of the month does; only the
    content of the delivery in effect for the month is a no-op."""
    base_delivery(settings, contracts, n=4)
    month_a = [payment(i) for i in range(4)]
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", month_a)
    first = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", month_a[:3])
    second = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", month_a)
    third = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert [f.status for f in (first, second, third)] == ["loaded", "loaded", "loaded"]
    assert third.delivery_id not in (first.delivery_id, second.delivery_id) and third.rows_loaded == 4
    con = store(settings)
    assert con.execute("select delivery_id, status, superseded_by from meta.deliveries where source = 'payments' "
                       "order by loaded_at").fetchall() == [
        (first.delivery_id, "superseded", second.delivery_id), (second.delivery_id, "superseded", third.delivery_id),
        (third.delivery_id, "loaded", None)]
    assert con.execute("select count(*), min(_delivery_id) from raw.payments where _is_current").fetchone() == (
        4, third.delivery_id)
    con.close()
    summary = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.summary.txt").read_text()
    assert third.delivery_id in summary and "Rows delivered: 4" in summary
    assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").status == "duplicate"
    assert path.exists()


def test_a_month_delivered_again_as_the_file_in_effect_after_a_rejection_says_so(settings, contracts):
    """A month delivered as A, then as B, which is rejected, then as A again: A is still in
    effect, so nothing is loaded, but not silently. The partner's feedback on the file says
    it is identical to the delivery in effect, in place of B's rejection report (kept with
    the rejected file); the delivery log records that B was answered by the delivery in
    effect. Left in the landing area, A is then a plain no-op, as any delivery in effect."""
    base_delivery(settings, contracts, n=4)
    month_a = [payment(i) for i in range(4)]
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", month_a)
    content_a = path.read_bytes()
    first = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [])  # no data rows
    second = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (first.status, second.status) == ("loaded", "rejected")
    feedback = settings.feedback_dir / "msisf"
    assert (feedback / "paiements_2025-01.csv.report.txt").exists()
    path.write_bytes(content_a)
    third = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (third.status, third.delivery_id, third.repeats_rejected) == ("duplicate", first.delivery_id, False)
    assert third.reason.startswith(f"same content as delivery {first.delivery_id}, in effect for batch 2025-01")
    assert second.delivery_id in third.reason, third.reason
    assert third.report_path == str(feedback / "paiements_2025-01.csv.summary.txt")
    assert sorted(p.name for p in feedback.glob("paiements_2025-01*")) == ["paiements_2025-01.csv.summary.txt"]
    summary = (feedback / "paiements_2025-01.csv.summary.txt").read_text()
    assert first.delivery_id in summary and "Rows delivered: 4; loaded: 4; quarantined: 0." in summary
    assert "identical to this delivery, still in effect for 2025-01" in summary, summary
    assert second.delivery_id in summary
    assert (settings.rejected_dir / "msisf" / "paiements_2025-01.csv.report.txt").exists()  # B's report is kept
    con = store(settings)
    assert con.execute("select delivery_id, status, superseded_by from meta.deliveries where source = 'payments' "
                       "order by loaded_at").fetchall() == [
        (first.delivery_id, "loaded", None), (second.delivery_id, "rejected", first.delivery_id)]
    con.close()
    fourth = result_for(ingest(settings, contracts), "paiements_2025-01.csv")  # left in place: nothing new to say
    assert fourth.status == "duplicate" and second.delivery_id not in fourth.reason
    assert fourth.report_path is None


def _a_then_b_rejected(settings, contracts, rows_a=None):
    """A month delivered as A (loaded), then B (no data rows: rejected): (path, A's bytes, B's bytes, A, B)."""
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          rows_a or [payment(i) for i in range(4)])
    content_a = path.read_bytes()
    first = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [])
    content_b = path.read_bytes()
    second = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (first.status, second.status) == ("loaded", "rejected")
    return path, content_a, content_b, first, second


@pytest.mark.parametrize("order", ["B rejected after A", "B rejected before A"])
def test_the_file_in_effect_delivered_after_a_repeat_of_a_rejected_file_says_so(settings, contracts, order):
    """A repeat of a rejected file is reported on its name but not recorded in the log: A
    delivered again after it replaces that "not loaded" report by A's summary, as after the
    rejection itself (A, B rejected, A, B again, A again; or B rejected, A, B again, A again)."""
    base_delivery(settings, contracts, n=4)
    feedback = settings.feedback_dir / "msisf"
    if order == "B rejected after A":
        path, content_a, content_b, first, second = _a_then_b_rejected(settings, contracts)
        path.write_bytes(content_a)
        assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").report_path  # told
    else:
        path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [])
        content_b = path.read_bytes()
        second = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
        write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                       [payment(i) for i in range(4)])
        content_a = path.read_bytes()
        first = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
        assert (second.status, first.status) == ("rejected", "loaded")
    path.write_bytes(content_b)
    assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").repeats_rejected
    assert (feedback / "paiements_2025-01.csv.report.txt").exists()
    path.unlink()
    ingest(settings, contracts)
    path.write_bytes(content_a)
    last = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (last.status, last.delivery_id) == ("duplicate", first.delivery_id)
    assert last.report_path == str(feedback / "paiements_2025-01.csv.summary.txt")
    assert second.delivery_id in last.reason, last.reason
    assert sorted(p.name for p in feedback.glob("paiements_2025-01*")) == ["paiements_2025-01.csv.summary.txt"]
    summary = (feedback / "paiements_2025-01.csv.summary.txt").read_text()
    assert "identical to this delivery, still in effect for 2025-01" in summary and second.delivery_id in summary
    with store(settings) as con:
        assert con.execute("select superseded_by from meta.deliveries where delivery_id = ?",
                           [second.delivery_id]).fetchone() == (first.delivery_id,)
    again = result_for(ingest(settings, contracts), "paiements_2025-01.csv")  # left in place: nothing new to say
    assert again.report_path is None and second.delivery_id not in again.reason


def test_the_note_on_the_file_in_effect_is_kept_when_its_rows_are_released_in_the_same_pass(settings, contracts):
    """A (rows held for enrolments), B rejected, then A again in the pass that delivers the
    enrolments A's held rows wait for: the summary rewritten after the release keeps the note."""
    base_delivery(settings, contracts, n=2)  # enrolments E0, E1 only: E2, E3's payments held
    path, content_a, _, first, second = _a_then_b_rejected(settings, contracts)
    assert first.rows_quarantined == 2, first.rules_failed
    path.write_bytes(content_a)
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-02.csv", [person(i) for i in range(4)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(2), enrolment(3)])
    summary = ingest(settings, contracts)
    third = result_for(summary, "paiements_2025-01.csv")
    assert "rejected since" in third.reason and second.delivery_id in third.reason
    assert [(r.file_name, r.rows_released) for r in summary.released] == [("paiements_2025-01.csv", 2)]
    text = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.summary.txt").read_text()
    assert "identical to this delivery" in text and second.delivery_id in text, text
    assert "Rows delivered: 4; loaded: 4; quarantined: 0." in text, text


def test_a_rejection_a_log_of_earlier_code_left_unanswered_is_not_given_to_a_later_load(settings, contracts):
    """A log written before superseded_by was set for rejections: B rejected, then A loaded,
    B's superseded_by empty. C loaded for the month later does not mark B as answered by C (A
    answered it); a rejection after the last load of the month is answered by the next one."""
    base_delivery(settings, contracts, n=4)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [])
    b = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(4)])
    a = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    con = duckdb.connect(str(settings.store_path))
    assert con.execute("select superseded_by from meta.deliveries where delivery_id = ?",
                       [b.delivery_id]).fetchone() == (a.delivery_id,)
    con.execute("update meta.deliveries set superseded_by = null where status = 'rejected'")  # as earlier code left it
    con.close()
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(3)])
    c = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    path.write_text("")  # D: an empty file, rejected after C
    d = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(2)])
    e = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert [x.status for x in (c, d, e)] == ["loaded", "rejected", "loaded"]
    with store(settings) as con:
        assert dict(con.execute("select delivery_id, superseded_by from meta.deliveries where status = 'rejected'"
                                ).fetchall()) == {b.delivery_id: None, d.delivery_id: e.delivery_id}

def test_an_unchanged_file_under_another_months_name_is_a_delivery_of_that_month(settings, contracts):
    """A monthly catalogue unchanged since the month before, delivered under the new month's
    name (here in the same pass, prepared before the first file commits): a delivery of its
    month, recorded with its feedback, its rows loaded under its month (the same keys again,
    now current) and a warning naming the delivery it repeats. The same name again is a no-op."""
    first = write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    (first.parent / "programmes_2025-02.csv").write_bytes(first.read_bytes())
    summary = ingest(settings, contracts)
    january, february = summary.files
    assert [(f.file_name, f.status, f.batch, f.rows_loaded) for f in summary.files] == [
        ("programmes_2025-01.csv", "loaded", "2025-01", 1), ("programmes_2025-02.csv", "loaded", "2025-02", 1)]
    assert february.delivery_id != january.delivery_id
    assert any(january.delivery_id in w and "programmes_2025-01.csv" in w for w in february.warnings)
    con = store(settings)
    assert con.execute("select batch, status from meta.deliveries order by batch").fetchall() == [
        ("2025-01", "loaded"), ("2025-02", "loaded")]
    assert con.execute("select _batch from raw.programmes where _is_current").fetchall() == [("2025-02",)]
    con.close()
    feedback = (settings.feedback_dir / "msisf" / "programmes_2025-02.csv.summary.txt").read_text()
    assert february.delivery_id in feedback and january.delivery_id in feedback
    assert {f.status for f in ingest(settings, contracts).files} == {"duplicate"}


def test_a_payments_file_repeated_under_the_next_month_sets_its_rows_aside(settings, contracts):
    """A source replacing whole months: January's payments delivered again under February's
    name are a February delivery whose payment ids January already holds; its rows are set
    aside (key_in_other_batch), which the partner's feedback says, and January stays as it was."""
    base_delivery(settings, contracts, n=4)
    january = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                             [payment(i) for i in range(4)])
    (january.parent / "paiements_2025-02.csv").write_bytes(january.read_bytes())
    february = result_for(ingest(settings, contracts), "paiements_2025-02.csv")
    assert (february.status, february.rows_delivered, february.rows_loaded, february.rows_quarantined) == (
        "loaded", 4, 0, 4)
    assert february.rules_failed.get("key_in_other_batch") == 4
    con = store(settings)
    assert con.execute("select _batch, count(*) from raw.payments where _is_current group by 1").fetchall() == [
        ("2025-01", 4)]
    assert (settings.feedback_dir / "msisf" / "paiements_2025-02.csv.rejected_rows.csv").exists()


def test_received_at_is_when_ingestion_first_saw_the_file_not_its_modification_time(settings, contracts):
    """Files copied with their times kept (sftp -p, rsync -a, unzip) carry the partner's
    modification time: a delivery's arrival (received_at, the delivery lag) is when ingestion
    first saw the file, for a loaded and a rejected file alike; the modification time is
    kept beside it (modified_at)."""
    import os
    from datetime import datetime, timedelta

    old = datetime(2024, 6, 1, 12, 0, 0)
    epoch = (old - datetime(1970, 1, 1)).total_seconds()
    loaded = write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    rejected = settings.landing_dir / "msisf" / "paiements_2025-01.csv"
    rejected.write_bytes(b"")
    for path in (loaded, rejected):
        os.utime(path, (epoch, epoch))
    before = datetime.utcnow() - timedelta(seconds=5)
    ingest(settings, contracts)
    con = store(settings)
    rows = con.execute("select status, received_at, modified_at from meta.deliveries order by status").fetchall()
    assert [r[0] for r in rows] == ["loaded", "rejected"]
    for status, received_at, modified_at in rows:
        assert received_at >= before, status
        assert modified_at == old, status


def test_a_file_left_in_the_landing_area_was_received_when_first_seen(settings, contracts, monkeypatch):
    """A file that repeats a rejected content stays in the landing area; loaded by a later
    pass (the contract now accepts it), it was received when the first pass saw it."""
    import ingestion.load

    monkeypatch.setattr(ingestion.load, "RACY_NS", 0)
    folder = settings.landing_dir / "msisf"
    path = write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME],
                          headers=_programmes_with_header(contracts, "code_prog"))
    content = path.read_bytes()
    ingest(settings, contracts)  # rejected, moved out of the landing area
    (folder / "programmes_2025-01.csv").write_bytes(content)
    seen = ingest(settings, contracts)  # the same content again: left in place, not loaded
    assert result_for(seen, "programmes_2025-01.csv").repeats_rejected
    con = store(settings)
    [(first_seen,)] = con.execute("select hashed_at_ns from meta.file_hashes").fetchall()
    con.close()
    ingest(settings, contracts)  # still the same: its record is kept
    fixed = dict(contracts)
    programmes = contracts["programmes"]
    code = programmes.columns[0]
    fixed["programmes"] = dataclasses.replace(programmes, version="2", columns=(
        dataclasses.replace(code, source_names=(*code.source_names, "code_prog")), *programmes.columns[1:]))
    assert result_for(ingest(settings, fixed), "programmes_2025-01.csv").status == "loaded"
    con = store(settings)
    received = con.execute("select received_at from meta.deliveries where status = 'loaded'").fetchone()[0]
    from datetime import datetime, timedelta
    assert received == datetime(1970, 1, 1) + timedelta(microseconds=first_seen // 1000)


def test_a_store_written_before_modified_at_gets_the_new_columns(settings, contracts, monkeypatch):
    """A store from before ``modified_at`` and ``file_headers`` (and the first-seen time of
    file hashes) keeps working: the columns are added, its older rows keep null there; new
    rows are written by column name, whatever order the columns were added in."""
    import ingestion.load

    monkeypatch.setattr(ingestion.load, "RACY_NS", 0)
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    ingest(settings, contracts)
    con = duckdb.connect(str(settings.store_path))
    for column in ("file_headers", "modified_at"):
        con.execute(f"alter table meta.deliveries drop column {column}")
    con.execute("alter table meta.deliveries add column file_headers varchar")  # before modified_at, this time
    con.execute("alter table meta.file_hashes drop column first_seen_ns")
    con.close()
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(1)])
    summary = ingest(settings, contracts)
    assert {(f.file_name, f.status) for f in summary.files} == {("programmes_2025-01.csv", "duplicate"),
                                                              ("registre_2025-01.csv", "loaded")}
    con = store(settings)
    assert con.execute("select file_name, modified_at is not null, file_headers is not null from meta.deliveries "
                       "order by file_name").fetchall() == [
        ("programmes_2025-01.csv", False, False), ("registre_2025-01.csv", True, True)]
    # the older record, reused, keeps null (its hashed_at_ns stands for it); the new file's has its time
    assert con.execute("select path, first_seen_ns = hashed_at_ns from meta.file_hashes order by path").fetchall() == [
        ("msisf/programmes_2025-01.csv", None), ("msisf/registre_2025-01.csv", True)]


def test_the_partners_summary_explains_each_reason_in_plain_words(settings, contracts):
    """The summary names each rule id (a key of the ledger) with a plain description and the
    header the partner delivered; rows held only for another row are said to load on their
    own; a file no contract matches gets example names, not patterns."""
    base_delivery(settings, contracts, n=4)
    rows = [person(i) for i in range(4)] + [person(90, birth_date="31/02/1990")]

    def validator(con, contract, typed_table, batch):
        if contract.source != "beneficiaries":
            return iter(())
        return iter([(5, "gx:expect_column_values_to_not_be_null:birth_date__typed", "birth_date", "missing")])

    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", rows)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(0), payment(7)])  # enrolment E7 is not delivered yet: held
    (settings.landing_dir / "msisf" / "beneficiaires.csv").write_text("x")
    ingestor = make_ingestor(settings, contracts)
    ingestor.validators = [validator]
    summary = ingestor.ingest(settings.landing_dir)
    feedback = settings.feedback_dir / "msisf"
    text = (feedback / "registre_2025-01.csv.summary.txt").read_text()
    assert "type:birth_date: 1 (a value of column birth_date (header 'date_naissance' in the file) is not a valid date" in text
    assert ("gx:expect_column_values_to_not_be_null:birth_date__typed: 1 (a value of column birth_date (header "
            "'date_naissance' in the file) is missing or not a valid date)") in text
    held = (feedback / "paiements_2025-01.csv.summary.txt").read_text()
    assert "references:enrolment_id: 1 (" in held
    assert "load on their own" in held and "Correct them and deliver the whole file again" not in held
    report = Path(result_for(summary, "beneficiaires.csv").report_path).read_text()
    assert "registre_YYYY-MM.csv" in report and "(?P<batch>" not in report


def test_later_registry_record_supersedes_earlier_one(settings, contracts):
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(3)])
    ingest(settings, contracts)
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-02.csv",
                   [person(1, region_code="07", province_code="0701", commune_code="0701001")])
    ingest(settings, contracts)
    con = store(settings)
    rows = con.execute("select _batch, region_code, _is_current from raw.beneficiaries order by _batch, _source_row").fetchall()
    assert rows == [("2025-01", "06", True), ("2025-01", "06", False), ("2025-01", "06", True), ("2025-02", "07", True)]
    assert con.execute("select count(*) from raw.beneficiaries where _is_current").fetchone()[0] == 3


def test_renamed_columns_are_accepted_through_aliases(settings, contracts):
    names = [c.name for c in contracts["programmes"].columns]  # contract names instead of partner headers
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME], headers=names)
    summary = ingest(settings, contracts)
    assert result_for(summary, "programmes_2025-01.csv").rows_loaded == 1


def test_ingest_refuses_a_different_key_for_an_existing_store(settings, contracts):
    base_delivery(settings, contracts)
    ingest(settings, contracts)
    with pytest.raises(KeyMismatchError, match="differs from the one this raw store was written with"):
        ingest(settings, contracts, key=b"another-key-0123456789")


def test_ingest_reads_jsonl_and_xlsx(settings, contracts):
    base_delivery(settings, contracts, n=2)
    loan = {"loan_id": "L1", "borrower_cin": "AB100001", "programme_code": "DSD-01", "product": "income_generating",
            "principal_mad": 15000.5, "term_months": 24, "annual_rate_pct": 7.5, "disbursement_date": "2025-01-10",
            "status": "active"}
    write_delivery(settings.landing_dir, contracts["loans"], "loans_2025-01.jsonl", [loan])
    venture = {"venture_id": "V1", "promoter_cin": "AB100000", "programme_code": "DSD-01", "venture_name": "Coop Argane",
               "legal_form": "cooperative", "sector": "agriculture", "cohort": "2025-A", "region_code": "09",
               "incubation_start_date": __import__("datetime").date(2025, 1, 15), "jobs_created": 3, "revenue_mad": 120000.0}
    write_delivery(settings.landing_dir, contracts["ventures"], "ventures_2025-01.xlsx", [venture])
    summary = ingest(settings, contracts)
    assert result_for(summary, "loans_2025-01.jsonl").rows_loaded == 1
    assert result_for(summary, "ventures_2025-01.xlsx").rows_loaded == 1
    con = store(settings)
    assert con.execute("select principal_mad::double, term_months from raw.loans").fetchone() == (15000.5, 24)
    assert con.execute("select incubation_start_date::varchar, jobs_created from raw.ventures").fetchone() == ("2025-01-15", 3)


VENTURE = {"venture_id": "V1", "promoter_cin": "AB100000", "programme_code": "DSD-01", "venture_name": "Coop Argane",
           "legal_form": "cooperative", "sector": "agriculture", "cohort": "2025-A", "region_code": "09",
           "incubation_start_date": "2025-01-15", "status_12m": "active", "jobs_created": 3, "revenue_mad": 120000}


def _workbook_part_changed(path: Path, part: str, change) -> Path:
    """Rewrite ``path`` as a workbook of its contract's rows saved by openpyxl's default mode
    (its sheets record their dimension: openpyxl then reads them only while iterating their
    rows), one part (member) of its archive rewritten by ``change`` (bytes -> bytes)."""
    import io
    import zipfile

    from openpyxl import Workbook, load_workbook

    rows = list(load_workbook(path, read_only=True).worksheets[0].values)
    wb = Workbook()
    wb.active.title = "ventures"
    for row in rows:
        wb.active.append(row)
    wb.save(path)
    with zipfile.ZipFile(path) as src:
        members = [(info, src.read(info.filename)) for info in src.infolist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info, body in members:
            dst.writestr(info, change(body) if info.filename == part else body)
    path.write_bytes(out.getvalue())
    return path


@pytest.mark.parametrize("part, change, reason", [
    ("xl/worksheets/sheet1.xml", lambda b: b.replace(b'<c r="M2" t="n"><v>3</v>', b'<c r="M2" t="n"><v>AB100001</v>'),
     "not a valid Excel workbook (.xlsx): the sheet 'ventures' could not be read: cell M2 is marked as holding a "
     "number but does not hold one"),
    ("xl/worksheets/sheet1.xml", lambda b: b[: b.rindex(b"</row>")],
     "not a valid Excel workbook (.xlsx): the sheet 'ventures' could not be read: its XML is not well-formed"),
    ("xl/workbook.xml", lambda b: b[: len(b) // 2],
     "not a valid Excel workbook (.xlsx): a part of it is not well-formed XML"),
], ids=["text in a number cell", "sheet cut short", "workbook part cut short"])
def test_a_workbook_with_a_damaged_part_is_rejected_and_the_other_files_load(settings, contracts, part, change, reason):
    """openpyxl reads a sheet only while its rows are iterated: a damaged sheet rejects its
    file with the problem named (never the cell's content), not the whole pass."""
    base_delivery(settings, contracts, n=2)
    damaged = write_delivery(settings.landing_dir, contracts["ventures"], "ventures_2025-01.xlsx", [VENTURE])
    _workbook_part_changed(damaged, part, change)
    write_delivery(settings.landing_dir, contracts["ventures"], "ventures_2025-02.xlsx", [VENTURE])
    summary = ingest(settings, contracts)
    bad = result_for(summary, "ventures_2025-01.xlsx")
    assert bad.status == "rejected" and bad.reason.startswith(reason), bad.reason
    assert "AB100001" not in bad.reason and str(settings.home) not in bad.reason
    assert (settings.rejected_dir / "cdg_incubation" / "ventures_2025-01.xlsx").exists()
    assert result_for(summary, "ventures_2025-02.xlsx").rows_loaded == 1


def test_a_workbook_formula_without_its_computed_value_quarantines_its_row(settings, contracts):
    """A workbook saved by a script holds formulas without their results: openpyxl reads such a
    cell as empty. The row is quarantined naming the cells, not loaded with NULL; a formula
    with its result stored loads that result, and one in a column the contract does not
    know changes nothing."""
    from openpyxl import Workbook

    base_delivery(settings, contracts, n=2)
    columns = [c.name for c in contracts["ventures"].columns]
    wb = Workbook()
    ws = wb.active
    ws.title = "ventures"
    ws.append([contracts["ventures"].column(c).header for c in columns] + ["Note"])
    for i, jobs, revenue, note in [(1, 3, 120000, None), (2, "=1+2", "=1000*12", None), (3, "=2*3", 5000, None),
                                   (4, 4, 7000, "=A5")]:
        ws.append([dict(VENTURE, venture_id=f"V{i}", jobs_created=jobs, revenue_mad=revenue).get(c)
                   for c in columns] + [note])
    path = settings.landing_dir / "cdg_incubation" / "ventures_2025-01.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    _workbook_part_changed(path, "xl/worksheets/sheet1.xml", lambda b: b.replace(b"<f>2*3</f><v />", b"<f>2*3</f><v>6</v>"))
    summary = ingest(settings, contracts)
    result = result_for(summary, "ventures_2025-01.xlsx")
    assert (result.rows_delivered, result.rows_loaded, result.rows_quarantined) == (4, 3, 1), result.rules_failed
    con = store(settings)
    assert con.execute("select venture_id, jobs_created from raw.ventures order by 1").fetchall() == [
        ("V1", 3), ("V3", 6), ("V4", 4)]
    [(row, rule, message)] = con.execute("select source_row, rule, message from quarantine.rows").fetchall()
    assert (row, rule) == (2, "malformed_row")
    assert message == ("ventures_2025-01.xlsx, row 2: sheet row 3: columns 'Jobs created', 'Annual revenue MAD' "
                       "(cells M3, N3) hold formulas with no computed value (the workbook was saved by a program "
                       "that does not compute formulas): open and save the workbook in Excel, or deliver values")


@pytest.mark.parametrize("dimension", [b'<dimension ref="A1:N2"/>', b""])
def test_a_workbook_is_read_whole_whatever_dimension_it_records(settings, contracts, dimension):
    """A sheet records its size (``<dimension>``); a script may record a wrong one, or none.
    openpyxl stopped at the recorded last row, so the rows after it were lost without a word:
    every row the sheet holds is read. A value in a column beyond the header row (no header,
    so no column of the contract) is ignored with a warning, with or without a dimension."""
    from openpyxl import Workbook

    base_delivery(settings, contracts, n=2)
    columns = [c.name for c in contracts["ventures"].columns]
    wb = Workbook()
    ws = wb.active
    ws.title = "ventures"
    ws.append([contracts["ventures"].column(c).header for c in columns])
    for i in range(1, 5):
        ws.append([dict(VENTURE, venture_id=f"V{i}").get(c) for c in columns] + (["extra"] if i == 3 else []))
    path = settings.landing_dir / "cdg_incubation" / "ventures_2025-01.xlsx"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    _workbook_part_changed(path, "xl/worksheets/sheet1.xml",
                           lambda b: re.sub(rb"<dimension[^>]*/>", lambda m: dimension, b))
    result = result_for(ingest(settings, contracts), "ventures_2025-01.xlsx")
    assert (result.rows_delivered, result.rows_loaded, result.rows_quarantined) == (4, 4, 0)
    assert store(settings).execute("select venture_id from raw.ventures order by 1").fetchall() == [
        ("V1",), ("V2",), ("V3",), ("V4",)]
    assert "values in columns beyond the header row (first: cell O4) have no header and were ignored" in result.warnings


def test_ingest_quarantines_every_row_a_validator_returns(settings, contracts):
    base_delivery(settings, contracts, n=6)

    def validator(con, contract, typed_table, batch):
        if contract.source != "beneficiaries":
            return iter(())
        return ((row, "extra:odd", None if row == 1 else "cin", f"row {row} is odd") for row in (1, 3, 5))

    ingestor = make_ingestor(settings, contracts)
    ingestor.validators = [validator]
    summary = ingestor.ingest(settings.landing_dir)
    ben = result_for(summary, "registre_2025-01.csv")
    assert (ben.rows_loaded, ben.rows_quarantined, ben.rules_failed) == (3, 3, {"extra:odd": 3})
    con = store(settings)
    rows = con.execute("select source_row, rule, column_name, message from quarantine.rows "
                       "where rule = 'extra:odd' order by source_row").fetchall()
    loaded = [r[0] for r in con.execute("select _source_row from raw.beneficiaries order by 1").fetchall()]
    con.close()
    assert rows == [(1, "extra:odd", None, "registre_2025-01.csv, row 1: row 1 is odd"),
                    (3, "extra:odd", "cin", "registre_2025-01.csv, row 3: row 3 is odd"),
                    (5, "extra:odd", "cin", "registre_2025-01.csv, row 5: row 5 is odd")]
    assert loaded == [2, 4, 6]


def test_a_failure_preparing_a_file_leaves_the_file_before_committed(settings, contracts, monkeypatch):
    import ingestion.load as load

    base_delivery(settings, contracts)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(0)])
    real = load.stage_file

    def failing(con, path, contract, **kw):
        if path.name.startswith("paiements"):
            raise OSError("disk read error")
        return real(con, path, contract, **kw)

    monkeypatch.setattr(load, "stage_file", failing)
    with pytest.raises(OSError, match="disk read error"):
        ingest(settings, contracts)
    with store(settings) as con:
        loaded = {r[0] for r in con.execute("select source from meta.deliveries where status = 'loaded'").fetchall()}
        assert {"programmes", "beneficiaries", "enrolments"} <= loaded and "payments" not in loaded
        assert not con.execute("select count(*) from raw.payments").fetchone()[0]


def test_a_selection_of_sources_loads_each_selected_file_from_its_own_rows(settings, contracts):
    """A file left out by the selection sits between two selected ones in load order."""
    base_delivery(settings, contracts, n=3)
    summary = make_ingestor(settings, contracts).ingest(settings.landing_dir, sources=["beneficiaries", "enrolments"])
    assert [(f.source, f.status, f.rows_delivered) for f in summary.files] == [
        ("beneficiaries", "loaded", 3), ("enrolments", "loaded", 3)]
    assert summary.files[0].rows_loaded == 3
    with store(settings) as con:
        assert con.execute("select count(*) from raw.beneficiaries").fetchone()[0] == 3
        assert con.execute("select count(*) from raw.programmes").fetchone()[0] == 0


def test_the_second_of_two_identical_unreadable_files_is_a_duplicate_of_the_first(settings, contracts):
    """The second file is read before the first is rejected; it is still found to repeat it."""
    folder = settings.landing_dir / contracts["beneficiaries"].partner
    folder.mkdir(parents=True, exist_ok=True)
    for month in ("2025-01", "2025-02"):
        (folder / f"registre_{month}.csv").write_bytes(b"")
    summary = ingest(settings, contracts)
    assert [(f.file_name, f.status) for f in summary.files] == [("registre_2025-01.csv", "rejected"),
                                                               ("registre_2025-02.csv", "duplicate")]
    assert (folder / "registre_2025-02.csv").exists()  # left in place, as any duplicate


class _GappedRowIds:
    """A connection whose staged copies seem to have a gap in their row ids."""

    class _Row:
        def __init__(self, row):
            self.row = row

        def fetchone(self):
            return self.row

    def __init__(self, con):
        self.con = con

    def execute(self, sql, *args):
        result = self.con.execute(sql, *args)
        if sql.startswith("select min(rowid), max(rowid), count(*)"):
            first, last, rows = result.fetchone()
            return self._Row((first, last + 1, rows))
        return result

    def __getattr__(self, name):
        return getattr(self.con, name)


def test_staging_numbers_rows_in_file_order_when_row_ids_have_gaps(contracts, tmp_path):
    """Rows are numbered by their position in the staged copy; should its row ids not be
    contiguous, they are numbered in row id order in a second copy: the same numbers."""
    from ingestion.readers import stage_file

    rows = [person(i) for i in range(25)]
    rows[7]["sex"] = ""
    path = write_delivery(tmp_path, contracts["beneficiaries"], "registre_2025-01.csv", rows)
    plain, gapped = duckdb.connect(), duckdb.connect()
    stage_file(plain, path, contracts["beneficiaries"], table="staged")
    stage_file(_GappedRowIds(gapped), path, contracts["beneficiaries"], table="staged")
    assert gapped.execute("select count(*) from staged_numbered").fetchone()[0] == 25  # the second copy
    query = "select * from staged order by _source_row"
    assert gapped.execute(query).fetchall() == plain.execute(query).fetchall()
    assert [r[0] for r in gapped.execute(query).fetchall()] == list(range(1, 26))
    cin = [c.name for c in contracts["beneficiaries"].columns].index("cin") + 1
    assert [r[cin] for r in gapped.execute(query).fetchall()] == [r["cin"] for r in rows]


def test_a_pseudonym_collision_with_an_earlier_file_stops_the_file(settings, contracts, monkeypatch):
    """Every value of a run is checked against the values before it, not only its own file's
    (also across the ingestion's two connections: consecutive files are prepared on each)."""
    import ingestion.load as load

    real = load.pseudonymise.install

    def narrowed(con, key, **kwargs):  # a pseudonym of one value only: any two identifiers collide
        real(con, key, **kwargs)
        con.execute("create or replace temp macro jisr_pseudonym_of(h) as 7::bigint")

    monkeypatch.setattr(load.pseudonymise, "install", narrowed)
    # enrolments have one direct identifier (cin): one value per file, so no file collides alone
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv", [enrolment(0)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1)])
    with pytest.raises(RuntimeError, match=r"inscriptions_2025-02\.csv: column cin: cin values: a new value and one "
                                           r"seen before in this run have the same pseudonym, a pseudonym collision"):
        ingest(settings, contracts)
    with store(settings) as con:
        assert con.execute("select file_name, status from meta.deliveries").fetchall() == [
            ("inscriptions_2025-01.csv", "loaded")]
        assert con.execute("select count(*) from raw.enrolments").fetchone()[0] + con.execute(
            "select count(distinct source_row) from quarantine.rows").fetchone()[0] == 1


def test_the_next_file_is_prepared_while_the_one_before_commits(settings, contracts, monkeypatch):
    """Reading and typing file N+1 overlaps the commit of file N (a connection per staged
    file, a thread), and the run's outcome is that of files taken one after the other."""
    import threading

    import ingestion.load as load

    base_delivery(settings, contracts, n=3)  # programmes, registry, then enrolments of January
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(2)])
    first_commit_started = threading.Event()
    overlapped, staged_on, passes, left_behind = [], {}, [], []
    real_prepare, real_commit, real_forget = load.Ingestor._prepare, load.Ingestor._commit, load.pseudonymise.forget

    def prepare(self, con, path, *args, **kwargs):
        if path.name == "inscriptions_2025-02.csv":  # waits for the first file's commit to start
            overlapped.append(first_commit_started.wait(timeout=20))
        return real_prepare(self, con, path, *args, **kwargs)

    def commit(self, con, prepared):
        passes.append(self)
        staged_on[prepared.path.name] = prepared.slot
        if prepared.path.name == "inscriptions_2025-01.csv":
            first_commit_started.set()
        return real_commit(self, con, prepared)

    def forget(con):  # the end of the pass, every connection still open
        real_forget(con)
        overlapped.append("forgotten")
        for c in passes[0]._connections:
            left_behind.extend(c.execute("select database_name, table_name from duckdb_tables() "
                                         "where temporary and table_name <> 'jisr_hmac_key' "
                                         "or database_name = 'jisr_memo'").fetchall())

    monkeypatch.setattr(load.Ingestor, "_prepare", prepare)
    monkeypatch.setattr(load.Ingestor, "_commit", commit)
    monkeypatch.setattr(load.pseudonymise, "forget", forget)
    summary = ingest(settings, contracts)
    assert overlapped == [True, "forgotten"]
    assert sorted((f.file_name, f.status, f.rows_loaded, f.rows_quarantined) for f in summary.files) == [
        ("inscriptions_2025-01.csv", "loaded", 3, 0), ("inscriptions_2025-02.csv", "loaded", 1, 0),
        ("programmes_2025-01.csv", "loaded", 1, 0), ("registre_2025-01.csv", "loaded", 3, 0)]
    # each staged file waits for its commit on a connection of its own (not the committing one)
    assert None not in staged_on.values() and 0 not in staged_on.values()
    assert staged_on["inscriptions_2025-01.csv"] != staged_on["inscriptions_2025-02.csv"]
    assert left_behind == []  # no staged, typed or memo table of the run is left
    with store(settings) as con:
        assert con.execute("select count(*) from raw.enrolments").fetchone()[0] == 4


def hold_first_commit(monkeypatch, first: str, enough, check=None) -> list[str]:
    """Hold the commit of the file ``first`` until ``enough(staged)`` (or 20 s), then half a
    second more for any file beyond the bound to show up; the names of the files staged
    meanwhile are returned (filled as the pass goes). ``check(prepared)`` runs on ``first``."""
    import threading
    import time

    import ingestion.load as load

    released = threading.Event()
    staged: list[str] = []
    real_type, real_commit = load.Ingestor._type, load.Ingestor._commit

    def type_(self, con, prepared):
        if not released.is_set():
            staged.append(prepared.path.name)
        return real_type(self, con, prepared)

    def commit(self, con, prepared):
        if prepared.path.name == first:
            if check is not None:
                check(prepared)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not enough(staged):
                time.sleep(0.05)
            time.sleep(0.5)  # time for more than the bound allows to show up
            released.set()
        return real_commit(self, con, prepared)

    monkeypatch.setattr(load.Ingestor, "_type", type_)
    monkeypatch.setattr(load.Ingestor, "_commit", commit)
    return staged


@pytest.mark.parametrize("ahead_bytes", [48 * 2**20, 0])
def test_files_are_prepared_ahead_of_a_slow_commit_within_the_memory_bound(settings, contracts, monkeypatch,
                                                                          ahead_bytes):
    """While the first file's commit waits (for the suites' worker, say), the files after it
    are staged and typed, as many as ``PREPARE_AHEAD_BYTES`` allows beyond the next one; the
    outcome is that of files taken one after the other."""
    import ingestion.load as load

    base_delivery(settings, contracts, n=5)
    for month in (2, 3, 4):
        write_delivery(settings.landing_dir, contracts["enrolments"], f"inscriptions_2025-0{month}.csv",
                       [enrolment(month)])
    monkeypatch.setattr(load, "PREPARE_AHEAD_BYTES", ahead_bytes)
    # the first file: held until the others are staged
    staged_during_first_commit = hold_first_commit(monkeypatch, "registre_2025-01.csv",
                                                   lambda staged: len(staged) >= (6 if ahead_bytes else 2))
    summary = ingest(settings, contracts)
    expected = ["registre_2025-01.csv", "programmes_2025-01.csv", "inscriptions_2025-01.csv",
                "inscriptions_2025-02.csv", "inscriptions_2025-03.csv", "inscriptions_2025-04.csv"]
    assert [f.file_name for f in summary.files] == expected
    assert {f.status for f in summary.files} == {"loaded"}
    if ahead_bytes:  # every file staged while the first one waited
        assert staged_during_first_commit == expected
    else:  # no room beyond the next file
        assert staged_during_first_commit == expected[:2]
    with store(settings) as con:
        assert con.execute("select count(*) from raw.enrolments").fetchone()[0] == 5 + 3


def test_the_staging_bound_holds_while_a_file_with_nothing_staged_commits(settings, contracts, monkeypatch):
    """The file being committed may hold no staged rows (unchanged since its last delivery,
    rejected before it was read): the files staged beyond it still count against
    ``PREPARE_AHEAD_BYTES``. With no room, only the next file is staged meanwhile."""
    import ingestion.load as load

    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv",
                   [person(i) for i in range(5)])
    ingest(settings, contracts)  # the registry, first in load order: unchanged at the next pass
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    for month in (1, 2, 3):
        write_delivery(settings.landing_dir, contracts["enrolments"], f"inscriptions_2025-0{month}.csv",
                       [enrolment(month)])
    monkeypatch.setattr(load, "PREPARE_AHEAD_BYTES", 0)

    def no_slot(prepared):  # unchanged, no slot: held while the others stage
        assert prepared.slot is None

    staged_during_first_commit = hold_first_commit(monkeypatch, "registre_2025-01.csv", bool, check=no_slot)
    summary = ingest(settings, contracts)
    assert [(f.file_name, f.status) for f in summary.files] == [
        ("registre_2025-01.csv", "duplicate"), ("programmes_2025-01.csv", "loaded"),
        ("inscriptions_2025-01.csv", "loaded"), ("inscriptions_2025-02.csv", "loaded"),
        ("inscriptions_2025-03.csv", "loaded")]
    assert staged_during_first_commit == ["programmes_2025-01.csv"]  # the next file only

def test_the_files_staged_beyond_the_one_committed_keep_within_the_bound(settings, contracts, monkeypatch):
    """Slot accounting: the bytes staged beyond the file being committed stay within
    ``PREPARE_AHEAD_BYTES`` whether or not that file holds a slot; the next file is always
    staged; a slot given back by a commit counts again for the file staged on it."""
    import threading
    from datetime import datetime

    import ingestion.load as load

    monkeypatch.setattr(load, "PREPARE_AHEAD_BYTES", 100)
    ingestor = make_ingestor(settings, contracts)
    ingestor._connections, ingestor._free = [None] * 6, [5, 4, 3, 2]
    ingestor._discard = lambda con, prepared: None

    def file(slot=None):
        return load._Prepared(settings.landing_dir / "msisf" / "f.csv", "msisf", None, None, "", datetime(2025, 1, 1),
                              slot=slot)

    def taking(size):
        taken = []

        def take():
            try:
                taken.append(ingestor._take_slot(size))
            except RuntimeError:  # stopped
                taken.append(None)

        thread = threading.Thread(target=take)
        thread.start()
        thread.join(0.3)
        return thread, taken

    ingestor._commit_starts(file())  # unchanged since its last delivery: no slot
    first = file(ingestor._take_slot(10**12))  # the next file, whatever its size
    thread, taken = taking(1)
    assert thread.is_alive() and not taken  # nothing else fits beyond it
    ingestor._commit_starts(first)  # the next file is being committed now: room again
    thread.join(5)
    second = file(taken[0])
    third = file(ingestor._take_slot(99))  # 1 + 99 beyond the file being committed
    thread, taken = taking(1)
    assert thread.is_alive()
    ingestor._free_slot(first)  # committed; its slot is free, and the next commit has not started
    assert ingestor._committing is None
    thread.join(0.3)
    assert thread.is_alive()  # the second and the third still count
    ingestor._commit_starts(second)
    thread.join(5)
    assert taken and taken[0] not in (second.slot, third.slot)
    assert sum(size for slot, size in ingestor._held.items() if slot != second.slot) <= 100
    ingestor._stopping.set()

def test_a_failing_commit_interrupts_the_preparation_of_the_next_file(settings, contracts, monkeypatch):
    """When a file's commit fails (or the run is interrupted), the next file's preparation,
    running in its thread, is interrupted rather than waited for, and the commit's error
    is the one reported."""
    import threading
    import time

    import ingestion.load as load

    base_delivery(settings, contracts, n=1)
    files = [p.name for p, *_ in make_ingestor(settings, contracts).discover(settings.landing_dir)]
    preparing_long, seen = threading.Event(), []
    real_prepare = load.Ingestor._prepare

    def prepare(self, con, path, *args, **kwargs):
        if path.name == files[1]:
            preparing_long.set()
            try:  # a statement of about a minute, unless interrupted
                con.execute("select sum(a.range * b.range) from range(150000) a, range(150000) b").fetchall()
            except Exception as exc:  # noqa: BLE001 - recorded, then raised as a prepare would
                seen.append(type(exc).__name__)
                raise
        return real_prepare(self, con, path, *args, **kwargs)

    def commit(self, con, prepared):
        assert preparing_long.wait(timeout=20)
        time.sleep(0.5)  # the long statement has started
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(load.Ingestor, "_prepare", prepare)
    monkeypatch.setattr(load.Ingestor, "_commit", commit)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the disk is full"):
        ingest(settings, contracts)
    assert seen == ["InterruptException"]
    assert time.monotonic() - started < 20


def test_a_file_was_received_when_a_failed_pass_first_saw_it(settings, contracts, monkeypatch):
    """A pass that fails before committing a file still saw it: the next pass, which loads
    it, records it as received when the first one saw it (a failed refresh, and the
    sensor's retries, do not add their delay to the partner's delivery lag)."""
    import time

    import ingestion.load as load

    base_delivery(settings, contracts, n=3)
    real = load.Ingestor._load_staged

    def failing(self, con, p):
        if p.path.name == "inscriptions_2025-01.csv":
            raise RuntimeError("transient failure")
        return real(self, con, p)

    monkeypatch.setattr(load.Ingestor, "_load_staged", failing)
    with pytest.raises(RuntimeError, match="transient failure"):
        ingest(settings, contracts)
    monkeypatch.setattr(load.Ingestor, "_load_staged", real)
    time.sleep(2.1)
    ingest(settings, contracts)
    with store(settings) as con:
        registry, enrolments = (con.execute("select received_at from meta.deliveries where file_name = ?",
                                            [name]).fetchone()[0]
                                for name in ("registre_2025-01.csv", "inscriptions_2025-01.csv"))
    assert abs((enrolments - registry).total_seconds()) < 1, (registry, enrolments)


def test_a_pass_reuses_the_hash_of_files_whose_attributes_did_not_change(settings, contracts, monkeypatch):
    """A refresh does not read again every file ever delivered to learn that it is not new."""
    import ingestion.load

    base_delivery(settings, contracts)
    first = ingest(settings, contracts)
    assert (first.files_hashed, first.hashes_reused) == (3, 0)
    # just written: a change in the same clock tick as the hashing would not move the times,
    # so a record younger than the margin is not trusted ("racily clean", as in git)
    again = ingest(settings, contracts)
    assert (again.files_hashed, again.hashes_reused) == (3, 0)
    monkeypatch.setattr(ingestion.load, "RACY_NS", 0)
    read = []
    real = ingestion.load.hash_file
    monkeypatch.setattr(ingestion.load, "hash_file", lambda path: read.append(path.name) or real(path))
    later = ingest(settings, contracts)
    assert (later.files_hashed, later.hashes_reused, read) == (0, 3, [])
    assert {f.status for f in later.files} == {"duplicate"}


def test_a_file_rewritten_in_place_with_its_size_and_times_kept_is_read_again(settings, contracts, monkeypatch):
    """Same name, same size, modification time set back: the change time still moves, so the
    new content is hashed and loaded as the corrected delivery it is."""
    import os
    import time

    import ingestion.load

    monkeypatch.setattr(ingestion.load, "RACY_NS", 0)
    base_delivery(settings, contracts, n=3)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          [payment(i, amount_mad="400,00") for i in range(3)])
    ingest(settings, contracts)
    before = path.stat()
    time.sleep(0.05)  # a later clock tick than the first write
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i, amount_mad="500,00") for i in range(3)])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = ingest(settings, contracts)
    assert result_for(second, "paiements_2025-01.csv").status == "loaded"
    assert (second.files_hashed, second.hashes_reused) == (1, 3)
    con = store(settings)
    assert float(con.execute("select sum(amount_mad) from raw.payments where _is_current").fetchone()[0]) == 1500.0
    assert con.execute("select content_hash from meta.file_hashes where path = 'msisf/paiements_2025-01.csv'"
                       ).fetchone()[0] == _sha256(path)


def test_the_hash_of_a_file_that_left_the_landing_area_is_forgotten(settings, contracts):
    base_delivery(settings, contracts)
    (settings.landing_dir / "msisf" / "notes.txt").write_text("no contract for this\n")
    summary = ingest(settings, contracts)
    assert result_for(summary, "notes.txt").status == "rejected"  # moved to the rejected area
    con = store(settings)
    assert sorted(r[0] for r in con.execute("select path from meta.file_hashes").fetchall()) == [
        "msisf/inscriptions_2025-01.csv", "msisf/programmes_2025-01.csv", "msisf/registre_2025-01.csv"]


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_that_changes_while_it_is_hashed_stops_the_pass_and_loads_whole_next_time(settings, contracts, monkeypatch):
    """A partner still writing a file: nothing of it is loaded with a hash of other bytes."""
    import hashlib
    import types

    import ingestion.load

    monkeypatch.setattr(ingestion.load, "RACY_NS", 0)
    base_delivery(settings, contracts, n=3)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          [payment(i) for i in range(3)])
    full = path.read_bytes()
    first = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                           [payment(i, amount_mad="1,00") for i in range(2)]).read_bytes()

    class Writing:  # the partner's write lands while the file is being hashed
        def __init__(self):
            self.inner = hashlib.sha256()

        def update(self, data):
            self.inner.update(data)
            if data == first:  # the partner rewrites the file while it is being read
                path.write_bytes(full)

        def hexdigest(self):
            return self.inner.hexdigest()

    monkeypatch.setattr(ingestion.load, "hashlib", types.SimpleNamespace(sha256=lambda: Writing()))
    with pytest.raises(RuntimeError, match="msisf/paiements_2025-01.csv changed while it was being read"):
        ingest(settings, contracts)
    con = store(settings)
    assert con.execute("select count(*) from raw.payments").fetchone()[0] == 0
    assert con.execute("select count(*) from raw.enrolments").fetchone()[0] == 3  # the files before it
    con.close()
    monkeypatch.setattr(ingestion.load, "hashlib", hashlib)
    second = ingest(settings, contracts)
    assert result_for(second, "paiements_2025-01.csv").status == "loaded"
    assert store(settings).execute("select distinct _content_hash from raw.payments").fetchall() == [(_sha256(path),)]


def test_a_file_that_changes_between_its_hash_and_its_reading_is_not_loaded(settings, contracts, monkeypatch):
    import ingestion.load

    base_delivery(settings, contracts, n=3)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          [payment(i) for i in range(2)])
    hashed = _sha256(path)
    real = ingestion.load.stage_file

    def stage_after_a_write(con, staged_path, *args, **kwargs):
        if staged_path == path:
            write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                           [payment(i) for i in range(3)])
        return real(con, staged_path, *args, **kwargs)

    monkeypatch.setattr(ingestion.load, "stage_file", stage_after_a_write)
    with pytest.raises(RuntimeError, match="changed while it was being read"):
        ingest(settings, contracts)
    con = store(settings)
    assert con.execute("select count(*) from raw.payments").fetchone()[0] == 0
    assert con.execute("select count(*) from meta.deliveries where content_hash = ?", [hashed]).fetchone()[0] == 0


def test_a_file_replaced_between_its_rejection_and_its_commit_is_left_for_the_next_pass(settings, contracts,
                                                                                       monkeypatch):
    """X is read and rejected (no data rows); before its commit, the partner puts the corrected
    file Y in its place (hidden name, then rename, as the README asks). X is gone as a file
    deleted before its rejection could move it is: skipped with a warning naming it, nothing
    recorded; Y stays in the landing area, unread, and the next pass loads it."""
    import ingestion.load as load

    base_delivery(settings, contracts, n=4)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [])
    real_commit = load.Ingestor._commit

    def commit(self, con, prepared):
        if prepared.path == path:
            hidden = path.with_name(".paiements_2025-01.csv")
            write_delivery(settings.landing_dir, contracts["payments"], ".paiements_2025-01.csv",
                           [payment(i) for i in range(4)])
            hidden.rename(path)
        return real_commit(self, con, prepared)

    monkeypatch.setattr(load.Ingestor, "_commit", commit)
    with pytest.warns(RuntimeWarning, match="msisf/paiements_2025-01.csv was replaced by another file") as caught:
        summary = ingest(settings, contracts)
    message = next(str(w.message) for w in caught if "paiements_2025-01.csv" in str(w.message))
    assert summary.skipped == [message] and "read by the next refresh" in message
    assert "paiements_2025-01.csv" not in [f.file_name for f in summary.files]
    corrected = path.read_bytes()
    assert corrected.count(b"\n") == 5 and not list(settings.rejected_dir.glob("*/paiements*"))
    with store(settings) as con:
        assert con.execute("select count(*) from meta.deliveries where source = 'payments'").fetchone()[0] == 0
    monkeypatch.undo()
    again = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (again.status, again.rows_loaded) == ("loaded", 4)
    with store(settings) as con:
        assert con.execute("select content_hash, size_bytes from meta.deliveries where source = 'payments'"
                           ).fetchall() == [(_sha256(path), len(corrected))]


def test_hashes_are_dated_by_the_landing_file_systems_clock(settings, contracts, monkeypatch):
    """The record's time comes from a file touched in the landing area when the pass starts (a
    network file system's clock may differ from this machine's); without it, no reuse."""
    import ingestion.load

    base_delivery(settings, contracts)
    ingest(settings, contracts)
    clock = (settings.landing_dir / ingestion.load.CLOCK_FILE).stat().st_ctime_ns
    con = store(settings)
    assert {r[0] for r in con.execute("select hashed_at_ns from meta.file_hashes").fetchall()} == {clock}
    con.close()
    monkeypatch.setattr(ingestion.load, "RACY_NS", 0)
    monkeypatch.setattr(ingestion.load, "landing_clock", lambda landing_dir: None)  # e.g. a read-only landing area
    summary = ingest(settings, contracts)
    assert (summary.files_hashed, summary.hashes_reused) == (3, 0)
    assert {f.status for f in summary.files} == {"duplicate"}


@pytest.mark.parametrize("when", ["before its hash", "before its reading", "while it is read", "before its commit"])
@pytest.mark.parametrize("how", ["deleted", "renamed to a hidden name"])
def test_a_file_that_leaves_the_landing_area_before_it_is_read_is_skipped(settings, contracts, monkeypatch, when,
                                                                          how):
    """A file found in the landing area and gone (deleted, or renamed away) before its content
    was read whole, or before a rejection could move it: skipped with a warning naming it
    (nothing was loaded from it, it is read if it comes back); the other files load."""
    import ingestion.load as load

    base_delivery(settings, contracts, n=3)
    # a file rejected at commit (no data rows): it cannot be moved once gone
    payments = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                              [] if when == "before its commit" else [payment(i) for i in range(3)])
    content = payments.read_bytes()

    def leave():
        if payments.exists():
            if how == "deleted":
                payments.unlink()
            else:
                payments.rename(payments.with_name(".paiements_2025-01.csv"))

    real_hash, real_stage, real_commit = load.Ingestor._content_hash, load.stage_file, load.Ingestor._commit

    def content_hash(self, path):
        if path == payments and when == "before its hash":
            leave()
        found = real_hash(self, path)
        if path == payments and when == "before its reading":
            leave()
        return found

    def stage(con, path, *args, **kwargs):
        staged = real_stage(con, path, *args, **kwargs)
        if path == payments and when == "while it is read":
            leave()
        return staged

    def commit(self, con, prepared):
        if prepared.path == payments and when == "before its commit":
            leave()
        return real_commit(self, con, prepared)

    monkeypatch.setattr(load.Ingestor, "_content_hash", content_hash)
    monkeypatch.setattr(load, "stage_file", stage)
    monkeypatch.setattr(load.Ingestor, "_commit", commit)
    with pytest.warns(RuntimeWarning, match="msisf/paiements_2025-01.csv left the landing area") as caught:
        summary = ingest(settings, contracts)
    message = next(str(w.message) for w in caught if "paiements_2025-01.csv" in str(w.message))
    assert "nothing was loaded from it" in message and "if it comes back" in message
    assert summary.skipped == [message]
    assert sorted((f.file_name, f.status) for f in summary.files) == [
        ("inscriptions_2025-01.csv", "loaded"), ("programmes_2025-01.csv", "loaded"),
        ("registre_2025-01.csv", "loaded")]
    with store(settings) as con:
        assert con.execute("select count(*) from meta.deliveries where source = 'payments'").fetchone()[0] == 0
        assert con.execute("select count(*) from raw.payments").fetchone()[0] == 0
        assert con.execute("select count(*) from meta.file_hashes where path like '%paiements%'").fetchone()[0] == 0
    assert not list(settings.feedback_dir.glob("*/paiements*")) and not list(settings.rejected_dir.glob("*/paiements*"))
    monkeypatch.undo()
    payments.write_bytes(content)  # it comes back
    again = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert again.status == ("rejected" if when == "before its commit" else "loaded")


def test_a_file_for_a_month_to_come_is_rejected_and_loads_once_the_month_has_begun(settings, contracts, monkeypatch):
    """A file named for a month after the current one is rejected with a report naming the
    file and its month: loaded, it became the newest delivered month, moving the reference
    date of every "as of" figure and making every other partner look late. The same file
    delivered again once the month has begun is read, not taken for a repeat of the
    rejected delivery."""
    from datetime import date

    from ingestion.load import Ingestor

    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    monkeypatch.setattr(Ingestor, "_today", lambda self: date(2025, 3, 14), raising=False)
    future = write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-04.csv",
                            [person(i) for i in range(3)])
    content = future.read_bytes()
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-03.csv",
                             [person(i) for i in range(3)])
    summary = ingest(settings, contracts)
    assert result_for(summary, "registre_2025-03.csv").status == "loaded"  # the month under way loads
    rejected = result_for(summary, "registre_2025-04.csv")
    assert rejected.status == "rejected"
    assert "the month 2025-04 in the file name is after the current month (2025-03)" in rejected.reason
    report = (settings.feedback_dir / "msisf" / "registre_2025-04.csv.report.txt").read_text(encoding="utf-8")
    assert "registre_2025-04.csv" in report and "after the current month" in report
    con = store(settings)
    assert con.execute("select count(*) from raw.beneficiaries where _batch = '2025-04'").fetchone()[0] == 0
    con.close()
    future.write_bytes(content)  # delivered again the same month: still a month to come
    assert result_for(ingest(settings, contracts), "registre_2025-04.csv").status == "duplicate"
    monkeypatch.setattr(Ingestor, "_today", lambda self: date(2025, 4, 2), raising=False)
    future.write_bytes(content)  # the month has begun
    again = result_for(ingest(settings, contracts), "registre_2025-04.csv")
    assert (again.status, again.rows_loaded) == ("loaded", 3)


def test_an_instalment_paid_more_than_falls_due_on_it_is_quarantined(settings, contracts):
    """A repayment of 96517.00 on an instalment of 965.17 (a decimal mark lost) was loaded:
    it reached the portfolio's amounts collected and repayment rate (9 times what was due).
    It is set aside with the rule; a payment of what is due, or less, loads."""
    base_delivery(settings, contracts, n=2)
    loan = {"loan_id": "L1", "borrower_cin": "AB100001", "programme_code": "DSD-01", "product": "income_generating",
            "principal_mad": 15000, "term_months": 24, "annual_rate_pct": 7.5, "disbursement_date": "2025-01-10",
            "status": "active"}
    write_delivery(settings.landing_dir, contracts["loans"], "loans_2025-01.jsonl", [loan])

    def instalment(n: int, paid) -> dict:
        return {"instalment_id": f"L1-{n}", "loan_id": "L1", "instalment_number": n, "due_date": f"2025-01-{10 + n}",
                "principal_due_mad": 889.34, "interest_due_mad": 75.83, "paid_date": "2025-01-20",
                "amount_paid_mad": paid}

    write_delivery(settings.landing_dir, contracts["repayments"], "repayments_2025-01.jsonl",
                   [instalment(1, 965.17), instalment(2, 500.00), instalment(3, 96517.00)])
    result = result_for(ingest(settings, contracts), "repayments_2025-01.jsonl")
    assert (result.rows_loaded, result.rows_quarantined) == (2, 1)
    assert result.rules_failed == {"rule:paid_within_due": 1}
    with store(settings) as con:
        assert con.execute("select source_row, message from quarantine.rows").fetchone() == (
            3, "repayments_2025-01.jsonl, row 3: rule paid_within_due failed: An instalment is paid at most what falls "
               "due on it (principal and interest): a larger amount is a typing error (a payment of 96517.00 for "
               "965.17 due).")


def test_a_month_delivered_again_with_far_fewer_rows_is_rejected_and_the_month_in_effect_stays(settings, contracts):
    """A month's payments delivered again with 5 rows for 30 (a truncated export) replaced the
    whole month: 25 payments vanished from the programme costs and the transfers mart, and
    every gate passed (the published tables kept their rows). It is rejected with a report
    naming the file, both counts and the delivery it would replace, which stays in effect.
    A smaller re-delivery within the tolerance loads; one the data engineer accepts by its
    SHA-256 (config/quality.yml, deliveries.accept_smaller) loads when it is put back."""
    import hashlib

    from ingestion.load import VolumeRule

    base_delivery(settings, contracts, n=30)
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                          [payment(i) for i in range(30)])
    assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").rows_loaded == 30
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(5)])
    content = path.read_bytes()
    rejected = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert rejected.status == "rejected"
    assert "the file has 5 rows where the delivery in effect for 2025-01 that it would replace" in rejected.reason
    assert "paiements_2025-01.csv" in rejected.reason and "has 30" in rejected.reason
    assert "deliveries.max_drop_share" in rejected.reason and "accept_smaller" in rejected.reason
    report = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.report.txt").read_text(encoding="utf-8")
    assert "has 30" in report and hashlib.sha256(content).hexdigest() in report
    assert (settings.rejected_dir / "msisf" / "paiements_2025-01.csv").read_bytes() == content
    with store(settings) as con:
        assert con.execute("select count(*) from raw.payments where _is_current").fetchone()[0] == 30
    # the same smaller file delivered again is rejected again (read again: the month in effect may have changed)
    path.write_bytes(content)
    assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").status == "rejected"
    # accepted by its hash, then put back: it loads and replaces the month
    accept = VolumeRule(accept_smaller=frozenset({hashlib.sha256(content).hexdigest()}))
    path.write_bytes(content)
    summary = make_ingestor(settings, contracts, volume=accept).ingest(settings.landing_dir)
    assert (result_for(summary, "paiements_2025-01.csv").status,
            result_for(summary, "paiements_2025-01.csv").rows_loaded) == ("loaded", 5)
    # a delivery in effect under min_rows is not compared; within the tolerance, a smaller file loads
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(2)])
    assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").status == "loaded"
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-02.csv",
                   [payment(i, month="2025-02") for i in range(30)])
    ingest(settings, contracts)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-02.csv",
                   [payment(i, month="2025-02") for i in range(24)])  # 20% fewer: the tolerance
    assert result_for(ingest(settings, contracts), "paiements_2025-02.csv").rows_loaded == 24
    with store(settings) as con:
        assert con.execute("select count(*) from raw.payments where _is_current").fetchone()[0] == 2 + 24


def test_a_rule_added_to_a_contract_sets_aside_the_rows_already_loaded_that_fail_it(settings, contracts):
    """A rule added to a contract (after a payment of 96517.00 was found in the warehouse)
    stopped only the next files: the rows already loaded that fail it stayed in every table
    built on them. The next pass checks the loaded rows of each delivery in effect against
    the contract as it is, once per version: a failing row moves to quarantine with the rule
    (its delivery's counts and feedback follow); a registry record set aside gives way to the
    person's previous record."""
    from ingestion.contracts import Rule

    base_delivery(settings, contracts, n=3)
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-02.csv",
                   [person(0, socio_economic_score="97,0"), person(1, socio_economic_score="12,0")])
    _month_of_payments(settings, contracts, "2025-01", [payment(0), payment(1, amount_mad="96517,00"), payment(2)])
    summary = ingest(settings, contracts)
    assert result_for(summary, "paiements_2025-01.csv").rows_loaded == 3 and summary.rechecked == []
    with store(settings) as con:
        loaded_at = con.execute("select max(_loaded_at) from raw.payments").fetchone()[0]

    changed = dict(contracts)
    changed["payments"] = dataclasses.replace(contracts["payments"], version="v2", rules=contracts["payments"].rules + (
        Rule("amount_within_the_scale", "amount_mad <= 5000", "A monthly transfer is at most 5000 MAD."),))
    changed["beneficiaries"] = dataclasses.replace(contracts["beneficiaries"], version="v2", columns=tuple(
        dataclasses.replace(c, max=90) if c.name == "socio_economic_score" else c
        for c in contracts["beneficiaries"].columns))
    summary = ingest(settings, changed)
    assert sorted((r.file_name, r.rows_set_aside) for r in summary.rechecked) == [
        ("paiements_2025-01.csv", 1), ("registre_2025-02.csv", 1)]
    assert summary.totals["rows_set_aside"] == 2
    from jisr.status import run_report

    report = run_report(settings, summary.run_id)
    assert "\nLoaded rows set aside after a contract changed (they fail its rules as they are now" in report
    assert "  msisf/paiements_2025-01.csv: 1 row (contract version v2)" in report
    with store(settings) as con:
        assert con.execute("select payment_id from raw.payments order by 1").fetchall() == [
            ("P2025-01-0",), ("P2025-01-2",)]
        # the month's facts are rebuilt: its rows left are a load the warehouse does not hold
        assert con.execute("select count(*) from raw.payments where _loaded_at > ?", [loaded_at]).fetchone()[0] == 2
        assert con.execute("select rows_delivered, rows_loaded, rows_quarantined from meta.deliveries "
                           "where file_name = 'paiements_2025-01.csv'").fetchone() == (3, 2, 1)
        message, values = con.execute("select message, values_json from quarantine.rows where rule = "
                                      "'rule:amount_within_the_scale'").fetchone()
        assert message == ("paiements_2025-01.csv, row 2: rule amount_within_the_scale failed: A monthly transfer is at "
                           "most 5000 MAD. (checked again under version v2 of the contract: the row had been loaded "
                           "under an earlier version)")
        assert json.loads(values)["amount_mad"] == "96517.00" and "AB100001" not in values
        # person 0's February record (score 97) is set aside: the January one is current again
        assert con.execute("select _batch, socio_economic_score from raw.beneficiaries where _is_current "
                           "and person_key = (select person_key from raw.beneficiaries where _batch = '2025-01' "
                           "and _source_row = 1)").fetchall() == [("2025-01", 8.5)]
    rejected = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.rejected_rows.csv").read_text(encoding="utf-8")
    assert "amount_within_the_scale" in rejected
    assert ingest(settings, changed).rechecked == []  # once per delivery and contract version


def test_a_month_whose_rows_were_set_aside_is_replaced_by_its_corrected_file(settings, contracts):
    """An export that wrote every payment twice (60 rows, all quarantined as duplicate keys:
    none of the month in any table) is answered by the corrected file (30 rows). It withdraws
    nothing, so the volume gate lets it replace the month: it compares a file with the rows
    the delivery in effect has loaded, not with the rows it delivered."""
    base_delivery(settings, contracts, n=30)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i) for i in range(30)] * 2)
    doubled = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (doubled.status, doubled.rows_delivered, doubled.rows_loaded) == ("loaded", 60, 0)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i) for i in range(30)])
    corrected = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert (corrected.status, corrected.rows_loaded) == ("loaded", 30), corrected.reason
    # a truncated file is still compared with the rows loaded, and rejected
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i) for i in range(10)])
    truncated = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    assert truncated.status == "rejected"
    assert "the file has 10 rows where the delivery in effect for 2025-01" in truncated.reason
    assert "has 30 rows loaded" in truncated.reason


def test_with_min_rows_0_a_month_in_effect_with_no_row_loaded_is_replaced(settings, contracts):
    """deliveries.min_rows: 0 compares every delivery in effect: one with no row loaded (all
    set aside) withdraws nothing when replaced, and its corrected file loads (it divided by
    zero, and the pass failed)."""
    from ingestion.load import VolumeRule

    base_delivery(settings, contracts, n=3)
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv",
                   [payment(i) for i in range(3)] * 2)
    assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").rows_loaded == 0
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(3)])
    summary = make_ingestor(settings, contracts, volume=VolumeRule(min_rows=0)).ingest(settings.landing_dir)
    assert result_for(summary, "paiements_2025-01.csv").rows_loaded == 3


def test_a_rejected_file_names_a_drop_that_reads_more_than_the_tolerance():
    """797 rows for 1,000 is 20.3% fewer: the report said '20% fewer, more than the 20%'."""
    from datetime import datetime

    from ingestion.load import VolumeRule

    reason = VolumeRule().problem(797, "x", "2025-01", ("d", "f.csv", 1000, datetime(2026, 1, 1)))
    assert "20.3% fewer, more than the 20% a delivery may drop" in reason
    reason = VolumeRule().problem(500, "x", "2025-01", ("d", "f.csv", 1000, datetime(2026, 1, 1)))
    assert "50% fewer, more than the 20%" in reason


def test_rows_referring_to_a_row_a_changed_contract_set_aside_wait_for_it_as_at_loading(settings, contracts):
    """A rule added to the enrolments contract set aside enrolment E1, the only record of its
    key, while a payment of the month referred to it: the payment stayed loaded, referring to
    an enrolment no table holds, and the warehouse's relationships test stopped every build
    from then on. The payment is held for its enrolment, as it would have been at loading,
    and is loaded again, with its values as delivered, once a corrected enrolment arrives."""
    from ingestion.contracts import Rule

    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-01.csv", [PROGRAMME])
    write_delivery(settings.landing_dir, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(3)])
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-01.csv",
                   [enrolment(0), enrolment(1, entry_date="15/01/2025"), enrolment(2)])
    _month_of_payments(settings, contracts, "2025-01",
                       [payment(0), payment(1, amount_mad="1.234,56"), payment(2)])
    assert ingest(settings, contracts).totals["rows_quarantined"] == 0

    changed = dict(contracts)
    changed["enrolments"] = dataclasses.replace(contracts["enrolments"], version="v2", rules=contracts["enrolments"].rules + (
        Rule("entered_before_2025", "entry_date < date '2025-01-01'", "Entries of 2025 are in the new register."),))
    # a run of the enrolments alone leaves their check to a run that selects the payments too
    partial = make_ingestor(settings, changed).ingest(settings.landing_dir, sources=["enrolments"])
    assert partial.rechecked == []
    with store(settings) as con:
        assert con.execute("select count(*) from meta.rechecks").fetchone()[0] == 0
    summary = ingest(settings, changed)
    assert sorted((r.file_name, r.rows_set_aside) for r in summary.rechecked) == [
        ("inscriptions_2025-01.csv", 1), ("paiements_2025-01.csv", 1)]
    with store(settings) as con:
        assert con.execute("select count(*) from raw.payments p where not exists (select 1 from raw.enrolments e "
                           "where e._is_current and e.enrolment_id = p.enrolment_id)").fetchone()[0] == 0
        assert con.execute("select payment_id from raw.payments order by 1").fetchall() == [
            ("P2025-01-0",), ("P2025-01-2",)]
        assert con.execute("select rule, message from quarantine.rows where source = 'payments'").fetchall() == [
            ("references:enrolment_id", "paiements_2025-01.csv, row 2: column enrolment_id: no enrolments row loaded "
             "has this enrolment_id; the row is loaded once one is")]
        assert con.execute("select rows_loaded, rows_quarantined from meta.deliveries "
                           "where file_name = 'paiements_2025-01.csv'").fetchone() == (2, 1)

    # the enrolment corrected: the payment is loaded again, with its amount as delivered
    write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv", [enrolment(1)])
    summary = ingest(settings, changed)
    assert [(r.file_name, r.rows_released) for r in summary.released] == [("paiements_2025-01.csv", 1)]
    with store(settings) as con:
        assert con.execute("select amount_mad::varchar, paid_date::varchar from raw.payments "
                           "where payment_id = 'P2025-01-1'").fetchall() == [("1234.56", "2025-01-05")]
        assert con.execute("select rows_loaded, rows_quarantined from meta.deliveries "
                           "where file_name = 'paiements_2025-01.csv'").fetchone() == (3, 0)

    # another change of the enrolments contract: the refresh's report counts this run's rows only
    from jisr.status import run_report

    changed["enrolments"] = dataclasses.replace(changed["enrolments"], version="v3", rules=changed["enrolments"].rules + (
        Rule("not_e2", "enrolment_id <> 'E2'"),))
    summary = ingest(settings, changed)
    assert sorted((r.file_name, r.rows_set_aside) for r in summary.rechecked) == [
        ("inscriptions_2025-01.csv", 1), ("paiements_2025-01.csv", 1)]
    assert "  msisf/paiements_2025-01.csv: 1 row (contract version " in run_report(settings, summary.run_id)


def test_rows_set_aside_keep_the_note_on_a_month_delivered_again_in_the_same_pass(settings, contracts):
    """A month delivered as A, then as B (rejected), then as A again in the pass that first
    checks the loaded rows under a new rule: the partner's summary said A is identical to the
    delivery in effect (in place of B's report), but the recheck rewrote the summary without
    that note, so the partner was left with no word on the file they had just sent."""
    from ingestion.contracts import Rule

    base_delivery(settings, contracts, n=4)
    month_a = [payment(0), payment(1, amount_mad="96517,00"), payment(2), payment(3)]
    path = write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", month_a)
    content_a = path.read_bytes()
    first = result_for(ingest(settings, contracts), "paiements_2025-01.csv")
    write_delivery(settings.landing_dir, contracts["payments"], "paiements_2025-01.csv", [])  # no data rows
    assert result_for(ingest(settings, contracts), "paiements_2025-01.csv").status == "rejected"
    path.write_bytes(content_a)
    changed = dict(contracts)
    changed["payments"] = dataclasses.replace(contracts["payments"], version="v2", rules=contracts["payments"].rules + (
        Rule("amount_within_the_scale", "amount_mad <= 5000", "A monthly transfer is at most 5000 MAD."),))
    summary = ingest(settings, changed)
    assert [(r.file_name, r.rows_set_aside) for r in summary.rechecked] == [("paiements_2025-01.csv", 1)]
    text = (settings.feedback_dir / "msisf" / "paiements_2025-01.csv.summary.txt").read_text()
    assert first.delivery_id in text and "Rows delivered: 4; loaded: 3; quarantined: 1." in text, text
    assert "identical to this delivery, still in effect for 2025-01" in text, text


def test_a_recheck_that_fails_midway_leaves_every_source_as_it_was(settings, contracts, monkeypatch):
    """The enrolment a changed contract sets aside and the payment held for it change together:
    a failure between the two (here while holding the payment) left the enrolment set aside,
    recorded as checked, and the payment loaded, referring to nothing, for good."""
    from ingestion.contracts import Rule
    from ingestion.load import Ingestor

    base_delivery(settings, contracts, n=2)
    _month_of_payments(settings, contracts, "2025-01", [payment(0), payment(1)])
    ingest(settings, contracts)
    changed = dict(contracts)
    changed["enrolments"] = dataclasses.replace(contracts["enrolments"], version="v2", rules=contracts["enrolments"].rules + (
        Rule("not_e1", "enrolment_id <> 'E1'"),))

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(Ingestor, "_hold_dangling", fail)
        with pytest.raises(RuntimeError, match="disk full"):
            ingest(settings, changed)
    with store(settings) as con:
        assert con.execute("select count(*) from raw.enrolments").fetchone()[0] == 2
        assert con.execute("select count(*) from meta.rechecks").fetchone()[0] == 0
    assert sorted((r.file_name, r.rows_set_aside) for r in ingest(settings, changed).rechecked) == [
        ("inscriptions_2025-01.csv", 1), ("paiements_2025-01.csv", 1)]


def test_a_column_added_to_a_contract_does_not_fail_a_pass_that_loads_nothing_of_it(settings, contracts):
    """The check of loaded rows against a changed contract read a column added to it, which the
    raw table does not have: every refresh failed, with or without a file of that source."""
    from ingestion.contracts import Column

    base_delivery(settings, contracts, n=2)
    ingest(settings, contracts)
    changed = dict(contracts)
    changed["enrolments"] = dataclasses.replace(contracts["enrolments"], version="v2", columns=(
        *contracts["enrolments"].columns, Column("referral_channel", "varchar", source_names=("canal",))))
    write_delivery(settings.landing_dir, contracts["programmes"], "programmes_2025-02.csv", [PROGRAMME])
    summary = ingest(settings, changed)
    assert result_for(summary, "programmes_2025-02.csv").status == "loaded" and summary.rechecked == []


def test_a_file_outside_the_partner_folders_is_named_and_left_in_place(settings, contracts):
    """A file put directly in the landing area, or in a folder inside a partner folder (a
    month's folder), was ignored without a word: no report, nothing in the refresh's output
    nor in `jisr status`. Each pass now names it and where to move it; it stays where it is,
    and hidden names are still not deliveries."""
    from jisr.status import run_report, status_report

    base_delivery(settings, contracts)
    inside = settings.landing_dir / "msisf" / "2025-02" / "inscriptions_2025-02.csv"
    inside.parent.mkdir()
    inside.write_text("a;b\n1;2\n", encoding="cp1252")
    root = settings.landing_dir / "programmes_2025-02.csv"
    root.write_text("a;b\n1;2\n", encoding="cp1252")
    (settings.landing_dir / "msisf" / ".partial").mkdir()
    (settings.landing_dir / "msisf" / ".partial" / "registre_2025-02.csv").write_text("x\n")
    summary = ingest(settings, contracts)
    assert summary.totals["rows_loaded"] == 1 + 6 + 6 and len(summary.files) == 3
    assert summary.skipped == [
        "msisf/2025-02/inscriptions_2025-02.csv is in a folder inside the partner folder msisf, where nothing reads "
        "it: move it to msisf/inscriptions_2025-02.csv",
        "programmes_2025-02.csv is directly in the landing area, outside the partner folders, where nothing reads "
        "it: move it into its partner's folder (<partner>/programmes_2025-02.csv)"]
    assert inside.exists() and root.exists()
    assert "  programmes_2025-02.csv is directly in the landing area" in run_report(
        settings, summary.run_id, skipped=summary.skipped)
    status = status_report(settings)
    assert "Files in the landing area that nothing reads (left where they are):" in status
    assert "  msisf/2025-02/inscriptions_2025-02.csv is in a folder inside the partner folder msisf" in status


def test_a_json_field_spelled_two_ways_names_the_lines_of_each_spelling(settings, contracts):
    """One record spelling `status` as `Status` (the same header to the contract) rejected
    the file as "field 'Status' appears twice", though no record has it twice, with no line.
    The rejection now names both spellings and the first line of each; a field the contract
    does not know is not shown (it may be a value)."""
    path = jsonl_delivery(settings.landing_dir, contracts,
                          lambda ls: _set(ls, 7, ls[6].replace(b'"status"', b'"Status"')))
    bad = result_for(ingest(settings, contracts), path.name)
    assert bad.status == "rejected", bad
    assert ("the field 'status' is spelled 'Status' in other records (first on line 1 and on line 7): spell it "
            "one way in every record") in bad.reason, bad.reason
    unknown = jsonl_delivery(settings.landing_dir, contracts, lambda ls: [
        line[:-1] + (b', "Nom": "x"}' if i == 2 else b', "nom": "x"}') for i, line in enumerate(ls)],
        name="requests_2026-02.jsonl")
    bad = result_for(ingest(settings, contracts), unknown.name)
    assert "a field is spelled two ways in different records (first on line 1 and on line 3;" in bad.reason, bad.reason
    assert "Nom" not in bad.reason and "nom" not in bad.reason


def test_rows_after_blank_lines_and_empty_sheet_rows_keep_the_number_a_spreadsheet_shows(settings, contracts):
    """DuckDB's CSV reader and the workbook reader pass over blank lines and empty sheet rows,
    so a bad value below one was reported one row too high ("row 4" for the partner's row
    7): the partner looked at the wrong row. Rows are now numbered as a spreadsheet shows
    the file, blank rows counted (the header not); a blank line inside a quoted value is
    no blank row, and blank lines at the end change nothing."""
    from openpyxl import Workbook

    base_delivery(settings, contracts, n=8)
    path = write_delivery(settings.landing_dir, contracts["enrolments"], "inscriptions_2025-02.csv",
                          [enrolment(i, entry_date="01/02/2025") for i in range(4)]
                          + [enrolment(4, entry_date="99/99/2025"), enrolment(5, entry_date="01/02/2025")])
    lines = path.read_bytes().split(b"\r\n" if b"\r\n" in path.read_bytes() else b"\n")
    newline = b"\r\n" if b"\r\n" in path.read_bytes() else b"\n"
    # header, row 1, a blank line (row 2), rows 3 and 4, a short row (5), two blank lines (6, 7),
    # rows 8, 9 (the bad date) and 10, blank lines at the end
    lines = lines[:2] + [b""] + lines[2:4] + [b"E9;AB100009"] + [b"", b""] + lines[4:]
    path.write_bytes(newline.join(lines) + newline + newline)
    columns = [c.name for c in contracts["ventures"].columns]
    wb = Workbook()
    ws = wb.active
    ws.title = "ventures"
    ws.append([contracts["ventures"].column(c).header for c in columns])
    ws.append([dict(VENTURE, venture_id="V1").get(c) for c in columns])
    ws.append([None] * len(columns))  # sheet row 3: empty
    ws.append([])  # sheet row 4: absent
    ws.append([dict(VENTURE, venture_id="V2", jobs_created="many").get(c) for c in columns])
    ws.append([dict(VENTURE, venture_id="V3").get(c) for c in columns])
    book = settings.landing_dir / "cdg_incubation" / "ventures_2025-01.xlsx"
    book.parent.mkdir(parents=True, exist_ok=True)
    wb.save(book)
    summary = ingest(settings, contracts)
    csv_result, xlsx_result = result_for(summary, path.name), result_for(summary, book.name)
    assert (csv_result.rows_delivered, csv_result.rows_loaded, csv_result.rows_quarantined) == (7, 5, 2)
    assert (xlsx_result.rows_delivered, xlsx_result.rows_loaded, xlsx_result.rows_quarantined) == (3, 2, 1), xlsx_result.reason
    con = store(settings)
    assert con.execute("select enrolment_id, _source_row from raw.enrolments where _batch = '2025-02' "
                       "order by _source_row").fetchall() == [("E0", 1), ("E1", 3), ("E2", 4), ("E3", 8), ("E5", 10)]
    quarantined = con.execute("select file_name, source_row, rule from quarantine.rows order by 1, 2, 3").fetchall()
    assert quarantined == [("inscriptions_2025-02.csv", 5, "malformed_row"),
                           ("inscriptions_2025-02.csv", 9, "type:entry_date"),
                           ("ventures_2025-01.xlsx", 4, "type:jobs_created")], quarantined
    assert con.execute("select venture_id, _source_row from raw.ventures order by 1").fetchall() == [
        ("V1", 1), ("V3", 5)]
    message = con.execute("select message from quarantine.rows where rule = 'type:entry_date'").fetchone()[0]
    assert message.startswith("inscriptions_2025-02.csv, row 9: "), message


def test_a_column_added_to_a_contract_loads_from_the_next_delivery(settings, contracts):
    """A column added to a contract (a partner starts sending a new field) stopped every
    ingestion with a binder error (`table "payments" has 16 columns but 17 values were
    supplied`): the raw table was only created when missing, never given the contract's new
    columns. The raw table gains the column; the rows loaded before have it empty, and the
    next delivery loads its values."""
    from ingestion.contracts import Column

    base_delivery(settings, contracts, n=3)
    _month_of_payments(settings, contracts, "2025-01", [payment(i) for i in range(3)])
    ingest(settings, contracts)

    changed = dict(contracts)
    changed["payments"] = dataclasses.replace(contracts["payments"], version="v2", columns=contracts["payments"].columns + (
        Column("payment_reference", "varchar", source_names=("reference_virement",)),))
    write_delivery(settings.landing_dir, changed["payments"], "paiements_2025-02.csv",
                   [payment(i, month="2025-02", payment_reference=f"VIR-{i}") for i in range(3)])
    summary = ingest(settings, changed)
    assert (result_for(summary, "paiements_2025-02.csv").status,
            result_for(summary, "paiements_2025-02.csv").rows_loaded) == ("loaded", 3)
    assert summary.rechecked == []  # an optional column empty in earlier deliveries breaks no rule
    with store(settings) as con:
        assert con.execute("select _batch, payment_reference from raw.payments order by _batch, payment_id").fetchall() == [
            ("2025-01", None), ("2025-01", None), ("2025-01", None),
            ("2025-02", "VIR-0"), ("2025-02", "VIR-1"), ("2025-02", "VIR-2")]
        assert con.execute("select count(*) from meta.deliveries where status = 'loaded' "
                           "and source = 'payments'").fetchone()[0] == 2


def test_a_required_column_added_to_a_contract_does_not_set_aside_the_files_delivered_without_it(settings, contracts):
    """A column added to a contract as required set aside, at the next pass, every row loaded
    before (`required:<column>`): the files delivered before it existed do not have it, and
    the whole history of the source left the warehouse. The recheck holds a delivery to a
    required column only when its file had the column (its empty values then fail, as a
    column made required after it was delivered optional); files delivered from then on must
    have it."""
    from ingestion.contracts import Column

    base_delivery(settings, contracts, n=3)
    _month_of_payments(settings, contracts, "2025-01", [payment(i) for i in range(3)])
    with_reference = dataclasses.replace(contracts["payments"], version="v2", columns=contracts["payments"].columns + (
        Column("payment_reference", "varchar", source_names=("reference_virement",)),))
    changed = dict(contracts, payments=with_reference)
    ingest(settings, contracts)
    write_delivery(settings.landing_dir, with_reference, "paiements_2025-02.csv",
                   [payment(i, month="2025-02", payment_reference=None if i == 1 else f"VIR-{i}") for i in range(3)])
    ingest(settings, changed)

    required = dict(contracts, payments=dataclasses.replace(with_reference, version="v3", columns=tuple(
        dataclasses.replace(c, required=True) if c.name == "payment_reference" else c for c in with_reference.columns)))
    summary = ingest(settings, required)
    # January's file had no such column: its rows stay; February's row 2 left it empty
    assert [(r.file_name, r.rows_set_aside) for r in summary.rechecked] == [("paiements_2025-02.csv", 1)]
    with store(settings) as con:
        assert con.execute("select _batch, count(*) from raw.payments group by 1 order by 1").fetchall() == [
            ("2025-01", 3), ("2025-02", 2)]
    # a file without the column is now rejected (a required column missing)
    _month_of_payments(settings, contracts, "2025-03", [payment(i, month="2025-03") for i in range(3)])
    result = result_for(ingest(settings, required), "paiements_2025-03.csv")
    assert result.status == "rejected" and "reference_virement" in result.reason


def test_files_outside_the_partner_folders_are_named_up_to_a_limit(settings):
    """An archive folder kept in a partner folder would list every one of its files at each
    refresh: the first are named, then one line counts the others."""
    from ingestion.contracts import misplaced_files

    archive = settings.landing_dir / "msisf" / "archive"
    archive.mkdir(parents=True)
    for i in range(25):
        (archive / f"paiements_2024-{i:02d}.csv").write_text("x\n")
    found = misplaced_files(settings.landing_dir, limit=20)
    assert len(found) == 21 and found[0].startswith("msisf/archive/paiements_2024-00.csv is in a folder inside")
    assert found[-1] == "and 5 more file(s) outside the partner folders, where nothing reads them"
