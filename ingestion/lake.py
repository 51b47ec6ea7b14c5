"""The open raw layer: the raw tables of the internal store, with its delivery log and
quarantine ledger, written as Parquet files.

Any engine (DuckDB, Spark, Trino, pandas/pyarrow, ...) reads the same pseudonymised rows,
with their lineage columns, from this layer. It holds nothing that the raw store does not
hold (no clear identifiers; quarantined values pseudonymised as in the store).

Layout (under ``lake_dir``, by default ``$JISR_HOME/lake``): one directory per table,
``<schema>/<table>/``, named like the store's tables, so an engine maps the dbt source
``<schema>.<table>`` to the directory ``<lake>/<schema>/<table>``::

    raw/<source>/_batch=<batch>/<delivery_id>.parquet   one file per loaded delivery
    raw/<source>/_batch=__HIVE_DEFAULT_PARTITION__/empty.parquet
                                                        zero rows, only while a source has
                                                        no delivery (readers need a schema)
    meta/deliveries/deliveries.parquet                  the delivery log (``meta.deliveries``)
    quarantine/rows/rows.parquet                        the quarantine ledger (``quarantine.rows``:
                                                        values pseudonymised like the raw rows)
    meta/lake_files/lake_files.parquet                  what was exported, with currency
                                                        signatures (drives incremental export)

The delivery log and the quarantine ledger are small and rewritten on every export.

Every file has exactly the columns of ``raw.<source>`` in the same order and types
(``Contract.raw_columns``), *including* ``_batch`` and ``_is_current``. The ``_batch=``
directory level is Hive-style partitioning for engines that prune on it; the value in the
file and in the path are the same. Read ``_batch`` as text: DuckDB takes it from the file;
Spark needs ``spark.sql.sources.partitionColumnTypeInference.enabled=false`` or a study id
such as ``2019`` would come back as an integer.

Currency (``_is_current``) is exported *inside* the files, so that a plain read of the lake
gives exactly the rows of the raw store, flags included, without a join. A delivery's rows
rarely change after loading (held rows released into it, loaded rows set aside under a new
version of the contract: its row count and load time change, and its file is rewritten),
but their ``_is_current`` flags do when a later delivery
supersedes them (``replace_batch``: the whole earlier delivery; ``latest_per_key``: the
rows whose keys come again, and rows can even become current again when a corrected
re-delivery drops a key). So each export compares, per delivery, a signature of its
current rows (count and an order-free hash of their ``_source_row``) with the one recorded
at the last export, and rewrites exactly the files whose currency changed, so that readers
never have to know the supersede rules. In a monthly rhythm that is most earlier files of
each ``latest_per_key`` source (a person's, loan's or request's latest record can be in any
earlier month): at 1,000,000 beneficiaries a new month rewrote 66 of 124 files (3.6 million
rows) in about 2.5 s beside the dbt build: up to the whole of those sources each
month, against the whole lake for a full export.

Each file is written to a hidden temporary name and moved into place with ``os.replace``:
a reader sees either the previous or the new version of a file, never a partial one (there
is no snapshot isolation across files: export while no engine builds from the lake, as the
refresh does).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from ingestion.contracts import Contract

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
EMPTY_FILE = "empty.parquet"
PARQUET_OPTIONS = "(format parquet, compression zstd)"

# Characters Hive and Spark escape in partition values (``%XX``), plus anything non-ASCII.
_UNSAFE = re.compile(r'[^\x20-\x7e]|["#%\'*/:=?\\{}\[\]^ ]')

MANIFEST_DDL = """
create table lake_files (
    source varchar not null,
    delivery_id varchar not null,
    batch varchar,
    path varchar not null,               -- relative to the lake directory
    rows bigint not null,
    current_rows bigint not null,
    current_signature varchar not null,  -- changes whenever the delivery's _is_current flags change
    loaded_at timestamp,
    run_id varchar,
    schema_signature varchar not null,   -- the raw columns and types the file was written with
    exported_at timestamp not null
)"""


@dataclass(frozen=True)
class ExportedFile:
    source: str
    delivery_id: str
    batch: str | None
    path: Path
    rows: int
    current_rows: int
    reason: str  # new | currency | reload | missing | schema


@dataclass
class LakeExport:
    lake_dir: Path
    written: list[ExportedFile] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    unchanged: int = 0

    @property
    def rows_written(self) -> int:
        return sum(f.rows for f in self.written)

    def summary(self) -> str:
        return (f"lake {self.lake_dir}: {len(self.written)} file(s) written ({self.rows_written} rows), "
                f"{len(self.removed)} removed, {self.unchanged} unchanged")


def escape_partition_value(value: str | None) -> str:
    """A partition value as a directory-name component, escaped the way Hive and Spark do."""
    if value is None or value == "":
        return NULL_PARTITION
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), value)


def source_dir(lake_dir: Path, source: str) -> Path:
    return Path(lake_dir) / "raw" / source


def delivery_path(lake_dir: Path, source: str, batch: str | None, delivery_id: str) -> Path:
    return source_dir(lake_dir, source) / f"_batch={escape_partition_value(batch)}" / (
        f"{escape_partition_value(delivery_id)}.parquet")


def table_path(lake_dir: Path, schema: str, table: str) -> Path:
    """The single file of a small, rewritten table (delivery log, quarantine ledger, manifest)."""
    return Path(lake_dir) / schema / table / f"{table}.parquet"


def manifest_path(lake_dir: Path) -> Path:
    return table_path(lake_dir, "meta", "lake_files")


def deliveries_path(lake_dir: Path) -> Path:
    return table_path(lake_dir, "meta", "deliveries")


def quarantine_path(lake_dir: Path) -> Path:
    return table_path(lake_dir, "quarantine", "rows")


# Store tables exported whole on every run, in a stable order.
WHOLE_TABLES = {
    ("meta", "deliveries"): "select * from meta.deliveries order by loaded_at, delivery_id",
    ("quarantine", "rows"): "select * from quarantine.rows order by first_seen_at, delivery_id, source_row, rule",
}


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def read_raw_sql(lake_dir: Path, source: str) -> str:
    """A DuckDB table expression reading ``raw.<source>`` from the lake (all rows, all flags)."""
    pattern = source_dir(lake_dir, source) / "*" / "*.parquet"
    return f"read_parquet({_lit(pattern)}, hive_partitioning = false, union_by_name = true)"


def schema_signature(contract: Contract) -> str:
    return ",".join(f"{name} {typ}" for name, typ in contract.raw_columns.items())


def _store_signatures(con, contract: Contract) -> dict[str, tuple]:
    """Per delivery in the store: (batch, rows, current rows, currency signature, loaded_at, run_id)."""
    rows = con.execute(
        f"""select _delivery_id, any_value(_batch), count(*),
                   count(*) filter (where _is_current),
                   coalesce(bit_xor(hash(_source_row)) filter (where _is_current), 0)::varchar,
                   max(_loaded_at), any_value(_run_id)
            from raw.{contract.source} group by _delivery_id"""
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _write_atomic(con, query: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")  # hidden from Spark, DuckDB and Hive globs
    try:
        con.execute(f"copy ({query}) to {_lit(tmp)} {PARQUET_OPTIONS}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


MANIFEST_COLUMNS = ("source", "delivery_id", "batch", "path", "rows", "current_rows", "current_signature",
                    "loaded_at", "run_id", "schema_signature", "exported_at")


def _read_manifest(con, lake_dir: Path) -> dict[tuple[str, str], dict]:
    path = manifest_path(lake_dir)
    if not path.exists():
        return {}
    cur = con.execute(f"select {', '.join(MANIFEST_COLUMNS)} from read_parquet({_lit(path)})")
    return {(r[0], r[1]): dict(zip(MANIFEST_COLUMNS, r)) for r in cur.fetchall()}


def export_raw(store_path: Path, lake_dir: Path, contracts: dict[str, Contract], *,
               sources=None) -> LakeExport:
    """Bring the Parquet lake up to date with the raw store; returns what was written.

    Writes the deliveries not exported yet, rewrites the files of deliveries whose
    ``_is_current`` flags changed since their export (or that were reloaded into a rebuilt
    store, or written with other raw columns), removes files of deliveries the store no
    longer holds, and rewrites the delivery log, the quarantine ledger and the manifest.
    Opens the store read-only: call it after ingestion has closed the store.
    ``sources`` limits the export to some sources (default: every contract source).
    """
    lake_dir = Path(lake_dir)
    result = LakeExport(lake_dir=lake_dir)
    wanted = set(contracts) if sources is None else set(sources)
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        tables = {r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = 'raw'").fetchall()}
        previous = _read_manifest(con, lake_dir)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        manifest = [entry for (source, _), entry in previous.items() if source not in wanted]
        for source, contract in contracts.items():
            if source not in wanted:
                continue
            if source not in tables:
                raise RuntimeError(f"the raw store {store_path} has no table raw.{source}: run ingestion first")
            manifest += _export_source(con, lake_dir, contract, previous, result, now)
        for (schema, table), query in WHOLE_TABLES.items():
            _write_atomic(con, query, table_path(lake_dir, schema, table))
        _write_manifest(lake_dir, manifest)
    finally:
        con.close()
    return result


def _export_source(con, lake_dir: Path, contract: Contract, previous: dict, result: LakeExport,
                   now: datetime) -> list[dict]:
    source = contract.source
    schema = schema_signature(contract)
    columns = ", ".join(contract.raw_columns)
    manifest = []
    keep: set[Path] = set()
    in_store = _store_signatures(con, contract)
    for delivery_id, (batch, rows, current_rows, signature, loaded_at, run_id) in sorted(in_store.items()):
        target = delivery_path(lake_dir, source, batch, delivery_id)
        entry = dict(source=source, delivery_id=delivery_id, batch=batch, path=target.relative_to(lake_dir).as_posix(),
                     rows=rows, current_rows=current_rows, current_signature=signature, loaded_at=loaded_at,
                     run_id=run_id, schema_signature=schema, exported_at=now)
        before = previous.get((source, delivery_id))
        if before is None:
            reason = "new"
        elif before["path"] != entry["path"] or not target.exists():
            reason = "missing"
        elif before["schema_signature"] != schema:
            reason = "schema"
        elif (before["rows"], before["loaded_at"], before["run_id"]) != (rows, loaded_at, run_id):
            reason = "reload"  # the store was rebuilt: same delivery, rows written again
        elif (before["current_rows"], before["current_signature"]) != (current_rows, signature):
            reason = "currency"
        else:
            reason = None
        if reason:
            _write_atomic(con, f"select {columns} from raw.{source} where _delivery_id = {_lit(delivery_id)} "
                               "order by _source_row", target)
            result.written.append(ExportedFile(source, delivery_id, batch, target, rows, current_rows, reason))
        else:
            entry["exported_at"] = before["exported_at"]
            result.unchanged += 1
        keep.add(target)
        manifest.append(entry)
    if not in_store:
        # Engines infer a table's schema from its files: a source without delivery keeps one empty file.
        target = source_dir(lake_dir, source) / f"_batch={NULL_PARTITION}" / EMPTY_FILE
        entry = dict(source=source, delivery_id="", batch=None, path=target.relative_to(lake_dir).as_posix(),
                     rows=0, current_rows=0, current_signature="0", loaded_at=None, run_id=None,
                     schema_signature=schema, exported_at=now)
        before = previous.get((source, ""))
        if before is None or before["schema_signature"] != schema or not target.exists():
            _write_atomic(con, f"select {columns} from raw.{source} limit 0", target)
        else:
            entry["exported_at"] = before["exported_at"]
        keep.add(target)
        manifest.append(entry)
    for stale in sorted(source_dir(lake_dir, source).glob("*/*.parquet")):
        if stale not in keep:
            stale.unlink()
            result.removed.append(stale)
    for folder in source_dir(lake_dir, source).glob("_batch=*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return manifest


def _write_manifest(lake_dir: Path, manifest: list[dict]) -> None:
    mem = duckdb.connect()
    try:
        mem.execute(MANIFEST_DDL)
        if manifest:
            mem.executemany(f"insert into lake_files values ({', '.join('?' * len(MANIFEST_COLUMNS))})",
                            [[entry[c] for c in MANIFEST_COLUMNS] for entry in manifest])
        _write_atomic(mem, "select * from lake_files order by source, batch, delivery_id", manifest_path(lake_dir))
    finally:
        mem.close()
