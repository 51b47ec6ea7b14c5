"""The floors of a refresh: what any warehouse must at least do with the delivered files.

(a) ``load``: every delivered file read once, typed by its contract, into a DuckDB table
    (``create table ... as select * from read_csv/read_json``; openpyxl for workbooks).
    DuckDB's reader types the columns natively (the contract's types, date format and
    decimal mark) and skips a row it cannot type (the planted dirty rows): it does no
    checking, no pseudonymisation and keeps no history.
(b) ``count``: DuckDB only counting the rows of every file.

Run as ``python -m bench.floor load|count LANDING_DIR OUT_JSON [DB_PATH]`` so that the
benchmark measures it as its own process, like the refresh.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

import duckdb

from ingestion.contracts import contract_for, load_contracts
from jisr.settings import PROJECT_DIR

DUCKDB_ENCODING = {"utf-8": "utf-8", "utf-8-sig": "utf-8", "windows-1252": "latin-1"}


def delivered_files(landing: Path, contracts: dict) -> list[tuple[Path, object]]:
    """(path, contract) of every file of the landing area that a contract claims."""
    found = []
    for path in sorted(Path(landing).glob("*/*")):
        match = contract_for(contracts, path.parent.name, path.name) if path.is_file() else None
        if match:
            found.append((path, match[0]))
    return found


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _csv_headers(path: Path, contract) -> list[str]:
    with open(path, "rb") as fh:
        line = fh.readline().removeprefix(b"\xef\xbb\xbf")
    text = line.decode("cp1252" if contract.encoding == "windows-1252" else "utf-8").rstrip("\r\n")
    return next(csv.reader(io.StringIO(text), delimiter=contract.delimiter))


def _column_types(contract, headers: list[str]) -> dict[str, str]:
    by_header = {h.lower(): c for c in contract.columns for h in c.accepted_headers}
    return {h: (by_header[h.lower()].sql_type if h.lower() in by_header else "VARCHAR") for h in headers}


def csv_source(path: Path, contract, typed: bool, encoding: str | None = None) -> str:
    encoding = encoding or DUCKDB_ENCODING[contract.encoding]
    options = [f"delim={_quote(contract.delimiter)}", "header=true", "quote='\"'", "escape='\"'",
               f"encoding={_quote(encoding)}"]
    if typed:
        columns = _column_types(contract, _csv_headers(path, contract))
        options += ["auto_detect=false", f"columns={columns!r}", "ignore_errors=true",
                    f"dateformat={_quote(contract.date_format)}"]
        if contract.decimal != ".":
            options.append(f"decimal_separator={_quote(contract.decimal)}")
    else:
        options.append("all_varchar=true")
    return f"read_csv({_quote(str(path))}, {', '.join(options)})"


def read_csv_file(con, sql: str, path: Path, contract, typed: bool, tmp_dir: Path):
    """Run ``sql`` (with ``{source}``) over a CSV file. DuckDB reads Windows-1252 as Latin-1,
    which differs only in bytes 0x80-0x9F; a file using those is transcoded to UTF-8 first
    (time included), as DuckDB has no Windows-1252 decoder without an extension download."""
    try:
        return con.execute(sql.format(source=csv_source(path, contract, typed))).fetchall()
    except duckdb.InvalidInputException as exc:
        if contract.encoding != "windows-1252" or "latin-1" not in str(exc):
            raise
    utf8 = tmp_dir / (path.name + ".utf8")
    with open(path, encoding="cp1252", newline="") as src, open(utf8, "w", encoding="utf-8", newline="") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    try:
        return con.execute(sql.format(source=csv_source(utf8, contract, typed, encoding="utf-8"))).fetchall()
    finally:
        utf8.unlink()


def json_source(path: Path, contract) -> str:
    with open(path, "rb") as fh:
        keys = list(json.loads(fh.readline()))
    columns = _column_types(contract, keys)
    return (f"read_json({_quote(str(path))}, format='newline_delimited', columns={columns!r}, "
            "ignore_errors=true)")


def xlsx_rows(path: Path, contract):
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        sheet = contract.xlsx.get("sheet")
        ws = wb[sheet] if sheet else wb.worksheets[0]
        yield from ws.iter_rows(values_only=True)
    finally:
        wb.close()


def load_xlsx(con, path: Path, contract, table: str) -> None:
    import pyarrow as pa

    rows = xlsx_rows(path, contract)
    headers = [str(h) for h in next(rows)]
    columns: list[list] = [[] for _ in headers]
    for row in rows:
        if row is None or all(v is None for v in row):
            continue
        for i in range(len(headers)):
            columns[i].append(row[i] if i < len(row) else None)
    arrays = {}
    for h, values in zip(headers, columns):
        try:
            arrays[h] = pa.array(values)  # openpyxl's cell types (numbers, datetimes, text)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column mixing types (a dirty cell): text
            arrays[h] = pa.array([None if v is None else str(v) for v in values], pa.string())
    arrow = pa.table(arrays)  # noqa: F841 (read by DuckDB)
    con.execute(f"create table {table} as select * from arrow")


def floor_load(landing: Path, db_path: Path, contracts: dict) -> dict:
    """(a) Every file once into a typed DuckDB table (one table per file) of a database file."""
    con = duckdb.connect(str(db_path))
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = 0
    files = delivered_files(landing, contracts)
    for i, (path, contract) in enumerate(files):
        table = f"f{i:04d}"
        if contract.format == "csv":
            read_csv_file(con, f"create table {table} as select * from {{source}}", path, contract, True, db_path.parent)
        elif contract.format == "jsonl":
            con.execute(f"create table {table} as select * from {json_source(path, contract)}")
        else:
            load_xlsx(con, path, contract, table)
        rows += con.execute(f"select count(*) from {table}").fetchone()[0]
    con.execute("checkpoint")
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    con.close()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "files": len(files), "rows": rows}


def floor_count(landing: Path, contracts: dict, tmp_dir: Path) -> dict:
    """(b) DuckDB counting the rows of every file (openpyxl for workbooks)."""
    con = duckdb.connect()
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = 0
    files = delivered_files(landing, contracts)
    for path, contract in files:
        if contract.format == "csv":
            rows += read_csv_file(con, "select count(*) from {source}", path, contract, False, tmp_dir)[0][0]
        elif contract.format == "jsonl":
            rows += con.execute(f"select count(*) from read_ndjson_objects({_quote(str(path))})").fetchone()[0]
        else:
            rows += sum(1 for _ in xlsx_rows(path, contract)) - 1
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    con.close()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "files": len(files), "rows": rows}


def main(argv: list[str]) -> int:
    kind, landing, out = argv[0], Path(argv[1]), Path(argv[2])
    contracts = load_contracts(PROJECT_DIR / "contracts")
    if kind == "load":
        db_path = Path(argv[3])
        db_path.unlink(missing_ok=True)
        result = floor_load(landing, db_path, contracts)
        result["db_bytes"] = db_path.stat().st_size
    elif kind == "count":
        result = floor_count(landing, contracts, out.parent)
    else:
        raise SystemExit(f"unknown floor {kind!r} (load or count)")
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
