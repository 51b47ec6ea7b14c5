"""PostgreSQL serving target: the same dbt project and published marts on a PostgreSQL server.

Most BI tools speak PostgreSQL natively. ``publish_postgres(settings, dsn)``:

0. refuses, before changing anything, unless the raw store holds exactly the deliveries
   the served DuckDB warehouse was built from (its ``meta.publish_log``): after a rollback,
   a refused publication or an ingestion without a build, the raw store holds deliveries
   the serving file does not serve, and the marts built from it would differ;
1. copies the raw layer (the pseudonymised raw store tables, the quarantine and the
   delivery log) into the schemas ``raw``, ``quarantine`` and ``meta`` of the database,
   with psycopg2 ``COPY`` from CSV streams (the DuckDB postgres extension cannot be
   downloaded here);
2. runs the same dbt project with ``--target postgres`` (``dbt build``: seeds, models,
   tests) into schemas beside those readers use (``marts__next``, ``detail__next``, ...:
   ``JISR_SCHEMA_SUFFIX``, dbt_project/macros/generate_schema_name.sql), and copies the
   impact tables of the published DuckDB warehouse (computed in Python by the impact
   stage) into ``impact__next``: readers go on reading the publication served until now
   while this one is built, and a publication that fails leaves it served. A dbt test that
   fails stops it, the error naming the test, what it checks and the first rows it failed
   on (:func:`dbt_failures`: its query run again, read-only, on the schemas just built);
3. in ONE transaction (:func:`_swap_in`): renames the schemas served until now to
   ``<schema>__retired`` and the new ones to their names, applies disclosure control
   (quality/disclosure.py) to the marts: the served DuckDB warehouse's pattern, the same
   cells hidden (two copies of one publication with two patterns would give back,
   together, what each hides), refusing when a mart's cells or published counts differ from
   the served ones, and when its check fails; records the publication in
   ``meta.publish_log`` (with the run id and the deliveries of the served DuckDB warehouse)
   and (re)creates the read-only role ``evaluator``: USAGE and SELECT on the published
   schemas (``publish.schemas`` of config/quality.yml: ``marts`` and ``impact``) and
   ``meta.publish_log`` only, default privileges so tables created there later are readable
   too, no USAGE on ``raw``, ``staging``, ``intermediate``, ``detail`` (person-level
   tables), ``quarantine``, ``seeds`` or the schemas built or retired, no CREATE anywhere
   (no CREATE on the database or any schema, no TEMPORARY), and read-only transactions.
   Until it commits, other sessions see the schemas as they were (PostgreSQL's catalog is
   transactional); at its commit they see the new publication, protected and granted,
   all at once (the tables of the published schemas are written again in it, so that a
   REPEATABLE READ or SERIALIZABLE transaction begun before finds them empty, never as
   dbt built them before disclosure control). A query running then finishes on the tables
   it started on;
4. drops the retired schemas (waiting for such queries; left to the next publication if
   one outlasts the lock timeout).

The owner in ``dsn`` owns the database and needs CREATEROLE (or the role exists already).
``evaluator`` is a group role; give people their own login roles that are members of it
(``create role alice login password '...' in role evaluator``), or pass
``evaluator_password`` to let the role log in itself.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from jisr.settings import Settings
from quality.config import DEFAULT_PUBLISH_SCHEMAS, config_for

EVALUATOR = "evaluator"
# A reader's session left idle inside a transaction (psycopg2's default after a query) holds
# its tables until it ends, and dbt's rebuild of a mart waits for it: such sessions of the
# evaluator role end after READER_IDLE_TIMEOUT, and the publication waits at most
# PUBLISH_LOCK_TIMEOUT for a table (a query running longer than that fails the publication,
# which says so) instead of waiting for good with the published schemas closed.
READER_IDLE_TIMEOUT = "10min"
PUBLISH_LOCK_TIMEOUT = "15min"
INTERNAL_SCHEMAS = ("raw", "quarantine", "staging", "intermediate", "detail", "seeds", "public")
# a publication builds every schema of dbt and `impact` under <schema>__next, and renames the
# schemas it replaces to <schema>__retired (see the module docstring)
NEXT, RETIRED = "__next", "__retired"
# how long a publication, once made, waits for the queries still reading the schemas it
# retired before leaving them to the next one
RETIRE_WAIT = "30s"
# key of the session-level advisory lock a publication holds on its database from start to end
# (two at once would drop, build and rename each other's schemas)
PUBLISH_ADVISORY_LOCK = 0x4A495352
BATCH_ROWS = 100_000

PUBLISH_LOG_DDL = """
create table if not exists meta.publish_log (
    published_at timestamptz not null,
    target varchar not null,
    code_version varchar,
    raw_tables integer,
    raw_rows bigint,
    dbt_invocation_id varchar,
    tables_protected varchar,
    note varchar,
    run_id varchar,
    deliveries jsonb,
    delivery_count integer
)"""
# columns added since the first version of the table (a database published to before gets them)
PUBLISH_LOG_ADDED = (("run_id", "varchar"), ("deliveries", "jsonb"), ("delivery_count", "integer"))
# what BI tools show for it (the only table of `meta` the evaluator role reads)
PUBLISH_LOG_DESCRIPTIONS = {
    None: "One row per publication of this database by jisr publish-postgres: the run of the served DuckDB "
          "warehouse whose deliveries it publishes, the code version, and what disclosure control did.",
    "published_at": "When this publication was made (UTC).",
    "target": "postgres.",
    "code_version": "Version of the code that built it (git describe; -dirty.<hash> for uncommitted changes).",
    "raw_tables": "Raw layer tables copied from the raw store (pseudonymised).",
    "raw_rows": "Rows of those tables.",
    "dbt_invocation_id": "dbt's id of the build (its run_results.json).",
    "tables_protected": "How disclosure control was applied, per protected mart (the served DuckDB warehouse's pattern).",
    "note": "Findings of disclosure control that do not block (without the cells concerned).",
    "run_id": "Dagster run of the served DuckDB warehouse whose deliveries this publication publishes.",
    "deliveries": ("Those deliveries: delivery id, source, batch, file name, SHA-256 of the file, rows loaded, and "
                   "the run that loaded it and when (UTC)."),
    "delivery_count": "Number of those deliveries.",
}


class PostgresPublishError(RuntimeError):
    """The PostgreSQL target could not be built or failed its checks."""


class NotServed(PostgresPublishError):
    """The raw store does not hold what the served DuckDB warehouse was built from
    (``served``: its publish-log row)."""

    def __init__(self, served: dict, message: str):
        super().__init__(message)
        self.served = served


@dataclass
class PostgresPublishResult:
    run_id: str | None = None  # run of the served DuckDB warehouse, whose deliveries this publishes
    deliveries: list[dict] = field(default_factory=list)
    raw_rows: dict[str, int] = field(default_factory=dict)
    impact_tables: list[str] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)
    disclosure_warnings: list[str] = field(default_factory=list)
    published_schemas: tuple[str, ...] = DEFAULT_PUBLISH_SCHEMAS
    left_retired: list[str] = field(default_factory=list)  # schemas a reader's query kept from being dropped

    def report(self) -> str:
        lines = [f"The deliveries of the served DuckDB warehouse (run {self.run_id}): {len(self.deliveries)}.",
                 f"Raw layer copied: {len(self.raw_rows)} tables, {sum(self.raw_rows.values())} rows."]
        if self.impact_tables:
            lines.append(f"Impact tables copied: {', '.join(self.impact_tables)}.")
        lines += [f"Disclosure control: {p}" for p in self.protected]
        lines += [f"Disclosure warning (not blocking): {w}" for w in self.disclosure_warnings]
        lines.append(f"Role {EVALUATOR}: SELECT on {', '.join(self.published_schemas)} and meta.publish_log only.")
        if self.left_retired:
            lines.append(f"Left for the next publication to drop (a query still read them after {RETIRE_WAIT}): "
                         f"{', '.join(self.left_retired)}.")
        return "\n".join(lines)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pg_type(duckdb_type: str) -> str:
    """The PostgreSQL type of a DuckDB column type (scalar types of the raw layer)."""
    t = duckdb_type.upper().strip()
    if t.startswith("DECIMAL") or t.startswith("NUMERIC"):
        return t.replace("DECIMAL", "numeric")
    if t.startswith("TIMESTAMP WITH TIME ZONE") or t == "TIMESTAMPTZ":
        return "timestamptz"
    if t.startswith("TIMESTAMP"):
        return "timestamp"
    return {
        "BOOLEAN": "boolean", "TINYINT": "smallint", "SMALLINT": "smallint", "INTEGER": "integer",
        "BIGINT": "bigint", "HUGEINT": "numeric(39, 0)", "UTINYINT": "smallint", "USMALLINT": "integer",
        "UINTEGER": "bigint", "UBIGINT": "numeric(20, 0)", "UHUGEINT": "numeric(39, 0)", "FLOAT": "real",
        "DOUBLE": "double precision", "DATE": "date", "TIME": "time", "INTERVAL": "interval", "UUID": "uuid",
        "VARCHAR": "text", "BLOB": "bytea", "JSON": "jsonb",
    }.get(t, "text")


def connect(dsn: str):
    import psycopg2

    try:
        return psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise PostgresPublishError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from exc


def copy_duckdb_table(duck, pg, schema: str, table_name: str, target_schema: str | None = None) -> int:
    """Replace ``schema.table_name`` in PostgreSQL (``target_schema.table_name`` if given) with
    the DuckDB table ``schema.table_name``, with its table and column comments (what BI tools
    show as descriptions).

    Streams Arrow record batches written as CSV into ``COPY ... FROM STDIN`` (one
    transaction: readers see the old table or the new one, never half of it).
    """
    import pyarrow.csv as pacsv

    source = f"{_q(schema)}.{_q(table_name)}"
    table = f"{_q(target_schema or schema)}.{_q(table_name)}"
    columns = duck.execute(f"describe {source}").fetchall()
    names = [c[0] for c in columns]
    ddl = ", ".join(f"{_q(name)} {pg_type(typ)}" for name, typ, *_ in columns)
    select = ", ".join(
        f"cast({_q(name)} as varchar) as {_q(name)}" if pg_type(typ) in ("text", "jsonb", "bytea") and typ.upper() != "VARCHAR"
        else _q(name) for name, typ, *_ in columns)
    rows = 0
    with pg.cursor() as cur:
        cur.execute(f"create schema if not exists {_q(target_schema or schema)}")
        cur.execute(f"drop table if exists {table} cascade")
        cur.execute(f"create table {table} ({ddl})")
        reader = duck.sql(f"select {select} from {source}").to_arrow_reader(BATCH_ROWS)
        column_list = ", ".join(_q(n) for n in names)
        options = pacsv.WriteOptions(include_header=False)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            buffer = io.BytesIO()
            pacsv.write_csv(batch, buffer, write_options=options)
            buffer.seek(0)
            cur.copy_expert(f"copy {table} ({column_list}) from stdin with (format csv)", buffer)
            rows += batch.num_rows
        comments = duck.execute(
            "select null, comment from duckdb_tables() where database_name = current_database() and schema_name = ? "
            "and table_name = ? and coalesce(comment, '') <> '' union all "
            "select column_name, comment from duckdb_columns() where database_name = current_database() "
            "and schema_name = ? and table_name = ? and coalesce(comment, '') <> ''",
            [schema, table_name, schema, table_name]).fetchall()
        for column, text in comments:
            what = f"table {table}" if column is None else f"column {table}.{_q(column)}"
            cur.execute(f"comment on {what} is %s", (text,))
    pg.commit()
    return rows


def copy_raw_layer(settings: Settings, pg) -> dict[str, int]:
    """Copy the raw store into the same schemas of PostgreSQL: every ``raw`` and
    ``quarantine`` table and the delivery log ``meta.deliveries`` (internal: the evaluator
    role cannot read them). Outside ``raw``, the tables are those the open raw layer exports
    too (``ingestion.lake.WHOLE_TABLES``, dbt sources): the store's key fingerprint
    (``meta.settings``) is not copied."""
    import duckdb

    from ingestion.lake import WHOLE_TABLES

    if not settings.store_path.exists():
        raise PostgresPublishError(f"no raw store at {settings.store_path}: run `jisr refresh` first")
    try:
        duck = duckdb.connect(str(settings.store_path), read_only=True)
    except duckdb.Error as exc:
        raise PostgresPublishError(f"cannot open the raw store (is a refresh running?): {exc}") from exc
    try:
        tables = [(schema, table) for schema, table in duck.execute(
            "select schema_name, table_name from duckdb_tables() order by 1, 2").fetchall()
            if schema in ("raw", "quarantine") or (schema, table) in WHOLE_TABLES]
        counts = {}
        for schema, table in tables:
            counts[f"{schema}.{table}"] = copy_duckdb_table(duck, pg, schema, table)
        return counts
    finally:
        duck.close()


def copy_impact_tables(settings: Settings, pg) -> list[str]:
    """Copy schema impact of the published DuckDB warehouse (impact estimates are computed in
    Python by the impact stage, not by dbt) into ``impact__next``, renamed in with the marts."""
    import duckdb

    if not settings.serving_path.exists():
        return []
    duck = duckdb.connect(str(settings.serving_path), read_only=True)
    try:
        tables = [r[0] for r in duck.execute(
            "select table_name from duckdb_tables() where schema_name = 'impact' order by 1").fetchall()]
        for table in tables:
            copy_duckdb_table(duck, pg, "impact", table, target_schema="impact" + NEXT)
        return tables
    finally:
        duck.close()


# libpq parameters of the DSN that dbt's profile does not read, passed as libpq's variables
LIBPQ_ENVIRONMENT = (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT"), ("sslcert", "PGSSLCERT"),
                     ("sslkey", "PGSSLKEY"), ("connect_timeout", "PGCONNECT_TIMEOUT"))


def resolved_dsn(dsn: str) -> str:
    """``dsn`` completed with what libpq resolves when connecting with it: the password from
    ``PGPASSWORD`` or ``~/.pgpass``, and host, port, user and database from ``PG*`` variables
    or defaults. dbt connects with what its profile gives it (a password left out there is
    the profile's default, not the owner's), so it gets them all."""
    from psycopg2.extensions import make_dsn

    pg = connect(dsn)
    try:
        info = pg.info
        resolved = {"host": info.host, "port": info.port, "user": info.user, "dbname": info.dbname,
                    "password": info.password}
    finally:
        pg.close()
    return make_dsn(dsn, **{key: value for key, value in resolved.items() if value not in (None, "")})


def dbt_environment(settings: Settings, dsn: str) -> dict[str, str]:
    """Environment for ``dbt --target postgres``: the profile reads JISR_PG_* variables, set
    from ``dsn`` as libpq resolves it (never left to the caller's JISR_PG_* variables, which
    could name another server, or to the profile's defaults)."""
    from psycopg2.extensions import parse_dsn

    parts = parse_dsn(resolved_dsn(dsn))
    env = settings.dbt_env()
    env["JISR_DBT_TARGET"] = "postgres"
    for key, var in (("host", "JISR_PG_HOST"), ("port", "JISR_PG_PORT"), ("user", "JISR_PG_USER"),
                     ("password", "JISR_PG_PASSWORD"), ("dbname", "JISR_PG_DBNAME")):
        env.pop(var, None)
        if parts.get(key):
            env[var] = str(parts[key])
    for key, var in LIBPQ_ENVIRONMENT:
        if parts.get(key):
            env[var] = str(parts[key])
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} -c lock_timeout={PUBLISH_LOCK_TIMEOUT}".strip()
    env["JISR_SCHEMA_SUFFIX"] = NEXT  # beside the schemas readers use, renamed in once protected
    env["DBT_USE_COLORS"] = "False"  # its output ends up in an error message, not on a terminal
    return env


def run_dbt(settings: Settings, dsn: str) -> None:
    """``dbt build --target postgres`` of the project. Raises on failure: with the failing
    tests, what each checks and the first rows it failed on (:func:`dbt_failures`), and the
    nodes that errored; with dbt's last lines when its results say nothing of it."""
    from jisr.dbt import dbt_executable, dies_with_this_process

    work = _dbt_work_dir(settings)
    earlier = work / "target" / "run_results.json"  # an earlier build's results, not this one's
    if earlier.is_file():
        earlier.unlink()
    command = [str(dbt_executable()), "build", "--target", "postgres", "--no-version-check",
               "--project-dir", str(settings.dbt_project_dir),
               "--profiles-dir", str(settings.dbt_project_dir),
               "--target-path", str(work / "target"), "--log-path", str(work / "logs")]
    # a publication killed outright must not leave its dbt building <schema>__next beside the next one
    proc = subprocess.run(command, env=dbt_environment(settings, dsn), capture_output=True, text=True,
                          cwd=settings.dbt_project_dir, preexec_fn=dies_with_this_process())
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        waited = (f"\nA table stayed locked for {PUBLISH_LOCK_TIMEOUT} (`lock timeout` above): a reader's query ran "
                  "that long, or a session of a login that does not end idle transactions held it (see "
                  "pg_stat_activity); run this again once it has ended." if "lock timeout" in output else "")
        failed = [r for r in dbt_failures(settings, dsn) if r.blocks]
        if failed:
            raise PostgresPublishError(
                "dbt build --target postgres failed, this publication is not made (readers go on reading the one "
                "PostgreSQL served until now):\n"
                + "\n".join(f"    * {r.check}: {r.description}"
                            + (f"\n      it checks: {r.metadata['checks']}" if r.metadata.get("checks") else "")
                            for r in failed)
                + f"\n  dbt's log of this build: {work / 'logs' / 'dbt.log'}{waited}")
        tail = "\n".join(output.strip().splitlines()[-40:])
        raise PostgresPublishError(f"dbt build --target postgres failed (exit {proc.returncode}):\n{tail}{waited}")


def dbt_failures(settings: Settings, dsn: str) -> list:
    """What the last ``dbt build --target postgres`` says of its gates (quality.checks.CheckResult,
    as a DuckDB build's quality report has them): each test that did not pass, with what it
    checks and the first rows it failed on, its query run again on the schemas dbt built
    (``<schema>__next``, which no reader can read; left for the next publication to drop) in
    a read-only session of the owner, and each node that errored. The rows, of internal
    models too (pseudonymous keys), are for the one publishing only: they go into the error,
    never into the database (``meta.publish_log`` is the evaluator role's)."""
    from quality.checks import dbt_build_results

    target = _dbt_work_dir(settings) / "target"
    try:
        manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    try:
        pg = connect(dsn)
    except PostgresPublishError:  # the server went away: the tests that failed, without their rows
        return dbt_build_results(target / "run_results.json", manifest=manifest)
    try:
        pg.set_session(readonly=True, autocommit=True)  # a query that fails leaves the next one its session
        return dbt_build_results(target / "run_results.json", con=pg, manifest=manifest)
    finally:
        pg.close()


def close_published(pg, evaluator: str = EVALUATOR) -> None:
    """Take USAGE on every schema away from the evaluator role (after a rollback: see
    :func:`close_rolled_back`), until the next publication grants it again."""
    with pg.cursor() as cur:
        if not _role_exists(cur, evaluator):
            return
        for schema in _schemas(cur):
            cur.execute(f"revoke usage on schema {_q(schema)} from {_q(evaluator)}")
    pg.commit()


def _schemas(cur) -> list[str]:
    """The database's own schemas (not PostgreSQL's catalogs)."""
    cur.execute("select nspname from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema'")
    return [schema for (schema,) in cur.fetchall()]


def _role_exists(cur, role: str) -> bool:
    cur.execute("select 1 from pg_roles where rolname = %s", [role])
    return cur.fetchone() is not None


def foreign_create(cur, evaluator: str = EVALUATOR) -> list[tuple[str, str]]:
    """(schema, owner) of each schema of the database in which the evaluator role (or, before
    it exists, PUBLIC) may create objects and whose owner is not the current user, who cannot
    take that right back: the ``public`` schema of a database of PostgreSQL 14 or earlier
    (owned by the bootstrap superuser, CREATE for PUBLIC), kept by pg_upgrade."""
    who = evaluator if _role_exists(cur, evaluator) else "public"
    cur.execute("select nspname, pg_get_userbyid(nspowner) from pg_namespace where nspname not like 'pg\\_%%' "
                "and nspname <> 'information_schema' and has_schema_privilege(%s, oid, 'CREATE') "
                "and not pg_has_role(current_user, nspowner, 'USAGE') order by 1", [who])
    return cur.fetchall()


def refuse_foreign_create(cur, evaluator: str = EVALUATOR) -> None:
    """Raise when readers can create objects in a schema the owner cannot close: a function
    or operator planted in ``public`` (on the search path of every session, dbt's included)
    would run as the owner when the publication calls one of that name."""
    found = foreign_create(cur, evaluator)
    if found:
        cur.execute("select current_database(), current_user")
        database, owner = cur.fetchone()
        raise PostgresPublishError(
            "readers may create objects in " + ", ".join(f"schema {s} (owner {o})" for s, o in found)
            + f" of database {database}, and {owner} cannot take that right back (not the owner; PostgreSQL 14 "
            "and earlier create `public` so): a function or operator planted there would run with the rights of "
            f"{owner} when the publication calls one of that name. Nothing was changed: readers go on reading "
            f"the publication served until now. As the schema's owner or a superuser, in database {database}: "
            + "; ".join(f"revoke create on schema {_q(s)} from public" for s, _ in found)
            + f" (or: alter schema ... owner to {_q(owner)}); then run this again.")


def apply_grants(pg, evaluator: str = EVALUATOR, evaluator_password: str | None = None,
                 schemas: tuple[str, ...] = DEFAULT_PUBLISH_SCHEMAS, *, commit: bool = True) -> None:
    """Create (or reset) the read-only evaluator role: SELECT on the published schemas
    (``publish.schemas`` of config/quality.yml) and ``meta.publish_log`` only (``commit``
    False: in the caller's transaction)."""
    schemas = tuple(schemas)
    with pg.cursor() as cur:
        cur.execute("select current_database(), current_user")
        database, owner = cur.fetchone()
        if not _role_exists(cur, evaluator):
            cur.execute(f"create role {_q(evaluator)} nologin")
        if evaluator_password is not None:
            cur.execute(f"alter role {_q(evaluator)} login password %s", [evaluator_password])
        cur.execute(f"alter role {_q(evaluator)} set default_transaction_read_only = on")
        cur.execute(f"alter role {_q(evaluator)} set idle_in_transaction_session_timeout = %s", [READER_IDLE_TIMEOUT])
        # Nothing by default: no CREATE or TEMPORARY on the database for anyone but the owner.
        cur.execute(f"revoke create, temporary on database {_q(database)} from public")
        cur.execute(f"revoke all on database {_q(database)} from {_q(evaluator)}")
        cur.execute(f"grant connect on database {_q(database)} to {_q(evaluator)}")
        cur.execute("revoke all on schema public from public")
        cur.execute(f"revoke all on schema public from {_q(evaluator)}")
        for schema in _schemas(cur):
            if schema in schemas or schema == "meta":
                continue
            cur.execute(f"revoke all on schema {_q(schema)} from {_q(evaluator)}")
            cur.execute(f"revoke all on all tables in schema {_q(schema)} from {_q(evaluator)}")
            # a schema published before: its later tables are not the evaluator's either
            cur.execute(f"alter default privileges for role {_q(owner)} in schema {_q(schema)} "
                        f"revoke select on tables from {_q(evaluator)}")
            if schema in INTERNAL_SCHEMAS:
                cur.execute(f"revoke all on schema {_q(schema)} from public")
        refuse_foreign_create(cur, evaluator)  # before any schema is opened to the role
        for schema in schemas + ("meta",):
            cur.execute(f"create schema if not exists {_q(schema)}")
            cur.execute(f"revoke create on schema {_q(schema)} from public")
            cur.execute(f"revoke create on schema {_q(schema)} from {_q(evaluator)}")
            cur.execute(f"grant usage on schema {_q(schema)} to {_q(evaluator)}")
        for schema in schemas:
            cur.execute(f"grant select on all tables in schema {_q(schema)} to {_q(evaluator)}")
            cur.execute(f"alter default privileges for role {_q(owner)} in schema {_q(schema)} "
                        f"grant select on tables to {_q(evaluator)}")
        cur.execute(PUBLISH_LOG_DDL)
        cur.execute(f"revoke all on all tables in schema meta from {_q(evaluator)}")
        cur.execute(f"grant select on meta.publish_log to {_q(evaluator)}")
    if commit:
        pg.commit()


def protect_marts(settings: Settings, pg, run_id: str | None = None, *,
                  in_transaction: bool = False) -> tuple[list[str], list[str]]:
    """Disclosure control on the PostgreSQL marts, hiding the cells the served DuckDB
    warehouse hides: (tables protected, warnings that do not block); raises if the marts'
    cells differ from the served ones, the served warehouse is no longer that of ``run_id``
    (the run whose deliveries the marts were built from), or a blocking finding remains, as
    the publication of the serving file does (``in_transaction``: every change in the
    caller's transaction)."""
    import duckdb

    from quality.disclosure import PatternMismatch, protect, published_pattern, review

    with duckdb.connect(str(settings.serving_path), read_only=True) as served:  # one snapshot of the file
        newest = None if run_id is None else served.execute(
            "select run_id from meta.publish_log order by published_at desc limit 1").fetchone()
        pattern = published_pattern(served, settings)
    if run_id is not None and (newest is None or newest[0] != run_id):
        raise PostgresPublishError(
            f"the served DuckDB warehouse changed while this ran (run {run_id} when it started, now "
            f"{newest[0] if newest else 'none'}); this publication is not made (readers go on reading the one "
            "PostgreSQL served until now). Run this again.")
    try:
        report = protect(pg, settings, follow=pattern, in_transaction=in_transaction)
    except PatternMismatch as exc:
        raise PostgresPublishError(
            f"the PostgreSQL marts are not the served DuckDB warehouse's, so they cannot take its pattern of "
            f"suppressed cells (here: PostgreSQL; there: {settings.serving_path}): {exc}. This publication is not made "
            "(readers go on reading the one PostgreSQL served until now). Either the served warehouse was built by another version of the code or of "
            "config/disclosure.yml (publish to DuckDB again with `jisr refresh`, then run this again), or a "
            "model computes differently on PostgreSQL than on DuckDB (a bug to report with this message)."
        ) from exc
    findings = review(pg, settings)
    blocking = [v for v in findings if v.blocking]
    if blocking:
        raise PostgresPublishError("disclosure check failed, this publication is not made (readers go on reading "
                                   "the one PostgreSQL served until now):\n"
                                   + "\n".join(f"  - {v}" for v in blocking))
    # the warnings go into meta.publish_log, which the evaluator role reads: not their cells
    return [str(r) for r in report], [v.brief for v in findings if not v.blocking]


def _dbt_work_dir(settings: Settings) -> Path:
    """dbt's target and logs for the PostgreSQL build (with the other dbt state of this home,
    not next to the serving file)."""
    from jisr.dbt import state_dir

    return state_dir(settings) / "postgres"


def _dbt_invocation_id(settings: Settings) -> str | None:
    try:
        results = json.loads((_dbt_work_dir(settings) / "target" / "run_results.json").read_text(encoding="utf-8"))
        return results["metadata"]["invocation_id"]
    except (OSError, ValueError, KeyError):
        return None


def served_publication(settings: Settings) -> dict:
    """The publish-log row of the served DuckDB warehouse, when the raw store holds exactly
    the deliveries it was built from (rows included); raises otherwise. The PostgreSQL target
    builds its marts from the raw store: after a rollback, a refused publication or an
    ingestion without a build, it would publish figures the serving file does not."""
    from jisr.publish import served_differences

    served, differences = served_differences(settings)
    if served is None:
        raise PostgresPublishError(f"no warehouse is published at {settings.serving_path}: run `jisr refresh` "
                                   "first (PostgreSQL publishes the deliveries the serving DuckDB file serves)")
    what = {"missing": "current delivery(ies) it was not built from",
            "grown": "delivery(ies) with rows loaded since it was built",
            "gone": "delivery(ies) it was built from that are no longer current"}
    problems = [f"{len(differences[k])} {what[k]} ({', '.join(d['file_name'] for d in differences[k][:5])}"
                + (", ..." if len(differences[k]) > 5 else "") + ")" for k in what if differences.get(k)]
    if problems:
        event = "published by" if served["event"] == "publish" else "rolled back to the warehouse of"
        raise NotServed(served,
            f"the raw store does not hold what the served DuckDB warehouse was built from ({event} run "
            f"{served['run_id']}): " + "; ".join(problems) + ". PostgreSQL builds its marts from the raw "
            "store, so it would publish figures the serving file does not; nothing was changed. Publish them "
            "to DuckDB first (`jisr refresh`; `jisr status` says what is not published), then run this again.")
    return served


def close_rolled_back(dsn: str, served_run: str) -> str | None:
    """After ``jisr rollback``: when the PostgreSQL target serves another publication than the
    one the DuckDB warehouse was rolled back to (``served_run``), the one rolled back from,
    close its published schemas to the evaluator role and return its run id; else None.
    PostgreSQL builds from the raw store, which still holds the deliveries rolled back, so
    it cannot serve the earlier publication again: it serves nothing until the next one."""
    pg = connect(dsn)
    try:
        with pg.cursor() as cur:
            cur.execute("select to_regclass('meta.publish_log') is not null")
            if not cur.fetchone()[0]:
                return None
            cur.execute("select run_id from meta.publish_log order by published_at desc limit 1")
            row = cur.fetchone()
        if row is None or row[0] in (None, served_run):
            return None
        close_published(pg)
        return row[0]
    finally:
        pg.close()


def record_publication(settings: Settings, pg, result: PostgresPublishResult, *, commit: bool = True) -> None:
    """A row of ``meta.publish_log`` for this publication (``commit`` False: in the caller's
    transaction)."""
    with pg.cursor() as cur:
        cur.execute("create schema if not exists meta")
        cur.execute(PUBLISH_LOG_DDL)
        cur.execute("select column_name from information_schema.columns where table_schema = 'meta' "
                    "and table_name = 'publish_log'")
        present = {name for (name,) in cur.fetchall()}
        for column, kind in PUBLISH_LOG_ADDED:  # altered only when needed: it locks out the log's readers
            if column not in present:
                cur.execute(f"alter table meta.publish_log add column {_q(column)} {kind}")
        cur.execute("insert into meta.publish_log (published_at, target, code_version, raw_tables, raw_rows, "
                    "dbt_invocation_id, tables_protected, note, run_id, deliveries, delivery_count) "
                    "values (%s, 'postgres', %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [datetime.now(timezone.utc), settings.code_version, len(result.raw_rows),
                     sum(result.raw_rows.values()), _dbt_invocation_id(settings),
                     "; ".join(result.protected), "; ".join(result.disclosure_warnings) or None,
                     result.run_id, json.dumps(result.deliveries, default=str), len(result.deliveries)])
        for column, text in PUBLISH_LOG_DESCRIPTIONS.items():
            what = "table meta.publish_log" if column is None else f"column meta.publish_log.{_q(column)}"
            cur.execute(f"comment on {what} is %s", (text,))
    if commit:
        pg.commit()


def publish_postgres(settings: Settings, dsn: str, *,
                     evaluator_password: str | None = None) -> PostgresPublishResult:
    """Build and publish the warehouse on PostgreSQL (see the module docstring)."""
    schemas = config_for(settings).publish_schemas
    try:
        served = served_publication(settings)  # before anything is changed
    except NotServed as exc:
        if exc.served["event"] != "rollback":
            raise
        try:
            held = close_rolled_back(dsn, exc.served["run_id"])
        except PostgresPublishError as unreachable:  # the refusal, and why nothing could be closed
            raise PostgresPublishError(f"{exc} ({unreachable}: if PostgreSQL serves the publication rolled back "
                                       "from, it serves it still)") from None
        if held:
            raise PostgresPublishError(
                f"{exc} PostgreSQL served the publication of run {held}, which the DuckDB serving warehouse was "
                f"rolled back from: its published schemas are now closed to {EVALUATOR}, until a publication "
                "succeeds.") from None
        raise
    pg = connect(dsn)
    result = PostgresPublishResult(published_schemas=schemas, run_id=served["run_id"],
                                   deliveries=json.loads(served.get("deliveries") or "[]"))
    try:
        with pg.cursor() as cur:
            cur.execute("select pg_try_advisory_lock(%s)", [PUBLISH_ADVISORY_LOCK])  # until pg is closed
            if not cur.fetchone()[0]:
                raise PostgresPublishError(
                    "another publication to this database is running (an advisory lock of "
                    f"{PUBLISH_ADVISORY_LOCK}, see pg_locks); nothing was changed: run this again once it has ended")
            refuse_foreign_create(cur)  # before the owner runs anything a reader could have planted
        pg.commit()
        left = _drop_shadows(pg)  # what an earlier publication left
        if left:
            raise PostgresPublishError(
                f"schemas {', '.join(left)} of an earlier publication are still read by a query after "
                f"{PUBLISH_LOCK_TIMEOUT} (see pg_stat_activity); nothing was changed: run this again once it has "
                "ended")
        result.raw_rows = copy_raw_layer(settings, pg)
        run_dbt(settings, dsn)
        result.impact_tables = copy_impact_tables(settings, pg)
        try:  # one transaction: readers see the publication served until now, or this one
            swapped = _swap_in(pg)
            result.protected, result.disclosure_warnings = protect_marts(settings, pg, run_id=served["run_id"],
                                                                         in_transaction=True)
            _rewrite_tables(pg, [s for s in swapped if s in schemas])
            record_publication(settings, pg, result, commit=False)
            apply_grants(pg, evaluator_password=evaluator_password, schemas=schemas, commit=False)
            pg.commit()
        except BaseException:
            pg.rollback()
            raise
        result.left_retired = _drop_shadows(pg, (RETIRED,), wait=RETIRE_WAIT)
    finally:
        pg.close()
    return result


def _shadow_schemas(cur, suffix: str) -> list[str]:
    cur.execute("select nspname from pg_namespace where right(nspname, %s) = %s order by 1", [len(suffix), suffix])
    return [name for (name,) in cur.fetchall()]


def _drop_shadows(pg, suffixes: tuple[str, ...] = (NEXT, RETIRED), wait: str = PUBLISH_LOCK_TIMEOUT) -> list[str]:
    """Drop the schemas a publication built (``__next``: one that failed before renaming them
    in) or retired (``__retired``), waiting at most ``wait`` for the queries still reading
    them; those left (named) are dropped by the next publication, before it builds."""
    import psycopg2

    left = []
    with pg.cursor() as cur:
        names = [n for suffix in suffixes for n in _shadow_schemas(cur, suffix)]
    pg.commit()
    for name in names:
        try:
            with pg.cursor() as cur:
                cur.execute(f"set local lock_timeout = '{wait}'")
                cur.execute(f"drop schema {_q(name)} cascade")
            pg.commit()
        except psycopg2.errors.LockNotAvailable:
            pg.rollback()
            left.append(name)
    return left


def _swap_in(pg) -> list[str]:
    """In the caller's transaction: each schema built under ``<schema>__next`` takes the name of
    the one it replaces, which becomes ``<schema>__retired`` (the names of the schemas
    swapped). Renaming a schema takes no lock on its tables: readers are not held."""
    swapped = []
    with pg.cursor() as cur:
        for built in _shadow_schemas(cur, NEXT):
            name = built[:-len(NEXT)]
            cur.execute("select 1 from pg_namespace where nspname = %s", [name])
            if cur.fetchone():
                cur.execute(f"alter schema {_q(name)} rename to {_q(name + RETIRED)}")
            cur.execute(f"alter schema {_q(built)} rename to {_q(name)}")
            swapped.append(name)
    return swapped


def _rewrite_tables(pg, schemas: list[str]) -> None:
    """In the caller's transaction: write every row of the tables of ``schemas`` again, as this
    transaction's. A reader's REPEATABLE READ or SERIALIZABLE transaction keeps the snapshot of
    its first statement, but finds tables by name in the catalog as it is now: begun before
    the swap commits, its next statement after it reads the new marts as that snapshot saw
    them, i.e. as dbt built them, before disclosure control. TRUNCATE gives a table a new
    file (not MVCC-safe, PostgreSQL's documentation says): to such a snapshot, the tables of
    the new publication are empty instead."""
    with pg.cursor() as cur:
        cur.execute("select schemaname, tablename from pg_tables where schemaname = any(%s) order by 1, 2",
                    [list(schemas)])
        for schema, name in cur.fetchall():
            table = f"{_q(schema)}.{_q(name)}"
            cur.execute(f"create temporary table jisr_rows on commit drop as select * from {table}")
            cur.execute(f"truncate {table}")
            cur.execute(f"insert into {table} select * from jisr_rows")
            cur.execute("drop table jisr_rows")


def main(args, settings: Settings) -> int:
    """``jisr publish-postgres --dsn ...``."""
    import psycopg2
    import psycopg2.errors

    password = None
    if args.evaluator_password_file:
        try:
            password = Path(args.evaluator_password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"jisr publish-postgres: cannot read the evaluator password file {args.evaluator_password_file}: "
                  f"{exc.strerror or exc}; nothing was changed", file=sys.stderr)
            return 1
    try:
        result = publish_postgres(settings, args.dsn, evaluator_password=password)
    except PostgresPublishError as exc:
        print(f"jisr publish-postgres: {exc}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:  # the server went away, a statement failed: no traceback
        hint = (" (the DSN's user must own the database and have CREATEROLE, or the role "
                f"{EVALUATOR} must exist)") if isinstance(exc, psycopg2.errors.InsufficientPrivilege) else ""
        print(f"jisr publish-postgres: PostgreSQL error while publishing: {str(exc).strip()}{hint}. Readers go on "
              "reading the publication PostgreSQL served before (meta.publish_log says which).", file=sys.stderr)
        return 1
    print(result.report())
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("--dsn", required=True,
                        help="libpq connection string of the database owner, e.g. "
                             "postgresql://jisr@127.0.0.1:5432/jisr (password from ~/.pgpass or PGPASSWORD)")
    parser.add_argument("--evaluator-password-file",
                        help="let the `evaluator` role log in with the password in this file")
