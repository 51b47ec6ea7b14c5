"""``make bench`` / ``jisr bench``: the performance benchmark of issue 7.

For each scale (default 100,000 and 1,000,000 beneficiaries), in one run:

1. generate ``months`` monthly deliveries into a fresh JISR_HOME's landing area, and
   ``months + 1`` into a side folder (the generator reproduces the earlier months byte for
   byte and adds one);
2. the floors: (a) DuckDB loading every delivered file once, typed, into a table;
   (b) DuckDB only counting the rows of every file (``bench.floor``);
3. a full refresh through the real Dagster job (``jisr.refresh.run_refresh`` in its own
   process): wall time, peak RSS and CPU time of the whole process tree, seconds and CPU
   seconds per stage;
4. a bare ``dbt build --full-refresh`` on the same raw layer (same JISR_HOME);
5. the new month's files copied into the landing area, then an incremental refresh;
6. a refresh with no new delivery right after it: what every refresh costs whatever it is
   given (the incremental ratio cannot go below it while those steps stay);
7. the share of each disclosure-controlled table's cells that the serving warehouse
   publishes after the incremental refresh (``quality.disclosure.published_cells``): what
   evaluators can read;

and once per run the time to load the Dagster definitions in a fresh interpreter. The
ratios and targets go to ``BENCHMARKS.md`` and the raw figures to ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench import report
from bench.measure import log_tail, run_measured
from jisr.settings import PROJECT_DIR, get_settings

BENCH_KEY = "bench-only-key-synthetic-data-0123456789"
DEFAULT_SCALES = (100_000, 1_000_000)
DEFINITIONS_SNIPPET = ("import time; t = time.perf_counter(); from orchestration.definitions import defs; "
                       "defs.resolve_asset_graph(); print(time.perf_counter() - t)")


class BenchError(RuntimeError):
    pass


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("JISR_PSEUDONYM_KEY_FILE", "JISR_DEMO", "DAGSTER_HOME", "JISR_HOME")}
    env.update(JISR_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), JISR_PSEUDONYM_KEY=BENCH_KEY,
               DBT_SEND_ANONYMOUS_USAGE_STATS="False", PYTHONUNBUFFERED="1")
    return env


def say(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", flush=True)


def _python() -> str:
    return sys.executable


def _checked(measured, what: str):
    if measured.returncode != 0:
        raise BenchError(f"{what} failed (exit {measured.returncode}); log {measured.log_path}:\n{log_tail(measured.log_path)}")
    return measured


def generate(out: Path, truth: Path, beneficiaries: int, months: int, seed: int, env: dict, logs: Path) -> dict:
    cmd = [_python(), "-m", "jisr.cli", "generate", "--beneficiaries", str(beneficiaries), "--months", str(months),
           "--seed", str(seed), "--out", str(out), "--truth", str(truth), "--quiet"]
    m = _checked(run_measured(cmd, env=env, cwd=PROJECT_DIR, log_path=logs / f"generate-{months}.log"), "generation")
    facts = json.loads(truth.read_text())
    return {"files": len(facts["files"]), "rows": sum(facts["files"].values()), "bytes": sum(facts["bytes"].values()),
            "generate_seconds": m.wall_seconds, "generate_peak_rss": m.peak_rss}


def new_files(landing: Path, next_dir: Path) -> list[Path]:
    """Files of the months+1 generation that the landing area does not hold as they are."""
    out = []
    for path in sorted(next_dir.glob("*/*")):
        target = landing / path.relative_to(next_dir)
        if not target.exists() or not filecmp.cmp(path, target, shallow=False):
            out.append(path)
    return out


def copy_new_files(landing: Path, next_dir: Path) -> list[Path]:
    """Deliver the files of ``next_dir`` that the landing area lacks (or holds another
    version of): the month an incremental refresh picks up. Returns them (in ``next_dir``)."""
    added = new_files(landing, next_dir)
    for path in added:
        target = landing / path.relative_to(next_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return added


def floor(kind: str, landing: Path, work: Path, env: dict, logs: Path) -> dict:
    out = work / f"floor-{kind}.json"
    cmd = [_python(), "-m", "bench.floor", kind, str(landing), str(out)] + ([str(work / "floor.duckdb")] if kind == "load" else [])
    m = _checked(run_measured(cmd, env=env, cwd=PROJECT_DIR, log_path=logs / f"floor-{kind}.log"), f"floor {kind}")
    result = json.loads(out.read_text())
    result.update(wall=m.wall_seconds, peak_rss=m.peak_rss)
    (work / "floor.duckdb").unlink(missing_ok=True)
    return result


def fresh_manifest(env: dict, logs: Path) -> None:
    """dbt parse now if the dbt project changed, so no refresh below pays for it."""
    cmd = [_python(), "-c", "from jisr.dbt import ensure_manifest; from jisr.settings import get_settings; "
                            "ensure_manifest(get_settings())"]
    _checked(run_measured(cmd, env=env, cwd=PROJECT_DIR, log_path=logs / "manifest.log"), "dbt parse")


def shown_path(path) -> str:
    """A path as recorded in the results: relative to the project (no machine's paths)."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_DIR))
    except ValueError:
        return Path(path).name


def refresh(name: str, env: dict, work: Path, logs: Path, full_refresh: bool = False) -> dict:
    fresh_manifest(env, logs)
    out = work / f"{name}.json"
    cmd = [_python(), "-m", "bench.refresh_child", str(out)] + (["--full-refresh"] if full_refresh else [])
    m = run_measured(cmd, env=env, cwd=PROJECT_DIR, log_path=logs / f"{name}.log")
    if not out.exists():
        raise BenchError(f"{name} refresh crashed (exit {m.returncode}); log {m.log_path}:\n{log_tail(m.log_path)}")
    child = json.loads(out.read_text())
    # Wall time up to the end of the refresh (reading the step timings back is not counted).
    wall = child["finished_at"] - m.started_at
    result = {"wall": wall, "process_wall": m.wall_seconds, "peak_rss": m.peak_rss, "samples": m.samples,
              "success": child["success"], "failures": child["failures"], "run_id": child["run_id"],
              "load_average": m.load_average, "stages": report.breakdown(child, wall), "log": shown_path(m.log_path),
              "steps": child.get("steps", {}), "peak_rss_by_stage": report.peak_by_stage(child, m),
              "cpu_seconds": m.cpu_seconds, "cpu_by_stage": report.cpu_by_stage(child, m)}
    if not child["success"]:
        say(f"{name} refresh FAILED: {'; '.join(child['failures'])[:500]} (log {m.log_path})")
    return result


def bare_dbt(env: dict, work: Path, logs: Path) -> dict:
    fresh_manifest(env, logs)
    dbt_dir = PROJECT_DIR / "dbt_project"
    target = work / "dbt-target"
    cmd = [str(Path(_python()).with_name("dbt")), "--no-version-check", "build", "--full-refresh",
           "--project-dir", str(dbt_dir), "--profiles-dir", str(dbt_dir),
           "--target-path", str(target), "--log-path", str(work / "dbt-logs")]
    m = run_measured(cmd, env=env, cwd=PROJECT_DIR, log_path=logs / "bare-dbt.log")
    result = {"wall": m.wall_seconds, "peak_rss": m.peak_rss, "cpu_seconds": m.cpu_seconds, "returncode": m.returncode,
              "load_average": m.load_average, "log": shown_path(m.log_path)}
    results_path = target / "run_results.json"
    if results_path.exists():
        nodes = json.loads(results_path.read_text())["results"]
        nodes.sort(key=lambda n: n.get("execution_time") or 0, reverse=True)
        result["slowest"] = [{"unique_id": n["unique_id"], "seconds": n["execution_time"]} for n in nodes[:8]]
        result["nodes"] = len(nodes)
    if m.returncode != 0:
        say(f"bare dbt build exited {m.returncode} (log {m.log_path})")
    return result


def definitions_load(env: dict, logs: Path, repeats: int = 3) -> dict:
    """Seconds to import the code location and resolve its asset graph in a fresh interpreter."""
    fresh_manifest(env, logs)
    times = []
    for i in range(repeats + 1):
        done = subprocess.run([_python(), "-c", DEFINITIONS_SNIPPET], env=env, cwd=PROJECT_DIR,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"loading the definitions failed:\n{done.stderr[-3000:]}")
        times.append(float(done.stdout.strip().splitlines()[-1]))
    t0 = time.perf_counter()
    subprocess.run([_python(), "-c", "pass"], check=True)
    interpreter = time.perf_counter() - t0
    return {"first": times[0], "runs": times[1:], "median": report.median(times[1:]), "interpreter": interpreter}


def published_cells(serving: Path) -> list[dict]:
    """Cells and published cells of every disclosure-controlled table of the serving file."""
    import duckdb

    from quality.disclosure import published_cells as shares

    if not serving.exists():
        return []
    con = duckdb.connect(str(serving), read_only=True)
    try:
        return [{"table": table, "cells": cells, "published": shown}
                for table, cells, shown in shares(con, config=PROJECT_DIR / "config" / "disclosure.yml")]
    finally:
        con.close()


def bench_scale(beneficiaries: int, months: int, seed: int, root: Path, keep: bool) -> dict:
    work = root / f"scale-{beneficiaries}"
    if work.exists():
        shutil.rmtree(work)
    home, next_dir, logs = work / "home", work / "next", work / "logs"
    env = child_env(home)
    landing = home / "landing"
    figures: dict = {"beneficiaries": beneficiaries, "months": months}
    try:
        say(f"{beneficiaries:,} beneficiaries: generating {months} months, then {months + 1}")
        figures["data"] = generate(landing, work / "truth.json", beneficiaries, months, seed, env, logs)
        generate(next_dir, work / "truth-next.json", beneficiaries, months + 1, seed, env, logs)
        say(f"  {figures['data']['rows']:,} rows, {figures['data']['bytes'] / 1e6:,.0f} MB; floors")
        figures["floor_count"] = floor("count", landing, work, env, logs)
        figures["floor_load"] = floor("load", landing, work, env, logs)
        say(f"  floor (a) {figures['floor_load']['seconds']:.1f} s, (b) {figures['floor_count']['seconds']:.1f} s; full refresh")
        figures["full"] = refresh("full", env, work, logs)
        say(f"  full refresh {figures['full']['wall']:.1f} s, peak {figures['full']['peak_rss'] / 2**20:,.0f} MiB; bare dbt build")
        figures["bare_dbt"] = bare_dbt(env, work, logs)
        say(f"  bare dbt build {figures['bare_dbt']['wall']:.1f} s; incremental refresh")
        added = copy_new_files(landing, next_dir)
        truth_next = json.loads((work / "truth-next.json").read_text())
        names = [str(p.relative_to(next_dir)) for p in added]
        figures["increment"] = {"files": len(added), "names": names,
                                "rows": sum(truth_next["files"].get(n, 0) for n in names),
                                "bytes": sum(p.stat().st_size for p in added)}
        figures["incremental"] = refresh("incremental", env, work, logs)
        say(f"  incremental refresh {figures['incremental']['wall']:.1f} s; refresh with no new delivery")
        figures["published_cells"] = published_cells(home / "warehouse" / "jisr.duckdb")
        figures["unchanged"] = refresh("unchanged", env, work, logs)
        say(f"  refresh with no new delivery {figures['unchanged']['wall']:.1f} s")
    finally:
        if not keep:
            for path in (home, next_dir, work / "dbt-target"):
                shutil.rmtree(path, ignore_errors=True)
    return figures


def _cgroup_cpu_quota(root: Path) -> float | None:
    """The CPU quota of this process's cgroup in cores, if one is set: cgroup v2's
    ``cpu.max`` ("<quota> <period>" or "max <period>"), else v1's ``cpu.cfs_quota_us`` over
    ``cpu.cfs_period_us`` (-1: none). Read at the cgroup root, which a container sees as its own."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """Cores this process may use: those of its CPU affinity, at most its cgroup's CPU quota
    (a container's limit). The machine's logical cores (``os.cpu_count()``) overstate them
    under either limit."""
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = _cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, quota)
    return int(cores) if cores.is_integer() else round(cores, 2)


def machine_facts() -> dict:
    import dagster
    import duckdb
    import psutil
    from importlib.metadata import version

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": usable_cores(), "logical_cores": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total,
            "load_average": os.getloadavg(), "python": platform.python_version(), "duckdb": duckdb.__version__,
            "dagster": dagster.__version__, "dbt": version("dbt-core")}


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_DIR, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_DIR,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(scales: list[int], months: int = 12, seed: int = 42, workdir: Path | None = None, out: Path | None = None,
        results: Path | None = None, keep: bool = False, command: str = "make bench") -> dict:
    root = Path(workdir or get_settings().home / "bench").resolve()
    root.mkdir(parents=True, exist_ok=True)
    out = Path(out or PROJECT_DIR / "BENCHMARKS.md")
    results = Path(results or PROJECT_DIR / "bench" / "results.json")
    machine = machine_facts()
    commit = _commit()
    say(f"load average {machine['load_average'][0]:.2f} on {machine['cores']} cores; definitions load")
    env = child_env(root / "definitions-home")
    definitions = definitions_load(env, root / "logs")
    say(f"  definitions load {definitions['median']:.2f} s (median)")
    figures = [bench_scale(n, months, seed, root, keep) for n in sorted(scales)]
    ratios = report.compute_ratios(figures, definitions, cores=machine["cores"])
    run_figures = {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                   "commit": commit, "commit_end": _commit(), "months": months, "seed": seed, "machine": machine,
                   "load_average_end": os.getloadavg(), "definitions": definitions, "scales": figures,
                   "ratios": ratios, "targets": report.targets(ratios)}
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(run_figures, indent=2, default=str))
    report.write_report(out, report.render(run_figures))
    say(f"wrote {out} and {results}")
    return run_figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scales", default=",".join(str(s) for s in DEFAULT_SCALES),
                        help="comma-separated numbers of beneficiaries (default 100000,1000000)")
    parser.add_argument("--months", type=int, default=12, help="monthly deliveries of the full refresh (default 12)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the generated deliveries (default 42)")
    parser.add_argument("--workdir", help="scratch folder (default $JISR_HOME/bench)")
    parser.add_argument("--out", help="report to write (default BENCHMARKS.md)")
    parser.add_argument("--results", help="raw figures as JSON (default bench/results.json)")
    parser.add_argument("--keep", action="store_true", help="keep each scale's JISR_HOME for inspection")


def main(args: argparse.Namespace, command: str = "make bench") -> int:
    scales = [int(s.replace("_", "")) for s in args.scales.split(",") if s.strip()]
    try:
        figures = run(scales, months=args.months, seed=args.seed, workdir=args.workdir and Path(args.workdir),
                      out=args.out and Path(args.out), results=args.results and Path(args.results), keep=args.keep,
                      command=command)
    except BenchError as exc:
        print(f"jisr bench: {exc}", file=sys.stderr)
        return 1
    for t in figures["targets"]:
        verdict = "n/a" if t["passed"] is None else ("pass" if t["passed"] else "FAIL")
        print(f"{t['label']}: {report._fmt(t['value'], t['unit'])} (limit {report._fmt(t['limit'], t['unit'])}) {verdict}")
    failed_runs = [s["beneficiaries"] for s in figures["scales"]
                   if not (s["full"]["success"] and s["incremental"]["success"])]
    return 1 if failed_runs else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    add_arguments(p)
    sys.exit(main(p.parse_args(), command="python -m bench.run " + " ".join(sys.argv[1:])))
