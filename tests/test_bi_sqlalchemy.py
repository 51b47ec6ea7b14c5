"""The BI recipe of docs/bi-access.md (Superset, pandas, any SQLAlchemy client), as written there."""

from __future__ import annotations

import warnings

import duckdb
import pytest

sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("duckdb_engine")

from jisr.settings import PROJECT_DIR  # noqa: E402


def make_serving(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("create schema marts; create schema meta")
    con.execute("create table marts.mart_coverage as select * from (values ('01', 'F', 120), ('02', 'M', 80)) "
                "t(region_code, sex, beneficiaries)")
    con.execute("create table marts.mart_transfers_monthly (payment_month_start_date date, region_code varchar, "
                "vulnerability_tercile integer, payments_count bigint, transfers_paid_mad decimal(38, 2), "
                "is_suppressed boolean default false)")
    con.execute("insert into marts.mart_transfers_monthly values ('2026-01-01', '01', 1, 40, 12000.50, false), "
                "('2026-01-01', '02', 2, null, null, true)")
    con.execute("create table meta.publish_log as select 'run-1' as run_id")
    con.close()
    return path


def recipe_urls(path) -> list[tuple[str, dict]]:
    """The two spellings documented: URL parameters, or connect_args (Superset's engine parameters)."""
    return [
        (f"duckdb:///{path}?access_mode=read_only&enable_external_access=false", {}),
        (f"duckdb:///{path}", {"read_only": True, "config": {"enable_external_access": False}}),
    ]


@pytest.mark.parametrize("spelling", [0, 1])
def test_bi_sqlalchemy_reads_marts_and_cannot_write(settings, tmp_path, spelling):
    path = make_serving(settings.serving_path)
    url, connect_args = recipe_urls(path)[spelling]
    engine = sa.create_engine(url, connect_args=connect_args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duckdb-engine warns about reflection details
        with engine.connect() as con:
            rows = con.execute(sa.text("select sex, sum(beneficiaries) from marts.mart_coverage group by sex "
                                       "order by sex")).fetchall()
            assert [tuple(r) for r in rows] == [("F", 120), ("M", 80)]
            assert "mart_coverage" in sa.inspect(con).get_table_names(schema="marts")
        for statement in ("insert into marts.mart_coverage values ('03', 'F', 1)",
                          "create table marts.x as select 1",
                          f"copy marts.mart_coverage to '{tmp_path}/leak.csv'",
                          f"select * from read_csv('{PROJECT_DIR / 'pyproject.toml'}')"):
            with engine.connect() as con, pytest.raises(sa.exc.DBAPIError):
                con.execute(sa.text(statement))
    engine.dispose()
    assert not (tmp_path / "leak.csv").exists()
    check = duckdb.connect(str(path), read_only=True)
    assert check.execute("select count(*) from marts.mart_coverage").fetchone()[0] == 2
    check.close()


@pytest.mark.parametrize("spelling", [0, 1])
def test_bi_sqlalchemy_reflects_mart_columns(settings, spelling):
    """What BI tools do before they query: list a mart's columns and types, load a table by name."""
    pd = pytest.importorskip("pandas")
    path = make_serving(settings.serving_path)
    url, connect_args = recipe_urls(path)[spelling]
    engine = sa.create_engine(url, connect_args=connect_args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duckdb-engine warns that it does not reflect indexes
        inspector = sa.inspect(engine)
        assert {"mart_coverage", "mart_transfers_monthly"} <= set(inspector.get_table_names(schema="marts"))
        columns = {c["name"]: c for c in inspector.get_columns("mart_transfers_monthly", schema="marts")}
        assert list(columns) == ["payment_month_start_date", "region_code", "vulnerability_tercile",
                                 "payments_count", "transfers_paid_mad", "is_suppressed"]
        expected = {"payment_month_start_date": sa.Date, "region_code": sa.String,
                    "vulnerability_tercile": sa.Integer, "payments_count": sa.BigInteger,
                    "transfers_paid_mad": sa.Numeric, "is_suppressed": sa.Boolean}
        for name, type_ in expected.items():
            assert isinstance(columns[name]["type"], type_), (name, columns[name]["type"])
        assert (columns["transfers_paid_mad"]["type"].precision, columns["transfers_paid_mad"]["type"].scale) == (38, 2)
        assert all(c["nullable"] for c in columns.values())
        assert inspector.get_pk_constraint("mart_transfers_monthly", schema="marts")["constrained_columns"] == []

        table = sa.Table("mart_transfers_monthly", sa.MetaData(), schema="marts", autoload_with=engine)
        assert [c.name for c in table.columns] == list(columns)
        df = pd.read_sql_table("mart_transfers_monthly", engine, schema="marts")
        assert list(df.columns) == list(columns)
        assert len(df) == 2
        assert df["payments_count"].iloc[0] == 40 and df["is_suppressed"].tolist() == [False, True]
        coverage = pd.read_sql_table("mart_coverage", engine, schema="marts", columns=["sex", "beneficiaries"])
        assert coverage.sort_values("sex")["beneficiaries"].tolist() == [120, 80]
    engine.dispose()
    check = duckdb.connect(str(path), read_only=True)
    assert check.execute("select count(*) from marts.mart_transfers_monthly").fetchone()[0] == 2
    check.close()


def test_bi_sqlalchemy_reader_coexists_with_jisr_sql(settings):
    """A BI session holding the serving file open does not lock out `jisr sql` in another process."""
    import os
    import subprocess
    import sys

    path = make_serving(settings.serving_path)
    url, connect_args = recipe_urls(path)[1]
    engine = sa.create_engine(url, connect_args=connect_args)
    env = {**os.environ, "JISR_HOME": str(settings.home), "PYTHONPATH": str(PROJECT_DIR)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with engine.connect() as con:
            assert con.execute(sa.text("select sum(beneficiaries) from marts.mart_coverage")).scalar() == 200
            proc = subprocess.run([sys.executable, "-m", "jisr.cli", "sql", "--format", "csv",
                                   "select sum(beneficiaries) as n from marts.mart_coverage"],
                                  capture_output=True, text=True, timeout=120, env=env, cwd=PROJECT_DIR)
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout.splitlines() == ["n", "200"]
    engine.dispose()


def test_bi_sqlalchemy_engine_of_the_recipe_reads_each_new_publication(settings):
    """A publication replaces the serving file (rename). The recipe's engine (NullPool)
    reads the new one at its next query; an engine with SQLAlchemy's default pool keeps its
    connection, and DuckDB its database, open: it kept reading the previous publication,
    as docs/bi-access.md says."""
    from sqlalchemy.pool import NullPool

    path = make_serving(settings.serving_path)
    connect_args = recipe_urls(path)[1][1]
    recipe = sa.create_engine(f"duckdb:///{path}", poolclass=NullPool, connect_args=connect_args)
    pooled = sa.create_engine(f"duckdb:///{path}", connect_args=connect_args)
    run = "select run_id from meta.publish_log"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for engine in (pooled, recipe):
            with engine.connect() as con:
                assert con.exec_driver_sql(run).scalar() == "run-1"
        pooled.dispose()
        with pooled.connect() as con:  # opened again: the pool holds it from here
            assert con.exec_driver_sql(run).scalar() == "run-1"
        new = make_serving(path.with_name("candidate.duckdb"))
        duckdb.connect(str(new)).execute("update meta.publish_log set run_id = 'run-2'").close()
        new.replace(path)  # what publication does
        with pooled.connect() as con:
            assert con.exec_driver_sql(run).scalar() == "run-1"
        pooled.dispose()
        with recipe.connect() as con:
            assert con.exec_driver_sql(run).scalar() == "run-2"
