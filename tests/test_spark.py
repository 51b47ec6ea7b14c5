"""The same warehouse on Apache Spark: built from the Parquet lake, equal to the DuckDB build.

One small generated delivery is ingested once; DuckDB builds the warehouse from the raw
store and Spark (dbt-spark, ``method: session``) from the open raw layer exported by
``ingestion.lake``. Both builds run every dbt test. Then corrected re-deliveries of two
payment months arrive (one month shrinks, one has every row quarantined, so its period
vanishes) and both engines refresh the payment fact and everything downstream
incrementally, with their tests. Then every mart is compared row by row:
same row count, same values in every column (text, integers, dates, booleans and money
exactly; floating-point figures to a relative 1e-9, percentiles to 1e-6), and the key
figures the issue names are checked to be non-trivial, so that equality means something.

Needs Java 17 and the ``spark`` extra: ``make test-spark`` (scripts/spark-ci.sh).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ingestion.contracts import load_contracts
from ingestion.lake import export_raw
from ingestion.load import Ingestor
from jisr.settings import PROJECT_DIR
from tests.conftest import TEST_KEY

pytestmark = pytest.mark.spark

BENEFICIARIES = 1000  # enough loans for a non-zero PAR30, enough requests for percentiles
MONTHS = 6
SEED = 7
REL_TOL = 1e-9          # floating-point figures (rates, means, hours)
PERCENTILE_REL_TOL = 1e-6  # percentiles: both engines interpolate linearly (quantile_cont / percentile)
PERCENTILE_COLUMNS = {"median_processing_hours", "p90_processing_hours"}
EXCLUDED_PREFIX = "_dbt_"  # which dbt invocation wrote a row: differs by construction

# The figures evaluators read first: each must exist and be non-trivial in this build.
KEY_FIGURES = {
    "mart_coverage_targeting": ["registered_population", "eligible_population", "beneficiaries_reached",
                                "coverage_rate"],
    "mart_transfers_monthly": ["payments_count", "beneficiaries_paid", "transfers_paid_mad"],
    "mart_programme_costs": ["transfers_paid_mad", "cost_per_beneficiary_mad"],
    "mart_finance_portfolio_monthly": ["outstanding_principal_mad", "loans_par30", "par30_rate"],
    "mart_establishment_occupancy_monthly": ["residents", "occupancy_rate"],
    "mart_digital_services_monthly": ["requests_submitted", "median_processing_hours", "p90_processing_hours"],
}

INCREMENTAL_SELECTION = "fct_payments+"  # the refresh after the corrected payment months
DBT_PROJECT = PROJECT_DIR / "dbt_project"


def java_problem() -> str | None:
    """Why Spark cannot start here, or None."""
    try:
        import pyspark  # noqa: F401
        import dbt.adapters.spark  # noqa: F401
    except ImportError:
        return "the spark extra is not installed: uv sync --frozen --extra spark (make test-spark does it)"
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        return "no Java runtime: Spark needs Java 17 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)"
    return None


@dataclass
class Builds:
    home: Path
    duckdb_path: Path
    spark_warehouse: Path
    timings: dict[str, float] = field(default_factory=dict)
    tests_run: dict[str, int] = field(default_factory=dict)
    corrected_months: dict[str, str] = field(default_factory=dict)  # month -> "shrunk" | "vanished"


def dbt(home: Path, profiles_dir: Path, target: str, *args: str) -> tuple[float, Path]:
    """Run a dbt command on the project; returns (seconds, target path). Fails the test with dbt's output."""
    target_path = home / f"target-{target}"
    env = dict(os.environ, JISR_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="False", JISR_DBT_TARGET=target)
    cmd = [str(Path(sys.executable).with_name("dbt")), "--no-version-check", *args,
           "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(profiles_dir),
           "--target", target, "--target-path", str(target_path), "--log-path", str(home / "logs" / target)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [line for line in proc.stdout.splitlines() if "WARN SparkSession" not in line]
        pytest.fail(f"dbt {' '.join(args)} --target {target} failed:\n" + "\n".join(lines[-80:]) + proc.stderr[-2000:])
    return seconds, target_path


def count_passed_tests(target_path: Path) -> int:
    results = json.loads((target_path / "run_results.json").read_text())["results"]
    tests = [r for r in results if r["unique_id"].startswith("test.")]
    assert tests and all(r["status"] == "pass" for r in tests)
    return len(tests)


def correct_payment_months(landing: Path, contract) -> dict[str, str]:
    """Re-deliver two payment months as a partner's correction: the 2nd month with every
    amount negative (all rows quarantined: the month has no current payment any more), the
    3rd without its last 20 payments."""
    files = sorted((landing / contract.partner).glob("paiements_*.csv"))
    encoding = {"windows-1252": "cp1252"}.get(contract.encoding, contract.encoding)
    amount = contract.column("amount_mad").header
    corrected = {}
    for path, kind in ((files[1], "vanished"), (files[2], "shrunk")):
        lines = path.read_bytes().decode(encoding).splitlines()
        if kind == "vanished":
            column = lines[0].split(contract.delimiter).index(amount)
            lines = [lines[0]] + [contract.delimiter.join("-1" if i == column else value for i, value in
                                                          enumerate(line.split(contract.delimiter)))
                                  for line in lines[1:]]
        else:
            lines = lines[:-20]
        path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
        corrected[contract.matches(path.name).group("batch")] = kind
    return corrected


def ingest_and_export(home: Path, contracts) -> None:
    Ingestor(home / "store" / "ingest.duckdb", contracts, TEST_KEY, seeds_dir=DBT_PROJECT / "seeds",
             rejected_dir=home / "rejected", feedback_dir=home / "feedback", code_version="test").ingest(home / "landing")
    export_raw(home / "store" / "ingest.duckdb", home / "lake", contracts)


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> Builds:
    problem = java_problem()
    if problem:
        pytest.skip(f"Spark target unavailable: {problem}")
    from ingestion.generate import generate

    home = tmp_path_factory.mktemp("spark-equivalence")
    timings = {}
    start = time.perf_counter()
    generate(home / "landing", beneficiaries=BENEFICIARIES, seed=SEED, months=MONTHS)
    contracts = load_contracts(PROJECT_DIR / "contracts")
    ingest_and_export(home, contracts)
    timings["generate, ingest, export lake"] = time.perf_counter() - start
    (home / "warehouse").mkdir(parents=True, exist_ok=True)

    profiles_dir = DBT_PROJECT  # the project's own profiles.yml: its `spark` output is what this proves
    result = Builds(home=home, duckdb_path=home / "warehouse" / "build.duckdb",
                    spark_warehouse=home / "warehouse" / "spark", timings=timings)
    timings["dbt build duckdb"], duck_target = dbt(home, profiles_dir, "duckdb", "build")
    result.tests_run["duckdb"] = count_passed_tests(duck_target)
    timings["dbt build spark"], spark_target = dbt(home, profiles_dir, "spark", "build")
    result.tests_run["spark"] = count_passed_tests(spark_target)

    result.corrected_months = correct_payment_months(home / "landing", contracts["payments"])
    ingest_and_export(home, contracts)
    for target in ("duckdb", "spark"):
        timings[f"incremental dbt build {target}"], target_path = dbt(
            home, profiles_dir, target, "build", "--select", INCREMENTAL_SELECTION)
        count_passed_tests(target_path)
    print("\nSpark equivalence timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return result


# ---------------------------------------------------------------- comparison helpers --
COMPARED_SCHEMAS = ("detail", "marts")  # the published marts and the internal person-level models


def mart_columns(con, table: str) -> list[tuple[str, str]]:
    """Columns of ``table`` (``schema.name``) in the DuckDB build."""
    schema, name = table.split(".")
    return con.execute(
        "select column_name, data_type from information_schema.columns where table_catalog = 'build' "
        "and table_schema = ? and table_name = ? order by ordinal_position", [schema, name]).fetchall()


def spark_table_sql(builds: Builds, table: str, columns: list[tuple[str, str]]) -> str:
    """The Spark-built table read from its Parquet files, columns cast to the DuckDB build's types
    (Spark keeps partition columns in directory names, read back as text)."""
    schema, name = table.split(".")
    location = builds.spark_warehouse / f"{schema}.db" / name
    assert location.is_dir(), f"Spark did not build {table} ({location} missing)"
    select = ", ".join(f'cast("{name}" as {typ}) as "{name}"' for name, typ in columns)
    return (f"select {select} from read_parquet('{location}/**/*.parquet', hive_partitioning = true, "
            "hive_types_autocast = false, union_by_name = true)")


def canonical(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<null>"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return repr(value)


def close(a, b, rel: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel)


def differences(duck_rows, spark_rows, columns, floats) -> list[str]:
    exact = [i for i, (name, _) in enumerate(columns) if name not in floats]
    approx = [i for i, (name, _) in enumerate(columns) if name in floats]

    def key(row):
        return (tuple(canonical(row[i]) for i in exact),
                tuple(-math.inf if row[i] is None else round(row[i], 6) for i in approx))

    out = []
    for d, s in zip(sorted(duck_rows, key=key), sorted(spark_rows, key=key)):
        for i in exact:
            if canonical(d[i]) != canonical(s[i]):
                out.append(f"{columns[i][0]}: duckdb {d[i]!r} vs spark {s[i]!r} (row {key(d)[0]})")
        for i in approx:
            rel = PERCENTILE_REL_TOL if columns[i][0] in PERCENTILE_COLUMNS else REL_TOL
            if not close(d[i], s[i], rel):
                out.append(f"{columns[i][0]}: duckdb {d[i]!r} vs spark {s[i]!r} (row {key(d)[0]})")
    return out


@pytest.fixture(scope="module")
def con(builds):
    con = duckdb.connect()
    con.execute(f"attach '{builds.duckdb_path}' as build (read_only)")
    yield con
    con.close()


def mart_names(con) -> list[str]:
    """``schema.table`` of every table the DuckDB build made in the compared schemas."""
    return [r[0] for r in con.execute(
        "select table_schema || '.' || table_name from information_schema.tables where table_catalog = 'build' "
        f"and table_schema in {COMPARED_SCHEMAS} order by 1").fetchall()]


# ------------------------------------------------------------------------------ tests --
def test_spark_builds_every_model_and_passes_every_dbt_test(builds, con):
    assert builds.tests_run["spark"] == builds.tests_run["duckdb"]
    built = sorted(f"{schema}.{p.name}" for schema in COMPARED_SCHEMAS
                   for p in (builds.spark_warehouse / f"{schema}.db").iterdir() if p.is_dir())
    assert built == mart_names(con)
    assert builds.timings["dbt build spark"] < 600


def test_spark_marts_have_the_duckdb_row_counts(builds, con):
    counts = {}
    for table in mart_names(con):
        columns = mart_columns(con, table)
        duck = con.execute(f"select count(*) from build.{table}").fetchone()[0]
        spark = con.execute(f"select count(*) from ({spark_table_sql(builds, table, columns)})").fetchone()[0]
        counts[table] = (duck, spark)
    assert {t: c for t, c in counts.items() if c[0] != c[1]} == {}
    assert sum(duck for duck, _ in counts.values()) > 0


def test_spark_marts_equal_duckdb_marts_value_by_value(builds, con):
    problems = {}
    for table in mart_names(con):
        columns = [(n, t) for n, t in mart_columns(con, table) if not n.startswith(EXCLUDED_PREFIX)]
        floats = {n for n, t in columns if t in ("DOUBLE", "FLOAT", "REAL")}
        names = ", ".join(f'"{n}"' for n, _ in columns)
        duck_rows = con.execute(f"select {names} from build.{table}").fetchall()
        spark_rows = con.execute(f"select {names} from ({spark_table_sql(builds, table, columns)})").fetchall()
        diff = differences(duck_rows, spark_rows, columns, floats)
        if len(duck_rows) != len(spark_rows) or diff:
            problems[table] = [f"{len(duck_rows)} vs {len(spark_rows)} rows", *diff[:5]]
    assert problems == {}


def test_spark_incremental_refresh_applies_corrected_months_like_duckdb(builds, con):
    columns = mart_columns(con, "detail.fct_payments")
    spark = spark_table_sql(builds, "detail.fct_payments", columns)
    query = "select payment_month, count(*) from {} group by payment_month order by payment_month"
    duck_months = dict(con.execute(query.format("build.detail.fct_payments")).fetchall())
    spark_months = dict(con.execute(query.format(f"({spark})")).fetchall())
    assert spark_months == duck_months
    vanished = [m for m, kind in builds.corrected_months.items() if kind == "vanished"]
    shrunk = [m for m, kind in builds.corrected_months.items() if kind == "shrunk"]
    assert vanished and not set(vanished) & set(duck_months)  # the month's payments are gone on both
    raw = duckdb.connect(str(builds.home / "store" / "ingest.duckdb"), read_only=True)
    current = dict(raw.execute("select payment_month, count(*) from raw.payments where _is_current "
                               "group by payment_month").fetchall())
    assert all(duck_months[m] == current[m] for m in shrunk)


@pytest.mark.parametrize("table", sorted(KEY_FIGURES))
def test_spark_key_figures_equal_duckdb_and_are_not_trivial(builds, con, table):
    columns = dict(mart_columns(con, f"marts.{table}"))
    figures = KEY_FIGURES[table]
    assert set(figures) <= set(columns), f"{table} lost key figure columns"
    spark = spark_table_sql(builds, f"marts.{table}", list(columns.items()))
    for figure in figures:
        rel = PERCENTILE_REL_TOL if figure in PERCENTILE_COLUMNS else REL_TOL
        query = f'select count("{figure}"), sum(cast("{figure}" as double)), max(cast("{figure}" as double))'
        duck = con.execute(f"{query} from build.marts.{table}").fetchone()
        other = con.execute(f"{query} from ({spark})").fetchone()
        assert duck[0] > 0 and duck[2] > 0, f"{table}.{figure} is empty or zero in this build: nothing compared"
        assert duck[0] == other[0], f"{table}.{figure}: {duck[0]} non-null values on DuckDB, {other[0]} on Spark"
        assert close(duck[1], other[1], rel) and close(duck[2], other[2], rel), (
            f"{table}.{figure}: sum/max {duck[1:]} on DuckDB, {other[1:]} on Spark")
