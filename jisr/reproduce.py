"""``jisr reproduce``: rebuild a publication from its delivered files and compare its figures.

Every publication is recorded, internally, in ``$JISR_HOME/store/publications/<run id>.json``
(:func:`jisr.publish.record_path`): the code version that built it, the deliveries it was
built from (partner file name and SHA-256 of each) and, per published table, its rows and a
SHA-256 of its content as built, before disclosure control (:func:`jisr.publish.figures`;
the run columns of ``publish.reproduce.run_columns`` in config/quality.yml left out).

:func:`reproduce` checks that the code running is that code version, finds each delivered
file by its SHA-256 (in the landing area, then in the folders given), links or copies them
into the landing area of a new home (``$JISR_HOME/reproduce/<run id>``), runs the refresh
job there (``jisr refresh``, with the same pseudonymisation key and configuration), and
compares the fingerprints of the two publications table by table. Two tables are not
compared (``publish.reproduce.not_compared``): they describe the delivery log (when each
file arrived, which run loaded it, the files superseded or rejected), which a rebuild from
the files in effect does not replay.

Which cells disclosure control hides also depends on the publications served before (the
rebuild has none), so the rebuild's own published file may hide others. While the file the
publication served is kept (served now, or kept for rollback), :func:`as_published` also
hides in a copy of the rebuilt tables exactly the cells that file hides (as the PostgreSQL
target does) and compares every table with that file's: what readers of the publication
read, suppression included.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from jisr.lock import file_lock
from jisr.publish import publication_record, publish_log, published_file, serving_run_id
from jisr.settings import engine_versions, get_settings

EXIT_SAME, EXIT_DIFFERENT = 0, 1


class ReproduceError(RuntimeError):
    """The publication cannot be rebuilt (no record, another code version, files missing,
    the rebuild failed)."""


@dataclass
class TableResult:
    table: str
    rows: int | None            # recorded at publication
    rows_rebuilt: int | None    # in the rebuild (None: the rebuild has no such table)
    outcome: str                # same | different | missing | new | not compared
    published: str = ""         # as readers read it (see as_published): same | different | missing | new | ...

    def line(self, width: int) -> str:
        rows = "" if self.rows is None else f"{self.rows:,}"
        rebuilt = "" if self.rows_rebuilt is None else f"{self.rows_rebuilt:,}"
        return f"  {self.table:<{width}}  {rows:>10}  {rebuilt:>10}  {self.outcome:<13} {self.published}".rstrip()


@dataclass
class ReproduceResult:
    run_id: str
    code_version: str
    rebuilt_run_id: str
    home: Path
    kept: bool
    seconds: float
    files: int
    tables: list[TableResult] = field(default_factory=list)
    published_note: str = ""    # how the tables as published were compared, or why they were not
    mismatch: bool = False      # the served file's pattern of hidden cells does not fit the rebuilt tables
    warnings: list[str] = field(default_factory=list)  # what may explain a difference (engines, a code version set by hand)
    loaded: list[tuple[str, int | None, int | None]] = field(default_factory=list)  # see loaded_differences

    @property
    def same(self) -> bool:
        return not self.mismatch and all(t.outcome in ("same", "not compared")
                                          and t.published in ("", "same", "not compared") for t in self.tables)

    def describe(self) -> str:
        width = max([len(t.table) for t in self.tables] + [5])
        compared = [t for t in self.tables if t.outcome != "not compared"]
        lines = [f"Publication of run {self.run_id} (code version {self.code_version}) rebuilt from its "
                 f"{self.files} delivered files as run {self.rebuilt_run_id} in {self.seconds:.0f} s.",
                 "", f"  {'table':<{width}}  {'rows':>10}  {'rebuilt':>10}  {'as built':<13} as published"]
        lines += [t.line(width) for t in self.tables]
        lines.append("")
        different = [t.table for t in self.tables if t.outcome not in ("same", "not compared")]
        if different:
            lines.append(f"{len(different)} of the {len(compared)} tables compared differ as built (before disclosure "
                         f"control): {', '.join(different)}.")
        else:
            lines.append(f"Every figure of the {len(compared)} tables compared is the same as built, before disclosure "
                         "control (SHA-256 of each table's content).")
        published = [t.table for t in self.tables if t.published not in ("", "same", "not compared")]
        if published:
            lines.append(f"As published, {len(published)} differ: {', '.join(published)}.")
        if self.published_note:
            lines.append(self.published_note)
        if self.loaded:
            lines.append(f"Rows loaded differ for {len(self.loaded)} delivered files (at publication, rebuilt): "
                         + "; ".join(f"{name} {old}, {new}" for name, old, new in self.loaded)
                         + ". Rows held for another row (a reference not loaded yet, a key loaded from another "
                         "batch) depend on the order the files arrived in, which a rebuild in one refresh does "
                         "not replay: `jisr reproduce --in-arrival-order` rebuilds with one refresh per run that "
                         "loaded them.")
        not_compared = [t.table for t in self.tables if t.outcome == "not compared"]
        if not_compared:
            lines.append(f"Not compared: {', '.join(not_compared)} (built from the delivery log: when each file "
                         "arrived and was loaded; publish.reproduce.not_compared in config/quality.yml).")
        lines += [f"Note: {w}" for w in self.warnings]
        lines.append(f"The rebuild's home: {self.home}" + ("" if self.kept else " (removed)"))
        return "\n".join(lines)


def _commit_of(code_version: str) -> str | None:
    """The commit to check out for a ``git describe`` code version; None for a version made
    from uncommitted changes or without git (it names no commit)."""
    if "-dirty." in code_version or code_version.startswith("jisr-"):
        return None
    found = re.search(r"-g([0-9a-f]{7,40})$", code_version)
    return found.group(1) if found else code_version


def _check_code_version(settings, record: dict) -> None:
    recorded, running = record.get("code_version") or "", settings.code_version
    if recorded == running:
        return
    commit = _commit_of(recorded)
    copy = re.fullmatch(r"jisr-(.+)\+src\.([0-9a-f]+)", recorded)
    how = (f"check out that version (`git checkout {commit}`), run `make setup`, and run "
           f"`jisr reproduce {record['run_id']}` again" if commit else
           f"it was built from a copy of the source without git (jisr {copy.group(1)}, source hash "
           f"{copy.group(2)}): run `jisr reproduce` from that copy" if copy else
           "it was built from changes that were not committed, so no checkout gives that code again")
    raise ReproduceError(f"the publication of run {record['run_id']} was built by code version {recorded}, and the "
                         f"code here is {running}: {how}")


def _find_files(deliveries: list[dict], folders: list[Path]) -> dict[str, Path]:
    """Each delivery's file (delivery id -> path), found by its SHA-256 among the files of
    ``folders`` (searched in order, their sub-folders too): a file of the delivery's name
    first, then any other file (those of the size of a file of that name found with other
    content first: a file corrected since, the original kept under another name)."""
    from ingestion.load import hash_file

    files: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*") if p.is_file())
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, []).append(path)
    hashes: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in hashes:
            hashes[path] = hash_file(path)[0]
        return hashes[path]

    found: dict[str, Path] = {}
    missing = []
    for d in deliveries:
        named = by_name.get(d["file_name"], [])
        match = next((p for p in named if digest(p) == d["content_hash"]), None)
        if match is None:  # renamed, or kept elsewhere: files of the size of one of its name first
            sizes = {p.stat().st_size for p in named}
            others = sorted((p for p in files if p not in named), key=lambda p: p.stat().st_size not in sizes)
            match = next((p for p in others if digest(p) == d["content_hash"]), None)
        if match is None:
            missing.append(d)
        else:
            found[d["delivery_id"]] = match
    if missing:
        shown = "\n".join(f"  - {d['source']}: {d['file_name']} (SHA-256 {d['content_hash']})" for d in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise ReproduceError(
            f"{len(missing)} of the {len(deliveries)} delivered files of this publication "
            f"{'was' if len(missing) == 1 else 'were'} not found in "
            f"{', '.join(str(f) for f in folders)} (searched by content: a file edited since has another "
            f"SHA-256):\n{shown}{more}\nGive the folder holding them with --files.")
    return found


def _place(settings, deliveries: list[dict], found: dict[str, Path], landing: Path) -> None:
    """Each file into ``landing/<partner>/<file name>`` as delivered: a hard link when the
    file system allows it (same bytes, same modification time), else a copy."""
    from ingestion.contracts import load_contracts

    contracts = load_contracts(settings.contracts_dir)
    taken: dict[Path, str] = {}
    for d in deliveries:
        contract = contracts.get(d["source"])
        if contract is None:
            raise ReproduceError(f"delivery {d['delivery_id']}: no contract for source {d['source']} in this code")
        target = landing / contract.partner / d["file_name"]
        if target in taken:
            raise ReproduceError(f"deliveries {taken[target]} and {d['delivery_id']} are both named "
                                 f"{contract.partner}/{d['file_name']}: one landing area cannot hold both, so this "
                                 "publication cannot be rebuilt in one refresh")
        taken[target] = d["delivery_id"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():  # an earlier wave's file of that name: replaced, as delivered
            target.unlink()  # (never written to: it is a link to the delivered file)
        try:
            os.link(found[d["delivery_id"]], target)
        except OSError:
            shutil.copy2(found[d["delivery_id"]], target)


def _environment(settings, home: Path) -> dict[str, str]:
    """The environment of the rebuild: the same configuration and pseudonymisation key, its
    own home and Dagster instance."""
    env = dict(os.environ)
    env.update(JISR_HOME=str(home), DAGSTER_HOME=str(home / "dagster"))
    if settings.key_file:  # the rebuild runs in the project folder: a relative path would name another file
        env["JISR_PSEUDONYM_KEY_FILE"] = str(settings.key_file.resolve())
    if not settings.key_value and not settings.key_file:
        settings.pseudonym_key()  # raises MissingKeyError unless a demo key is there to use
        env["JISR_PSEUDONYM_KEY_FILE"] = str(settings.secrets_dir / "demo-pseudonym.key")
    env.pop("JISR_DEMO", None)
    return env


def as_published(settings, build: Path, served: Path, work: Path, cfg) -> tuple[dict, dict]:
    """(the fingerprints of the published tables of the rebuilt warehouse ``build`` with the
    cells hidden that the publication's file ``served`` hides, the fingerprints of that file's
    tables). Raises ``quality.disclosure.PatternMismatch`` when the rebuilt tables do not have
    the cells and published counts of that file."""
    import duckdb

    from jisr.publish import copy_published, figures
    from quality.disclosure import protect, published_pattern

    with duckdb.connect(str(served), read_only=True) as con:
        pattern = published_pattern(con, settings)
        served_figures = figures(con, cfg.publish_schemas, cfg.run_columns)
    path = work / "as_published.duckdb"
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"attach '{str(build).replace(chr(39), chr(39) * 2)}' as rebuilt (read_only)")
        copy_published(con, "rebuilt", cfg.publish_schemas)
        con.execute("detach rebuilt")
        protect(con, settings, follow=pattern)
        return figures(con, cfg.publish_schemas, cfg.run_columns), served_figures
    finally:
        con.close()


def loaded_differences(recorded: list[dict], rebuilt: list[dict]) -> list[tuple[str, int | None, int | None]]:
    """(file name, rows loaded at publication, in the rebuild) of each delivery whose rows
    loaded differ: what makes tables differ when the rows a delivery loaded depended on the
    deliveries before it."""
    by_hash = {(d.get("source"), d.get("content_hash")): d.get("rows_loaded") for d in rebuilt}
    return [(d["file_name"], d.get("rows_loaded"), by_hash.get((d["source"], d["content_hash"])))
            for d in recorded if d.get("rows_loaded") != by_hash.get((d["source"], d["content_hash"]))]


def compare(recorded: dict, rebuilt: dict, not_compared) -> list[TableResult]:
    """Table by table, the recorded fingerprints against the rebuild's."""
    out = []
    for table in sorted(set(recorded) | set(rebuilt)):
        old, new = recorded.get(table), rebuilt.get(table)
        rows, rows_rebuilt = (old or {}).get("rows"), (new or {}).get("rows")
        if table in not_compared:
            outcome = "not compared"
        elif new is None:
            outcome = "missing"
        elif old is None:
            outcome = "new"
        else:
            outcome = "same" if old["sha256"] == new["sha256"] and rows == rows_rebuilt else "different"
        out.append(TableResult(table, rows, rows_rebuilt, outcome))
    return out


def _read_record(path: Path) -> dict:
    """A publication's record copied out of its home (e.g. to rebuild it on another machine)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReproduceError(f"cannot read the publication record {path}: {exc}") from exc
    missing = [k for k in ("run_id", "code_version", "deliveries", "figures") if not isinstance(record, dict)
               or k not in record]
    if missing:
        raise ReproduceError(f"{path} is not a publication record (no {', '.join(missing)})")
    keys = ("delivery_id", "source", "file_name", "content_hash")
    if not isinstance(record["deliveries"], list) or not all(
            isinstance(d, dict) and all(isinstance(d.get(k), str) for k in keys) for d in record["deliveries"]):
        raise ReproduceError(f"{path} is not a publication record (its deliveries are not each a file with "
                             f"{', '.join(keys)})")
    if record["figures"] is not None and not (isinstance(record["figures"], dict) and all(
            isinstance(f, dict) and "rows" in f and "sha256" in f for f in record["figures"].values())):
        raise ReproduceError(f"{path} is not a publication record (its figures are not each a table's rows and "
                             "sha256)")
    return record


def _check_run_id(run_id) -> None:
    """A run id names the rebuild's home (``reproduce/<run id>``, emptied first) and a record's
    file: one that is not a plain file name (a record copied from elsewhere, a mistyped
    argument) would name a folder outside it."""
    if not isinstance(run_id, str) or run_id in ("", ".", "..") or Path(run_id).name != run_id:
        raise ReproduceError(f"{run_id!r} is not a run id (a run id is a plain name: no '/', not '.' or '..')")


def reproduce(settings, run_id: str | None = None, folders: list[Path] | None = None, *,
              keep: bool = False, record_file: Path | None = None, in_arrival_order: bool = False,
              log=print) -> ReproduceResult:
    """Rebuild the publication of ``run_id`` (default: the one served now; with
    ``record_file``, the publication that record describes, wherever it was made) in a new
    home and compare its figures (see the module docstring). The new home is removed when
    every figure compared is the same, unless ``keep``; kept otherwise, to look into."""
    started = time.monotonic()
    if run_id is not None:
        _check_run_id(run_id)
    if record_file is not None:
        record = _read_record(record_file)
        _check_run_id(record["run_id"])
        if run_id is not None and run_id != record["run_id"]:
            raise ReproduceError(f"{record_file} records the publication of run {record['run_id']}, not {run_id}")
        run_id = record["run_id"]
    elif run_id is None:
        run_id = serving_run_id(Path(settings.serving_path))
        if run_id is None:
            raise ReproduceError(f"nothing is published at {settings.serving_path}: name a run")
    if record_file is None:
        record = publication_record(settings, run_id)
    if record is None:
        if any(row["run_id"] == run_id for row in publish_log(settings)):
            raise ReproduceError(f"run {run_id} was published before publications were recorded for "
                                 "`jisr reproduce` (its code version, deliveries and figures), so it cannot be "
                                 "rebuilt and compared")
        raise ReproduceError(f"no publication of run {run_id} in the publish log of {settings.serving_path} "
                             "(`jisr sql \"select event, run_id, published_at from meta.publish_log\"` lists them)")
    if not record.get("figures"):
        raise ReproduceError(f"the record of run {run_id}'s publication has no fingerprints of its tables "
                             "(its candidate was staged by an earlier code version)")
    _check_code_version(settings, record)
    deliveries = record["deliveries"]
    found = _find_files(deliveries, [Path(settings.landing_dir), *(Path(f) for f in folders or ())])
    home = Path(settings.home) / "reproduce" / run_id
    home.parent.mkdir(parents=True, exist_ok=True)
    # two reproductions of one run would empty each other's home
    with file_lock(home.with_name(f"{run_id}.lock"), f"jisr reproduce of run {run_id}"):
        return _rebuild(settings, run_id, record, found, home, record_file=record_file, keep=keep, started=started,
                        log=log, in_arrival_order=in_arrival_order)


def provenance_warnings(settings, record: dict, engines: dict[str, str]) -> list[str]:
    """What makes the rebuild other than the publication's build besides the deliveries: a
    code version set by hand (JISR_CODE_VERSION: the check compared names), ``engines`` here
    not of the versions the record names."""
    out = []
    if settings.code_version_override:
        out.append(f"the code version here is JISR_CODE_VERSION's ({settings.code_version}), not computed from "
                   "the code: the check compared names only")
    moved = [f"{name} {engines.get(name, 'not installed')} here, {was} then"
             for name, was in sorted((record.get("engines") or {}).items()) if engines.get(name, "not installed") != was]
    if moved:
        out.append("engines not of the publication's versions (`make setup` installs those of uv.lock): "
                   + "; ".join(moved))
    return out


def arrival_waves(deliveries: list[dict]) -> list[list[dict]]:
    """The deliveries grouped by the ingestion run that loaded them, in the order those runs
    loaded them (the record's ``run_id`` and ``loaded_at`` of each delivery)."""
    missing = [d["file_name"] for d in deliveries if not d.get("run_id") or not d.get("loaded_at")]
    if missing:
        raise ReproduceError(f"the record does not say which run loaded {', '.join(missing[:5])}"
                             + (" ..." if len(missing) > 5 else "") + " (published before records said so): "
                             "rebuild it without --in-arrival-order")
    runs: dict[str, list[dict]] = {}
    for d in sorted(deliveries, key=lambda d: (str(d["loaded_at"]), d["delivery_id"])):
        runs.setdefault(d["run_id"], []).append(d)
    return list(runs.values())


def _rebuild(settings, run_id: str, record: dict, found: dict[str, Path], home: Path, *, record_file, keep: bool,
             started: float, log, in_arrival_order: bool = False) -> ReproduceResult:
    """The rebuild of :func:`reproduce` in ``home`` and its comparison with ``record``."""
    from quality.config import config_for

    deliveries = record["deliveries"]
    if home.exists():
        shutil.rmtree(home)
    env = _environment(settings, home)
    waves = arrival_waves(deliveries) if in_arrival_order else [deliveries]
    log(f"Rebuilding the publication of run {run_id} from {len(deliveries)} delivered files in {home}"
        + (f", in {len(waves)} refreshes as they arrived" if in_arrival_order else "") + " ...")
    for n, wave in enumerate(waves, 1):
        _place(settings, wave, found, home / "landing")
        done = subprocess.run([sys.executable, "-m", "jisr.cli", "refresh"], env=env, cwd=settings.project_dir,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        report = home / (f"refresh-{n}.log" if in_arrival_order else "refresh.log")
        report.write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            raise ReproduceError(f"the rebuild's refresh failed (exit {done.returncode}); its report is in "
                                 f"{report}:\n{(done.stdout + done.stderr).strip()[-2000:]}")
    rebuilt_run = serving_run_id(home / "warehouse" / "jisr.duckdb")
    rebuilt = publication_record(get_settings(env), rebuilt_run) if rebuilt_run else None
    if rebuilt is None or not rebuilt.get("figures"):
        raise ReproduceError(f"the rebuild in {home} published no record of its figures")
    cfg = config_for(settings)
    tables = compare(record["figures"], rebuilt["figures"], set(cfg.not_reproduced))
    result = ReproduceResult(run_id=run_id, code_version=record["code_version"], rebuilt_run_id=rebuilt_run,
                             home=home, kept=True, seconds=0.0, files=len(deliveries), tables=tables,
                             loaded=loaded_differences(deliveries, rebuilt.get("deliveries") or []))
    result.warnings = provenance_warnings(settings, record, engine_versions())
    served = None if record_file is not None else published_file(settings, run_id)
    if served is None:
        result.published_note = ("Not compared as published: the file this publication served is not kept here "
                                 "(publish.history_keep in config/quality.yml)." if record_file is None else
                                 "Not compared as published: the file this publication served is in its own home.")
    else:
        from quality.disclosure import PatternMismatch

        try:
            rebuilt_published, served_figures = as_published(settings, home / "warehouse" / "build.duckdb", served,
                                                             home, cfg)
        except PatternMismatch as exc:
            result.mismatch = True
            result.published_note = (f"As published: the rebuilt tables do not have the cells and counts of {served}, "
                                     f"so its pattern of hidden cells cannot be applied to them: {exc}")
        else:
            outcomes = {t.table: t.outcome for t in compare(served_figures, rebuilt_published, set(cfg.not_reproduced))}
            for t in tables:
                t.published = outcomes.get(t.table, "missing")
            result.published_note = (f"As published: each table compared with {served}, the cells it hides hidden "
                                     "in the rebuild (what its readers read).")
    result.seconds = time.monotonic() - started
    if result.same and not keep:
        shutil.rmtree(home)
        result.kept = False
    return result
