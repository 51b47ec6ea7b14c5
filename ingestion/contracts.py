"""Data contracts: one YAML file per partner source, the single source of truth.

A contract (``contracts/<source>.yml``) says how a partner's files are named, read, typed,
checked and pseudonymised. Ingestion, the Great Expectations suites and the generated
documentation all read it through this module.

Contract keys
-------------
source          raw table name (``raw.<source>``)
title, description, grain
partner         landing sub-folder the partner drops files into
file_pattern    regular expression matched against the whole file name; the named group
                ``batch`` (a month ``YYYY-MM`` or a study id) identifies the delivery batch
format          ``csv`` | ``jsonl`` | ``xlsx``
csv             ``delimiter``, ``decimal`` (``,`` or ``.``), ``encoding``
                (``utf-8``, ``utf-8-sig`` or ``windows-1252``)
xlsx            ``sheet``
date_format     strptime format of dates in text files (ISO dates are accepted too)
primary_key     contract column names that identify a row
supersede       ``latest_per_key``: a later delivery's row replaces earlier rows with the
                same key; ``replace_batch``: a later delivery of the same batch replaces
                the earlier delivery of that batch as a whole
columns         list of columns (below)
rules           list of ``{name, sql, description}``: SQL predicates over the typed row
                that must be true (``_batch`` is available)

Column keys: ``name``, ``type`` (varchar, integer, decimal, double, date, timestamp,
boolean), ``source_names`` (header names accepted in files, the first is the one partners
are asked to use), ``required``, ``pattern`` (regular expression, whole value), ``allowed``
(code list), ``allowed_from`` (``<seed>.<column>`` of a reference seed in
``dbt_project/seeds``), ``min``/``max``, ``references`` (``<source>.<column>``: the value
must exist among the current rows of that source), ``pii`` (cin, name, phone, household)
with ``pseudonym`` (the BIGINT column that replaces it), ``description``.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

# A ``decimal`` is an amount of money in dirhams: at most two decimals (centimes).
DECIMAL_PLACES = 2
TYPES = {
    "varchar": "VARCHAR",
    "integer": "BIGINT",
    "decimal": f"DECIMAL(18,{DECIMAL_PLACES})",
    "double": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "boolean": "BOOLEAN",
}
FORMATS = {"csv", "jsonl", "xlsx"}
ENCODINGS = {"utf-8", "utf-8-sig", "windows-1252"}
SUPERSEDE_RULES = {"latest_per_key", "replace_batch"}
PII_KINDS = {"cin", "name", "phone", "household"}

# Lineage columns carried by every raw table, in this order, after the contract columns.
LINEAGE_COLUMNS = {
    "_delivery_id": "VARCHAR",
    "_batch": "VARCHAR",
    "_file_name": "VARCHAR",
    "_content_hash": "VARCHAR",
    "_source_row": "BIGINT",
    "_loaded_at": "TIMESTAMP",
    "_run_id": "VARCHAR",
    "_is_current": "BOOLEAN",
}


class ContractError(ValueError):
    """A contract file itself is invalid."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    source_names: tuple[str, ...] = ()
    required: bool = False
    pattern: str | None = None
    allowed: tuple[str, ...] | None = None
    allowed_from: str | None = None
    min: Any = None
    max: Any = None
    references: str | None = None
    pii: str | None = None
    pseudonym: str | None = None
    description: str = ""

    @property
    def sql_type(self) -> str:
        return TYPES[self.type]

    @property
    def header(self) -> str:
        """The header name partners are asked to use."""
        return self.source_names[0] if self.source_names else self.name

    @property
    def accepted_headers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.source_names, self.name)))

    @property
    def raw_name(self) -> str:
        """Name of the column in the raw layer (the pseudonym for direct identifiers)."""
        return self.pseudonym or self.name

    @property
    def raw_type(self) -> str:
        return "BIGINT" if self.pii else self.sql_type


@dataclass(frozen=True)
class Rule:
    name: str
    sql: str
    description: str = ""


@dataclass(frozen=True)
class Contract:
    source: str
    title: str
    partner: str
    description: str
    grain: str
    file_pattern: str
    format: str
    primary_key: tuple[str, ...]
    supersede: str
    columns: tuple[Column, ...]
    rules: tuple[Rule, ...] = ()
    csv: dict = field(default_factory=dict)
    xlsx: dict = field(default_factory=dict)
    date_format: str = "%Y-%m-%d"
    path: Path | None = None
    version: str = ""

    @cached_property
    def header_names(self) -> frozenset[str]:
        """Every header a file may give a column of this contract, lower case."""
        return frozenset(a.strip().lower() for col in self.columns for a in col.accepted_headers)

    @cached_property
    def regex(self) -> re.Pattern:
        # ASCII: \d is 0-9 only (a month in Arabic-Indic digits is no month a build can read)
        return re.compile(self.file_pattern, re.ASCII)

    def matches(self, file_name: str) -> re.Match | None:
        return self.regex.fullmatch(file_name)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{self.source}: no column {name!r}")

    @property
    def delimiter(self) -> str:
        return self.csv.get("delimiter", ",")

    @property
    def decimal(self) -> str:
        return self.csv.get("decimal", ".")

    @property
    def encoding(self) -> str:
        return self.csv.get("encoding", "utf-8")

    @property
    def pii_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.pii)

    @property
    def raw_columns(self) -> dict[str, str]:
        """Columns of ``raw.<source>``: contract columns (pseudonymised), then lineage."""
        cols = {c.raw_name: c.raw_type for c in self.columns}
        cols.update(LINEAGE_COLUMNS)
        return cols

    @property
    def raw_primary_key(self) -> tuple[str, ...]:
        return tuple(self.column(k).raw_name for k in self.primary_key)


def _column(source: str, raw: dict) -> Column:
    where = f"contract {source}, column {raw.get('name')!r}"
    unknown = set(raw) - set(Column.__dataclass_fields__)
    if unknown:
        raise ContractError(f"{where}: unknown keys {sorted(unknown)}")
    if raw.get("type") not in TYPES:
        raise ContractError(f"{where}: type must be one of {sorted(TYPES)}")
    if raw.get("pii") and raw["pii"] not in PII_KINDS:
        raise ContractError(f"{where}: pii must be one of {sorted(PII_KINDS)}")
    if bool(raw.get("pii")) != bool(raw.get("pseudonym")):
        raise ContractError(f"{where}: pii and pseudonym go together")
    if raw.get("pattern"):
        re.compile(raw["pattern"])
    values = dict(raw)
    values["source_names"] = tuple(str(s) for s in raw.get("source_names", ()))
    if raw.get("allowed") is not None:
        values["allowed"] = tuple(str(v) for v in raw["allowed"])
    return Column(**values)


def parse_contract(data: dict, path: Path | None = None, version: str = "") -> Contract:
    source = data.get("source")
    if not source or not re.fullmatch(r"[a-z][a-z0-9_]*", source):
        raise ContractError(f"{path}: 'source' must be a lower-case identifier")
    required = ["partner", "file_pattern", "format", "primary_key", "supersede", "columns"]
    missing = [k for k in required if k not in data]
    if missing:
        raise ContractError(f"contract {source}: missing keys {missing}")
    if data["format"] not in FORMATS:
        raise ContractError(f"contract {source}: format must be one of {sorted(FORMATS)}")
    if data["supersede"] not in SUPERSEDE_RULES:
        raise ContractError(f"contract {source}: supersede must be one of {sorted(SUPERSEDE_RULES)}")
    if data.get("csv", {}).get("encoding", "utf-8") not in ENCODINGS:
        raise ContractError(f"contract {source}: encoding must be one of {sorted(ENCODINGS)}")
    if "batch" not in re.compile(data["file_pattern"]).groupindex:
        raise ContractError(f"contract {source}: file_pattern needs a named group 'batch'")
    columns = tuple(_column(source, c) for c in data["columns"])
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ContractError(f"contract {source}: duplicate column names")
    for key in data["primary_key"]:
        if key not in names:
            raise ContractError(f"contract {source}: primary key column {key!r} is not a column")
    rules = tuple(Rule(**r) for r in data.get("rules", ()))
    return Contract(
        source=source,
        title=data.get("title", source),
        partner=data["partner"],
        description=" ".join(str(data.get("description", "")).split()),
        grain=data.get("grain", ""),
        file_pattern=data["file_pattern"],
        format=data["format"],
        primary_key=tuple(data["primary_key"]),
        supersede=data["supersede"],
        columns=columns,
        rules=rules,
        csv=dict(data.get("csv", {})),
        xlsx=dict(data.get("xlsx", {})),
        date_format=data.get("date_format", "%Y-%m-%d"),
        path=path,
        version=version,
    )


def load_contract(path: Path) -> Contract:
    text = Path(path).read_bytes()
    version = hashlib.sha256(text).hexdigest()[:12]
    return parse_contract(yaml.safe_load(text), path=Path(path), version=version)


def load_contracts(directory: Path) -> dict[str, Contract]:
    """All contracts of a directory, keyed by source, in dependency order.

    A source comes after every source its columns reference, so loading files in this
    order lets reference rules see the rows they point at.
    """
    found = {}
    for path in sorted(Path(directory).glob("*.yml")):
        contract = load_contract(path)
        if contract.source in found:
            raise ContractError(f"{path}: source {contract.source!r} defined twice")
        found[contract.source] = contract
    for contract in found.values():
        for col in contract.columns:
            if col.references and col.references.split(".")[0] not in found:
                raise ContractError(
                    f"contract {contract.source}: column {col.name} references unknown source {col.references!r}"
                )
    ordered: dict[str, Contract] = {}

    def visit(source: str, stack: tuple[str, ...] = ()) -> None:
        if source in ordered:
            return
        if source in stack:
            raise ContractError(f"reference cycle between contracts: {' -> '.join(stack + (source,))}")
        for col in found[source].columns:
            if col.references:
                target = col.references.split(".")[0]
                if target != source:
                    visit(target, stack + (source,))
        ordered[source] = found[source]

    for source in sorted(found):
        visit(source)
    return ordered


def referring_sources(contracts: dict[str, Contract]) -> dict[str, set[str]]:
    """For each source, the sources whose columns refer to it, directly or through others.
    ``contracts`` in dependency order (``load_contracts``): a source's referrers come after
    it, so going backwards each one's own referrers are known when it is reached."""
    out: dict[str, set[str]] = {source: set() for source in contracts}
    for contract in reversed(list(contracts.values())):
        for col in contract.columns:
            if col.references:
                out[col.references.split(".")[0]] |= {contract.source} | out[contract.source]
    return out


def contract_for(contracts: dict[str, Contract], partner: str, file_name: str) -> tuple[Contract, str] | None:
    """The contract a delivered file falls under, and its batch; None when none matches."""
    for contract in contracts.values():
        if contract.partner == partner:
            match = contract.matches(file_name)
            if match:
                return contract, match.group("batch")
    return None


# Names a landing area holds while a file is written or opened, never deliveries: hidden files
# (a partner writes .name.csv, then renames it), the parts upload and download tools write
# before renaming (.part, .filepart, .partial, .crdownload, .tmp), office lock files (~$name)
# and desktop metadata (Thumbs.db, desktop.ini). Ingestion and the landing sensor skip them.
_NOT_A_DELIVERY = re.compile(r"\..*|~\$.*|.*\.(part|filepart|partial|crdownload|tmp|temp)|thumbs\.db|desktop\.ini",
                             re.IGNORECASE)


def not_a_delivery(file_name: str) -> bool:
    """A landing file that is not (yet) a delivery: see ``_NOT_A_DELIVERY``."""
    return _NOT_A_DELIVERY.fullmatch(file_name) is not None


def misplaced_files(landing_dir: Path, limit: int = 20) -> list[str]:
    """Messages naming the files of the landing area that nothing reads, as they are not in
    a partner folder (``<landing>/<partner>/<file>``): directly in the landing area, or in a
    folder inside a partner folder. They are left where they are; hidden names and the
    other names of ``_NOT_A_DELIVERY``, in the path or as the file, are not deliveries.
    The first ``limit`` are named, then one message counts the others (an archive folder
    kept in the landing area would list every file of it at each refresh)."""
    landing, out, more = Path(landing_dir), [], 0
    if not landing.is_dir():
        return out
    for path in sorted(landing.rglob("*")):
        parts = path.relative_to(landing).parts
        if len(parts) == 2 or any(not_a_delivery(part) for part in parts) or not path.is_file():
            continue
        if len(out) >= limit:
            more += 1
        elif len(parts) == 1:
            out.append(f"{path.name} is directly in the landing area, outside the partner folders, where nothing "
                       f"reads it: move it into its partner's folder (<partner>/{path.name})")
        else:
            out.append(f"{'/'.join(parts)} is in a folder inside the partner folder {parts[0]}, where nothing reads "
                       f"it: move it to {parts[0]}/{path.name}")
    if more:
        out.append(f"and {more} more file(s) outside the partner folders, where nothing reads them")
    return out


FUTURE_MONTH = "is after the current month"  # in the reason of a file rejected for a month to come


def batch_problem(batch: str | None, today: date | None = None) -> str | None:
    """Why a file name's batch cannot be loaded, or None. A batch shaped as a month
    (``YYYY-MM``) must be a calendar month: 2026-13 would load, then stop every later build
    at its first date computed from the month. With ``today`` (the day of the pass), it must
    not be a month after the current one: a file describes a month under way or past, and a
    month to come (2062-05 for 2026-05) would become the newest delivered month, the
    reference date of every "as of" figure (ages, statuses, days past due) and of the
    freshness check, which would then find every other partner late."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", batch or "", re.ASCII)
    if match and not (1 <= int(match.group(2)) <= 12 and int(match.group(1)) >= 1):
        return f"the month {batch} in the file name is not a calendar month (YYYY-MM, month 01 to 12)"
    if match and today is not None and batch > f"{today:%Y-%m}":
        return (f"the month {batch} in the file name {FUTURE_MONTH} ({today:%Y-%m}): a file describes a month "
                "under way or past; deliver it again once the month has begun")
    return None


# In the reason of a file rejected by VolumeRule: such a file is read again when delivered again
# (the delivery in effect, or the rule, may have changed since).
VOLUME_DROP = "deliveries.max_drop_share"


@dataclass(frozen=True)
class VolumeRule:
    """How much smaller than the delivery in effect for its batch a file may be.

    A file of a batch already loaded (a month, a study) replaces that delivery as a whole
    (both supersede rules), so a truncated or partial export would silently withdraw the rows
    it lacks from every table built on them. A file with more than ``max_drop_share`` fewer
    rows than the delivery it would replace has loaded is rejected, and that delivery stays in
    effect (its rows set aside are in no table: a file that replaces an export of every row
    twice, all of them quarantined as duplicates, withdraws nothing);
    deliveries in effect under ``min_rows`` rows are not compared; a file whose SHA-256 is in
    ``accept_smaller`` (the data engineer's decision that the smaller file is right) is
    loaded. Set in ``config/quality.yml`` (``deliveries``)."""

    max_drop_share: float = 0.2
    min_rows: int = 20
    accept_smaller: frozenset[str] = frozenset()

    def problem(self, rows: int, content_hash: str, batch: str | None, in_effect: tuple | None) -> str | None:
        """Why a file of ``rows`` rows may not replace ``in_effect``, the delivery in effect for
        its batch as (delivery id, file name, rows loaded, loaded at), or None."""
        if in_effect is None or content_hash in self.accept_smaller:
            return None
        delivery_id, file_name, before, loaded_at = in_effect
        if before is None or before <= 0 or before < self.min_rows:  # nothing loaded: nothing withdrawn
            return None
        if (before - rows) / before <= self.max_drop_share + 1e-12:
            return None
        return (f"the file has {rows:,} rows where the delivery in effect for {batch} that it would replace "
                f"({file_name}, delivery {delivery_id}, loaded on {loaded_at:%Y-%m-%d %H:%M} UTC) has {before:,} rows loaded: "
                f"{_share(before - rows, before, self.max_drop_share)} fewer, more than the {self.max_drop_share:.0%} "
                "a delivery may drop "
                f"from the one it replaces ({VOLUME_DROP} in config/quality.yml). A truncated or partial export "
                f"would withdraw the missing rows from every figure of {batch}, so the delivery in effect stays. "
                f"Deliver the whole of {batch} again; if this smaller file is right (rows withdrawn on purpose), "
                "the data engineer accepts it by adding its SHA-256 (the last line of the file's report) to "
                "deliveries.accept_smaller in "
                "config/quality.yml, then puts it back in the landing area")


def _share(part: int, whole: int, limit: float) -> str:
    """``part / whole`` as a percentage, with a decimal when it would round to ``limit``'s."""
    share = part / whole
    return f"{share:.0%}" if f"{share:.0%}" != f"{limit:.0%}" else f"{share:.1%}"


def seed_values(seeds_dir: Path, ref: str) -> tuple[str, ...]:
    """Values of ``<seed>.<column>`` from a reference seed CSV (for ``allowed_from``)."""
    seed, column = ref.split(".")
    with open(Path(seeds_dir) / f"{seed}.csv", encoding="utf-8", newline="") as fh:
        return tuple(row[column] for row in csv.DictReader(fh))
