"""The one place that reads the environment.

Every path Jisr uses derives from ``JISR_HOME`` (default: ``var/`` in the project). The same
variable is read by dbt's ``profiles.yml`` (``env_var('JISR_HOME')``), so Dagster, the CLI
and dbt always point at the same warehouse.

Environment variables
---------------------
JISR_HOME                 root of landing area, stores and warehouses (default ``<project>/var``)
JISR_PSEUDONYM_KEY_FILE   file holding the secret pseudonymisation key (keep it outside git)
JISR_PSEUDONYM_KEY        the key itself (for secret managers that inject variables); blank: no key
JISR_DEMO                 ``1``: a demo run; a local demo key is created when no key is set
JISR_CODE_VERSION         code version to record (default: ``git describe`` of the project)
DAGSTER_HOME              the Dagster instance (run history; default ``$JISR_HOME/dagster``)
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
MIN_KEY_BYTES = 16  # shortest pseudonymisation key accepted, from the variable or the file


class MissingKeyError(RuntimeError):
    """No pseudonymisation key is configured for a non-demo run."""


@dataclass(frozen=True)
class Settings:
    home: Path
    demo: bool = False
    key_file: Path | None = None
    key_value: str | None = None
    code_version_override: str | None = None
    dagster_home_override: Path | None = None

    # --- layout -------------------------------------------------------------------------
    @property
    def project_dir(self) -> Path:
        return PROJECT_DIR

    @property
    def contracts_dir(self) -> Path:
        return PROJECT_DIR / "contracts"

    @property
    def config_dir(self) -> Path:
        return PROJECT_DIR / "config"

    @property
    def dbt_project_dir(self) -> Path:
        return PROJECT_DIR / "dbt_project"

    @property
    def seeds_dir(self) -> Path:
        return self.dbt_project_dir / "seeds"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def rejected_dir(self) -> Path:
        return self.home / "rejected"

    @property
    def feedback_dir(self) -> Path:
        return self.home / "feedback"

    @property
    def store_path(self) -> Path:
        """Internal raw store: raw, quarantine and meta schemas (pseudonymised only)."""
        return self.home / "store" / "ingest.duckdb"

    @property
    def publication_counts_dir(self) -> Path:
        """Internal: per published run, the protected tables' counts before suppression (the
        next publication checks it does not give back that one's small cells), and the
        publication's record for ``jisr reproduce`` (``<run id>.json``)."""
        return self.home / "store" / "publications"

    @property
    def lake_dir(self) -> Path:
        """Open raw layer: Parquet files of the raw tables."""
        return self.home / "lake"

    @property
    def build_path(self) -> Path:
        """Internal build warehouse that dbt writes (never read by consumers)."""
        return self.home / "warehouse" / "build.duckdb"

    @property
    def serving_path(self) -> Path:
        """Published, read-only serving warehouse that evaluators and BI tools read."""
        return self.home / "warehouse" / "jisr.duckdb"

    @property
    def history_dir(self) -> Path:
        return self.home / "warehouse" / "history"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def dagster_home(self) -> Path:
        return self.dagster_home_override or self.home / "dagster"

    # --- secrets ------------------------------------------------------------------------
    def pseudonym_key(self) -> bytes:
        """The secret key for keyed pseudonyms.

        Order: JISR_PSEUDONYM_KEY, then JISR_PSEUDONYM_KEY_FILE, then (demo runs only) a
        local demo key under ``$JISR_HOME/secrets`` created on first use. A blank
        JISR_PSEUDONYM_KEY (a secret manager that injected an empty value) counts as no key;
        either key must hold at least ``MIN_KEY_BYTES`` bytes.
        """
        key = (self.key_value or "").strip().encode()
        blank_value = self.key_value is not None and not key
        if key:
            if len(key) < MIN_KEY_BYTES:
                raise MissingKeyError(f"JISR_PSEUDONYM_KEY is shorter than {MIN_KEY_BYTES} bytes ({len(key)}); "
                                      "use a long random secret, e.g. made with `openssl rand -hex 32`")
            return key
        if self.key_file:
            if not self.key_file.is_file():
                raise MissingKeyError(f"JISR_PSEUDONYM_KEY_FILE points at {self.key_file}, which does not exist")
            key = self.key_file.read_bytes().strip()
            if len(key) < MIN_KEY_BYTES:
                raise MissingKeyError(f"the key in {self.key_file} is shorter than {MIN_KEY_BYTES} bytes")
            return key
        if self.demo:
            demo_key = self.secrets_dir / "demo-pseudonym.key"
            if not demo_key.exists():
                demo_key.parent.mkdir(parents=True, exist_ok=True)
                demo_key.write_text(secrets.token_hex(32) + "\n")
                demo_key.chmod(0o600)
            return demo_key.read_bytes().strip()
        demo_key = self.secrets_dir / "demo-pseudonym.key"
        raise MissingKeyError(
            "No pseudonymisation key is configured"
            + (" (JISR_PSEUDONYM_KEY is set but blank)" if blank_value else "")
            + ", so no personal data can be ingested. "
            f"Set JISR_PSEUDONYM_KEY_FILE to a file holding a secret key of at least {MIN_KEY_BYTES} bytes "
            "(kept outside git, e.g. created with `openssl rand -hex 32 > ~/.jisr.key`), or "
            "JISR_PSEUDONYM_KEY. For a local demonstration, set JISR_DEMO=1 (what `make run` "
            "does) to create a throw-away demo key"
            + (f" or, as here, keep using the one `make run` created ({demo_key})." if demo_key.exists() else ".")
        )

    # --- provenance ---------------------------------------------------------------------
    @cached_property
    def code_version(self) -> str:
        """The version of the code that runs: ``git describe`` of the project's own checkout,
        followed by ``-dirty.<hash>`` when its files differ from the commit (edited, deleted
        or untracked files, by path and content: two different working copies never share a
        version); without a checkout of its own (a tarball, an installed package, a copy
        inside another repository), ``jisr-<version>+src.<hash>`` of its source files."""
        if self.code_version_override:
            return self.code_version_override
        return code_version_of(PROJECT_DIR)

    def dbt_env(self) -> dict[str, str]:
        """Environment for dbt subprocesses: the same JISR_HOME, no telemetry."""
        env = dict(os.environ)
        env["JISR_HOME"] = str(self.home)
        env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "False"
        return env


# What the code version of a copy without git covers: the packages and what they read.
SOURCE_DIRS = ("jisr", "ingestion", "quality", "orchestration", "impact", "contracts", "config", "dbt_project")
_NOT_SOURCE = {"__pycache__", "target", "logs", "dbt_packages"}


def _git(project_dir: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, timeout=30,
                          check=True).stdout


def hash_files(digest, root: Path, paths) -> None:
    """Feed ``digest`` the content of files (paths relative to ``root``, in sorted order),
    each named: a file renamed, added or removed changes the digest; an absent one counts as
    absent."""
    for rel in sorted(set(paths)):
        path = root / rel
        digest.update(rel.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"<absent>")


def _source_files(project_dir: Path) -> list[str]:
    files = []
    for name in SOURCE_DIRS:
        for path in (project_dir / name).rglob("*"):
            rel = path.relative_to(project_dir)
            if path.is_file() and not _NOT_SOURCE & set(rel.parts) and path.suffix != ".pyc":
                files.append(rel.as_posix())
    return files


def code_version_of(project_dir: Path) -> str:
    """See :attr:`Settings.code_version`."""
    project_dir = Path(project_dir).resolve()
    try:
        top = Path(_git(project_dir, "rev-parse", "--show-toplevel").strip()).resolve()
        if top != project_dir:  # the checkout of another project holding this copy describes that one
            raise LookupError(top)
        described = _git(project_dir, "describe", "--always", "--abbrev=12").strip()
        changed = _git(project_dir, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
        paths = [entry[3:] for entry in changed.split("\0") if len(entry) > 3]
        if not paths:
            return described
        digest = hashlib.sha256()
        hash_files(digest, project_dir, paths)
        return f"{described}-dirty.{digest.hexdigest()[:12]}"
    except (OSError, subprocess.SubprocessError, LookupError):
        from importlib.metadata import version

        digest = hashlib.sha256()
        hash_files(digest, project_dir, _source_files(project_dir))
        return f"jisr-{version('jisr')}+src.{digest.hexdigest()[:12]}"


# The engines whose versions a publication's figures could depend on (besides the code itself)
ENGINES = ("duckdb", "dbt-core", "dbt-duckdb", "dagster", "dagster-dbt", "pandas", "numpy", "pyarrow",
           "statsmodels", "scipy", "great-expectations")


def engine_versions() -> dict[str, str]:
    """The installed versions of :data:`ENGINES` and Python's (from the packages' metadata: no
    import)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ENGINES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def export_environment(settings: Settings) -> None:
    """Make child processes (dbt, Dagster) see the same settings as this process."""
    os.environ["JISR_HOME"] = str(settings.home)
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "False")
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home))


def get_settings(env: dict[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    home = Path(env.get("JISR_HOME") or PROJECT_DIR / "var").resolve()
    key_file = env.get("JISR_PSEUDONYM_KEY_FILE")
    return Settings(
        home=home,
        demo=env.get("JISR_DEMO", "") in {"1", "true", "yes"},
        key_file=Path(key_file).expanduser() if key_file else None,
        key_value=env.get("JISR_PSEUDONYM_KEY") or None,
        code_version_override=env.get("JISR_CODE_VERSION") or None,
        dagster_home_override=Path(env["DAGSTER_HOME"]).resolve() if env.get("DAGSTER_HOME") else None,
    )
