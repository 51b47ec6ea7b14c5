"""dbt state around the project: the manifest Dagster reads at start-up (kept in step with
the project), and per JISR_HOME (``$JISR_HOME/dbt``) the partial-parse state, the target
folders of the last refreshes and the fingerprint of the generated docs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from jisr.settings import Settings

WATCHED = ("models", "macros", "seeds", "tests", "analyses", "snapshots")
WATCHED_FILES = ("dbt_project.yml", "profiles.yml")


def _parent_death_signal():
    """Linux's prctl(PR_SET_PDEATHSIG), or None where it does not exist."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _parent_death_signal()


def dies_with_this_process():
    """A ``preexec_fn`` for a child (dbt) that must not outlive the process starting it: the
    child gets SIGTERM when that process dies, even killed outright (SIGKILL, the
    out-of-memory killer), where its locks and half-written schemas would be left to the next
    run. None where the parent-death signal does not exist (not Linux)."""
    prctl, parent = _PRCTL, os.getpid()
    if prctl is None:
        return None

    def bind_to_parent():  # in the child, before exec: only async-signal-safe calls
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call above
            os._exit(1)

    return bind_to_parent


def dbt_executable() -> Path:
    """The dbt of this environment (not whatever dbt is first on PATH)."""
    return Path(sys.executable).with_name("dbt")


def manifest_path(settings: Settings) -> Path:
    return settings.dbt_project_dir / "target" / "manifest.json"


def _project_files(settings: Settings) -> list[Path]:
    """Every file of the dbt project that dbt reads (project, profiles, models, macros, ...)."""
    root = settings.dbt_project_dir
    paths = [root / f for f in WATCHED_FILES if (root / f).exists()]
    for sub in WATCHED:
        paths += [p for p in (root / sub).rglob("*") if p.is_file()]
    return paths


def manifest_fingerprint_path(settings: Settings) -> Path:
    """Beside the manifest: the fingerprint (:func:`project_fingerprint`) of the project it
    was parsed from."""
    return manifest_path(settings).with_name("manifest.fingerprint")


# The fingerprint of the manifest this process read (ensure_manifest): the Dagster definitions
# of a process are made from the manifest of its start, whatever another process parses later.
_ENSURED: dict[Path, str] = {}


def manifest_is_stale(settings: Settings) -> bool:
    """Whether the manifest (or the one this process loaded) was not parsed from the project
    as it is now: a file of it added, deleted, renamed (``mv`` and ``git mv`` keep the file's
    time) or edited since, or another dbt version. Compares fingerprints of the files'
    contents, not times (about 10 ms for the project's ~100 files)."""
    path, stamp = manifest_path(settings), manifest_fingerprint_path(settings)
    if not path.exists() or not stamp.exists():
        return True
    current = project_fingerprint(settings)
    return stamp.read_text().strip() != current or _ENSURED.get(path, current) != current


def ensure_manifest(settings: Settings, force: bool = False) -> Path:
    """Run ``dbt parse`` when the manifest is missing or was parsed from another state of
    the dbt project, and record the project's fingerprint beside it."""
    path, stamp = manifest_path(settings), manifest_fingerprint_path(settings)
    _ENSURED.pop(path, None)  # this process now reads the manifest as it is after this call
    if force or manifest_is_stale(settings):
        fingerprint = project_fingerprint(settings)  # before parsing: an edit meanwhile leaves it stale
        stamp.unlink(missing_ok=True)
        cmd = [str(dbt_executable()), "parse", "--no-version-check", "--quiet", "--project-dir", str(settings.dbt_project_dir),
               "--profiles-dir", str(settings.dbt_project_dir)]
        done = subprocess.run(cmd, env=settings.dbt_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dbt parse failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
        stamp.write_text(fingerprint + "\n")
    _ENSURED[path] = stamp.read_text().strip()
    return path


# --------------------------------------------------------------------------------------
# State kept between refreshes of one JISR_HOME

PARTIAL_PARSE_FILE = "partial_parse.msgpack"
DOCS_FINGERPRINT_FILE = "fingerprint.txt"


def state_dir(settings: Settings) -> Path:
    """dbt state of this JISR_HOME kept between refreshes (never published)."""
    return settings.home / "dbt"


RUN_TARGETS_KEPT = 5  # dbt target folders (manifest, run_results, compiled SQL) of the last refreshes


def run_target_path(settings: Settings, name: str) -> Path:
    """A new dbt target folder for one refresh, under this home (``$JISR_HOME/dbt/runs``), not
    in the project tree: each one holds about 24 MB (manifest, compiled SQL, run results)."""
    return state_dir(settings) / "runs" / name


def prune_run_targets(settings: Settings, keep: int = RUN_TARGETS_KEPT) -> list[Path]:
    """Remove the target folders of older refreshes, keeping the ``keep`` newest; returns the
    removed folders. A nightly refresh would otherwise add 24 MB a day."""
    folder = state_dir(settings) / "runs"
    if not folder.exists():
        return []
    runs = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    removed = runs[:-keep] if keep else runs
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def restore_partial_parse(settings: Settings, target_path: Path) -> bool:
    """Put this home's saved parse state into a new dbt target path.

    dbt re-parses the whole project when the saved state was written for another profile
    (the warehouse path follows JISR_HOME), so the state shared in the project's
    ``target/`` is only good for one home; each home keeps its own. Returns whether a
    saved state was restored.
    """
    saved = state_dir(settings) / PARTIAL_PARSE_FILE
    if not saved.exists():
        return False
    target_path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(saved, target_path / PARTIAL_PARSE_FILE)
    return True


def save_partial_parse(settings: Settings, target_path: Path) -> bool:
    """Keep the parse state a dbt invocation wrote, for the next refresh of this home."""
    written = target_path / PARTIAL_PARSE_FILE
    if not written.exists():
        return False
    folder = state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{PARTIAL_PARSE_FILE}.tmp"
    shutil.copyfile(written, tmp)
    os.replace(tmp, folder / PARTIAL_PARSE_FILE)
    return True


def project_fingerprint(settings: Settings) -> str:
    """Hash of every file dbt reads from the project (and of dbt's version)."""
    from importlib.metadata import version

    root = settings.dbt_project_dir
    digest = hashlib.sha256(f"dbt-core {version('dbt-core')} dbt-duckdb {version('dbt-duckdb')}\n".encode())
    for path in sorted(_project_files(settings)):
        digest.update(f"{path.relative_to(root).as_posix()}\n".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def dbt_schemas(manifest: Path) -> set[tuple[str, str]]:
    """(database, schema) of every model, seed, snapshot and source in a dbt manifest."""
    data = json.loads(Path(manifest).read_text(encoding="utf-8"))
    nodes = [n for n in data.get("nodes", {}).values() if n.get("resource_type") in ("model", "seed", "snapshot")]
    nodes += list(data.get("sources", {}).values())
    return {(str(n.get("database")), str(n.get("schema"))) for n in nodes}


def warehouse_schema_fingerprint(settings: Settings, schemas: set[tuple[str, str]] | None = None) -> str:
    """Hash of the relations and columns of the build warehouse and the raw store (only the
    ``schemas`` dbt knows, when given): what dbt's catalog (the docs' column types and
    comments) is made of. Rows do not count: new data does not change it."""
    import duckdb

    con = duckdb.connect(str(settings.build_path), read_only=True)
    try:
        if settings.store_path.exists():
            con.execute(f"attach '{settings.store_path}' as ingest (read_only)")
        rows = con.execute(
            "select database_name, schema_name, table_name, column_index, column_name, data_type, "
            "coalesce(comment, '') from duckdb_columns() "
            "where database_name in (current_database(), 'ingest') and not internal"
        ).fetchall()
        rows += con.execute(
            "select database_name, schema_name, table_name, -1, 'table', '', coalesce(comment, '') from duckdb_tables() "
            "where database_name in (current_database(), 'ingest') and not internal "
            "union all select database_name, schema_name, view_name, -1, 'view', '', coalesce(comment, '') "
            "from duckdb_views() where database_name in (current_database(), 'ingest') and not internal"
        ).fetchall()
    finally:
        con.close()
    if schemas is not None:
        rows = [r for r in rows if (r[0], r[1]) in schemas]
    return hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest()


def docs_fingerprint(settings: Settings, schemas: set[tuple[str, str]] | None = None) -> str:
    """What the dbt docs page depends on: the project's files and the warehouse's schema."""
    return hashlib.sha256(f"{project_fingerprint(settings)}:{warehouse_schema_fingerprint(settings, schemas)}".encode()).hexdigest()


def docs_are_current(docs_dir: Path, fingerprint: str) -> bool:
    stamp = docs_dir / DOCS_FINGERPRINT_FILE
    return (docs_dir / "static_index.html").exists() and stamp.exists() and stamp.read_text().strip() == fingerprint


def keep_docs(page: Path, docs_dir: Path, fingerprint: str) -> Path:
    """Install a freshly generated docs page with the fingerprint it was made for."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    (docs_dir / DOCS_FINGERPRINT_FILE).unlink(missing_ok=True)
    shutil.copyfile(page, docs_dir / "static_index.html")
    (docs_dir / DOCS_FINGERPRINT_FILE).write_text(fingerprint + "\n")
    return docs_dir / "static_index.html"
