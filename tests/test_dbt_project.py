"""The dbt project's structure, checked over dbt's manifest.

dbt-project-evaluator cannot be installed here (dbt packages are out of reach), so its
rules that matter to this project are checked directly: naming and materialisation per
layer, only staging reads sources, no staging model reads another, every model states
its grain, every primary key is tested unique and not null, foreign keys have
relationships tests, no hard-coded relations, code lists follow the data contracts.
The project must also parse for the PostgreSQL target without a server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion.contracts import load_contracts
from jisr.settings import PROJECT_DIR

DBT_PROJECT = PROJECT_DIR / "dbt_project"
CONTRACTS = load_contracts(PROJECT_DIR / "contracts")
MAX_PARENTS = 7  # dbt-project-evaluator's default threshold for "too many joins"


def dbt_parse(home: Path, target: str, **extra_env: str) -> dict:
    target_path = home / f"target_{target}"
    env = dict(os.environ, JISR_HOME=str(home), DBT_SEND_ANONYMOUS_USAGE_STATS="False", **extra_env)
    env.pop("JISR_DBT_TARGET", None)
    for name in ("JISR_PG_HOST", "JISR_PG_PORT", "JISR_PG_USER", "JISR_PG_PASSWORD", "JISR_PG_DBNAME"):
        env.pop(name, None)
    cmd = [str(Path(sys.executable).with_name("dbt")), "--no-version-check", "parse", "--target", target,
           "--project-dir", str(DBT_PROJECT), "--profiles-dir", str(DBT_PROJECT),
           "--target-path", str(target_path), "--log-path", str(home / "logs")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"dbt parse --target {target} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
    return json.loads((target_path / "manifest.json").read_text())


@pytest.fixture(scope="session")
def manifest(tmp_path_factory) -> dict:
    return dbt_parse(tmp_path_factory.mktemp("dbt_parse"), "duckdb")


def models(manifest: dict) -> dict[str, dict]:
    return {n["name"]: n for n in manifest["nodes"].values()
            if n["resource_type"] == "model" and n["package_name"] == "jisr"}


def layer(node: dict) -> str:
    return Path(node["original_file_path"]).parts[1]  # models/<layer>/...


def generic_tests_on(manifest: dict, model_name: str) -> list[dict]:
    """Generic tests attached to a model, as (test name, column, kwargs) dicts."""
    unique_id = f"model.jisr.{model_name}"
    found = []
    for node in manifest["nodes"].values():
        if node["resource_type"] == "test" and node.get("attached_node") == unique_id and node.get("test_metadata"):
            meta = node["test_metadata"]
            found.append({"name": meta["name"], "column": node.get("column_name"), "kwargs": meta.get("kwargs", {}),
                          "severity": node["config"]["severity"]})
    return found


def primary_key(node: dict) -> list[str]:
    key = node["config"].get("meta", {}).get("primary_key")
    return [key] if isinstance(key, str) else list(key or [])


def parents(manifest: dict, node: dict) -> list[str]:
    return node["depends_on"]["nodes"]


def test_models_are_named_and_materialised_per_layer(manifest):
    problems = []
    for name, node in models(manifest).items():
        path = Path(node["original_file_path"])
        kind = layer(node)
        materialized = node["config"]["materialized"]
        if kind == "staging":
            if not re.fullmatch(r"stg_[a-z0-9_]+__[a-z0-9_]+s", name) or not name.startswith(f"stg_{path.parts[2]}__"):
                problems.append(f"{name}: staging models are stg_<partner>__<entity>s in staging/<partner>/")
            if materialized != "view" or node["schema"] != "staging":
                problems.append(f"{name}: staging models are views in schema staging")
        elif kind == "intermediate":
            if not name.startswith("int_") or len(path.parts) != 4:
                problems.append(f"{name}: intermediate models are int_* in intermediate/<domain>/")
            if node["schema"] != "intermediate":
                problems.append(f"{name}: intermediate models build in schema intermediate")
        elif kind == "marts":
            if not re.match(r"(dim|fct|mart)_", name) or len(path.parts) != 4:
                problems.append(f"{name}: marts are dim_/fct_/mart_ models in marts/<domain>/")
            if materialized not in ("table", "incremental") or node["schema"] not in ("marts", "detail"):
                problems.append(f"{name}: marts are tables (or incremental tables) in schema marts (published) or "
                                f"detail (internal), not {materialized} in {node['schema']}")
        else:
            problems.append(f"{name}: model outside staging/intermediate/marts")
    assert not problems, "\n".join(problems)


def test_person_level_models_build_into_the_internal_schema(manifest):
    """A mart keyed by a pseudonym (a person, a household, a study unit) is person-level: it
    builds into `detail`, never into the published `marts`; `detail` holds only those, the
    quarantine's row-level detail (one row per quarantined delivered row, no key) and the
    occupancy of each establishment, monthly and before and after its works (counts of
    people per establishment, which the occupancy mart publishes cell-suppressed)."""
    import yaml

    quality = yaml.safe_load((PROJECT_DIR / "config" / "quality.yml").read_text(encoding="utf-8"))
    key = re.compile(quality["checks"]["no_person_level_data_published"]["key_column_pattern"])
    placed = {}
    for name, node in models(manifest).items():
        if layer(node) != "marts":
            continue
        columns = set(node["columns"])
        assert columns, f"{name}: document its columns (the person-level rule reads them)"
        placed[name] = (node["schema"], any(key.search(c) for c in columns))
    row_level = {"fct_quarantined_rows", "fct_establishment_occupancy", "mart_establishment_works"}
    misplaced = {n: s for n, (s, person) in placed.items() if (s == "detail") != (person or n in row_level)}
    assert misplaced == {}, "person-level marts belong in detail, aggregates in marts"
    assert {n for n, (s, _) in placed.items() if s == "detail"} >= {"dim_beneficiaries", "fct_payments",
                                                                     "mart_evaluation_panel"}


def test_only_staging_models_read_sources(manifest):
    readers = {name for name, node in models(manifest).items()
               if any(p.startswith("source.") for p in parents(manifest, node))}
    assert readers
    assert {name for name in readers if not name.startswith("stg_")} == set()


def test_staging_models_read_one_source_and_no_other_model(manifest):
    for name, node in models(manifest).items():
        if layer(node) != "staging":
            continue
        ups = parents(manifest, node)
        assert [p for p in ups if not p.startswith("source.")] == [], f"{name} reads another model"
        assert len([p for p in ups if p.startswith("source.")]) == 1, f"{name} must read exactly one source"


def test_every_source_feeds_one_staging_model(manifest):
    readers: dict[str, list[str]] = {}
    for name, node in models(manifest).items():
        for p in parents(manifest, node):
            if p.startswith("source."):
                readers.setdefault(p, []).append(name)
    for unique_id, source in manifest["sources"].items():
        history = source["meta"].get("history_model")
        current = sorted(m for m in readers.get(unique_id, []) if m != history)
        assert len(current) == 1, f"{source['name']}: read by {current} (one current-state staging model expected)"


def test_sources_mirror_the_data_contracts(manifest):
    tables = {s["name"]: s for s in manifest["sources"].values() if s["source_name"] == "raw"}
    assert set(tables) == set(CONTRACTS)
    for source, table in tables.items():
        assert table["schema"] == "raw" and table["database"] == "ingest"
        assert table["meta"]["primary_key"] == list(CONTRACTS[source].raw_primary_key)
        assert table["meta"]["supersede"] == CONTRACTS[source].supersede


def test_every_model_states_its_grain_and_documents_its_columns(manifest):
    problems = []
    for name, node in models(manifest).items():
        if not re.search(r"\bone row\b", node["description"], re.IGNORECASE):
            problems.append(f"{name}: description must state the grain ('One row per ...')")
        if not node["columns"]:
            problems.append(f"{name}: no documented columns")
        problems += [f"{name}.{c}: no description" for c, col in node["columns"].items() if not col["description"]]
    assert not problems, "\n".join(problems)


def test_every_primary_key_is_tested_unique_and_not_null(manifest):
    problems = []
    per_column = sorted(n["name"] for n in manifest["nodes"].values()
                        if n["resource_type"] == "test" and (n.get("test_metadata") or {}).get("name") == "not_null")
    assert not per_column, f"declare not-null columns in the model's not_null_columns test: {per_column}"
    for name, node in models(manifest).items():
        key = primary_key(node)
        if not key:
            problems.append(f"{name}: no meta.primary_key")
            continue
        tests = generic_tests_on(manifest, name)
        # the columns a model promises are never null: one not_null_columns test per model
        not_null = {c for t in tests if t["name"] == "not_null_columns" for c in t["kwargs"]["column_names"]}
        if len(key) == 1:
            unique = {t["column"] for t in tests if t["name"] == "unique" and not t["kwargs"].get("config", {}).get("where")}
            if key[0] not in unique or key[0] not in not_null:
                problems.append(f"{name}: primary key {key[0]} needs unique and not_null tests")
        else:
            combos = [t["kwargs"]["combination_of_columns"] for t in tests if t["name"] == "unique_combination_of_columns"]
            if key not in combos:
                problems.append(f"{name}: composite primary key {key} needs unique_combination_of_columns")
            if set(key) - not_null:
                problems.append(f"{name}: primary key columns {sorted(set(key) - not_null)} need not_null tests")
        if any(t["severity"].upper() != "ERROR" for t in tests if t["name"] in ("unique", "unique_combination_of_columns")
               and (t["column"] in key or t["kwargs"].get("combination_of_columns") == key)):
            problems.append(f"{name}: primary key tests must be errors")
    assert not problems, "\n".join(problems)


def test_foreign_keys_of_facts_and_dimensions_have_relationships_tests(manifest):
    all_models = models(manifest)
    conformed = {}
    for name, node in all_models.items():
        key = node["config"].get("meta", {}).get("conformed_key")
        if key:
            conformed[key] = name
    assert {"person_key", "programme_code", "commune_code", "establishment_id"} <= set(conformed)
    problems = []
    for name, node in all_models.items():
        if not re.match(r"(fct|dim)_", name):
            continue
        related = {t["column"] for t in generic_tests_on(manifest, name) if t["name"] == "relationships"}
        for column in node["columns"]:
            owner = conformed.get(column)
            if owner and owner != name and column not in related:
                problems.append(f"{name}.{column}: foreign key to {owner} without a relationships test")
    assert not problems, "\n".join(problems)


def test_no_model_or_test_hard_codes_a_relation(manifest):
    pattern = re.compile(r"\b(from|join)\s+[\"`]?[a-z_][a-z0-9_]*[\"`]?\.[\"`]?[a-z_][a-z0-9_]*", re.IGNORECASE)
    offenders = []
    for node in manifest["nodes"].values():
        if node["package_name"] != "jisr" or node["resource_type"] not in ("model", "test", "analysis"):
            continue
        code = re.sub(r"\{#.*?#\}|\{\{.*?\}\}|\{%.*?%\}", " ", node["raw_code"], flags=re.DOTALL)
        code = re.sub(r"--[^\n]*", " ", code)
        if pattern.search(code):
            offenders.append(f"{node['name']}: {pattern.search(code).group(0)}")
    assert not offenders, "\n".join(offenders)


def test_models_do_not_join_too_many_parents(manifest):
    wide = {name: len(parents(manifest, node)) for name, node in models(manifest).items()
            if len(parents(manifest, node)) > MAX_PARENTS and name != "int_reference_dates"}
    assert not wide, wide


def test_staging_accepted_values_follow_the_contract_code_lists(manifest):
    all_models = models(manifest)
    checked = 0
    for source, contract in CONTRACTS.items():
        staging = [n for n, node in all_models.items() if f"source.jisr.raw.{source}" in parents(manifest, node)
                   and n != manifest["sources"][f"source.jisr.raw.{source}"]["meta"].get("history_model")]
        (model,) = staging
        renames = dict(re.findall(r"^\s*(\w+) as (\w+),?$", all_models[model]["raw_code"], re.MULTILINE))
        accepted = {t["column"]: sorted(t["kwargs"]["values"]) for t in generic_tests_on(manifest, model)
                    if t["name"] == "accepted_values"}
        for col in contract.columns:
            if col.allowed:
                name = renames.get(col.raw_name, col.raw_name)
                assert accepted.get(name) == sorted(col.allowed), f"{model}.{name}: accepted_values != contract {source}.{col.name}"
                checked += 1
    assert checked >= 15


def test_large_facts_are_incremental_by_their_replacement_key(manifest):
    expected = {"fct_payments": "payment_month", "fct_establishment_occupancy": "report_month",
                "fct_loan_instalments": "instalment_id", "fct_service_requests": "request_id"}
    all_models = models(manifest)
    for name, key in expected.items():
        config = all_models[name]["config"]
        assert (config["materialized"], config["unique_key"], config["incremental_strategy"]) == \
            ("incremental", key, "delete+insert"), name


def test_dagster_groups_follow_the_dbt_folders(manifest):
    for name, node in models(manifest).items():
        parts = Path(node["original_file_path"]).parts
        expected = parts[2] if parts[1] == "marts" else parts[1]
        assert node["config"]["meta"]["dagster"]["group"] == expected, name


def test_project_parses_for_the_postgres_target_without_a_server(tmp_path):
    pg = dbt_parse(tmp_path, "postgres")
    raw = {s["name"]: s for s in pg["sources"].values() if s["source_name"] == "raw"}
    assert set(raw) == set(CONTRACTS)
    assert {(s["database"], s["schema"]) for s in raw.values()} == {("jisr", "raw")}
    schemas = {n["name"]: n["schema"] for n in pg["nodes"].values() if n["resource_type"] == "model"}
    assert schemas["mart_evaluation_panel"] == "detail" and schemas["mart_coverage_targeting"] == "marts"
    assert schemas["stg_msisf__payments"] == "staging"
    dispatched = [n for n in pg["nodes"].values() if n["resource_type"] == "model"
                  and "macro.jisr.percentile_cont" in n["depends_on"]["macros"]]
    assert dispatched, "percentiles go through the dispatched macro"


def test_age_is_computed_by_one_rule_on_every_engine():
    """Completed years, the birthday counted on the day itself: born 29 February, a person is
    24 on 28 February 2025 (not yet 25) on DuckDB, PostgreSQL and Spark alike. Spark's
    months_between counts two month ends as whole months (300 from 2000-02-29 to
    2025-02-28), so Spark uses the default rule, which DuckDB runs here."""
    import duckdb

    macros = (DBT_PROJECT / "macros" / "cross_db" / "dates.sql").read_text(encoding="utf-8")
    engines = set(re.findall(r"macro (\w+)__age_in_years\(", macros))
    assert engines == {"default", "postgres"}  # postgres: age(), the same rule
    body = re.search(r"macro default__age_in_years\(birth_date, as_of_date\) -%\}(.*?)\{%- endmacro", macros, re.S)[1]
    sql = body.replace("{{ birth_date }}", "b").replace("{{ as_of_date }}", "d")
    con = duckdb.connect()
    ages = con.execute(f"select b, d, {sql} from (values (date '2000-02-29', date '2025-02-28'), "
                       "(date '2000-02-29', date '2025-03-01'), (date '1990-06-15', date '2025-06-14'), "
                       "(date '1990-06-15', date '2025-06-15')) t(b, d)").fetchall()
    assert [a for *_, a in ages] == [24, 25, 34, 35]


def test_means_do_not_depend_on_the_order_rows_arrive_in():
    """Two builds of the same deliveries give the same figures: a mean of doubles added in
    the order DuckDB's threads deliver them changes in its last bits from one build to the
    next (three shares averaged in another order: another mean), so a model averages through
    ``jisr.exact_avg``; a bare ``avg`` only of money (decimal, added exactly) cast back to money."""
    bare = []
    for path in sorted((DBT_PROJECT / "models").rglob("*.sql")):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in re.finditer(r"(?<![\w.])avg\(", line):
                if not re.match(r"avg\([\w.]*_mad\) as \{\{ jisr\.type_money\(\) \}\}\)", line[match.start():]):
                    bare.append(f"{path.relative_to(DBT_PROJECT)}:{line_no}: {line.strip()}")
    assert bare == []


def test_the_schema_suffix_of_a_postgresql_publication_moves_no_duckdb_build(tmp_path):
    """`jisr publish-postgres` builds beside the schemas readers use (JISR_SCHEMA_SUFFIX=__next);
    the same variable left set in a shell must not move the DuckDB build's schemas."""
    duckdb_nodes = models(dbt_parse(tmp_path / "d", "duckdb", JISR_SCHEMA_SUFFIX="__next"))
    postgres_nodes = models(dbt_parse(tmp_path / "p", "postgres", JISR_SCHEMA_SUFFIX="__next"))
    assert {n["schema"] for n in duckdb_nodes.values()} == {"staging", "intermediate", "marts", "detail"}
    assert {n["schema"] for n in postgres_nodes.values()} == {"staging__next", "intermediate__next", "marts__next",
                                                               "detail__next"}
