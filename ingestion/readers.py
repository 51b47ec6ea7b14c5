"""Reading delivered files into a DuckDB staging table, with file-level checks.

Each reader stages a file as a view of text columns named after the contract (aliases
resolved) plus ``_source_row`` (1-based data row number; the header is not counted), over one
copy of the file (:func:`drop_staged` removes both). Row numbers are those a spreadsheet
shows less the header: a blank line of a CSV file and an empty row of a workbook, which
hold no row, still count (:func:`_numbered_around`); a JSON-lines file's are its records. Typing happens later
in SQL, so a value that does not parse becomes a quarantined row rather than a lost file.
A row that cannot be read (a CSV row without the header's number of fields, a JSON line that
is not one object, a workbook row with a formula saved without its result) is not staged: it
is listed in the table ``Staged.malformed`` names, to be quarantined with its row and line
numbers.
A file that cannot be read at all raises :class:`FileRejected` with a readable reason.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ingestion.contracts import Contract

CHUNK = 1 << 20
STAGED = "stg_delivery"  # the staging view of the file being ingested
OTHER_DELIMITERS = [";", ",", "\t", "|"]


class FileRejected(Exception):
    """The whole file is unreadable under its contract; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Staged:
    table: str
    rows: int
    header_map: dict[str, str]  # contract column -> header found in the file
    warnings: list[str] = field(default_factory=list)
    # a table of the rows delivered but not staged (_source_row, message), counted in rows
    malformed: str | None = None


def _is_known(contract: Contract, cell: str) -> bool:
    """Whether a header cell is a header name of the contract (one of its columns' accepted headers)."""
    return cell.strip().strip('"').strip().lower() in contract.header_names


def _is_header_line(contract: Contract, cells: Iterable[str]) -> bool:
    """Whether a file's first line names at least one column of its contract (else it is
    likely a record: a file delivered without its header line)."""
    return any(_is_known(contract, c) for c in cells)


NOT_SHOWN = "(not shown)"
WHY_NOT_SHOWN = ("a cell that is no header name of the contract is not shown: it may be a value, such as an "
                 "identity number or a name in a header line run into the first record")


def _shown_cells(contract: Contract, cells: Iterable[str], limit: int = 20) -> str:
    """Header cells as a rejection or a warning may show them: a header name of the contract
    quoted, any other cell as "(not shown)". Messages go to the ledger, the published
    ``fct_deliveries``, logs and the partner's report; a first line that is not only header
    names may hold a record's values (identity numbers, names), whatever else it names."""
    cells = list(cells)
    shown = [repr(c) if _is_known(contract, c) else NOT_SHOWN for c in cells[:limit]]
    text = ", ".join(shown) + (f" and {len(cells) - limit} more" if len(cells) > limit else "")
    return text if all(_is_known(contract, c) for c in cells) else f"{text} ({WHY_NOT_SHOWN})"


def _shown_line(contract: Contract, line: str, delimiter: str) -> str:
    """A header line as a rejection may show it: whole (its quotes and delimiters are what is
    wrong) when every cell is a header name of the contract, else its cells as
    :func:`_shown_cells` shows them."""
    cells = line.split(delimiter)
    return repr(line[:120]) if all(_is_known(contract, c) for c in cells) else _shown_cells(contract, cells)


def _unnamed_line(count: int, what: str) -> str:
    return (f"the first line has {count} {what}(s), none of them a {what} name of the contract (is the header "
            "line missing? its values are not shown: they may be personal data)")


def _map_headers(contract: Contract, headers: list[str], what: str) -> tuple[dict[str, str], list[str]]:
    """Map file headers to contract columns; reject missing required columns."""
    normalised = {}
    for h in headers:
        key = h.strip().lower()
        if key in normalised:
            if what == "column" and not _is_header_line(contract, headers):
                raise FileRejected(_unnamed_line(len(headers), what))
            if not _is_known(contract, h):
                first = next(i for i, other in enumerate(headers, start=1) if other.strip().lower() == key)
                raise FileRejected(f"{what}s {first} and {headers.index(h, first) + 1} have the same header "
                                   f"({WHY_NOT_SHOWN})")
            raise FileRejected(f"{what} {h!r} appears twice")
        normalised[key] = h
    mapping, missing = {}, []
    for col in contract.columns:
        found = next((normalised[a.lower()] for a in col.accepted_headers if a.lower() in normalised), None)
        if found is not None:
            mapping[col.name] = found
        elif col.required:
            missing.append(f"{col.name} (expected header {col.header!r})")
    if missing:
        # a header line that names no column may be a record (a file without its header line)
        if _is_header_line(contract, headers):
            found = f"found {what}s: {_shown_cells(contract, headers)}"
        elif what == "field":
            found = (f"the records have {len(headers)} field(s), none of them a field name of the contract (not "
                     "shown: a name that is not the contract's may be a value, such as an identity number)")
        else:
            found = _unnamed_line(len(headers), what)
        raise FileRejected(f"missing required column(s): {', '.join(missing)}; {found}")
    used = {v.strip().lower() for v in mapping.values()}
    ignored = [(n, h) for n, h in enumerate(headers, start=1) if h.strip().lower() not in used]
    warnings = [f"{what} {h!r} is not in the contract and was ignored" for _, h in ignored if _is_known(contract, h)]
    unknown = [n for n, h in ignored if not _is_known(contract, h)]
    if unknown:
        warnings.append(f"{what}{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown[:20]))}"
                        f"{' and more' if len(unknown) > 20 else ''} of the file "
                        f"{'have headers' if len(unknown) > 1 else 'has a header'} the contract does not know and "
                        f"{'were' if len(unknown) > 1 else 'was'} ignored (the header is not shown: it may be a value, "
                        "such as an identity number or a name)")
    return mapping, warnings


def _stage_from(con, contract: Contract, mapping: dict[str, str], source_sql: str, table: str, params=(),
                set_aside: Callable[[], str | None] | None = None) -> None:
    """Materialise the source in file order once, and stage it as the view ``table``: the
    contract's columns plus ``_source_row``, the 1-based data row number.

    A table keeps insertion order and its row ids are positions, so the row number is the
    row id less the first one (temporary tables inside a transaction do not start at 0).
    Should the row ids of the copy not be contiguous, rows are numbered in row id order into
    a second copy instead (slower, same numbers). ``set_aside``, called once the copy is
    made, names a table of the file's rows the reader left out of it (``_source_row``), if
    any: the rows of the copy are then numbered around them, as they are in the file.
    """
    source = f"{table}_src"
    con.execute(f"create or replace temp table {source} as {source_sql}", list(params))
    skipped = set_aside() if set_aside is not None else None
    cols = []
    for col in contract.columns:
        if col.name in mapping:
            quoted = '"' + mapping[col.name].replace('"', '""') + '"'
            cols.append(f"nullif(trim({quoted}::varchar), '') as {col.name}")
        else:
            cols.append(f"null::varchar as {col.name}")
    first, last, rows = con.execute(f"select min(rowid), max(rowid), count(*) from {source}").fetchone()
    if skipped is None and (rows == 0 or last - first + 1 == rows):
        con.execute(f"create or replace temp view {table} as select (rowid - {first or 0} + 1)::bigint as _source_row, "
                    f"{', '.join(cols)} from {source}")
        return
    if skipped is None:
        numbered = f"select (row_number() over (order by rowid))::bigint as _source_row, {', '.join(cols)} from {source}"
    else:
        # the k-th row left out (in file order) follows s_k = its row number - k rows of the
        # copy; the row at position p of the copy is row p + (the largest k with s_k < p)
        numbered = (
            f"with copied as (select row_number() over (order by rowid) as _position, * from {source}), "
            "left_out as (select _source_row - row_number() over (order by _source_row) as _before, "
            f"row_number() over (order by _source_row) as _count from {skipped}), "
            "shifts as (select _before, max(_count) as _shift from left_out group by _before) "
            f"select (c._position + coalesce(s._shift, 0))::bigint as _source_row, {', '.join(cols)} "
            "from copied c asof left join shifts s on c._position > s._before"
        )
    con.execute(f"create or replace temp table {table}_numbered as {numbered} order by _source_row")
    con.execute(f"create or replace temp view {table} as select * from {table}_numbered")


def drop_staged(con, table: str = STAGED) -> None:
    """Drop the staging view of a file and the copies behind it."""
    con.execute(f"drop view if exists {table}")
    for copy in (f"{table}_numbered", f"{table}_src", f"{table}_xlsx", f"{table}_malformed", *_csv_rejects(table)):
        con.execute(f"drop table if exists {copy}")


def _check_utf8(path: Path) -> bool:
    """True when the file is valid UTF-8 and has non-ASCII bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    non_ascii = False
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return False
            non_ascii = non_ascii or not chunk.isascii()
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return non_ascii


def _line_encodings(chunk: bytes, first_line: int, first: dict[str, int]) -> None:
    """Record in ``first`` the first line (number as an editor counts lines; ``chunk`` holds
    whole lines from line ``first_line``) of each encoding its non-ASCII lines are written in:
    ``utf-8`` for a line that is valid UTF-8, else ``windows-1252``."""
    try:
        chunk.decode("utf-8")
        whole = "utf-8"
    except UnicodeDecodeError:
        whole = None
    for number, line in enumerate(chunk.split(b"\n"), start=first_line):
        if line.isascii():
            continue
        if whole is not None:
            first.setdefault(whole, number)
            return
        try:
            line.decode("utf-8")
            first.setdefault("utf-8", number)
        except UnicodeDecodeError:
            first.setdefault("windows-1252", number)
        if len(first) == 2:
            return


def _transcode_cp1252(path: Path, tmp_dir: Path) -> Path:
    """Stream a Windows-1252 file into a UTF-8 copy that DuckDB can read.

    A file whose lines are written partly in UTF-8 and partly in Windows-1252 (a file pieced
    together from two exports) is rejected: read as Windows-1252, its UTF-8 lines would load
    garbled (``mÃ©nages`` for ``ménages``), and a garbled name would take another pseudonym."""
    if _check_utf8(path):
        raise FileRejected(
            "wrong encoding: the file is UTF-8 but its contract says windows-1252 "
            "(re-export it in windows-1252, or ask for the contract to change)"
        )
    out = tmp_dir / (path.name + ".utf8")
    offset, line = 0, 1
    first: dict[str, int] = {}  # encoding -> the first line written in it
    with open(path, "rb") as src, open(out, "w", encoding="utf-8", newline="") as dst:
        while chunk := src.read(CHUNK):
            if not chunk.endswith(b"\n"):
                chunk += src.readline()  # whole lines only: a line is judged, and numbered, whole
            if not chunk.isascii():
                _line_encodings(chunk, line, first)
                if len(first) == 2:
                    raise FileRejected(
                        f"wrong encoding: the file mixes encodings: line {first['utf-8']} is written in UTF-8 where "
                        f"line {first['windows-1252']} is in windows-1252, the encoding of its contract (pieced "
                        "together from several exports?): re-export the whole file in windows-1252")
            try:
                dst.write(chunk.decode("cp1252"))
            except UnicodeDecodeError as exc:
                at = line + chunk[: exc.start].count(b"\n")
                raise FileRejected(
                    f"wrong encoding: byte 0x{chunk[exc.start]:02x} at line {at} (offset {offset + exc.start}) "
                    "is not valid windows-1252"
                ) from None
            offset += len(chunk)
            line += chunk.count(b"\n")
    return out


MAX_HEADER_LINE = 4 * 2**20  # a CSV header line longer than this (bytes) rejects its file, named as such


def _lone_cr(line: int) -> str:
    return (f"unreadable at line {line}: the line holds a lone carriage return (CR, with no line feed after it: "
            "the line end of old Mac files), which is not a line end here: save the file with LF or CR LF line ends")


def _line_end_problem(path: Path) -> str | None:
    """The reason DuckDB's reader could not split a CSV file into rows when its line ends are
    to blame, else None: a lone carriage return (CR), or lines ending with CR LF and others
    with LF alone. Its reason for both is "The CSV Parser state machine reached an invalid
    state", which tells a partner nothing; the file is read again only then."""
    first: dict[bytes, int] = {}  # the first line ending with each kind of line end
    line = 1
    with open(path, "rb") as fh:
        while piece := fh.readline(CHUNK):
            while piece.endswith(b"\r") and (more := fh.read(1)):  # a CR at the end of a piece: is LF next?
                piece += more
            complete = piece.endswith(b"\n")
            body = piece[:-1] if complete else piece
            end = b"\r\n" if complete and body.endswith(b"\r") else b"\n"
            if b"\r" in (body[:-1] if end == b"\r\n" else body):
                return _lone_cr(line)
            if complete:
                first.setdefault(end, line)
                if len(first) == 2:
                    kinds = {b"\n": "LF alone", b"\r\n": "CR LF"}
                    other = next(k for k in first if k != end)
                    return (f"unreadable at line {line}: the line ends with {kinds[end]} where line {first[other]} "
                            f"ends with {kinds[other]}: save the file with one kind of line end (LF or CR LF)")
                line += 1
    return None


def _first_line(path: Path, encoding: str) -> str:
    """A CSV file's first line, whole (its quotes are judged on the whole line: a line cut
    inside a quoted cell would look like a quote left open), without its line break. A lone
    carriage return (CR) in it rejects the file, named as such: the file's lines end so (old
    Mac line ends), and its first line is then the whole file."""
    with open(path, "rb") as fh:
        raw = fh.readline(MAX_HEADER_LINE + 1)
    if b"\r" in (raw[:MAX_HEADER_LINE] if len(raw) > MAX_HEADER_LINE else raw.removesuffix(b"\n").removesuffix(b"\r")):
        raise FileRejected(_lone_cr(1))
    if len(raw) > MAX_HEADER_LINE:
        raise FileRejected(f"the header line is longer than {MAX_HEADER_LINE // 2**20} MiB: no header row")
    if encoding.startswith("utf-8"):
        raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8" if encoding.startswith("utf-8") else "cp1252").rstrip("\r\n")
    except UnicodeDecodeError:
        raise FileRejected(f"wrong encoding: the header line is not valid {encoding}") from None


def _reject_other_delimiter(contract: Contract, header_line: str, delimiter: str) -> None:
    """Reject a file whose header line, one cell under the contract's delimiter, is split by
    another delimiter (shown only if it names a column of the contract)."""
    for other in OTHER_DELIMITERS:
        if other != delimiter and len(header_line.split(other)) > 1:
            cells = header_line.split(other)
            shown = (_shown_line(contract, header_line, other) if _is_header_line(contract, cells)
                     else f"{len(cells)} fields, none of them a column name of the contract (values not shown)")
            raise FileRejected(
                f"wrong delimiter: the contract says {delimiter!r}-separated but the header looks "
                f"{other!r}-separated: {shown}"
            )


HEADER_QUOTE_RULE = ("a value in quotes ends with a quote followed by the delimiter or the end of the line, "
                     "a quote inside it is doubled, and a header name is on the header line")


def _header_cells(con, header_line: str, delimiter: str, contract: Contract, path: Path, tmp_dir: Path) -> list[str]:
    """The cells of a CSV file's header line as DuckDB's reader splits it, with the options
    the rows are read with (a space before a quoted cell is skipped, a quote inside an
    unquoted cell is a character of it, ...): the line alone is read in a copy.

    The line is followed there by a line holding a quote and one ending with one: a quote
    left open on the header line (a stray quote before a name) is closed by the first, so
    the cell it opened ends with a line break; otherwise the two lines are one value of the
    next row. A quote left open, or a quoted cell followed by other characters, rejects the
    file (reading the whole file, it would take the lines after it into the header). The
    line is quoted only when it names a column of the contract: it may be a record."""
    copy = tmp_dir / "header.csv"
    copy.write_text(header_line + '\n"\nx"\n', encoding="utf-8", newline="")
    width = min(header_line.count(delimiter) + 1, MAX_FIELDS)
    try:
        cells = con.execute(
            f"select * from read_csv(?, delim=?, header=false, auto_detect=false, quote='\"', escape='\"', "
            f"columns={_varchar_columns(f'c{i}' for i in range(width))}, strict_mode=true, null_padding=true, "
            "parallel=false, nullstr=?, encoding='utf-8') limit 1", [str(copy), delimiter, NO_NULL]).fetchone()
        problem = None
    except Exception as exc:  # duckdb.Error
        text = str(exc)
        if "Expected Number of Columns" in text:
            raise FileRejected(f"the header line has more than {MAX_FIELDS} fields") from None
        if "Value with unterminated quote" not in text:
            raise FileRejected(_describe_read_error(exc, shown_name(path), copy)) from None
        cells, problem = None, "a quoted cell is followed by other characters before the next delimiter"
    headers = [c for c in cells if c is not None] if cells is not None else []
    if problem is None and (cells is None or any("\n" in c for c in headers)):
        problem = "a quote opened on it is not closed there"
    if problem is None:
        return headers
    if delimiter not in header_line:  # quoted cells under another delimiter: the delimiter is the problem
        _reject_other_delimiter(contract, header_line, delimiter)
    shown = (f": {_shown_line(contract, header_line, delimiter)}"
             if _is_header_line(contract, header_line.split(delimiter))
             else " (the line names no column of the contract; it is not shown: it may be personal data)")
    raise FileRejected(f"the header line of {shown_name(path)} could not be read: {problem} "
                       f"({HEADER_QUOTE_RULE}){shown}")


def stage_csv(con, path: Path, contract: Contract, table: str, tmp_dir: Path) -> Staged:
    read_path = path
    if contract.encoding == "windows-1252":
        read_path = _transcode_cp1252(path, tmp_dir)
    header_line = _first_line(read_path, "utf-8" if read_path != path else contract.encoding)
    if not header_line.strip():
        raise FileRejected("the first line is empty: no header row")
    delim = contract.delimiter
    headers = _header_cells(con, header_line, delim, contract, path, tmp_dir)
    if len(headers) == 1 and len(contract.columns) > 1:
        _reject_other_delimiter(contract, header_line, delim)
        shown = (f" {header_line[:120]!r}" if _is_header_line(contract, headers)
                 else " (not a column name of the contract; not shown: it may be personal data)")
        raise FileRejected(f"the header has a single column{shown}; expected {delim!r}-separated columns")
    # a header cell left empty (a delimiter at the end of the line, as spreadsheets export) is
    # named by its position, as in a workbook
    headers = [h if h.strip() else f"column_{i + 1}" for i, h in enumerate(headers)]
    mapping, warnings = _map_headers(contract, headers, "column")
    columns = _varchar_columns(headers)
    errors, scans = _csv_rejects(table)
    for t in (errors, scans):
        con.execute(f"drop table if exists {t}")  # DuckDB appends to a rejects table
    source_sql = (
        "select * from read_csv(?, delim=?, header=true, auto_detect=false, quote='\"', escape='\"', "
        f"columns={columns}, strict_mode=true, null_padding=false, encoding='utf-8', "
        f"store_rejects=true, rejects_table='{errors}', rejects_scan='{scans}')"
    )
    malformed = None

    def set_aside() -> str | None:
        nonlocal malformed
        malformed = _malformed_rows(con, table, read_path, delim, len(headers), tmp_dir)
        blank = _blank_rows(read_path, delim)
        if blank is None:
            return malformed
        blanks, rows = blank
        read = con.execute(f"select count(*) from {table}_src").fetchone()[0]
        if malformed is not None:
            read += con.execute(f"select count(*) from {malformed}").fetchone()[0]
        if read + len(blanks) != rows:  # the two readings did not split the file alike: numbered as read
            return malformed
        if malformed is not None:  # renumbered counting the blank lines
            _list_malformed(con, table, [(_counting(blanks, number), message) for number, message in con.execute(
                f"select _source_row, message from {malformed} order by _source_row").fetchall()])
        return _numbered_around(con, table, malformed, blanks)

    try:
        _stage_from(con, contract, mapping, source_sql, table, [str(read_path), delim], set_aside)
    except FileRejected:
        raise
    except Exception as exc:  # duckdb.Error subclasses
        if "state machine reached an invalid state" in str(exc) and (problem := _line_end_problem(read_path)):
            raise FileRejected(problem) from None
        raise FileRejected(_describe_read_error(exc, shown_name(path), read_path, path)) from None
    return _finish(con, table, mapping, warnings, malformed=malformed)


ROW_SHAPE_ERRORS = ("MISSING COLUMNS", "TOO MANY COLUMNS")  # a row's problem; any other, the file's


def _varchar_columns(names) -> str:
    """The ``columns`` argument of DuckDB's readers: every name (any text) a VARCHAR column."""
    return "{" + ", ".join("'" + n.replace("'", "''") + "': 'VARCHAR'" for n in names) + "}"


def _csv_rejects(table: str) -> tuple[str, str]:
    """The tables where DuckDB's CSV reader records the lines it could not read for ``table``."""
    return f"{table}_rejects", f"{table}_rejects_scan"


def _file_lines(path: Path, offsets: list[int]) -> list[int]:
    """The 1-based line, as an editor numbers lines, at each byte offset (ascending) of the file."""
    lines, line, done = [], 1, 0
    with open(path, "rb") as fh:
        for offset in offsets:
            while done < offset and (chunk := fh.read(min(CHUNK, offset - done))):
                line += chunk.count(b"\n")
                done += len(chunk)
            lines.append(line)
    return lines


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"


NO_NULL = "\x01jisr: no field is null\x01"  # a nullstr no field holds: an empty field stays ''
MAX_FIELDS = 1 << 14  # a row read into more columns than this (long runs of empty fields marked) makes the file unreadable


EMPTY_RUN = "\x01jisr: {} empty fields\x01"  # in a copy, a field standing for a run of empty fields
EMPTY_RUN_PATTERN = "^\x01jisr: ([0-9]+) empty fields\x01$"


def _empty_runs_marked(read_path: Path, tmp_dir: Path, delimiter: str, fields: int) -> Path:
    """A copy of the file DuckDB read in which each run of more than ``fields`` delimiters
    in a line is one field naming the number of empty fields the run makes
    (:data:`EMPTY_RUN`), between delimiters kept on either side that are not its line's ends.

    Outside a quoted value, the run is that many empty fields; inside one, it is text of
    the value, which the field then also is (delimiters are no quotes). So the copy splits
    into the same rows with the same numbers of fields, counted with the marks, and no row
    has many more columns than the header for empty fields (a spreadsheet exports up to
    16,384 columns, each of which DuckDB would read into a column of its own)."""
    copy = tmp_dir / (read_path.name + ".fields")
    mark = delimiter.encode("utf-8")
    run = re.compile(re.escape(mark) + b"{%d,}" % (fields + 1))

    def marked(body: bytes) -> bytes:
        def one(found: re.Match) -> bytes:
            first, last = found.start() == 0, found.end() == len(body)
            empty = len(found.group()) // len(mark) - 1 + first + last
            return (b"" if first else mark) + EMPTY_RUN.format(empty).encode("utf-8") + (b"" if last else mark)
        return run.sub(one, body)

    with open(read_path, "rb") as src, open(copy, "wb") as dst:
        for line in src:
            ending = b"\r\n" if line.endswith(b"\r\n") else b"\n" if line.endswith(b"\n") else b""
            dst.write(marked(line[: len(line) - len(ending)]) + ending)
    return copy


def _odd_rows(con, read_path: Path, delimiter: str, fields: int, width: int,
              tmp_dir: Path) -> tuple[int, list[tuple[int, int]]]:
    """(rows of the file, [(data row number, fields) of each row DuckDB's strict reader sets
    aside]), as DuckDB's reader splits the file: read once more into ``width`` columns (more
    as needed), short rows padded with nulls and empty fields kept empty, so a row's fields
    are its non-null columns. Empty lines give no row, so a row's position is its data row
    number (DuckDB's record numbers, in its rejects table, count empty lines). A row is set
    aside when it has fewer fields than the header, or more that are not all empty (the
    strict reader drops empty fields at the end of a row). One thread: DuckDB pads rows so
    only when a quoted value may hold a line break.

    Once a row is wider than ``width``, the file is read from a copy whose long runs of
    empty fields are marked (:func:`_empty_runs_marked`): a row of any number of them is
    counted without a column for each; a mark counts as the fields it stands for."""
    read = read_path
    while True:
        columns = _varchar_columns(f"c{i}" for i in range(width))
        values = f"[{', '.join(f'c{i}' for i in range(width))}]"
        try:
            counted = con.execute(
                "select list_sum(list_transform(v, lambda x: case when x is null then 0 "
                "when regexp_full_match(x, $pattern) then regexp_extract(x, $pattern, 1)::bigint else 1 end)) as n, "
                f"len(list_filter(v[{fields + 1}:], lambda x: x is not null and x <> '' "
                "and not regexp_full_match(x, $pattern))) = 0 as extra_empty "
                f"from (select {values} as v from read_csv($path, delim=$delimiter, header=true, auto_detect=false, "
                f"quote='\"', escape='\"', columns={columns}, strict_mode=true, null_padding=true, "
                "parallel=false, nullstr=$nullstr, encoding='utf-8'))",
                {"pattern": EMPTY_RUN_PATTERN, "path": str(read), "delimiter": delimiter, "nullstr": NO_NULL}
            ).fetchall()
            break
        except Exception as exc:  # duckdb.Error
            longer = re.search(r"Expected Number of Columns: \d+ Found: (\d+)", str(exc))
            if longer is None:
                raise
            if read == read_path:
                read = _empty_runs_marked(read_path, tmp_dir, delimiter, fields)
                continue
            if width >= MAX_FIELDS:
                raise FileRejected(f"unreadable: a row has more than {MAX_FIELDS} fields") from None
            width = min(MAX_FIELDS, max(2 * width, int(longer.group(1)) + 1))  # a row wider than width
    odd = [(number, n) for number, (n, extra_empty) in enumerate(counted, start=1)
           if n < fields or (n > fields and not extra_empty)]
    return len(counted), odd


def _list_malformed(con, table: str, rows: list[tuple[int, str]]) -> str:
    """The table ``<table>_malformed`` of the rows a reader could not read: (``_source_row``,
    message) for each; its name."""
    import pyarrow as pa

    listed = pa.table({  # noqa: F841 (read by the SQL below)
        "_source_row": pa.array([number for number, _ in rows], pa.int64()),
        "message": pa.array([message for _, message in rows], pa.string()),
    })
    con.execute(f"create or replace temp table {table}_malformed as select * from listed")
    return f"{table}_malformed"


def _malformed_rows(con, table: str, read_path: Path, delimiter: str, fields: int,
                    tmp_dir: Path) -> str | None:
    """The rows DuckDB's reader left out of its copy of the file because they do not have the
    header's ``fields`` fields, listed by :func:`_list_malformed`: the table's name, or None if
    there are none. ``read_path`` is the file DuckDB read (UTF-8), ``delimiter`` its delimiter.

    The file is rejected instead when the reader met anything else (an invalid byte, a quote
    never closed: where the next row starts is then unknown), when the last row is short and
    no line break ends the file (a file cut off), or when such rows outnumber the others."""
    errors, _ = _csv_rejects(table)
    shapes = ", ".join(f"'{e}'" for e in ROW_SHAPE_ERRORS)
    fatal = con.execute(
        f"select line_byte_position, error_type::varchar, error_message from {errors} "
        f"where error_type::varchar not in ({shapes}) order by line limit 1").fetchone()
    if fatal is not None:
        where = f" at line {_file_lines(read_path, [fatal[0]])[0]}"
        if fatal[1] == "INVALID ENCODING":
            raise FileRejected(f"wrong encoding{where}: the file is not valid UTF-8 (its contract says UTF-8)")
        raise FileRejected(f"unreadable{where}: {fatal[2]}")
    # one row can be reported several times (once per count of fields the reader tried)
    rows = con.execute(
        "select min(line_byte_position), max(regexp_extract(error_message, 'Found: (\\d+)', 1)::int) "
        f"from {errors} group by line order by line").fetchall()
    if not rows:
        return None
    total, odd = _odd_rows(con, read_path, delimiter, fields, max(fields, *(most for _, most in rows)) + 1, tmp_dir)
    lines = _file_lines(read_path, [offset for offset, _ in rows])
    if len(odd) != len(rows):  # the two readings did not split the file alike
        raise FileRejected(f"malformed at line {lines[0]}: a row without the header's {fields} fields, "
                           "in a file whose rows could not be told apart")
    first = f"line {lines[0]} has {odd[0][1]} fields"
    if odd[-1][0] == total and odd[-1][1] < fields and not _ends_a_line(read_path):
        raise FileRejected(f"truncated or malformed at line {lines[-1]}: Expected Number of Columns: {fields} "
                           f"Found: {odd[-1][1]} (the last line is incomplete: was the file cut off?)")
    if 2 * len(odd) > total:
        raise FileRejected(f"malformed: {len(odd)} of the file's {total} rows do not have the header's "
                           f"{fields} fields ({first})")
    return _list_malformed(con, table, [
        (number, f"line {line} has {n} fields where the header has {fields}: the row could not be read")
        for line, (number, n) in zip(lines, odd)])


_LINE_BREAKS_IN_A_ROW = re.compile(rb"\n\r?\n")


def _blank_rows(read_path: Path, delimiter: str) -> tuple[list[int], int] | None:
    """(the row numbers, the header not counted, as a spreadsheet shows the file, of the blank
    lines between the rows of a CSV file (UTF-8, as DuckDB reads it), which DuckDB's reader
    passes over without a word; the file's rows, those lines included); None when there are
    none. A scan of the bytes finds most files have no blank line (no line break right after
    another); the others are read once with Python's csv module (a line break inside a
    quoted value is no blank line)."""
    import csv
    import mmap

    if read_path.stat().st_size == 0:
        return None
    with open(read_path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if _LINE_BREAKS_IN_A_ROW.search(data) is None:
            return None
    blanks, number = [], 0
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(1 << 30)
        with open(read_path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
            next(reader, None)  # the header
            for number, row in enumerate(reader, start=1):
                if not row:
                    blanks.append(number)
    except (csv.Error, UnicodeDecodeError):
        return None  # DuckDB's reader says what is wrong with the file
    finally:
        csv.field_size_limit(limit)
    while blanks and blanks[-1] == number:  # blank lines at the end: no row follows them
        blanks.pop()
        number -= 1
    return (blanks, number) if blanks else None


def _counting(blanks: Iterable[int], number: int) -> int:
    """The row number of the ``number``-th row read, counting the blank ``blanks`` (ascending)."""
    for blank in blanks:
        if blank > number:
            break
        number += 1
    return number


def _numbered_around(con, table: str, malformed: str | None, empty: list[int]) -> str | None:
    """The table of the row numbers a reader's copy of a file does not hold (for
    :func:`_stage_from`): the rows it could not read (``malformed``) and the rows that hold
    nothing (``empty``: blank lines, empty rows of a sheet), which keep their number as a
    spreadsheet shows them; ``malformed`` itself when there is no empty row."""
    if not empty:
        return malformed
    import pyarrow as pa

    listed = pa.table({"_source_row": pa.array(empty, pa.int64())})  # noqa: F841 (read by the SQL below)
    rows = f"select _source_row from {malformed} union all " if malformed is not None else ""
    con.execute(f"create or replace temp table {table}_gaps as {rows}select _source_row from listed")
    return f"{table}_gaps"


def shown_name(path: Path) -> str:
    """A delivered file as its partner knows it: ``<partner folder>/<file name>``. Messages
    name files so, never by a path of the machine that read them."""
    return f"{path.parent.name}/{path.name}"


def _describe_read_error(exc: Exception, shown: str, *paths: Path) -> str:
    """A one-line reason from DuckDB's reader error (which also names the line), with the
    paths it read (``paths``) replaced by the file's name in its partner folder."""
    text = str(exc)
    for read in paths:
        text = text.replace(str(read), shown)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    where = f" at line {line.group(1)}" if line else ""
    if "Invalid unicode" in text:
        return f"wrong encoding{where}: the file is not valid UTF-8 (its contract says UTF-8)"
    if "Expected Number of Columns" in text:
        detail = next(ln.strip() for ln in text.splitlines() if ln.startswith("Expected Number"))
        return f"truncated or malformed{where}: {detail}"
    lines = [ln.strip().removeprefix("Invalid Input Error:").strip() for ln in text.splitlines()
             if not ln.startswith("Original Line")]
    lines = [ln for ln in lines if ln and not ln.startswith("CSV Error on Line")]
    return f"unreadable{where}: {lines[0] if lines else type(exc).__name__}"


JSON_BLANK = b" \t\r\n\x0b\x0c"  # a line of only these holds no record (DuckDB's reader skips it too)
MAX_JSON_LINE = 16 * 1024 * 1024  # DuckDB's default maximum_object_size


class _Pairs(list):
    """A JSON object as its (key, value) pairs, in order, duplicates kept."""


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def _jsonl_line(raw: bytes, first: bool = False) -> tuple[dict | None, str | None, bool]:
    """Read one line of a JSON-lines file: (record, problem, definite).

    A line holding one JSON object gives its record (its keys, at least); a blank line gives
    neither record nor problem; any other line gives a problem, naming the column (1-based,
    in characters) where it can. ``definite``: DuckDB's reader refuses the line too (not
    UTF-8; valid JSON but not a record: not an object, a key twice, half a surrogate pair);
    a line that Python's parser cannot read may be one DuckDB's reads (a trailing comma,
    deep nesting).
    """
    line = raw.rstrip(b"\r\n")
    if first:
        line = line.removeprefix(codecs.BOM_UTF8)
    if len(raw) > MAX_JSON_LINE:
        return None, f"the line is longer than {MAX_JSON_LINE} bytes", False
    if not line.strip(JSON_BLANK):
        return None, None, False
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(line[: exc.start].decode("utf-8", "replace")) + 1
        return None, f"byte 0x{line[exc.start]:02x} at column {column} is not valid UTF-8", True
    try:
        pairs = json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg}{'' if exc.msg.endswith(' at') else ' at'} column {exc.colno}", False
    except RecursionError:
        return None, "the record is nested too deeply", False
    if not isinstance(pairs, _Pairs):
        return None, f"{_JSON_KINDS.get(type(pairs), 'a value')} where a JSON object is expected", True
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = next(key for i, key in enumerate(keys) if key in keys[:i])
        return None, f"the field {twice!r} appears twice", True
    if "\\u" in text:
        try:
            json.dumps(pairs, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return None, "a \\u escape is half of a surrogate pair, without the other half", True
    return dict(pairs), None, False


def _one_spelling(contract: Contract, path: Path, keys: Iterable[str]) -> None:
    """Reject a JSON-lines file whose records spell one field two ways (``status`` in some
    records, ``Status`` in others: the same header to the contract), naming the first line of
    each spelling. Field names the contract does not know are not shown (see WHY_NOT_SHOWN)."""
    spellings: dict[str, list[str]] = {}
    for key in keys:
        spellings.setdefault(key.strip().lower(), []).append(key)
    both = next((s for s in spellings.values() if len(s) > 1), None)
    if both is None:
        return
    first: dict[str, int] = {}
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            record, _, _ = _jsonl_line(line, first=number == 1)
            for key in record or ():
                if key in both:
                    first.setdefault(key, number)
            if len(first) == len(both):
                break
    where = [f"line {first[k]}" if k in first else "a line" for k in both[:2]]
    if _is_known(contract, both[0]):
        raise FileRejected(f"not valid JSON lines: {shown_name(path)}: the field {both[0]!r} is spelled {both[1]!r} "
                           f"in other records (first on {where[0]} and on {where[1]}): spell it one way in every record")
    raise FileRejected(f"not valid JSON lines: {shown_name(path)}: a field is spelled two ways in different records "
                       f"(first on {where[0]} and on {where[1]}; field names that are not in the contract are not "
                       "shown: they may be personal data): spell it one way in every record")


def _jsonl_rejection(path: Path, number: int, problem: str) -> FileRejected:
    return FileRejected(f"not valid JSON lines: {shown_name(path)}, line {number}: {problem}")


def _jsonl_lines(path: Path):
    """Each line of a JSON-lines file as (line number, bytes, problem): the problem is None
    for a line holding one JSON object as DuckDB's reader reads it, and for a blank line.

    A line that Python's parser cannot read but DuckDB's JSON parser can is not a problem.
    A line longer than DuckDB's limit is given in pieces (its first one with the problem).
    """
    import duckdb

    lenient = None  # DuckDB's JSON parser, asked only about the lines Python's refuses
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(iter(lambda: fh.readline(MAX_JSON_LINE + 1), b""), start=1):
                _, problem, definite = _jsonl_line(raw, first=number == 1)
                if problem and not definite and len(raw) <= MAX_JSON_LINE:  # longer: readline stopped in the line
                    lenient = lenient or duckdb.connect()
                    text = raw.rstrip(b"\r\n").removeprefix(codecs.BOM_UTF8 if number == 1 else b"").decode("utf-8")
                    if lenient.execute("select json_valid(?) and json_type(?) = 'OBJECT'", [text, text]).fetchone()[0]:
                        problem = None
                yield number, raw, problem
    finally:
        if lenient is not None:
            lenient.close()


def _first_bad_jsonl_line(path: Path) -> FileRejected | None:
    """The rejection naming the first line of a JSON-lines file that is not one JSON object
    (its number as an editor counts lines), or None if every line is one.

    Only read once DuckDB's reader has failed on the file: DuckDB numbers records, not lines
    (blank lines are not counted), and its malformed-JSON errors name the record after the
    failing one, so its number cannot be given to the partner as it is.
    """
    return next((_jsonl_rejection(path, number, problem) for number, _, problem in _jsonl_lines(path) if problem), None)


def _without_bad_jsonl_lines(path: Path, copy: Path) -> list[tuple[int, str]]:
    """Copy the records of a JSON-lines file that DuckDB's reader refused to ``copy``, without
    its lines that are not one JSON object; those lines as (record number, message).

    The file is rejected instead when it cannot be split into records (a line longer than
    DuckDB's limit), when its last line is bad and no line break ends the file (a file cut
    off), or when bad lines outnumber the others."""
    bad, good, record, first, last = [], 0, 0, None, None
    with open(copy, "wb") as out:
        for number, raw, problem in _jsonl_lines(path):
            if not raw.strip(JSON_BLANK) and problem is None:
                continue  # no record (DuckDB's reader skips the line too)
            record += 1
            last = (number, raw, problem)
            if problem is None:
                good += 1
                out.write(raw.removeprefix(codecs.BOM_UTF8 if number == 1 else b"").rstrip(b"\r\n") + b"\n")
                continue
            first = first or (number, problem)
            if len(raw) > MAX_JSON_LINE:
                raise _jsonl_rejection(path, number, problem)
            bad.append((record, f"line {number}: {problem}: the row could not be read"))
    if last is not None and last[2] and not last[1].endswith(b"\n"):
        raise FileRejected(_jsonl_rejection(path, last[0], last[2]).reason + " (the last line is incomplete: "
                           "was the file cut off?)")
    if first is not None and len(bad) > good:
        raise FileRejected(_jsonl_rejection(path, *first).reason + f" ({len(bad)} of the file's {record} lines "
                           "are not one JSON object)")
    return bad


def _describe_jsonl_error(exc: Exception, path: Path) -> str:
    """The reason a JSON-lines file could not be read: its first bad line, found by reading
    the file again; else DuckDB's own reason, without its line number, the path it read, or
    values of the record."""
    found = _first_bad_jsonl_line(path)
    if found is not None:
        return found.reason
    text = str(exc).splitlines()[0].replace("Invalid Input Error: ", "")
    if not text.startswith(("Malformed JSON", "JSON transform error")):
        return _describe_read_error(exc, shown_name(path), path)
    text = re.sub(r'in file "[^"]*",? ?', "", text.replace(str(path), shown_name(path)))
    text = re.sub(r" ?(at byte \d+ )?in (line|record) \d+:? ?", ": ", text)
    text = re.sub(r"(but got \w+):.*", r"\1", text)
    text = re.sub(r"Object \{.*\} has", "an object has", text)
    return f"not valid JSON lines: {shown_name(path)}: {text.strip()} (DuckDB's reader; the line was not located)"


def _add_every_key(con, path: Path, keys: dict[str, None]) -> bool:
    """Add to ``keys`` the keys of every record of a JSON-lines file that ``keys`` does not
    hold yet (sorted by name); whether the file could be scanned.

    DuckDB's reader, given the fields to read (``columns``), ignores any other key without a
    word, so every key of every record must be among them: a producer that omits null
    fields may write a field for the first time on any line (a write-off date on the
    2,000th loan). One pass of DuckDB's JSON parser lists the distinct keys (about half the
    time the staging read takes: 0.5 s for 300 MB, where Python's parser takes 5 s); lines
    that are not one JSON object are passed over here and dealt with when the file is
    staged."""
    import duckdb

    try:
        found = con.execute("select distinct unnest(json_keys(json)) from read_ndjson_objects(?, ignore_errors=true)",
                            [str(path)]).fetchall()
    except duckdb.Error:
        return False
    keys.update(dict.fromkeys(sorted(key for (key,) in found if key not in keys)))
    return True


def stage_jsonl(con, path: Path, contract: Contract, table: str, sample_lines: int = 1000) -> Staged:
    """Stage JSON lines. Field names are the union of the keys of every record (a record may
    omit an optional field), in the order the first records give them, then by name. A line
    that is not one JSON object is staged apart (``Staged.malformed``), unless the file cannot
    be read as records at all."""
    keys: dict[str, None] = {}
    first_problem = None
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if number > sample_lines:
                break
            record, problem, _ = _jsonl_line(line, first=number == 1)
            first_problem = first_problem or (problem and (number, problem))
            if record is not None:
                keys.update(dict.fromkeys(record))
    if not keys:
        if first_problem:
            raise _jsonl_rejection(path, *first_problem)
        raise FileRejected("the file has no JSON record")
    scanned = _add_every_key(con, path, keys)
    def fields():  # the mapping of the fields found, and the query reading them
        _one_spelling(contract, path, keys)
        mapping, warnings = _map_headers(contract, list(keys), "field")
        return mapping, warnings, f"select * from read_json(?, format='newline_delimited', columns={_varchar_columns(keys)})"

    mapping, warnings, source_sql = fields()
    try:
        _stage_from(con, contract, mapping, source_sql, table, [str(path)])
        refused = None
    except Exception as exc:
        refused = exc
    if refused is None:
        return _finish(con, table, mapping, warnings)
    # DuckDB's reader refused the file: read it again without its lines that are not records
    with tempfile.TemporaryDirectory(prefix="jisr-") as tmp:
        copy = Path(tmp) / path.name
        bad = _without_bad_jsonl_lines(path, copy)
        if not bad:
            raise FileRejected(_describe_jsonl_error(refused, path)) from None
        if not scanned and _add_every_key(con, copy, keys):  # the file's records, now that they can be read
            mapping, warnings, source_sql = fields()
        malformed = _list_malformed(con, table, bad)
        try:
            _stage_from(con, contract, mapping, source_sql, table, [str(copy)], lambda: malformed)
        except Exception as exc:
            text = str(exc).replace(str(copy), shown_name(path)).splitlines()[0]
            raise FileRejected(f"not valid JSON lines: {shown_name(path)}: {text}") from None
    return _finish(con, table, mapping, warnings, malformed=malformed)


def _cell_text(value) -> str | None:
    import datetime as dt

    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ") if (value.hour, value.minute, value.second) != (0, 0, 0) else value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


XLSX_CELL_TYPES = {"n": "a number", "b": "true or false", "d": "an ISO 8601 date", "e": "an error value"}


class _CellUnreadable(Exception):
    """A cell of a worksheet whose content does not match its type; the message names the
    cell, never its content (it may be personal data)."""


@functools.cache
def _sheet_parser():
    """openpyxl's parser of a worksheet's XML, whose errors on a cell name the cell (openpyxl's
    own message quotes the content: ``invalid literal for int() with base 10: 'AB100001'``),
    and which lists in ``unfilled`` the columns of the row just parsed whose cell holds a
    formula without its result.

    A workbook stores a formula's result beside it (``<f>`` and ``<v>``) when a spreadsheet
    program saved it; one written by a script (openpyxl) holds the formula only. Read for
    values (``data_only``), openpyxl gives such a cell as empty, like a blank one: the formula
    is looked for only in a cell without a value, so a workbook of values costs nothing more.
    A formula whose result is text (``t="str"``) may have computed an empty text: such a cell
    is empty."""
    from openpyxl.utils.exceptions import CellCoordinatesException
    from openpyxl.worksheet._reader import FORMULA_TAG, WorkSheetParser

    class SheetParser(WorkSheetParser):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.unfilled: list[int] = []

        def parse_row(self, row):
            self.unfilled = []
            return super().parse_row(row)

        def parse_cell(self, element):
            try:
                cell = super().parse_cell(element)
            except (ValueError, TypeError, IndexError, KeyError, OverflowError, CellCoordinatesException):
                cell, kind = str(element.get("r", "?"))[:20], element.get("t", "n")
                if kind == "s":
                    raise _CellUnreadable(f"cell {cell} refers to a text the workbook does not hold") from None
                if kind in XLSX_CELL_TYPES:
                    raise _CellUnreadable(f"cell {cell} is marked as holding {XLSX_CELL_TYPES[kind]} but does "
                                          "not hold one") from None
                raise _CellUnreadable(f"cell {cell} could not be read") from None
            if cell["value"] is None and cell["data_type"] != "str" and element.find(FORMULA_TAG) is not None:
                self.unfilled.append(cell["column"])
            return cell

    return SheetParser


def _sheet_rows(wb, ws):
    """The rows of a worksheet of a workbook opened read-only, as ``ws.iter_rows(values_only=True)``
    gives them (from row 1, a missing row empty), read by :func:`_sheet_parser`: (row number,
    values, the 0-based positions of the cells that hold a formula without its result).
    Every row and cell the sheet holds, also beyond the dimension the sheet records (a
    script may record a wrong one; openpyxl would stop there without a word).

    openpyxl reads a sheet's XML only while its rows are iterated, so a damaged sheet (text
    in a cell marked as a number, a part cut short, a corrupt archive member) fails then,
    after the workbook opened: such failures, and only those of the parser, reject the file,
    naming the problem."""
    from zipfile import BadZipFile
    from zlib import error as ZlibError

    unreadable = f"not a valid Excel workbook (.xlsx): the sheet {ws.title!r} could not be read"
    max_col = ws.max_column
    expected = 1
    try:
        with ws._get_source() as src:
            parser = _sheet_parser()(src, ws._shared_strings, data_only=True, epoch=wb.epoch,
                                     date_formats=wb._date_formats, timedelta_formats=wb._timedelta_formats)
            for number, cells in parser.parse():
                if number < expected:  # a row number repeated or going back: openpyxl passes over it
                    continue
                for missing in range(expected, number):
                    yield missing, (), ()
                expected = number + 1
                width = max(max_col or 0, cells[-1]["column"] if cells else 0)
                row = [None] * width
                for cell in cells:
                    if cell["column"] <= width:
                        row[cell["column"] - 1] = cell["value"]
                yield number, row, tuple(column - 1 for column in parser.unfilled if column <= width)
    except _CellUnreadable as exc:
        raise FileRejected(f"{unreadable}: {exc}") from None
    except SyntaxError as exc:  # xml.etree's ParseError: the sheet's XML is not well-formed
        raise FileRejected(f"{unreadable}: its XML is not well-formed ({exc}): was the file cut short or damaged?"
                           ) from None
    except (BadZipFile, ZlibError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise FileRejected(f"{unreadable}: {type(exc).__name__}: {exc}") from None


def stage_xlsx(con, path: Path, contract: Contract, table: str, batch_rows: int = 50_000) -> Staged:
    import pyarrow as pa
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException
    from zipfile import BadZipFile

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except (BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        raise FileRejected(f"not a valid Excel workbook (.xlsx): {type(exc).__name__}: {exc}") from None
    except SyntaxError as exc:  # xml.etree's ParseError
        raise FileRejected(f"not a valid Excel workbook (.xlsx): a part of it is not well-formed XML ({exc}): was "
                           "the file cut short or damaged?") from None
    try:
        sheet_name = contract.xlsx.get("sheet")
        if sheet_name and sheet_name not in wb.sheetnames:
            raise FileRejected(f"the workbook has no sheet {sheet_name!r} (sheets: {', '.join(wb.sheetnames)})")
        if not wb.worksheets:
            raise FileRejected("the workbook has no sheet")
        ws = wb[sheet_name] if sheet_name else wb.worksheets[0]
        rows = _sheet_rows(wb, ws)
        _, header, _ = next(rows, (None, None, None))
        if not header or all(h is None for h in header):
            raise FileRejected("the sheet has no header row")
        headers = [str(h).strip() if h is not None else f"column_{i + 1}" for i, h in enumerate(header)]
        mapping, warnings = _map_headers(contract, headers, "column")
        read = {headers.index(h) for h in mapping.values()}  # the positions of the columns loaded
        left_out: list[tuple[int, str]] = []  # rows holding a formula without its result
        schema = pa.schema([(h, pa.string()) for h in headers])
        con.execute(f"create or replace temp table {table}_xlsx ({', '.join(chr(34) + h.replace(chr(34), chr(34) * 2) + chr(34) + ' varchar' for h in headers)})")
        buffer: list[list] = [[] for _ in headers]

        def flush():
            if buffer[0]:
                batch = pa.table([pa.array(c, pa.string()) for c in buffer], schema=schema)  # noqa: F841
                con.execute(f"insert into {table}_xlsx select * from batch")
                for c in buffer:
                    c.clear()

        # a data row's number is its sheet row less the header's; an empty row holds no row,
        # and keeps its number (the rows after it are numbered as the sheet shows them)
        empty: list[int] = []  # the empty rows before the last row that is not
        previous = 0  # the number of the last row that is not empty
        beyond = None  # the first cell holding a value in a column without a header
        for sheet_row, row, unfilled in rows:
            number = sheet_row - 1
            unfilled = [i for i in unfilled if i in read]
            if not unfilled and all(v is None for v in row):
                continue
            empty += range(previous + 1, number)
            previous = number
            if beyond is None and any(v is not None for v in row[len(headers):]):
                from openpyxl.utils import get_column_letter

                column = next(i for i in range(len(headers), len(row)) if row[i] is not None)
                beyond = f"{get_column_letter(column + 1)}{sheet_row}"
            if unfilled:
                left_out.append((number, _unfilled_formulas(sheet_row, [headers[i] for i in unfilled], unfilled)))
                continue
            for i in range(len(headers)):
                buffer[i].append(_cell_text(row[i]) if i < len(row) else None)
            if len(buffer[0]) >= batch_rows:
                flush()
        flush()
    finally:
        wb.close()
    if beyond is not None:  # as a column whose header is not in the contract
        warnings.append(f"values in columns beyond the header row (first: cell {beyond}) have no header and were ignored")
    malformed = _list_malformed(con, table, left_out) if left_out else None
    _stage_from(con, contract, mapping, f"select * from {table}_xlsx", table,
                set_aside=lambda: _numbered_around(con, table, malformed, empty))
    return _finish(con, table, mapping, warnings, malformed=malformed)


def _unfilled_formulas(sheet_row: int, headers: list[str], positions: list[int]) -> str:
    """The message of a workbook row whose cells (``positions``, under ``headers``) hold a
    formula without its result: the row cannot be read (its value is unknown, not empty)."""
    from openpyxl.utils import get_column_letter

    cells = ", ".join(f"{get_column_letter(i + 1)}{sheet_row}" for i in positions)
    columns = ", ".join(repr(h) for h in headers)
    held = (f"column {columns} (cell {cells}) holds a formula" if len(headers) == 1
            else f"columns {columns} (cells {cells}) hold formulas")
    return (f"sheet row {sheet_row}: {held} with no computed value (the workbook was saved by a program that does "
            "not compute formulas): open and save the workbook in Excel, or deliver values")


def _finish(con, table: str, mapping: dict[str, str], warnings: list[str], malformed: str | None = None) -> Staged:
    rows = con.execute(f"select count(*) from {table}").fetchone()[0]
    if malformed is not None:
        rows += con.execute(f"select count(*) from {malformed}").fetchone()[0]
    if rows == 0:
        raise FileRejected("the file has a header but no data rows")
    return Staged(table=table, rows=rows, header_map=mapping, warnings=warnings, malformed=malformed)


def stage_file(con, path: Path, contract: Contract, table: str = STAGED) -> Staged:
    """Stage a delivered file as text columns; raise FileRejected when it cannot be read."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise FileRejected("the file is empty (0 bytes)")
    if contract.format == "csv":
        with tempfile.TemporaryDirectory(prefix="jisr-") as tmp:
            return stage_csv(con, path, contract, table, Path(tmp))
    if contract.format == "jsonl":
        return stage_jsonl(con, path, contract, table)
    if contract.format == "xlsx":
        return stage_xlsx(con, path, contract, table)
    raise FileRejected(f"unsupported format {contract.format!r}")
