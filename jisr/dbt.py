"""Keeping dbt's manifest in step with the project (what Dagster reads at start-up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jisr.settings import Settings

WATCHED = ("models", "macros", "seeds", "tests", "analyses", "snapshots")
WATCHED_FILES = ("dbt_project.yml", "profiles.yml")


def dbt_executable() -> Path:
    """The dbt of this environment (not whatever dbt is first on PATH)."""
    return Path(sys.executable).with_name("dbt")


def manifest_path(settings: Settings) -> Path:
    return settings.dbt_project_dir / "target" / "manifest.json"


def _newest_source(settings: Settings) -> float:
    root = settings.dbt_project_dir
    times = [(root / f).stat().st_mtime for f in WATCHED_FILES if (root / f).exists()]
    for sub in WATCHED:
        for path in (root / sub).rglob("*"):
            if path.is_file():
                times.append(path.stat().st_mtime)
    return max(times, default=0.0)


def manifest_is_stale(settings: Settings) -> bool:
    path = manifest_path(settings)
    return not path.exists() or path.stat().st_mtime < _newest_source(settings)


def ensure_manifest(settings: Settings, force: bool = False) -> Path:
    """Run ``dbt parse`` when the manifest is missing or older than the dbt sources."""
    path = manifest_path(settings)
    if force or manifest_is_stale(settings):
        cmd = [str(dbt_executable()), "parse", "--no-version-check", "--quiet", "--project-dir", str(settings.dbt_project_dir),
               "--profiles-dir", str(settings.dbt_project_dir)]
        done = subprocess.run(cmd, env=settings.dbt_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"dbt parse failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return path
