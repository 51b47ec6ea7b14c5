"""A whole refresh of a generated delivery through the Dagster job, checked against the
generator's ground truth: every row accounted for, no clear identifier anywhere."""

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from jisr.settings import PROJECT_DIR, get_settings
from tests.conftest import TEST_KEY

CIN_SHAPE = re.compile(r"\b[A-Z]{1,2}[0-9]{5,6}\b")
PHONE_SHAPE = re.compile(r"(?<![0-9])(?:\+212|0)[5-7][0-9]{8}(?![0-9])")
ENV = ("JISR_HOME", "DAGSTER_HOME", "JISR_PSEUDONYM_KEY", "JISR_DEMO")


@pytest.fixture(scope="session")
def e2e(tmp_path_factory):
    from ingestion.generate import generate
    from jisr.refresh import run_refresh

    home = tmp_path_factory.mktemp("e2e")
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(JISR_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), JISR_PSEUDONYM_KEY=TEST_KEY.decode())
    os.environ.pop("JISR_DEMO", None)
    try:
        settings = get_settings()
        truth_path = home / "truth.json"
        generate(settings.landing_dir, beneficiaries=600, seed=11, months=3, truth_path=truth_path)
        clear = _clear_identifiers(settings.landing_dir)
        result = run_refresh(settings)
        yield SimpleNamespace(settings=settings, result=result, truth=json.loads(truth_path.read_text()),
                              clear=clear, run_refresh=run_refresh)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _clear_identifiers(landing: Path) -> set[str]:
    """Every CIN, phone number and name the generator wrote into the registry files."""
    con = duckdb.connect()
    values: set[str] = set()
    for path in sorted((landing / "msisf").glob("registre_*.csv")):
        text = path.read_bytes().decode("cp1252")
        tmp = landing.parent / "registry-utf8.csv"
        tmp.write_text(text, encoding="utf-8")
        rows = con.execute("select CIN, telephone, prenom, nom from read_csv(?, delim=';', header=true, all_varchar=true)",
                           [str(tmp)]).fetchall()
        tmp.unlink()
        for row in rows:
            values.update(v.strip() for v in row if v and len(v.strip()) > 2)
    # Public reference data (a commune may be named like a person) is not personal data.
    for seed in (PROJECT_DIR / "dbt_project" / "seeds").glob("*.csv"):
        for row in con.execute("select * from read_csv(?, all_varchar=true)", [str(seed)]).fetchall():
            values -= set(row)
    return values


def _warehouse_files(settings) -> list[Path]:
    return sorted(p for p in settings.home.rglob("*.duckdb") if p.is_file())


def test_refresh_succeeds(e2e):
    assert e2e.result.success, e2e.result.report()


def test_the_publish_log_lists_the_deliveries_the_build_recorded(e2e):
    from jisr.publish import current_deliveries, publish_log

    settings = e2e.settings
    con = duckdb.connect(str(settings.build_path), read_only=True)
    recorded = [json.loads(r[0]) for r in con.execute("select delivery from meta.build_deliveries").fetchall()]
    con.close()
    logged = json.loads(publish_log(settings)[0]["deliveries"])
    assert recorded and logged == recorded
    assert {d["delivery_id"] for d in logged} == {d["delivery_id"] for d in current_deliveries(settings)}


def test_every_published_table_and_column_carries_its_description(e2e):
    """BI tools show table and column comments as descriptions: dbt writes the models' YAML
    descriptions (persist_docs), the impact stage those of impact/descriptions.py, and the
    publication keeps them."""
    con = duckdb.connect(str(e2e.settings.serving_path), read_only=True)
    try:
        tables = con.execute("select schema_name, table_name from duckdb_tables() where schema_name in ('marts', 'impact') "
                             "and coalesce(comment, '') = ''").fetchall()
        columns = con.execute("select table_name, column_name from duckdb_columns() "
                              "where schema_name in ('marts', 'impact') and coalesce(comment, '') = ''").fetchall()
        described = dict(con.execute("select schema_name, count(*) from duckdb_columns() "
                                     "where schema_name in ('marts', 'impact') and comment <> '' group by 1").fetchall())
        schemas = {r[0] for r in con.execute("select schema_name from duckdb_tables()").fetchall()}
    finally:
        con.close()
    assert tables == [] and columns == [] and described["marts"] > 100 and described["impact"] > 100
    assert "impact_state" not in schemas, "the impact stage's input fingerprints stay in the build warehouse"


def test_no_clear_identifier_in_any_table_written(e2e):
    files = _warehouse_files(e2e.settings)
    assert {p.name for p in files} >= {"ingest.duckdb", "build.duckdb"}
    assert len(e2e.clear) > 1000
    hits = []
    for path in files:
        con = duckdb.connect(str(path), read_only=True)
        try:
            columns = con.execute(
                "select c.table_catalog, c.table_schema, c.table_name, c.column_name from information_schema.columns c "
                "join information_schema.tables t using (table_catalog, table_schema, table_name) "
                "where c.data_type in ('VARCHAR', 'JSON') and c.table_catalog = current_database() "
                "and t.table_type = 'BASE TABLE'").fetchall()  # views hold no data of their own
            for _, schema, table, column in columns:
                if column == "code_version":  # a commit's hash can hold ten digits shaped like a phone number
                    continue
                for (value,) in con.execute(f'select distinct "{column}" from "{schema}"."{table}" where "{column}" is not null').fetchall():
                    if CIN_SHAPE.search(value) or PHONE_SHAPE.search(value) or value.strip() in e2e.clear:
                        hits.append(f"{path.name}:{schema}.{table}.{column} = {value[:60]!r}")
        finally:
            con.close()
    parquet = list(e2e.settings.home.rglob("*.parquet"))
    for path in parquet:
        relation = duckdb.sql(f"select * from read_parquet('{path}')")
        for row in relation.fetchall():
            for name, v in zip(relation.columns, row):
                if name != "code_version" and isinstance(v, str) and (CIN_SHAPE.search(v) or PHONE_SHAPE.search(v) or v in e2e.clear):
                    hits.append(f"{path.name}: {v[:60]!r}")
    assert hits == []


def test_every_delivered_row_is_loaded_or_quarantined_as_planted(e2e):
    con = duckdb.connect(str(e2e.settings.store_path), read_only=True)
    deliveries = con.execute("select source, file_name, rows_delivered, rows_loaded, rows_quarantined, status "
                             "from meta.deliveries").fetchall()
    assert deliveries and all(status == "loaded" for *_, status in deliveries)
    for source, file_name, delivered, loaded, quarantined, _ in deliveries:
        assert delivered == loaded + quarantined, file_name
        assert con.execute(f"select count(*) from raw.{source} where _file_name = ?", [file_name]).fetchone()[0] == loaded
    quarantined = {(f, r, rule) for f, r, rule in con.execute("select file_name, source_row, rule from quarantine.rows").fetchall()}
    planted = {(d["file"].split("/")[-1], d["row"], d["rule"]) for d in e2e.truth["dirty_rows"]}
    assert quarantined == planted


def test_refresh_leaves_the_open_raw_layer_equal_to_the_raw_store(e2e):
    """The warehouse step exports the Parquet lake beside dbt: once the run is over, the lake
    holds exactly the raw store's rows."""
    from ingestion.contracts import load_contracts
    from tests.test_lake import assert_lake_matches_store

    assert_lake_matches_store(e2e.settings, load_contracts(e2e.settings.contracts_dir))


def test_refreshing_again_without_new_files_changes_no_row(e2e, capfd):
    """Through the CLI: nothing new, nothing changes; dbt's line per model and test goes to a
    log file, the terminal gets the summary."""
    from jisr.cli import main

    def counts():
        con = duckdb.connect(str(e2e.settings.store_path), read_only=True)
        try:
            tables = con.execute("select table_schema, table_name from information_schema.tables").fetchall()
            return {f"{s}.{t}": con.execute(f"select count(*) from {s}.{t}").fetchone()[0] for s, t in tables}
        finally:
            con.close()

    before = counts()
    assert main(["refresh"]) == 0
    out = capfd.readouterr().out
    assert counts() == before
    logs = sorted((e2e.settings.home / "logs").glob("refresh-*.log"))
    assert len(logs) == 1 and f"dbt's output (every model and test): {logs[0]}" in out
    assert "PASS not_null_" not in out and "PASS not_null_" in logs[0].read_text()
    assert "No new delivery in the landing area" in out


def test_the_served_publication_is_rebuilt_from_its_files_with_the_same_figures(e2e, capfd):
    """`jisr reproduce`: the publication served now (the second refresh's, which loaded
    nothing new) rebuilt in a new home from the delivered files, through the Dagster job,
    gives every published table the same content as built."""
    from jisr.cli import main
    from jisr.publish import publication_record, serving_run_id
    from quality.config import config_for

    served = serving_run_id(e2e.settings.serving_path)
    recorded = publication_record(e2e.settings, served)
    assert len(recorded["deliveries"]) == 31 and len(recorded["figures"]) >= 19
    assert main(["reproduce"]) == 0
    out = capfd.readouterr().out
    lines = {line.split()[0]: " ".join(line.split()[3:]) for line in out.splitlines()
             if line.startswith("  marts.") or line.startswith("  impact.")}  # table: as built, as published
    not_compared = set(config_for(e2e.settings).not_reproduced)
    assert set(lines) == set(recorded["figures"])
    assert {t for t, outcome in lines.items() if outcome != "same same"} == not_compared
    assert {lines[t] for t in not_compared} == {"not compared not compared"}
    assert f"Every figure of the {len(lines) - len(not_compared)} tables compared is the same as built" in out
    assert f"As published: each table compared with {e2e.settings.serving_path}, the cells it hides hidden" in out
    assert not (e2e.settings.home / "reproduce" / served).exists()
    assert serving_run_id(e2e.settings.serving_path) == served  # the warehouse served is left alone
