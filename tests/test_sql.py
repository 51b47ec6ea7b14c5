"""`jisr sql`: read-only queries on the serving warehouse, refusals, formats and errors."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from jisr import sql
from jisr.cli import main
from jisr.settings import PROJECT_DIR


def make_serving(path: Path) -> Path:
    """A hand-made published warehouse: marts, impact and meta.publish_log only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("create schema marts; create schema impact; create schema meta")
    con.execute("""create table marts.mart_coverage as select * from (values
        ('01', 'F', 120, 0.25), ('01', 'M', 80, 0.5), ('02', 'F', 40, null)) t(region_code, sex, beneficiaries, rate)""")
    con.execute("create table impact.impact_estimates as select 'DSD-01' as programme_code, 12.5 as estimate")
    con.execute("create table meta.publish_log as select 'run-1' as run_id, timestamp '2025-01-01 00:00:00' as published_at")
    con.close()
    return path


def make_store(path: Path) -> Path:
    """An internal raw store with a raw table (never published)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("create schema raw; create table raw.beneficiaries as select 42::bigint as person_key, 'F' as sex")
    con.close()
    return path


@pytest.fixture
def serving(settings):
    make_serving(settings.serving_path)
    make_store(settings.store_path)
    return settings


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["sql", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_select_prints_a_table(serving, capsys):
    code, out, err = run_cli(capsys, "select region_code, beneficiaries from marts.mart_coverage order by 1, 2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["region_code", "beneficiaries"]
    assert [line.split() for line in lines[2:5]] == [["01", "80"], ["01", "120"], ["02", "40"]]
    assert "(3 rows)" in out


def test_sql_csv_output_to_stdout_and_file(serving, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "select * from marts.mart_coverage order by beneficiaries", "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["region_code", "sex", "beneficiaries", "rate"]
    assert rows[1] == ["02", "F", "40", ""]  # NULL is an empty field
    target = tmp_path / "out.csv"
    code, _, err = run_cli(capsys, "select * from marts.mart_coverage", "--format", "csv", "--output", str(target))
    assert code == 0 and "wrote 3 rows" in err
    assert len(target.read_text().splitlines()) == 4


def test_sql_markdown_output(serving, capsys):
    code, out, _ = run_cli(capsys, "select sex, sum(beneficiaries) as n from marts.mart_coverage group by sex order by sex",
                           "--format", "markdown")
    assert code == 0
    assert out.splitlines()[:4] == ["| sex | n |", "|---|---:|", "| F | 160 |", "| M | 80 |"]


def test_sql_parquet_output_needs_a_file_and_writes_it(serving, capsys, tmp_path):
    code, _, err = run_cli(capsys, "select * from marts.mart_coverage", "--format", "parquet")
    assert code == 2 and "--output" in err
    target = tmp_path / "coverage.parquet"
    code, _, _ = run_cli(capsys, "select * from marts.mart_coverage", "--format", "parquet", "-o", str(target))
    assert code == 0
    import pyarrow.parquet as pq

    table = pq.read_table(target)
    assert table.num_rows == 3 and table.column_names == ["region_code", "sex", "beneficiaries", "rate"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "parquet"])
def test_sql_output_file_of_several_statements_is_refused_in_every_format(serving, capsys, tmp_path, fmt):
    script = tmp_path / "two.sql"
    script.write_text("select 1 as first_result;\nselect 2 as second_result;\n")
    target = tmp_path / f"out.{fmt}"
    code, out, err = run_cli(capsys, "-f", str(script), "--format", fmt, "-o", str(target))
    assert code == 2 and "--output writes the result of exactly one query, and the script has 2" in err
    assert not target.exists() and out == ""


def test_sql_file_runs_every_statement(serving, capsys, tmp_path):
    script = tmp_path / "q.sql"
    script.write_text("-- two queries\nselect count(*) as n from marts.mart_coverage;\nselect run_id from meta.publish_log;\n")
    code, out, _ = run_cli(capsys, "-f", str(script))
    assert code == 0
    assert "run-1" in out and out.count("(1 row)") == 2


def test_sql_table_output_is_bounded_by_max_rows(serving, capsys):
    code, out, _ = run_cli(capsys, "select range as i from range(50)", "--max-rows", "5")
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    assert lines[2:7] == ["0", "1", "2", "3", "4"]
    assert lines[7] == "(50 rows, first 5 shown; --max-rows 0 or --format csv for all)"


def test_sql_names_a_refused_import_database_as_such(serving, capsys, tmp_path):
    code, _, err = run_cli(capsys, f"import database '{tmp_path}/dump'")
    assert code == 2 and "refused: IMPORT DATABASE statement (import database" in err


@pytest.mark.parametrize("statement", [
    "insert into marts.mart_coverage values ('03', 'F', 1, 0.1)",
    "update marts.mart_coverage set beneficiaries = 0",
    "delete from marts.mart_coverage",
    "drop table marts.mart_coverage",
    "create table marts.x as select 1",
    "create temp table x as select 1",
    "alter table marts.mart_coverage add column y int",
    "attach '{store}' as store",
    "detach jisr",
    "copy marts.mart_coverage to '{tmp}/leak.csv'",
    "copy (select * from marts.mart_coverage) to '{tmp}/leak.parquet' (format parquet)",
    "export database '{tmp}/dump'",
    "import database '{tmp}/dump'",
    "install httpfs",
    "load httpfs",
    "set enable_external_access = true",
    "pragma enable_profiling",
    "select * from read_csv('{store}')",
    "select * from read_parquet('{tmp}/*.parquet')",
    "select * from read_json_auto('/etc/hostname')",
    "select * from glob('{tmp}/*')",
    "select * from '{store}'",
    "select * from query('select 1')",
    "explain analyze delete from marts.mart_coverage",
    "select 1; drop table marts.mart_coverage",
])
def test_sql_refuses_writes_and_escapes(serving, capsys, tmp_path, statement):
    statement = statement.format(store=serving.store_path, tmp=tmp_path)
    code, out, err = run_cli(capsys, statement)
    assert code == 2
    assert "refused" in err
    assert out == ""
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "leak.parquet").exists()
    con = duckdb.connect(str(serving.serving_path), read_only=True)
    assert con.execute("select count(*) from marts.mart_coverage").fetchone()[0] == 3
    con.close()


def test_sql_pivot_runs_with_its_columns_named_and_says_why_otherwise(serving, capsys):
    """A PIVOT without an IN list is several statements in DuckDB (it creates a type first):
    refused with what to write instead, not as a write to the warehouse; with the list it runs."""
    code, out, err = run_cli(capsys, "pivot marts.mart_coverage on sex using sum(beneficiaries)")
    assert code == 2 and out == ""
    assert "a PIVOT without the list of its columns" in err and "ON <column> IN ('a', 'b', ...)" in err
    assert "read-only" not in err
    code, out, err = run_cli(capsys, "pivot marts.mart_coverage on sex in ('F', 'M') using sum(beneficiaries) "
                                     "group by region_code order by region_code", "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "region_code,F,M", (out, err)
    code, _, err = run_cli(capsys, "install httpfs")
    assert code == 2 and "installing or loading a DuckDB extension" in err


def test_sql_reading_raw_fails_clearly(serving, capsys):
    code, out, err = run_cli(capsys, "select * from raw.beneficiaries")
    assert code == 2 and out == ""
    assert 'schema "raw" does not exist' in err
    assert "only what is published" in err


def test_sql_person_level_tables_are_not_in_the_serving_warehouse(serving, capsys):
    code, out, err = run_cli(capsys, "select * from detail.dim_beneficiaries")
    assert code == 2 and out == ""
    assert "detail" in err and "only what is published" in err and "person-level" in err


def test_sql_bad_sql_gives_duckdb_message_and_exit_2(serving, capsys):
    code, _, err = run_cli(capsys, "selec * from marts.mart_coverage")
    assert code == 2 and 'syntax error at or near "selec"' in err
    code, _, err = run_cli(capsys, "select nope from marts.mart_coverage")
    assert code == 2 and "nope" in err and "Binder Error" in err


def test_sql_without_a_published_warehouse_says_so(settings, capsys):
    code, _, err = run_cli(capsys, "select 1")
    assert code == 1 and "no published warehouse" in err


def test_sql_connection_guards_hold_without_the_statement_check(serving, tmp_path):
    """Defence in depth: the connection itself refuses writes, files and reconfiguration."""
    con = sql.connect_serving(serving.serving_path)
    failing = [
        "insert into marts.mart_coverage values ('03', 'F', 1, 0.1)",
        f"attach '{serving.store_path}' as store",
        f"select * from read_csv('{serving.store_path}')",
        f"copy marts.mart_coverage to '{tmp_path}/leak.csv'",
        "set enable_external_access = true",
        "set lock_configuration = false",
    ]
    for statement in failing:
        with pytest.raises(duckdb.Error):
            con.execute(statement)
    assert not (tmp_path / "leak.csv").exists()
    assert con.execute("select current_setting('enable_external_access')").fetchone()[0] is False
    schemas = {r[0] for r in con.execute("select distinct schema_name from duckdb_tables()").fetchall()}
    assert schemas == {"marts", "impact", "meta"}
    con.close()


def test_sql_check_accepts_queries(serving):
    accepted = sql.check_sql("with x as (select 1 as a) select * from x; from marts.mart_coverage; "
                             "describe marts.mart_coverage; show all tables; summarize marts.mart_coverage; "
                             "values (1); explain select 1")
    assert len(accepted) == 7


def _env(settings) -> dict[str, str]:
    env = dict(os.environ)
    env["JISR_HOME"] = str(settings.home)
    env["PYTHONPATH"] = str(PROJECT_DIR)
    return env


def test_sql_reads_a_script_from_stdin_when_not_a_tty(serving):
    proc = subprocess.run([sys.executable, "-m", "jisr.cli", "sql", "--format", "csv"],
                          input="select count(*) as n from marts.mart_coverage;\n", capture_output=True, text=True,
                          timeout=120, env=_env(serving), cwd=PROJECT_DIR)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["n", "3"]
    proc = subprocess.run([sys.executable, "-m", "jisr.cli", "sql"], input="delete from marts.mart_coverage;",
                          capture_output=True, text=True, timeout=120, env=_env(serving), cwd=PROJECT_DIR)
    assert proc.returncode == 2 and "refused" in proc.stderr


def test_sql_interactive_session_runs_statements_and_survives_errors(serving, monkeypatch):
    lines = iter(["select count(*) as n", "from marts.mart_coverage;", "drop table marts.mart_coverage;",
                  "selec 1;", ".tables", ".quit"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    out = io.StringIO()
    with sql.Session(serving.serving_path) as session:
        assert sql.interactive(session, out=out) == 0
    text = out.getvalue()
    assert "\n3\n" in text or " 3\n" in text
    assert "refused: DROP" in text
    assert "syntax error" in text
    assert "marts.mart_coverage" in text and "meta.publish_log" in text


# --- the example queries of dbt_project/analyses, on a warehouse published by the pipeline ----
ANALYSES = sorted((PROJECT_DIR / "dbt_project" / "analyses").glob("*.sql"))


@pytest.fixture(scope="module")
def published_home(tmp_path_factory):
    """Sample deliveries ingested, the dbt project built, impact tables in their documented
    shape, and the publish step (with disclosure control) writing the serving file."""
    from ingestion.contracts import load_contracts
    from ingestion.generate import generate
    from ingestion.load import Ingestor
    from impact.run import TABLES
    from jisr.publish import publish
    from jisr.settings import Settings
    from tests.conftest import TEST_KEY

    home = tmp_path_factory.mktemp("published")
    settings = Settings(home=home, key_value=TEST_KEY.decode())
    contracts = load_contracts(settings.contracts_dir)
    generate(settings.landing_dir, beneficiaries=200, seed=11, months=3, truth_path=home / "truth.json",
             contracts_dir=settings.contracts_dir, seeds_dir=settings.seeds_dir)
    sources = [s for s in contracts if not s.startswith("survey")]  # surveys are the impact stage's input
    Ingestor(settings.store_path, contracts, settings.pseudonym_key(), seeds_dir=settings.seeds_dir,
             rejected_dir=settings.rejected_dir, feedback_dir=settings.feedback_dir).ingest(settings.landing_dir, sources)
    settings.build_path.parent.mkdir(parents=True, exist_ok=True)
    work = home / "dbt"
    proc = subprocess.run([str(Path(sys.executable).with_name("dbt")), "build", "--resource-type", "seed",
                           "--resource-type", "model", "--no-version-check",
                           "--project-dir", str(settings.dbt_project_dir), "--profiles-dir", str(settings.dbt_project_dir),
                           "--target-path", str(work / "target"), "--log-path", str(work / "logs")],
                          env=settings.dbt_env(), capture_output=True, text=True, cwd=settings.dbt_project_dir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    con = duckdb.connect(str(settings.build_path))
    con.execute("create schema if not exists impact")
    for table, columns in TABLES.items():
        con.execute(f"create or replace table impact.{table} ({', '.join(f'{c} {t}' for c, t in columns.items())})")
    con.close()
    publish(settings, "run-analyses", "test", audit=False)
    return settings


@pytest.mark.parametrize("analysis", ANALYSES, ids=[p.stem for p in ANALYSES])
def test_sql_example_analyses_run_on_the_published_warehouse(published_home, analysis, monkeypatch, capsys):
    monkeypatch.setenv("JISR_HOME", str(published_home.home))
    code, out, err = run_cli(capsys, "-f", str(analysis), "--format", "csv")
    assert code == 0, err
    header = next(csv.reader(io.StringIO(out)))
    assert len(header) >= 3 and "programme_code" in header


def test_sql_coverage_analysis_adds_up_the_published_cells(published_home, monkeypatch, capsys):
    monkeypatch.setenv("JISR_HOME", str(published_home.home))
    code, out, err = run_cli(capsys, "-f", str(PROJECT_DIR / "dbt_project/analyses/coverage_by_region_and_sex.sql"),
                             "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    con = duckdb.connect(str(published_home.serving_path), read_only=True)
    cells, suppressed, reached = con.execute(
        "select count(*), count(*) filter (where is_suppressed), coalesce(sum(beneficiaries_reached), 0) "
        "from marts.mart_coverage_targeting").fetchone()
    con.close()
    assert rows and sum(int(r["cells"]) for r in rows) == cells
    assert sum(int(r["suppressed_cells"]) for r in rows) == suppressed
    assert sum(int(r["beneficiaries_reached"] or 0) for r in rows) == reached
    assert all(r["region_name_fr"] for r in rows)


def test_sql_analyses_render_to_published_schemas_only():
    """dbt analyses use ref(); `jisr sql -f` renders them to the published tables."""
    for analysis in ANALYSES:
        text = sql.render_analysis(analysis.read_text())
        assert "{{" not in text and "{%" not in text, analysis.name
        schemas = set(re.findall(r"\b(?:from|join)\s+([a-z_]+)\.", text))
        assert schemas and schemas <= {"marts", "impact", "meta"}, (analysis.name, schemas)


def test_sql_render_analysis_refuses_other_jinja():
    assert sql.render_analysis("select 1 from {{ ref('dim_dates').include(database=false) }}") == \
        "select 1 from marts.dim_dates"
    with pytest.raises(sql.SqlError):
        sql.render_analysis("select {{ run_query('drop table x') }}")
    with pytest.raises(sql.SqlError):
        sql.render_analysis("select {{ ''.__class__.__mro__ }}")


def test_text_table_aligns_numbers_right_and_text_left():
    out = sql.text_table(["source", "files", "last"], [["payments", 12, None], ["beneficiaries", 3, "2025-12"]])
    assert out.splitlines() == [
        "source         files  last",
        "-------------  -----  -------",
        "payments          12",
        "beneficiaries      3  2025-12",
    ]


def test_sql_session_spills_nothing_to_disk(serving):
    """A query larger than memory must not write spill files (by default DuckDB's temporary
    directory is ``<serving file>.tmp``, beside the published warehouse, bounded only by 90 %
    of the free disk): spilling is off and cannot be switched back on."""
    con = sql.connect_serving(serving.serving_path)
    try:
        assert con.execute("select current_setting('temp_directory')").fetchone()[0] == ""
        with pytest.raises(duckdb.Error):
            con.execute(f"set temp_directory = '{serving.serving_path}.tmp'")
        con.execute("select count(*) from (select i from range(100000) t(i) order by i desc)").fetchall()
        assert not Path(f"{serving.serving_path}.tmp").exists()
    finally:
        con.close()


@pytest.mark.parametrize("fmt", ["csv", "table", "parquet"])
def test_sql_output_never_overwrites_the_warehouses(serving, capsys, fmt):
    """--output is the evaluator's export: it must not replace the published warehouse (nor
    the stores beside it), which a user allowed to write there would destroy."""
    before = serving.serving_path.read_bytes()
    for target in (serving.serving_path, serving.store_path,
                   serving.serving_path.parent / "history" / ".." / "jisr.duckdb"):
        code, _, err = run_cli(capsys, "select 1 as x", "--format", fmt, "--output", str(target))
        assert code == 2 and "refused" in err, (target, err)
    assert serving.serving_path.read_bytes() == before
    code, out, _ = run_cli(capsys, "select count(*) as n from marts.mart_coverage", "--format", "csv")
    assert code == 0 and out.splitlines() == ["n", "3"]
