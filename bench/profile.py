"""Profile one refresh in-process with pyinstrument (what dominates, and where).

    python -m bench.profile --beneficiaries 1000000 --months 12 [--incremental] [--workdir DIR]

generates the deliveries into a fresh JISR_HOME (``DIR/home``), runs the full refresh under
pyinstrument (``--incremental``: then adds one month and profiles the incremental refresh
instead) and writes ``DIR/<kind>.html``, ``DIR/<kind>.txt`` (pyinstrument's views),
``DIR/<kind>.pyisession`` (the samples: ``pyinstrument --load FILE --show-all`` shows the frames
the views hide) and ``DIR/<kind>.json`` (step timings, as in the benchmark). dbt runs in its own process: its
time shows as waiting on dbt here; see its ``run_results.json`` for the models and tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from bench.run import child_env, copy_new_files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--beneficiaries", type=int, default=1_000_000)
    p.add_argument("--months", type=int, default=12)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--incremental", action="store_true", help="profile the refresh of one more month")
    p.add_argument("--workdir", default="var/bench/profile")
    p.add_argument("--interval", type=float, default=0.005, help="sampling interval in seconds")
    args = p.parse_args(argv)

    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    home = work / "home"
    os.environ.update(child_env(home))
    from ingestion.generate import generate
    from jisr.dbt import ensure_manifest
    from jisr.settings import get_settings

    generate(home / "landing", beneficiaries=args.beneficiaries, seed=args.seed, months=args.months,
             truth_path=work / "truth.json", progress=False)
    ensure_manifest(get_settings())
    from bench import refresh_child

    if args.incremental:
        refresh_child.main([str(work / "full.json")])
        generate(work / "next", beneficiaries=args.beneficiaries, seed=args.seed, months=args.months + 1,
                 truth_path=work / "truth-next.json", progress=False)
        copy_new_files(home / "landing", work / "next")
        shutil.rmtree(work / "next")
    kind = "incremental" if args.incremental else "full"
    from pyinstrument import Profiler

    profiler = Profiler(interval=args.interval)
    profiler.start()
    code = refresh_child.main([str(work / f"{kind}.json")])
    profiler.stop()
    (work / f"{kind}.html").write_text(profiler.output_html())
    (work / f"{kind}.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    profiler.last_session.save(str(work / f"{kind}.pyisession"))  # pyinstrument --load FILE [-r html|text --show-all]
    print(f"profile: {work / f'{kind}.html'} and {work / f'{kind}.txt'}; step timings {work / f'{kind}.json'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
