"""What each protected table would publish as a hierarchical table (a measurement, not a feature).

    python -m bench.hierarchical [--warehouse FILE] [TABLE ...]

The protected marts of ``config/disclosure.yml`` publish only their finest cells (every
breakdown crossed), and disclosure control assumes every line total known elsewhere. A
hierarchical table would also hold each stratum's marginals (every subset of the breakdowns,
the others set to ``all``: ``group by cube``), protected with the cells in one system, the
total rows as unknowns (``assume_external_totals: false``). This reads the built (not yet
protected) tables of ``--warehouse`` (default: the build warehouse of ``$JISR_HOME``), adds
the marginals by summing the cells' counts, runs the same suppression pattern on them and
prints, per table and per level of the hierarchy, how many cells would be published, and
how long the pattern took.

Limits of the measurement: a marginal is the sum of its cells' counts, which overstates
counts of distinct people when one person falls in several cells of a stratum (a borrower
with loans of two products); tables that publish the same people on other breakdowns
(``mart_programme_costs``, the coverage mart's reach of the incubation programmes) are not
part of the system, so a marginal could be suppressed here and published there.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections import defaultdict


def measure(con, rule) -> dict:
    from quality.disclosure import build_cells, suppression_pattern

    dims, by = rule.dimensions, rule.by
    total = rule.total_label or "all"
    labelled = ", ".join(f"coalesce(cast({c} as varchar), '{total}') as {c}" for c in dims)
    counts = ", ".join(f"sum({c})" for c in rule.count_columns)
    grouping = ", ".join([*by, f"cube({', '.join(dims)})"])
    rows = con.execute(f"select {', '.join([*by, labelled])}, {counts} from {rule.table} "
                       f"group by {grouping} order by all").fetchall()
    cells = build_cells(dataclasses.replace(rule, assume_external_totals=False, total_label=total), rows)
    start = time.perf_counter()
    primary, complementary = suppression_pattern(cells)
    seconds = time.perf_counter() - start
    hidden = primary | complementary
    levels: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for i, key in enumerate(cells.keys):
        level = tuple(d for d, v in zip(dims, key[len(by):]) if v != total)
        levels[level][0] += 1
        levels[level][1] += i not in hidden
    return {"cells": len(cells), "published": len(cells) - len(hidden), "seconds": seconds,
            "levels": sorted(((lvl, n, pub) for lvl, (n, pub) in levels.items()), key=lambda x: (len(x[0]), x[0]))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hierarchical", description=__doc__.splitlines()[0])
    p.add_argument("tables", nargs="*", help="configured tables, schema-qualified as in config/disclosure.yml (default: every one)")
    p.add_argument("--warehouse", help="built warehouse to read (default: $JISR_HOME's build warehouse)")
    args = p.parse_args(argv)

    import duckdb

    from jisr.settings import get_settings
    from quality.disclosure import load_config

    settings = get_settings()
    config = load_config(settings=settings)
    configured = [rule.table for rule in config.tables]
    unknown = [t for t in args.tables if t not in configured]
    if unknown:
        p.error(f"not a table of config/disclosure.yml: {', '.join(unknown)} (configured: {', '.join(configured)})")
    con = duckdb.connect(str(args.warehouse or settings.build_path), read_only=True)
    for rule in [config.rule(t) for t in args.tables] if args.tables else config.tables:
        if len(rule.dimensions) < 2:
            continue
        m = measure(con, rule)
        print(f"{rule.table}: {m['published']:,} of {m['cells']:,} cells published "
              f"({m['published'] / m['cells']:.0%}); pattern {m['seconds']:.1f} s", flush=True)
        for level, n, published in m["levels"]:
            print(f"    by {' x '.join(level) or '(stratum total)'}: {published:,} of {n:,} ({published / n:.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
