"""What two publications give back together (a measurement of a documented limit).

    python -m bench.republication [--previous FILE] [--serving FILE] [--build FILE] [--previous-counts FILE]
    python -m bench.republication --kept

Disclosure control checks each publication against the one served before it
(docs/bi-access.md, "Limits"). This reads the current serving file, the previous one
(default: the newest file of ``warehouse/history/``), the build warehouse the current one
was published from (its counts before suppression) and, when the publish step kept them,
the previous one's counts before suppression (``store/publications/<run id>.duckdb``), and
prints per protected table the small cells that the two files give back together, beyond
what each gives on its own, under the protection's own model of the reader (every line
total known; a cell with the same key and counts taken as unchanged): of the
current file, and of the previous file alone. Without the previous counts, only the cells
the previous file published are used (its hidden cells are not compared).

``--kept``: every publication whose counts before suppression are kept (the files of
``warehouse/history/`` and the serving file, in that order; one that publishes exactly what
the one before it did counts once), as a reader who kept them all sees them: per table, the
small cells of any of them given back by one file alone (lines whose totals alone give them:
``check`` warns of those), by two consecutive publications beyond that (what the publish step
checks), by two publications further apart only, and only by three or more together; and what
the newest gives back to a reader of them all beyond what the others give among themselves
and it gives alone (what a check of the newest against every kept publication could still
protect: the rest was given back before it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def measure(build, previous, serving, rule, previous_counts=None) -> dict:
    """Small cells the two files give back together (``_TwoFiles``, as ``protect`` sees them)."""
    from quality.disclosure import (DisclosureConfig, PreviousCells, _TwoFiles, build_cells,
                                    previous_cells, primary_suppressions, published_pattern, recoverable)

    keys, counts = ", ".join(rule.key_columns), ", ".join(rule.count_columns)
    cells = build_cells(rule, build.execute(f"select {keys}, {counts} from {rule.table} order by {keys}").fetchall())
    hidden_now = set(serving.execute(f"select {keys} from {rule.table} where {rule.flag_column}").fetchall())
    suppressed = {i for i, key in enumerate(cells.keys) if tuple(key) in hidden_now}
    pattern = published_pattern(previous, config=DisclosureConfig(tables=(rule,))).get(rule.table, {})
    hidden_before = {key for key, figures in pattern.items() if figures is None}
    rows = None
    if previous_counts is not None:
        try:
            rows = previous_counts.execute(f"select {keys}, {counts} from {rule.table} order by {keys}").fetchall()
        except Exception:  # noqa: BLE001 (a table that publication did not have)
            rows = None
    if rows is None:
        rows = [(*key, *(figures or [None] * len(rule.count_columns))) for key, figures in sorted(pattern.items(), key=repr)]
    before: PreviousCells = previous_cells(cells, rows, hidden_before, counted=previous_counts is not None)
    both = _TwoFiles(cells, before, primary_suppressions(cells))
    given = both.exposed(suppressed, set())[1] - recoverable(cells, suppressed)  # not what this file gives alone
    return {"suppressed": len(suppressed),
            "known_before": len(suppressed & both.published_before),
            "given_back_now": len({v for v in given if v < len(cells)}),
            "given_back_before_only": len({v for v in given if v >= len(cells)})}


def publication(serving, counts, rule):
    """(cells with their counts before suppression, the cells the file hid) of a table."""
    from quality.disclosure import build_cells

    keys, wanted = ", ".join(rule.key_columns), ", ".join(rule.key_columns + rule.count_columns)
    hidden = {tuple(r[:-1]) for r in serving.execute(f"select {keys}, {rule.flag_column} from {rule.table}").fetchall()
              if r[-1]}
    cells = build_cells(rule, counts.execute(f"select {wanted} from {rule.table} order by {keys}").fetchall())
    return cells, {i for i, key in enumerate(cells.keys) if tuple(key) in hidden}


def given_back(publications) -> set:
    """The small cells, named by key and counts, that these publications (``publication``)
    give back together: one unknown per key and counts across them, known when any of them
    publishes it; the lines of each; every line total known."""
    from quality.disclosure import Cells, _same_key, primary_suppressions, recoverable

    var: dict[tuple, int] = {}
    lines, known, small = [], set(), set()
    for cells, hidden in publications:
        ids = [var.setdefault((_same_key(key), tuple(counts)), len(var)) for key, counts in zip(cells.keys, cells.counts)]
        lines += [([ids[m] for m in members], None if total is None else ids[total]) for members, total in cells.lines]
        known |= {ids[i] for i in range(len(cells)) if i not in hidden}
        small |= {ids[i] for i in primary_suppressions(cells) & hidden}
    names = sorted(var, key=var.get)
    rule = publications[0][0].rule
    joint = Cells(rule, list(range(len(names))), [k for k, _ in names], [c for _, c in names], [False] * len(names), lines)
    unknown = set(range(len(names))) - known
    return {names[v] for v in recoverable(joint, unknown, touching=small & unknown) & small}


def across(publications) -> dict:
    """What a reader of every one of ``publications`` (oldest first) gets back, by the fewest
    files needed (see the module's ``--kept``)."""
    from itertools import combinations

    alone = set().union(*(given_back([p]) for p in publications))
    consecutive, apart = set(), set()
    for a, b in combinations(range(len(publications)), 2):
        (consecutive if b == a + 1 else apart).update(given_back([publications[a], publications[b]]) - alone)
    apart -= consecutive
    every = given_back(publications)
    together = every - alone - consecutive - apart if len(publications) > 2 else set()
    # what the newest adds for a reader of them all: beyond what it gives alone and what the
    # earlier ones give among themselves (the most a check of the newest against every kept
    # publication could still protect)
    newest = every - given_back(publications[:-1]) - given_back(publications[-1:]) if len(publications) > 1 else set()
    return {"publications": len(publications), "alone": len(alone), "consecutive": len(consecutive),
            "apart": len(apart), "three_or_more": len(together), "newest": len(newest)}


def _publications(n: int) -> str:
    return f"{n} publication" if n == 1 else f"{n} publications"


def every_kept(settings, config) -> int:
    import duckdb

    from jisr.publish import counts_path, history_files, serving_run_id

    files = [*history_files(settings), Path(settings.serving_path)]
    found = [(f, counts_path(settings, serving_run_id(f) or "unknown")) for f in files if f.exists()]
    found = [(f, c) for f, c in found if c.exists()]
    print(f"{_publications(len(found))} with their counts kept")
    for rule in config.tables:
        publications = []
        for serving_file, counts_file in found:
            serving, counts = (duckdb.connect(str(x), read_only=True) for x in (serving_file, counts_file))
            try:
                cells, hidden = publication(serving, counts, rule)
            except duckdb.Error:
                continue  # a publication without this table
            finally:
                serving.close()
                counts.close()
            if publications and (cells.keys, cells.counts, hidden) == (publications[-1][0].keys, publications[-1][0].counts,
                                                                        publications[-1][1]):
                continue  # the same publication again (a refresh given nothing new)
            publications.append((cells, hidden))
        if not publications:
            continue
        m = across(publications)
        print(f"{rule.table}: {_publications(m['publications'])}; small cells given back by one alone {m['alone']:,} "
              f"(line totals), by two consecutive beyond that {m['consecutive']:,}, by two further apart only "
              f"{m['apart']:,}, only by three or more {m['three_or_more']:,}; given back by the newest with all the "
              f"others beyond what they give without it and it gives alone {m['newest']:,}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.republication", description=__doc__.splitlines()[0])
    p.add_argument("--previous", help="the earlier serving file (default: the newest in warehouse/history/)")
    p.add_argument("--serving", help="the current serving file (default: $JISR_HOME's)")
    p.add_argument("--build", help="the build warehouse it was published from (default: $JISR_HOME's)")
    p.add_argument("--previous-counts", help="the earlier publication's counts before suppression "
                                             "(default: store/publications/<its run id>.duckdb, when kept)")
    p.add_argument("--kept", action="store_true", help="every publication whose counts are kept, together")
    args = p.parse_args(argv)

    import duckdb

    from jisr.publish import counts_path, history_files, serving_run_id
    from jisr.settings import get_settings
    from quality.disclosure import load_config

    settings = get_settings()
    if args.kept:
        return every_kept(settings, load_config(settings=settings))
    history = history_files(settings)
    previous = args.previous or (history[-1] if history else None)
    if previous is None:
        print(f"no earlier publication in {settings.history_dir}: pass --previous", file=sys.stderr)
        return 1
    config = load_config(settings=settings)
    files = [args.build or settings.build_path, previous, args.serving or settings.serving_path]
    kept = args.previous_counts or counts_path(settings, serving_run_id(Path(previous)) or "unknown")
    build, before, now = (duckdb.connect(str(f), read_only=True) for f in files)
    before_counts = duckdb.connect(str(kept), read_only=True) if Path(kept).exists() else None
    if before_counts is None:
        print(f"(the earlier publication's counts before suppression were not kept ({kept}): only the cells it "
              "published are used)")
    for rule in config.tables:
        m = measure(build, before, now, rule, before_counts)
        print(f"{rule.table}: {m['known_before']:,} of {m['suppressed']:,} suppressed cells published before with "
              f"the same counts; small cells the two files give back: {m['given_back_now']:,} of this file, "
              f"{m['given_back_before_only']:,} of the earlier file only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
