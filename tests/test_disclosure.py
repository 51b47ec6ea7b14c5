"""Disclosure control: small cells suppressed, with complements so no subtraction reveals them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml

from quality import disclosure
from quality.disclosure import DisclosureConfigError, check, load_config, protect

REGIONS = ["01", "02", "03"]
SEXES = ["F", "M"]


def coverage_rows(counts: dict[tuple[str, str], int]) -> list[tuple]:
    """Cells by region x sex plus the 'all' totals of every row, column and the grand total."""
    rows = [(r, s, n, n * 350.0) for (r, s), n in counts.items()]
    for r in REGIONS:
        n = sum(counts[r, s] for s in SEXES)
        rows.append((r, "all", n, n * 350.0))
    for s in SEXES:
        n = sum(counts[r, s] for r in REGIONS)
        rows.append(("all", s, n, n * 350.0))
    n = sum(counts.values())
    rows.append(("all", "all", n, n * 350.0))
    return rows


COUNTS = {("01", "F"): 3, ("01", "M"): 52, ("02", "F"): 41, ("02", "M"): 47, ("03", "F"): 60, ("03", "M"): 75}

CONFIG = {
    "k": 10,
    "tables": [{
        "table": "marts.mart_coverage",
        "dimensions": ["region_code", "sex"],
        "count_columns": ["beneficiaries"],
        "value_columns": ["transfers_mad"],
        # the totals are the table's own 'all' rows: nothing assumed from elsewhere
        "assume_external_totals": False,
    }],
}


def make_warehouse(path, rows, other_rows=((("01", "F", 2),))):
    con = duckdb.connect(str(path))
    con.execute("create schema marts")
    con.execute("create table marts.mart_coverage (region_code varchar, sex varchar, beneficiaries bigint not null, "
                "transfers_mad decimal(14, 2))")
    con.executemany("insert into marts.mart_coverage values (?, ?, ?, ?)", rows)
    con.execute("create table marts.mart_other (region_code varchar, sex varchar, people bigint)")
    con.executemany("insert into marts.mart_other values (?, ?, ?)", list(other_rows))
    return con


def published(con, table="marts.mart_coverage") -> dict[tuple[str, str], int | None]:
    return {(r, s): n for r, s, n in con.execute(f"select region_code, sex, beneficiaries from {table}").fetchall()}


def subtraction_attack(cells: dict[tuple[str, str], int | None]) -> dict[tuple[str, str], int]:
    """What an evaluator recovers from the published table by row and column differences."""
    known = {key: n for key, n in cells.items() if n is not None}
    recovered = {}
    changed = True
    while changed:
        changed = False
        lines = [[(r, s) for s in SEXES + ["all"]] for r in REGIONS + ["all"]]
        lines += [[(r, s) for r in REGIONS + ["all"]] for s in SEXES + ["all"]]
        for line in lines:
            unknown = [key for key in line if key not in known]
            if len(unknown) == 1:
                *members, total = line
                key = unknown[0]
                if key == total:
                    value = sum(known[m] for m in members)
                else:
                    value = known[total] - sum(known[m] for m in members if m != key)
                known[key] = recovered[key] = value
                changed = True
    return recovered


def test_subtraction_attack_recovers_a_cell_hidden_without_complements(tmp_path):
    """The hand-built table really is vulnerable: hiding only the small cell gives it away."""
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    cells = published(con)
    cells["01", "F"] = None  # primary suppression only
    assert subtraction_attack(cells) == {("01", "F"): 3}


def test_protect_suppresses_small_cells_and_complements_against_subtraction(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    report = protect(con, config=CONFIG)
    assert [(r.table, r.primary) for r in report] == [("marts.mart_coverage", 1)]
    assert report[0].complementary >= 3  # a lone hidden cell needs a rectangle of hidden cells
    cells = published(con)
    assert cells["01", "F"] is None
    assert subtraction_attack(cells) == {}
    hidden = sum(1 for n in cells.values() if n is None)
    assert disclosure.published_cells(con, config=CONFIG) == [("marts.mart_coverage", 12, 12 - hidden)]
    rows = con.execute("select region_code, sex, beneficiaries, transfers_mad, is_suppressed "
                       "from marts.mart_coverage").fetchall()
    for region, sex, n, amount, flag in rows:
        assert flag == (n is None)
        if flag:
            assert amount is None  # values are suppressed together with the count
        else:
            assert n >= 10 and amount == n * 350
    assert check(con, config=CONFIG) == []


def test_protect_prefers_small_detail_cells_over_totals(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    protect(con, config=CONFIG)
    hidden = {key for key, n in published(con).items() if n is None}
    # the smallest complement of 01-F in its row is 01-M, in its column 02-F (41 < 60)
    assert {("01", "F"), ("01", "M"), ("02", "F"), ("02", "M")} <= hidden
    assert ("all", "all") not in hidden


def test_check_finds_a_cell_recoverable_by_subtraction(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    con.execute("alter table marts.mart_coverage add column is_suppressed boolean default false")
    con.execute("alter table marts.mart_coverage alter column beneficiaries drop not null")
    con.execute("update marts.mart_coverage set beneficiaries = null, transfers_mad = null, is_suppressed = true "
                "where region_code = '01' and sex = 'F'")
    violations = check(con, config=CONFIG)
    assert [v.kind for v in violations] == ["recoverable"]
    assert "region_code='01', sex='F'" in violations[0].examples


def test_a_finding_lists_its_first_cells_and_keeps_every_one(tmp_path):
    """Small cells published as they are: the finding's text shows three, counts the rest,
    and keeps every cell (what `jisr disclosure --all` lists, one per line)."""
    counts = {key: (2 if key[1] == "F" else 50) for key in COUNTS}
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(counts))
    con.execute("alter table marts.mart_coverage add column is_suppressed boolean default false")
    small = next(v for v in check(con, config=CONFIG) if v.kind == "small_cell")
    assert small.message == "4 published cells count fewer than 10 people"
    assert small.examples.endswith("; ... (4 in all)") and small.examples.count("region_code=") == 3
    assert sorted(small.cells) == ["region_code='01', sex='F' (beneficiaries=2)",
                                   "region_code='02', sex='F' (beneficiaries=2)",
                                   "region_code='03', sex='F' (beneficiaries=2)",
                                   "region_code='all', sex='F' (beneficiaries=6)"]


def test_check_after_protect_in_the_same_process_still_sees_a_changed_pattern(tmp_path):
    """The check reuses the systems protect solved in this process, never a stale verdict."""
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    protect(con, config=CONFIG)
    assert check(con, config=CONFIG) == []
    # publish one complement again: the small cell 01-F is recoverable from its row
    con.execute("update marts.mart_coverage set beneficiaries = 52, transfers_mad = 52 * 350.0, "
                "is_suppressed = false where region_code = '01' and sex = 'M'")
    violations = check(con, config=CONFIG)
    assert [v.kind for v in violations] == ["recoverable"]
    assert "region_code='01', sex='F'" in violations[0].examples


def test_solved_systems_are_reused_whatever_the_cell_numbers(monkeypatch):
    solved = []
    solve = disclosure._solve
    monkeypatch.setattr(disclosure, "_solve", lambda *a: solved.append(a) or solve(*a))
    monkeypatch.setattr(disclosure, "_SOLVED", {})

    def system(a, b, c, d):  # a + b + c, a + b + d, a + b + c + d: c and d fixed, a and b not
        return [{a: 1.0, b: 1.0, c: 1.0}, {a: 1.0, b: 1.0, d: 1.0}, {a: 1.0, b: 1.0, c: 1.0, d: 1.0}]

    assert disclosure._determined([10, 11, 12, 13], system(10, 11, 12, 13)) == {12, 13}
    assert disclosure._determined([20, 21, 22, 23], system(20, 21, 22, 23)) == {22, 23}
    assert len(solved) == 1  # the same system under other cell numbers
    assert disclosure._determined([10, 11, 12, 13], system(12, 13, 10, 11)) == {10, 11}
    assert len(solved) == 2


def test_an_equation_given_twice_is_factorised_once_with_the_same_unknowns_found(monkeypatch):
    solved = []
    solve = disclosure._solve
    monkeypatch.setattr(disclosure, "_solve", lambda *a: solved.append(a) or solve(*a))
    monkeypatch.setattr(disclosure, "_SOLVED", {})
    # a + b + c, a + b + d, a + b + c + d (c and d fixed), e + f + g: the two files' shared lines come twice
    equations = [{1: 1.0, 2: 1.0, 3: 1.0}, {1: 1.0, 2: 1.0, 4: 1.0}, {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0},
                 {5: 1.0, 6: 1.0, 7: 1.0}]
    twice = equations + [dict(reversed(list(e.items()))) for e in equations]
    assert disclosure._determined(list(range(1, 8)), twice) == {3, 4}
    assert solved[0][1] == 4  # equations in the factorised system


def _solved_directly(members, equations):
    """What the factorisation alone finds, without ``_reduce``."""
    import numpy as np

    index = {cell: n for n, cell in enumerate(members)}
    triplets = [(index[cell], e, c) for e, equation in enumerate(equations) for cell, c in equation.items()]
    rows, columns, values = (np.array(part) for part in zip(*triplets))
    return {members[n] for n in disclosure._solve(len(members), len(equations), rows, columns, values.astype(float))}


def test_equations_of_two_unknowns_solved_out_find_what_the_factorisation_alone_finds(monkeypatch):
    """Lines of tables (members +1, their total -1) with two, three or more hidden cells,
    chained and crossed so that ties meet again with either sign."""
    import random

    monkeypatch.setattr(disclosure, "_SOLVED", {})
    rng = random.Random(5)
    reduced_away = 0
    for _ in range(300):
        unknowns = rng.randint(2, 40)
        members = list(range(100, 100 + unknowns))
        equations = []
        for _ in range(rng.randint(1, 50)):
            cells = rng.sample(members, rng.choice([1, 2, 2, 2, 3, 3, 4, 5]) if unknowns >= 5 else rng.randint(1, unknowns))
            equation = {cell: 1.0 for cell in cells}
            if len(cells) > 1 and rng.random() < 0.4:
                equation[cells[0]] = -1.0  # the line's total
            equations.append(equation)
        expected = _solved_directly(members, equations)
        assert disclosure._determined(members, equations) == expected, (members, equations)
        tied, zero, left = disclosure._reduce(equations)
        reduced_away += len(tied) + len(zero)
    assert reduced_away > 1000  # the reduction did the work, not only the factorisation


def test_large_systems_solved_on_threads_give_what_solving_them_one_by_one_gives(monkeypatch):
    import random
    import threading

    rng = random.Random(11)
    systems, first = [], 0
    for _ in range(12):  # strata of interlocked lines, cells numbered as in a table
        unknowns, count = rng.randint(4, 30), rng.randint(3, 40)
        members = list(range(first, first + unknowns))
        first += unknowns
        # three or four unknowns an equation: left to the factorisation (``_reduce`` solves out two)
        equations = [{cell: rng.choice([1.0, -1.0]) for cell in rng.sample(members, rng.randint(3, 4))}
                     for _ in range(count)]
        systems.append((members, equations))
    monkeypatch.setattr(disclosure, "_SOLVED", {})
    one_by_one = set().union(*(disclosure._determined(m, e) for m, e in systems))
    assert one_by_one and one_by_one != {c for m, _ in systems for c in m}  # some fixed, some not

    threads = set()
    solve = disclosure._solve
    monkeypatch.setattr(disclosure, "_solve", lambda *a: threads.add(threading.current_thread().name) or solve(*a))
    monkeypatch.setattr(disclosure, "_SOLVED", {})
    monkeypatch.setattr(disclosure, "THREADED_UNKNOWNS", 10)
    monkeypatch.setattr(disclosure.os, "cpu_count", lambda: 2)
    assert disclosure._determined_in(systems) == one_by_one
    assert any(name.startswith("jisr-disclosure") for name in threads)  # the large ones went to threads
    assert threading.current_thread().name in threads  # the small ones stayed here


def test_the_first_solve_of_a_process_runs_on_one_blas_thread(tmp_path):
    """scipy (and its BLAS) loads at the first solve: the BLAS threads must be set after that,
    or the first refresh's systems run on BLAS's default threads, on each solving thread."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = """
import json, sys
from quality import disclosure
from jisr.blas import _openblas_threads
seen = []
solve = disclosure._solve
def recording(*a):
    seen.append(sorted({get_count for _, get_count in _openblas_threads()}))
    return solve(*a)
disclosure._solve = recording
assert "scipy.linalg" not in sys.modules
cells = list(range(4))
disclosure.recoverable(None, set(cells), components=[(cells, [{0: 1.0, 1: 1.0, 2: 1.0}, {1: 1.0, 2: 1.0, 3: 1.0}])])
print(json.dumps(seen))
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [[1]]


def test_a_system_that_dominates_its_round_gets_the_blas_threads_back(tmp_path):
    """The largest system of a round, when it costs more than the others together, is solved
    last with BLAS's own threads (one thread again after it); the others on one thread. The
    same inside nested one-thread blocks (the check of a candidate); the same cells found."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = """
import json
from quality import disclosure
from jisr.blas import _openblas_threads
seen = []
solve = disclosure._solve
def recording(unknowns, *a):
    seen.append((unknowns, sorted({count for _, count in _openblas_threads()})))
    return solve(unknowns, *a)
disclosure._solve = recording
disclosure.THREADED_UNKNOWNS = 3
disclosure.DOMINANT_SYSTEM_UNKNOWNS = 6
big = list(range(8))
small = [10, 11, 12]
# equations of three or more unknowns: left whole to the factorisation (``_reduce``)
systems = [(small, [{10: 1.0, 11: 1.0, 12: 1.0}]),
           (big, [{0: 1.0, 1: 1.0, 2: 1.0}, {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}, {4: 1.0, 5: 1.0, 6: 1.0},
                  {4: 1.0, 5: 1.0, 7: 1.0}, {5: 1.0, 6: 1.0, 7: 1.0}, {4: 1.0, 6: 1.0, 7: 1.0}])]
with disclosure._one_blas_thread():
    found = disclosure.recoverable(None, set(big + small), components=systems)
    after = sorted({count for _, count in _openblas_threads()})
print(json.dumps({"seen": seen, "found": sorted(found), "after": after,
                  "outside": sorted({count for _, count in _openblas_threads()})}))
"""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["seen"] == [[3, [1]], [8, [2]]]  # the small one first, on one thread
    assert out["found"] == [3, 4, 5, 6, 7]
    assert out["after"] == [1] and out["outside"] == [2]


def _exact_rank(rows: list[list[int]]) -> int:
    """Rank over the rationals, by exact elimination."""
    from fractions import Fraction

    m = [[Fraction(v) for v in row] for row in rows]
    rank = 0
    for col in range(len(m[0]) if m else 0):
        pivot = next((i for i in range(rank, len(m)) if m[i][col] != 0), None)
        if pivot is None:
            continue
        m[rank], m[pivot] = m[pivot], m[rank]
        for i in range(len(m)):
            if i != rank and m[i][col] != 0:
                f = m[i][col] / m[rank][col]
                m[i] = [a - f * b for a, b in zip(m[i], m[rank])]
        rank += 1
    return rank


def test_the_groups_of_the_cells_hidden_in_a_round_are_those_of_the_whole_table():
    """A round of the suppression examines only the groups of linked suppressed cells that
    hold a cell it just hid: the same groups, with the same equations and in the same order,
    as the groups of the whole table that hold one of those cells."""
    import itertools
    import random

    from quality.disclosure import TableRule, _components, _components_touching, build_cells

    rng = random.Random(11)
    for trial in range(60):
        rule = TableRule("marts.t", dimensions=("a", "b", "c"), count_columns=("n",), by=("p",),
                         assume_external_totals=trial % 2 == 0)
        levels = [["all"] + [f"{d}{i}" for i in range(rng.randint(1, 4))] for d in "abc"]
        rows = [(p, *key, rng.randint(0, 40)) for p in ("x", "y") for key in itertools.product(*levels)
                if rng.random() < 0.85]
        cells = build_cells(rule, rows)
        lines_of: dict[int, list[int]] = {}
        for n, (members, total) in enumerate(cells.lines):
            for i in members + ([total] if total is not None else []):
                lines_of.setdefault(i, []).append(n)
        suppressed = {i for i in range(len(cells)) if rng.random() < rng.choice([0.1, 0.4, 0.8])}
        touching = {i for i in range(len(cells)) if rng.random() < rng.choice([0.02, 0.1, 0.5])} | {0}
        expected = [group for group in _components(cells, suppressed) if not touching.isdisjoint(group[0])]
        assert _components_touching(cells, suppressed, touching, lines_of) == expected, trial


def test_determined_unknowns_are_those_exact_elimination_finds():
    """An unknown is determined when adding e_j to the equations does not raise their rank:
    the factorisation agrees with exact rational arithmetic on systems of every shape."""
    import random

    import numpy as np

    rng = random.Random(7)
    for trial in range(300):
        unknowns, count = rng.randint(1, 12), rng.randint(1, 14)
        density = rng.choice([0.15, 0.3, 0.6])
        system = [[rng.choice([1, -1]) if rng.random() < density else 0 for _ in range(unknowns)]
                  for _ in range(count)]
        if trial % 3 == 0 and count > 1:  # rank-deficient: a row repeats a combination of others
            system[-1] = [a - b for a, b in zip(system[0], system[1 % count])]
        cells = [(j, e, v) for e, row in enumerate(system) for j, v in enumerate(row) if v]
        if not cells:
            continue
        rows, columns, values = (np.array(x) for x in zip(*cells))
        rank = _exact_rank(system)
        expected = {j for j in range(unknowns)
                    if _exact_rank(system + [[int(k == j) for k in range(unknowns)]]) == rank}
        assert disclosure._solve(unknowns, count, rows.astype(np.int64), columns.astype(np.int64),
                                 values.astype(float)) == expected, system


def test_check_finds_small_published_cells_and_leaked_values(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    protect(con, config=CONFIG)
    assert check(con, config=CONFIG) == []
    con.execute("update marts.mart_coverage set is_suppressed = false, beneficiaries = 3 "
                "where region_code = '01' and sex = 'F'")
    con.execute("update marts.mart_coverage set transfers_mad = 1 where region_code = '02' and sex = 'F'")
    kinds = {v.kind for v in check(con, config=CONFIG)}
    assert {"small_cell", "suppressed_value_published"} <= kinds


def interlocked_rows() -> tuple[list[tuple], set[tuple[str, str]]]:
    """A 4 x 4 table where every row and column has 0 or >= 2 hidden cells, yet the cell
    (r1, c2) is the bridge between two hidden rectangles: rows r0 + r1 minus columns c0 + c1."""
    rows_, cols = ["r0", "r1", "r2", "r3"], ["c0", "c1", "c2", "c3"]
    values = {(r, c): 20 + 3 * i + j for i, r in enumerate(rows_) for j, c in enumerate(cols)}
    hidden = {("r0", "c0"), ("r0", "c1"), ("r1", "c0"), ("r1", "c1"), ("r1", "c2"),
              ("r2", "c2"), ("r2", "c3"), ("r3", "c2"), ("r3", "c3")}
    return [(r, c, values[r, c]) for (r, c) in values], hidden


def test_check_finds_a_cell_recoverable_through_interlocked_lines(tmp_path):
    rows, hidden = interlocked_rows()
    con = duckdb.connect(str(tmp_path / "serving.duckdb"))
    con.execute("create schema marts")
    con.execute("create table marts.grid (row_code varchar, col_code varchar, people bigint, is_suppressed boolean)")
    con.executemany("insert into marts.grid values (?, ?, ?, ?)",
                    [(r, c, None if (r, c) in hidden else n, (r, c) in hidden) for r, c, n in rows])
    config = {"tables": [{"table": "marts.grid", "dimensions": ["row_code", "col_code"], "count_column": "people"}]}
    # the attack: row totals and column totals are known (published elsewhere)
    truth = {(r, c): n for r, c, n in rows}
    row_total = {r: sum(n for (rr, _), n in truth.items() if rr == r) for r in ("r0", "r1")}
    col_total = {c: sum(n for (_, cc), n in truth.items() if cc == c) for c in ("c0", "c1")}
    published_part = sum(n for (r, c), n in truth.items() if (r, c) not in hidden and r in ("r0", "r1")) \
        - sum(n for (r, c), n in truth.items() if (r, c) not in hidden and c in ("c0", "c1"))
    assert sum(row_total.values()) - sum(col_total.values()) - published_part == truth["r1", "c2"]
    violations = check(con, config=config)
    assert [v.kind for v in violations] == ["recoverable"]
    assert "row_code='r1', col_code='c2'" in violations[0].examples
    protect(con, config=config)
    assert check(con, config=config) == []


def test_protect_k_is_configurable(tmp_path):
    loose = {**CONFIG, "k": 3}
    con = make_warehouse(tmp_path / "a.duckdb", coverage_rows(COUNTS))
    assert protect(con, config=loose)[0].primary == 0
    assert None not in published(con).values()
    strict = {**CONFIG, "k": 45}
    con = make_warehouse(tmp_path / "b.duckdb", coverage_rows(COUNTS))
    assert protect(con, config=strict)[0].primary == 2  # 01-F (3) and 02-F (41)
    cells = published(con)
    assert all(n is None or n >= 45 for n in cells.values())
    assert subtraction_attack(cells) == {}
    per_table = {"k": 10, "tables": [{**CONFIG["tables"][0], "k": 45}]}
    con = make_warehouse(tmp_path / "c.duckdb", coverage_rows(COUNTS))
    assert protect(con, config=per_table)[0].primary == 2


def test_protect_leaves_tables_not_in_config_untouched(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS), other_rows=[("01", "F", 2), ("01", "M", 90)])
    before = con.execute("select * from marts.mart_other order by all").fetchall()
    columns = con.execute("select column_name from information_schema.columns where table_name = 'mart_other'").fetchall()
    protect(con, config=CONFIG)
    assert con.execute("select * from marts.mart_other order by all").fetchall() == before
    assert con.execute("select column_name from information_schema.columns where table_name = 'mart_other'").fetchall() == columns


def test_protect_is_idempotent(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    protect(con, config=CONFIG)
    first = con.execute("select * from marts.mart_coverage order by all").fetchall()
    protect(con, config=CONFIG)
    assert con.execute("select * from marts.mart_coverage order by all").fetchall() == first


def test_protect_zero_cells_are_published_unless_configured(tmp_path):
    counts = {**COUNTS, ("01", "F"): 0}
    con = make_warehouse(tmp_path / "a.duckdb", coverage_rows(counts))
    assert protect(con, config=CONFIG)[0].primary == 0
    config = {**CONFIG, "tables": [{**CONFIG["tables"][0], "suppress_zeros": True}]}
    con = make_warehouse(tmp_path / "b.duckdb", coverage_rows(counts))
    assert protect(con, config=config)[0].primary == 1
    assert published(con)["01", "F"] is None


def test_protect_without_total_rows_assumes_totals_are_known_elsewhere(tmp_path):
    """A table without 'all' rows: its row and column sums may be published by another table."""
    rows = [(r, s, n, n * 350.0) for (r, s), n in COUNTS.items()]
    con = make_warehouse(tmp_path / "serving.duckdb", rows)
    config = {"tables": [{**CONFIG["tables"][0], "assume_external_totals": True}]}
    protect(con, config=config)
    hidden = {key for key, n in published(con).items() if n is None}
    assert ("01", "F") in hidden
    for region in REGIONS:
        assert len([s for s in SEXES if (region, s) in hidden]) != 1
    for sex in SEXES:
        assert len([r for r in REGIONS if (r, sex) in hidden]) != 1
    assert check(con, config=config) == []


def test_protect_shares_the_pattern_across_linked_strata(tmp_path):
    """A registry count repeated for every programme: a cell hidden for one programme is hidden
    for all, or the copy published for another programme would give it away."""
    con = duckdb.connect(str(tmp_path / "serving.duckdb"))
    con.execute("create schema marts")
    con.execute("create table marts.coverage (programme_code varchar, region_code varchar, sex varchar, "
                "registered bigint, reached bigint)")
    registered = {("01", "F"): 30, ("01", "M"): 40, ("02", "F"): 50, ("02", "M"): 60}
    reached = {"A": {("01", "F"): 3, ("01", "M"): 20, ("02", "F"): 25, ("02", "M"): 30},
               "B": {("01", "F"): 15, ("01", "M"): 20, ("02", "F"): 25, ("02", "M"): 30}}
    con.executemany("insert into marts.coverage values (?, ?, ?, ?, ?)",
                    [(p, r, s, registered[r, s], reached[p][r, s]) for p in reached for (r, s) in registered])
    config = {"tables": [{"table": "marts.coverage", "by": ["programme_code"], "dimensions": ["region_code", "sex"],
                          "count_columns": ["reached", "registered"], "link_across": ["programme_code"]}]}
    protect(con, config=config)
    pattern = con.execute("select programme_code, region_code, sex from marts.coverage where is_suppressed "
                          "order by 2, 3, 1").fetchall()
    hidden_a = {(r, s) for p, r, s in pattern if p == "A"}
    hidden_b = {(r, s) for p, r, s in pattern if p == "B"}
    assert ("01", "F") in hidden_a and hidden_a == hidden_b
    assert check(con, config=config) == []
    con.execute("update marts.coverage set is_suppressed = false, registered = 30, reached = 15 "
                "where programme_code = 'B' and region_code = '01' and sex = 'F'")
    assert "linked_pattern" in {v.kind for v in check(con, config=config)}


def test_check_reports_missing_tables_columns_and_unclassified_numbers(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    config = {"tables": [CONFIG["tables"][0],
                         {"table": "marts.mart_gone", "dimensions": ["sex"], "count_column": "n"}]}
    protect(con, config=config)
    assert [v.kind for v in check(con, config=config)] == ["missing_table"]
    con.execute("alter table marts.mart_coverage add column mean_age double")
    assert "unclassified_column" in {v.kind for v in check(con, config=CONFIG)}
    kept = {"tables": [{**CONFIG["tables"][0], "keep_columns": ["mean_age"]}]}
    assert check(con, config=kept) == []
    con2 = make_warehouse(tmp_path / "fresh.duckdb", coverage_rows(COUNTS))
    assert [v.kind for v in check(con2, config=CONFIG)] == ["not_protected"]


def test_load_config_rejects_invalid_entries(tmp_path):
    with pytest.raises(DisclosureConfigError, match="unknown keys"):
        load_config({"tables": [{"table": "marts.t", "dimensions": ["sex"], "count_column": "n", "kk": 1}]})
    with pytest.raises(DisclosureConfigError, match="count_column"):
        load_config({"tables": [{"table": "marts.t", "dimensions": ["sex"]}]})
    with pytest.raises(DisclosureConfigError, match="positive integer"):
        load_config({"k": 0, "tables": []})
    with pytest.raises(DisclosureConfigError, match="link_across"):
        load_config({"tables": [{"table": "marts.t", "dimensions": ["sex"], "count_column": "n", "link_across": ["x"]}]})
    path = tmp_path / "disclosure.yml"
    path.write_text(yaml.safe_dump({"k": 7, "tables": [{"table": "marts.t", "dimensions": ["sex"], "count_column": "n"}]}))
    config = load_config(path)
    assert config.k == 7 and config.rule("marts.t").k == 7
    assert config.check_against == "previous" and load_config({"check_against": "kept"}).check_against == "kept"
    with pytest.raises(DisclosureConfigError, match="check_against must be one of previous, kept, not 'all'"):
        load_config({"check_against": "all"})


def test_project_disclosure_config_is_valid(settings):
    config = load_config(settings=settings)
    assert config.k == 10
    assert all(rule.table.startswith(("marts.", "impact.")) for rule in config.tables)
    assert not {rule.table for rule in config.tables} & set(config.exempt_tables)


def test_unconfigured_tables_lists_breakdowns_nobody_classified(tmp_path):
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    assert disclosure.unconfigured_tables(con, config=CONFIG) == ["marts.mart_other"]
    assert disclosure.unconfigured_tables(con, config={**CONFIG, "exempt_tables": ["marts.mart_other"]}) == []


def test_an_exempt_table_publishing_counts_of_people_blocks(tmp_path):
    """An exemption says a table counts no people: one that publishes a column a configured
    table counts people in (per-establishment residents beside the occupancy mart) could
    give its suppressed cells back, and blocks publishing."""
    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    protect(con, config=CONFIG)
    assert disclosure.check(con, config=CONFIG) == []
    con.execute("create table marts.fct_detail (region_code varchar, sex varchar, beneficiaries bigint)")
    exempt = {**CONFIG, "exempt_tables": ["marts.fct_detail", "marts.mart_other"]}
    found = disclosure.check(con, config=exempt)
    assert [(v.table, v.kind, v.blocking) for v in found] == [("marts.fct_detail", "exempt_with_counts", True)]
    assert "['beneficiaries']" in found[0].message and "marts.mart_coverage" in found[0].message
    assert [v.kind for v in disclosure.review(con, config=exempt) if v.table == "marts.fct_detail"] == [
        "exempt_with_counts"]


def test_review_looks_for_unconfigured_tables_in_the_configured_published_schemas(tmp_path):
    """A schema added to ``publish.schemas`` (config/quality.yml) is reviewed like marts."""
    from types import SimpleNamespace

    con = make_warehouse(tmp_path / "serving.duckdb", coverage_rows(COUNTS))
    con.execute("create schema extra")
    con.execute("create table extra.mart_more (region_code varchar, sex varchar, people bigint)")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "quality.yml").write_text(yaml.safe_dump({"publish": {"schemas": ["marts", "extra"]}}))
    found = {v.table for v in disclosure.review(con, SimpleNamespace(config_dir=config_dir), config=CONFIG)
             if v.kind == "unconfigured_table"}
    assert found == {"marts.mart_other", "extra.mart_more"}
    assert {v.table for v in disclosure.review(con, config=CONFIG) if v.kind == "unconfigured_table"} == {
        "marts.mart_other"}


def test_check_warns_without_blocking_when_only_outside_totals_determine_a_cell(tmp_path):
    """Region 01 has men only: its cell equals (men) - (region 02) - (region 03) + (women),
    whatever this table hides. Those totals are protected where they are published; here it
    is a warning, not a blocking failure that no suppression here could fix."""
    con = duckdb.connect(str(tmp_path / "serving.duckdb"))
    con.execute("create schema marts")
    con.execute("create table marts.sparse (region_code varchar, sex varchar, people bigint)")
    con.executemany("insert into marts.sparse values (?, ?, ?)",
                    [("01", "M", 3), ("02", "F", 40), ("02", "M", 50), ("03", "F", 60), ("03", "M", 70)])
    config = {"tables": [{"table": "marts.sparse", "dimensions": ["region_code", "sex"], "count_column": "people"}]}
    protect(con, config=config)
    hidden = {r for (r,) in con.execute("select region_code || sex from marts.sparse where is_suppressed").fetchall()}
    assert "01M" in hidden
    assert check(con, config=config) == []
    warnings = disclosure.review(con, config=config)
    assert [(v.kind, v.blocking) for v in warnings] == [("determined_by_totals", False)]
    assert "region_code='01', sex='M'" in warnings[0].examples and "region_code" in str(warnings[0])
    assert "region_code" not in warnings[0].brief  # what may be written where evaluators read


def test_programme_costs_of_a_programme_reaching_fewer_than_k_people_are_suppressed(tmp_path):
    """A programme total is a count of people too: one that reached 8 has its counts and
    costs suppressed in the published cost mart (the project's own configuration)."""
    project = yaml.safe_load((Path(__file__).parents[1] / "config" / "disclosure.yml").read_text(encoding="utf-8"))
    table = next(t for t in project["tables"] if t["table"] == "marts.mart_programme_costs")
    con = duckdb.connect(str(tmp_path / "serving.duckdb"))
    con.execute("create schema marts")
    con.execute("create table marts.mart_programme_costs (programme_code varchar, programme_name varchar, "
                "action_line varchar, budget_mad decimal(18, 2), transfers_paid_mad decimal(18, 2), "
                "beneficiaries_reached bigint, people_paid bigint, cost_basis varchar, "
                "cost_per_beneficiary_mad decimal(18, 2))")
    con.execute("insert into marts.mart_programme_costs values "
                "('A', 'a', 'x', 1000, 50000, 100, 100, 'transfers_paid_per_person_paid', 500), "
                "('B', 'b', 'x', 1000, 0, 8, 0, 'unit_cost', 30000), "
                "('C', 'c', 'x', 1000, 0, 0, 0, null, null)")
    config = {"k": project["k"], "tables": [table]}
    protect(con, config=config)
    rows = {r[0]: r[1:] for r in con.execute("select programme_code, beneficiaries_reached, cost_per_beneficiary_mad, "
                                             "budget_mad, is_suppressed from marts.mart_programme_costs").fetchall()}
    assert rows["B"][0] is None and rows["B"][1] is None and rows["B"][3] is True
    assert rows["A"][0] == 100 and rows["A"][3] is False and rows["B"][2] == 1000  # budgets are kept
    assert check(con, config=config) == []


def test_a_cohort_cell_is_not_given_back_by_the_programme_total_across_cohorts(tmp_path):
    """The people an incubation programme reached in a promoter cell (published by the
    coverage mart) are the cell's ventures summed over the cohorts: a cohort's small cell
    must not be the only one hidden along that line (the project's own configuration)."""
    project = yaml.safe_load((Path(__file__).parents[1] / "config" / "disclosure.yml").read_text(encoding="utf-8"))
    table = next(t for t in project["tables"] if t["table"] == "marts.mart_incubation_cohorts")
    con = duckdb.connect(str(tmp_path / "serving.duckdb"))
    con.execute("create schema marts")
    counts = ", ".join(f"{c} bigint" for c in table["count_columns"])
    values = ", ".join(f"{c} double" for c in table["value_columns"])
    con.execute(f"create table marts.mart_incubation_cohorts (programme_code varchar, cohort varchar, "
                f"region_code varchar, sex varchar, age_band varchar, vulnerability_tercile integer, {counts}, {values})")
    ventures = {("A", "01", "F"): 3, ("A", "01", "M"): 20, ("A", "02", "F"): 20, ("A", "02", "M"): 20,
                ("B", "01", "F"): 20, ("B", "01", "M"): 20, ("B", "02", "F"): 20, ("B", "02", "M"): 20}
    n_counts, n_values = len(table["count_columns"]), len(table["value_columns"])
    con.executemany(f"insert into marts.mart_incubation_cohorts values "
                    f"(?, ?, ?, ?, ?, ?, {', '.join('?' * (n_counts + n_values))})",
                    [("INC-01", cohort, region, sex, "25-34", 1, *([n] * n_counts), *([1.0] * n_values))
                     for (cohort, region, sex), n in ventures.items()])
    config = {"k": project["k"], "tables": [table]}
    protect(con, config=config)
    published = {(c, r, s): n for c, r, s, n in con.execute(
        "select cohort, region_code, sex, ventures from marts.mart_incubation_cohorts").fetchall()}
    assert published["A", "01", "F"] is None
    for region, sex in {(r, s) for _, r, s in ventures}:
        line = [published[c, region, sex] for c in ("A", "B")]  # its total: the coverage mart's reach
        assert line.count(None) != 1, (region, sex, line)
    assert check(con, config=config) == []


def test_a_cell_the_previous_publication_published_is_not_chosen_as_a_complement(tmp_path):
    """Whoever kept the previous serving file knows the cells it published: hiding one of them
    (same counts) as a complement would give the small cell back to them. Another cell of the
    line is hidden instead, and the new file is as safe on its own."""
    first = make_warehouse(tmp_path / "first.duckdb", coverage_rows(COUNTS))
    protect(first, config=CONFIG)
    chosen = {key for key, n in published(first).items() if n is None} - {("01", "F")}
    assert ("01", "M") in chosen  # the smallest other cell of the small cell's row
    first.close()

    # an earlier file hid 01-F with the totals of regions 01 and 02 and 02-F, and published
    # 01-M (52 people, unchanged since)
    hidden_before = {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")}
    before = make_warehouse(tmp_path / "before.duckdb", coverage_rows(COUNTS))
    before.execute("alter table marts.mart_coverage add column is_suppressed boolean default false")
    before.execute("alter table marts.mart_coverage alter column beneficiaries drop not null")
    for region, sex in hidden_before:
        before.execute("update marts.mart_coverage set is_suppressed = true, beneficiaries = null "
                       "where region_code = ? and sex = ?", [region, sex])
    known_before = {key: n for key, n in published(before).items() if n is not None}
    before.close()
    con = make_warehouse(tmp_path / "now.duckdb", coverage_rows(COUNTS))
    con.execute(f"attach '{tmp_path / 'before.duckdb'}' as previous_serving (read_only)")
    protect(con, config=CONFIG, previous="previous_serving")
    cells = published(con)
    assert cells["01", "F"] is None and cells["01", "M"] == 52  # another complement was chosen
    assert check(con, config=CONFIG) == []
    # both files together: what either publishes is known, and nothing small comes back
    together = {key: n if n is not None else known_before.get(key) for key, n in cells.items()}
    assert ("01", "F") not in subtraction_attack(together) and together["01", "F"] is None


def test_a_cell_published_before_with_other_counts_is_a_complement_like_any_other(tmp_path):
    before = make_warehouse(tmp_path / "before.duckdb", coverage_rows({**COUNTS, ("01", "M"): 51}))
    before.execute("alter table marts.mart_coverage add column is_suppressed boolean default false")
    before.close()
    con = make_warehouse(tmp_path / "now.duckdb", coverage_rows(COUNTS))
    con.execute(f"attach '{tmp_path / 'before.duckdb'}' as previous_serving (read_only)")
    protect(con, config=CONFIG, previous="previous_serving")
    assert published(con)["01", "M"] is None


GRID = {"k": 10, "tables": [{"table": "marts.grid", "dimensions": ["a", "b"], "count_columns": ["n"]}]}


def grid(path, counts: dict[tuple[str, str], int]):
    con = duckdb.connect(str(path))
    con.execute("create schema marts; create table marts.grid (a varchar, b varchar, n bigint)")
    con.executemany("insert into marts.grid values (?, ?, ?)", [(a, b, n) for (a, b), n in counts.items()])
    return con


def test_a_small_cell_the_previous_publication_gives_back_gets_another_complement(tmp_path):
    """Row 2 changed since the previous publication, which published row 1 and most of row 3.
    Protected on its own, this file hides the small cell 3-y with complements that file
    published (3-x) or that the totals and its cells determine: together, the two files give
    3-y back. Another complement that file did not publish is hidden, and nothing small comes
    back from the two files together; the file stays safe on its own."""
    now = {("1", "x"): 20, ("1", "y"): 30, ("1", "z"): 30, ("2", "x"): 15, ("2", "y"): 25, ("2", "z"): 12,
           ("3", "x"): 30, ("3", "y"): 2, ("3", "z"): 25}
    before = grid(tmp_path / "before.duckdb", {**now, ("2", "x"): 2, ("2", "y"): 4, ("2", "z"): 11})
    protect(before, config=GRID)
    known = {(a, b) for a, b, n in before.execute("select a, b, n from marts.grid where not is_suppressed").fetchall()
             if n == now[a, b]}
    before.close()
    con = grid(tmp_path / "now.duckdb", now)
    con.execute(f"attach '{tmp_path / 'before.duckdb'}' as previous_serving (read_only)")
    [report] = protect(con, config=GRID, previous="previous_serving")
    assert check(con, config=GRID) == []
    rows = con.execute("select a, b, is_suppressed from marts.grid order by a, b").fetchall()
    cells = disclosure.build_cells(disclosure.load_config(GRID).tables[0], [(a, b, now[a, b]) for a, b, _ in rows])
    hidden = {i for i, (_, _, flag) in enumerate(rows) if flag}
    hidden_known = {i for i in hidden if cells.keys[i] in known}
    assert hidden_known  # a cell that file published is hidden here (its line had no other)
    together = disclosure.recoverable(cells, hidden - hidden_known)
    assert not {cells.keys[i] for i in together if now[cells.keys[i]] < 10}
    assert report.together == 0
    assert report.note() == ("marts.grid: against the previous publication: its counts before suppression were not "
                             "kept: checked against the cells it published only")


def test_a_small_cell_no_complement_protects_from_the_previous_publication_is_reported(tmp_path):
    """Row 1's other cells were all published before with the same counts, and the row's
    total is known: its small cell follows from the two files whatever this one hides. The
    publication says so (counts only: the log is read by evaluators)."""
    before = grid(tmp_path / "before.duckdb", {("1", "x"): 20, ("1", "y"): 30, ("2", "x"): 25, ("2", "y"): 35})
    before.execute("alter table marts.grid add column is_suppressed boolean default false")
    before.close()
    con = grid(tmp_path / "now.duckdb", {("1", "x"): 20, ("1", "y"): 30, ("1", "z"): 3,
                                         ("2", "x"): 25, ("2", "y"): 35, ("2", "z"): 40})
    con.execute(f"attach '{tmp_path / 'before.duckdb'}' as previous_serving (read_only)")
    [report] = protect(con, config=GRID, previous="previous_serving")
    assert check(con, config=GRID) == []
    assert report.together == 1
    assert report.note().endswith("; 1 cell(s) under k recoverable from this publication and the previous one "
                                  "together (nothing left to hide here protects them; docs/bi-access.md, Limits)")
    assert "recoverable" not in str(report)  # what the publish log says, which evaluators read


def test_a_small_cell_no_complement_can_protect_gets_no_complement(tmp_path):
    """1-z's line is 1-x, 1-y (published before with the same counts) and its known total:
    whatever this file hides, the two files give 1-z back. Hiding more would protect
    nothing: the pattern is the one this file needs on its own (1-x, its only other choice
    in row 1, hidden; the others avoided where it can), and the cell is reported."""
    counts = {(a, b): 30 + 5 * n for n, (a, b) in enumerate((a, b) for a in "1234" for b in "xyz")}
    counts["1", "z"] = 3
    before = grid(tmp_path / "before.duckdb", {("1", "x"): counts["1", "x"], ("1", "y"): counts["1", "y"]})
    before.execute("alter table marts.grid add column is_suppressed boolean default false")
    before.close()
    con = grid(tmp_path / "now.duckdb", counts)
    con.execute(f"attach '{tmp_path / 'before.duckdb'}' as previous_serving (read_only)")
    [report] = protect(con, config=GRID, previous="previous_serving")
    assert set(con.execute("select a, b from marts.grid where is_suppressed").fetchall()) == {
        ("1", "x"), ("1", "z"), ("2", "x"), ("2", "y"), ("2", "z"), ("3", "x"), ("3", "y")}
    assert check(con, config=GRID) == []
    assert report.together == 1


def test_the_check_against_the_previous_publication_leaves_the_file_safe_on_its_own():
    """Complements for the two files together are added only while this file stays safe on
    its own (a random table whose total rows are not the sums of their cells, on which an
    earlier version left a complement determined with nothing left to hide)."""
    case = json.loads((Path(__file__).parent / "data" / "disclosure_round_undone.json").read_text(encoding="utf-8"))
    rule = disclosure.parse_config({"tables": [{"table": "marts.t", **case["rule"]}]}).tables[0]
    rows = [(*line.split()[:-1], int(line.split()[-1])) for line in case["rows"]]
    cells = disclosure.build_cells(rule, rows)
    known = {tuple(line.split()) for line in case["published_before"]}
    published_before = {i for i, key in enumerate(cells.keys) if tuple(key) in known}
    alone = disclosure.suppression_pattern(disclosure.build_cells(rule, rows))
    assert not disclosure.recoverable(cells, alone[0] | alone[1])
    # the previous file as its published cells show it (its other counts unknown)
    previous = disclosure.previous_cells(
        cells, [(*key, *(counts if i in published_before else [None] * len(counts)))
                for i, (key, counts) in enumerate(zip(cells.keys, cells.counts))],
        {key for i, key in enumerate(cells.keys) if i not in published_before}, counted=False)
    primary, complementary = disclosure.suppression_pattern(cells, published_before, previous)
    exposed = disclosure.recoverable(cells, primary | complementary)
    assert not exposed - disclosure.determined_by_totals(cells, touching=exposed)


def previous_small_cells_given_back(con, hidden_keys: set, previous_counts: dict, config=GRID) -> set:
    """The small cells of a previous file (hiding ``hidden_keys``) that it and ``con`` give
    back together: the cells it hid and ``con`` publishes with the same counts are known too."""
    rule = disclosure.load_config(config).tables[0]
    rows = con.execute("select a, b, n, is_suppressed from marts.grid order by a, b").fetchall()
    now = disclosure.build_cells(rule, [r[:3] for r in rows])
    previous = disclosure.previous_cells(now, [(a, b, n) for (a, b), n in sorted(previous_counts.items())], hidden_keys)
    published_now = {i for i, r in enumerate(rows) if not r[3]}
    revealed = {j for j, i in previous.now_index.items() if j in previous.hidden and i in published_now}
    given = disclosure.recoverable(previous.cells, previous.hidden - revealed) & previous.small
    return {previous.cells.keys[j] for j in given - disclosure.recoverable(previous.cells, previous.hidden)}


def test_a_cell_hidden_before_is_not_published_where_it_gives_back_a_small_cell_of_that_file(tmp_path):
    """The previous file hid 2-z (2 people) with complements; two of its cells changed since,
    and protected on its own this file publishes 2-y and 3-z with the counts that file hid:
    whoever kept it then recovers 2-z. With that file's counts before suppression (kept by
    the publish step), this file hides one of them too, and reports nothing left."""
    before_counts = {("1", "x"): 12, ("1", "y"): 20, ("1", "z"): 25, ("2", "x"): 5, ("2", "y"): 12, ("2", "z"): 2,
                     ("3", "x"): 3, ("3", "y"): 5, ("3", "z"): 12}
    now = {**before_counts, ("2", "x"): 2, ("2", "z"): 14, ("3", "x"): 14}
    before = grid(tmp_path / "before.duckdb", before_counts)
    protect(before, config=GRID)
    hidden_before = set(before.execute("select a, b from marts.grid where is_suppressed").fetchall())
    before.close()
    kept = grid(tmp_path / "counts.duckdb", before_counts)  # what keep_counts writes: counts before suppression
    kept.close()

    alone = grid(tmp_path / "alone.duckdb", now)
    protect(alone, config=GRID)
    assert previous_small_cells_given_back(alone, hidden_before, before_counts) == {("2", "z")}

    con = grid(tmp_path / "now.duckdb", now)
    con.execute(f"attach '{tmp_path / 'before.duckdb'}' as previous_serving (read_only)")
    con.execute(f"attach '{tmp_path / 'counts.duckdb'}' as previous_counts (read_only)")
    [report] = protect(con, config=GRID, previous="previous_serving", previous_counts="previous_counts")
    assert check(con, config=GRID) == []
    assert previous_small_cells_given_back(con, hidden_before, before_counts) == set()
    assert report.together == 0 and report.note() is None


def two_publications(tmp_path, before_counts, before_hidden, now, config=GRID, columns=("n",)):
    """The previous serving file (``before_counts``, hiding ``before_hidden``) and its counts
    before suppression, attached to a new file of ``now``'s cells; protected against them."""
    def table(path, counts, hidden=None):
        con = duckdb.connect(str(path))
        con.execute(f"create schema marts; create table marts.grid (a varchar, b varchar, "
                    f"{', '.join(c + ' bigint' for c in columns)}"
                    f"{', is_suppressed boolean' if hidden is not None else ''})")
        for (a, b), n in counts.items():
            values = list(n) if isinstance(n, tuple) else [n]
            flag = [(a, b) in hidden] if hidden is not None else []
            con.execute(f"insert into marts.grid values ({', '.join('?' * (2 + len(values) + len(flag)))})",
                        [a, b, *values, *flag])
        con.close()
    table(tmp_path / "before.duckdb", before_counts, before_hidden)
    table(tmp_path / "counts.duckdb", before_counts)
    table(tmp_path / "now.duckdb", now)
    con = duckdb.connect(str(tmp_path / "now.duckdb"))
    con.execute(f"attach '{tmp_path / 'before.duckdb'}' as previous_serving (read_only)")
    con.execute(f"attach '{tmp_path / 'counts.duckdb'}' as previous_counts (read_only)")
    [report] = protect(con, config=config, previous="previous_serving", previous_counts="previous_counts")
    return con, report


def test_cells_both_files_hide_with_the_same_counts_are_one_unknown(tmp_path):
    """Row 2 was 43, 8 and 25, the last two hidden: the previous file gives 2-y + 2-z = 33.
    Now 2-x is 7 (hidden) and the other two are unchanged and hidden again: with the row's
    total, the two files give 2-x back, whatever this file hides; it is counted."""
    before = {("1", "x"): 20, ("1", "y"): 30, ("1", "z"): 25, ("2", "x"): 43, ("2", "y"): 8, ("2", "z"): 25,
              ("3", "x"): 30, ("3", "y"): 22, ("3", "z"): 40}
    con, report = two_publications(tmp_path, before, {("2", "y"), ("2", "z"), ("3", "y"), ("3", "z")},
                                   {**before, ("2", "x"): 7})
    hidden = set(con.execute("select a, b from marts.grid where is_suppressed").fetchall())
    assert {("2", "x"), ("2", "y"), ("2", "z")} <= hidden
    assert check(con, config=GRID) == []
    assert report.together == 1 and "1 cell(s) under k recoverable" in report.note()


def given_back_by(files: list[tuple[dict, set]], k: int = 10) -> set:
    """The small cells (key, count) that a reader holding every one of ``files`` (counts
    before suppression, keys hidden) recovers exactly: one unknown per key and count that
    every file holding it hides, each file's row and column sums known (an attacker written
    apart from the protection: numpy ranks)."""
    import numpy as np

    known = {(key, n) for counts, hidden in files for key, n in counts.items() if key not in hidden}
    unknown = sorted({(key, n) for counts, _ in files for key, n in counts.items()} - known)
    index = {v: i for i, v in enumerate(unknown)}
    equations = []
    for counts, _ in files:
        for axis in (0, 1):
            for value in {key[axis] for key in counts}:
                row = np.zeros(len(unknown))
                for key, n in counts.items():
                    if key[axis] == value and (key, n) in index:
                        row[index[key, n]] = 1
                equations.append(row)
    system = np.array(equations)
    rank = np.linalg.matrix_rank(system)
    return {v for v in unknown if v[1] < k
            and np.linalg.matrix_rank(np.vstack([system, np.eye(len(unknown))[index[v]]])) == rank}


def test_a_publication_after_a_rollback_is_checked_against_the_file_rolled_back_too(tmp_path):
    """a was served, then r (checked against a), then r was rolled back and a served again.
    The next file c is checked against a, the file served; c's counts are r's but for three
    cells, and whoever kept r gets back three small cells from r and c together, unless c is
    checked against r too (``others``): then neither r nor a gives back anything with c,
    and c is safe on its own."""
    a = {("0", "x"): 57, ("0", "y"): 28, ("0", "z"): 14, ("1", "x"): 2, ("1", "y"): 1, ("1", "z"): 7,
         ("2", "x"): 1, ("2", "y"): 42, ("2", "z"): 4, ("3", "x"): 44, ("3", "y"): 1, ("3", "z"): 18}
    r = {**a, ("0", "x"): 13, ("1", "z"): 8, ("2", "y"): 15}
    c = {**r, ("0", "y"): 51, ("0", "z"): 18, ("1", "x"): 59}

    def publish(name, counts, previous=None, others=(), kept=True):
        for suffix in ("", "_counts"):
            grid(tmp_path / f"{name}{suffix}.duckdb", counts).close()
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
        for other in ([previous] if previous else []) + list(others):
            for suffix in ("", "_counts"):
                con.execute(f"attach '{tmp_path / f'{other}{suffix}.duckdb'}' as {other}{suffix} (read_only)")
        [report] = protect(con, config=GRID, previous=previous, previous_counts=previous and f"{previous}_counts",
                           others=[(other, f"{other}_counts" if kept else None) for other in others])
        assert check(con, config=GRID) == []
        hidden = set(con.execute("select a, b from marts.grid where is_suppressed").fetchall())
        con.close()
        return (counts, hidden), report

    def pair(x, y):
        return given_back_by([x, y]) - given_back_by([x]) - given_back_by([y])

    first, _ = publish("a", a)
    rolled, _ = publish("r", r, previous="a")
    assert pair(first, rolled) == set()
    served_only, _ = publish("c", c, previous="a")
    assert pair(rolled, served_only) == {(("1", "x"), 2), (("2", "x"), 1), (("2", "z"), 4)}
    both, report = publish("c2", c, previous="a", others=["r"])
    assert pair(rolled, both) == set() and pair(first, both) == set() and given_back_by([both]) == set()
    assert report.together == 0 and report.note() is None
    _, report = publish("c3", c, previous="a", others=["r"], kept=False)  # r's counts not kept
    assert report.note().startswith("marts.grid: against 1 other publication(s): its counts before suppression "
                                    "were not kept: checked against the cells it published only")


def test_a_previous_file_with_keys_of_another_type_is_still_compared(tmp_path):
    """A key typed as text in one version and as a number in the next is the same cell."""
    rule = disclosure.load_config(GRID).tables[0]
    cells = disclosure.build_cells(rule, [("1", "x", 3), ("1", "y", 30)])
    previous = disclosure.previous_cells(cells, [(1, "x", 3), (1, "y", 30)], {(1, "x")})
    assert previous.now_index == {0: 0, 1: 1} and previous.hidden == {0}


def test_keep_counts_copies_the_keys_and_counts_of_the_configured_tables(tmp_path):
    con = make_warehouse(tmp_path / "build.duckdb", coverage_rows(COUNTS))
    con.execute(f"attach '{tmp_path / 'kept.duckdb'}' as kept")
    assert disclosure.keep_counts(con, "build", "kept", config=CONFIG) == ["marts.mart_coverage"]
    assert con.execute("select * from kept.marts.mart_coverage order by all").fetchall() == sorted(
        (r, s, n) for r, s, n, _ in coverage_rows(COUNTS))  # no value columns, no other table
    assert con.execute("select count(*) from duckdb_tables() where database_name = 'kept'").fetchone() == (1,)


def hand_protected(path, hidden: set[tuple[str, str]], counts=COUNTS):
    """A copy of the coverage table protected with a pattern chosen by hand (a valid one)."""
    con = make_warehouse(path, coverage_rows(counts))
    con.execute("alter table marts.mart_coverage add column is_suppressed boolean default false")
    con.execute("alter table marts.mart_coverage alter column beneficiaries drop not null")
    con.execute("alter table marts.mart_coverage alter column transfers_mad drop not null")
    for region, sex in hidden:
        con.execute("update marts.mart_coverage set is_suppressed = true, beneficiaries = null, transfers_mad = null "
                    "where region_code = ? and sex = ?", [region, sex])
    return con


def test_a_second_copy_of_a_publication_hides_the_cells_the_first_hides(tmp_path):
    """Two copies of one publication (the serving file and the PostgreSQL target) with two
    patterns would give back together what each hides: the second follows the first's."""
    served = hand_protected(tmp_path / "served.duckdb", {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    assert check(served, config=CONFIG) == []
    pattern = disclosure.published_pattern(served, config=CONFIG)
    assert pattern["marts.mart_coverage"]["01", "F"] is None and pattern["marts.mart_coverage"]["01", "M"] == (52,)

    own = make_warehouse(tmp_path / "own.duckdb", coverage_rows(COUNTS))
    protect(own, config=CONFIG)
    assert published(own) != published(served)  # left to itself, a copy chooses another pattern

    copy = make_warehouse(tmp_path / "copy.duckdb", coverage_rows(COUNTS))
    report = protect(copy, config=CONFIG, follow=pattern)
    assert published(copy) == published(served)
    assert [(r.primary, r.complementary) for r in report] == [(1, 3)]
    assert check(copy, config=CONFIG) == []
    # together they publish what each publishes: the small cell stays hidden
    assert subtraction_attack(published(copy)) == {}


@pytest.mark.parametrize("change, message", [
    ({("02", "M"): 48}, r"marts.mart_coverage: cell region_code='02', sex='M': beneficiaries 48 here, 47 there"),
    ({("03", "F"): 61}, r"cell region_code='03', sex='F': beneficiaries 61 here, 60 there"),
])
def test_a_copy_whose_cells_differ_refuses_to_follow_and_changes_nothing(tmp_path, change, message):
    served = hand_protected(tmp_path / "served.duckdb", {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    pattern = disclosure.published_pattern(served, config=CONFIG)
    copy = make_warehouse(tmp_path / "copy.duckdb", coverage_rows({**COUNTS, **change}))
    with pytest.raises(disclosure.PatternMismatch, match=message):
        protect(copy, config=CONFIG, follow=pattern)
    assert None not in published(copy).values()
    assert [v.kind for v in check(copy, config=CONFIG)] == ["not_protected"]


def test_a_copy_with_other_cells_or_a_table_the_publication_lacks_refuses_to_follow(tmp_path):
    served = hand_protected(tmp_path / "served.duckdb", {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    pattern = disclosure.published_pattern(served, config=CONFIG)
    copy = make_warehouse(tmp_path / "copy.duckdb", coverage_rows(COUNTS) + [("04", "F", 30, 10.0)])
    with pytest.raises(disclosure.PatternMismatch, match=r"1 cell\(s\) the publication to follow does not hold, "
                                                         r"0 cell\(s\) it holds .*\(first here: region_code='04', sex='F'\)"):
        protect(copy, config=CONFIG, follow=pattern)
    copy = make_warehouse(tmp_path / "copy2.duckdb", coverage_rows(COUNTS)[1:])
    with pytest.raises(disclosure.PatternMismatch, match=r"0 cell\(s\) the publication .*, 1 cell\(s\) it holds that "
                                                         r"this copy does not \(first there: region_code='01', sex='F'\)"):
        protect(copy, config=CONFIG, follow=pattern)
    copy = make_warehouse(tmp_path / "copy3.duckdb", coverage_rows(COUNTS))
    with pytest.raises(disclosure.PatternMismatch, match="does not hold this table protected"):
        protect(copy, config=CONFIG, follow={})


def test_a_copy_with_a_small_cell_the_publication_published_refuses_to_follow(tmp_path):
    """k raised since that publication: its published cell is small here, and hiding it alone
    would leave it recoverable; the copy refuses instead, naming the cell and the likely cause."""
    served = hand_protected(tmp_path / "served.duckdb", {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    pattern = disclosure.published_pattern(served, config=CONFIG)
    copy = make_warehouse(tmp_path / "copy.duckdb", coverage_rows(COUNTS))
    stricter = {**CONFIG, "k": 50}
    with pytest.raises(disclosure.PatternMismatch, match=r"cell region_code='02', sex='M' is under k=50 here and "
                                                         r"published by the publication to follow \(1 such cell"):
        protect(copy, config=stricter, follow=pattern)


def test_a_copy_that_differs_in_one_table_changes_none(tmp_path):
    """Every table is compared before any is written, and every table that differs is named."""
    two = {"k": 10, "tables": [CONFIG["tables"][0], {**CONFIG["tables"][0], "table": "marts.mart_coverage_2"}]}
    served = hand_protected(tmp_path / "served.duckdb", {("01", "F"), ("01", "all"), ("02", "F"), ("02", "all")})
    served.execute("create table marts.mart_coverage_2 as select * from marts.mart_coverage")
    pattern = disclosure.published_pattern(served, config=two)
    copy = make_warehouse(tmp_path / "copy.duckdb", coverage_rows(COUNTS))
    copy.execute("create table marts.mart_coverage_2 as select * from marts.mart_coverage")
    copy.execute("update marts.mart_coverage_2 set beneficiaries = 76 where region_code = '03' and sex = 'M'")
    with pytest.raises(disclosure.PatternMismatch, match=r"^marts.mart_coverage_2: cell region_code='03', sex='M': "
                                                         r"beneficiaries 76 here, 75 there"):
        protect(copy, config=two, follow=pattern)
    assert None not in published(copy).values()  # the table that matched was not written either
    assert [v.kind for v in check(copy, config=two)] == ["not_protected", "not_protected"]


def test_a_table_published_again_unchanged_keeps_the_previous_pattern(tmp_path):
    """A refresh given nothing new: every cell has the key and counts it had, so the table is
    published as it was (its own choice would differ), and nothing is given back together."""
    counts = {("1", "x"): 3, ("1", "y"): 30, ("1", "z"): 25, ("2", "x"): 12, ("2", "y"): 14, ("2", "z"): 40,
              ("3", "x"): 30, ("3", "y"): 22, ("3", "z"): 18}
    alone = grid(tmp_path / "alone.duckdb", counts)
    protect(alone, config=GRID)
    chosen = set(alone.execute("select a, b from marts.grid where is_suppressed").fetchall())
    alone.close()
    # safe too, with more than this file needs (e.g. complements a check against an earlier
    # file added): chosen here, against it, the pattern would be smaller
    before_hidden = {("1", "x"), ("1", "z"), ("3", "x"), ("3", "z"), ("2", "y"), ("2", "z"), ("3", "y")}
    assert chosen != before_hidden
    con, report = two_publications(tmp_path, counts, before_hidden, counts)
    assert set(con.execute("select a, b from marts.grid where is_suppressed").fetchall()) == before_hidden
    assert check(con, config=GRID) == [] and report.together == 0 and report.note() is None
    assert (report.primary, report.complementary) == (1, 6)


def test_a_previous_pattern_that_would_not_do_now_is_chosen_again(tmp_path):
    """The same cells and counts, but the previous file published a cell now under k (k was
    raised), or hid a small cell alone in its lines: the pattern is chosen here."""
    counts = {("1", "x"): 3, ("1", "y"): 30, ("1", "z"): 25, ("2", "x"): 12, ("2", "y"): 14, ("2", "z"): 40,
              ("3", "x"): 30, ("3", "y"): 22, ("3", "z"): 18}
    raised = {**GRID, "k": 13}  # 2-x (12) is small now, published before
    (tmp_path / "raised").mkdir()
    (tmp_path / "alone").mkdir()
    con, _ = two_publications(tmp_path / "raised", counts, {("1", "x"), ("1", "z"), ("3", "x"), ("3", "z")},
                              counts, config=raised)
    assert ("2", "x") in set(con.execute("select a, b from marts.grid where is_suppressed").fetchall())
    assert check(con, config=raised) == []
    con, _ = two_publications(tmp_path / "alone", counts, {("1", "x")}, counts)  # its lines give it back
    assert len(con.execute("select a, b from marts.grid where is_suppressed").fetchall()) > 1
    assert check(con, config=GRID) == []
