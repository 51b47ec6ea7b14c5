"""Write-audit-publish: the serving warehouse is replaced only by a complete, audited file.

dbt and the impact stage write the internal build warehouse (``build.duckdb``). Publishing:

1. **stage** (:func:`stage_candidate`): copy the published schemas (``marts``, ``impact``;
   ``publish.schemas`` in ``config/quality.yml``) of the build warehouse into a NEW DuckDB
   file next to the serving file (tables created as select, no views), then apply
   disclosure control (``quality.disclosure.protect``) to that copy. The internal schemas
   (``detail``: person-level tables; staging, intermediate) are never copied;
2. **audit** (:func:`commit`): run every check of ``quality.checks`` on every table or
   source the run did not already evaluate it on (``evaluated``: the Dagster asset checks
   of the same run, e.g. the references check of each fact that has one) on the candidate, and the warehouse-level ones on the build warehouse (raw store attached
   read-only), and refuse on any blocking failure: the gate holds even when the publish
   step is run alone;
3. **publish** (:func:`commit`): append a row to ``meta.publish_log`` (earlier rows are
   copied from the current serving file; its deliveries are those the build was made from,
   recorded in the build warehouse by the dbt step, not those of the raw store now), keep the current serving file in ``history_dir``
   (a hard link, so the serving path never disappears), then ``os.replace`` the candidate
   onto ``serving_path``, and record the publication for ``jisr reproduce``
   (:func:`record_path`: code version, deliveries, and the fingerprints of the published
   tables as built, which :func:`stage_candidate` computed before disclosure control).

Readers that hold a read-only connection keep reading the file they opened (its inode lives
on until they close it); new readers only ever see a complete file. A process killed at any
point leaves the serving file as it was (a stale candidate is removed by the next publish).
:func:`rollback` puts the previous published file back (``jisr rollback``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from jisr.lock import publish_lock
from quality.checks import (CheckResult, ChecksFailed, attach_store, blocking_failures, connect_for_audit,
                            run_audit, summarise, table_row_counts)
from quality.config import CHECK_NAMES, WAREHOUSE_CHECKS, QualityConfig, config_for

LOG_COLUMNS = """
    event varchar not null,            -- publish | rollback
    run_id varchar not null,           -- Dagster run whose warehouse is served after this event
    code_version varchar,              -- code version that built it
    published_at timestamp not null,   -- UTC
    deliveries json,                   -- [{delivery_id, source, batch, file_name, content_hash, rows_loaded, run_id, loaded_at}]
    delivery_count integer,
    check_results json,                -- {"audit": {...}, "dagster": [...]}
    checks_passed boolean,
    table_row_counts json,             -- {"marts.fct_payments": 1234, ...}
    disclosure varchar,                -- how disclosure control was applied
    note varchar
"""
# what BI tools show for the publish log (table and column comments), the only table of `meta`
# readers see
LOG_DESCRIPTIONS = {
    None: "One row per publication of this warehouse (publish) and per jisr rollback (rollback), the "
          "earlier ones copied from the file served before: which run, code version and deliveries the "
          "figures come from, and the checks they passed.",
    "event": "publish (a refresh replaced the warehouse) or rollback (jisr rollback served an earlier one again).",
    "run_id": "Dagster run whose warehouse is served after this event.",
    "code_version": "Version of the code that built it (git describe; -dirty.<hash> for uncommitted changes).",
    "published_at": "When the event happened (UTC).",
    "deliveries": "The partner deliveries the warehouse was built from: delivery id, source, batch, file name, "
                  "SHA-256 of the file's content, rows loaded, and the run that loaded it and when (UTC).",
    "delivery_count": "Number of those deliveries.",
    "check_results": "Results of the quality checks: the publish step's audit and the run's Dagster asset checks.",
    "checks_passed": "Whether every blocking check passed (a publication happens only then).",
    "table_row_counts": "Rows of each published table.",
    "disclosure": "How disclosure control was applied, per protected table (cells hidden; no cell values).",
    "note": "Anything else to know about this event, e.g. published without its audit.",
}
CANDIDATE_PREFIX = ".candidate-"


class PublishError(RuntimeError):
    """Publication is not possible (nothing built, candidate missing, ...)."""


@dataclass
class Candidate:
    path: Path
    run_id: str
    table_row_counts: dict[str, int]
    disclosure: str
    deliveries: list[dict] | None = None  # those the build was made from (None: the build did not record them)
    # for data engineers, never published: what the check against the previous publication left
    disclosure_notes: list[str] = field(default_factory=list)
    # the file served when disclosure control ran (``_served_identity``; "" nothing served,
    # None a candidate staged before this was recorded): commit refuses if another is served
    served: str | None = None


@dataclass
class PublishResult:
    run_id: str
    serving_path: Path
    archived_path: Path | None
    table_row_counts: dict[str, int]
    checks: list[CheckResult] = field(default_factory=list)
    deliveries: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        tables = len(self.table_row_counts)
        rows = sum(self.table_row_counts.values())
        warn = [c for c in self.checks if not c.passed]
        text = (f"Published run {self.run_id}: {tables} tables ({rows} rows) from {self.deliveries} deliveries "
                f"to {self.serving_path} in {self.seconds:.1f} s")
        if warn:
            text += "\nWarnings:\n" + "\n".join(f"  - {c.label}: {c.description}" for c in warn)
        return text


@dataclass
class RollbackResult:
    restored_run_id: str | None
    replaced_run_id: str | None
    restored_from: Path
    serving_path: Path

    def describe(self) -> str:
        return (f"Restored the warehouse of run {self.restored_run_id} (from {self.restored_from.name}) as "
                f"{self.serving_path}; the warehouse of run {self.replaced_run_id} was kept in "
                f"{self.restored_from.parent / 'rolled_back'}.")


def _fault_point(name: str) -> None:
    """A named point of the publish sequence; tests replace this to stop a process there."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(text: str) -> str:
    return str(text).replace("'", "''")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def counts_path(settings, run_id: str) -> Path:
    """The counts before suppression of ``run_id``'s publication (internal, never served)."""
    return Path(settings.publication_counts_dir) / f"{run_id}.duckdb"


def _prune_counts(settings) -> None:
    """Keep the counts of the publications that are served or kept for rollback only."""
    folder = Path(settings.publication_counts_dir)
    if not folder.exists():
        return
    history = Path(settings.history_dir)
    kept = {serving_run_id(Path(settings.serving_path))}
    kept |= {_archived_run(p) for p in [*_archives(history), *_archives(history / "rolled_back")]}
    for path in folder.glob("*.duckdb"):
        if path.stem not in kept:
            _remove_db(path)
    for path in folder.glob("*.figures.json"):  # of a candidate refused before its commit
        path.unlink(missing_ok=True)
    for path in folder.glob("*.pending.json"):  # of a commit killed before or after its swap
        if publication_record(settings, path.name.removesuffix(".pending.json")) is None:
            path.unlink(missing_ok=True)  # never published


def record_path(settings, run_id: str) -> Path:
    """The record of ``run_id``'s publication that ``jisr reproduce`` reads (internal, never
    served, never pruned): its code version, the deliveries it was built from and the
    fingerprints of its published tables before disclosure control."""
    return Path(settings.publication_counts_dir) / f"{run_id}.json"


def _figures_path(settings, run_id: str) -> Path:
    """The fingerprints of a staged candidate's tables, until its commit records them."""
    return Path(settings.publication_counts_dir) / f"{run_id}.figures.json"


def _pending_record_path(settings, run_id: str) -> Path:
    """The record of ``run_id``'s publication written before its file is swapped in, until
    the swap is done: a commit killed between the swap and the record's rename leaves it,
    and the run's file served; :func:`publication_record` then takes it as the record."""
    return Path(settings.publication_counts_dir) / f"{run_id}.pending.json"


def figures(con, schemas, skip_columns=()) -> dict[str, dict]:
    """The figures of every table of ``schemas`` in ``con``'s own database: its rows and a
    SHA-256 of its column names and types and of every row, rows in the order of their values
    (``order by all``), so two builds that write the same rows in another order agree and a
    single changed value does not. ``skip_columns`` (the run that computed a figure) are
    left out. Read in batches: the published tables are aggregates, but nothing assumes so."""
    tables = con.execute(
        "select schema_name, table_name from duckdb_tables() where database_name = current_database() "
        f"and schema_name in ({', '.join('?' * len(schemas))}) order by 1, 2", list(schemas)).fetchall()
    out: dict[str, dict] = {}
    for schema, table in tables:
        columns = [(n, t) for n, t in con.execute(
            "select column_name, data_type from duckdb_columns() where database_name = current_database() "
            "and schema_name = ? and table_name = ? order by column_index", [schema, table]).fetchall()
            if n not in skip_columns]
        digest = hashlib.sha256(json.dumps(columns).encode())
        rows = 0
        if columns:
            cur = con.execute(f"select {', '.join(_ident(n) for n, _ in columns)} "
                              f"from {_ident(schema)}.{_ident(table)} order by all")
            while batch := cur.fetchmany(10_000):
                digest.update("".join(f"{row!r}\n" for row in batch).encode())
                rows += len(batch)
        else:
            rows = con.execute(f"select count(*) from {_ident(schema)}.{_ident(table)}").fetchone()[0]
        out[f"{schema}.{table}"] = {"rows": rows, "sha256": digest.hexdigest()}
    return out


def publication_record(settings, run_id: str) -> dict | None:
    """The record of ``run_id``'s publication (:func:`record_path`), or None. A pending record
    (:func:`_pending_record_path`) is the record once the run's file was published (served,
    or kept for rollback): it is renamed so then."""
    path = record_path(settings, run_id)
    if not path.is_file():
        pending = _pending_record_path(settings, run_id)
        if not pending.is_file() or published_file(settings, run_id) is None:
            return None
        try:
            os.replace(pending, path)
        except OSError:  # a reader who may not write the store reads it where it is
            path = pending
    return json.loads(path.read_text(encoding="utf-8"))


def _write_record(settings, run_id: str, code_version: str, published_at: datetime, deliveries: list[dict]) -> Path:
    """Write the record of ``run_id``'s publication as pending, before its file is swapped in,
    with the fingerprints its stage computed (none for a candidate staged before they were
    computed); :func:`_confirm_record` makes it the record once the file is served."""
    staged = _figures_path(settings, run_id)
    fingerprints = json.loads(staged.read_text(encoding="utf-8")) if staged.is_file() else None
    path = _pending_record_path(settings, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    from jisr.settings import engine_versions

    tmp.write_text(json.dumps({"run_id": run_id, "code_version": code_version,
                               "published_at": published_at.isoformat(), "engines": engine_versions(),
                               "deliveries": deliveries, "figures": fingerprints}, default=str, indent=1),
                   encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)
    return path


def _confirm_record(settings, run_id: str) -> None:
    os.replace(_pending_record_path(settings, run_id), record_path(settings, run_id))
    _fsync(Path(settings.publication_counts_dir))
    _figures_path(settings, run_id).unlink(missing_ok=True)


def candidate_path(settings, run_id: str) -> Path:
    return Path(settings.serving_path).with_name(f"{CANDIDATE_PREFIX}{run_id}.duckdb")


def _unlink(path: Path) -> None:
    """Remove a file even when it was made read-only (published files are)."""
    path.chmod(path.stat().st_mode | stat.S_IWUSR)
    path.unlink()


def _remove_db(path: Path) -> None:
    for p in (path, Path(str(path) + ".wal"), Path(str(path) + ".json")):
        if p.exists():
            _unlink(p)


def _remove_stale_candidates(settings) -> list[Path]:
    """Remove what killed publications left next to the serving file (files, WALs, sidecars)."""
    removed = []
    for path in Path(settings.serving_path).parent.glob(f"{CANDIDATE_PREFIX}*"):
        if path.is_file():
            _unlink(path)
            removed.append(path)
    return removed


# --- deliveries --------------------------------------------------------------------------------
def current_deliveries(settings) -> list[dict]:
    """Deliveries whose rows make up the current raw layer (from ``meta.deliveries``), with
    the rows loaded from each (it grows when ingestion releases held rows into it)."""
    store = Path(settings.store_path)
    if not store.exists():
        return []
    con = duckdb.connect(str(store), read_only=True)
    try:
        cur = con.execute("select delivery_id, source, batch, file_name, content_hash, rows_loaded, run_id, loaded_at "
                          "from meta.deliveries where status = 'loaded' order by source, batch, delivery_id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


BUILD_DELIVERIES = ("meta", "build_deliveries")  # in the build warehouse: the deliveries it was built from


def record_build_deliveries(settings, deliveries: list[dict] | None) -> None:
    """Record in the build warehouse the deliveries it was built from (the dbt step calls
    this once its build succeeded, with :func:`current_deliveries` as dbt read them): the
    publish log lists those, not the raw store's at publication, so a build published later
    (the publish step run alone after an ingestion) is not logged with deliveries it lacks.
    ``None`` forgets the record (the dbt step, before it builds: a build that fails half-way
    is not described by the deliveries of the one before)."""
    schema, table = BUILD_DELIVERIES
    con = duckdb.connect(str(settings.build_path))
    try:
        if deliveries is None:
            con.execute(f"drop table if exists {_ident(schema)}.{_ident(table)}")
            con.execute("checkpoint")
            return
        con.execute(f"create schema if not exists {_ident(schema)}")
        con.execute(f"create or replace table {_ident(schema)}.{_ident(table)} (delivery json)")
        if deliveries:
            con.executemany(f"insert into {_ident(schema)}.{_ident(table)} values (?)",
                            [[json.dumps(d, default=str)] for d in deliveries])
        con.execute("checkpoint")
    finally:
        con.close()


def recorded_build_deliveries(settings) -> list[dict] | None:
    """The deliveries the build warehouse records it was built from, or None (no build
    warehouse, or no record: a build that failed, or one made before builds recorded them)."""
    build = Path(settings.build_path)
    if not build.exists():
        return None
    con = duckdb.connect()
    try:
        con.execute(f"attach '{_sql_str(build)}' as build_warehouse (read_only)")
        return _built_from(con, "build_warehouse")
    finally:
        con.close()


def _built_from(con, database: str) -> list[dict] | None:
    """The deliveries recorded in the build warehouse attached as ``database``, or None."""
    schema, table = BUILD_DELIVERIES
    recorded = con.execute("select count(*) from duckdb_tables() where database_name = ? and schema_name = ? "
                           "and table_name = ?", [database, schema, table]).fetchone()[0]
    if not recorded:
        return None
    rows = con.execute(f"select delivery from {_ident(database)}.{_ident(schema)}.{_ident(table)} "
                       "order by rowid").fetchall()
    return [json.loads(r[0]) for r in rows]


# --- stage ---------------------------------------------------------------------------------------
def stage_candidate(settings, run_id: str, cfg: QualityConfig | None = None) -> Candidate:
    """Copy the published schemas of the build warehouse into a new candidate file and apply
    disclosure control to it. Nothing is published yet."""
    cfg = cfg or config_for(settings)
    build = Path(settings.build_path)
    if not build.exists():
        raise PublishError(f"no build warehouse at {build}: run the refresh (dbt build) first")
    path = candidate_path(settings, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with publish_lock(settings, run_id=run_id):
        _remove_stale_candidates(settings)
        _prune_counts(settings)  # a publication refused before its commit (e.g. a gate of its run)
        con = duckdb.connect(str(path))
        try:
            con.execute("set TimeZone = 'UTC'")
            con.execute(f"attach '{_sql_str(build)}' as build_warehouse (read_only)")
            copy_published(con, "build_warehouse", cfg.publish_schemas)
            _copy_comments(con, "build_warehouse", set(cfg.publish_schemas))
            deliveries = _built_from(con, "build_warehouse")
            _keep_counts(con, settings, run_id)
            # the figures as built (disclosure control below depends on earlier publications
            # too): internal, as a fingerprint of a table with a few cells hidden would let
            # anyone try the values those cells can take
            _figures_path(settings, run_id).write_text(
                json.dumps(figures(con, cfg.publish_schemas, cfg.run_columns)), encoding="utf-8")
            con.execute("detach build_warehouse")
            _fault_point("copied")
            served = _served_identity(settings)
            disclosure, notes = _protect(con, settings)
            counts = table_row_counts(con, cfg.publish_schemas)
            con.execute("checkpoint")
        except BaseException:
            con.close()
            _remove_db(path)
            _remove_db(counts_path(settings, run_id))
            _figures_path(settings, run_id).unlink(missing_ok=True)
            raise
        con.close()
        Path(str(path) + ".json").write_text(json.dumps({"run_id": run_id, "table_row_counts": counts,
                                                         "disclosure": disclosure, "deliveries": deliveries,
                                                         "disclosure_notes": notes, "served": served},
                                                        default=str), encoding="utf-8")
    return Candidate(path=path, run_id=run_id, table_row_counts=counts, disclosure=disclosure, deliveries=deliveries,
                     disclosure_notes=notes, served=served)


def copy_published(con, source: str, schemas) -> None:
    """Copy the tables and views of ``schemas`` of the attached database ``source`` into
    ``con``'s own database, as tables."""
    relations = con.execute(
        "select schema_name, table_name from duckdb_tables() where database_name = ? "
        "union select schema_name, view_name from duckdb_views() where database_name = ? "
        "and not internal order by 1, 2", [source, source]).fetchall()
    for schema in schemas:
        con.execute(f"create schema if not exists {_ident(schema)}")
    for schema, table in relations:
        if schema in set(schemas):
            con.execute(f"create table {_ident(schema)}.{_ident(table)} as "
                        f"select * from {_ident(source)}.{_ident(schema)}.{_ident(table)}")


def _copy_comments(con, source: str, schemas: set[str]) -> None:
    """The comments of the published tables and their columns in the attached database
    ``source`` (dbt's ``persist_docs``: each model's and column's description), onto the
    copies in ``con``'s own database, which ``create table ... as`` does not carry: BI tools
    show them as the tables' and columns' descriptions."""
    tables = con.execute("select schema_name, table_name, comment from duckdb_tables() where database_name = ? "
                         "and comment is not null and comment <> ''", [source]).fetchall()
    columns = con.execute("select schema_name, table_name, column_name, comment from duckdb_columns() "
                          "where database_name = ? and comment is not null and comment <> ''", [source]).fetchall()
    statements = [f"comment on table {_ident(s)}.{_ident(t)} is '{_sql_str(c)}'" for s, t, c in tables if s in schemas]
    statements += [f"comment on column {_ident(s)}.{_ident(t)}.{_ident(n)} is '{_sql_str(c)}'"
                   for s, t, n, c in columns if s in schemas]
    if statements:
        con.execute(";\n".join(statements))


def load_candidate(settings, run_id: str) -> Candidate | None:
    """The candidate staged for ``run_id``, if it is complete."""
    path = candidate_path(settings, run_id)
    info = Path(str(path) + ".json")
    if not path.exists() or not info.exists():
        return None
    data = json.loads(info.read_text(encoding="utf-8"))
    return Candidate(path=path, run_id=run_id, table_row_counts=data["table_row_counts"], disclosure=data["disclosure"],
                     deliveries=data.get("deliveries"), disclosure_notes=data.get("disclosure_notes", []),
                     served=data.get("served"))


@contextmanager
def _served_attached(con, settings):
    """The file served now, attached read-only to ``con`` for the block: its name there, or
    None when nothing is served yet."""
    serving = Path(settings.serving_path)
    if not serving.exists():
        yield None
        return
    con.execute(f"attach '{_sql_str(serving)}' as previous_serving (read_only)")
    try:
        yield "previous_serving"
    finally:
        con.execute("detach previous_serving")


def _keep_counts(con, settings, run_id: str) -> None:
    """The build's counts before suppression of the protected tables (``build_warehouse`` is
    attached to ``con``), kept for the next publication (``counts_path``)."""
    from quality import disclosure

    path = counts_path(settings, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_db(path)
    con.execute(f"attach '{_sql_str(path)}' as publication_counts")
    try:
        disclosure.keep_counts(con, "build_warehouse", "publication_counts", settings)
    finally:
        con.execute("detach publication_counts")


def _published_at(con, database: str | None = None) -> datetime | None:
    """When the run of the file attached as ``database`` (default: the connection's own) was
    published: its own ``publish`` row. Not the newest ``publish`` row of its log: a file
    restored by ``jisr rollback`` carries the log of the files published after it too. None
    when the log does not tell (no log; a run whose publication was not recorded)."""
    run = _newest_run(con, database)
    if run is None:
        return None
    log = "meta.publish_log" if database is None else f"{_ident(database)}.meta.publish_log"
    return con.execute(f"select min(published_at) from {log} where event = 'publish' and run_id = ?",
                       [run]).fetchone()[0]


def _rolled_back_since(con, settings, served: str) -> list[Path]:
    """The files rolled back (``history_dir/rolled_back``) since the file attached as
    ``served`` was published, newest first: served after it, their readers may hold them
    too. Every file rolled back when that file's publication time is not known."""
    published = _published_at(con, served)
    return [path for path in reversed(_archives(Path(settings.history_dir) / "rolled_back"))
            if published is None or _archived_at(path) > published]


def _kept_publications(settings, served_run: str | None) -> list[Path]:
    """Every file kept for rollback, then every file rolled back, newest first; the served
    publication's own copies (a run restored by a rollback) left out."""
    history = Path(settings.history_dir)
    files = [*reversed(_archives(history)), *reversed(_archives(history / "rolled_back"))]
    seen, out = {served_run}, []
    for path in files:
        run = _archived_run(path)
        if run == "unknown" or run not in seen:  # "unknown": a file whose run was not recorded
            seen.add(run)
            out.append(path)
    return out


def _protect(con, settings) -> tuple[str, list[str]]:
    """Disclosure control on the candidate, against the file served now and the other
    publications its readers may hold (``check_against`` in config/disclosure.yml: the files
    rolled back since the served one was published, or every file kept), with their counts
    before suppression when they were kept (this file and any one of them together must not
    give back a small cell of either): (what it did, per table, for the publish log; what
    that check left or could not use, for data engineers only)."""
    from quality import disclosure

    attached: list[str] = []

    def attach(path: Path, name: str) -> str:
        con.execute(f"attach '{_sql_str(path)}' as {name} (read_only)")
        attached.append(name)
        return name

    config = disclosure.load_config(settings=settings)
    with _served_attached(con, settings) as previous:
        try:
            counts, others = None, []
            run = _newest_run(con, previous) if previous is not None else None
            if run and counts_path(settings, run).exists():
                counts = attach(counts_path(settings, run), "previous_counts")
            files = [] if previous is None else (
                _kept_publications(settings, run) if config.check_against == "kept"
                else _rolled_back_since(con, settings, previous))
            for n, path in enumerate(files):
                kept = counts_path(settings, _archived_run(path))
                others.append((attach(path, f"other_{n}"), attach(kept, f"other_{n}_counts") if kept.exists() else None))
            report = disclosure.protect(con, settings, config=config, previous=previous, previous_counts=counts,
                                        others=others)
            return json.dumps([str(t) for t in report]), [n for n in (t.note() for t in report) if n]
        finally:
            for name in reversed(attached):
                con.execute(f"detach {name}")


# --- audit and publish -----------------------------------------------------------------------------
def _check_results_json(audit: list[CheckResult], given: Any) -> str:
    def plain(item):
        if isinstance(item, CheckResult):
            return item.as_dict()
        return item

    dagster = [plain(c) for c in given] if isinstance(given, (list, tuple)) else given
    return json.dumps({"audit": summarise(audit), "dagster": dagster}, default=str)


def _write_log(con, settings, row: dict) -> None:
    con.execute("create schema if not exists meta")
    con.execute(f"create or replace table meta.publish_log ({LOG_COLUMNS})")
    with _served_attached(con, settings) as previous:
        if previous is not None and _has_log(con, previous):
            con.execute(f"insert into meta.publish_log by name select * from {previous}.meta.publish_log")
    cols = list(row)
    con.execute(f"insert into meta.publish_log ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
                [row[c] for c in cols])
    for column, text in LOG_DESCRIPTIONS.items():
        what = "table meta.publish_log" if column is None else f"column meta.publish_log.{_ident(column)}"
        con.execute(f"comment on {what} is '{_sql_str(text)}'")


def _archive_name(run_id: str | None) -> str:
    return f"jisr-{_now():%Y%m%dT%H%M%S%f}-{run_id or 'unknown'}.duckdb"


def _archived_at(path: Path) -> datetime:
    """The time (UTC) in a name made by ``_archive_name``: when the file was archived."""
    return datetime.strptime(Path(path).name.split("-", 2)[1], "%Y%m%dT%H%M%S%f")


def _archived_run(path: Path) -> str:
    """The run id in a name made by ``_archive_name`` (run ids hold dashes, the time does not)."""
    return Path(path).name[:-len(".duckdb")].split("-", 2)[2]


def _has_log(con, database: str | None = None) -> bool:
    """Whether the attached file ``database`` (default: the connection's own) has a publish log."""
    return bool(con.execute("select count(*) from duckdb_tables() where database_name = coalesce(?, current_database()) "
                            "and schema_name = 'meta' and table_name = 'publish_log'", [database]).fetchone()[0])


def _newest_row(con, columns: list[str], database: str | None = None) -> dict | None:
    """``columns`` of the newest row of the publish log of the attached file ``database``
    (default: the connection's own); None without a log or a row."""
    if not _has_log(con, database):
        return None
    log = "meta.publish_log" if database is None else f"{_ident(database)}.meta.publish_log"
    row = con.execute(f"select {', '.join(columns)} from {log} order by published_at desc limit 1").fetchone()
    return dict(zip(columns, row)) if row else None


def _newest_run(con, database: str | None = None) -> str | None:
    """Run id of the newest row of the publish log of the attached file ``database`` (default:
    the connection's own)."""
    row = _newest_row(con, ["run_id"], database)
    return row["run_id"] if row else None


def _served_identity(settings) -> str:
    """Which file is served now, as its publish log's newest row tells (a publication or a
    rollback: each adds a row); "" when nothing is served."""
    serving = Path(settings.serving_path)
    if not serving.exists():
        return ""
    con = duckdb.connect(str(serving), read_only=True)
    try:
        row = _newest_row(con, ["event", "run_id", "published_at"])
    finally:
        con.close()
    if row is None:
        return "a file without a publish log"
    at = f"{row['published_at']:%Y-%m-%d %H:%M:%S.%f} UTC" if row["published_at"] is not None else "an unrecorded time"
    return f"run {row['run_id']} ({row['event']} at {at})"


def serving_run_id(path: Path) -> str | None:
    """Run id of the warehouse in a published file (last row of its publish log)."""
    path = Path(path)
    if not path.exists():
        return None
    con = duckdb.connect(str(path), read_only=True)
    try:
        return _newest_run(con)
    finally:
        con.close()


def _archive_serving(settings, folder: Path) -> Path | None:
    """Keep the current serving file in ``folder`` (hard link; the serving path stays)."""
    serving = Path(settings.serving_path)
    if not serving.exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _archive_name(serving_run_id(serving))
    try:
        os.link(serving, target)
    except OSError:
        shutil.copy2(serving, target)
    wal = Path(str(serving) + ".wal")
    if wal.exists():  # only if someone wrote to the serving file: keep it with its database
        os.replace(wal, Path(str(target) + ".wal"))
    return target


def _archives(folder: Path) -> list[Path]:
    """The files ``_archive_serving`` kept in ``folder``, oldest first (their names start with
    the time they were archived)."""
    return sorted(folder.glob("jisr-*.duckdb")) if folder.exists() else []


def published_file(settings, run_id: str) -> Path | None:
    """The file ``run_id``'s publication served, while it is kept: the serving file, or one kept
    for rollback or rolled back (the newest copy); None once pruned."""
    serving = Path(settings.serving_path)
    if serving.exists() and serving_run_id(serving) == run_id:
        return serving
    history = Path(settings.history_dir)
    kept = [p for p in [*_archives(history), *_archives(history / "rolled_back")] if _archived_run(p) == run_id]
    return max(kept, key=_archived_at) if kept else None


def history_files(settings) -> list[Path]:
    """Earlier published files kept for rollback, oldest first."""
    return _archives(Path(settings.history_dir))


def _prune(folder: Path, keep: int, since: datetime | None = None) -> None:
    """Keep the newest ``keep`` archived files of ``folder``, and every file archived after
    ``since`` (files rolled back since the served one was published: the next publication
    is checked against each, ``_rolled_back_since``)."""
    files = _archives(folder)
    for old in files[:-keep] if keep else files:
        if since is None or _archived_at(old) <= since:
            _remove_db(old)


def _swap_in(path: Path, serving: Path) -> None:
    path.chmod(0o444)  # consumers read the serving file; nobody writes it in place
    _fsync(path)
    os.replace(path, serving)
    _fsync(serving.parent)


def _audit(con, settings, cfg: QualityConfig, run_id: str, evaluated: list[CheckResult]) -> list[CheckResult]:
    """Every check on every target (table, source) ``evaluated`` has no result for: the
    file-level ones on the candidate (``con``), the warehouse-level ones (references,
    reconciliation) on the build warehouse. A result without a target (e.g. a check of the
    whole candidate) covers the check on every target."""
    done: dict[str, set[str | None]] = {}
    for r in evaluated:
        done.setdefault(r.check, set()).add(r.target)
    todo = [name for name in CHECK_NAMES if None not in done.get(name, ())]
    if not todo:
        return list(evaluated)
    attach_store(con, settings.store_path)
    warehouse = None
    if set(todo) & set(WAREHOUSE_CHECKS) and Path(settings.build_path).exists():
        warehouse = connect_for_audit(Path(settings.build_path), settings.store_path)
    try:
        results = run_audit(con, settings, cfg, run_id=run_id, only=todo, warehouse=warehouse, skip=done)
    finally:
        if warehouse is not None:
            warehouse.close()
    con.execute("detach database if exists ingest")
    return list(evaluated) + results


def commit(settings, candidate: Candidate, code_version: str, deliveries: list[dict] | None = None,
           check_results: Any = None, *, audit: bool = True, cfg: QualityConfig | None = None,
           evaluated: list[CheckResult] | None = None) -> PublishResult:
    """Audit the candidate, write its publish log and make it the serving warehouse.

    ``evaluated``: results of checks already run on this very candidate and build warehouse
    (the Dagster asset checks of the same run); those checks are not run again on the
    targets they cover (a table, a source; every target when the result names none), every
    other check and target is. Raises :class:`quality.checks.ChecksFailed` (naming each failed check) and
    leaves the serving file untouched when a blocking check fails.
    """
    cfg = cfg or config_for(settings)
    started = time.monotonic()
    serving = Path(settings.serving_path)
    with publish_lock(settings, run_id=candidate.run_id):
        if not candidate.path.exists():
            raise PublishError(f"the candidate warehouse {candidate.path} is gone; stage it again")
        results: list[CheckResult] = []
        con = duckdb.connect(str(candidate.path))
        try:
            con.execute("set TimeZone = 'UTC'")
            served = _served_identity(settings)
            if candidate.served is not None and served != candidate.served:
                # a `jisr rollback` since staging: the candidate's cells were protected against
                # a file no longer served, and never against the one served now
                raise PublishError(
                    f"the serving warehouse changed since the candidate of run {candidate.run_id} was staged "
                    f"({candidate.served or 'nothing served'} then, {served or 'nothing served'} now: `jisr rollback`?); "
                    "its disclosure control was checked against the file served then, so it is not published: "
                    "run the refresh again")
            if audit:
                results = _audit(con, settings, cfg, candidate.run_id, list(evaluated or ()))
                failures = blocking_failures(results)
                if failures:
                    raise ChecksFailed(failures)
            notes = [] if audit else ["published without the audit (audit=False)"]
            if deliveries is None and candidate.deliveries is not None:
                deliveries = candidate.deliveries
            elif deliveries is None:  # a build made before builds recorded their deliveries
                deliveries = current_deliveries(settings)
                notes.append("deliveries: those of the raw store at publication (the build did not record its own)")
            published_at = _now()
            _write_log(con, settings, {
                "event": "publish",
                "run_id": candidate.run_id,
                "code_version": code_version,
                "published_at": published_at,
                "deliveries": json.dumps(deliveries, default=str),
                "delivery_count": len(deliveries),
                "check_results": _check_results_json(results, check_results),
                "checks_passed": not blocking_failures(results),
                "table_row_counts": json.dumps(candidate.table_row_counts),
                "disclosure": candidate.disclosure,
                "note": "; ".join(notes) or None,
            })
            con.execute("checkpoint")
        except BaseException:
            con.close()
            _remove_db(candidate.path)
            _remove_db(counts_path(settings, candidate.run_id))
            _figures_path(settings, candidate.run_id).unlink(missing_ok=True)
            raise
        con.close()
        # the record is written before the swap, so a served file always has one
        pending = _write_record(settings, candidate.run_id, code_version, published_at, deliveries)
        _fault_point("before_archive")
        try:
            archived = _archive_serving(settings, Path(settings.history_dir))
            _fault_point("before_replace")
            _swap_in(candidate.path, serving)
        except BaseException:
            if serving_run_id(serving) != candidate.run_id:
                pending.unlink(missing_ok=True)
            raise
        _fault_point("replaced")
        _confirm_record(settings, candidate.run_id)
        Path(str(candidate.path) + ".json").unlink(missing_ok=True)
        _prune(Path(settings.history_dir), cfg.history_keep)
        _prune_counts(settings)
    return PublishResult(run_id=candidate.run_id, serving_path=serving, archived_path=archived,
                         table_row_counts=candidate.table_row_counts, checks=results,
                         deliveries=len(deliveries), seconds=time.monotonic() - started)


def publish(settings, run_id: str, code_version: str, deliveries: list[dict] | None = None,
            check_results: Any = None, *, audit: bool = True, cfg: QualityConfig | None = None,
            evaluated: list[CheckResult] | None = None) -> PublishResult:
    """Stage, audit and publish the build warehouse of ``run_id`` (see the module docstring).

    ``deliveries`` defaults to the deliveries the build warehouse was built from
    (:func:`record_build_deliveries`; a build that did not record them: those of the current
    raw layer, ``meta.deliveries`` with status loaded); ``check_results`` (e.g. the Dagster check results of the run) are
    stored in the publish log next to the publish step's own audit.
    """
    started = time.monotonic()
    cfg = cfg or config_for(settings)
    candidate = stage_candidate(settings, run_id, cfg)
    result = commit(settings, candidate, code_version, deliveries, check_results, audit=audit, cfg=cfg,
                    evaluated=evaluated)
    result.seconds = time.monotonic() - started
    return result


# --- rollback ------------------------------------------------------------------------------------
def rollback(settings, cfg: QualityConfig | None = None) -> RollbackResult:
    """Serve the previous published warehouse again.

    The newest file of ``history_dir`` becomes the serving file (its publish log gains a
    ``rollback`` row with the details of that file's own newest row: its run, code version,
    deliveries, checks and row counts, also when it was itself restored by a rollback); the
    file it replaces is kept in ``history_dir/rolled_back``. Calling
    it again goes one publication further back.
    """
    cfg = cfg or config_for(settings)
    serving = Path(settings.serving_path)
    nothing = f"no earlier published warehouse in {settings.history_dir}: nothing to roll back to"
    if not history_files(settings):  # before the lock: a home never published stays as it is (not created)
        raise PublishError(nothing)
    with publish_lock(settings):
        history = history_files(settings)
        if not history:
            raise PublishError(nothing)
        source = history[-1]
        replaced = serving_run_id(serving)
        restored = serving_run_id(source)
        work = serving.with_name(f"{CANDIDATE_PREFIX}rollback-{os.getpid()}.duckdb")
        _remove_db(work)
        shutil.copyfile(source, work)
        con = duckdb.connect(str(work))
        try:
            con.execute("set TimeZone = 'UTC'")
            log = {"event": "rollback", "run_id": restored or "unknown", "published_at": _now(),
                   "note": f"rolled back from run {replaced} to run {restored}"}
            # the restored file's own newest row describes it (a publish, or a rollback to it)
            log.update(_newest_row(con, ["code_version", "deliveries", "delivery_count", "check_results",
                                         "checks_passed", "table_row_counts", "disclosure"]) or {})
            _write_log(con, settings, log)
            con.execute("checkpoint")
            published = _published_at(con)
        except BaseException:
            con.close()
            _remove_db(work)
            raise
        con.close()
        _archive_serving(settings, Path(settings.history_dir) / "rolled_back")
        _swap_in(work, serving)
        _remove_db(source)
        _prune(Path(settings.history_dir) / "rolled_back", cfg.history_keep, since=published)
    return RollbackResult(restored_run_id=restored, replaced_run_id=replaced, restored_from=source,
                          serving_path=serving)


def served_differences(settings) -> tuple[dict | None, dict[str, list[dict]]]:
    """The serving warehouse's newest publish-log row (None: nothing published) and how the
    raw store's current deliveries differ from those it was built from: ``missing`` (current,
    not built from), ``grown`` (built from, with rows loaded into them since) and ``gone``
    (built from, no longer current)."""
    log = publish_log(settings)
    if not log:
        return None, {}
    built_from = {d["delivery_id"]: d for d in json.loads(log[0].get("deliveries") or "[]")}
    current = {d["delivery_id"]: d for d in current_deliveries(settings)}
    return log[0], {
        "missing": [d for k, d in current.items() if k not in built_from],
        "grown": [d for k, d in current.items() if k in built_from
                  and built_from[k].get("rows_loaded") not in (None, d["rows_loaded"])],
        "gone": [d for k, d in built_from.items() if k not in current],
    }


def publish_log(settings) -> list[dict]:
    """Rows of the serving warehouse's publish log, newest first."""
    serving = Path(settings.serving_path)
    if not serving.exists():
        return []
    con = duckdb.connect(str(serving), read_only=True)
    try:
        cur = con.execute("select * from meta.publish_log order by published_at desc")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    except duckdb.Error:
        return []
    finally:
        con.close()
