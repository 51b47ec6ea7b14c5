"""What two publications give back together (a measurement of a documented limit).

    python -m bench.republication [--previous FILE] [--serving FILE] [--build FILE]

Disclosure control protects each publication on its own (docs/bi-access.md, "Limits"): a
cell published by an earlier serving file and suppressed by the current one is known to
whoever kept the earlier file, when its counts did not change. This reads the current
serving file, the previous one (default: the newest file of ``warehouse/history/``) and
the build warehouse the current one was published from (its counts before suppression), and
prints per protected table: the cells suppressed now but published before with the same
counts, and the suppressed cells that become exactly recoverable when those are known
(beyond those the current file's lines alone determine: the same attacker as the
protection's, who knows every line total), with how many of them count fewer than k people.
The other direction too when the earlier publication's counts before suppression were kept
(``store/publications/<run id>.duckdb``, written by the publish step, or ``--previous-counts``):
the cells it hid that the current file publishes with the same counts, and the earlier
file's small cells that become recoverable when those are known.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def measure(build, previous, serving, rule) -> dict:
    from quality.disclosure import DisclosureConfig, build_cells, primary_suppressions, published_pattern, recoverable

    keys, counts = ", ".join(rule.key_columns), ", ".join(rule.count_columns)
    truth = build.execute(f"select {keys}, {counts} from {rule.table} order by {keys}").fetchall()
    hidden_now = set(serving.execute(f"select {keys} from {rule.table} where {rule.flag_column}").fetchall())
    # the cells the file served before publishes, with their counts
    pattern = published_pattern(previous, config=DisclosureConfig(tables=(rule,))).get(rule.table, {})
    published_before = {(key, figures) for key, figures in pattern.items() if figures is not None}
    cells = build_cells(rule, truth)
    suppressed = {i for i, key in enumerate(cells.keys) if tuple(key) in hidden_now}
    known = {i for i in suppressed if (tuple(cells.keys[i]), tuple(cells.counts[i])) in published_before}
    alone = recoverable(cells, suppressed)
    together = recoverable(cells, suppressed - known) - alone
    small = primary_suppressions(cells)
    return {"suppressed": len(suppressed), "known_before": len(known), "recoverable": len(together),
            "recoverable_small": len(together & small)}


def measure_previous(previous_counts, previous, serving, build, rule) -> dict | None:
    """The other direction: cells the earlier file hid that the current one publishes with the
    same counts, and the earlier file's small cells they give back (beyond its own lines)."""
    from quality.disclosure import build_cells, previous_cells, recoverable

    keys, counts = ", ".join(rule.key_columns), ", ".join(rule.count_columns)
    try:
        rows = previous_counts.execute(f"select {keys}, {counts} from {rule.table} order by {keys}").fetchall()
    except Exception:  # noqa: BLE001 (a table that publication did not have)
        return None
    hidden_before = set(previous.execute(f"select {keys} from {rule.table} where {rule.flag_column}").fetchall())
    truth = build.execute(f"select {keys}, {counts} from {rule.table} order by {keys}").fetchall()
    now = build_cells(rule, truth)
    hidden_now = set(serving.execute(f"select {keys} from {rule.table} where {rule.flag_column}").fetchall())
    before = previous_cells(now, rows, hidden_before)
    revealed = {j for j, i in before.now_index.items() if j in before.hidden and tuple(now.keys[i]) not in hidden_now}
    given = (recoverable(before.cells, before.hidden - revealed) & before.small) - recoverable(before.cells, before.hidden)
    return {"hidden_before": len(before.hidden), "revealed": len(revealed), "recoverable_small": len(given)}


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
    for rule in config.tables:
        m = measure(build, before, now, rule)
        print(f"{rule.table}: {m['known_before']:,} of {m['suppressed']:,} suppressed cells published before with "
              f"the same counts; with them, {m['recoverable']:,} more recoverable ({m['recoverable_small']:,} "
              f"of fewer than {rule.k} people)")
        o = before_counts and measure_previous(before_counts, before, now, build, rule)
        if o:
            print(f"  and of the earlier file's {o['hidden_before']:,} suppressed cells, {o['revealed']:,} published now "
                  f"with the same counts; with them, {o['recoverable_small']:,} of its cells of fewer than {rule.k} "
                  "people recoverable")
    if before_counts is None:
        print(f"(the earlier publication's counts before suppression were not kept ({kept}): cells it hid and this "
              "file publishes not examined)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
