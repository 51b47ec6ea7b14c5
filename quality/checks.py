"""Audit checks over a warehouse about to be published (plain Python, no Dagster).

Every check takes a DuckDB connection on which a warehouse's schemas are the default
catalog and the raw store is attached read-only as ``ingest`` (see
:func:`connect_for_audit`), and returns :class:`CheckResult` objects. The checks of
``WAREHOUSE_CHECKS`` (references, reconciliation) read the build warehouse, internal schema
``detail`` included; the others read the file about to be published (schemas ``marts`` and
``impact``) or the raw store. The same functions run as Dagster asset checks
(``orchestration/checks.py``) and inside the publish step (``jisr/publish.py``), which
re-runs every check the run did not already evaluate, so a gate cannot be skipped by
materialising the publish step alone.

Severities (block or warn) come from ``config/quality.yml``, where every check is
documented.
"""

from __future__ import annotations

import calendar
import fnmatch
import json
import re
import statistics
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import duckdb

from quality.config import (FRESHNESS, MONTHLY_VOLUME, NO_IDENTIFIERS, NO_PERSON_LEVEL, NO_SMALL_CELLS,
                            REFERENCES_RESOLVE, ROW_COUNTS, SUITE_VALIDATED, TOTALS_RECONCILE, QualityConfig)

MONTH = re.compile(r"^\d{4}-\d{2}$")


@dataclass
class CheckResult:
    check: str
    passed: bool
    severity: str  # block | warn
    description: str
    target: str | None = None  # table (schema.table) or source the result is about; None: the warehouse
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        """A failure that must stop publication."""
        return not self.passed and self.severity == "block"

    @property
    def label(self) -> str:
        return self.check + (f" [{self.target}]" if self.target else "")

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


class ChecksFailed(RuntimeError):
    """Blocking checks failed; the message names each of them."""

    def __init__(self, failures: list[CheckResult], what: str = "publication"):
        self.failures = failures
        names = "; ".join(f"{f.label}: {f.description}" for f in failures)
        super().__init__(f"{len(failures)} blocking check(s) failed, {what} refused: {names}")


def blocking_failures(results: Iterable[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.blocks]


# --- connections ----------------------------------------------------------------------------
def connect_for_audit(warehouse: Path, store: Path | None, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection on a warehouse file with the raw store attached read-only as ``ingest``."""
    con = duckdb.connect(str(warehouse), read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    attach_store(con, store)
    return con


def attach_store(con, store: Path | None) -> bool:
    attached = {r[0] for r in con.execute("select database_name from duckdb_databases()").fetchall()}
    if "ingest" in attached:
        return True
    if store is None or not Path(store).exists():
        return False
    con.execute(f"attach '{_sql_str(str(store))}' as ingest (read_only)")
    return True


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _qualified(name: str) -> str:
    """``schema.table`` quoted part by part."""
    return ".".join(_ident(part) for part in name.split("."))


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _has_store(con) -> bool:
    return bool(con.execute("select count(*) from duckdb_databases() where database_name = 'ingest'").fetchone()[0])


def _store_table_exists(con, schema: str, table: str) -> bool:
    return bool(con.execute(
        "select count(*) from duckdb_tables() where database_name = 'ingest' and schema_name = ? and table_name = ?",
        [schema, table]).fetchone()[0])


def published_tables(con, schemas: Iterable[str]) -> list[tuple[str, str]]:
    """(schema, table) of every table and view of the given schemas in the main catalog."""
    schemas = list(schemas)
    if not schemas:
        return []
    marks = ", ".join("?" * len(schemas))
    return [tuple(r) for r in con.execute(
        f"select schema_name, table_name from duckdb_tables() where database_name = current_database() "
        f"and schema_name in ({marks}) union select schema_name, view_name from duckdb_views() "
        f"where database_name = current_database() and schema_name in ({marks}) and not internal order by 1, 2",
        schemas + schemas).fetchall()]


def table_row_counts(con, schemas: Iterable[str]) -> dict[str, int]:
    return {f"{s}.{t}": con.execute(f"select count(*) from {_ident(s)}.{_ident(t)}").fetchone()[0]
            for s, t in published_tables(con, schemas)}


def _columns(con, schema: str, table: str) -> list[tuple[str, str]]:
    return [tuple(r) for r in con.execute(
        "select column_name, data_type from duckdb_columns() where database_name = current_database() "
        "and schema_name = ? and table_name = ? order by column_index", [schema, table]).fetchall()]


# --- referential integrity ------------------------------------------------------------------
def check_references(con, cfg: QualityConfig, skip: Iterable[str] = ()) -> list[CheckResult]:
    """Every key of a fact table (``fct_*``) that names a dimension key resolves to that dimension.

    Facts and dimensions are looked up in the schemas of ``cfg.reference_schemas`` (the
    check's ``schemas`` in config/quality.yml): a published fact may reference an internal
    dimension and the other way round. Facts named in ``skip`` (``schema.table``) are not
    checked (they were already)."""
    params = cfg.params(REFERENCES_RESOLVE)
    severity = params["severity"]
    dims: dict[str, list[str]] = params.get("dimensions") or {}
    ignore = set(params.get("ignore") or ())
    schemas = list(cfg.reference_schemas)
    tables = published_tables(con, schemas)
    where: dict[str, str] = {}  # table -> its schema (the first of `schemas` holding it)
    for s, t in sorted(tables, key=lambda st: schemas.index(st[0])):
        where.setdefault(t, s)
    keys: dict[str, str] = {}  # column -> "schema.dimension" holding it as a key
    for dim, columns in dims.items():
        if dim in where:
            for column in columns:
                keys.setdefault(column, f"{where[dim]}.{dim}")
    results = []
    skip = set(skip)
    for schema, table in sorted(tables):
        name = f"{schema}.{table}"
        if not table.startswith("fct_") or name in skip:
            continue
        checked, orphans = [], {}
        for column, _ in _columns(con, schema, table):
            dim = keys.get(column)
            if dim is None or f"{name}.{column}" in ignore:
                continue
            count, examples = con.execute(
                f"select count(*), list(distinct f.{_ident(column)}::varchar)[1:5] from {_ident(schema)}.{_ident(table)} f "
                f"where f.{_ident(column)} is not null and not exists (select 1 from {_qualified(dim)} d "
                f"where d.{_ident(column)} = f.{_ident(column)})").fetchone()
            checked.append(f"{column} -> {dim}")
            if count:
                orphans[f"{column} -> {dim}.{column}"] = {"rows": count, "examples": examples}
        if not checked:
            continue
        desc = (f"{name}: every reference resolves ({', '.join(checked)})" if not orphans else
                f"{name}: " + "; ".join(f"{v['rows']} row(s) with {k} missing from the dimension"
                                        for k, v in orphans.items()))
        results.append(CheckResult(REFERENCES_RESOLVE, not orphans, severity, desc, name,
                                   {"references": checked, "orphans": orphans}))
    return results


# --- reconciliation -------------------------------------------------------------------------
def check_reconciliation(con, cfg: QualityConfig, skip: Iterable[str] = ()) -> list[CheckResult]:
    """Totals of the raw layer (current rows) equal the totals of the marts (except the
    reconciliations of the tables named in ``skip``, ``schema.table``: already checked)."""
    params = cfg.params(TOTALS_RECONCILE)
    severity = params["severity"]
    results = []
    store = _has_store(con)
    skip = set(skip)
    for rec in params.get("reconciliations") or ():
        name, table = rec["name"], rec.get("table")
        target = (table if "." in table else f"marts.{table}") if table else None
        if target is not None and target in skip:
            continue
        if not store:
            results.append(CheckResult(TOTALS_RECONCILE, False, severity,
                                       f"{name}: the raw store is not available, nothing to reconcile against",
                                       target, {"reconciliation": name}))
            continue
        try:
            raw_value = con.execute(rec["raw"]).fetchone()[0]
            mart_value = con.execute(rec["mart"]).fetchone()[0]
        except duckdb.Error as exc:
            results.append(CheckResult(TOTALS_RECONCILE, False, severity,
                                       f"{name}: could not be computed ({str(exc).splitlines()[0]})", target,
                                       {"reconciliation": name, "raw_sql": rec["raw"], "mart_sql": rec["mart"]}))
            continue
        raw_f = float(raw_value or 0)
        mart_f = float(mart_value or 0)
        diff = mart_f - raw_f
        tolerance = float(rec.get("tolerance", 0))
        passed = abs(diff) <= tolerance
        desc = (f"{name}: raw {raw_f:,.2f} = warehouse {mart_f:,.2f}" if passed else
                f"{name}: raw {raw_f:,.2f} but warehouse {mart_f:,.2f} (difference {diff:+,.2f}, "
                f"tolerance {tolerance})")
        results.append(CheckResult(TOTALS_RECONCILE, passed, severity, desc, target,
                                   {"reconciliation": name, "raw": raw_f, "marts": mart_f, "difference": diff,
                                    "tolerance": tolerance, "about": rec.get("description", "")}))
    return results


# --- row counts vs the last publication -----------------------------------------------------
def previous_row_counts(serving_path: Path) -> tuple[str | None, dict[str, int] | None]:
    """(run id, {schema.table: rows}) of the warehouse currently published, or (None, None)."""
    serving_path = Path(serving_path)
    if not serving_path.exists():
        return None, None
    con = duckdb.connect(str(serving_path), read_only=True)
    try:
        has_log = con.execute("select count(*) from duckdb_tables() where schema_name = 'meta' "
                              "and table_name = 'publish_log'").fetchone()[0]
        if has_log:
            row = con.execute("select run_id, table_row_counts from meta.publish_log "
                              "order by published_at desc limit 1").fetchone()
            if row and row[1]:
                return row[0], {k: int(v) for k, v in json.loads(row[1]).items()}
        schemas = [r[0] for r in con.execute("select distinct schema_name from duckdb_tables() "
                                             "where schema_name != 'meta'").fetchall()]
        return None, table_row_counts(con, schemas)
    finally:
        con.close()


def check_row_counts(current: dict[str, int], previous: dict[str, int] | None, cfg: QualityConfig,
                     previous_run: str | None = None) -> list[CheckResult]:
    """No published table lost more than ``max_drop_share`` of its rows since the last publication."""
    params = cfg.params(ROW_COUNTS)
    severity = params["severity"]
    share = float(params.get("max_drop_share", 0.2))
    min_rows = int(params.get("min_rows", 0))
    withdrawn = set(params.get("withdrawn") or ())
    if previous is None:
        return [CheckResult(ROW_COUNTS, True, severity, "no warehouse was published before: nothing to compare",
                            None, {"tables": len(current)})]
    problems, rows = [], []
    for table, before in sorted(previous.items()):
        now = current.get(table)
        if now is None and table in withdrawn:
            rows.append([table, before, None, None])  # deliberately no longer published
            continue
        if now is None:
            problems.append(f"{table} disappeared ({before} rows before)")
            rows.append([table, before, None, None])
            continue
        drop = (before - now) / before if before else 0.0
        rows.append([table, before, now, round(-drop, 4)])
        if before >= min_rows and drop > share:
            problems.append(f"{table} dropped from {before} to {now} rows ({drop:.0%} > {share:.0%})")
    for table in sorted(set(current) - set(previous)):
        rows.append([table, None, current[table], None])
    desc = ("row counts within tolerance of the last publication" + (f" (run {previous_run})" if previous_run else "")
            if not problems else "; ".join(problems))
    return [CheckResult(ROW_COUNTS, not problems, severity, desc, None,
                        {"max_drop_share": share, "previous_run": previous_run, "problems": problems,
                         "tables": rows})]


# --- freshness ------------------------------------------------------------------------------
def _month_end(batch: str) -> date:
    year, month = int(batch[:4]), int(batch[5:7])
    return date(year, month, calendar.monthrange(year, month)[1])


def check_freshness(con, cfg: QualityConfig, contracts: dict, today: date | None = None) -> list[CheckResult]:
    """Each source's last delivered month is at most ``max_age_days`` old (one result per source).

    Age is the number of days between the end of the source's last delivered month and the
    reference: the end of the newest month any source delivered (``latest_batch``) or today
    (``now``).
    """
    params = cfg.params(FRESHNESS)
    severity = params["severity"]
    exclude = set(params.get("exclude") or ())
    default_age = int(params.get("max_age_days", 45))
    by_partner = params.get("max_age_days_by_partner") or {}
    if not _has_store(con) or not _store_table_exists(con, "meta", "deliveries"):
        return [CheckResult(FRESHNESS, False, severity, f"{c.source}: no delivery recorded (no raw store)", c.source,
                            {"partner": c.partner}) for c in contracts.values() if c.source not in exclude]
    latest = dict(con.execute(
        "select source, max(batch) from ingest.meta.deliveries where status in ('loaded', 'superseded') "
        "and regexp_full_match(batch, '\\d{4}-(0[1-9]|1[0-2])') group by source").fetchall())
    if params.get("reference", "latest_batch") == "now":
        reference, ref_label = today or datetime.now(timezone.utc).date(), "today"
    else:
        newest = max(latest.values(), default=None)
        reference = _month_end(newest) if newest else None
        ref_label = f"the newest delivered month ({newest})"
    results = []
    for contract in contracts.values():
        if contract.source in exclude:
            continue
        max_age = int(by_partner.get(contract.partner, default_age))
        batch = latest.get(contract.source)
        meta = {"partner": contract.partner, "last_batch": batch, "max_age_days": max_age, "reference": str(reference)}
        if batch is None:
            results.append(CheckResult(FRESHNESS, False, severity,
                                       f"{contract.source} ({contract.partner}): no monthly delivery yet",
                                       contract.source, meta))
            continue
        age = (reference - _month_end(batch)).days
        meta["age_days"] = age
        passed = age <= max_age
        desc = (f"{contract.source} ({contract.partner}): last month {batch} is {age} day(s) older than {ref_label}"
                + ("" if passed else f", more than {max_age}"))
        results.append(CheckResult(FRESHNESS, passed, severity, desc, contract.source, meta))
    return results


# --- monthly volume -------------------------------------------------------------------------
def check_monthly_volume(con, cfg: QualityConfig, contracts: dict) -> list[CheckResult]:
    """Each month in effect of a source has at least ``min_share`` of the median rows loaded
    over the ``months`` months before it (one result per source). A truncated export, or
    the first part of a month delivered in pieces, loads as a month of its own: the volume
    gate of ingestion (``deliveries`` in config/quality.yml) only compares a month delivered
    again with itself. Months with fewer than 3 earlier months, or whose earlier months'
    median is under ``min_rows`` rows, are not compared (small sources vary too much)."""
    params = cfg.params(MONTHLY_VOLUME)
    severity = params["severity"]
    min_share = float(params.get("min_share", 0.5))
    history = int(params.get("months", 6))
    min_rows = int(params.get("min_rows", 100))
    exclude = set(params.get("exclude") or ())
    sources = [c for c in contracts.values() if c.source not in exclude]
    if not _has_store(con) or not _store_table_exists(con, "meta", "deliveries"):
        return [CheckResult(MONTHLY_VOLUME, True, severity, f"{c.source}: no delivery recorded", c.source)
                for c in sources]
    rows = con.execute(
        "select source, batch, sum(rows_loaded) from ingest.meta.deliveries where status = 'loaded' "
        "and regexp_full_match(batch, '\\d{4}-(0[1-9]|1[0-2])') group by source, batch order by source, batch").fetchall()
    months: dict[str, list[tuple[str, int]]] = {}
    for source, batch, loaded in rows:
        months.setdefault(source, []).append((batch, int(loaded or 0)))
    results = []
    for contract in sources:
        found, compared = [], 0
        series = months.get(contract.source, [])
        for i, (batch, loaded) in enumerate(series):
            before = [n for _, n in series[max(0, i - history):i]]
            if len(before) < 3:
                continue
            median = statistics.median(before)
            if median < min_rows:
                continue
            compared += 1
            if loaded < min_share * median:
                found.append({"month": batch, "rows_loaded": loaded, "median_before": median,
                              "months_before": len(before)})
        meta = {"partner": contract.partner, "months_compared": compared, "min_share": min_share, "months": found}
        if found:
            desc = (f"{contract.source} ({contract.partner}): "
                    + "; ".join(f"{m['month']} has {m['rows_loaded']:,} rows loaded, under {min_share:.0%} of the "
                                f"median of the {m['months_before']} months before it ({m['median_before']:,.0f})"
                                for m in found)
                    + " (a truncated or partial delivery, or most of its rows set aside? the partner's feedback on the "
                    "file has its counts)")
        else:
            desc = (f"{contract.source} ({contract.partner}): {compared} month(s) compared with the months before "
                    f"them, none under {min_share:.0%} of their median" if compared else
                    f"{contract.source} ({contract.partner}): no month with enough history to compare")
        results.append(CheckResult(MONTHLY_VOLUME, not found, severity, desc, contract.source, meta))
    return results


# --- direct identifiers ---------------------------------------------------------------------
def _allowed(params: dict, schema: str, table: str, column: str) -> bool:
    """Whether ``allowed_columns`` (``"<schema>.<table>.<column>"``, with shell-style
    wildcards: ``"*.*.code_version"``) exempts the column."""
    name = f"{schema}.{table}.{column}"
    return any(fnmatch.fnmatchcase(name, allowed) for allowed in params.get("allowed_columns") or ())


def _within_text(pattern: str) -> str:
    """A value pattern (anchored to the whole value, as configured) as a pattern found inside
    a longer text too: a free-text column (a rejection reason, a note) can quote an
    identifier. After a character that is not a capital letter or a digit (a lower-case
    letter too: a header line run into a record glues "date_inscription_rsu" to the CIN
    after it), before one that is not a letter or a digit (a code such as REF-AB123456X is
    no CIN)."""
    inner = pattern.removeprefix("^").removesuffix("$")
    return f"(^|[^A-Z0-9])(?:{inner})($|[^A-Za-z0-9])"


def check_identifiers(con, cfg: QualityConfig, schemas: Iterable[str]) -> list[CheckResult]:
    """No published column is named like a direct identifier and no text value is shaped like one."""
    params = cfg.params(NO_IDENTIFIERS)
    severity = params["severity"]
    name_re = re.compile(params.get("column_name_pattern") or r"$^", re.IGNORECASE)
    patterns = params.get("value_patterns") or {}
    results = []
    for schema, table in published_tables(con, schemas):
        findings = []
        text_columns = []
        for column, dtype in _columns(con, schema, table):
            if _allowed(params, schema, table, column):
                continue
            if name_re.search(column) and not column.endswith("_key"):
                findings.append(f"column {column} is named like a direct identifier")
            if dtype.upper().startswith("VARCHAR"):
                text_columns.append(column)
        if text_columns and patterns:
            selects = []
            for column in text_columns:
                for kind, pattern in patterns.items():
                    selects.append(f"count(*) filter (where regexp_matches({_ident(column)}, '{_sql_str(_within_text(pattern))}'))"
                                   f" as {_ident(column + '|' + kind)}")
            cur = con.execute(f"select {', '.join(selects)} from {_ident(schema)}.{_ident(table)}")
            names = [d[0] for d in cur.description]
            for name, count in zip(names, cur.fetchone()):
                if count:
                    column, kind = name.split("|")
                    findings.append(f"{count} value(s) of column {column} are or contain text shaped like a {kind}")
        desc = (f"{schema}.{table}: no direct identifier" if not findings else f"{schema}.{table}: " + "; ".join(findings))
        results.append(CheckResult(NO_IDENTIFIERS, not findings, severity, desc, f"{schema}.{table}",
                                   {"findings": findings, "text_columns_scanned": len(text_columns)}))
    return results


# --- person-level data -----------------------------------------------------------------------
def check_person_level(con, cfg: QualityConfig, schemas: Iterable[str]) -> list[CheckResult]:
    """No published table is person-level: none holds a pseudonymous key of a person, a
    household or a study unit (``key_column_pattern``). Such tables belong in the internal
    schema ``detail``; published tables aggregate people into cells (disclosure control)."""
    params = cfg.params(NO_PERSON_LEVEL)
    severity = params["severity"]
    key_re = re.compile(params.get("key_column_pattern") or r"$^", re.IGNORECASE)
    results = []
    for schema, table in published_tables(con, schemas):
        keys = [c for c, _ in _columns(con, schema, table) if key_re.search(c) and not _allowed(params, schema, table, c)]
        desc = (f"{schema}.{table}: no person-level key" if not keys else
                f"{schema}.{table}: person-level table (pseudonymous key column(s) {', '.join(keys)}): build it "
                "into the internal schema detail, publish aggregates of it")
        results.append(CheckResult(NO_PERSON_LEVEL, not keys, severity, desc, f"{schema}.{table}",
                                   {"key_columns": keys}))
    return results


# --- small cells (disclosure control) -------------------------------------------------------
def check_small_cells(con, settings, cfg: QualityConfig) -> list[CheckResult]:
    """What disclosure control (``quality.disclosure.review``) finds in the published tables:
    a blocking finding fails the check; warnings (tables nobody configured, cells only the
    line totals of other tables determine) are reported in it without failing it."""
    from quality import disclosure

    severity = cfg.severity(NO_SMALL_CELLS)
    try:
        found = list(disclosure.review(con, settings))
    except Exception as exc:  # an errored check is a failure, never a pass
        return [CheckResult(NO_SMALL_CELLS, False, severity, f"the small-cell check errored: {exc}")]
    # A result travels with a publication (its log is published) when it does not block:
    # then without the cells it is about (`jisr disclosure` lists those). Blocking
    # violations name their cells, unless the check is configured not to block.
    blocks = cfg.blocking(NO_SMALL_CELLS)
    violations = [str(v) if blocks else v.brief for v in found if v.blocking]
    warnings = [v.brief for v in found if not v.blocking]
    description = ("no published cell under the small-cell threshold, none recoverable" if not violations else
                   f"{len(violations)} disclosure violation(s): " + "; ".join(violations[:3])
                   + ("; ..." if len(violations) > 3 else ""))
    metadata: dict[str, Any] = {"violations": violations[:50]}
    if warnings:
        description += (f"; {len(warnings)} warning(s), not blocking: " + "; ".join(warnings[:3])
                        + ("; ..." if len(warnings) > 3 else ""))
        metadata["warnings"] = warnings[:50]
    return [CheckResult(NO_SMALL_CELLS, not violations, severity, description, None, metadata)]


# --- Great Expectations coverage of the run's deliveries ------------------------------------
def check_suite_validated(con, cfg: QualityConfig, run_id: str | None,
                          sources: Iterable[str] | None = None) -> list[CheckResult]:
    """Every delivery the run loaded was validated by its suite and no expectation errored.

    One result per source (``sources``: also report sources without a delivery in the run)."""
    severity = cfg.severity(SUITE_VALIDATED)
    loaded: list[tuple] = []
    if run_id is not None and _has_store(con) and _store_table_exists(con, "meta", "deliveries"):
        loaded = con.execute("select source, batch, file_name from ingest.meta.deliveries where run_id = ? "
                             "and status != 'rejected' order by 1, 2", [run_id]).fetchall()
    validated: dict[tuple, tuple] = {}
    if loaded and _store_table_exists(con, "quality", "gx_results"):
        validated = {(s, b): (n, e, u) for s, b, n, e, u in con.execute(
            "select source, batch, count(*), count(*) filter (where raised_exception), "
            "coalesce(sum(unexpected_count), 0) from ingest.quality.gx_results where run_id = ? group by 1, 2",
            [run_id]).fetchall()}
    by_source: dict[str, list[tuple]] = {}
    for source, batch, file_name in loaded:
        by_source.setdefault(source, []).append((batch, file_name))
    results = []
    for source in sorted(set(sources or ()) | set(by_source)):
        files = by_source.get(source, [])
        if not files:
            results.append(CheckResult(SUITE_VALIDATED, True, severity, f"{source}: no new delivery in this run",
                                       source, {"deliveries": 0}))
            continue
        missing = [f for b, f in files if (source, b) not in validated]
        errored = [f for b, f in files if validated.get((source, b), (0, 0, 0))[1]]
        unexpected = sum(validated.get((source, b), (0, 0, 0))[2] for b, _ in files)
        problems = []
        if missing:
            problems.append(f"not validated by the suite: {', '.join(missing[:10])}")
        if errored:
            problems.append(f"expectations errored on {', '.join(errored[:10])} (their rows were quarantined)")
        desc = f"{source}: " + ("; ".join(problems) or (f"{len(files)} delivery(ies) validated, {unexpected} "
                                                       "failing (row, expectation) pair(s) sent to quarantine"))
        results.append(CheckResult(SUITE_VALIDATED, not problems, severity, desc, source,
                                   {"deliveries": len(files), "not_validated": missing, "errored": errored,
                                    "unexpected": unexpected}))
    if not results:
        results.append(CheckResult(SUITE_VALIDATED, True, severity, "no new delivery in this run"))
    return results


# --- everything -----------------------------------------------------------------------------
def run_audit(con, settings, cfg: QualityConfig, *, run_id: str | None = None, contracts: dict | None = None,
              previous: tuple[str | None, dict[str, int] | None] | None = None,
              only: Iterable[str] | None = None, today: date | None = None,
              warehouse=None, skip: dict[str, Iterable[str | None]] | None = None) -> list[CheckResult]:
    """All checks (or ``only`` those named) on ``con``, the warehouse to publish;
    ``previous`` defaults to the row counts of the currently published warehouse.
    ``skip``: per check, the targets (tables, sources) it was already evaluated on, which
    get no result here; the check runs on every other target.

    The checks of ``WAREHOUSE_CHECKS`` (references, reconciliation) run on ``warehouse``
    when given: the build warehouse, whose internal schema ``detail`` holds the person-level
    tables they need (the file to publish does not)."""
    wanted = set(only) if only is not None else None

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    results: list[CheckResult] = []
    schemas = cfg.publish_schemas
    built = warehouse if warehouse is not None else con
    skip = {name: set(targets) for name, targets in (skip or {}).items()}
    if want(REFERENCES_RESOLVE):
        results += check_references(built, cfg, skip=skip.get(REFERENCES_RESOLVE, set()) - {None})
    if want(TOTALS_RECONCILE):
        results += check_reconciliation(built, cfg, skip=skip.get(TOTALS_RECONCILE, set()) - {None})
    if want(ROW_COUNTS):
        prev_run, prev_counts = previous if previous is not None else previous_row_counts(settings.serving_path)
        results += check_row_counts(table_row_counts(con, schemas), prev_counts, cfg, prev_run)
    if contracts is None and (want(FRESHNESS) or want(MONTHLY_VOLUME)):
        from ingestion.contracts import load_contracts

        contracts = load_contracts(settings.contracts_dir)
    if want(FRESHNESS):
        results += check_freshness(con, cfg, contracts, today=today)
    if want(MONTHLY_VOLUME):
        results += check_monthly_volume(con, cfg, contracts)
    if want(NO_IDENTIFIERS):
        results += check_identifiers(con, cfg, schemas)
    if want(NO_PERSON_LEVEL):
        results += check_person_level(con, cfg, schemas)
    if want(NO_SMALL_CELLS):
        results += check_small_cells(con, settings, cfg)
    if want(SUITE_VALIDATED):
        results += check_suite_validated(con, cfg, run_id)
    return [r for r in results if r.target not in skip.get(r.check, ())]


def dbt_test_description(node: Mapping[str, Any]) -> str:
    """What a dbt test checks, in words: a singular test's leading SQL comment, or a generic
    test's rule with its arguments; then its name and whether it blocks publication."""
    meta = node.get("test_metadata") or {}
    kwargs, column = meta.get("kwargs") or {}, node.get("column_name")
    name = meta.get("name")
    if not meta:
        code, lines = (node.get("raw_code") or "").lstrip(), []
        if code.startswith("{#"):  # a Jinja comment first
            lines = [code[2:code.find("#}")].strip("-").strip()] if "#}" in code else []
        for line in code.splitlines() if not lines else ():
            if not line.startswith("--"):
                break
            lines.append(line[2:].strip())
        what = " ".join(" ".join(lines).split()) or "a singular test: the rows its query returns fail"
    elif name in ("not_null", "not_null_columns"):
        what = f"never empty: {', '.join(kwargs.get('column_names') or [column])}"
    elif name == "unique":
        what = f"{column} is unique"
    elif name == "unique_combination_of_columns":
        what = f"one row per {', '.join(kwargs.get('combination_of_columns') or [])}"
    elif name == "accepted_values":
        values = [str(v) for v in kwargs.get("values") or []]
        what = f"{column} is one of {', '.join(values[:12])}" + (", ..." if len(values) > 12 else "")
    elif name == "relationships":
        target = str(kwargs.get("to", "")).removeprefix("ref('").removeprefix("source(").rstrip("')")
        what = f"every {column} is a {kwargs.get('field')} of {target}"
    elif name == "accepted_range":
        bounds = [f"{op} {kwargs[key]}" for op, key in ((">=", "min_value"), ("<=", "max_value")) if key in kwargs]
        what = f"{column} {' and '.join(bounds)}"
    elif name == "expression_is_true":
        what = f"every row: {kwargs.get('expression')}"
    else:
        what = f"dbt test {name}"
    severity = str((node.get("config") or {}).get("severity") or "error").lower()
    effect = "blocks publication when it fails" if severity == "error" else "warns when it fails"
    return f"{what} (dbt test {node['name']}; {effect})"


FAILING_ROWS_SHOWN = 5  # rows of a failed dbt test shown in the quality report and the step's error


def failing_rows(con, compiled_sql: str, limit: int = FAILING_ROWS_SHOWN) -> list[dict[str, Any]]:
    """The first rows (in the order of their values, so each run shows the same) a dbt test's
    compiled query returns: the rows it failed on. A row that
    names its delivery (``_delivery_id``) also names the delivered file (``_file_name``), from
    the delivery log of the raw store attached as ``ingest``, when it is. ``con`` may be a
    PostgreSQL connection (psycopg2) on the database dbt built, whose delivery log is its
    ``meta.deliveries`` (the raw layer's copy)."""
    on_postgres = type(con).__module__.startswith("psycopg2")
    cur = con.cursor() if on_postgres else con
    order = "failing" if on_postgres else "all"  # PostgreSQL has no ORDER BY ALL: the whole row
    cur.execute(f"select * from (\n{compiled_sql}\n) as failing order by {order} limit {int(limit)}")
    columns = [d[0] for d in cur.description]
    rows = [dict(zip(columns, values)) for values in cur.fetchall()]
    ids = sorted({str(r["_delivery_id"]) for r in rows if r.get("_delivery_id") is not None})
    if ids and (on_postgres or attach_store(con, None)):
        log, mark = ("meta.deliveries", "%s") if on_postgres else ("ingest.meta.deliveries", "?")
        cur.execute(f"select delivery_id, file_name from {log} where delivery_id in ({', '.join([mark] * len(ids))})",
                    ids)
        files = dict(cur.fetchall())
        rows = [{**r, "_file_name": files.get(str(r.get("_delivery_id")))} if r.get("_delivery_id") else r
                for r in rows]
    return rows


def describe_rows(rows: list[dict[str, Any]]) -> str:
    """Rows as ``column=value, ...`` separated by semicolons."""
    return "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in rows)


def dbt_build_results(run_results: Path, warehouse: Path | None = None, store: Path | None = None, *,
                      con=None, manifest: Mapping[str, Any] | None = None) -> list[CheckResult]:
    """What a dbt build's ``run_results.json`` says about the gates, for the quality report:
    every test that did not pass and every node that errored (a failing test of severity
    error, or an erroring node, blocks; a warning warns), the tests a failure skipped, or one
    passing result when every test passed. Empty when dbt wrote no results.

    With the build ``warehouse`` (a DuckDB file), a test that did not pass also gives the
    first rows it failed on (``failing_rows``: the test's own query run again, read-only;
    ``store``: the raw store, for tests that read it and for the files of the rows), in its
    description and as ``metadata["rows"]``; with ``con`` instead (an open connection on the
    database dbt built, e.g. PostgreSQL's, read-only: the caller's, left open), on it. With
    the build's ``manifest`` (its ``manifest.json``), a test that did not pass also says
    what it checks (:func:`dbt_test_description`), as ``metadata["checks"]``."""
    if not run_results.is_file():
        return []
    results = json.loads(run_results.read_text(encoding="utf-8")).get("results", [])
    nodes = (manifest or {}).get("nodes") or {}
    out, tests, skipped = [], 0, 0
    rerun = con is not None or warehouse is not None  # the failing tests' queries can run again
    own = None  # the connection opened on `warehouse`, closed here
    for r in results:
        kind, name = r["unique_id"].split(".")[0], r["unique_id"].split(".")[2]
        status, message = r.get("status"), (r.get("message") or "").strip()
        is_test = kind in ("test", "unit_test")
        tests += is_test
        if status == "skipped":
            skipped += 1
        elif is_test and status in ("fail", "error", "warn"):
            description = f"dbt test {status}: {message}" if message else f"dbt test {status}"
            metadata = {}
            if r["unique_id"] in nodes:
                metadata["checks"] = dbt_test_description(nodes[r["unique_id"]])
            if status != "error" and kind == "test" and r.get("compiled_code") and rerun:
                try:
                    if con is None:
                        con = own = connect_for_audit(warehouse, store)
                    # one row more than shown: whether there are more (dbt's count of failures is
                    # not always a count of rows: not_null_columns counts the null cells)
                    rows = failing_rows(con, r["compiled_code"], limit=FAILING_ROWS_SHOWN + 1)
                    metadata["rows"] = rows[:FAILING_ROWS_SHOWN]
                    shown, found = len(metadata["rows"]), r.get("failures") or 0
                    what = ((f"the first {shown} of the {found} rows it failed on" if found > shown else
                             f"the first {shown} rows it failed on") if len(rows) > shown else
                            "the row it failed on" if shown == 1 else f"the {shown} rows it failed on")
                    if shown:
                        description += f"; {what}: {describe_rows(metadata['rows'])}"
                except Exception as exc:  # noqa: BLE001 - the outcome is reported with or without its rows
                    description += f" (its rows could not be read again: {' '.join(str(exc).split())[:200]})"
            out.append(CheckResult(f"dbt test {name}", False, "warn" if status == "warn" else "block",
                                   description, metadata=metadata))
        elif status == "error":
            out.append(CheckResult(f"dbt {kind} {name}", False, "block", f"dbt {kind} failed: {message}"))
    if own is not None:
        own.close()
    if skipped:
        out.append(CheckResult("dbt build skipped nodes", False, "warn",
                               f"{skipped} dbt nodes did not run: a model or test they depend on failed"))
    if not out and tests:
        out.append(CheckResult("dbt tests", True, "block", f"all {tests} dbt tests of the build passed"))
    return out


def summarise(results: Iterable[CheckResult]) -> dict:
    """JSON-able summary for the publish log."""
    results = list(results)
    return {
        "passed": not blocking_failures(results),
        "checks": [{"check": r.check, "target": r.target, "passed": r.passed, "severity": r.severity,
                    "description": r.description} for r in results],
    }
