"""``jisr``: the command line for people who are not in the Dagster UI."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from jisr.settings import MissingKeyError, get_settings


def _generate(args) -> int:
    from ingestion.generate import generate

    settings = get_settings()
    landing = Path(args.out) if args.out else settings.landing_dir
    truth = Path(args.truth) if args.truth else settings.home / "generated" / "ground_truth.json"
    summary = generate(landing, beneficiaries=args.beneficiaries, seed=args.seed, months=args.months,
                       dirty_rate=args.dirty_rate, truth_path=truth, contracts_dir=settings.contracts_dir,
                       seeds_dir=settings.seeds_dir, progress=not args.quiet)
    print(f"Generated sample deliveries into {landing} (ground truth: {truth})")
    print(summary if isinstance(summary, str) else getattr(summary, "describe", lambda: summary)())
    return 0


def _refresh(args) -> int:
    from jisr.lock import LockBusy, refresh_lock
    from jisr.refresh import run_refresh, tool_log_path

    settings = get_settings()
    try:
        settings.pseudonym_key()
    except MissingKeyError as exc:
        print(f"jisr refresh: {exc}", file=sys.stderr)
        return 2
    try:
        with refresh_lock(settings):
            result = run_refresh(settings, full_refresh=args.full_refresh,
                                 tool_log=None if args.verbose else tool_log_path(settings))
    except LockBusy as exc:
        print(f"jisr refresh: {exc}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.success else 1


def _status(args) -> int:
    from jisr.status import status

    text, code = status(get_settings())
    print(text)
    return code


def _contracts(args) -> int:
    from ingestion.contract_docs import write
    from ingestion.contracts import load_contracts

    settings = get_settings()
    contracts = load_contracts(settings.contracts_dir)
    if args.action == "docs":
        path = write(contracts, Path(args.out) if args.out else settings.project_dir / "docs" / "data-contracts.md")
        print(f"wrote {path}")
    else:
        for c in contracts.values():
            print(f"{c.source:22} {c.partner:15} {c.format:6} {c.file_pattern}")
    return 0


def _sql(args) -> int:
    from jisr import sql

    return sql.main(args, get_settings())


def _publish_postgres(args) -> int:
    from jisr import postgres

    return postgres.main(args, get_settings())


def _rollback(args) -> int:
    from jisr.lock import LockBusy
    from jisr.publish import PublishError, rollback

    try:
        result = rollback(get_settings())
    except (PublishError, LockBusy) as exc:
        print(f"jisr rollback: {exc}", file=sys.stderr)
        return 1
    print(result.describe())
    return 0


def _disclosure(args) -> int:
    import duckdb

    from quality.disclosure import published_cells, review

    settings = get_settings()
    path = Path(args.warehouse) if args.warehouse else settings.serving_path
    if not path.exists():
        print(f"jisr disclosure: no warehouse at {path} (publish one with `jisr refresh`)", file=sys.stderr)
        return 2
    con = duckdb.connect(str(path), read_only=True)
    try:
        found = review(con, settings)
        shares = published_cells(con, settings)
    finally:
        con.close()
    if shares:
        print("published cells (the rest suppressed):")
        width = max(len(label) for label, _, _ in shares)
        for label, cells, shown in shares:
            print(f"  {label:<{width}}  {shown:>9,} of {cells:>9,}  {shown / cells if cells else 1:>4.0%}")
    for v in found:
        label = "BLOCKING  " if v.blocking else "warning   "
        if args.all and v.cells:
            print(f"{label}{v.brief}: {len(v.cells)} cell(s):")
            for cell in v.cells:
                print(f"          {cell}")
        else:
            print(label + str(v))
    if not found:
        print(f"{path}: no finding (every configured table protected, every breakdown configured)")
    return 1 if any(v.blocking for v in found) else 0


def _reproduce(args) -> int:
    from jisr.lock import LockBusy
    from jisr.reproduce import EXIT_DIFFERENT, EXIT_SAME, ReproduceError, reproduce

    settings = get_settings()
    try:
        result = reproduce(settings, args.run_id, [Path(f) for f in args.files], keep=args.keep,
                           record_file=Path(args.record) if args.record else None,
                           in_arrival_order=args.in_arrival_order)
    except (ReproduceError, MissingKeyError, LockBusy) as exc:
        print(f"jisr reproduce: {exc}", file=sys.stderr)
        return 2
    print(result.describe())
    return EXIT_SAME if result.same else EXIT_DIFFERENT


def _bench(args) -> int:
    from bench.run import main as bench_main

    return bench_main(args, command="jisr bench " + " ".join(sys.argv[2:]))


def _at_least(minimum: int):
    """An argparse type: an integer of at least ``minimum`` (a usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jisr", description="Jisr: social-programme impact warehouse.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write sample partner deliveries into the landing area")
    g.add_argument("--beneficiaries", type=_at_least(100), default=5000, help="registered people (default 5000, at least 100)")
    g.add_argument("--seed", type=int, default=42, help="random seed: the same seed gives the same files (default 42)")
    g.add_argument("--months", type=_at_least(1), default=12, help="monthly deliveries to write (default 12)")
    g.add_argument("--dirty-rate", type=float, default=0.002, help="share of rows that break a rule (default 0.002)")
    g.add_argument("--out", help="landing directory (default $JISR_HOME/landing)")
    g.add_argument("--truth", help="where to write the ground-truth JSON (default "
                   "$JISR_HOME/generated/ground_truth.json, with --out too: it replaces that file)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_generate)

    r = sub.add_parser("refresh", help="run the refresh job (the same Dagster job as the UI)")
    r.add_argument("--full-refresh", action="store_true", help="rebuild incremental models from scratch")
    r.add_argument("-v", "--verbose", action="store_true",
                   help="print dbt's output (a line per model and test) instead of writing it to $JISR_HOME/logs/")
    r.set_defaults(func=_refresh)

    s = sub.add_parser("status", help="deliveries, quarantine and the published warehouse (exit 0: everything "
                                      "delivered is published; 1: something needs attention, a NOT PUBLISHED line "
                                      "or files nothing reads; 2: the state could not be read)")
    s.set_defaults(func=_status)

    c = sub.add_parser("contracts", help="list the data contracts or generate their documentation")
    c.add_argument("action", choices=["list", "docs"],
                   help="list: one line per contract; docs: write the contracts' documentation")
    c.add_argument("--out", help="where `docs` writes (default docs/data-contracts.md)")
    c.set_defaults(func=_contracts)

    q = sub.add_parser("sql", help="read-only SQL on the published warehouse (query, -f FILE, or interactive)")
    from jisr.sql import add_arguments as _sql_arguments

    _sql_arguments(q)
    q.set_defaults(func=_sql)

    pg = sub.add_parser("publish-postgres", help="build the warehouse on PostgreSQL for BI tools (evaluator role), from the "
                                                   "deliveries the serving DuckDB file serves")
    from jisr.postgres import add_arguments as _postgres_arguments

    _postgres_arguments(pg)
    pg.set_defaults(func=_publish_postgres)

    d = sub.add_parser("disclosure", help="disclosure control's findings on the published warehouse, with the cells "
                                          "concerned (internal: the publish log keeps them without the cells)")
    d.add_argument("--warehouse", help="a DuckDB warehouse file (default: the published one)")
    d.add_argument("--all", action="store_true", help="list every cell of each finding, one per line (default: the first 3)")
    d.set_defaults(func=_disclosure)

    b = sub.add_parser("rollback", help="serve the previously published warehouse again (undo the last publication; "
                                        "the next refresh publishes the raw store's current deliveries again: have "
                                        "the batch that caused it re-delivered, corrected, first)")
    b.set_defaults(func=_rollback)

    rp = sub.add_parser("reproduce", help="rebuild a publication from its delivered files with the same code version "
                                          "and compare its figures, table by table (exit 0 same, 1 different, 2 "
                                          "not possible)")
    rp.add_argument("run_id", nargs="?", help="the run whose publication to rebuild (default: the one served now; "
                                              "`jisr status` and meta.publish_log list them)")
    rp.add_argument("--files", action="append", default=[], metavar="DIR",
                    help="another folder holding delivered files, searched by content after the landing area "
                         "(repeatable)")
    rp.add_argument("--record", metavar="FILE",
                    help="a publication's record copied from its home ($JISR_HOME/store/publications/<run id>.json), "
                         "to rebuild it here, e.g. on another machine (with the same pseudonymisation key)")
    rp.add_argument("--in-arrival-order", action="store_true",
                    help="one refresh per ingestion run of the publication's history, each with the files it loaded, "
                         "in that order (rows held for another row depend on it); slower")
    rp.add_argument("--keep", action="store_true", help="keep the rebuild's home ($JISR_HOME/reproduce/<run id>) "
                                                        "even when every figure is the same")
    rp.set_defaults(func=_reproduce)

    try:  # the benchmark lives in the project checkout (bench/), not in an installed wheel
        from bench.run import add_arguments as _bench_arguments
    except ImportError:
        _bench_arguments = None
    if _bench_arguments:
        pb = sub.add_parser("bench", help="performance benchmark at national scale; writes BENCHMARKS.md (make bench)")
        _bench_arguments(pb)
        pb.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so a reader gone after the last write is caught below, not at exit
        return code
    except BrokenPipeError:  # the reader went away (`jisr disclosure --all | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
