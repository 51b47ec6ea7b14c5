"""The internal raw store: ``raw``, ``quarantine`` and ``meta`` schemas in one DuckDB file.

Only pseudonymised data is ever written here. The store is internal: it is never
published; dbt reads it (attached read-only) to build the warehouse.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import duckdb

from ingestion.contracts import Contract

DELIVERIES_DDL = """
create table if not exists meta.deliveries (
    delivery_id varchar primary key,
    source varchar not null,
    partner varchar not null,
    file_name varchar not null,
    batch varchar,
    content_hash varchar not null,
    size_bytes bigint,
    received_at timestamp,              -- when ingestion first saw the file in the landing area (see DELIVERIES_ADDED)
    loaded_at timestamp not null,
    run_id varchar,
    status varchar not null,            -- loaded | rejected | superseded
    rows_delivered bigint,
    rows_loaded bigint,
    rows_quarantined bigint,
    reason varchar,
    warnings varchar,
    contract_version varchar,
    code_version varchar,
    superseded_by varchar,              -- the delivery that replaced it; for a rejected one, the one that took effect after it
    modified_at timestamp,
    file_headers varchar                -- JSON: contract column -> header the file used (see DELIVERIES_ADDED)
)"""

# Columns added since the first stores were written: ``ensure_schema`` adds them to an
# existing store (at the end, where the DDL above has them), whose older rows keep null.
# ``modified_at``: the file's modification time as delivered (the partner's clock, which
# copies that keep times carry: sftp -p, rsync -a, unzip). ``received_at`` is not that
# time: it is when ingestion first saw the file (the landing file system's clock when the
# pass that first hashed it began; rows written before ``modified_at`` existed hold the
# modification time there). ``file_headers``: for a loaded delivery, the header each column
# had in the file (JSON object, contract column -> header), so that its partner's feedback
# rewritten later names the columns as the file did; null for a rejected file and in rows
# written before it existed (the feedback then names the header the contract asks for).
DELIVERIES_ADDED = (("modified_at", "timestamp"), ("file_headers", "varchar"))

QUARANTINE_DDL = """
create table if not exists quarantine.rows (
    delivery_id varchar not null,
    source varchar not null,
    file_name varchar not null,
    content_hash varchar not null,
    source_row bigint not null,
    rule varchar not null,
    column_name varchar,
    message varchar not null,
    values_json varchar,
    run_id varchar,
    first_seen_at timestamp not null,
    resolved_by_delivery varchar
)"""

SETTINGS_DDL = "create table if not exists meta.settings (name varchar primary key, value varchar)"

# The content hash of each landing file, with the file's attributes when it was hashed:
# a later pass that finds the same attributes takes the hash from here instead of reading
# the file again (see ingestion.load.Ingestor._content_hash).
FILE_HASHES_DDL = """
create table if not exists meta.file_hashes (
    path varchar primary key,           -- <partner>/<file name> in the landing area
    size_bytes ubigint not null,
    mtime_ns bigint not null,
    ctime_ns bigint not null,
    inode ubigint not null,
    device ubigint not null,
    content_hash varchar not null,
    hashed_at_ns bigint not null,       -- the landing file system's time when that pass began (.jisr-clock)
    first_seen_ns bigint                -- the same clock when a pass first hashed this content at this path
)"""
FILE_HASHES_ADDED = (("first_seen_ns", "bigint"),)  # null in older stores: hashed_at_ns stands for it


# The deliveries whose loaded rows were checked again under a later version of their
# contract (see ingestion.load.Ingestor._recheck): once per delivery and contract version.
RECHECKS_DDL = """
create table if not exists meta.rechecks (
    delivery_id varchar not null,
    contract_version varchar not null,  -- the version whose rules the rows were checked against
    run_id varchar,
    checked_at timestamp not null,
    rows_quarantined bigint not null,   -- loaded rows moved to quarantine: failing them, or held for a row that did
    primary key (delivery_id, contract_version)
)"""


class KeyMismatchError(RuntimeError):
    """The store was written with another pseudonymisation key."""


def connect(path: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    return con


def ensure_schema(con, contracts: dict[str, Contract]) -> None:
    """Create schemas and every raw table, so downstream models build even before the
    first delivery of a source."""
    for schema in ("raw", "quarantine", "meta"):
        con.execute(f"create schema if not exists {schema}")
    con.execute(DELIVERIES_DDL)
    con.execute(QUARANTINE_DDL)
    con.execute(SETTINGS_DDL)
    con.execute(FILE_HASHES_DDL)
    con.execute(RECHECKS_DDL)
    for table, added in (("meta.deliveries", DELIVERIES_ADDED), ("meta.file_hashes", FILE_HASHES_ADDED)):
        for column, kind in added:
            con.execute(f"alter table {table} add column if not exists {column} {kind}")
    for contract in contracts.values():
        cols = ", ".join(f"{name} {typ}" for name, typ in contract.raw_columns.items())
        con.execute(f"create table if not exists raw.{contract.source} ({cols})")
    # a column added to a contract since its table was created: empty in the rows loaded
    # before (the inserts name their columns, so its place in the table does not matter)
    stored = set(con.execute("select table_name, column_name from duckdb_columns() where "
                             "database_name = current_database() and schema_name = 'raw'").fetchall())
    for contract in contracts.values():
        for name, typ in contract.raw_columns.items():
            if (contract.source, name) not in stored:
                con.execute(f"alter table raw.{contract.source} add column {name} {typ}")


def check_key(con, fingerprint: str) -> None:
    """Record the key fingerprint on first use; refuse a different key afterwards."""
    row = con.execute("select value from meta.settings where name = 'key_fingerprint'").fetchone()
    if row is None:
        con.execute("insert into meta.settings values ('key_fingerprint', ?)", [fingerprint])
    elif row[0] != fingerprint:
        raise KeyMismatchError(
            "the pseudonymisation key differs from the one this raw store was written with "
            f"(fingerprint {fingerprint} vs {row[0]}): pseudonyms would no longer link people "
            "across deliveries. Use the original key, or start a new store."
        )


@contextmanager
def transaction(con):
    """One transaction on ``con``: committed when the block ends, rolled back if it raises."""
    con.execute("begin transaction")
    try:
        yield
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
