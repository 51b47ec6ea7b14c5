"""Ingestion: landing files -> contract checks -> pseudonymised raw layer.

For each delivered file (in contract dependency order, then batch order):

1. find its contract from the partner folder and file name; compute its content hash
   (a file with the content of the delivery in effect for its batch is a no-op, and so is
   a content rejected under this contract version, reported as not loaded; a file whose size, times, inode and device did not change since
   an earlier pass hashed it keeps that hash, unread);
2. stage it as text (``ingestion.readers``); a file that cannot be read, or that has far
   fewer rows than the delivery in effect for its batch it would replace
   (``contracts.VolumeRule``), is moved to ``rejected/<partner>/`` with a report, and the
   other files still load;
3. type every column in SQL and evaluate the row rules of the contract; each failing
   (row, rule) goes to ``quarantine.rows`` with the row's values (direct identifiers
   pseudonymised) and a message naming file, row and rule; so does a row the reader could
   not read (``malformed_row``, no values: a CSV row without the header's number of fields,
   a JSON line that is not one object, a workbook row with a formula saved without its result);
4. replace direct identifiers by keyed pseudonyms and append the valid rows to
   ``raw.<source>`` with lineage columns; apply the contract's supersede rule;
5. record the delivery in ``meta.deliveries`` where rows delivered = loaded + quarantined,
   and write the partner's feedback on the file name (``feedback/<partner>/``).

After the files, each pass checks the loaded rows of deliveries loaded under an earlier
version of their contract against it (``Ingestor._recheck``), then the rows held for
another row (``Ingestor._release``).

Each file is one transaction: a crash leaves the store as it was before that file.
Steps 2 and 3's typing run before the transaction, in temporary tables, and so do the
validators that only read the typed file (the Great Expectations suites start then, in
their worker process): the next files are staged and typed while the suites check the ones
before, whose transactions (checks against the raw store, quarantine, raw rows, supersede,
delivery log) follow, within a bound on the bytes staged ahead (``PREPARE_AHEAD_BYTES``).
Files are committed in load order, each after every earlier one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import uuid
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from glob import escape as glob_escape
from pathlib import Path
from typing import Callable, Iterable

from ingestion import pseudonymise, store
from ingestion.contracts import (DECIMAL_PLACES, FUTURE_MONTH, VOLUME_DROP, Contract, VolumeRule, batch_problem,
                                 contract_for, misplaced_files, not_a_delivery, referring_sources, seed_values)
from ingestion.readers import FileRejected, Staged, drop_staged, stage_file

# A validator receives (con, contract, typed_table, batch) and returns SQL producing
# (source_row, rule, column_name, message) for failing rows; extra validators (e.g. the
# Great Expectations suites) plug in here without ingestion importing them.
Validator = Callable[..., Iterable[tuple[int, str, str | None, str]]]

# How far the preparation of files runs ahead of their commits (Ingestor.ingest): each file
# staged holds its typed rows in memory until its commit, and so do the suites' worker
# processes for the files handed to them. Beyond the file being committed, the files staged
# hold at most this many delivered bytes (the next file is always prepared, whatever its size),
# on at most PREPARE_CONNECTIONS connections. A monthly delivery is mostly small files: its
# large ones are prepared while the first ones wait for the suites.
PREPARE_AHEAD_BYTES = 48 * 2**20
PREPARE_CONNECTIONS = 8


@dataclass
class FileResult:
    source: str | None
    partner: str
    file_name: str
    status: str  # loaded | rejected | duplicate
    delivery_id: str | None = None
    batch: str | None = None
    rows_delivered: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    rules_failed: dict[str, int] = field(default_factory=dict)
    report_path: str | None = None  # the partner's feedback on the file (its rejection report for a rejected one)
    repeats_rejected: bool = False  # a duplicate of a rejected delivery: not loaded (the refresh's report lists it)
    rows_released: int = 0  # rows of an earlier delivery loaded by this pass (see Ingestor._release)
    rows_set_aside: int = 0  # loaded rows of an earlier delivery this pass quarantined (see Ingestor._recheck)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class IngestSummary:
    run_id: str
    files: list[FileResult]
    files_hashed: int = 0  # files read to compute their content hash
    hashes_reused: int = 0  # files whose recorded hash was reused (attributes unchanged)
    released: list[FileResult] = field(default_factory=list)  # earlier deliveries whose held rows this pass loaded
    # earlier deliveries some of whose loaded rows fail their contract as it is now: quarantined by this pass
    rechecked: list[FileResult] = field(default_factory=list)
    # files gone from the landing area before they were read, and files where nothing reads them
    # (outside the partner folders: contracts.misplaced_files), left where they are
    skipped: list[str] = field(default_factory=list)

    def by_source(self) -> dict[str, list[FileResult]]:
        out: dict[str, list[FileResult]] = {}
        for f in self.files:
            out.setdefault(f.source or "(no contract)", []).append(f)
        return out

    @property
    def totals(self) -> dict[str, int]:
        return {
            "files_loaded": sum(f.status == "loaded" for f in self.files),
            "files_rejected": sum(f.status == "rejected" for f in self.files),
            "files_unchanged": sum(f.status == "duplicate" for f in self.files),
            "rows_delivered": sum(f.rows_delivered for f in self.files),
            "rows_loaded": sum(f.rows_loaded for f in self.files),
            "rows_quarantined": sum(f.rows_quarantined for f in self.files),
            "rows_released": sum(f.rows_released for f in self.released),
            "rows_set_aside": sum(f.rows_set_aside for f in self.rechecked),
            "files_skipped": len(self.skipped),
        }


class LandingFileGone(Exception):
    """A landing file found by discovery left the landing area (deleted, or renamed away)
    before it was read whole, or before its rejection could move it: nothing was loaded from
    it, nor recorded; the pass goes on with the other files. So does a file replaced at its
    path (another file renamed onto it, or its content rewritten) after it was read and
    before its rejection could move it (``replaced``): the file read is gone, and the one now
    there, never read, is left for the next pass."""

    def __init__(self, path: Path, replaced: bool = False):
        name = f"{path.parent.name}/{path.name}"
        super().__init__(
            f"{name} was replaced by another file after it was read, before its rejection could move it: "
            "nothing of the file read was recorded; the file now there is read by the next refresh" if replaced else
            f"{name} left the landing area (deleted or renamed) before it was read: "
            "nothing was loaded from it; it is read if it comes back")


def hash_file(path: Path) -> tuple[str, tuple | None]:
    """(SHA-256 of the file, its signature (:func:`file_signature`) if it did not change
    while it was read, else None). Both from one open handle: the attributes are those of
    the bytes hashed, even if the path is a link retargeted meanwhile."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        before = file_signature(os.fstat(fh.fileno()))
        while chunk := fh.read(1 << 20):
            h.update(chunk)
        after = file_signature(os.fstat(fh.fileno()))
    return h.hexdigest(), before if before == after else None


# A landing file keeps the content hash recorded for it (``meta.file_hashes``) while its
# size, modification and change times, inode and device are those it had when it was
# hashed, as git's index does. Writing to a file moves its change time, which no program
# can set (only a change of the system clock can move it back). A record is trusted only
# if the file had not changed for RACY_NS before the pass that hashed it started, by the
# clock of the landing area's file system (a file touched there when the pass starts;
# git's "racily clean" rule, with the index file's time as its clock): a write in the
# same tick as the recorded one would leave the times as they were, and a network file
# system's clock may differ from this machine's. Where that file cannot be written, or
# on Windows (whose ``st_ctime`` is the creation time), every file is hashed every pass.
# Without the record, every pass would read every file ever delivered again to learn that
# it is not new.
RACY_NS = 2_000_000_000
CLOCK_FILE = ".jisr-clock"  # in the landing directory; discovery and the sensor read <partner>/<file> only


def file_signature(st) -> tuple[int, int, int, int, int]:
    """The attributes of a file (``os.stat_result``) that a change of its content moves."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def landing_clock(landing_dir: Path) -> int | None:
    """The landing file system's time now (ns): the change time of a file touched there;
    None where it cannot be written (or on Windows)."""
    if os.name == "nt":
        return None
    mark = Path(landing_dir) / CLOCK_FILE
    try:
        mark.touch()  # sets its times to now, or creates it
        return mark.stat().st_ctime_ns
    except OSError:
        return None


def _utc(ns: int) -> datetime:
    """A time in ns since the epoch as a naive UTC datetime (the store's timestamps)."""
    return datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)


def _lit(value) -> str:
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


# With a decimal comma, a dot may only separate thousands, in groups of three digits
# (1.234.567,89); any other dot (200.00, 12.5) makes the value fail typing: read as a
# thousands separator it would load 100 times the amount the partner meant.
_GROUPED_BY_DOTS = r"[+-]?[1-9]\d{0,2}(\.\d{3})+(,\d*)?"
# What a numeric column's text may be once blanks are removed and a decimal comma read as a
# dot; anything else (0x10, inf, nan, 12.5 in a whole-number column, which a cast would round
# to 13) fails typing. A whole number may carry zero decimals (12.0: JSON numbers, workbooks).
_WHOLE_NUMBER = r"[+-]?\d+(\.0*)?"
_NUMBER = r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?"
# A number with at most two decimals that count (12, 12.5, 12.50, 12.500), no exponent
_TWO_PLACES = r"[+-]?(\d+(\.\d{0,2}0*)?|\.\d{1,2}0*)"


def _within_places(text: str) -> str:
    """SQL true when a number's text has at most ``DECIMAL_PLACES`` decimals that count. A
    third decimal (12.345, 50000000000.125) fails typing rather than being rounded into the
    DECIMAL column. A binary float's noise (1234.5600000000002, written by a workbook's
    arithmetic) is not a decimal the partner meant: a text of 16 significant digits or more
    (a float's repr; what a person types has fewer) within 1e-12 of its size of a
    two-decimal value is read as that value."""
    exact = f"try_cast({text} as DECIMAL(38,18))"
    value = f"try_cast({text} as double)"
    digits = f"length(ltrim(regexp_replace(regexp_replace({text}, '[eE].*', ''), '[^0-9]', '', 'g'), '0'))"
    return (f"case when {exact} = round({exact}, {DECIMAL_PLACES}) then true "
            f"when {digits} >= 16 then abs({value} - round({value}, {DECIMAL_PLACES})) "
            f"<= 1e-12 * greatest(abs({value}), 1) else false end")


def _numeric_text(expr: str, decimal: str) -> str:
    """SQL giving the numeric text of a column in the form DuckDB casts (blanks removed,
    decimal comma as a dot); NULL, so the row fails typing, when it breaks the contract's
    decimal convention."""
    cleaned = f"regexp_replace({expr}, '[\\s\u00a0\u202f]', '', 'g')"
    if decimal == ",":
        cleaned = (f"case when regexp_full_match({cleaned}, {_lit(_GROUPED_BY_DOTS)}) "
                   f"then replace(replace({cleaned}, '.', ''), ',', '.') "
                   f"when contains({cleaned}, '.') then null "
                   f"else replace({cleaned}, ',', '.') end")
    return cleaned


# A year of four digits, 0001 to 9999: DuckDB's %Y reads 1 to 4 digits (01/02/24 would load
# as the year 24) and a cast reads 'epoch', 'infinity' and five-digit years as dates.
_YEAR = r"(?:[1-9]\d{3}|0[1-9]\d{2}|00[1-9]\d|000[1-9])"
_DIRECTIVES = {"%d": r"\d{1,2}", "%m": r"\d{1,2}", "%Y": _YEAR, "%H": r"\d{1,2}", "%M": r"\d{1,2}", "%S": r"\d{1,2}"}
_SPACED = r"\s*(?:{})\s*"  # blanks around a date are read as DuckDB reads them: ignored
# ISO 8601 dates and times, as JSON, workbooks and databases write them
_ISO = _YEAR + r"-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"


def _format_shape(date_format: str) -> str | None:
    """The regular expression a value written in ``date_format`` matches (None: a directive
    this does not know, the format is then read without a shape)."""
    parts = re.split(r"(%.)", date_format)
    out = []
    for part in parts:
        if part.startswith("%") and len(part) == 2:
            if part not in _DIRECTIVES:
                return None
            out.append(_DIRECTIVES[part])
        else:
            out.append(re.escape(part))
    return "".join(out)


def _date_expr(x: str, date_format: str) -> str:
    """SQL reading a date written in the contract's format, or in ISO form; NULL for anything
    else (two-digit years, 'epoch', 'infinity', five-digit years)."""
    shape = _format_shape(date_format)
    by_format = f"try_strptime({x}, {_lit(date_format)})::date"
    if shape is not None:
        by_format = f"case when regexp_full_match({x}, {_lit(_SPACED.format(shape))}) then {by_format} end"
    return (f"coalesce({by_format}, case when regexp_full_match({x}, {_lit(_SPACED.format(_ISO))}) "
            f"then try_cast({x} as date) end)")


def typed_expr(contract: Contract, col) -> str:
    """SQL turning the staged text of a column into its contract type (NULL if unparseable)."""
    x = col.name
    if col.type == "varchar":
        return x
    if col.type in ("integer", "decimal", "double"):
        text = _numeric_text(x, contract.decimal)
        shape = _WHOLE_NUMBER if col.type == "integer" else _NUMBER
        if col.type == "decimal":  # most amounts have two decimals or fewer: one match, as for other numbers
            return (f"try_cast(case when regexp_full_match({text}, {_lit(_TWO_PLACES)}) then {text} "
                    f"when regexp_full_match({text}, {_lit(shape)}) and {_within_places(text)} then {text} end "
                    f"as {col.sql_type})")
        return f"try_cast(case when regexp_full_match({text}, {_lit(shape)}) then {text} end as {col.sql_type})"
    if col.type == "date":
        return _date_expr(x, contract.date_format)
    if col.type == "timestamp":
        return (f"case when regexp_full_match({x}, {_lit(_SPACED.format(_ISO))}) "
                f"then timezone('UTC', try_cast({x} as timestamptz)) end")
    if col.type == "boolean":
        return (
            f"case when lower({x}) in ('1', 'true', 'oui', 'o', 'yes', 'y', 'vrai') then true "
            f"when lower({x}) in ('0', 'false', 'non', 'n', 'no', 'faux') then false end"
        )
    raise ValueError(col.type)


def _stored(col, alias: str = "") -> str:
    """The typed table's column a raw column is loaded from, and references and keys compare:
    a direct identifier's pseudonym, any other column's typed value."""
    return f"{alias}{col.name}__key" if col.pii else f"{alias}{col.name}__typed"


def _raw_select(contract: Contract, alias: str = "") -> str:
    """The select list of a raw table's contract columns from a typed table."""
    return ", ".join(f"{_stored(c, alias)} as {c.raw_name}" for c in contract.columns)


def _raw_target(contract: Contract) -> str:
    """The column list of an insert into a raw table: contract columns, then lineage (a
    column added to the contract later sits after the lineage columns in the table)."""
    return ", ".join(contract.raw_columns)


def _violations_sql(contract: Contract, typed: str, seeds_dir: Path) -> str:
    """SQL listing (source_row, rule, column_name, message) for every failing rule."""
    parts = []

    def add(rule: str, column: str | None, predicate: str, message_sql: str) -> None:
        parts.append(
            f"select _source_row, {_lit(rule)} as rule, {_lit(column) if column else 'null'} as column_name, "
            f"{message_sql} as message from {typed} where {predicate}"
        )

    for col in contract.columns:
        n, t = col.name, f"{col.name}__typed"
        shown = "'(identifier withheld)'" if col.pii else f"'''' || {n} || ''''"
        if col.required:
            add(f"required:{n}", n, f"{n} is null", f"'column {n} is required but empty'")
        if col.type != "varchar":
            convention = ""  # the form the column takes, for the partner
            if col.type == "integer":
                convention = " (a whole number" + (", dots only between thousands: 1.234" if contract.decimal == "," else "") + ")"
            elif col.type == "decimal":
                convention = (" (decimal comma, dots only between thousands: 1.234,50; " if contract.decimal == ","
                              else " (") + f"at most {DECIMAL_PLACES} decimals)"
            elif col.type == "double" and contract.decimal == ",":
                convention = " (decimal comma, dots only between thousands: 1.234,50)"
            elif col.type == "date":
                convention = f" (written {contract.date_format} with a four-digit year, or yyyy-mm-dd)"
            elif col.type == "timestamp":
                convention = " (ISO 8601: yyyy-mm-dd hh:mm:ss, with a time zone or in UTC)"
            add(f"type:{n}", n, f"{n} is not null and {t} is null",
                f"'column {n} value ' || {shown} || ' is not a valid {col.type}{convention}'")
        if col.pattern:
            add(f"pattern:{n}", n, f"{n} is not null and not regexp_full_match({n}, {_lit(col.pattern)})",
                f"'column {n} value ' || {shown} || ' does not match the pattern {col.pattern.replace(chr(39), chr(39) * 2)}'")
        allowed = col.allowed or (seed_values(seeds_dir, col.allowed_from) if col.allowed_from else None)
        if allowed:
            listed = ", ".join(_lit(v) for v in allowed)
            label = col.allowed_from or ", ".join(allowed)
            add(f"allowed:{n}", n, f"{t} is not null and {t}::varchar not in ({listed})",
                f"'column {n} value ' || {shown} || ' is not one of: {label.replace(chr(39), chr(39) * 2)}'")
        for bound, op in (("min", "<"), ("max", ">")):
            value = getattr(col, bound)
            if value is not None:
                add(f"{bound}:{n}", n, f"{t} is not null and {t} {op} {_lit(value)}::{col.sql_type}",
                    f"'column {n} value ' || {t}::varchar || ' is {'below the minimum' if bound == 'min' else 'above the maximum'} {value}'")
    if contract.primary_key:
        keys = ", ".join(f"{k}__typed" for k in contract.primary_key)
        not_null = " and ".join(f"{k}__typed is not null" for k in contract.primary_key)
        parts.append(
            f"select _source_row, 'duplicate_key' as rule, {_lit(','.join(contract.primary_key))} as column_name, "
            f"'key (' || {_lit(', '.join(contract.primary_key))} || ') appears ' || n || ' times in the file' as message "
            f"from (select _source_row, count(*) over (partition by {keys}) as n from {typed} where {not_null}) where n > 1"
        )
    for rule in contract.rules:
        parts.append(
            f"select _source_row, {_lit('rule:' + rule.name)} as rule, null as column_name, "
            f"{_lit('rule ' + rule.name + ' failed: ' + (rule.description or rule.sql))} as message "
            f"from (select _source_row, _batch, {', '.join(f'{c.name}__typed as {c.name}' for c in contract.columns)} from {typed}) "
            f"where not coalesce(({rule.sql}), true)"
        )
    return " union all ".join(parts)


# The reasons a row is held for another row (a reference not loaded yet, a key current in
# another batch): checked again by every pass of its source (Ingestor._release), also on a row
# quarantined for other reasons too, whose ledger keeps only the reasons that still hold.
_WAITING_RULE = "(q.rule like 'references:%' or q.rule = 'key_in_other_batch')"


def _stored_rules_sql(contract: Contract, typed: str, seeds_dir: Path, typed_values: bool = False) -> str:
    """The contract's row rules (``_violations_sql``) that rows checked again from their stored
    values can be held to: not the rules that read a direct identifier (its clear value is not
    kept), nor duplicate_key (rows of several deliveries are checked together); with
    ``typed_values`` (the values are the typed ones of the raw table, not the delivered text),
    not the value types nor the patterns of columns other than text either."""
    skipped = ["duplicate_key", *(f"rule:{r.name}" for r in contract.rules if any(
        re.search(rf"\b{re.escape(c.name)}\b", r.sql, re.IGNORECASE) for c in contract.pii_columns))]
    if typed_values:
        skipped += [f"{kind}:{c.name}" for c in contract.columns for kind in ("type", "pattern")
                    if kind == "type" or c.type != "varchar"]
    identifiers = [c.name for c in contract.pii_columns] or [""]
    return (f"select * from ({_violations_sql(contract, typed, seeds_dir)}) "
            f"where rule not in ({', '.join(map(_lit, skipped))}) and (column_name is null "
            f"or column_name not in ({', '.join(map(_lit, identifiers))}))")


def _reference_message(col, target_source: str, target_col: str) -> str:
    """The message (SQL literal) of a row held for a reference not loaded (``references:<column>``)."""
    return _lit(f"column {col.name}: no {target_source} row loaded has this {target_col}; the row is loaded once one is")


def _reference_sql(contract: Contract, contracts: dict[str, Contract], typed: str) -> str:
    parts = []
    for col in contract.columns:
        if not col.references:
            continue
        target_source, target_col = col.references.split(".")
        target = contracts[target_source].column(target_col)
        mine = _stored(col)
        theirs = target.raw_name
        if col.pii and not target.pii:
            raise ValueError(f"{contract.source}.{col.name}: a direct identifier can only reference another identifier")
        parts.append(
            f"select _source_row, 'references:{col.name}' as rule, {_lit(col.name)} as column_name, "
            f"{_reference_message(col, target_source, target_col)} as message "
            f"from {typed} t where {mine} is not null and not exists "
            f"(select 1 from raw.{target_source} r where r._is_current and r.{theirs} = t.{mine})"
        )
    return " union all ".join(parts)


def _key_in_other_batch_sql(contract: Contract, typed: str) -> str:
    """``replace_batch`` sources: rows whose key is already current in another batch.

    A delivery of a batch replaces only the rows of its own batch, so such a key would be
    current twice (a payment id in two months' files): the warehouse's uniqueness tests
    would then stop every build until the partner corrects one of the files. The later row
    is quarantined instead, naming the batch that holds the key. Like a row with a broken
    reference, it is loaded by a later pass once its cause is gone (here, a delivery of the
    other batch without the key: see ``Ingestor._release``)."""
    if contract.supersede != "replace_batch" or not contract.primary_key:
        return ""
    columns = [contract.column(k) for k in contract.primary_key]
    mine = [_stored(c, "t.") for c in columns]
    match = " and ".join(f"r.{c.raw_name} = {m}" for c, m in zip(columns, mine))
    return (
        f"select t._source_row, 'key_in_other_batch' as rule, {_lit(','.join(contract.primary_key))} as column_name, "
        f"'key (' || {_lit(', '.join(contract.primary_key))} || ') is already loaded from batch ' || min(r._batch) "
        f"|| ': a key belongs to one batch; the row is loaded once a delivery of batch ' || min(r._batch) "
        f"|| ' no longer holds the key' as message "
        f"from {typed} t join raw.{contract.source} r on r._is_current and r._batch <> t._batch and {match} "
        f"group by t._source_row"
    )


# What each kind of rule means, for a partner's data steward (the summary of a delivery names
# the rule id, a key of the quarantine ledger, then this); {col} names the column (with the
# header the file used), {type} its type.
_RULE_TEXT = {
    "required": "a value of {col} is required but empty",
    "type": "a value of {col} is not a valid {type}",
    "pattern": "a value of {col} does not have the expected form",
    "allowed": "a value of {col} is not one of the allowed values",
    "min": "a value of {col} is below the minimum",
    "max": "a value of {col} is above the maximum",
    "references": "{col} refers to a row not loaded yet; the row loads on its own once that one is",
    "duplicate_key": "the key ({col}) appears more than once in the file",
    "key_in_other_batch": "the key ({col}) is already loaded from another month; the row loads on its own "
                          "once a delivery of that month no longer holds it",
    "malformed_row": "the row could not be read (not the header's number of fields, not one JSON object, or a "
                     "workbook formula saved without its computed value)",
}
# The Great Expectations suites' rules (gx:<expectation>:<column>); a typed column is empty
# both when the value is missing and when it is not of the column's type.
_GX_TEXT = {
    "expect_column_values_to_not_be_null": "a value of {col} is missing or not a valid {type}",
    "expect_column_values_to_be_between": "a value of {col} is outside the allowed range",
    "expect_column_values_to_be_in_set": "a value of {col} is not one of the allowed values",
    "expect_column_values_to_match_regex": "a value of {col} does not have the expected form",
    "expect_column_values_to_be_unique": "a value of {col} appears more than once",
}
HELD_RULES = ("references:", "key_in_other_batch")  # rules that hold a row only until another row arrives


def _rule_text(rule: str, contract: Contract, headers: dict[str, str] | None = None) -> str:
    """A plain description of a rule id of the quarantine ledger, naming the column with the
    header the file used (``headers``: contract column -> delivered header) or, without it,
    the header the contract asks for."""
    kind, _, rest = rule.partition(":")
    if kind == "gx":
        expectation, _, column = rest.partition(":")
        template = _GX_TEXT.get(expectation, f"a value of {{col}} fails the check {expectation}")
    elif kind == "rule":
        found = [r for r in contract.rules if r.name == rest]
        return f"the rule {rest}: {found[0].description or found[0].sql}" if found else f"the rule {rest}"
    else:
        template, column = _RULE_TEXT.get(kind, rule), rest
    if kind in ("duplicate_key", "key_in_other_batch") and not column:
        column = ",".join(contract.primary_key)  # the rule id names no column: the key's
    names = [n.removesuffix("__typed").removesuffix("__key") for n in column.split(",") if n]
    shown, types = [], []
    for name in names:
        try:
            col = contract.column(name)
        except KeyError:
            shown.append(name)
            continue
        types.append(col.type)
        delivered = (headers or {}).get(name) or col.header
        shown.append(name if delivered == name else f"{name} (header {delivered!r} in the file)")
    keyed = kind in ("duplicate_key", "key_in_other_batch")
    text = template.replace("{col}", ("" if keyed else "column ") + ", ".join(shown))
    return text.replace("{type}", types[0] if types else "value")


def _example_name(file_pattern: str) -> str:
    """A file name a contract's pattern matches, for a partner: the month as YYYY-MM, another
    batch as <batch> (``registre_YYYY-MM.csv``, ``<batch>_units.csv``)."""
    text = file_pattern.replace(r"(?P<batch>\d{4}-\d{2})", "YYYY-MM")
    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", text)
    return text.replace("\\", "")


def _rejection_report(headline: str, reason: str, content_hash: str, contract: Contract | None = None) -> str:
    """The partner's report on a file not loaded as a whole: what happened, the problem, the
    contract's format (when known), what to do."""
    expected = ""
    if contract is not None:
        expected = (f"Contract: {contract.title} ({contract.source}), expected format {contract.format}"
                    + (f", delimiter {contract.delimiter!r}, decimal {contract.decimal!r}, encoding {contract.encoding}"
                       if contract.format == "csv" else "") + ".\n")
    return (f"{headline}\n\nProblem: {reason}\n\n{expected}"
            "No row of this file was loaded. Please correct the file and deliver it again.\n"
            f"SHA-256 of the file: {content_hash}\n")


def _reports_on(out_dir: Path, file_name: str) -> list[Path]:
    """The rejection reports in a partner's feedback folder on a file name: the report on the
    name itself (a rejection, or a repeat of a rejected content: see Ingestor._repeat_rejected)
    and those on rejected deliveries of the name kept under a hashed name (see Ingestor._reject)."""
    name = Path(file_name)
    rejected = [f"{glob_escape(name.stem)}.{'[0-9a-f]' * 8}{again}{glob_escape(name.suffix)}.report.txt"
                for again in ("", "-*")]
    return [r for r in (out_dir / f"{name}.report.txt", *out_dir.glob(rejected[0]), *out_dir.glob(rejected[1]))
            if r.exists()]


def _insert_violations(con, found: Iterable[tuple[int, str, str | None, str]], table: str) -> None:
    """Add a validator's failing (source_row, rule, column_name, message) rows to
    the delivery's violations table in one insert (row by row costs seconds at national scale)."""
    import pyarrow as pa

    found = list(found)
    if not found:
        return
    rows, rules, columns, messages = zip(*found)
    validator_rows = pa.table({  # noqa: F841 (read by the SQL below)
        "_source_row": pa.array([int(r) for r in rows], pa.int64()),
        "rule": pa.array(rules, pa.string()),
        "column_name": pa.array(columns, pa.string()),
        "message": pa.array(messages, pa.string()),
    })
    con.execute(f"insert into {table} select _source_row, rule, column_name, message from validator_rows")


# The columns of the delivery log a new row gives, by name: a store whose columns were added
# later (store.DELIVERIES_ADDED) may not have them in this order.
_DELIVERY_COLUMNS = (
    "delivery_id, source, partner, file_name, batch, content_hash, size_bytes, received_at, loaded_at, run_id, "
    "status, rows_delivered, rows_loaded, rows_quarantined, reason, warnings, contract_version, code_version, "
    "superseded_by, modified_at, file_headers")


def _new_delivery_id(con, source: str, batch: str | None, content_hash: str) -> str:
    """The id of a new row of the delivery log: ``<source>-<batch>-<first 12 hex digits of the
    content hash>``, followed by ``-2``, ``-3``... when an earlier delivery holds it. The log
    keeps one row per file delivered, and several may share a content and a batch: rejected
    files alike (empty files under names no contract matches, the same file rejected again
    under a new version of its contract), a file rejected and then loaded under a corrected
    contract, a month that goes back to an earlier file (see ``Ingestor._duplicate_of``)."""
    base = f"{source}-{batch or 'none'}-{content_hash[:12]}"
    taken = {r[0] for r in con.execute(
        "select delivery_id from meta.deliveries where delivery_id = ? or starts_with(delivery_id, ?)",
        [base, base + "-"]).fetchall()}
    n, delivery_id = 1, base
    while delivery_id in taken:
        n += 1
        delivery_id = f"{base}-{n}"
    return delivery_id


def _rank_latest(con, contract: Contract, affected: str, new_delivery: str | None = None) -> None:
    """``latest_per_key``: make current the latest row of each key that ``affected`` (SQL on
    the raw table) selects, among the deliveries in effect and ``new_delivery`` (one not yet
    in the delivery log); only the rows whose flag changes are written (a new row that is
    the latest of its key is already current, and most rows of a monthly snapshot are)."""
    table = f"raw.{contract.source}"
    keys = ", ".join(contract.raw_primary_key)
    con.execute(
        f"""update {table} set _is_current = ranked.rn = 1 from (
                select rowid as rid, _is_current as was_current, row_number() over (
                    partition by {keys} order by _batch desc, _loaded_at desc, _source_row desc) as rn
                from {table}
                where _delivery_id in (select delivery_id from meta.deliveries where status = 'loaded'
                                       union all select ?)
                  and {affected}
            ) ranked where {table}.rowid = ranked.rid and ranked.was_current is distinct from (ranked.rn = 1)""",
        [new_delivery],
    )


@dataclass
class _Prepared:
    """A file read and typed into temporary tables, waiting to be committed."""

    path: Path
    partner: str
    contract: Contract | None
    batch: str | None
    content_hash: str
    now: datetime
    received_at: datetime | None = None  # when ingestion first saw the file (see Ingestor._content_hash)
    modified_at: datetime | None = None  # the file's modification time, as delivered
    slot: int | None = None  # the connection its temporary tables are on, while it has some
    size: int = 0  # the file's size when it was hashed
    signature: tuple | None = None  # its file_signature when it was hashed (see _reject)
    gone: bool = False  # the file left the landing area before it was read (see LandingFileGone)
    reject: str | None = None  # why the file is rejected (decided at commit, in order)
    staged: Staged | None = None
    validations: list = field(default_factory=list)  # one callable per validator -> failing rows

    @property
    def staged_name(self) -> str:
        return f"stg_delivery_{self.slot}"

    @property
    def typed(self) -> str:
        return f"typed_delivery_{self.slot}"

    @property
    def violations(self) -> str:
        return f"violations_delivery_{self.slot}"


def _start(validator, con, contract: Contract, typed: str, batch: str | None) -> Callable[[], Iterable]:
    """Start a validator on a typed delivery; the callable returned gives its failing rows.

    A validator with a ``submit`` method may work elsewhere meanwhile (the suites' worker
    process); any other runs when its rows are asked for, at commit.
    """
    submit = getattr(validator, "submit", None)
    if submit is not None:
        return submit(con, contract, typed, batch)
    return lambda: validator(con, contract, typed, batch)


class Ingestor:
    """Ingests the files of a landing area into the raw store."""

    def __init__(self, store_path: Path, contracts: dict[str, Contract], key: bytes, *, seeds_dir: Path,
                 rejected_dir: Path, feedback_dir: Path, run_id: str | None = None, code_version: str = "",
                 validators: Iterable[Validator] = (), volume: VolumeRule | None = None):
        self.store_path = Path(store_path)
        self.contracts = contracts
        self.key = key
        self.seeds_dir = Path(seeds_dir)
        self.rejected_dir = Path(rejected_dir)
        self.feedback_dir = Path(feedback_dir)
        self.run_id = run_id or uuid.uuid4().hex
        self.code_version = code_version
        self.validators = list(validators)
        self.volume = volume or VolumeRule()
        self._stopping = threading.Event()  # set when a pass fails or is interrupted (see ingest)
        # The connections of a pass (see ingest): the main one, the preparing thread's, then one
        # per file staged and not committed yet; which are free, the bytes each holds, and the
        # one of the file being committed (None when that file holds none).
        self._slots = threading.Condition()
        self._connections: list = []
        self._free: list[int] = []
        self._held: dict[int, int] = {}
        self._committing: int | None = None
        # Content hashes (see RACY_NS), written by the one preparing thread, read after it is done.
        self._known_hashes: dict[str, tuple] = {}  # path -> (signature, content hash, hashed_at_ns, first_seen_ns)
        self._new_hashes: list[tuple] = []  # rows for meta.file_hashes, written at the end of a pass
        self._hashes_reused = self._files_hashed = 0
        self._clock: int | None = None  # the landing file system's time when the pass started
        # The notes a pass wrote in the summary of a delivery in effect delivered again (see
        # _repeat_in_effect): delivery id -> {feedback file name: note}; a release in the same
        # pass rewrites that summary with them (see _release).
        self._notes: dict[str, dict[str, list[str]]] = {}

    # -- discovery -----------------------------------------------------------------------
    def discover(self, landing_dir: Path) -> list[tuple[Path, str, Contract | None, str | None]]:
        """Files of the landing area as (path, partner, contract, batch), in load order."""
        order = {source: i for i, source in enumerate(self.contracts)}
        found = []
        for path in sorted(Path(landing_dir).glob("*/*")):
            if not path.is_file() or not_a_delivery(path.name):
                continue
            partner = path.parent.name
            match = contract_for(self.contracts, partner, path.name)
            contract, batch = match if match else (None, None)
            found.append((path, partner, contract, batch))
        found.sort(key=lambda f: (order.get(f[2].source, -1) if f[2] else -1, f[3] or "", f[0].name))
        return found

    # -- main entry ----------------------------------------------------------------------
    def ingest(self, landing_dir: Path, sources: Iterable[str] | None = None) -> IngestSummary:
        """Ingest the files of the landing area, one transaction per file, in load order.

        Each file is first prepared (staged and typed in temporary tables, its validators
        started: nothing written to the store), then committed (the checks that read the
        raw store, the validators' results, quarantine, raw rows, supersede, delivery log).
        One thread prepares the files in load order, ahead of the commits, while the main
        thread commits them (DuckDB works outside Python's lock, so the two overlap on the
        cores, and a validator working in another process, the suites' worker, checks the
        files prepared meanwhile). A file staged waits for its commit on a connection of its
        own to the store, which keeps its temporary tables; the memos of pseudonyms are
        shared. The preparation stays at most ``PREPARE_AHEAD_BYTES`` delivered bytes (and
        ``PREPARE_CONNECTIONS`` - 1 files) ahead of the file being committed, and always
        prepares the next one. Commits stay in load order and each sees every earlier commit.
        """
        wanted = set(sources) if sources else None
        self._stopping.clear()
        self._new_hashes, remembered = [], False
        self._notes = {}
        con = store.connect(self.store_path)
        cons = [con]
        prepared_files: list[Future] = []  # in load order
        committed = 0
        # one preparing thread: files are prepared in load order, and it alone counts the hashes
        preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jisr-prepare")
        try:
            store.ensure_schema(con, self.contracts)
            store.check_key(con, pseudonymise.key_fingerprint(self.key))
            self._known_hashes = {r[0]: (tuple(r[1:6]), r[6], r[7], r[8]) for r in con.execute(
                "select path, size_bytes, mtime_ns, ctime_ns, inode, device, content_hash, hashed_at_ns, "
                "coalesce(first_seen_ns, hashed_at_ns) from meta.file_hashes").fetchall()}
            self._hashes_reused, self._files_hashed = 0, 0
            self._clock = landing_clock(Path(landing_dir))
            pseudonymise.install(con, self.key)
            for _ in range(PREPARE_CONNECTIONS + 1):  # the preparing thread's look-ups, then one per staged file
                other = con.cursor()  # another connection to the same database
                other.execute("set TimeZone = 'UTC'")
                pseudonymise.install(other, self.key, memos=False)
                cons.append(other)
            self._connections, self._held, self._free = cons, {}, list(range(len(cons) - 1, 1, -1))
            self._committing = None
            results, skipped = [], []
            try:
                for path, partner, contract, batch in self.discover(landing_dir):
                    if wanted is not None and (contract is None or contract.source not in wanted):
                        continue
                    prepared_files.append(preparer.submit(self._prepare, cons[1], path, partner, contract, batch))
                for future in prepared_files:
                    prepared = future.result()  # its error, if any, once every file before it is committed
                    committed += 1
                    self._commit_starts(prepared)
                    try:
                        results.append(self._commit(con, prepared))
                    except LandingFileGone as gone:
                        skipped.append(str(gone))
                        warnings.warn(str(gone), RuntimeWarning, stacklevel=2)
            except BaseException:
                self._stopping.set()  # the commit failed or the run is interrupted: stop the preparation
                with self._slots:
                    self._slots.notify_all()
                for future in prepared_files[committed:]:
                    future.cancel()
                with self._slots:
                    busy = [1, *self._held]  # the preparing thread's look-ups and the files staged
                for i in busy:
                    cons[i].interrupt()
                raise
            rechecked = self._recheck(con, wanted)  # first: a row it sets aside may have held another back
            released = [r for r in self._release(con, wanted) if r.rows_released]
            skipped += misplaced_files(Path(landing_dir))
            self._remember_hashes(con, Path(landing_dir))
            remembered = True
            return IngestSummary(run_id=self.run_id, files=results, skipped=skipped, files_hashed=self._files_hashed,
                                 hashes_reused=self._hashes_reused, released=released, rechecked=rechecked)
        finally:
            try:
                preparer.shutdown(wait=True)
                for future in prepared_files[committed:]:  # prepared and never committed: discarded
                    if future.cancelled():
                        continue
                    try:
                        prepared = future.result()
                    except BaseException:
                        continue  # the first error is the one to report; it discarded its tables
                    self._free_slot(prepared)
                if not remembered and self._new_hashes:
                    # a failed pass: the files it saw first were received then, whether or not
                    # it committed them (their delivery lag counts from that time)
                    self._remember_hashes(con, Path(landing_dir), quiet=True)
                pseudonymise.forget(con)
            finally:
                try:
                    for c in reversed(cons):
                        c.close()
                finally:
                    for validator in self.validators:
                        if hasattr(validator, "close"):  # e.g. worker processes of the suites
                            validator.close()

    def _take_slot(self, size: int) -> int:
        """(Preparing thread) A connection to stage a file of ``size`` bytes on, once the
        files staged beyond the one being committed leave room for it (none staged beyond it:
        this is the next file, staged whatever its size). The file being committed is the one
        :meth:`_commit_starts` named, whether or not it holds a connection: until then, the
        files staged all count (a file prepared waits a moment for the commit to start)."""
        with self._slots:
            while True:
                self._stop_if_asked()
                ahead = [held for slot, held in self._held.items() if slot != self._committing]
                if self._free and (not ahead or sum(ahead) + size <= PREPARE_AHEAD_BYTES):
                    slot = self._free.pop()
                    self._held[slot] = size
                    return slot
                self._slots.wait(0.5)

    def _commit_starts(self, prepared: _Prepared) -> None:
        """(Main thread) ``prepared`` is the file being committed now: the bytes it holds, if
        any, no longer count as staged ahead (see _take_slot)."""
        with self._slots:
            self._committing = prepared.slot
            self._slots.notify_all()

    def _free_slot(self, prepared: _Prepared) -> None:
        """Drop a prepared file's temporary tables and give its connection back."""
        if prepared.slot is None:
            return
        try:
            self._discard(self._connections[prepared.slot], prepared)
        finally:
            with self._slots:
                self._held.pop(prepared.slot, None)
                self._free.append(prepared.slot)
                if self._committing == prepared.slot:  # the connection may stage a later file
                    self._committing = None
                prepared.slot = None
                self._slots.notify_all()

    def _content_hash(self, path: Path) -> tuple[str, tuple | None, int | None]:
        """(SHA-256 of a landing file, its signature, when ingestion first saw it): the hash
        recorded for it if its attributes did not change since (see RACY_NS), else read from
        the file and kept for the next pass. The signature is None if the file changed while
        it was read. The file was first seen (ns, the landing file system's clock) when a pass
        first hashed this content at this path, or when this pass began; None without that
        clock (the pass then dates it by this machine's)."""
        name = f"{path.parent.name}/{path.name}"
        known = self._known_hashes.get(name)
        if known is not None and self._clock is not None:
            signature = file_signature(path.stat())
            if known[0] == signature and signature[2] < known[2] - RACY_NS:
                self._hashes_reused += 1
                return known[1], signature, known[3]
        content_hash, signature = hash_file(path)
        self._files_hashed += 1
        first_seen = known[3] if known is not None and known[1] == content_hash else self._clock
        if signature is not None and self._clock is not None:
            self._new_hashes.append((name, *signature, content_hash, self._clock, first_seen))
        return content_hash, signature, first_seen

    def _remember_hashes(self, con, landing_dir: Path, quiet: bool = False) -> None:
        """Record the hashes this pass computed (with when each file was first seen), and
        forget the files no longer in the landing area (rejected files are moved out of it).
        Only a cache: if it cannot be written, the next pass reads the files again (``quiet``:
        a failed pass, whose own error is the one to report)."""
        try:
            if self._new_hashes:
                con.executemany("insert or replace into meta.file_hashes values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                [list(row) for row in self._new_hashes])
            gone = [name for name in self._known_hashes.keys() | {row[0] for row in self._new_hashes}
                    if not (landing_dir / name).is_file()]
            if gone:
                con.execute(f"delete from meta.file_hashes where path in ({', '.join('?' * len(gone))})", gone)
        except Exception as exc:  # noqa: BLE001 - the pass itself succeeded
            if quiet:
                return
            warnings.warn(f"the content hashes of this pass were not recorded ({exc}): the next pass reads "
                          "the landing files again", RuntimeWarning, stacklevel=2)

    def _duplicate_of(self, con, contract: Contract, content_hash: str, batch: str | None,
                      file_name: str | None = None) -> tuple | None:
        """What makes a file with this content a no-op, as (delivery id, status, contract
        version, file name, loaded at, reason): the delivery in effect for its batch (same
        source and batch) if it has this content; else the latest delivery of the source with
        this content rejected under this version of the contract (whatever its batch: the
        content is not read again), unless it was rejected for its name (a month that is not
        a calendar month) and this file has another name. A content rejected under another
        version of the contract is read again under this one. A content delivered for another
        batch, or superseded since in this one (the partner goes back to an earlier file of the
        month), is a delivery of its own, as any new file of its batch is."""
        current = con.execute(
            "select delivery_id, status, contract_version, file_name, loaded_at, reason from meta.deliveries "
            "where source = ? and batch = ? and status = 'loaded' and content_hash = ?",
            [contract.source, batch, content_hash]).fetchone()
        if current is not None:
            return current
        rejected = con.execute(
            "select delivery_id, status, contract_version, file_name, loaded_at, reason, batch from meta.deliveries "
            "where source = ? and content_hash = ? and status = 'rejected' and contract_version = ? "
            "order by loaded_at desc limit 1",
            [contract.source, content_hash, contract.version]).fetchone()
        if rejected is None or (batch_problem(rejected[6]) and rejected[3] != file_name):
            return None
        if FUTURE_MONTH in (rejected[5] or "") and batch_problem(rejected[6], self._today()) is None:
            return None  # rejected for a month to come, which has begun since: read again
        if VOLUME_DROP in (rejected[5] or ""):
            return None  # rejected as much smaller than the delivery then in effect: compared again
        return rejected[:6]

    def _today(self) -> date:
        """The day of this pass (UTC): by the landing file system's clock when it started, else
        this machine's."""
        if self._clock is not None:
            return _utc(self._clock).date()
        return datetime.now(timezone.utc).date()

    def _prepare(self, con, path: Path, partner: str, contract: Contract | None, batch: str | None) -> _Prepared:
        """(Preparing thread) Read and type a file into temporary tables, on a connection of
        its own (:meth:`_take_slot`), and start its validators; nothing is written to the
        store. ``con`` is the thread's connection for look-ups. What can already be decided
        (no contract, same content as a delivery already loaded, an unreadable file, a file
        gone from the landing area since discovery: see LandingFileGone) is decided at
        commit, in load order."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        try:
            content_hash, signature, first_seen = self._content_hash(path)
            attributes = signature or file_signature(path.stat())
        except FileNotFoundError:  # gone since discovery: skipped (see LandingFileGone)
            return _Prepared(path, partner, contract, batch, "", now, gone=True)
        prepared = _Prepared(path, partner, contract, batch, content_hash, now,
                             received_at=_utc(first_seen) if first_seen is not None else now,
                             modified_at=_utc(attributes[1]), size=attributes[0], signature=attributes)
        if contract is None:
            known = ", ".join(sorted(_example_name(c.file_pattern) for c in self.contracts.values()
                                     if c.partner == partner))
            prepared.reject = (f"no contract matches file name {path.name!r} in partner folder {partner!r}"
                               + (f" (expected one of: {known})" if known else " (unknown partner folder)"))
            return prepared
        problem = batch_problem(batch, self._today())
        if problem is not None:
            prepared.reject = problem
            return prepared
        if self._duplicate_of(con, contract, content_hash, batch, path.name):
            return prepared  # the commit reports it
        prepared.slot = self._take_slot(signature[0] if signature else 0)
        con = self._connections[prepared.slot]
        try:
            try:
                prepared.staged = stage_file(con, path, contract, table=prepared.staged_name)
                now_signature = file_signature(path.stat())
            except Exception:
                if path.exists():
                    raise
                # gone while it was read (the reader's error, if any, is that): skipped, as
                # a file gone before; a file changed while it was read stops the pass below
                self._free_slot(prepared)
                prepared.gone, prepared.staged = True, None
                return prepared
            if signature is None or now_signature != signature:
                raise RuntimeError(
                    f"{path.parent.name}/{path.name} changed while it was being read (is the partner still "
                    "writing it? write a hidden name first, .name.csv, then rename it): nothing of this file "
                    "was loaded, the files before it are; the next refresh reads it again")
            in_effect = con.execute(
                "select delivery_id, file_name, rows_loaded, loaded_at from meta.deliveries "
                "where source = ? and batch = ? and status = 'loaded'", [contract.source, batch]).fetchone()
            problem = self.volume.problem(prepared.staged.rows, content_hash, batch, in_effect)
            if problem is not None:
                raise FileRejected(problem)
            self._stop_if_asked()
            self._type(con, prepared)
            self._stop_if_asked()
            prepared.validations = [_start(v, con, contract, prepared.typed, batch) for v in self.validators]
        except FileRejected as exc:
            self._free_slot(prepared)
            prepared.reject = exc.reason
        except BaseException:
            self._free_slot(prepared)
            raise
        return prepared

    def _stop_if_asked(self) -> None:
        """Between the statements of a prepare: the pass is failing or interrupted (an
        interrupt of the connection only stops the statement running)."""
        if self._stopping.is_set():
            raise RuntimeError("ingestion stopped: this file's preparation is abandoned")

    def _commit(self, con, prepared: _Prepared) -> FileResult:
        """(Main thread) Write a prepared file to the store, on the connection that holds its
        temporary tables if it has some, then its partner's feedback."""
        p = prepared
        if p.gone:
            raise LandingFileGone(p.path)
        main, con = con, self._connections[p.slot] if p.slot is not None else con
        try:
            # checked again: the file before, committed since this one was prepared, may have
            # had the same content (loaded, or rejected under the same contract version)
            previous = (self._duplicate_of(con, p.contract, p.content_hash, p.batch, p.path.name)
                        if p.contract is not None else None)
            if previous and previous[1] == "rejected":
                return self._repeat_rejected(p, previous)
            if previous:
                return self._repeat_in_effect(con, main, p, previous)
            if p.reject is not None:
                return self._reject(con, p)
            with store.transaction(con):
                result = self._load_staged(con, p)
        finally:
            self._free_slot(p)
        result.report_path = str(self._write_feedback(main, result, p.contract, headers=p.staged.header_map))
        return result

    def _discard(self, con, prepared: _Prepared) -> None:
        """Drop a prepared file's temporary tables (its validators' results are dropped with it)."""
        prepared.validations = []
        drop_staged(con, prepared.staged_name)
        for t in (prepared.typed, prepared.violations):
            con.execute(f"drop table if exists {t}")

    # -- the row path --------------------------------------------------------------------
    def _type(self, con, p: _Prepared) -> None:
        """The typed table: the staged text, each column typed, and the pseudonyms of the
        direct identifiers, taken from the run's memo of pseudonyms (each value hashed once
        per run). A collision raises here: nothing of this file is written, the files
        before it are committed, the pass stops."""
        contract = p.contract
        maps = [f"{p.typed}_pseudonyms_{i}" for i in range(len(contract.pii_columns))]
        try:
            for c, into in zip(contract.pii_columns, maps):
                try:
                    pseudonymise.pseudonym_map(con, c.pii, p.staged.table, c.name, into)
                except pseudonymise.PseudonymCollision as exc:
                    raise RuntimeError(
                        f"{p.path.name}: column {c.name}: {exc}, a pseudonym collision. Nothing was loaded from "
                        "this file; report this to the maintainers.") from None
            typed_cols = [f"{typed_expr(contract, c)} as {c.name}__typed" for c in contract.columns]
            key_cols = [f"_jisr_k{i}_key as {c.name}__key" for i, c in enumerate(contract.pii_columns)]
            joins = "".join(
                f" left join (select clear as _jisr_k{i}_clear, key as _jisr_k{i}_key from {into}) _jisr_k{i} "
                f"on _jisr_k{i}_clear = s.{c.name}"
                for i, (c, into) in enumerate(zip(contract.pii_columns, maps)))
            con.execute(
                f"create or replace temp table {p.typed} as select s.*, {_lit(p.batch)} as _batch, "
                f"{', '.join(typed_cols + key_cols)} from {p.staged.table} s{joins}"
            )
        finally:
            for into in maps:
                con.execute(f"drop table if exists {into}")

    def _load_staged(self, con, p: _Prepared) -> FileResult:
        path, partner, contract, batch, content_hash, now = p.path, p.partner, p.contract, p.batch, p.content_hash, p.now
        delivery_id = _new_delivery_id(con, contract.source, batch, content_hash)
        typed, violations_table, staged = p.typed, p.violations, p.staged
        violations = _violations_sql(contract, typed, self.seeds_dir)
        refs = _reference_sql(contract, self.contracts, typed)
        taken = _key_in_other_batch_sql(contract, typed)
        sql = " union all ".join(x for x in (violations, refs, taken) if x)
        con.execute(f"create or replace temp table {violations_table} as {sql}")
        for finish in p.validations:
            _insert_violations(con, finish(), violations_table)
        if staged.malformed:  # rows the reader could not read (no values: their fields are unknown)
            con.execute(f"insert into {violations_table} select _source_row, 'malformed_row', null, message "
                        f"from {staged.malformed}")

        values = ", ".join(
            f"{_lit(c.raw_name)}, t.{c.name}__key" if c.pii else f"{_lit(c.name)}, t.{c.name}" for c in contract.columns
        )
        con.execute(
            "insert into quarantine.rows select ?, ?, ?, ?, v._source_row, v.rule, v.column_name, "
            "? || ', row ' || v._source_row || ': ' || v.message, "
            f"case when t._source_row is not null then to_json(json_object({values}))::varchar end, ?, ?, null "
            f"from {violations_table} v left join {typed} t on t._source_row = v._source_row "
            "order by v._source_row, v.rule",
            [delivery_id, contract.source, path.name, content_hash, path.name, self.run_id, now],
        )
        con.execute(
            f"insert into raw.{contract.source} ({_raw_target(contract)}) select {_raw_select(contract)}, ?, _batch, ?, ?, _source_row, ?, ?, true "
            f"from {typed} where _source_row not in (select _source_row from {violations_table}) "
            "order by _source_row",
            [delivery_id, path.name, content_hash, now, self.run_id],
        )
        loaded = con.execute(f"select count(*) from raw.{contract.source} where _delivery_id = ?", [delivery_id]).fetchone()[0]
        quarantined = con.execute(f"select count(distinct _source_row) from {violations_table}").fetchone()[0]
        if loaded + quarantined != staged.rows:
            raise RuntimeError(
                f"{path.name}: row accounting failed ({staged.rows} delivered, {loaded} loaded, {quarantined} quarantined)"
            )
        rules = dict(con.execute(f"select rule, count(*) from {violations_table} group by rule order by rule").fetchall())
        warnings = list(staged.warnings)
        same = con.execute(  # a file delivered again under another batch's name, unchanged: say so
            "select delivery_id, file_name, batch from meta.deliveries where source = ? and content_hash = ? "
            "and batch is distinct from ? and status <> 'rejected' order by status = 'loaded' desc, loaded_at desc "
            "limit 1", [contract.source, content_hash, batch]).fetchone()
        if same is not None:
            warnings.append(f"the file has the same content as {same[1]}, delivered for batch {same[2]} (delivery "
                            f"{same[0]}); it is loaded as the delivery of batch {batch}: if it was not meant for "
                            f"{batch}, deliver the right file under the same name")
        self._supersede(con, contract, batch, delivery_id)
        con.execute(
            f"insert into meta.deliveries ({_DELIVERY_COLUMNS}) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'loaded', ?, ?, ?, null, ?, ?, ?, null, ?, ?)",
            [delivery_id, contract.source, partner, path.name, batch, content_hash, p.size,
             p.received_at, now, self.run_id, staged.rows, loaded, quarantined, "\n".join(warnings) or None,
             contract.version, self.code_version, p.modified_at, json.dumps(staged.header_map, ensure_ascii=False)],
        )
        return FileResult(contract.source, partner, path.name, "loaded", delivery_id, batch, staged.rows, loaded,
                          quarantined, warnings=warnings, rules_failed=rules)

    def _supersede(self, con, contract: Contract, batch: str, delivery_id: str) -> None:
        """Apply the contract's supersede rule after a delivery's rows were appended; the
        files of the batch rejected since the delivery it replaces are answered by it
        (``superseded_by``: the delivery that took effect for their batch after them)."""
        table = f"raw.{contract.source}"
        older = [r[0] for r in con.execute(
            "select delivery_id from meta.deliveries where source = ? and batch = ? and status = 'loaded'",
            [contract.source, batch]).fetchall()]
        if older:
            # A new delivery of the same batch replaces the earlier one as a whole.
            con.execute(
                "update meta.deliveries set status = 'superseded', superseded_by = ? "
                f"where delivery_id in ({', '.join('?' * len(older))})", [delivery_id, *older])
            con.execute(f"update {table} set _is_current = false where _delivery_id in ({', '.join('?' * len(older))})", older)
            con.execute(
                "update quarantine.rows set resolved_by_delivery = ? where resolved_by_delivery is null "
                f"and delivery_id in ({', '.join('?' * len(older))})", [delivery_id, *older])
        if contract.supersede == "latest_per_key":
            keys = ", ".join(contract.raw_primary_key)
            affected = f"({keys}) in (select {keys} from {table} where _delivery_id = {_lit(delivery_id)})"
            if older:
                affected = (f"({affected} or ({keys}) in (select {keys} from {table} where _delivery_id in "
                            f"({', '.join(_lit(o) for o in older)})))")
            _rank_latest(con, contract, affected, delivery_id)
        # (rejected after the last delivery loaded for the batch: an older one was answered by
        # that delivery, though a log written before superseded_by was set for them may not say so)
        con.execute("update meta.deliveries set superseded_by = ? where source = ? and batch = ? "
                    "and status = 'rejected' and superseded_by is null and loaded_at > coalesce(("
                    "select max(loaded_at) from meta.deliveries where source = ? and batch = ? "
                    "and status <> 'rejected' and delivery_id <> ?), '-infinity'::timestamp)",
                    [delivery_id, contract.source, batch, contract.source, batch, delivery_id])

    # -- rows held back by other rows ----------------------------------------------------
    def _release(self, con, wanted: set[str] | None) -> list[FileResult]:
        """Load the quarantined rows whose only problems were other rows, once they are gone: a
        reference not loaded yet (``references:<column>``; partners deliver on their own
        rhythms, and a loan may arrive before its borrower's registry record) or a key current
        in another batch (``key_in_other_batch``). Run at the end of every pass, for the sources
        it selects, in dependency order, one transaction each. The rows are checked again from
        the values the quarantine kept: those two checks, and the contract's row rules as they
        are today if the delivery was loaded under another contract or code version (not the
        rules on a direct identifier, whose clear value is not kept, nor the Great Expectations
        suites); a row released joins its delivery (still in effect), with
        this pass's ``_loaded_at`` and ``_run_id``. A reason that no longer holds is resolved by
        the row's own delivery (cleared); one that holds is opened again, updated or added (a
        key another held row, released now, took). A row quarantined for another reason too (a
        duplicate key, a value of the wrong type) is never released, but its reasons of those
        two kinds are checked again all the same, so that its ledger does not depend on the
        order the deliveries arrived in; the delivery's counts and its partner's
        feedback follow (with the note this pass wrote in it, if its file was delivered again:
        see _repeat_in_effect)."""
        results = []
        for contract in self.contracts.values():
            if wanted is not None and contract.source not in wanted:
                continue
            if contract.supersede != "replace_batch" and not any(c.references for c in contract.columns):
                continue
            try:
                with store.transaction(con):
                    released = self._release_source(con, contract)
            finally:
                con.execute("drop view if exists release_recheck")
                for t in ("release_held", "release_text", "release_typed", "release_reasons", "release_free",
                          "release_now"):
                    con.execute(f"drop table if exists {t}")
            for delivery_id, n in released:
                notes = self._notes.get(delivery_id, {})  # written this pass: kept
                result = self._rewrite_feedback(con, contract, delivery_id, n, notes=notes)
                for name in notes:  # the note on another name of the same content
                    if name != result.file_name:
                        self._rewrite_feedback(con, contract, delivery_id, n, feedback_name=name, notes=notes)
                results.append(result)
        return results

    def _release_source(self, con, contract: Contract) -> list[tuple[str, int]]:
        """Check the held rows of one source again (see _release): [(delivery id, rows
        released)] for each delivery whose held rows were released or now have other reasons."""
        con.execute(
            "create or replace temp table release_held as "
            "select q.delivery_id, q.source_row, any_value(q.values_json) as values_json, any_value(d.batch) as batch, "
            "any_value(d.contract_version is distinct from ? or d.code_version is distinct from ?) as recheck, "
            f"bool_and({_WAITING_RULE}) as releasable "
            "from quarantine.rows q join meta.deliveries d on d.delivery_id = q.delivery_id and d.status = 'loaded' "
            "where q.source = ? and q.resolved_by_delivery is null group by q.delivery_id, q.source_row "
            f"having bool_or({_WAITING_RULE})",
            [contract.version, self.code_version, contract.source])
        if not con.execute("select count(*) from release_held").fetchone()[0]:
            return []
        # the typed table as _type builds it, from the kept values: a direct identifier only as
        # its pseudonym (its clear value, never kept, is null here)
        text = [f"json_extract(values_json, {_lit('$.' + c.raw_name)})::bigint as {c.name}__key, "
                f"null::varchar as {c.name}" if c.pii
                else f"json_extract_string(values_json, {_lit('$.' + c.name)}) as {c.name}" for c in contract.columns]
        con.execute(
            "create temp table release_text as select row_number() over (order by delivery_id, source_row) "
            f"as _source_row, delivery_id as _held_delivery, source_row as _held_row, batch as _batch, recheck, releasable, "
            f"{', '.join(text)} from release_held")
        typed = [f"{'null::' + c.sql_type if c.pii else typed_expr(contract, c)} as {c.name}__typed"
                 for c in contract.columns]
        con.execute(f"create temp table release_typed as select *, {', '.join(typed)} from release_text")
        # The reasons that hold now, (row, rule, column, message) as at loading: the references
        # and keys, and, for a delivery loaded under another contract or code version (its
        # rules, its seeds), the contract's row rules as they are today; not the rules that read
        # a direct identifier (its clear value is not kept) nor duplicate_key (rows of several
        # deliveries are checked together here).
        con.execute("create temp view release_recheck as select * from release_typed where recheck")
        rules = (_stored_rules_sql(contract, "release_recheck", self.seeds_dir)
                 if con.execute("select count(*) from release_recheck").fetchone()[0] else "")
        still = " union all ".join(x for x in (rules, _reference_sql(contract, self.contracts, "release_typed"),
                                               _key_in_other_batch_sql(contract, "release_typed")) if x)
        con.execute(f"create temp table release_reasons as {still}")
        con.execute("create temp table release_free as select _source_row from release_typed "
                    "where releasable and _source_row not in (select _source_row from release_reasons)")
        key = [_stored(c) for c in map(contract.column, contract.primary_key)]
        if contract.supersede == "replace_batch" and key:
            # two free rows of one key from two batches: the first batch's goes, as at loading; the
            # others get key_in_other_batch below, once it is loaded
            con.execute(
                "delete from release_free where _source_row in (select _source_row from (select _source_row, "
                f"row_number() over (partition by {', '.join(key)} order by _batch, _held_delivery, _held_row) as n "
                "from release_typed where _source_row in (select _source_row from release_free)) where n > 1)")
        released = con.execute(
            "select _held_delivery, count(*) from release_typed where _source_row in (select _source_row from "
            "release_free) group by 1 order by 1").fetchall()
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if released:
            con.execute(
                f"insert into raw.{contract.source} ({_raw_target(contract)}) select {_raw_select(contract, 't.')}, t._held_delivery, t._batch, d.file_name, "
                "d.content_hash, t._held_row, ?, ?, true from release_typed t "
                "join meta.deliveries d on d.delivery_id = t._held_delivery "
                "where t._source_row in (select _source_row from release_free) order by t._held_delivery, t._held_row",
                [now, self.run_id])
            for delivery_id, n in released:
                con.execute("update meta.deliveries set rows_loaded = rows_loaded + ?, "
                            "rows_quarantined = rows_quarantined - ? where delivery_id = ?", [n, n, delivery_id])
            if contract.supersede == "latest_per_key":
                raw_key = ", ".join(contract.raw_primary_key)
                _rank_latest(con, contract, f"({raw_key}) in (select {raw_key} from raw.{contract.source} "
                                            f"where _run_id = {_lit(self.run_id)} and _loaded_at = {_lit(str(now))})")
            # the rows left behind by one released now: their key is now in another batch
            waiting = _key_in_other_batch_sql(contract, "release_typed")
            if waiting:
                con.execute(f"insert into release_reasons select * from ({waiting}) where _source_row not in "
                            "(select _source_row from release_reasons union all select _source_row from release_free)")
        # The ledger follows (one row per delivery, row and rule): a reason that no longer holds
        # is cleared (resolved by the row's own delivery), all of a released row's; one that
        # holds is opened again if it was cleared, its message updated if it changed (a key now
        # in another batch), added if it is new.
        con.execute(
            "create temp table release_now as select t._held_delivery as delivery_id, t._held_row as source_row, "
            "r.rule, r.column_name, d.file_name || ', row ' || t._held_row || ': ' || r.message as message "
            "from release_reasons r join release_typed t using (_source_row) "
            "join meta.deliveries d on d.delivery_id = t._held_delivery "
            f"where t.releasable or {_WAITING_RULE.replace('q.rule', 'r.rule')}")
        held = "(q.delivery_id, q.source_row) in (select delivery_id, source_row from release_held)"
        same = "n.delivery_id = q.delivery_id and n.source_row = q.source_row and n.rule = q.rule"
        cleared = con.execute(
            "update quarantine.rows q set resolved_by_delivery = q.delivery_id where q.resolved_by_delivery is null "
            f"and {held} and {_WAITING_RULE} and not exists (select 1 from release_now n where {same}) returning q.delivery_id").fetchall()
        changed = con.execute(
            "update quarantine.rows q set resolved_by_delivery = null, message = n.message from release_now n "
            f"where {same} and (q.resolved_by_delivery = q.delivery_id or q.message <> n.message) "
            "returning q.delivery_id").fetchall()
        added = con.execute(
            "insert into quarantine.rows select n.delivery_id, ?, d.file_name, d.content_hash, n.source_row, n.rule, "
            "n.column_name, n.message, h.values_json, ?, ?, null from release_now n "
            "join release_held h using (delivery_id, source_row) join meta.deliveries d using (delivery_id) "
            "where not exists (select 1 from quarantine.rows q where "
            f"{same}) returning delivery_id", [contract.source, self.run_id, now]).fetchall()
        counts = dict(released)
        return [(d, counts.get(d, 0)) for d in sorted({d for d, in cleared + changed + added} | set(counts))]

    # -- rows loaded under an earlier version of their contract ---------------------------
    def _recheck(self, con, wanted: set[str] | None) -> list[FileResult]:
        """Check the loaded rows of the deliveries in effect that were loaded under another
        version of their contract against its rules as they are now, once per delivery and
        contract version (``meta.rechecks``): a rule added after bad rows were loaded (an
        amount ten times what falls due) would otherwise stop only the next files, and the
        rows already loaded would stay in every table built on them. A row that fails is moved
        to quarantine, as if it had failed at loading (the ledger names the rule, and that it
        was checked again), its delivery's counts and its partner's feedback follow; a
        ``latest_per_key`` row that was current gives way to the key's latest row left. The
        rules checked are those the stored values allow, as for held rows (see _release): the
        contract's row rules, required values, code lists, ranges, patterns of text columns;
        not the value types (the rows are stored typed), duplicate keys, the rules on a direct
        identifier (its clear value is not kept), nor the Great Expectations suites. A row of
        another source that referred to a row set aside, and to no other current row, is held
        for it as at loading (see _hold_dangling). Runs at the end of every pass, before the
        release of held rows, in one transaction (a crash never leaves rows referring to rows
        set aside), for the sources it selects whose referring sources it selects too (a run of
        some sources leaves the others' to a run that selects them)."""
        referrers = referring_sources(self.contracts)
        done, lost = [], set()  # sources that lost loaded rows in this pass (contracts come in dependency order)
        try:
            with store.transaction(con):
                for contract in self.contracts.values():
                    if wanted is not None and contract.source not in wanted:
                        continue
                    deliveries = [] if wanted is not None and not referrers[contract.source] <= wanted else [
                        r[0] for r in con.execute(
                            "select delivery_id from meta.deliveries d where source = ? and status = 'loaded' "
                            "and contract_version is distinct from ? and not exists (select 1 from meta.rechecks r "
                            "where r.delivery_id = d.delivery_id and r.contract_version = ?) order by delivery_id",
                            [contract.source, contract.version, contract.version]).fetchall()]
                    # a row set aside may have been the only one of its key that rows of this source refer to
                    dangling = [c for c in contract.columns if c.references and c.references.split(".")[0] in lost]
                    if not deliveries and not dangling:
                        continue
                    moved = self._recheck_source(con, contract, deliveries) if deliveries else []
                    if dangling:
                        moved = self._hold_dangling(con, contract, dangling, moved)
                    for t in ("recheck_typed", "recheck_failed"):
                        con.execute(f"drop table if exists {t}")
                    if moved:
                        lost.add(contract.source)
                        done.append((contract, moved))
        finally:
            for t in ("recheck_typed", "recheck_failed", "recheck_keys"):
                con.execute(f"drop table if exists {t}")
        results = []
        for contract, moved in done:
            for delivery_id, n in moved:
                notes = self._notes.get(delivery_id, {})  # written this pass (a file delivered again): kept
                result = self._rewrite_feedback(con, contract, delivery_id, notes=notes)
                for name in notes:  # the note on another name of the same content
                    if name != result.file_name:
                        self._rewrite_feedback(con, contract, delivery_id, feedback_name=name, notes=notes)
                result.rows_set_aside = n
                results.append(result)
        return results

    def _recheck_source(self, con, contract: Contract, deliveries: list[str]) -> list[tuple[str, int]]:
        """See _recheck: [(delivery id, rows moved to quarantine)] for the deliveries that lost rows."""
        table = f"raw.{contract.source}"
        ids = ", ".join(_lit(d) for d in deliveries)
        # the typed table as _type builds it, from the stored values: a direct identifier only
        # as its pseudonym, a text column's value as its text
        columns = [f"{c.raw_name} as {c.name}__key, null::varchar as {c.name}, null::{c.sql_type} as {c.name}__typed"
                   if c.pii else f"{c.raw_name}::varchar as {c.name}, {c.raw_name} as {c.name}__typed"
                   for c in contract.columns]
        con.execute(
            "create or replace temp table recheck_typed as select row_number() over (order by _delivery_id, "
            "_source_row) as _source_row, _delivery_id as _held_delivery, _source_row as _held_row, _batch, "
            f"{', '.join(columns)} from {table} where _delivery_id in ({ids})")
        rules = _stored_rules_sql(contract, "recheck_typed", self.seeds_dir, typed_values=True)
        values = ", ".join(f"{_lit(c.raw_name)}, t.{c.name}__key" if c.pii else f"{_lit(c.name)}, t.{c.name}"
                           for c in contract.columns)
        con.execute(
            "create temp table recheck_failed as select t._held_delivery, t._held_row, v.rule, v.column_name, "
            f"v.message, to_json(json_object({values}))::varchar as values_json from ({rules}) v "
            "join recheck_typed t using (_source_row)")
        # a column required now that the delivery's file did not have (added to the contract
        # since): no value was delivered to judge; the files delivered from now on must have it
        con.execute(
            "delete from recheck_failed f where f.rule like 'required:%' and not exists (select 1 from "
            "meta.deliveries d where d.delivery_id = f._held_delivery and (d.file_headers is null or "
            "list_contains(json_keys(d.file_headers), substr(f.rule, 10))))")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        moved = self._quarantine_loaded(con, contract, now, note=(
            f" (checked again under version {contract.version} of the contract: the row had been loaded "
            "under an earlier version)"))
        counts = dict(moved)
        con.executemany("insert into meta.rechecks values (?, ?, ?, ?, ?)",
                        [[d, contract.version, self.run_id, now, counts.get(d, 0)] for d in deliveries])
        return moved

    def _quarantine_loaded(self, con, contract: Contract, now: datetime, note: str = "") -> list[tuple[str, int]]:
        """Move the loaded rows listed in the temporary table ``recheck_failed`` (_held_delivery,
        _held_row, rule, column_name, message, values_json) to quarantine, their message
        followed by ``note``: deleted from the raw table, the latest row left of a
        ``latest_per_key`` key made current, the rows left of a ``replace_batch`` delivery
        loaded anew (the incremental facts rebuild a period whose rows come from a load they
        do not hold: dbt macro changed_periods), and the deliveries' counts. Returns [(delivery
        id, rows moved)]."""
        table = f"raw.{contract.source}"
        moved = con.execute("select _held_delivery, count(distinct _held_row) from recheck_failed group by 1 "
                            "order by 1").fetchall()
        if not moved:
            return []
        con.execute(
            "insert into quarantine.rows select f._held_delivery, ?, d.file_name, d.content_hash, f._held_row, "
            "f.rule, f.column_name, d.file_name || ', row ' || f._held_row || ': ' || f.message || ?, "
            "f.values_json, ?, ?, null from recheck_failed f join meta.deliveries d on d.delivery_id = f._held_delivery "
            "order by f._held_delivery, f._held_row, f.rule", [contract.source, note, self.run_id, now])
        keys = ", ".join(contract.raw_primary_key)
        if contract.supersede == "latest_per_key" and keys:
            con.execute(f"create or replace temp table recheck_keys as select distinct {keys} from {table} "
                        "where (_delivery_id, _source_row) in (select _held_delivery, _held_row from recheck_failed)")
        con.execute(f"delete from {table} where (_delivery_id, _source_row) in "
                    "(select _held_delivery, _held_row from recheck_failed)")
        if contract.supersede == "latest_per_key" and keys:
            _rank_latest(con, contract, f"({keys}) in (select {keys} from recheck_keys)")
            con.execute("drop table recheck_keys")
        else:
            con.execute(f"update {table} set _loaded_at = ?, _run_id = ? where _delivery_id in "
                        "(select distinct _held_delivery from recheck_failed)", [now, self.run_id])
        for delivery_id, n in moved:
            con.execute("update meta.deliveries set rows_loaded = rows_loaded - ?, "
                        "rows_quarantined = rows_quarantined + ? where delivery_id = ?", [n, n, delivery_id])
        return moved

    def _hold_dangling(self, con, contract: Contract, columns: list, moved: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """See _recheck: the loaded rows of ``contract`` whose reference (``columns``) no longer
        has a current row, the row it referred to having been set aside by this pass, are held
        for it as at loading (``references:<column>``, released by a later pass once such a row
        is loaded: see _release), and their deliveries follow as for the rows set aside. Their
        values are kept as _release reads them back (a number in the file's decimal
        convention). Returns ``moved`` with these rows added."""
        table = f"raw.{contract.source}"
        parts = []
        for col in columns:
            target_source, target_col = col.references.split(".")
            target = self.contracts[target_source].column(target_col)
            parts.append(
                f"select r._delivery_id as _held_delivery, r._source_row as _held_row, 'references:{col.name}' as rule, "
                f"{_lit(col.name)} as column_name, {_reference_message(col, target_source, target_col)} as message "
                f"from {table} r "
                "where r._delivery_id in (select delivery_id from meta.deliveries where status = 'loaded') "
                f"and r.{col.raw_name} is not null and not exists (select 1 from raw.{target_source} t "
                f"where t._is_current and t.{target.raw_name} = r.{col.raw_name})")

        def text(c) -> str:  # the stored value as _release types it again (typed_expr)
            if c.type in ("integer", "decimal", "double") and contract.decimal == ",":
                return f"replace(r.{c.raw_name}::varchar, '.', ',')"
            return f"r.{c.raw_name}::varchar"

        values = ", ".join(f"{_lit(c.raw_name)}, r.{c.raw_name}" if c.pii else f"{_lit(c.name)}, {text(c)}"
                           for c in contract.columns)
        con.execute(
            "create or replace temp table recheck_failed as select f.*, "
            f"to_json(json_object({values}))::varchar as values_json from ({' union all '.join(parts)}) f "
            f"join {table} r on r._delivery_id = f._held_delivery and r._source_row = f._held_row")
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        # the message as at loading: the release, which checks the reason again in this pass, keeps it
        held = self._quarantine_loaded(con, contract, now)
        for delivery_id, n in held:
            con.execute(  # the refresh's report lists them with the rows set aside
                "insert into meta.rechecks values (?, ?, ?, ?, ?) on conflict do update set "
                "rows_quarantined = excluded.rows_quarantined + case when run_id = excluded.run_id "
                "then rows_quarantined else 0 end, run_id = excluded.run_id, "
                "checked_at = excluded.checked_at", [delivery_id, contract.version, self.run_id, now, n])
        counts = dict(moved)
        for delivery_id, n in held:
            counts[delivery_id] = counts.get(delivery_id, 0) + n
        return sorted(counts.items())

    def _rewrite_feedback(self, con, contract: Contract, delivery_id: str, released: int = 0, *,
                          feedback_name: str | None = None, notes: dict[str, list[str]] | None = None,
                          replace_reports: bool = False) -> FileResult:
        """A delivery some of whose held rows were released, or whose file was delivered again
        (see _repeat_in_effect): its result now, its feedback rewritten (on ``feedback_name``,
        by default the delivery's file name, with the note ``notes`` holds for that name, if
        any, after its counts)."""
        partner, file_name, batch, delivered, loaded, quarantined, warnings, headers = con.execute(
            "select partner, file_name, batch, rows_delivered, rows_loaded, rows_quarantined, warnings, file_headers "
            "from meta.deliveries where delivery_id = ?", [delivery_id]).fetchone()
        rules = dict(con.execute(
            "select rule, count(*) from quarantine.rows where delivery_id = ? and resolved_by_delivery is null "
            "group by rule order by rule", [delivery_id]).fetchall())
        result = FileResult(contract.source, partner, feedback_name or file_name, "loaded", delivery_id, batch, delivered,
                            loaded, quarantined, warnings=warnings.split("\n") if warnings else [],
                            rules_failed=rules, rows_released=released)
        result.report_path = str(self._write_feedback(  # the headers the file used, as its first feedback
            con, result, contract, replace_reports=replace_reports, note=(notes or {}).get(result.file_name, ()),
            headers=json.loads(headers) if headers else None))
        return result

    # -- rejection and feedback ----------------------------------------------------------
    def _reject(self, con, p: _Prepared) -> FileResult:
        path, partner, contract, batch, content_hash, reason, now = (
            p.path, p.partner, p.contract, p.batch, p.content_hash, p.reject, p.now)
        source = contract.source if contract else None
        target_dir = self.rejected_dir / partner
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        if target.exists():
            target = target_dir / f"{path.stem}.{content_hash[:8]}{path.suffix}"
        n = 1
        while target.exists():  # the same name and content rejected again: every file is kept
            n += 1
            target = target_dir / f"{path.stem}.{content_hash[:8]}-{n}{path.suffix}"
        self._move_rejected(p, target)
        report = target.with_name(target.name + ".report.txt")
        report.write_text(_rejection_report(
            f"Jisr rejected the file {path.name} (partner {partner}) on {now:%Y-%m-%d %H:%M} UTC.", reason,
            content_hash, contract), encoding="utf-8")
        delivery_id = _new_delivery_id(con, source or "unknown", batch, content_hash)
        con.execute(
            f"insert into meta.deliveries ({_DELIVERY_COLUMNS}) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'rejected', null, 0, 0, ?, null, ?, ?, null, ?, null)",
            [delivery_id, source or "unknown", partner, path.name, batch, content_hash, p.size,
             p.received_at, now, self.run_id, reason, contract.version if contract else None, self.code_version,
             p.modified_at],
        )
        feedback = self.feedback_dir / partner
        feedback.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report, feedback / report.name)
        return FileResult(source, partner, path.name, "rejected", delivery_id, batch, reason=reason,
                          report_path=str(report))

    @staticmethod
    def _move_rejected(p: _Prepared, target: Path) -> None:
        """Move a rejected file out of the landing area, if it still is the file read: one
        gone since is skipped, and so is one replaced at its path (the partner put the
        corrected file in its place before this commit; its size, times, inode or device are
        not those hashed): the file there is left for the next pass, which reads it afresh,
        as a file that comes back (see LandingFileGone). A file replaced while it is moved
        is put back."""
        path = p.path
        try:
            now = file_signature(path.stat())
        except FileNotFoundError:
            raise LandingFileGone(path) from None
        if p.signature is not None and now != p.signature:
            raise LandingFileGone(path, replaced=True)
        try:
            shutil.move(str(path), target)
        except FileNotFoundError:
            if path.exists():
                raise
            raise LandingFileGone(path) from None
        moved = file_signature(target.stat())
        if p.signature is not None and moved[4] == p.signature[4] and (  # renamed, not copied: same file system
                moved[:2], moved[3]) != (p.signature[:2], p.signature[3]):  # (a rename moves the change time)
            if not path.exists():
                os.rename(target, path)
            raise LandingFileGone(path, replaced=True)

    def _repeat_rejected(self, p: _Prepared, previous: tuple) -> FileResult:
        """A file with the content of a delivery rejected under this version of the contract:
        not read again, left in the landing area; its outcome is reported (the refresh's
        report and the partner's feedback on the file name), as it is on every pass that
        finds it there."""
        delivery_id, _, _, file_name, rejected_at, reason = previous
        result = FileResult(p.contract.source, p.partner, p.path.name, "duplicate", delivery_id, p.batch,
                            reason=f"same content as rejected delivery {delivery_id} ({file_name}, rejected on "
                                   f"{rejected_at:%Y-%m-%d %H:%M} UTC), not loaded; the problem: {reason}",
                            repeats_rejected=True)
        out_dir = self.feedback_dir / p.partner
        out_dir.mkdir(parents=True, exist_ok=True)
        report = out_dir / f"{p.path.name}.report.txt"
        earlier = (f"it is the file Jisr rejected on {rejected_at:%Y-%m-%d %H:%M} UTC, unchanged"
                   if file_name == p.path.name else
                   f"it has the same content as the file {file_name}, which Jisr rejected on "
                   f"{rejected_at:%Y-%m-%d %H:%M} UTC")
        report.write_text(_rejection_report(
            f"Jisr did not load the file {p.path.name} (partner {p.partner}): {earlier} (delivery {delivery_id}).",
            reason, p.content_hash), encoding="utf-8")
        result.report_path = str(report)
        return result

    def _repeat_in_effect(self, con, main, p: _Prepared, previous: tuple) -> FileResult:
        """A file with the content of the delivery in effect for its batch: nothing to do,
        silently, unless the partner was told since that a file was not loaded. That is, a
        file of the batch was rejected since the delivery in effect and before this file
        arrived (A, then B rejected, then A again), or the partner's feedback on this file's
        name is a rejection report (B, rejected whenever, delivered again under the name,
        then A: a repeat of a rejected content is reported, not recorded in the log, see
        _repeat_rejected). Then the partner is told, once: the feedback on the file name is
        the summary of the delivery in effect, saying the file is identical to it, in place
        of the rejection reports; and the delivery log records each rejected delivery not
        answered yet as answered by the one in effect (``superseded_by``, as a later file
        loaded for the batch does: see _supersede)."""
        delivery_id, _, _, file_name, loaded_at, _ = previous
        result = FileResult(p.contract.source, p.partner, p.path.name, "duplicate", delivery_id, p.batch,
                            reason=f"same content as delivery {delivery_id}, in effect for batch {p.batch}: "
                                   "nothing to do")
        since = con.execute(
            "select delivery_id, file_name, loaded_at from meta.deliveries where source = ? and batch = ? "
            "and status = 'rejected' and superseded_by is null and loaded_at > ? "
            "and coalesce(received_at, loaded_at) < ? order by loaded_at, delivery_id",
            [p.contract.source, p.batch, loaded_at, p.received_at]).fetchall()
        reported = _reports_on(self.feedback_dir / p.partner, p.path.name)
        if not since and not reported:
            return result
        if since:
            with store.transaction(con):
                con.execute(f"update meta.deliveries set superseded_by = ? where delivery_id in "
                            f"({', '.join('?' * len(since))})", [delivery_id, *(r[0] for r in since)])
        else:  # repeats of rejected deliveries: those of the batch the delivery in effect answered
            since = con.execute(
                "select delivery_id, file_name, loaded_at from meta.deliveries where source = ? and batch = ? "
                "and status = 'rejected' and superseded_by = ? order by loaded_at, delivery_id",
                [p.contract.source, p.batch, delivery_id]).fetchall()
        rejected = "; ".join(f"{name}, delivery {d}, rejected on {at:%Y-%m-%d %H:%M} UTC" for d, name, at in since)
        what = (f"The file{'s' if len(since) > 1 else ''} rejected since ({rejected}) did not replace it."
                if since else "The file not loaded since under this name did not replace it.")
        result.reason += (f" (the file{'s' if len(since) > 1 else ''} rejected since did not replace it: {rejected})"
                          if since else " (the file not loaded since under this name did not replace it)")
        note = [f"The file {p.path.name} delivered again on {p.received_at:%Y-%m-%d %H:%M} UTC is identical to this "
                f"delivery, still in effect for {p.batch}: nothing was loaded again, and nothing needs to be done."
                + ("" if file_name == p.path.name else f" (This delivery was the file {file_name}.)"), what, ""]
        notes = self._notes.setdefault(delivery_id, {})
        notes[p.path.name] = note
        written = self._rewrite_feedback(main, p.contract, delivery_id, feedback_name=p.path.name, notes=notes,
                                         replace_reports=True)
        result.report_path = written.report_path
        return result

    def _write_feedback(self, con, result: FileResult, contract: Contract, replace_reports: bool = True,
                        headers: dict[str, str] | None = None, note: Iterable[str] = ()) -> Path:
        """The partner's feedback on a loaded delivery, for its data steward: a summary (with
        ``note``, lines on what became of the file, after its counts), and the rejected rows
        with reasons if any row is still set aside. A new delivery's replaces whatever
        feedback the file name had (an earlier delivery's rows, a rejection report), and so
        does the delivery in effect when its file is delivered again after a rejection; a
        rewrite after rows were released (``replace_reports`` false) keeps the reports on
        later deliveries of the name that were rejected."""
        out_dir = self.feedback_dir / result.partner
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = out_dir / f"{result.file_name}.rejected_rows.csv"
        for stale in _reports_on(out_dir, result.file_name) if replace_reports else []:
            stale.unlink(missing_ok=True)  # reports on rejected deliveries of this name (see _reject)
        lines = [
            f"Delivery {result.file_name} ({contract.title}), delivery id {result.delivery_id}",
            f"Rows delivered: {result.rows_delivered}; loaded: {result.rows_loaded}; quarantined: {result.rows_quarantined}.",
            "",
            *note,
        ]
        released = con.execute(
            "select count(distinct source_row) from quarantine.rows where delivery_id = ? and resolved_by_delivery = "
            "delivery_id and source_row not in (select source_row from quarantine.rows where delivery_id = ? and "
            "resolved_by_delivery is null)", [result.delivery_id, result.delivery_id]).fetchone()[0]
        if released:
            lines += [f"Of the rows set aside at first, {released} were loaded later, once the rows they depend on "
                      "(a reference, a key in another batch) were loaded; they are counted as loaded.", ""]
        if not result.rows_quarantined:
            csv_path.unlink(missing_ok=True)  # an earlier delivery's
            lines.append("No row is set aside any more." if released else "All rows were loaded: no row was set aside.")
        else:
            con.execute(
                f"copy (select source_row, rule, column_name, message from quarantine.rows where delivery_id = "
                f"{_lit(result.delivery_id)} and resolved_by_delivery is null order by source_row, rule) "
                f"to {_lit(str(csv_path))} (header, delimiter ',')"
            )
            held = con.execute(  # rows held only until another row arrives: they load on their own
                "select count(*) from (select source_row from quarantine.rows where delivery_id = ? and "
                "resolved_by_delivery is null group by source_row having bool_and(" + " or ".join(
                    f"starts_with(rule, {_lit(r)})" for r in HELD_RULES) + "))", [result.delivery_id]).fetchone()[0]
            lines += [
                "Rows were set aside for these reasons (rule: rows, then what it means):",
                *[f"  {rule}: {n} ({_rule_text(rule, contract, headers)})" for rule, n in result.rules_failed.items()],
                "",
                f"The rows, with their row number in the file (as a spreadsheet shows it, less the header row), "
                f"are listed in {csv_path.name}.",
            ]
            if held:
                lines += [f"Of these rows, {held} only wait for other rows (a reference not loaded yet, a key another "
                          "month holds): they load on their own once those rows are loaded, with no new file."]
            if held < result.rows_quarantined:
                lines += ["Correct them and deliver the whole file again under the same name pattern and period: the new",
                          "delivery replaces this one."]
            lines += [
                "(A row can break several rules, and the contract's rules and its Great Expectations suite",
                "check most of them both: the reasons can add up to more than the rows set aside.)",
            ]
        if result.warnings:
            lines += ["", "Warnings (the file was loaded; please check):", *[f"  {w}" for w in result.warnings]]
        summary = out_dir / f"{result.file_name}.summary.txt"
        summary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return summary


def to_json(summary: IngestSummary) -> str:
    return json.dumps({"run_id": summary.run_id, "totals": summary.totals,
                       "files": [f.as_dict() for f in summary.files], "skipped": summary.skipped,
                       "released": [f.as_dict() for f in summary.released]}, indent=2, default=str)
