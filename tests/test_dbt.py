"""jisr/dbt.py: the dbt state kept per JISR_HOME between refreshes (parse state, docs)."""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from jisr.dbt import (
    DOCS_FINGERPRINT_FILE,
    PARTIAL_PARSE_FILE,
    dbt_schemas,
    docs_are_current,
    docs_fingerprint,
    ensure_manifest,
    keep_docs,
    manifest_is_stale,
    prune_run_targets,
    restore_partial_parse,
    run_target_path,
    save_partial_parse,
)
from jisr.settings import Settings


def _home(tmp_path, name: str) -> Settings:
    return Settings(home=tmp_path / name)


def _build(settings: Settings, *statements: str) -> None:
    settings.build_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(settings.build_path))
    try:
        for sql in statements:
            con.execute(sql)
    finally:
        con.close()


def test_partial_parse_state_is_restored_for_the_same_home_only(tmp_path):
    home_a, home_b = _home(tmp_path, "a"), _home(tmp_path, "b")
    first_run = tmp_path / "target" / "run-1"
    first_run.mkdir(parents=True)
    (first_run / PARTIAL_PARSE_FILE).write_bytes(b"state of home a")
    assert save_partial_parse(home_a, first_run)

    next_run = tmp_path / "target" / "run-2"
    assert restore_partial_parse(home_a, next_run)
    assert (next_run / PARTIAL_PARSE_FILE).read_bytes() == b"state of home a"
    other_home_run = tmp_path / "target" / "run-3"
    assert not restore_partial_parse(home_b, other_home_run)
    assert not (other_home_run / PARTIAL_PARSE_FILE).exists()


def test_run_targets_live_under_the_home_and_only_the_newest_are_kept(tmp_path):
    home = _home(tmp_path, "a")
    made = []
    for n in range(7):
        path = run_target_path(home, f"warehouse_dbt-run{n}")
        (path / "compiled").mkdir(parents=True)
        (path / "manifest.json").write_text("{}")
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
        made.append(path)
    assert all(p.is_relative_to(home.home) for p in made)
    removed = prune_run_targets(home, keep=3)
    assert removed == made[:4]
    assert sorted(p.name for p in (home.home / "dbt" / "runs").iterdir()) == [p.name for p in made[4:]]
    assert prune_run_targets(_home(tmp_path, "empty")) == []


def test_save_partial_parse_keeps_the_earlier_state_when_dbt_wrote_none(tmp_path):
    home = _home(tmp_path, "a")
    run = tmp_path / "target" / "run-1"
    run.mkdir(parents=True)
    (run / PARTIAL_PARSE_FILE).write_bytes(b"v1")
    save_partial_parse(home, run)
    failed_run = tmp_path / "target" / "run-2"
    failed_run.mkdir()
    assert not save_partial_parse(home, failed_run)
    assert restore_partial_parse(home, tmp_path / "target" / "run-3")
    assert (tmp_path / "target" / "run-3" / PARTIAL_PARSE_FILE).read_bytes() == b"v1"


def test_docs_fingerprint_ignores_new_rows_but_follows_schema_changes(tmp_path):
    home = _home(tmp_path, "a")
    _build(home, "create schema marts", "create table marts.fct_x (x_id bigint, amount_mad decimal(18, 2))")
    first = docs_fingerprint(home)
    _build(home, "insert into marts.fct_x values (1, 2.5), (2, 3.0)")
    assert docs_fingerprint(home) == first, "new rows do not change what the docs show"
    _build(home, "alter table marts.fct_x add column is_paid boolean")
    assert docs_fingerprint(home) != first, "a new column must regenerate the docs"
    second = docs_fingerprint(home)
    _build(home, "alter table marts.fct_x alter amount_mad type double")
    assert docs_fingerprint(home) != second, "a changed type must regenerate the docs"
    third = docs_fingerprint(home)
    _build(home, "create view marts.v_x as select x_id from marts.fct_x")
    assert docs_fingerprint(home) != third, "a new relation must regenerate the docs"


def test_docs_fingerprint_ignores_schemas_dbt_does_not_build(tmp_path):
    """The impact stage writes its schema after dbt: that must not regenerate the docs."""
    home = _home(tmp_path, "a")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "nodes": {"model.jisr.fct_x": {"resource_type": "model", "database": "build", "schema": "marts"},
                  "test.jisr.t": {"resource_type": "test", "database": "build", "schema": "dbt_test__audit"}},
        "sources": {"source.jisr.raw.x": {"database": "ingest", "schema": "raw"}},
    }))
    schemas = dbt_schemas(manifest)
    assert schemas == {("build", "marts"), ("ingest", "raw")}
    _build(home, "create schema marts", "create table marts.fct_x (x_id bigint)")
    first = docs_fingerprint(home, schemas)
    _build(home, "create schema impact", "create table impact.impact_estimates (estimate double)")
    assert docs_fingerprint(home, schemas) == first
    _build(home, "alter table marts.fct_x add column y varchar")
    assert docs_fingerprint(home, schemas) != first


def test_docs_are_current_only_for_the_fingerprint_they_were_generated_for(tmp_path):
    docs_dir = tmp_path / "reports" / "dbt-docs"
    assert not docs_are_current(docs_dir, "f1")
    page = tmp_path / "static_index.html"
    page.write_text("<html>docs</html>")
    installed = keep_docs(page, docs_dir, "f1")
    assert installed.read_text() == "<html>docs</html>"
    assert docs_are_current(docs_dir, "f1")
    assert not docs_are_current(docs_dir, "f2")
    (docs_dir / "static_index.html").unlink()
    assert not docs_are_current(docs_dir, "f1"), "a missing page is generated again"
    assert (docs_dir / DOCS_FINGERPRINT_FILE).exists()


@dataclass(frozen=True)
class _OwnProject(Settings):
    """Settings whose dbt project is a folder of the test's."""
    project: Path | None = None

    @property
    def dbt_project_dir(self) -> Path:
        return self.project


@pytest.fixture
def small_project(tmp_path, monkeypatch):
    """A dbt project of two models, and ``dbt parse`` replaced by a manifest of its models."""
    import jisr.dbt

    root = tmp_path / "dbt_project"
    (root / "models" / "staging").mkdir(parents=True)
    (root / "dbt_project.yml").write_text("name: jisr\n")
    for name in ("stg_a", "stg_b"):
        (root / "models" / "staging" / f"{name}.sql").write_text("select 1 as x\n")
    parses = []

    def parse(cmd, **kwargs):
        models = sorted(p.stem for p in (root / "models").rglob("*.sql"))
        (root / "target").mkdir(exist_ok=True)
        (root / "target" / "manifest.json").write_text(json.dumps({"nodes": {f"model.jisr.{m}": {} for m in models}}))
        parses.append(models)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(jisr.dbt.subprocess, "run", parse)
    monkeypatch.setattr(jisr.dbt, "_ENSURED", {}, raising=False)
    return _OwnProject(home=tmp_path / "home", project=root), parses


def test_a_model_renamed_or_deleted_keeping_file_times_makes_the_manifest_stale(small_project):
    """``mv``/``git mv`` keep a file's modification time and a deletion leaves no newer file:
    the manifest is compared with the project's files, not with their times."""
    settings, parses = small_project
    models = settings.dbt_project_dir / "models" / "staging"
    ensure_manifest(settings)
    assert parses == [["stg_a", "stg_b"]] and not manifest_is_stale(settings)
    (models / "stg_b.sql").rename(models / "stg_c.sql")  # same time, same content
    assert manifest_is_stale(settings)
    ensure_manifest(settings)
    assert parses[-1] == ["stg_a", "stg_c"] and not manifest_is_stale(settings)
    (models / "stg_c.sql").unlink()
    assert manifest_is_stale(settings)
    ensure_manifest(settings)
    assert parses[-1] == ["stg_a"]
    (models / "stg_a.sql").write_text("select 2 as x\n")
    os.utime(models / "stg_a.sql", ns=(1, 1))  # an edit whose file is older than the manifest
    assert manifest_is_stale(settings)
    ensure_manifest(settings)
    os.utime(models / "stg_a.sql")  # a newer time alone is no change: no new parse
    ensure_manifest(settings)
    assert len(parses) == 4 and not manifest_is_stale(settings)


def test_the_manifest_a_process_loaded_is_stale_once_another_process_parsed_a_changed_project(small_project):
    settings, parses = small_project
    models = settings.dbt_project_dir / "models" / "staging"
    ensure_manifest(settings)  # what this process's Dagster definitions are made from
    (models / "stg_b.sql").rename(models / "stg_c.sql")
    import jisr.dbt

    loaded = dict(jisr.dbt._ENSURED)
    ensure_manifest(settings)  # another process (e.g. `jisr refresh`) parses the changed project
    jisr.dbt._ENSURED.update(loaded)
    assert manifest_is_stale(settings)
