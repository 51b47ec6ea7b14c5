"""What two publications give back together (a measurement of a documented limit).

    python -m bench.republication [--previous FILE] [--serving FILE] [--build FILE] [--previous-counts FILE]

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.republication", description=__doc__.splitlines()[0])
    p.add_argument("--previous", help="the earlier serving file (default: the newest in warehouse/history/)")
    p.add_argument("--serving", help="the current serving file (default: $JISR_HOME's)")
    p.add_argument("--build", help="the build warehouse it was published from (default: $JISR_HOME's)")
    p.add_argument("--previous-counts", help="the earlier publication's counts before suppression "
                                             "(default: store/publications/<its run id>.duckdb, when kept)")
    args = p.parse_args(argv)

    import duckdb

    from jisr.publish import counts_path, serving_run_id
    from jisr.settings import get_settings
    from quality.disclosure import load_config

    settings = get_settings()
    history = sorted(Path(settings.history_dir).glob("*.duckdb"))
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
