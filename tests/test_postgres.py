"""PostgreSQL serving target: raw copy, dbt build on PostgreSQL, the read-only evaluator role.

Run by `make test-postgres` (scripts/postgres-ci.sh starts a throwaway cluster and exports
JISR_PG_DSN / JISR_PG_ADMIN_DSN). Without a server these tests are skipped.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import date, datetime
from decimal import Decimal

import duckdb
import pytest

from jisr import postgres
from jisr.settings import PROJECT_DIR

pytestmark = pytest.mark.postgres

psycopg2 = pytest.importorskip("psycopg2")
from psycopg2 import errors  # noqa: E402
from psycopg2.extensions import make_dsn, parse_dsn  # noqa: E402


def _server_dsns() -> tuple[str, str]:
    owner, admin = os.environ.get("JISR_PG_DSN"), os.environ.get("JISR_PG_ADMIN_DSN")
    if not owner or not admin:
        pytest.skip("no PostgreSQL server configured (run `make test-postgres`)")
    return owner, admin


@pytest.fixture
def database():
    """A fresh database owned by the pipeline role; dropped afterwards. Yields its owner DSN."""
    owner, admin = _server_dsns()
    name = f"jisr_test_{uuid.uuid4().hex[:10]}"
    owner_user = parse_dsn(owner)["user"]
    admin_con = psycopg2.connect(admin)
    admin_con.autocommit = True
    with admin_con.cursor() as cur:
        cur.execute(f'create database "{name}" owner "{owner_user}"')
    try:
        yield make_dsn(owner, dbname=name)
    finally:
        with admin_con.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        admin_con.close()


@pytest.fixture
def evaluator_password():
    return f"eval-{uuid.uuid4().hex}"


def evaluator_connection(dsn: str, password: str):
    return psycopg2.connect(make_dsn(dsn, user=postgres.EVALUATOR, password=password))


def make_schemas(dsn: str) -> None:
    """Internal and published schemas as the pipeline leaves them."""
    con = psycopg2.connect(dsn)
    with con.cursor() as cur:
        for schema in ("raw", "quarantine", "staging", "intermediate", "detail", "seeds", "marts", "impact"):
            cur.execute(f"create schema {schema}")
        cur.execute("create table raw.beneficiaries (person_key bigint, sex text)")
        cur.execute("insert into raw.beneficiaries values (42, 'F')")
        cur.execute("create schema meta")
        cur.execute("create table meta.deliveries (delivery_id text, file_name text)")
        cur.execute("create table quarantine.rows (source text, values_json text)")
        cur.execute("insert into quarantine.rows values ('beneficiaries', '{}')")
        cur.execute("create view staging.stg_beneficiaries as select * from raw.beneficiaries")
        cur.execute("create table intermediate.int_people as select * from raw.beneficiaries")
        cur.execute("create table seeds.geo_regions as select '01'::text as region_code")
        cur.execute("create table detail.dim_beneficiaries as select * from raw.beneficiaries")
        cur.execute("create table marts.mart_coverage as select '01'::text as region_code, 'F'::text as sex, "
                    "120::bigint as beneficiaries")
        cur.execute("create table impact.impact_estimates as select 'DSD-01'::text as programme_code, 1.5 as estimate")
    con.commit()
    con.close()


@pytest.fixture
def evaluator_con(database, evaluator_password):
    """The pipeline's schemas with the evaluator role's grants applied; yields a connection of
    that role (closed afterwards)."""
    make_schemas(database)
    owner = psycopg2.connect(database)
    postgres.apply_grants(owner, evaluator_password=evaluator_password)
    owner.close()
    con = evaluator_connection(database, evaluator_password)
    try:
        yield con
    finally:
        con.close()


def expect_denied(con, statement: str, error=errors.InsufficientPrivilege) -> None:
    with pytest.raises(error):
        with con.cursor() as cur:
            cur.execute(statement)
    con.rollback()


def test_postgres_evaluator_reads_published_schemas_only(evaluator_con):
    con = evaluator_con
    with con.cursor() as cur:
        cur.execute("select sum(beneficiaries) from marts.mart_coverage")
        assert cur.fetchone()[0] == 120
        cur.execute("select programme_code from impact.impact_estimates")
        assert cur.fetchall() == [("DSD-01",)]
        cur.execute("select count(*) from meta.publish_log")
        assert cur.fetchone()[0] == 0
    con.rollback()
    for statement in ("select * from raw.beneficiaries", "select * from quarantine.rows",
                      "select * from staging.stg_beneficiaries", "select * from intermediate.int_people",
                      "select * from seeds.geo_regions", "select * from meta.deliveries",
                      "select * from detail.dim_beneficiaries"):
        expect_denied(con, statement)


def test_postgres_evaluator_reads_the_configured_published_schemas(database, evaluator_password):
    """The grants follow ``publish.schemas`` of config/quality.yml: a schema left out of it is
    closed to the evaluator role, even one published by default."""
    make_schemas(database)
    owner = psycopg2.connect(database)
    postgres.apply_grants(owner, evaluator_password=evaluator_password)  # the defaults: marts, impact
    con = evaluator_connection(database, evaluator_password)
    try:
        postgres.close_published(owner)  # after a rollback: nothing readable until the next publication
        expect_denied(con, "select sum(beneficiaries) from marts.mart_coverage")
        expect_denied(con, "select programme_code from impact.impact_estimates")
        postgres.apply_grants(owner, evaluator_password=evaluator_password, schemas=("marts",))
        with con.cursor() as cur:
            cur.execute("select sum(beneficiaries) from marts.mart_coverage")
            assert cur.fetchone()[0] == 120
        con.rollback()
        expect_denied(con, "select programme_code from impact.impact_estimates")
        with owner.cursor() as cur:  # a table created later, and USAGE granted back by hand
            cur.execute("create table impact.fresh as select 1 as n")
            cur.execute(f"grant usage on schema impact to {postgres.EVALUATOR}")
        owner.commit()
        expect_denied(con, "select n from impact.fresh")  # no default privilege left there
    finally:
        con.close()
        owner.close()


def test_postgres_evaluator_cannot_write_or_create(database, evaluator_con):
    con = evaluator_con
    # First guard: the role's sessions are read-only.
    expect_denied(con, "insert into marts.mart_coverage values ('02', 'M', 1)", errors.ReadOnlySqlTransaction)
    # Second guard, with read-only switched off by the user: privileges.
    with con.cursor() as cur:
        cur.execute("set session characteristics as transaction read write")
        cur.execute("set default_transaction_read_only = off")
    con.commit()
    for statement in ("insert into marts.mart_coverage values ('02', 'M', 1)",
                      "update marts.mart_coverage set beneficiaries = 0",
                      "delete from impact.impact_estimates",
                      "insert into meta.publish_log (published_at, target) values (now(), 'x')",
                      "drop table marts.mart_coverage",
                      "create table marts.mine (x int)",
                      "create table impact.mine (x int)",
                      "create table public.mine (x int)",
                      "create schema mine",
                      "create temporary table mine (x int)",
                      "insert into raw.beneficiaries values (1, 'M')"):
        expect_denied(con, statement)
    con.close()
    check = psycopg2.connect(database)
    with check.cursor() as cur:
        cur.execute("select count(*) from marts.mart_coverage")
        assert cur.fetchone()[0] == 1
    check.close()


def test_postgres_evaluator_reads_tables_created_after_the_grants(database, evaluator_con):
    owner = psycopg2.connect(database)
    with owner.cursor() as cur:  # what dbt does on the next build
        cur.execute("create table marts.mart_new as select 7 as n")
        cur.execute("create table raw.payments as select 1 as amount")
    owner.commit()
    owner.close()
    con = evaluator_con
    with con.cursor() as cur:
        cur.execute("select n from marts.mart_new")
        assert cur.fetchone()[0] == 7
    con.rollback()
    expect_denied(con, "select * from raw.payments")


def test_postgres_copy_raw_layer_keeps_values_and_types(database, settings):
    settings.store_path.parent.mkdir(parents=True)
    duck = duckdb.connect(str(settings.store_path))
    duck.execute("create schema raw; create schema quarantine; create schema meta")
    duck.execute("""create table raw.payments (person_key bigint, payment_id varchar, amount_mad decimal(12, 2),
        paid_date date, _loaded_at timestamp, _is_current boolean, note varchar)""")
    rows = [
        (9_000_000_000_000_000_001, "P1", Decimal("350.00"), date(2025, 1, 5), datetime(2025, 2, 1, 10, 30), True,
         'Aït "Benhaddou"; line\nbreak'),
        (-5, "P2", None, None, None, False, ""),
        (7, "P3", Decimal("0.01"), date(2024, 12, 31), datetime(2025, 1, 1), None, None),
    ]
    duck.executemany("insert into raw.payments values (?, ?, ?, ?, ?, ?, ?)", rows)
    duck.execute("create table quarantine.rows (source varchar, rule varchar)")
    duck.execute("insert into quarantine.rows values ('payments', 'min:amount_mad')")
    duck.execute("create table meta.settings (name varchar, value varchar)")
    duck.execute("insert into meta.settings values ('key_fingerprint', 'secret-ish')")
    duck.execute("create table meta.deliveries (delivery_id varchar, status varchar)")
    duck.execute("insert into meta.deliveries values ('d1', 'loaded')")
    duck.close()
    pg = psycopg2.connect(database)
    counts = postgres.copy_raw_layer(settings, pg)
    assert counts == {"raw.payments": 3, "quarantine.rows": 1, "meta.deliveries": 1}
    with pg.cursor() as cur:
        cur.execute("select * from raw.payments order by payment_id")
        assert [tuple(r) for r in cur.fetchall()] == rows
        cur.execute("select data_type from information_schema.columns where table_schema = 'raw' "
                    "and table_name = 'payments' order by ordinal_position")
        assert [r[0] for r in cur.fetchall()] == ["bigint", "text", "numeric", "date", "timestamp without time zone",
                                                 "boolean", "text"]
        cur.execute("select table_name from information_schema.tables where table_schema = 'meta'")
        assert cur.fetchall() == [("deliveries",)]  # the key fingerprint (meta.settings) is not copied
    # a second copy replaces, never appends
    assert postgres.copy_raw_layer(settings, pg)["raw.payments"] == 3
    with pg.cursor() as cur:
        cur.execute("select count(*) from raw.payments")
        assert cur.fetchone()[0] == 3
    pg.close()


def test_postgres_impact_tables_keep_their_descriptions(database, settings):
    """The impact tables are copied from the serving file with their table and column
    comments, which BI tools connected to PostgreSQL show as descriptions."""
    from impact.descriptions import describe

    settings.serving_path.parent.mkdir(parents=True)
    duck = duckdb.connect(str(settings.serving_path))
    duck.execute("create schema impact")
    duck.execute("create table impact.impact_group_means (study_id varchar, mean double, reason varchar)")
    duck.execute("insert into impact.impact_group_means values ('S1', 1.5, null)")
    about, columns = describe("impact_group_means", ["study_id", "mean", "reason"])
    quoted = lambda text: "'" + text.replace("'", "''") + "'"  # noqa: E731
    duck.execute(f"comment on table impact.impact_group_means is {quoted(about)}")
    for column, text in columns.items():
        duck.execute(f"comment on column impact.impact_group_means.{column} is {quoted(text)}")
    duck.close()
    pg = psycopg2.connect(database)
    try:
        assert postgres.copy_impact_tables(settings, pg) == ["impact_group_means"]
        with pg.cursor() as cur:  # beside the schema readers use, until the publication renames it in
            cur.execute("select obj_description('impact__next.impact_group_means'::regclass, 'pg_class')")
            assert cur.fetchone()[0] == about
            cur.execute("select a.attname, col_description(a.attrelid, a.attnum) from pg_attribute a "
                        "where a.attrelid = 'impact__next.impact_group_means'::regclass and a.attnum > 0 "
                        "order by a.attnum")
            assert dict(cur.fetchall()) == columns
    finally:
        pg.close()


def test_postgres_disclosure_control_applies_to_postgres_marts(database):
    pg = psycopg2.connect(database)
    with pg.cursor() as cur:
        cur.execute("create schema marts")
        cur.execute("create table marts.mart_coverage (region_code text, sex text, beneficiaries bigint not null, "
                    "transfers_mad numeric(14, 2))")
        cells = {("01", "F"): 3, ("01", "M"): 52, ("02", "F"): 41, ("02", "M"): 47, ("03", "F"): 60, ("03", "M"): 75}
        for (region, sex), n in cells.items():
            cur.execute("insert into marts.mart_coverage values (%s, %s, %s, %s)", [region, sex, n, n * 350])
    pg.commit()
    config = {"tables": [{"table": "marts.mart_coverage", "dimensions": ["region_code", "sex"],
                          "count_column": "beneficiaries", "value_columns": ["transfers_mad"]}]}
    from quality.disclosure import check, protect

    assert [v.kind for v in check(pg, config=config)] == ["not_protected"]
    report = protect(pg, config=config)
    assert report[0].primary == 1 and report[0].complementary >= 3
    assert check(pg, config=config) == []
    with pg.cursor() as cur:
        cur.execute("select beneficiaries, transfers_mad from marts.mart_coverage where is_suppressed")
        hidden = cur.fetchall()
        cur.execute("select min(beneficiaries) from marts.mart_coverage where not is_suppressed")
        smallest = cur.fetchone()[0]
    assert len(hidden) == 4 and all(r == (None, None) for r in hidden)
    assert smallest >= 10
    # the warnings the publication reports without blocking, found on PostgreSQL too
    with pg.cursor() as cur:
        cur.execute("create table marts.mart_other (sex text, people bigint)")
    pg.commit()
    from quality.disclosure import review

    assert [(v.table, v.kind, v.blocking) for v in review(pg, config=config)] == [
        ("marts.mart_other", "unconfigured_table", False)]
    pg.close()


def test_postgres_marts_hide_the_cells_the_served_warehouse_hides(database, tmp_path):
    """The serving file and the PostgreSQL target are two copies of one publication: with two
    patterns, someone reading both would recover what each hides. The marts take the served
    file's pattern (left to itself, disclosure control chooses another here); marts whose
    cells differ from the served ones stay closed."""
    import shutil
    from types import SimpleNamespace

    import yaml

    from quality.disclosure import protect
    from tests.test_disclosure import CONFIG, COUNTS, coverage_rows, hand_protected, published

    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "disclosure.yml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    shutil.copyfile(PROJECT_DIR / "config" / "quality.yml", config_dir / "quality.yml")
    settings = SimpleNamespace(config_dir=config_dir, serving_path=tmp_path / "jisr.duckdb")
    served = hand_protected(settings.serving_path, {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    expected = published(served)
    served.close()

    def make_marts(counts) -> None:
        with pg.cursor() as cur:
            cur.execute("drop schema if exists marts cascade")
            cur.execute("create schema marts")
            cur.execute("create table marts.mart_coverage (region_code text, sex text, beneficiaries bigint not null, "
                        "transfers_mad numeric(14, 2))")
            cur.executemany("insert into marts.mart_coverage values (%s, %s, %s, %s)", coverage_rows(counts))
        pg.commit()

    pg = psycopg2.connect(database)
    make_marts(COUNTS)
    own = protect(pg, config=CONFIG)  # what PostgreSQL would choose on its own
    with pg.cursor() as cur:
        cur.execute("select region_code, sex, beneficiaries from marts.mart_coverage")
        assert {(r, s): n for r, s, n in cur.fetchall()} != expected and own

    make_marts(COUNTS)
    protected, _ = postgres.protect_marts(settings, pg)
    assert protected == ["marts.mart_coverage: 12 cells, 1 suppressed under k, 3 complementary"]
    with pg.cursor() as cur:
        cur.execute("select region_code, sex, beneficiaries from marts.mart_coverage")
        assert {(r, s): n for r, s, n in cur.fetchall()} == expected

    make_marts({**COUNTS, ("03", "M"): 76})  # not the served figures
    with pytest.raises(postgres.PostgresPublishError,
                       match=r"not the served DuckDB warehouse's, .*: marts.mart_coverage: cell region_code='03', "
                             r"sex='M': beneficiaries 76 here, 75 there"):
        postgres.protect_marts(settings, pg)
    pg.close()


def _served_settings(tmp_path, published_cells):
    """A served DuckDB warehouse (run-1) whose coverage mart hides ``published_cells``, with
    the disclosure rules of tests/test_disclosure.py."""
    import shutil
    from types import SimpleNamespace

    import yaml

    from jisr.publish import LOG_COLUMNS
    from tests.test_disclosure import CONFIG, hand_protected

    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "disclosure.yml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    shutil.copyfile(PROJECT_DIR / "config" / "quality.yml", config_dir / "quality.yml")
    settings = SimpleNamespace(config_dir=config_dir, serving_path=tmp_path / "jisr.duckdb", code_version="v1",
                               home=tmp_path)
    served = hand_protected(settings.serving_path, published_cells)
    served.execute(f"create schema meta; create table meta.publish_log ({LOG_COLUMNS})")
    served.execute("insert into meta.publish_log (event, run_id, published_at, deliveries) "
                   "values ('publish', 'run-1', now(), '[]')")
    served.close()
    return settings


def _dbt_building_marts(counts, during=None):
    """A stand-in for ``run_dbt``: builds the coverage mart with ``counts`` where dbt builds
    (``marts__next``, the suffix dbt_environment gives dbt); ``during()`` runs meanwhile."""
    from tests.test_disclosure import coverage_rows

    def run_dbt(settings, dsn):
        con = psycopg2.connect(dsn)
        with con.cursor() as cur:
            cur.execute("create schema marts__next")
            cur.execute("create table marts__next.mart_coverage (region_code text, sex text, beneficiaries bigint, "
                        "transfers_mad numeric(14, 2))")
            cur.executemany("insert into marts__next.mart_coverage values (%s, %s, %s, %s)", coverage_rows(counts))
        con.commit()
        con.close()
        if during is not None:
            during()
    return run_dbt


def _coverage(con) -> int:
    with con.cursor() as cur:
        cur.execute("select sum(beneficiaries) from marts.mart_coverage")
        total = cur.fetchone()[0]
    con.rollback()
    return total


def test_postgres_a_refused_publication_leaves_the_served_one_readable(database, evaluator_password, tmp_path,
                                                                        monkeypatch):
    """A publication refused for marts that are not the served ones, or because the served
    DuckDB warehouse was replaced while PostgreSQL built its marts: readers read the earlier
    publication throughout, as it was, and never the marts refused."""
    from tests.test_disclosure import COUNTS

    settings = _served_settings(tmp_path, {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    make_schemas(database)  # the marts of an earlier publication, open to evaluators
    pg = psycopg2.connect(database)
    postgres.apply_grants(pg, evaluator_password=evaluator_password)
    pg.close()
    evaluator = evaluator_connection(database, evaluator_password)
    seen = []
    monkeypatch.setattr(postgres, "served_publication", lambda settings: {"run_id": "run-1", "deliveries": "[]"})
    monkeypatch.setattr(postgres, "copy_raw_layer", lambda settings, pg: {})
    monkeypatch.setattr(postgres, "copy_impact_tables", lambda settings, pg: [])
    monkeypatch.setattr(postgres, "run_dbt", _dbt_building_marts({**COUNTS, ("03", "M"): 76},
                                                                  during=lambda: seen.append(_coverage(evaluator))))
    with pytest.raises(postgres.PostgresPublishError, match="not the served DuckDB warehouse's") as info:
        postgres.publish_postgres(settings, database)
    assert "readers go on reading the one PostgreSQL served until now" in str(info.value)
    assert seen == [120] and _coverage(evaluator) == 120  # while it built, and after
    expect_denied(evaluator, "select count(*) from marts__next.mart_coverage")

    monkeypatch.setattr(postgres, "run_dbt", _dbt_building_marts(COUNTS))
    monkeypatch.setattr(postgres, "served_publication", lambda settings: {"run_id": "run-0", "deliveries": "[]"})
    with pytest.raises(postgres.PostgresPublishError, match=r"changed while this ran \(run run-0 when it started, "
                                                            r"now run-1\)"):
        postgres.publish_postgres(settings, database)
    assert _coverage(evaluator) == 120
    with evaluator.cursor() as cur:
        cur.execute("select nspname from pg_namespace where nspname like 'marts%' order by 1")
        assert cur.fetchall() == [("marts",), ("marts__next",)]  # dropped by the next publication
    evaluator.rollback()
    evaluator.close()


def test_postgres_readers_switch_to_a_new_publication_at_once_and_keep_their_queries(database, evaluator_password,
                                                                                    tmp_path, monkeypatch):
    """Readers are never locked out: while a publication builds they read the one served; a
    reader inside a transaction that read the served marts does not hold the publication,
    and its next statement reads the new marts, protected. The schemas retired are dropped
    once no transaction holds them (left to the next publication otherwise)."""
    from tests.test_disclosure import COUNTS, coverage_rows

    settings = _served_settings(tmp_path, {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    make_schemas(database)
    pg = psycopg2.connect(database)
    postgres.apply_grants(pg, evaluator_password=evaluator_password)
    pg.close()
    reader, holder = (evaluator_connection(database, evaluator_password) for _ in range(2))
    assert _coverage(holder) == 120
    with holder.cursor() as cur:  # a transaction left open on the served mart
        cur.execute("select count(*) from marts.mart_coverage")
    monkeypatch.setattr(postgres, "RETIRE_WAIT", "1s")
    monkeypatch.setattr(postgres, "served_publication", lambda settings: {"run_id": "run-1", "deliveries": "[]"})
    monkeypatch.setattr(postgres, "copy_raw_layer", lambda settings, pg: {})
    monkeypatch.setattr(postgres, "copy_impact_tables", lambda settings, pg: [])
    seen = []
    monkeypatch.setattr(postgres, "run_dbt", _dbt_building_marts(COUNTS, during=lambda: seen.append(_coverage(reader))))
    started = time.monotonic()
    result = postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)
    assert time.monotonic() - started < 30 and seen == [120]
    assert result.left_retired == ["marts__retired"] and "marts__retired" in result.report()
    with reader.cursor() as cur:
        cur.execute("select count(*), count(*) filter (where is_suppressed) from marts.mart_coverage")
        assert cur.fetchone() == (len(coverage_rows(COUNTS)), 4)  # the served warehouse's pattern
        cur.execute("select run_id from meta.publish_log")
        assert cur.fetchall() == [("run-1",)]
    reader.rollback()
    published = _coverage(reader)
    with holder.cursor() as cur:  # its transaction, still open: its next statement reads the new marts
        cur.execute("select count(*) from marts.mart_coverage")
        assert cur.fetchone()[0] == len(coverage_rows(COUNTS))
    holder.rollback()
    assert _coverage(holder) == published != 120
    expect_denied(holder, "select count(*) from marts__retired.mart_coverage")
    holder.close()
    postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)  # drops what was left
    with reader.cursor() as cur:
        cur.execute("select nspname from pg_namespace where nspname like 'marts%' or nspname like 'impact%' "
                    "order by 1")
        assert cur.fetchall() == [("impact",), ("marts",)]
    reader.rollback()
    reader.close()


def test_postgres_a_reader_snapshot_older_than_the_swap_never_reads_unprotected_marts(database, evaluator_password,
                                                                                       tmp_path, monkeypatch):
    """A REPEATABLE READ or SERIALIZABLE transaction keeps the snapshot of its first statement,
    while its later statements find tables by name in the catalog as it is now: one begun
    after dbt built the marts and before the swap committed finds the new marts after it, and
    must not read them as its snapshot saw them, before disclosure control."""
    from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ, ISOLATION_LEVEL_SERIALIZABLE

    from tests.test_disclosure import COUNTS

    settings = _served_settings(tmp_path, {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    make_schemas(database)
    pg = psycopg2.connect(database)
    postgres.apply_grants(pg, evaluator_password=evaluator_password)
    pg.close()
    readers = []
    for level in (ISOLATION_LEVEL_REPEATABLE_READ, ISOLATION_LEVEL_SERIALIZABLE):
        con = evaluator_connection(database, evaluator_password)
        con.set_isolation_level(level)
        readers.append(con)

    def snapshot_now():  # dbt has committed the marts it built; the swap has not
        for con in readers:
            with con.cursor() as cur:
                cur.execute("select count(*) from marts.mart_coverage")

    monkeypatch.setattr(postgres, "RETIRE_WAIT", "1s")
    monkeypatch.setattr(postgres, "served_publication", lambda settings: {"run_id": "run-1", "deliveries": "[]"})
    monkeypatch.setattr(postgres, "copy_raw_layer", lambda settings, pg: {})
    monkeypatch.setattr(postgres, "copy_impact_tables", lambda settings, pg: [])
    monkeypatch.setattr(postgres, "run_dbt", _dbt_building_marts(COUNTS, during=snapshot_now))
    postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)
    for con in readers:
        with con.cursor() as cur:  # the same transaction, after the commit: the new marts by name
            cur.execute("select count(*) from marts.mart_coverage where beneficiaries between 1 and 9 "
                        "and not coalesce(is_suppressed, false)")
            assert cur.fetchone()[0] == 0
            cur.execute("select count(*) from marts.mart_coverage where coalesce(is_suppressed, false) "
                        "and beneficiaries is not null")
            assert cur.fetchone()[0] == 0
        con.rollback()
        assert _coverage(con) not in (None, 120)  # a new transaction reads the new publication
        con.close()


def test_postgres_a_second_publication_refuses_while_one_runs(database, evaluator_password, tmp_path, monkeypatch):
    """Two publications at once (a scheduled one and a manual one) would drop, build and rename
    each other's <schema>__next: the second refuses, changing nothing, and the first publishes
    what it built."""
    from tests.test_disclosure import COUNTS, coverage_rows

    settings = _served_settings(tmp_path, {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    make_schemas(database)
    pg = psycopg2.connect(database)
    postgres.apply_grants(pg, evaluator_password=evaluator_password)
    pg.close()
    monkeypatch.setattr(postgres, "served_publication", lambda settings: {"run_id": "run-1", "deliveries": "[]"})
    monkeypatch.setattr(postgres, "copy_raw_layer", lambda settings, pg: {})
    monkeypatch.setattr(postgres, "copy_impact_tables", lambda settings, pg: [])
    refused, started = [], []

    def second_publication():
        if started:  # the second one's own build, had it not refused
            return
        started.append(True)
        with pytest.raises(postgres.PostgresPublishError, match="another publication to this database is running") \
                as info:
            postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)
        refused.append(str(info.value))

    monkeypatch.setattr(postgres, "run_dbt", _dbt_building_marts(COUNTS, during=second_publication))
    postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)
    assert len(refused) == 1
    reader = evaluator_connection(database, evaluator_password)
    with reader.cursor() as cur:
        cur.execute("select count(*), count(*) filter (where is_suppressed) from marts.mart_coverage")
        assert cur.fetchone() == (len(coverage_rows(COUNTS)), 4)
        cur.execute("select count(*) from meta.publish_log")
        assert cur.fetchone()[0] == 1
    reader.close()


def test_postgres_publish_log_of_an_earlier_version_gains_run_id_and_deliveries(database, settings):
    pg = psycopg2.connect(database)
    with pg.cursor() as cur:
        cur.execute("create schema meta")
        cur.execute("create table meta.publish_log (published_at timestamptz not null, target varchar not null, "
                    "code_version varchar, raw_tables integer, raw_rows bigint, dbt_invocation_id varchar, "
                    "tables_protected varchar, note varchar)")
    pg.commit()
    result = postgres.PostgresPublishResult(run_id="run-7", deliveries=[{"delivery_id": "d1", "file_name": "f.csv"}])
    postgres.record_publication(settings, pg, result)
    with pg.cursor() as cur:
        cur.execute("select run_id, delivery_count, deliveries from meta.publish_log")
        assert cur.fetchall() == [("run-7", 1, [{"delivery_id": "d1", "file_name": "f.csv"}])]
    pg.close()


@pytest.mark.slow
def test_postgres_publish_builds_the_dbt_project_for_evaluators(database, settings, evaluator_password, tmp_path,
                                                                 monkeypatch):
    """End to end: sample deliveries refreshed into the serving file, the dbt project built on
    PostgreSQL from the same raw layer, marts protected with the serving file's pattern and
    readable by the evaluator role, the raw layer not."""
    from ingestion.generate import generate
    from jisr.refresh import run_refresh
    from quality.disclosure import published_pattern

    generate(settings.landing_dir, beneficiaries=400, seed=7, months=3, truth_path=tmp_path / "truth.json",
             contracts_dir=settings.contracts_dir, seeds_dir=settings.seeds_dir, progress=False)
    with pytest.raises(postgres.PostgresPublishError, match="no warehouse is published"):
        postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)
    monkeypatch.setenv("DAGSTER_HOME", str(settings.dagster_home))  # restored after the test
    refresh = run_refresh(settings)
    assert refresh.success, refresh.failures
    result = postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)
    assert result.raw_rows["raw.beneficiaries"] > 0
    deliveries = json.loads(postgres.served_publication(settings)["deliveries"])
    assert result.run_id == refresh.run_id and len(result.deliveries) == len(deliveries) > 0
    # the same cells hidden, the same counts published, as in the serving file
    with duckdb.connect(str(settings.serving_path), read_only=True) as served:
        expected = published_pattern(served, settings)
    pg = psycopg2.connect(database)
    assert published_pattern(pg, settings) == expected and len(expected) == 6
    pg.close()
    con = evaluator_connection(database, evaluator_password)
    with con.cursor() as cur:
        cur.execute("select table_name from information_schema.tables where table_schema = 'marts'")
        marts = {r[0] for r in cur.fetchall()}
        assert "mart_coverage_targeting" in marts and "dim_beneficiaries" not in marts
        cur.execute("select count(*) from marts.mart_coverage_targeting where is_suppressed")
        assert cur.fetchone()[0] > 0  # 400 people: many cells under 10
        cur.execute("select count(*) from marts.mart_coverage_targeting where not is_suppressed "
                    "and beneficiaries_reached between 1 and 9")
        assert cur.fetchone()[0] == 0
        cur.execute("select target, note, run_id, delivery_count, jsonb_array_length(deliveries) from meta.publish_log")
        assert cur.fetchall() == [("postgres", "; ".join(result.disclosure_warnings) or None, refresh.run_id,
                                   len(deliveries), len(deliveries))]
        cur.execute("select count(*), count(col_description('meta.publish_log'::regclass, a.attnum)), "
                    "obj_description('meta.publish_log'::regclass, 'pg_class') from pg_attribute a "
                    "where a.attrelid = 'meta.publish_log'::regclass and a.attnum > 0 and not a.attisdropped "
                    "group by 3")
        columns, described, table = cur.fetchone()
        assert columns == described == 11 and table.startswith("One row per publication")  # what BI tools show
    con.rollback()
    expect_denied(con, "select * from raw.beneficiaries")
    expect_denied(con, "select * from staging.stg_msisf__beneficiaries")
    expect_denied(con, "select * from detail.dim_beneficiaries")  # person-level: internal
    # published again: built beside the schemas served, renamed in, the old ones dropped
    with con.cursor() as cur:
        cur.execute("select count(*), sum(beneficiaries_reached) from marts.mart_coverage_targeting")
        before = cur.fetchone()
    con.rollback()
    postgres.publish_postgres(settings, database, evaluator_password=evaluator_password)
    with con.cursor() as cur:
        cur.execute("select count(*), sum(beneficiaries_reached) from marts.mart_coverage_targeting")
        assert cur.fetchone() == before
        cur.execute("select nspname from pg_namespace where right(nspname, 6) = '__next' "
                    "or right(nspname, 9) = '__retired'")
        assert cur.fetchall() == []
        cur.execute("select count(*) from meta.publish_log")
        assert cur.fetchone()[0] == 2
    con.rollback()
    expect_denied(con, "select * from detail.dim_beneficiaries")
    con.close()


def test_postgres_dbt_connects_with_the_password_libpq_finds(database, settings, monkeypatch):
    """The documented DSN carries no password (it comes from PGPASSWORD or ~/.pgpass): dbt,
    whose profile gives a default password when JISR_PG_PASSWORD is not set, must connect with
    the one libpq found, as the copy of the raw layer did."""
    import subprocess

    from jisr.dbt import dbt_executable

    params = parse_dsn(database)
    monkeypatch.setenv("PGPASSWORD", params.pop("password"))
    for var in ("JISR_PG_HOST", "JISR_PG_PORT", "JISR_PG_USER", "JISR_PG_PASSWORD", "JISR_PG_DBNAME"):
        monkeypatch.delenv(var, raising=False)
    dsn = make_dsn(**params)
    postgres.connect(dsn).close()  # libpq finds it
    proc = subprocess.run([str(dbt_executable()), "debug", "--connection", "--target", "postgres",
                           "--no-version-check", "--project-dir", str(settings.dbt_project_dir),
                           "--profiles-dir", str(settings.dbt_project_dir)],
                          env=postgres.dbt_environment(settings, dsn), capture_output=True, text=True,
                          cwd=settings.dbt_project_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_postgres_refuses_a_public_schema_readers_can_create_in(database, evaluator_password):
    """A database of PostgreSQL 14 or earlier (or pg_upgraded from one): `public` belongs to the
    bootstrap superuser and PUBLIC may create in it; the owner's `revoke` only warns. A reader
    could plant there a function the publication (dbt, run by the owner) calls: refused, with
    the published schemas left closed to the evaluator role."""
    _, admin = _server_dsns()
    admin_user = parse_dsn(admin)["user"]
    admin_con = psycopg2.connect(make_dsn(admin, dbname=parse_dsn(database)["dbname"]))
    admin_con.autocommit = True
    with admin_con.cursor() as cur:
        cur.execute(f'alter schema public owner to "{admin_user}"')
        cur.execute("grant usage, create on schema public to public")  # PostgreSQL 14's default
    make_schemas(database)
    owner = psycopg2.connect(database)
    with pytest.raises(postgres.PostgresPublishError, match="revoke create on schema \"public\" from public"):
        postgres.apply_grants(owner, evaluator_password=evaluator_password)
    owner.close()
    with admin_con.cursor() as cur:
        cur.execute("select has_schema_privilege(%s, 'marts', 'USAGE') from pg_roles where rolname = %s",
                    [postgres.EVALUATOR, postgres.EVALUATOR])
        assert cur.fetchall() in ([], [(False,)])  # nothing opened
        cur.execute("revoke create on schema public from public")  # what the message asks for
    owner = psycopg2.connect(database)
    postgres.apply_grants(owner, evaluator_password=evaluator_password)
    owner.close()
    con = evaluator_connection(database, evaluator_password)
    expect_denied(con, "begin read write; create table public.planted (a int)")
    con.close()
    admin_con.close()


def test_postgres_publish_command_reports_a_lost_server_without_a_traceback(database, settings, monkeypatch,
                                                                             capsys, tmp_path):
    """The server going away while publishing (here: while the raw layer is copied), or an
    unreadable password file: one line saying what happened, exit status 1."""
    import argparse

    monkeypatch.setattr(postgres, "served_publication", lambda settings: {"run_id": "run-1", "deliveries": "[]"})

    def server_gone(settings, pg):
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(postgres, "copy_raw_layer", server_gone)
    assert postgres.main(argparse.Namespace(dsn=database, evaluator_password_file=None), settings) == 1
    err = capsys.readouterr().err
    assert err.startswith("jisr publish-postgres: ") and "server closed the connection unexpectedly" in err
    assert "Readers go on reading the publication PostgreSQL served before" in err and "Traceback" not in err
    missing = tmp_path / "no-such-file"
    assert postgres.main(argparse.Namespace(dsn=database, evaluator_password_file=str(missing)), settings) == 1
    assert f"cannot read the evaluator password file {missing}" in capsys.readouterr().err


def test_postgres_closes_a_publication_the_duckdb_warehouse_was_rolled_back_from(database, evaluator_con, settings,
                                                                                 monkeypatch):
    """After `jisr rollback`, PostgreSQL went on serving the publication rolled back from (and
    publish-postgres refused, "nothing was changed"): it cannot serve the earlier one (it
    builds from the raw store, which still holds the deliveries rolled back), so it now
    closes its published schemas until the next publication succeeds."""
    pg = psycopg2.connect(database)
    postgres.record_publication(settings, pg, postgres.PostgresPublishResult(run_id="run-bad"))
    pg.close()
    with evaluator_con.cursor() as cur:  # served
        cur.execute("select sum(beneficiaries) from marts.mart_coverage")
    evaluator_con.rollback()

    def not_served(event, run):
        def refuse(_settings):
            raise postgres.NotServed({"event": event, "run_id": run}, "the raw store does not hold what ...")
        return refuse

    monkeypatch.setattr(postgres, "served_publication", not_served("publish", "run-bad"))
    with pytest.raises(postgres.PostgresPublishError, match=r"^the raw store does not hold what \.\.\.$"):
        postgres.publish_postgres(settings, database)  # an ingestion without a build: nothing to close
    monkeypatch.setattr(postgres, "served_publication", not_served("rollback", "run-bad"))
    with pytest.raises(postgres.PostgresPublishError, match=r"^the raw store does not hold what \.\.\.$"):
        postgres.publish_postgres(settings, database)  # rolled back to what PostgreSQL serves: left open
    with evaluator_con.cursor() as cur:
        cur.execute("select sum(beneficiaries) from marts.mart_coverage")
    evaluator_con.rollback()
    monkeypatch.setattr(postgres, "served_publication", not_served("rollback", "run-good"))
    with pytest.raises(postgres.PostgresPublishError, match="served the publication of run run-bad, which the "
                                                            "DuckDB serving warehouse was rolled back from"):
        postgres.publish_postgres(settings, database)
    expect_denied(evaluator_con, "select sum(beneficiaries) from marts.mart_coverage")


def test_postgres_a_reader_idle_in_a_transaction_does_not_hold_the_publication(database, evaluator_password,
                                                                             settings, monkeypatch):
    """A reader's session left idle inside a transaction (psycopg2's default after a query)
    held its tables, and the next publication waited on it for good, the published schemas
    closed to every reader meanwhile. Such sessions of the evaluator role now end after
    READER_IDLE_TIMEOUT, and dbt waits for a lock at most PUBLISH_LOCK_TIMEOUT."""
    import time

    monkeypatch.setattr(postgres, "READER_IDLE_TIMEOUT", "1s")
    make_schemas(database)
    owner = psycopg2.connect(database)
    postgres.apply_grants(owner, evaluator_password=evaluator_password)
    reader = evaluator_connection(database, evaluator_password)
    with reader.cursor() as cur:
        cur.execute("select sum(beneficiaries) from marts.mart_coverage")  # a transaction left open
    time.sleep(2.5)
    with owner.cursor() as cur:  # the reader's lock is gone: the owner rebuilds the table at once
        cur.execute("set lock_timeout = '2s'")
        cur.execute("drop table marts.mart_coverage")
    owner.commit()
    owner.close()
    with pytest.raises(psycopg2.OperationalError):
        with reader.cursor() as cur:
            cur.execute("select 1")
    reader.close()
    env = postgres.dbt_environment(settings, database)
    assert "-c lock_timeout=15min" in env["PGOPTIONS"] and env["DBT_USE_COLORS"] == "False"  # no colour codes
    assert env["JISR_SCHEMA_SUFFIX"] == postgres.NEXT  # dbt builds beside the schemas readers use


def test_postgres_failing_rows_of_a_dbt_test_are_read_on_postgres(database, tmp_path):
    """The rows a failing dbt test found, read again on PostgreSQL (a read-only session of the
    owner), in the order of their values, with the delivered file of each from the raw
    layer's copy of the delivery log (meta.deliveries); a query that cannot run again says
    why, and the next test's rows are still read."""
    from quality.checks import dbt_build_results

    pg = psycopg2.connect(database)
    with pg.cursor() as cur:
        cur.execute("create schema detail__next; create schema meta")
        cur.execute("create table detail__next.fct_x as select x, case when x % 2 = 0 then 'd2' else 'd1' end "
                    "as _delivery_id from generate_series(7, 1, -1) as x")
        cur.execute("create table meta.deliveries (delivery_id text, file_name text)")
        cur.execute("insert into meta.deliveries values ('d1', 'x_2025-01.csv'), ('d2', 'x_2025-02.csv')")
    pg.commit()
    pg.set_session(readonly=True, autocommit=True)
    code = 'select x, _delivery_id from "detail__next"."fct_x" where x % 1 = 0'  # a % outside parameters
    run_results = {"results": [
        {"unique_id": "test.jisr.assert_y.1", "status": "fail", "message": "Got 1 result", "failures": 1,
         "compiled_code": "select * from nowhere"},
        {"unique_id": "test.jisr.assert_x.1", "status": "fail", "message": "Got 7 results", "failures": 7,
         "compiled_code": code}]}
    path = tmp_path / "run_results.json"
    path.write_text(json.dumps(run_results), encoding="utf-8")
    found = {r.check: r for r in dbt_build_results(path, con=pg)}
    assert found["dbt test assert_x"].description == (
        "dbt test fail: Got 7 results; the first 5 of the 7 rows it failed on: "
        + "; ".join(f"x={i}, _delivery_id=d{2 - i % 2}, _file_name=x_2025-0{2 - i % 2}.csv" for i in range(1, 6)))
    assert found["dbt test assert_y"].description.startswith(
        'dbt test fail: Got 1 result (its rows could not be read again: relation "nowhere" does not exist')
    assert not pg.closed  # the caller's connection
    pg.close()


def test_postgres_a_failing_dbt_test_names_the_rows_it_failed_on(database, evaluator_password, settings,
                                                                 monkeypatch, capsys):
    """A dbt test that failed on PostgreSQL stopped the publication with dbt's last lines: the
    test's name and a count. Its error now names the test, what it checks and the first rows it
    failed on (its query run again on the schemas dbt built, as a DuckDB build's is on the
    build warehouse), with the delivered file of each; the publication served until then stays
    served, and readers see neither those schemas nor the rows."""
    import argparse

    from tests.test_marts import make_home

    raw, _ = make_home(settings.home, ["2025-01", "2025-02"])
    with duckdb.connect(str(raw.path)) as con:  # 8900 residents in an establishment of 40 places
        [(file_name,)] = con.execute("update raw.occupancy set residents = 8900 where _is_current and establishment_id "
                                     "= 'EPS-0002' and month = '2025-02' returning _file_name").fetchall()
    make_schemas(database)  # the marts of an earlier publication, open to evaluators
    pg = psycopg2.connect(database)
    postgres.apply_grants(pg, evaluator_password=evaluator_password)
    pg.close()
    monkeypatch.setattr(postgres, "served_publication", lambda settings: {"run_id": "run-1", "deliveries": "[]"})
    assert postgres.main(argparse.Namespace(dsn=database, evaluator_password_file=None), settings) == 1
    err = capsys.readouterr().err
    assert err.startswith("jisr publish-postgres: dbt build --target postgres failed, this publication is not made "
                          "(readers go on reading the one PostgreSQL served until now):\n")
    assert ("\n    * dbt test assert_occupancy_within_capacity: dbt test fail: Got 1 result, configured to fail if "
            "!= 0; the row it failed on: establishment_id=EPS-0002, report_month=2025-02, ") in err
    assert "residents=8900, capacity=40" in err and f"_file_name={file_name}\n" in err
    assert ("\n      it checks: No establishment reports more residents than its places that month allow, give or "
            "take overcrowding") in err
    assert err.rstrip().endswith(f"dbt's log of this build: {settings.home / 'dbt' / 'postgres' / 'logs' / 'dbt.log'}")
    assert "Traceback" not in err
    reader = evaluator_connection(database, evaluator_password)
    assert _coverage(reader) == 120  # the publication served before
    with reader.cursor() as cur:
        cur.execute("select count(*) from meta.publish_log")
        assert cur.fetchone()[0] == 0
    reader.rollback()
    expect_denied(reader, "select * from detail__next.fct_establishment_occupancy")
    reader.close()
    owner = psycopg2.connect(database)
    with owner.cursor() as cur:  # dbt stored no failing rows anywhere (store_failures)
        cur.execute("select nspname from pg_namespace where nspname like '%dbt_test%'")
        assert cur.fetchall() == []
    owner.close()
