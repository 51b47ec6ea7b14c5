"""Disclosure control of the published disaggregated tables (small-cell suppression).

Every table listed in ``config/disclosure.yml`` is a table of *cells*: one row per
combination of its ``by`` columns (independent strata, e.g. month and programme) and its
``dimensions`` (additive breakdowns, e.g. region, sex, age band), with columns counting
people (``count_columns``) and values computed from those people (``value_columns``).

``protect(con, settings)`` rewrites those tables in the NEW serving file, before the publish
step renames it onto ``jisr.duckdb`` (never in the build warehouse):

1. *Primary suppression*: a cell in which any count column is below ``k`` people (default
   10; zero is not small unless ``suppress_zeros``) is suppressed: its count and value
   columns become NULL and its flag column ``is_suppressed`` is true.
2. *Complementary suppression*: cells add up along each dimension. For every dimension and
   every combination of the other key columns, the cells that differ only in that dimension
   form a *line* whose sum is a total: either a total row of the table (a dimension value
   equal to ``total_label``, e.g. ``all``) or, with ``assume_external_totals`` (the
   default), a total that is published elsewhere or derivable from other tables. A line
   with exactly one suppressed cell gives it away by subtraction, so the smallest other cell
   of that line (a detail cell before the total row; ties broken by table order) is
   suppressed too. This repeats until no line has a lone suppressed cell.
3. *Exact check*: lines can interlock (a suppressed cell can be the only unknown of a
   combination of lines even when no single line has one unknown). The suppressed cells of
   each connected group of lines are the unknowns of a linear system whose equations are
   the lines; a cell is recoverable exactly when its unit vector lies in the row space of
   that system (the matching row of an orthonormal basis of the row space, from a pivoted QR
   factorisation, has norm 1). For such
   a cell one more complementary cell is suppressed (the smallest in a line through it) and
   steps 2-3 repeat.
4. ``link_across``: when a count is repeated across strata (e.g. the registered population
   of a region x sex x age cell, repeated for each programme), a cell suppressed in one
   stratum is suppressed in every linked stratum, so the published copy in another stratum
   cannot give the suppressed one away.
5. The previous publication (``protect(..., previous=...)``, the file served until now, and
   ``previous_counts=...``, its counts before suppression, which the publish step keeps:
   ``keep_counts``): a cell it published with the same counts is chosen as a complement only
   where no other cell can be. Then, once this file is safe on its own, the two files are
   taken as one system of lines, as whoever holds both sees it (``_TwoFiles``): a cell with
   the same key and counts in both is one unknown, known when either file publishes it; the
   previous file's other cells are unknowns of its own lines. A small cell of either file
   that this system determines (beyond what each file gives alone) gets a complement here,
   on its lines or its group's, where hiding one can help (``_two_file_round``: at most
   ``KNOWN_BEFORE_TRIES`` per cell, each followed by the complements this file then needs on
   its own; at most ``TWO_FILE_ROUNDS`` rounds; a round that would leave this file unsafe on
   its own is undone). The small cells left (e.g. a line whose other cells that file all
   published: nothing hidden here helps) are counted for data engineers
   (``TableProtection.note``), not in the published log. Without the kept counts only the
   cells that file published are used. A table whose cells and counts are all those of the
   previous publication (a refresh given nothing new) is published with its pattern again,
   when that pattern still hides every small cell and gives none back on its own
   (``_published_again``). Other publications a reader may hold (``others=...``): this
   file is checked with each of them as with the previous one (one ``_TwoFiles`` each, in
   the same rounds). The publish step passes the files rolled back (``jisr rollback``)
   since the previous one was published (served after it), and with ``check_against:
   kept`` every file kept for rollback and every file rolled back. Not covered: a cell whose
   counts changed but one (that column's lines would join the files), publications not
   checked against (by default those before the previous one, other than those rolled
   back), and what three files or more give back together (docs/bi-access.md, "Limits").
6. Another copy of a publication (``protect(..., follow=published_pattern(served))``: the
   PostgreSQL target, built from the deliveries the serving file serves) hides exactly the
   cells that publication hides, and refuses (``PatternMismatch``) when its cells are not
   the same: two copies of one publication with two patterns would give back, together, what
   each hides.

``review(con, settings)`` returns every finding (the publication gate and ``jisr disclosure``
call it); ``check(con, settings)`` only the violations that must block publishing: a configured
table or column missing, a table not protected (no flag column), duplicate cells, an
unsuppressed cell under ``k``, a suppressed cell whose counts or values are still
published, linked strata with different patterns, a numeric column nobody classified, and
any suppressed cell recoverable exactly from the lines (step 3). The warnings of ``review``
(a breakdown table nobody configured; suppressed cells that line totals alone determine)
do not block. A finding's ``brief`` leaves out the cells it is about (``examples``): that
form is what goes where evaluators read (publication logs).

Limits (documented in docs/bi-access.md): protection is against exact recovery through the
lines of one table. It does not bound how narrow the interval of a suppressed value can be
made with non-negativity (e.g. two suppressed cells known to sum to 12 lie in [2, 10]), nor
protect against linkage with other tables that publish the same counts on different
breakdowns (e.g. hierarchical region/province tables, or a table by sex and another by
sex x age band with another pattern) beyond what ``assume_external_totals`` covers, nor
group disclosure (every person of a cell sharing an attribute, e.g. 100% reached). Zero
cells are published by default. Person-level tables (pseudonymous keys) are not published
at all: they build into the internal schema ``detail`` (the blocking check
``no_person_level_data_published`` of ``quality/checks.py`` enforces it).
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

import yaml

from jisr.blas import blas_threads_as_before, single_threaded_blas
from quality.config import DEFAULT_PUBLISH_SCHEMAS, config_for

CONFIG_FILE = "disclosure.yml"
DEFAULT_K = 10
DEFAULT_FLAG = "is_suppressed"
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL", "NUMERIC")  # DuckDB and PostgreSQL


class DisclosureConfigError(ValueError):
    """config/disclosure.yml is invalid."""


class PatternMismatch(ValueError):
    """A table's cells are not those of the publication whose pattern it is to follow."""


@dataclass(frozen=True)
class TableRule:
    table: str
    dimensions: tuple[str, ...]
    count_columns: tuple[str, ...]
    value_columns: tuple[str, ...] = ()
    by: tuple[str, ...] = ()
    keep_columns: tuple[str, ...] = ()
    link_across: tuple[str, ...] = ()
    total_label: str | None = "all"
    k: int = DEFAULT_K
    suppress_zeros: bool = False
    assume_external_totals: bool = True
    flag_column: str = DEFAULT_FLAG
    description: str = ""

    @property
    def schema(self) -> str:
        return self.table.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.table.split(".", 1)[1]

    @property
    def key_columns(self) -> tuple[str, ...]:
        return self.by + self.dimensions

    @property
    def suppressed_columns(self) -> tuple[str, ...]:
        return self.count_columns + self.value_columns

    def is_small(self, value) -> bool:
        if value is None:
            return False
        low = 0 if self.suppress_zeros else 1
        return low <= value < self.k if not isinstance(value, float) or not math.isnan(value) else False


@dataclass(frozen=True)
class DisclosureConfig:
    tables: tuple[TableRule, ...]
    k: int = DEFAULT_K
    exempt_tables: tuple[str, ...] = ()
    dimension_hints: tuple[str, ...] = ("region_code", "province_code", "commune_code", "sex", "age_band",
                                        "vulnerability_tercile")
    # the publications a new one is checked against, besides the one served (the publish
    # step's choice): "previous" (the files rolled back since it was published) or "kept"
    # (every file kept for rollback, and every file rolled back)
    check_against: str = "previous"

    def rule(self, table: str) -> TableRule:
        for rule in self.tables:
            if rule.table == table:
                return rule
        raise KeyError(table)


def _names(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DisclosureConfigError(f"{where}: expected a list of column names")
    return tuple(value)


TABLE_KEYS = {"table", "dimensions", "count_column", "count_columns", "value_columns", "by", "keep_columns",
              "link_across", "total_label", "k", "suppress_zeros", "assume_external_totals", "flag_column",
              "description"}


OVERRIDABLE = ("k", "suppress_zeros", "assume_external_totals", "flag_column", "total_label")
CHECK_AGAINST = ("previous", "kept")


def parse_config(data: dict) -> DisclosureConfig:
    """Validate the content of disclosure.yml (a dict)."""
    if not isinstance(data, dict):
        raise DisclosureConfigError("disclosure config: expected a mapping")
    unknown = set(data) - {"k", "suppress_zeros", "assume_external_totals", "flag_column", "total_label", "tables",
                           "exempt_tables", "dimension_hints", "check_against"}
    if unknown:
        raise DisclosureConfigError(f"disclosure config: unknown keys {sorted(unknown)}")
    k = data.get("k", DEFAULT_K)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise DisclosureConfigError("disclosure config: k must be a positive integer")
    check_against = data.get("check_against", DisclosureConfig.check_against)
    if check_against not in CHECK_AGAINST:
        raise DisclosureConfigError(f"disclosure config: check_against must be one of {', '.join(CHECK_AGAINST)}, "
                                    f"not {check_against!r}")
    defaults = {key: data[key] for key in ("suppress_zeros", "assume_external_totals", "flag_column", "total_label")
                if key in data}
    rules = []
    seen = set()
    for i, raw in enumerate(data.get("tables") or []):
        where = f"disclosure config, tables[{i}]"
        if not isinstance(raw, dict) or "table" not in raw:
            raise DisclosureConfigError(f"{where}: each entry needs `table: <schema>.<name>`")
        where = f"disclosure config, table {raw['table']}"
        if raw["table"].count(".") != 1:
            raise DisclosureConfigError(f"{where}: write the table as <schema>.<name>")
        if raw["table"] in seen:
            raise DisclosureConfigError(f"{where}: listed twice")
        seen.add(raw["table"])
        unknown = set(raw) - TABLE_KEYS
        if unknown:
            raise DisclosureConfigError(f"{where}: unknown keys {sorted(unknown)}")
        counts = _names(raw.get("count_columns", raw.get("count_column")), where)
        dims = _names(raw.get("dimensions"), where)
        if not counts:
            raise DisclosureConfigError(f"{where}: needs count_column(s), the column(s) counting people")
        if not dims:
            raise DisclosureConfigError(f"{where}: needs dimensions (the breakdown columns)")
        merged = {**defaults, **{key: raw[key] for key in OVERRIDABLE if key in raw}}
        table_k = merged.get("k", k)
        if not isinstance(table_k, int) or isinstance(table_k, bool) or table_k < 1:
            raise DisclosureConfigError(f"{where}: k must be a positive integer")
        rule = TableRule(
            table=raw["table"], dimensions=dims, count_columns=counts,
            value_columns=_names(raw.get("value_columns"), where), by=_names(raw.get("by"), where),
            keep_columns=_names(raw.get("keep_columns"), where), link_across=_names(raw.get("link_across"), where),
            total_label=None if merged.get("total_label", "all") is None else str(merged.get("total_label", "all")),
            k=table_k, suppress_zeros=bool(merged.get("suppress_zeros", False)),
            assume_external_totals=bool(merged.get("assume_external_totals", True)),
            flag_column=str(merged.get("flag_column", DEFAULT_FLAG)), description=str(raw.get("description", "")),
        )
        columns = rule.key_columns + rule.suppressed_columns + rule.keep_columns
        if len(set(columns)) != len(columns):
            raise DisclosureConfigError(f"{where}: a column is listed in two roles")
        if not set(rule.link_across) <= set(rule.by):
            raise DisclosureConfigError(f"{where}: link_across columns must be `by` columns")
        rules.append(rule)
    return DisclosureConfig(tables=tuple(rules), k=k, exempt_tables=_names(data.get("exempt_tables"), "exempt_tables"),
                            dimension_hints=_names(data.get("dimension_hints"), "dimension_hints")
                            or DisclosureConfig.dimension_hints, check_against=check_against)


def load_config(source: Any = None, settings=None) -> DisclosureConfig:
    """A DisclosureConfig from a config object, a dict, a YAML path, or the project's file."""
    if isinstance(source, DisclosureConfig):
        return source
    if isinstance(source, dict):
        return parse_config(source)
    path = Path(source) if source is not None else Path(settings.config_dir) / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise DisclosureConfigError(f"cannot read {path}: {exc}") from exc
    return parse_config(data)


# --- the cells of one table ------------------------------------------------------------
@dataclass
class Cells:
    rule: TableRule
    rowids: list[int]
    keys: list[tuple]            # by + dimensions
    counts: list[tuple]          # count columns
    flagged: list[bool]          # already suppressed (flag column true)
    lines: list[tuple[list[int], int | None]] = field(default_factory=list)  # members, total row
    link_groups: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def size(self, i: int) -> float:
        value = self.counts[i][0]
        return math.inf if value is None else value

    def describe(self, i: int) -> str:
        """The cell's key, as ``region_code='06', month=2025-01-01`` (dates as ISO dates)."""
        return ", ".join(f"{c}={v.isoformat() if isinstance(v, (date, datetime)) else repr(v)}"
                         for c, v in zip(self.rule.key_columns, self.keys[i]))


def _is_total(rule: TableRule, value) -> bool:
    return rule.total_label is not None and value is not None and str(value).lower() == rule.total_label.lower()


def build_cells(rule: TableRule, rows: list[tuple], rowids: list[int] | None = None,
                flagged: list[bool] | None = None) -> Cells:
    """Cells and lines of a table from its rows (key columns then count columns)."""
    nkey = len(rule.key_columns)
    keys = [tuple(r[:nkey]) for r in rows]
    counts = [tuple(r[nkey:nkey + len(rule.count_columns)]) for r in rows]
    cells = Cells(rule, list(rowids if rowids is not None else range(len(rows))), keys, counts,
                  list(flagged if flagged is not None else [False] * len(rows)))
    nby = len(rule.by)
    for j in range(len(rule.dimensions)):
        groups: dict[tuple, tuple[list[int], list[int]]] = {}
        for i, key in enumerate(keys):
            rest = key[:nby + j] + key[nby + j + 1:]
            members, totals = groups.setdefault(rest, ([], []))
            (totals if _is_total(rule, key[nby + j]) else members).append(i)
        for rest in sorted(groups, key=repr):
            members, totals = groups[rest]
            total = totals[0] if totals else None
            if total is None and not rule.assume_external_totals:
                continue
            if len(members) + len(totals) < 2:
                continue  # a lone cell is its own total: protected where that total is published
            cells.lines.append((members, total))
    if rule.link_across:
        positions = [rule.key_columns.index(c) for c in rule.link_across]
        groups: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(tuple(v for p, v in enumerate(key) if p not in positions), []).append(i)
        cells.link_groups = [g for g in groups.values() if len(g) > 1]
    return cells


def primary_suppressions(cells: Cells) -> set[int]:
    rule = cells.rule
    return {i for i in range(len(cells)) if cells.flagged[i] or any(rule.is_small(v) for v in cells.counts[i])}


def _equation(line: tuple[list[int], int | None], suppressed: set[int]) -> dict[int, float]:
    """A line's equation in its suppressed cells: the members' sum minus the total is known."""
    members, total = line
    row = {i: 1.0 for i in members if i in suppressed}
    if total is not None and total in suppressed:
        row[total] = -1.0
    return row


def _components(cells: Cells, suppressed: set[int]) -> list[tuple[list[int], list[dict[int, float]]]]:
    """Connected groups of suppressed cells (cells sharing a line) with their equations."""
    equations = [row for row in (_equation(line, suppressed) for line in cells.lines) if row]
    parent: dict[int, int] = {i: i for i in suppressed}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for equation in equations:
        first, *rest = equation
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[int, tuple[list[int], list[dict[int, float]]]] = {}
    for i in sorted(suppressed):
        groups.setdefault(find(i), ([], []))[0].append(i)
    for equation in equations:
        groups[find(next(iter(equation)))][1].append(equation)
    return list(groups.values())


def _components_touching(cells: Cells, suppressed: set[int], touching: set[int],
                         lines_of: dict[int, list[int]]) -> list[tuple[list[int], list[dict[int, float]]]]:
    """The groups of ``_components(cells, suppressed)`` that hold a cell of ``touching``, the
    same and in the same order, found from those cells alone (``lines_of``: the lines, by
    index in ``cells.lines``, holding each cell as a member or as their total).

    A round of ``suppression_pattern`` after the first hides a few cells: only their groups
    can expose anything, and following their lines costs a fraction of rebuilding every
    group of the table."""
    groups = []
    seen: set[int] = set()
    for start in sorted(touching & suppressed):
        if start in seen:
            continue
        members: set[int] = set()
        lines: set[int] = set()
        pending = [start]
        while pending:
            cell = pending.pop()
            if cell in members:
                continue
            members.add(cell)
            for n in lines_of.get(cell, ()):
                if n in lines:
                    continue
                lines.add(n)
                line_members, total = cells.lines[n]
                pending.extend(i for i in line_members if i in suppressed and i not in members)
                if total is not None and total in suppressed and total not in members:
                    pending.append(total)
        seen |= members
        groups.append((sorted(members), [_equation(cells.lines[n], suppressed) for n in sorted(lines)]))
    return sorted(groups, key=lambda group: group[0][0])


# Systems already solved in this process, by a digest of their coefficients: the check of a
# candidate (``check_table``) examines the very systems ``protect`` solved moments before in
# the same run, and the factorisations are most of the cost of both (seconds at national
# scale). A pure function of the coefficients, so a hit returns what solving would.
_SOLVED: dict[bytes, frozenset[int]] = {}
_SOLVED_MAX = 20_000


def _reduce(equations: list[dict[int, float]]) -> tuple[dict[int, int], set[int], list[dict[int, float]]]:
    """The system with its equations in two unknowns of equal or opposite coefficients (a
    line with two hidden cells: most lines of a mostly hidden table) solved out, exactly.

    In every solution of the homogeneous system such an equation ties its two unknowns
    (``x = y`` or ``x = -y``): one is replaced by the other, signed, in every other equation,
    and it is determined exactly when the other is. An equation left with one unknown
    determines it, which leaves the others; one left with none, or given twice, says nothing
    more. Repeated, on the equations holding an unknown tied or determined since they were
    last written, until nothing changes. The equations are those of lines (coefficients 1
    and -1, ``_equation``) and stay in small integers, so nothing here rounds. Returns (each
    tied unknown -> the unknown it follows), the unknowns determined so far, and the
    equations left, in the unknowns left. (At 1,000,000 beneficiaries the largest system of
    two publications, 2,861 unknowns in 5,419 equations, leaves 1,052 in 1,903 to factorise:
    the incubation cohorts' check against the previous publication went from 15.5 s to
    1.6 s, the same cells hidden in every table.)"""
    tied: dict[int, tuple[int, float]] = {}
    zero: set[int] = set()

    def find(cell: int) -> tuple[int, float]:
        path = []
        while cell in tied:
            path.append(cell)
            cell = tied[cell][0]
        sign = 1.0
        for step in reversed(path):  # each unknown of the path now follows the end of it
            sign *= tied[step][1]
            tied[step] = (cell, sign)
        return (cell, tied[path[0]][1]) if path else (cell, 1.0)

    rows: list[tuple[frozenset | None, dict[int, float]]] = [(None, row) for row in equations]
    moved: set[int] | None = None  # unknowns tied or determined in the last pass (None: all rows)
    while True:
        moving: set[int] = set()
        left: dict[frozenset, dict[int, float]] = {}
        for key, row in rows:
            if key is not None and moved.isdisjoint(row):  # written since, nothing in it moved
                left.setdefault(key, row)
                continue
            terms: dict[int, float] = {}
            for cell, coefficient in row.items():
                link = tied.get(cell)
                if link is None:
                    unknown, sign = cell, 1.0
                else:
                    unknown, sign = link if link[0] not in tied else find(cell)
                if unknown not in zero:
                    terms[unknown] = terms.get(unknown, 0.0) + sign * coefficient
            terms = {unknown: c for unknown, c in terms.items() if c != 0.0}
            if len(terms) == 1:
                zero.update(terms)
                moving.update(terms)
            elif len(terms) == 2 and abs((pair := list(terms.items()))[0][1]) == abs(pair[1][1]):
                (x, a), (y, b) = pair
                tied[y] = (x, -a / b)
                moving.add(y)
            elif terms:
                left.setdefault(frozenset(terms.items()), terms)
        rows = list(left.items())
        if not moving:
            return {cell: find(cell)[0] for cell in list(tied)}, zero, [row for _, row in rows]
        moved = moving


@dataclass
class _Reduced:
    """A system after :func:`_reduce`: its unknowns, how each tied one follows another, the
    ones determined already, and what is left to factorise (``unknowns``, ``equations``)."""
    members: list[int]
    tied: dict[int, int]
    zero: set[int]
    unknowns: list[int]
    equations: list[dict[int, float]]

    def cost(self) -> int:
        """The factorisation's cost, up to a constant: unknowns squared times equations."""
        return len(self.unknowns) ** 2 * len(self.equations)


def _reduced(members: list[int], equations: list[dict[int, float]]) -> _Reduced:
    tied, zero, left = _reduce(equations)
    return _Reduced(members, tied, zero, sorted({cell for equation in left for cell in equation}), left)


def _factorised(system: _Reduced) -> set[int]:
    """The unknowns of a reduced system that its equations fix: the ones ``_reduce`` found,
    those :func:`_solve` finds in what it left, and the unknowns tied to either."""
    import numpy as np

    positions: frozenset[int] = frozenset()
    if system.equations:
        index = {cell: n for n, cell in enumerate(system.unknowns)}
        rows, columns, values = [], [], []
        for e, equation in enumerate(system.equations):
            for cell, coefficient in equation.items():
                rows.append(index[cell])
                columns.append(e)
                values.append(coefficient)
        shape = np.array([len(index), len(system.equations)], dtype=np.int64)
        triplets = [np.array(rows, dtype=np.int64), np.array(columns, dtype=np.int64), np.array(values)]
        digest = hashlib.sha256(b"".join(a.tobytes() for a in [shape, *triplets])).digest()
        positions = _SOLVED.get(digest)
        if positions is None:
            positions = _solve(len(index), len(system.equations), *triplets)
            if len(_SOLVED) >= _SOLVED_MAX:
                _SOLVED.clear()
            _SOLVED[digest] = positions
    determined = system.zero | {system.unknowns[n] for n in positions}
    return {cell for cell in system.members if system.tied.get(cell, cell) in determined}


def _determined(members: list[int], equations: list[dict[int, float]]) -> set[int]:
    """Unknowns fixed by the equations: e_j lies in the row space of the system, that is
    every solution of the homogeneous system has a zero j-th component (:func:`_reduce`,
    then :func:`_solve` for what it leaves)."""
    return _factorised(_reduced(members, equations)) if equations else set()


def _solve(unknowns: int, count: int, rows, columns, values) -> frozenset[int]:
    """Positions of the determined unknowns of a system given by its coefficient triplets.

    A rank-revealing QR of the system A (equations x unknowns), A P = Q [R11 R12; 0 0],
    without forming Q: the null space of A is spanned by the columns of P [-R11^-1 R12; I].
    An unknown is determined exactly when its row of that basis is zero: never one of the
    free unknowns (the identity rows), a pivot unknown when its row of R11^-1 R12 is.
    (Measured at 1,000,000 beneficiaries: 1.6 s for the 469 systems of a refresh against
    2.2 s for the orthonormal basis of the row space, the same unknowns in every system.)
    """
    import numpy as np
    from scipy.linalg import qr, solve_triangular

    matrix = np.zeros((count, unknowns))  # equations x unknowns
    matrix[columns, rows] = values
    r, pivots = qr(matrix, mode="r", pivoting=True, overwrite_a=True)
    r = r[:min(count, unknowns)]
    diagonal = np.abs(np.diag(r))
    rank = int((diagonal > 1e-9 * max(1.0, diagonal.max(initial=0.0))).sum())
    if rank == unknowns:
        return frozenset(range(unknowns))
    if rank == 0:
        return frozenset()
    basis = np.abs(solve_triangular(r[:rank, :rank], r[:rank, rank:]))  # |R11^-1 R12|: rank x free unknowns
    # zero up to rounding, relative to the basis's scale: rounding read as a value would hide
    # a determined cell, so the tolerance grows with the values rather than stay fixed
    tolerance = 1e-7 * max(1.0, float(basis.max(initial=0.0)))
    return frozenset(int(pivots[n]) for n in np.flatnonzero(basis.max(axis=1, initial=0.0) <= tolerance))


# Systems left with this many unknowns or more by ``_reduce`` are factorised on threads, one
# per core, each with one BLAS thread: LAPACK runs outside Python's lock, and one BLAS thread
# per system beats BLAS's own threads on these sizes (32 systems of about 800 unknowns each:
# 1.7 s one after the other).
THREADED_UNKNOWNS = 200
# A system left at least this large that costs more than the other large systems of its round
# together is solved last, with BLAS's own threads, the others before it one by one: on the
# threads it would finish long after them (on 2 cores a system of 2,284 unknowns takes 1.1 s
# with BLAS's threads and 2.0 s without; one of 800 unknowns 47 ms and 63 ms; at 400 unknowns
# the threads gain nothing).
DOMINANT_SYSTEM_UNKNOWNS = 800


def _determined_in(systems: list[tuple[list[int], list[dict[int, float]]]]) -> set[int]:
    """The unknowns that the equations of each system fix (:func:`_determined`), together.

    Called with one BLAS thread (``_one_blas_thread``): each system is reduced here
    (``_reduce``), then what is left of the large ones is factorised on threads, of the small
    ones here (their Python costs more than their factorisation); a large system that
    dominates the others gets BLAS's threads instead (``DOMINANT_SYSTEM_UNKNOWNS``). The
    result is a union, the same whichever thread solved which system."""
    found: set[int] = set()
    large = []
    for members, equations in systems:
        system = _reduced(members, equations)
        if len(system.unknowns) >= THREADED_UNKNOWNS:
            large.append(system)
        else:
            found |= _factorised(system)
    large.sort(key=_Reduced.cost, reverse=True)
    workers = min(len(large), os.cpu_count() or 1)
    if large and len(large[0].unknowns) >= DOMINANT_SYSTEM_UNKNOWNS and large[0].cost() > sum(s.cost() for s in large[1:]):
        parts = [_factorised(system) for system in large[1:]]
        with blas_threads_as_before():
            parts.append(_factorised(large[0]))
    elif workers > 1:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jisr-disclosure") as pool:
            parts = list(pool.map(_factorised, large))
    else:
        parts = [_factorised(system) for system in large]
    return found.union(*parts)


def _one_blas_thread():
    """``single_threaded_blas()`` once numpy's and scipy's BLAS libraries are loaded: it sets
    the libraries loaded when it is entered, and scipy's would otherwise load inside it (the
    first solve of a process), keeping its default threads."""
    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401

    return single_threaded_blas()


def recoverable(cells: Cells, suppressed: set[int], touching: set[int] | None = None,
                components: list | None = None) -> set[int]:
    """Suppressed cells whose value follows exactly from the lines and the published cells.

    ``touching``: only examine the groups of lines that contain one of these cells.
    ``components``: ``_components(cells, suppressed)`` when the caller has it already.
    """
    if components is None:
        components = _components(cells, suppressed)
    with _one_blas_thread():
        return _determined_in([(members, equations) for members, equations in components
                               if touching is None or not touching.isdisjoint(members)])


def determined_by_totals(cells: Cells, touching: set[int] | None = None) -> set[int]:
    """Cells that the line totals alone determine, even with every cell of the table hidden.

    Sparse tables have them (e.g. two lines that share their only two cells): if those
    totals are published, no suppression in this table can protect such a cell; the tables
    publishing the totals have to. They are reported as a warning, not fixed here.
    ``touching``: only the strata (groups of lines) holding one of these cells.
    """
    if not any(total is None for _, total in cells.lines):
        return set()  # total rows of the table are hidden with their cells: no outside knowledge
    return recoverable(cells, set(range(len(cells))), touching=touching)


def _pick(cells: Cells, candidates: Iterable[int], totals: set[int], closes=None,
          published_before: Collection[int] = frozenset()) -> int | None:
    """The next cell to hide: one the previous publication did not publish with the same
    counts (``published_before``: whoever kept that file knows it, so hiding it protects
    nothing from them); then a detail cell before a total row; among them one that also
    closes the most other open lines (lines with a lone hidden cell), then the smallest."""
    candidates = list(candidates)
    if not candidates:
        return None
    return min(candidates, key=lambda i: (i in published_before, i in totals, -(closes(i) if closes else 0),
                                          cells.size(i), i))


def suppression_pattern(cells: Cells, published_before: Collection[int] = frozenset(),
                        previous: PreviousCells | None = None,
                        exposed_together: set | None = None,
                        others: Sequence[PreviousCells] = ()) -> tuple[set[int], set[int]]:
    """(primary, complementary) suppressed cells of a table.

    ``published_before``: cells the previous publication published with the same counts;
    they are chosen as complements only where no other cell can be (see ``_pick``).
    ``previous``: that publication (``PreviousCells``): once this file is safe on its own, a
    small cell of either file that the two together give back (``_TwoFiles``) gets a
    complement here where one helps (``_two_file_round``); ``exposed_together``, when given,
    receives those left (this file's indices, or (n, index) for cells of the n-th other
    file alone: 0 the previous one). ``others``: other publications a reader may hold: this
    file is checked with each of them in the same way, in the same rounds (whoever holds
    this file and one of them)."""
    if exposed_together is None:
        exposed_together = set()
    primary = primary_suppressions(cells)
    suppressed = set(primary)
    totals = {total for _, total in cells.lines if total is not None}
    line_cells = [members + ([total] if total is not None else []) for members, total in cells.lines]
    lines_of: dict[int, list[int]] = {}
    for n, line in enumerate(line_cells):
        for i in line:
            lines_of.setdefault(i, []).append(n)
    links_of: dict[int, list[int]] = {}
    for group in cells.link_groups:
        for i in group:
            links_of[i] = group
    hidden_count = [sum(1 for i in line if i in suppressed) for line in line_cells]
    changed_cells: set[int] = set(suppressed)

    def hide(i: int, queue: list[int]) -> None:
        pending = [i]
        while pending:
            cell = pending.pop()
            if cell in suppressed:
                continue
            suppressed.add(cell)
            changed_cells.add(cell)
            for n in lines_of.get(cell, ()):
                hidden_count[n] += 1
                queue.append(n)
            pending.extend(j for j in links_of.get(cell, ()) if j not in suppressed)

    def closes(i: int) -> int:
        return sum(1 for n in lines_of.get(i, ()) if hidden_count[n] == 1)

    unfixable: set[int] = set()
    strata: list | None = None  # groups of lines with every cell unknown, computed once
    stratum_of: dict[int, int] = {}
    solved: set[int] = set()

    def determined_by_totals_alone(exposed: set[int]) -> set[int]:
        nonlocal strata, stratum_of
        if not exposed or not any(total is None for _, total in cells.lines):
            return set()
        if strata is None:
            strata = _components(cells, set(range(len(cells))))
            stratum_of = {cell: n for n, (members, _) in enumerate(strata) for cell in members}
        new_strata = sorted({stratum_of[cell] for cell in exposed} - solved)
        with _one_blas_thread():
            unfixable.update(_determined_in([strata[n] for n in new_strata]))
        solved.update(new_strata)
        return exposed & unfixable

    def settle(queue: list[int]) -> set[int]:
        """Hide complements until no suppressed cell of this file follows from its lines; the
        cells that still do (nothing left to hide near them: ``check`` reports them)."""
        nonlocal changed_cells
        while True:
            while queue:  # a line with a lone suppressed cell gets its smallest other cell hidden
                n = queue.pop()
                if hidden_count[n] == 1:
                    pick = _pick(cells, (i for i in line_cells[n] if i not in suppressed), totals, closes,
                                 published_before)
                    if pick is not None:
                        hide(pick, queue)
            # the groups holding a cell hidden since the last check: only they can expose a cell
            components = _components_touching(cells, suppressed, changed_cells, lines_of)
            exposed = recoverable(cells, suppressed, components=components) - unfixable
            exposed -= determined_by_totals_alone(exposed)
            changed_cells = set()
            if not exposed:
                return set()
            progress = False
            for members, _ in components:  # as they were before this round hides anything
                group_exposed = sorted(exposed.intersection(members))
                if not group_exposed:
                    continue
                cell = group_exposed[0]
                pick = _pick(cells, {i for n in lines_of.get(cell, []) for i in line_cells[n] if i not in suppressed},
                             totals, published_before=published_before)
                if pick is None:  # every neighbour is hidden: widen to the lines of the whole group
                    pick = _pick(cells, {i for s in members for n in lines_of.get(s, []) for i in line_cells[n]
                                         if i not in suppressed}, totals, published_before=published_before)
                if pick is not None:
                    hide(pick, queue)
                    progress = True
            if not progress:
                return exposed  # nothing left to hide; check() reports what stays exposed

    queue = list(range(len(line_cells)))[::-1]
    for i in sorted(suppressed):  # linked strata share the primary pattern
        for j in links_of.get(i, ()):
            hide(j, queue)
    exposed_alone = settle(queue)
    pairs = [_TwoFiles(cells, p, primary) for p in (previous, *others) if p is not None]
    if pairs:
        attempts: list[dict[int, int]] = [{} for _ in pairs]
        left: list[set[int]] = [set() for _ in pairs]  # small cells no complement protected from two files
        examined: list[set[int]] = [set() for _ in pairs]  # checked for a line the other file gives away whole
        for _ in range(TWO_FILE_ROUNDS):
            picks: list[int] = []
            for n, both in enumerate(pairs):
                chosen, out_of_reach = _two_file_round(cells, suppressed, totals, both, attempts[n],
                                                       unfixable | exposed_alone | left[n], examined[n])
                left[n] |= out_of_reach
                picks += [pick for pick in chosen if pick not in picks]
            if not picks:
                break
            before = set(suppressed), list(hidden_count)
            queue = []
            for pick in picks:
                hide(pick, queue)
            if settle(queue) - exposed_alone:  # the round left this file unsafe on its own: undo it, stop
                suppressed.clear()
                suppressed.update(before[0])
                hidden_count[:] = before[1]
                break
        # as the final pattern leaves them, however the rounds ended
        for n, both in enumerate(pairs):
            exposed_together |= {v if v < len(cells) else (n, v)
                                 for v in both.exposed(suppressed, unfixable | exposed_alone)[1]}
    return primary, suppressed - primary


def _same_key(key: tuple) -> tuple:
    """A key compared across publications: values as text (a month typed as a date in one
    version of the code and as text in another is the same month)."""
    return tuple(None if v is None else (v.isoformat() if isinstance(v, (date, datetime)) else str(v)) for v in key)


@dataclass
class PreviousCells:
    """The previous publication of a table as its reader knows it: its cells (with their
    counts before suppression when the publish step kept them, else the published counts
    and None), the ones it hid, and for each of its cells with the same key and the same
    counts now, its index among the cells now (``now_index``: the reader may take that cell
    as unchanged). ``counted``: whether the counts it hid are known (``keep_counts``)."""
    cells: Cells
    hidden: set[int]
    now_index: dict[int, int]
    counted: bool

    @property
    def small(self) -> set[int]:
        return primary_suppressions(self.cells) & self.hidden if self.counted else set()


def previous_cells(cells: Cells, rows: list[tuple], hidden_keys: set[tuple], counted: bool = True) -> PreviousCells:
    """``PreviousCells`` of a table whose cells are ``cells`` now, from the previous
    publication's rows (key then count columns: its counts before suppression, or its
    published counts with None for what it hid when ``counted`` is false) and the keys it hid."""
    before = build_cells(cells.rule, rows)
    now = {_same_key(key): i for i, key in enumerate(cells.keys)}
    hidden_keys = {_same_key(key) for key in hidden_keys}
    hidden = {j for j, key in enumerate(before.keys) if _same_key(key) in hidden_keys}
    now_index = {}
    for j, key in enumerate(before.keys):
        i = now.get(_same_key(key))
        # the same counts: the reader may take it as the same cell (a cell whose counts all
        # changed but one is not joined by that one's lines: docs/bi-access.md, Limits)
        if i is not None and None not in before.counts[j] and tuple(before.counts[j]) == tuple(cells.counts[i]):
            now_index[j] = i
    return PreviousCells(before, hidden, now_index, counted)


class _TwoFiles:
    """This table and its previous publication as one system of lines, as whoever holds both
    files sees it: a variable per cell now, and one per cell of the previous file that has
    no counterpart now (``PreviousCells.now_index`` merges the others into theirs); a
    variable is unknown when every file holding it hides it. Its small cells: this file's,
    and the previous file's when its counts are known."""

    def __init__(self, cells: Cells, previous: PreviousCells, primary: set[int]):
        n = len(cells)
        self.n = n
        self.var = {j: previous.now_index.get(j) for j in range(len(previous.cells))}
        extra = [j for j in range(len(previous.cells)) if self.var[j] is None]
        for m, j in enumerate(extra):
            self.var[j] = n + m
        lines = list(cells.lines) + [([self.var[i] for i in members], None if total is None else self.var[total])
                                     for members, total in previous.cells.lines]
        self.joint = Cells(cells.rule, list(range(n + len(extra))), list(cells.keys) + [previous.cells.keys[j] for j in extra],
                           list(cells.counts) + [previous.cells.counts[j] for j in extra], [False] * (n + len(extra)), lines)
        self.line_cells = [members + ([total] if total is not None else []) for members, total in lines]
        self.lines_of: dict[int, list[int]] = {}
        for k, line in enumerate(self.line_cells):
            for v in line:
                self.lines_of.setdefault(v, []).append(k)
        # a variable of this file is known when the previous file published it; the previous
        # file's own variables are fixed: hidden or published, whatever this file does
        self.published_before = {self.var[j] for j in range(len(previous.cells)) if j not in previous.hidden}
        self.hidden_before_only = {self.var[j] for j in previous.hidden if self.var[j] >= n}
        small_before = previous.small
        self.small = set(primary) | {self.var[j] for j in small_before}
        self.previous = previous
        self.of_previous = {}  # variable -> the previous file's cell, for its small cells
        for j in small_before:
            self.of_previous.setdefault(self.var[j], j)
        self._alone_before: dict[int, bool] = {}
        self._last = None  # (pattern, groups, small cells determined) of the last pattern examined

    def alone_before(self, found: set[int]) -> set[int]:
        """Those of ``found`` that the previous file gave on its own (its lines alone)."""
        todo = {v for v in found if v in self.of_previous and v not in self._alone_before}
        if todo:
            given = recoverable(self.previous.cells, self.previous.hidden, touching={self.of_previous[v] for v in todo})
            self._alone_before.update({v: self.of_previous[v] in given for v in todo})
        return {v for v in found if self._alone_before.get(v)}

    def unknown(self, suppressed: set[int]) -> set[int]:
        return {i for i in suppressed if i not in self.published_before} | self.hidden_before_only

    def exposed(self, suppressed: set[int], skip: set[int]) -> tuple[list, set[int]]:
        """(the groups of unknowns holding a small cell, the small cells their lines determine
        beyond what each file gives on its own)."""
        key = frozenset(suppressed)
        if self._last is None or self._last[0] != key:  # the same pattern is examined once
            unknown = self.unknown(suppressed)
            touching = self.small & unknown
            components = _components_touching(self.joint, unknown, touching, self.lines_of) if touching else []
            found = recoverable(self.joint, unknown, components=components) & self.small if touching else set()
            self._last = key, components, found
        _, components, found = self._last
        found = found - skip
        return components, found - self.alone_before(found)

    def could_hide(self, members, suppressed: set[int]) -> set[int]:
        """Cells of this file on the lines of ``members`` whose hiding adds an unknown."""
        return {v for s in members for k in self.lines_of.get(s, ()) for v in self.line_cells[k]
                if v < self.n and v not in suppressed and v not in self.published_before}


def _two_file_round(cells: Cells, suppressed: set[int], totals: set[int], both: _TwoFiles, attempts: dict[int, int],
                    skip: set[int], examined: set[int]) -> tuple[list[int], set[int]]:
    """One round against whoever holds this file and the previous one (``_TwoFiles``): for
    each small cell, of either file, that the two together determine and whose lines no other
    pick of this round crosses, a cell of this file to hide on its lines, else on its
    group's (a detail cell before a total, the smallest first): (those cells; the small cells
    left determined: those that stay so with every cell of this file hidden that the previous
    file did not publish, which nothing here protects, those whose group has no such cell,
    and those that had ``KNOWN_BEFORE_TRIES`` complements already). ``attempts`` counts the
    complements hidden for each small cell across rounds; ``examined``, the small cells
    already checked for the first case."""
    components, exposed = both.exposed(suppressed, skip)
    out_of_reach = set()
    for members, _ in components:  # a group with nothing this file could hide: nothing to try
        if exposed.intersection(members) and not both.could_hide(members, suppressed):
            out_of_reach |= exposed.intersection(members)
    exposed -= out_of_reach
    new = exposed - examined
    if new:
        examined |= new
        every = both.unknown(set(range(both.n)))
        hopeless = recoverable(both.joint, every, touching=new) & new
        out_of_reach |= hopeless
        exposed -= hopeless
    picks, crossed = [], set()
    for members, _ in components:
        for cell in sorted(exposed.intersection(members)):
            if not crossed.isdisjoint(both.lines_of.get(cell, ())):
                continue  # a complement picked this round crosses its lines: seen again next round
            candidates = both.could_hide([cell], suppressed) or both.could_hide(members, suppressed)
            if not candidates or attempts.get(cell, 0) >= KNOWN_BEFORE_TRIES:
                out_of_reach.add(cell)
                continue
            attempts[cell] = attempts.get(cell, 0) + 1
            pick = _pick(cells, candidates, totals)
            picks.append(pick)
            crossed.update(both.lines_of.get(pick, ()))
            crossed.update(both.lines_of.get(cell, ()))
    return picks, out_of_reach


# Rounds of the check against the previous publication (each: complements for every small
# cell the two files give back, then this file made safe on its own again); what is left
# after them is counted.
TWO_FILE_ROUNDS = 20

# Complements hidden at most for one small cell against whoever holds the previous
# publication too (one per round, each followed by the complements this file then needs on its
# own: more cells than this); a cell still determined after them is left, and counted. A
# cell that would stay determined with every cell hidden that the previous file did not
# publish (a line whose other cells that file all published) gets none.
KNOWN_BEFORE_TRIES = 4


# --- reading and writing the warehouse -------------------------------------------------
class _Database:
    """The few statements protect/check need, on DuckDB or on PostgreSQL (psycopg2)."""

    def __init__(self, con, own_transactions: bool = True):
        self.con = con
        self.own_transactions = own_transactions  # False: begin, commit and rollback are the caller's
        self.postgres = type(con).__module__.startswith("psycopg2")
        self.row_id = "ctid::text" if self.postgres else "rowid"

    def rows(self, sql: str, params=()) -> list[tuple]:
        if self.postgres:
            with self.con.cursor() as cursor:
                cursor.execute(sql.replace("?", "%s"), list(params))
                return cursor.fetchall() if cursor.description else []
        return self.con.execute(sql, list(params)).fetchall()

    def run(self, sql: str, params=()) -> None:
        self.rows(sql, params)

    def begin(self) -> None:
        if self.own_transactions and not self.postgres:
            self.con.execute("begin transaction")

    def commit(self) -> None:
        if self.own_transactions:
            self.con.commit() if self.postgres else self.con.execute("commit")

    def rollback(self) -> None:
        if self.own_transactions:
            self.con.rollback() if self.postgres else self.con.execute("rollback")

    def update_rows(self, table: str, assignments: str, row_ids: list) -> None:
        if self.postgres:
            self.run(f"update {table} set {assignments} where ctid = any(?::tid[])", [row_ids])
            return
        # one statement with the row ids as a list parameter (executemany inserts row by row)
        self.run(f"update {table} set {assignments} where rowid in (select unnest(?::bigint[]))", [list(row_ids)])


def _columns(db: _Database, rule: TableRule, database: str | None = None) -> dict[str, str] | None:
    """The table's columns and their types, None when it does not exist: in the connection's
    database, or in the attached DuckDB database ``database``."""
    catalog = "current_database()" if database is None else "?"
    rows = db.rows(
        "select column_name, data_type from information_schema.columns "
        f"where table_catalog = {catalog} and table_schema = ? and table_name = ? "
        "order by ordinal_position", [*([] if database is None else [database]), rule.schema, rule.name])
    return {name: typ for name, typ in rows} or None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _read_cells(db: _Database, rule: TableRule, columns: dict[str, str]) -> Cells:
    flag = f"coalesce({_q(rule.flag_column)}, false)" if rule.flag_column in columns else "false"
    selected = ", ".join(_q(c) for c in rule.key_columns + rule.count_columns)
    rows = db.rows(f"select {db.row_id}, {flag}, {selected} from {_q(rule.schema)}.{_q(rule.name)} "
                   f"order by {', '.join(_q(c) for c in rule.key_columns)}")
    return build_cells(rule, [r[2:] for r in rows], rowids=[r[0] for r in rows], flagged=[bool(r[1]) for r in rows])


@dataclass
class TableProtection:
    table: str
    cells: int
    primary: int
    complementary: int
    together: int = 0  # small cells, of this file or another, that this file and one other give back together
    previous: str = ""  # what the check against the previous publication (and the others) could not use
    others: int = 0  # other publications it was checked against, as against the previous one

    def __str__(self) -> str:
        """What the publish log says (evaluators read it): not the cells the two-file check left."""
        return (f"{self.table}: {self.cells} cells, {self.primary} suppressed under k, "
                f"{self.complementary} complementary")

    def note(self) -> str | None:
        """For data engineers (the refresh's log, never the published file): what the check
        against the previous publication (and the others) left or why it did not run."""
        notes = [self.previous] if self.previous else []
        if self.together:
            other = "the previous one" + (f" or one of the {self.others} other(s) it was checked against"
                                          if self.others else "")
            notes.append(f"{self.together} cell(s) under k recoverable from this publication and {other} "
                         "together (nothing left to hide here protects them; docs/bi-access.md, Limits)")
        return f"{self.table}: " + "; ".join(notes) if notes else None


def published_pattern(con, settings=None, config: Any = None) -> dict[str, dict[tuple, tuple | None]]:
    """The pattern a protected database publishes: for each configured table it holds with
    its flag column, every cell's key values -> its counts, or None when it is suppressed
    (what ``protect(..., follow=...)`` applies to another copy of the same tables)."""
    config = load_config(config, settings)
    db = _Database(con)
    pattern = {}
    for rule in config.tables:
        columns = _columns(db, rule)
        if columns is None or any(c not in columns for c in (*rule.key_columns, *rule.count_columns, rule.flag_column)):
            continue
        n, selected = len(rule.key_columns), ", ".join(_q(c) for c in rule.key_columns + rule.count_columns)
        rows = db.rows(f"select {selected}, coalesce({_q(rule.flag_column)}, false) from {_q(rule.schema)}.{_q(rule.name)}")
        pattern[rule.table] = {tuple(r[:n]): None if r[-1] else tuple(r[n:-1]) for r in rows}
    return pattern


def _followed(cells: Cells, pattern: dict[tuple, tuple | None] | None) -> tuple[set[int], set[int]]:
    """(primary, complementary) suppressed cells of a table that follows another copy's
    ``pattern`` (see ``published_pattern``): the cells it hides; raises ``PatternMismatch``
    unless both copies hold the same cells with the same published counts, and every cell
    under k here is hidden there (it is not when k or the table's rule changed since)."""
    rule = cells.rule
    if pattern is None:
        raise PatternMismatch(f"{rule.table}: the publication to follow does not hold this table protected "
                              f"(no such table or no {rule.flag_column} column)")
    keys = [tuple(k) for k in cells.keys]
    only_here = [i for i, key in enumerate(keys) if key not in pattern]
    only_there = sorted(set(pattern) - set(keys), key=repr)
    if only_here or only_there:
        firsts = ([f"first here: {cells.describe(only_here[0])}"] if only_here else []) + (
            [f"first there: {_describe_key(rule, only_there[0])}"] if only_there else [])
        raise PatternMismatch(f"{rule.table}: {len(only_here)} cell(s) the publication to follow does not hold, "
                              f"{len(only_there)} cell(s) it holds that this copy does not ({'; '.join(firsts)})")
    hidden = set()
    for i, key in enumerate(keys):
        counts = pattern[key]
        if counts is None:
            hidden.add(i)
        elif tuple(cells.counts[i]) != counts:
            differ = ", ".join(f"{c} {here} here, {there} there" for c, here, there
                               in zip(rule.count_columns, cells.counts[i], counts) if here != there)
            raise PatternMismatch(f"{rule.table}: cell {cells.describe(i)}: {differ} "
                                  "(here: this copy; there: the publication to follow)")
    primary = primary_suppressions(cells)
    if primary - hidden:
        i = min(primary - hidden)
        raise PatternMismatch(f"{rule.table}: cell {cells.describe(i)} is under k={rule.k} here and published by the "
                              f"publication to follow ({len(primary - hidden)} such cell(s)): was "
                              "config/disclosure.yml changed since that publication?")
    return primary, hidden - primary


def _describe_key(rule: TableRule, key: tuple) -> str:
    return Cells(rule, [0], [key], [()], [False]).describe(0)


def _previous_in(db: _Database, rule: TableRule, cells: Cells, serving: str,
                 counts: str | None) -> tuple[PreviousCells | None, str]:
    """The previous publication of the table (``PreviousCells``) from the attached serving
    file ``serving``, with its counts before suppression from the attached database
    ``counts`` (``keep_counts``) when given and holding the table: (it, why not or what is
    missing, "" when complete)."""
    keys = ", ".join(_q(c) for c in rule.key_columns)
    wanted = (*rule.key_columns, *rule.count_columns)
    if not {*wanted, rule.flag_column} <= set(_columns(db, rule, serving) or ()):
        return None, "not checked: it does not hold this table with these columns"
    flag = _q(rule.flag_column)
    rows = db.rows(f"select {', '.join(_q(c) for c in wanted)}, coalesce({flag}, false) "
                   f"from {_q(serving)}.{_q(rule.schema)}.{_q(rule.name)} order by {keys}")
    hidden = {tuple(r[:len(rule.key_columns)]) for r in rows if r[-1]}
    note = ""
    counted = counts is not None and set(wanted) <= set(_columns(db, rule, counts) or ())
    if counted:
        rows = db.rows(f"select {', '.join(_q(c) for c in wanted)} from {_q(counts)}.{_q(rule.schema)}.{_q(rule.name)} "
                       f"order by {keys}")
    else:
        note = "its counts before suppression were not kept: checked against the cells it published only"
        rows = [r[:-1] if not r[-1] else (*r[:len(rule.key_columns)], *[None] * len(rule.count_columns)) for r in rows]
    previous = previous_cells(cells, [tuple(r) for r in rows], hidden, counted=counted)
    if previous.cells.keys and cells.keys and not previous.now_index and {_same_key(k) for k in cells.keys}.isdisjoint(
            _same_key(k) for k in previous.cells.keys):
        return None, "not checked: none of its cells has a key of this table (the keys changed?)"
    return previous, note


def _published_again(cells: Cells, previous: PreviousCells | None) -> tuple[set[int], set[int]] | None:
    """(primary, complementary) of the previous publication when this table is that
    publication's again: every cell with the same key and counts, none more or fewer, its
    counts before suppression known. Whoever holds both files learns nothing from the second,
    and a refresh given nothing new publishes the table unchanged. None (choose the pattern
    here) when that pattern would not do now: a cell under k it published (k changed), or a
    hidden cell its lines give back on their own (other lines: the rules changed)."""
    if previous is None or not previous.counted or not len(cells) == len(previous.cells) == len(previous.now_index):
        return None
    hidden = {previous.now_index[j] for j in previous.hidden}
    primary = primary_suppressions(cells)
    if not primary <= hidden:
        return None
    given = recoverable(cells, hidden)
    if given and given - determined_by_totals(cells, touching=given):
        return None
    return primary, hidden - primary


def keep_counts(con, source: str, target: str, settings=None, config: Any = None) -> list[str]:
    """Copy the key and count columns of every configured table of the attached DuckDB
    database ``source`` (a build warehouse: counts before suppression) into ``target``, under
    the same names: what the next publication needs to see which of this one's small cells
    it would give back (``protect(..., previous_counts=...)``). Internal data: small counts."""
    config = load_config(config, settings)
    db = _Database(con)
    kept = []
    for rule in config.tables:
        if not {*rule.key_columns, *rule.count_columns} <= set(_columns(db, rule, source) or ()):
            continue
        db.run(f"create schema if not exists {_q(target)}.{_q(rule.schema)}")
        db.run(f"create or replace table {_q(target)}.{_q(rule.schema)}.{_q(rule.name)} as select "
               f"{', '.join(_q(c) for c in (*rule.key_columns, *rule.count_columns))} "
               f"from {_q(source)}.{_q(rule.schema)}.{_q(rule.name)}")
        kept.append(rule.table)
    return kept


def protect(con, settings=None, config: Any = None, previous: str | None = None,
            follow: dict[str, dict[tuple, tuple | None]] | None = None,
            previous_counts: str | None = None,
            others: Sequence[tuple[str, str | None]] = (), in_transaction: bool = False) -> list[TableProtection]:
    """Suppress small cells (and their complements) in the configured tables of ``con``.

    ``con`` is a read-write connection to the NEW serving file, before it is published.
    Tables that are not configured are not touched; configured tables or columns that are
    missing are skipped here and reported by ``check`` (a blocking failure).
    ``previous``: the name under which the previous serving file is attached to ``con``
    (DuckDB): a cell it published with the same counts is hidden as a complement only where
    no other cell can be, since whoever kept that file knows it.
    ``previous_counts``: the name under which the previous publication's counts before
    suppression are attached (``keep_counts``): a cell it hid and this file would publish
    with the same counts is hidden here too where publishing it would give back one of that
    file's small cells.
    ``others``: other publications whose readers may hold this one too (e.g. the files
    rolled back since the previous one was published), each as the names under which it
    and its counts before suppression (None: not kept) are attached: this file is checked
    with each of them as with the previous one.
    ``follow``: the pattern of another copy of this publication (``published_pattern``):
    hide exactly the cells it hides. When the cells or published counts of any table differ,
    ``PatternMismatch`` names every such table and nothing is changed.
    ``in_transaction``: the caller's transaction holds every change, committed or rolled
    back by the caller (PostgreSQL: the schemas it renames in become readable together
    with their protection); by default each table is protected in a transaction of its own.
    """
    config = load_config(config, settings)
    db = _Database(con, own_transactions=not in_transaction)
    patterns, mismatches = [], []
    for rule in config.tables:
        columns = _columns(db, rule)
        if columns is None:
            continue
        if any(c not in columns for c in rule.key_columns + rule.suppressed_columns):
            continue  # check() reports the missing columns (a blocking failure)
        cells = _read_cells(db, rule, columns)
        together: set = set()
        note, checked = "", []
        if follow is not None:
            try:
                primary, complementary = _followed(cells, follow.get(rule.table))
            except PatternMismatch as exc:
                mismatches.append(str(exc))
                continue
        else:
            before, note = _previous_in(db, rule, cells, previous, previous_counts) if previous else (None, "")
            note = f"against the previous publication: {note}" if note else ""
            again = _published_again(cells, before)
            if again is not None:
                primary, complementary = again
            else:
                unused: dict[str, int] = {}  # what the check against the others could not use, and how often
                for serving, counts in others:
                    other, why = _previous_in(db, rule, cells, serving, counts)
                    checked += [other] if other else []
                    if why:
                        unused[why] = unused.get(why, 0) + 1
                note = "; ".join([note] * bool(note) + [f"against {n} other publication(s): {why}"
                                                        for why, n in unused.items()])
                published_before = {i for f in ([before] if before else []) + checked
                                    for j, i in f.now_index.items() if j not in f.hidden}
                primary, complementary = suppression_pattern(cells, published_before, before, together, checked)
        patterns.append((rule, columns, cells, primary, complementary, together, note, len(checked)))
    if mismatches:
        raise PatternMismatch("; ".join(mismatches))
    report = []
    for rule, columns, cells, primary, complementary, together, note, checked in patterns:
        table = f"{_q(rule.schema)}.{_q(rule.name)}"
        db.begin()
        try:
            if rule.flag_column not in columns:
                db.run(f"alter table {table} add column {_q(rule.flag_column)} boolean default false")
            counts = ", ".join(rule.suppressed_columns)
            db.run(f"comment on column {table}.{_q(rule.flag_column)} is 'True when disclosure control hid this "
                   f"row''s counts ({counts}: null here): fewer than {rule.k} people, or hidden so that such a "
                   "count cannot be recomputed from the others (docs/bi-access.md)'")
            for column in rule.suppressed_columns:
                db.run(f"alter table {table} alter column {_q(column)} drop not null")
            db.run(f"update {table} set {_q(rule.flag_column)} = false where {_q(rule.flag_column)} is null")
            hidden = sorted(cells.rowids[i] for i in primary | complementary)
            if hidden:
                assignments = ", ".join([f"{_q(rule.flag_column)} = true"] + [f"{_q(c)} = null" for c in rule.suppressed_columns])
                db.update_rows(table, assignments, hidden)
            db.commit()
        except Exception:
            db.rollback()
            raise
        report.append(TableProtection(rule.table, len(cells), len(primary), len(complementary), len(together),
                                      note, checked))
    return report


@dataclass(frozen=True)
class Violation:
    table: str
    kind: str
    message: str
    blocking: bool = True
    examples: str = ""  # the cells concerned (their key values): for the people who fix them
    cells: tuple[str, ...] = field(default=(), compare=False, repr=False)  # all of them (examples: the first few)

    def __str__(self) -> str:
        return self.brief + (f": {self.examples}" if self.examples else "")

    @property
    def brief(self) -> str:
        """The finding without the cells it is about: what may be written where evaluators
        read (a warning's cells point at what the published totals determine)."""
        return f"{self.table}: {self.kind}: {self.message}"


def _examples(items: list[str], limit: int = 3) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; ... ({len(items)} in all)" if len(items) > limit else "")


def _cells(items: list[str]) -> dict:
    """A finding's cells: the first few in ``examples``, every one in ``cells``."""
    return {"examples": _examples(items), "cells": tuple(items)}


def check_table(con, rule: TableRule) -> list[Violation]:
    table = rule.table
    db = con if isinstance(con, _Database) else _Database(con)
    columns = _columns(db, rule)
    if columns is None:
        return [Violation(table, "missing_table", "configured for disclosure control but not in the warehouse "
                                                  "(renamed? update config/disclosure.yml)")]
    missing = [c for c in rule.key_columns + rule.suppressed_columns + rule.keep_columns if c not in columns]
    if missing:
        return [Violation(table, "missing_column", f"configured columns {missing} are not in the table")]
    if rule.flag_column not in columns:
        return [Violation(table, "not_protected", f"no {rule.flag_column} column: protect() did not run on it")]
    out = []
    known = set(rule.key_columns + rule.suppressed_columns + rule.keep_columns + (rule.flag_column,))
    loose = [c for c, typ in columns.items() if c not in known and typ.upper().startswith(NUMERIC_TYPES)]
    if loose:
        out.append(Violation(table, "unclassified_column",
                             f"numeric columns {loose} are neither counts, values nor keep_columns: they could "
                             "carry a suppressed figure (classify them in config/disclosure.yml)"))
    cells = _read_cells(db, rule, columns)
    seen: dict[tuple, int] = {}
    duplicates = []
    for i, key in enumerate(cells.keys):
        if key in seen:
            duplicates.append(cells.describe(i))
        seen[key] = i
    if duplicates:
        out.append(Violation(table, "duplicate_cell", f"several rows share the key columns {list(rule.key_columns)}",
                             **_cells(duplicates)))
    small = [cells.describe(i) + f" ({', '.join(f'{c}={v}' for c, v in zip(rule.count_columns, cells.counts[i]) if rule.is_small(v))})"
             for i in range(len(cells)) if not cells.flagged[i] and any(rule.is_small(v) for v in cells.counts[i])]
    if small:
        out.append(Violation(table, "small_cell", f"{len(small)} published cells count fewer than {rule.k} people",
                             **_cells(small)))
    flagged_rowids = [cells.rowids[i] for i in range(len(cells)) if cells.flagged[i]]
    if flagged_rowids:
        condition = " or ".join(f"{_q(c)} is not null" for c in rule.suppressed_columns)
        leaked = db.rows(
            f"select count(*) from {_q(rule.schema)}.{_q(rule.name)} where coalesce({_q(rule.flag_column)}, false) "
            f"and ({condition})")[0][0]
        if leaked:
            out.append(Violation(table, "suppressed_value_published",
                                 f"{leaked} suppressed cells still publish a count or value"))
    suppressed = {i for i in range(len(cells)) if cells.flagged[i]}
    unlinked = [cells.describe(g[0]) for g in cells.link_groups
                if any(i in suppressed for i in g) and not all(i in suppressed for i in g)]
    if unlinked:
        out.append(Violation(table, "linked_pattern", f"cells suppressed in some of the strata linked across "
                             f"{list(rule.link_across)} but published in others", **_cells(unlinked)))
    exposed = recoverable(cells, suppressed)
    unfixable = determined_by_totals(cells, touching=exposed) if exposed else set()
    exposed = sorted(exposed - unfixable)
    small_unfixable = [i for i in sorted(unfixable) if any(rule.is_small(v) for v in cells.counts[i]) or cells.flagged[i]]
    if small_unfixable:
        out.append(Violation(table, "determined_by_totals", f"{len(small_unfixable)} suppressed cells are determined "
                             "by the line totals alone (sparse table): the tables publishing those totals must "
                             "protect them", blocking=False,
                             **_cells([cells.describe(i) for i in small_unfixable])))
    if exposed:
        out.append(Violation(table, "recoverable", f"{len(exposed)} suppressed cells can be recomputed from the "
                             "published cells and totals", **_cells([cells.describe(i) for i in exposed])))
    return out


def review(con, settings=None, config: Any = None) -> list[Violation]:
    """Every finding: blocking violations, then warnings (``blocking=False``)."""
    config = load_config(config, settings)
    db = _Database(con)
    out = []
    for rule in config.tables:
        out.extend(check_table(db, rule))
    out += exempt_with_counts(db, config)
    schemas = config_for(settings).publish_schemas if settings is not None else DEFAULT_PUBLISH_SCHEMAS
    out += [Violation(t, "unconfigured_table", "published with breakdown columns but neither configured in "
                      "config/disclosure.yml nor exempt", blocking=False)
            for t in unconfigured_tables(con, config=config, schemas=schemas)]
    return sorted(out, key=lambda v: not v.blocking)


def check(con, settings=None, config: Any = None) -> list[Violation]:
    """Violations that must block publishing (empty: every configured table is protected).

    Warnings that do not block (see ``review``) are left out, and not computed when they
    need a query of their own (tables nobody configured).
    """
    config = load_config(config, settings)
    db = _Database(con)
    return [v for rule in config.tables for v in check_table(db, rule) if v.blocking] + exempt_with_counts(db, config)


def published_cells(con, settings=None, config: Any = None) -> list[tuple[str, int, int]]:
    """(table, cells, cells whose figures are published) of every configured table of
    ``con`` that is protected: how much of each table evaluators read."""
    config = load_config(config, settings)
    db = _Database(con)
    out = []
    for rule in config.tables:
        columns = _columns(db, rule)
        if columns is None or rule.flag_column not in columns:
            continue
        cells, hidden = db.rows(f"select count(*), count(*) filter (where coalesce({_q(rule.flag_column)}, false)) "
                                f"from {_q(rule.schema)}.{_q(rule.name)}")[0]
        out.append((rule.table, int(cells), int(cells) - int(hidden)))
    return out


def exempt_with_counts(con, config: Any) -> list[Violation]:
    """Exempt tables that publish a column a configured table counts people in (blocking):
    an exemption says a table holds no counts of people, and its rows, unsuppressed, could
    give back the cells the configured table hides (the monthly residents of each
    establishment add up to the occupancy mart's cells)."""
    counted: dict[str, list[str]] = {}
    for rule in config.tables:
        for column in rule.count_columns:
            counted.setdefault(column, []).append(rule.table)
    if not config.exempt_tables or not counted:
        return []
    db = con if isinstance(con, _Database) else _Database(con)
    rows = db.rows("select table_schema || '.' || table_name, column_name from information_schema.columns "
                   "where table_catalog = current_database()")
    found: dict[str, list[str]] = {}
    for table, column in rows:
        if table in config.exempt_tables and column in counted:
            found.setdefault(table, []).append(column)
    return [Violation(table, "exempt_with_counts",
                      f"exempt from disclosure control but publishes {sorted(columns)}, counted as people in "
                      f"{sorted({t for c in columns for t in counted[c]})}: its rows could give back the cells "
                      "suppressed there (build it into an internal schema, or configure it)")
            for table, columns in sorted(found.items())]


def unconfigured_tables(con, settings=None, config: Any = None,
                        schemas: tuple[str, ...] = DEFAULT_PUBLISH_SCHEMAS) -> list[str]:
    """Published tables with breakdown columns that are neither configured nor exempt (a warning)."""
    config = load_config(config, settings)
    listed = {r.table for r in config.tables} | set(config.exempt_tables)
    rows = _Database(con).rows(
        "select table_schema || '.' || table_name, column_name from information_schema.columns "
        f"where table_catalog = current_database() and table_schema in ({', '.join('?' for _ in schemas)})",
        list(schemas))
    columns: dict[str, set[str]] = {}
    for table, column in rows:
        columns.setdefault(table, set()).add(column)
    return sorted(t for t, cols in columns.items() if t not in listed and cols & set(config.dimension_hints))
