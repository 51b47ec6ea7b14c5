"""Ratios, targets and the Markdown report of a benchmark run (``BENCHMARKS.md``).

Every ratio is computed from figures of the same run. The report is written between two
markers; text outside them (e.g. a Spark section added by hand) is kept on a re-run.
"""

from __future__ import annotations

import statistics
from pathlib import Path

BEGIN = "<!-- bench:begin: written by `make bench` (bench/run.py); text outside these markers is kept -->"
END = "<!-- bench:end -->"
STAGES = ("ingestion", "quality", "dbt", "impact", "publish")
GIB = 1 << 30
MIB = 1 << 20

# (key, label, limit, unit): see `targets`.
TARGETS = (
    ("full_over_floor", "Full refresh / floor (a) typed load", 5.0, "x"),
    ("incremental_over_full", "Incremental refresh (one new month) / full refresh", 0.15, "share"),
    ("peak_rss", "Peak memory of the refresh process tree", 3 * GIB, "bytes"),
    ("rss_growth", "Peak memory growth, largest / smallest scale", 3.0, "x"),
    ("definitions_load", "Dagster definitions load", 5.0, "s"),
    ("wall_growth", "Full refresh wall time growth, largest / smallest scale", None, "x"),
)

RESULT_ROWS = (
    "Delivered files",
    "Delivered rows",
    "Delivered data (MB)",
    "Generation (s)",
    "Floor (a): typed load of every file into DuckDB (s)",
    "Floor (b): DuckDB counting the rows of every file (s)",
    "Floor (a): CPU time, all cores (s)",
    "Full refresh: wall (s)",
    "Full refresh: peak RSS of the process tree (MiB)",
    "Full refresh: CPU time of the process tree, all cores (s)",
    "Full refresh: cores busy on average (CPU time / wall)",
    "Full refresh: delivered rows per second",
    "Incremental: new files / rows",
    "Incremental refresh: wall (s)",
    "Incremental refresh: peak RSS (MiB)",
    "Incremental refresh: CPU time, all cores (s)",
    "Refresh with no new delivery (right after): wall (s)",
    "Bare `dbt build` on the same raw layer: wall (s)",
    "Bare `dbt build`: peak RSS (MiB)",
    "Bare `dbt build`: CPU time, all cores (s)",
    "dbt step in the job / bare `dbt build`",
    "Full refresh / floor (a)",
    "Full refresh CPU time / floor (a) CPU time",
    "Incremental / full refresh",
    "Incremental refresh's dbt step alone / full refresh",
    "Refresh with no new delivery / full refresh",
    "Full refresh CPU time / the most the 5x target allows (5 x floor (a) wall x cores)",
    "Load average (1 min) at the start of the full refresh",
    "Load average (1 min) at the start of the incremental refresh",
)
STAGE_ROWS = (*STAGES, "start-up and bookkeeping")
# The refreshes of each scale, in the order they run: the full refresh, one more month, then
# nothing new (what a refresh costs whatever it is given: the incremental ratio's floor).
KINDS = ("full", "incremental", "unchanged")
# Parts of a stage, shown under the stages: what dominates inside them.
GE_PART = "quality: Great Expectations suites (inside the ingestion step)"
BUILD_PART = "dbt: `dbt build` (inside the step)"
DOCS_PART = "dbt: `dbt docs generate` (inside the step)"
PRE_RUN_PART = "start-up: process start to the run's first event"
PART_ROWS = (GE_PART, BUILD_PART, DOCS_PART, PRE_RUN_PART)


# -- figures ------------------------------------------------------------------------------
def stage_of(step_key: str) -> str:
    """The report stage of a Dagster step key."""
    k = step_key.lower()
    if "check" in k:
        return "quality"
    if k.startswith("ingest"):
        return "ingestion"
    if "serving" in k or "publish" in k or "candidate" in k:
        return "publish"
    if "dbt" in k or k.startswith("warehouse"):
        return "dbt"
    if "impact" in k:
        return "impact"
    return "other"


def breakdown(child: dict, wall: float) -> dict:
    """Seconds per stage from the step timings of a refresh; the rest of the wall time is
    start-up (interpreter, imports, definitions) and run bookkeeping."""
    out = {s: 0.0 for s in STAGES}
    out["other steps"] = 0.0  # a step no stage claims (kept visible if a new step appears)
    steps = child.get("steps", {})
    for key, step in steps.items():
        if "start" in step and "end" in step:
            stage = stage_of(key)
            out[stage if stage in out else "other steps"] += step["end"] - step["start"]
    out["start-up and bookkeeping"] = max(wall - sum(out.values()), 0.0)
    if not out["other steps"]:
        del out["other steps"]
    validation = child.get("validation_seconds")
    if validation:  # the Great Expectations suites run inside the ingestion step: count them as quality
        moved = min(validation, out["ingestion"])
        out["ingestion"] -= moved
        out["quality"] += moved
        out[GE_PART] = validation
    run = child.get("run", {})
    if "start" in run and "started_at" in child:
        out[PRE_RUN_PART] = run["start"] - child["started_at"]
    commands = {c["command"]: c["finished"] for c in child.get("dbt_commands", [])}
    dbt_steps = [s for k, s in steps.items() if stage_of(k) == "dbt" and "start" in s]
    if dbt_steps and "build" in commands:
        out[BUILD_PART] = commands["build"] - dbt_steps[0]["start"]
        if "docs generate" in commands:
            out[DOCS_PART] = commands["docs generate"] - commands["build"]
    return out


def peak_by_stage(child: dict, measured) -> dict:
    """Peak summed RSS of the process tree while each stage's steps ran (dbt's subprocess included)."""
    out: dict[str, int] = {}
    for key, step in child.get("steps", {}).items():
        if "start" in step and "end" in step:
            stage = stage_of(key)
            out[stage] = max(out.get(stage, 0), measured.peak_between(step["start"], step["end"]))
    run = child.get("run", {})
    if "start" in run:
        out["start-up and bookkeeping"] = measured.peak_between(measured.started_at, run["start"])
    return out


def cpu_by_stage(child: dict, measured) -> dict:
    """CPU seconds (all cores) the process tree used while each stage's steps ran, from the
    sampled CPU timeline, with the wall seconds of those steps: ``{stage: {"cpu", "wall"}}``.
    The rest, up to the end of the refresh, is start-up and bookkeeping. The job's steps run
    one after the other (in-process executor); overlapping steps would each count the CPU
    the tree used while both ran."""
    out: dict[str, dict[str, float]] = {}
    for key, step in child.get("steps", {}).items():
        if "start" in step and "end" in step:
            part = out.setdefault(stage_of(key), {"cpu": 0.0, "wall": 0.0})
            part["cpu"] += measured.cpu_between(step["start"], step["end"])
            part["wall"] += step["end"] - step["start"]
    end = child.get("finished_at")
    if end is not None:
        out["start-up and bookkeeping"] = {
            "cpu": max(measured.cpu_at(end) - sum(p["cpu"] for p in out.values()), 0.0),
            "wall": max(end - measured.started_at - sum(p["wall"] for p in out.values()), 0.0)}
    return out


def compute_ratios(scales: list[dict], definitions: dict, cores: float | None = None) -> dict:
    """The issue's ratios, each from figures of this run (largest and smallest scale), and
    bounds beside them: the incremental refresh's dbt step alone as a share of the full
    refresh (the incremental ratio cannot go below it while the build does not shrink), a
    refresh with no new delivery as a share of the full refresh (what every refresh costs
    whatever it is given), and the full refresh's CPU time over the most the 5x target leaves
    on ``cores`` cores (above 1, no scheduling meets the target: the work has to shrink)."""
    ok = [s for s in scales if s.get("full", {}).get("success")]
    ratios: dict = {"definitions_load": definitions.get("median")}
    for s in scales:
        full, inc, floor = s.get("full", {}), s.get("incremental", {}), s.get("floor_load", {})
        unchanged = s.get("unchanged", {})
        target_wall = 5.0 * floor["seconds"] if floor.get("seconds") is not None else None
        s["ratios"] = {
            "full_over_floor": _div(full.get("wall"), floor.get("seconds")),
            "incremental_over_full": _div(inc.get("wall"), full.get("wall")),
            "incremental_dbt_over_full": _div(inc.get("stages", {}).get("dbt"), full.get("wall")),
            "unchanged_over_full": _div(unchanged.get("wall"), full.get("wall")),
            "full_cpu_over_target_cpu": (_div(full.get("cpu_seconds"), target_wall * cores)
                                         if target_wall is not None and cores else None),
            "dbt_step_over_bare": _div(full.get("stages", {}).get("dbt"), s.get("bare_dbt", {}).get("wall")),
            "full_cpu_over_floor_cpu": _div(full.get("cpu_seconds"), floor.get("cpu_seconds")),
            "full_cores_busy": _div(full.get("cpu_seconds"), full.get("wall")),
        }
    if not ok:
        return ratios
    large, small = ok[-1], ok[0]
    ratios.update(
        scale=large["beneficiaries"],
        full_over_floor=large["ratios"]["full_over_floor"],
        incremental_over_full=large["ratios"]["incremental_over_full"],
        peak_rss=max(large.get(kind, {}).get("peak_rss", 0) for kind in KINDS),
    )
    if large is not small:
        ratios.update(
            data_growth=large["beneficiaries"] / small["beneficiaries"],
            bytes_growth=_div(large["data"]["bytes"], small["data"]["bytes"]),
            rss_growth=_div(large["full"]["peak_rss"], small["full"]["peak_rss"]),
            wall_growth=_div(large["full"]["wall"], small["full"]["wall"]),
        )
    return ratios


def targets(ratios: dict) -> list[dict]:
    """Each target with its measured value, limit and pass/fail (None: not measurable)."""
    rows = []
    growth = ratios.get("data_growth")
    for key, label, limit, unit in TARGETS:
        if key == "wall_growth":
            limit = 1.1 * growth if growth else 11.0  # linear in the data: 11x for 10x
        value = ratios.get(key)
        rows.append({"key": key, "label": label, "value": value, "limit": limit, "unit": unit,
                     "passed": None if value is None else value <= limit})
    return rows


def _div(a, b):
    return a / b if a is not None and b else None


# -- formatting ---------------------------------------------------------------------------
def _s(x, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _mib(x) -> str:
    return "n/a" if not x else f"{x / MIB:,.0f}"


def _fmt(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "bytes":
        return f"{value / GIB:.2f} GiB"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def result_cells(s: dict) -> dict[str, str]:
    data, full, inc, bare = s.get("data", {}), s.get("full", {}), s.get("incremental", {}), s.get("bare_dbt", {})
    unchanged = s.get("unchanged")
    r = s.get("ratios", {})
    increment = s.get("increment", {})
    rows_per_s = _div(data.get("rows"), full.get("wall"))
    return {
        "Delivered files": _s(data.get("files"), 0),
        "Delivered rows": _s(data.get("rows"), 0),
        "Delivered data (MB)": _s(data.get("bytes", 0) / 1e6),
        "Generation (s)": _s(data.get("generate_seconds")),
        "Floor (a): typed load of every file into DuckDB (s)": _s(s.get("floor_load", {}).get("seconds"), 2),
        "Floor (b): DuckDB counting the rows of every file (s)": _s(s.get("floor_count", {}).get("seconds"), 2),
        "Floor (a): CPU time, all cores (s)": _s(s.get("floor_load", {}).get("cpu_seconds"), 2),
        "Full refresh: wall (s)": _s(full.get("wall")) + ("" if full.get("success", True) else " (FAILED)"),
        "Full refresh: peak RSS of the process tree (MiB)": _mib(full.get("peak_rss")),
        "Full refresh: CPU time of the process tree, all cores (s)": _s(full.get("cpu_seconds")),
        "Full refresh: cores busy on average (CPU time / wall)": _s(r.get("full_cores_busy"), 2),
        "Full refresh: delivered rows per second": _s(rows_per_s, 0),
        "Incremental: new files / rows": f"{_s(increment.get('files'), 0)} / {_s(increment.get('rows'), 0)}",
        "Incremental refresh: wall (s)": _s(inc.get("wall")) + ("" if inc.get("success", True) else " (FAILED)"),
        "Incremental refresh: peak RSS (MiB)": _mib(inc.get("peak_rss")),
        "Incremental refresh: CPU time, all cores (s)": _s(inc.get("cpu_seconds")),
        "Refresh with no new delivery (right after): wall (s)": "n/a" if unchanged is None else
            _s(unchanged.get("wall")) + ("" if unchanged.get("success", True) else " (FAILED)"),
        "Bare `dbt build` on the same raw layer: wall (s)": _s(bare.get("wall")) + ("" if bare.get("returncode", 0) == 0 else " (FAILED)"),
        "Bare `dbt build`: peak RSS (MiB)": _mib(bare.get("peak_rss")),
        "Bare `dbt build`: CPU time, all cores (s)": _s(bare.get("cpu_seconds")),
        "dbt step in the job / bare `dbt build`": _fmt(r.get("dbt_step_over_bare"), "x"),
        "Full refresh / floor (a)": _fmt(r.get("full_over_floor"), "x"),
        "Full refresh CPU time / floor (a) CPU time": _fmt(r.get("full_cpu_over_floor_cpu"), "x"),
        "Incremental / full refresh": _fmt(r.get("incremental_over_full"), "share"),
        "Incremental refresh's dbt step alone / full refresh": _fmt(r.get("incremental_dbt_over_full"), "share"),
        "Refresh with no new delivery / full refresh": _fmt(r.get("unchanged_over_full"), "share"),
        "Full refresh CPU time / the most the 5x target allows (5 x floor (a) wall x cores)":
            _fmt(r.get("full_cpu_over_target_cpu"), "x"),
        "Load average (1 min) at the start of the full refresh": _s((full.get("load_average") or [None])[0], 2),
        "Load average (1 min) at the start of the incremental refresh": _s((inc.get("load_average") or [None])[0], 2),
    }


def published_table(scales: list[dict]) -> list[list[str]]:
    """Rows of the published-cells table: one per table (and measure group), one column per scale."""
    tables = list(dict.fromkeys(t["table"] for s in scales for t in s.get("published_cells", [])))
    rows = []
    for table in tables:
        row = [table]
        for s in scales:
            found = next((t for t in s.get("published_cells", []) if t["table"] == table), None)
            row.append("n/a" if found is None else
                       f"{found['published'] / found['cells']:.0%} of {found['cells']:,}" if found["cells"] else "no cells")
        rows.append(row)
    return rows


def render(run: dict) -> str:
    scales, ratios, definitions, machine = run["scales"], run["ratios"], run["definitions"], run["machine"]
    names = [f"{s['beneficiaries']:,}" for s in scales]
    out = [BEGIN, "", "# Benchmarks", "",
           f"Measured by `{run['command']}` on {run['date']} (commit `{run['commit']}`), "
           f"{run['months']} monthly deliveries, then one more month for the incremental refresh."
           + (f" The code changed during the run (commit `{run['commit_end']}` at the end)."
              if run.get("commit_end", run["commit"]) != run["commit"] else ""), ""]
    out += ["## Machine", "",
            f"- CPU: {machine['cpu']} ({machine.get('logical_cores', machine['cores'])} logical cores, "
            f"{machine['cores']} usable by the run: its CPU affinity and cgroup quota)",
            f"- Memory: {machine['ram_bytes'] / GIB:.1f} GiB; Python {machine['python']}, DuckDB {machine['duckdb']}, "
            f"Dagster {machine['dagster']}, dbt-core {machine['dbt']}",
            f"- Load average at the start of the run: {' / '.join(f'{x:.2f}' for x in machine['load_average'])} (1 / 5 / 15 min); "
            f"at the end: {' / '.join(f'{x:.2f}' for x in run.get('load_average_end', machine['load_average']))}",
            "",
            "The machine is shared and its load varies, so absolute seconds are noisy. The targets are "
            "ratios of figures measured in this one run (the floor, the refresh and the incremental "
            "refresh of a scale run back to back), which the load affects far less.", ""]
    largest = f"{ratios['scale']:,}" if ratios.get("scale") else "the largest scale"
    out += [f"## Targets (at {largest} beneficiaries)", ""]
    rows = []
    for t in targets(ratios):
        limit = _fmt(t["limit"], t["unit"])
        verdict = "n/a" if t["passed"] is None else ("pass" if t["passed"] else "**FAIL**")
        rows.append([t["label"], _fmt(t["value"], t["unit"]), f"<= {limit}", verdict])
    out += _table(["target", "measured", "limit", "result"], rows)
    if ratios.get("data_growth"):
        out += ["", f"From the smallest to the largest scale, beneficiaries grow {ratios['data_growth']:.0f}x and "
                    f"delivered bytes {ratios['bytes_growth']:.1f}x (the survey files do not grow with the registry)."]
    out += ["", "## Results", ""]
    cells = [result_cells(s) for s in scales]
    out += _table(["measure", *names], [[label, *(c[label] for c in cells)] for label in RESULT_ROWS])
    out += ["", "Definitions load (fresh interpreter, `from orchestration.definitions import defs; "
                f"defs.resolve_asset_graph()`): median {_s(definitions.get('median'), 2)} s of "
                f"{len(definitions.get('runs', []))} runs (first run {_s(definitions.get('first'), 2)} s; "
                f"bare interpreter start-up {_s(definitions.get('interpreter'), 2)} s, not included).", ""]
    out += ["## Where the time goes (seconds per stage)", "",
            "From the STEP_START / STEP_SUCCESS events of each run in the Dagster instance; "
            "\"start-up and bookkeeping\" is the rest of the wall time (interpreter, imports, loading "
            "the definitions, creating the run, event writes between steps). Quality is the asset-check "
            "steps plus the Great Expectations suites, which run inside the ingestion step (their time "
            "is read from `quality.gx_results` and moved from ingestion to quality: the time the ingestion "
            "process's main thread spent on them, validating or waiting for the worker; a delivery the worker "
            "validated while the ingestion typed the next one counts only the wait; the ingestion's second "
            "thread prepares the next file meanwhile, and that overlapped time counts as quality).", ""]
    kinds = [kind for kind in KINDS if any(kind in s for s in scales)]  # runs before "unchanged" lack it
    run_columns = [f"{n} {'no new delivery' if kind == 'unchanged' else kind}" for n in names for kind in kinds]
    header = ["stage"] + run_columns
    stage_rows = []
    extra = sorted({k for s in scales for kind in kinds
                    for k in s.get(kind, {}).get("stages", {}) if k not in STAGE_ROWS + PART_ROWS})
    for stage in (*STAGE_ROWS, *extra, *PART_ROWS):
        stage_rows.append([stage] + [_s(s.get(kind, {}).get("stages", {}).get(stage))
                                     for s in scales for kind in kinds])
    out += _table(header, stage_rows)
    out += ["", "Peak RSS of the process tree while each stage ran (MiB; the dbt stage includes dbt's own process):", ""]
    out += _table(header,
                  [[stage] + [_mib(s.get(kind, {}).get("peak_rss_by_stage", {}).get(stage))
                              for s in scales for kind in kinds] for stage in STAGE_ROWS])
    out += ["", "CPU time per stage (seconds, all cores, from the process tree sampled every 0.1 s; "
                "a process's last tenth of a second before it exits is not seen) and cores busy on average "
                "(CPU time / wall seconds of the stage's steps; the run has "
                f"{machine['cores']} usable cores). Quality here is the asset-check steps only: the "
                "suites run inside the ingestion step, on its threads and worker processes.", ""]
    cpu_rows = []
    cpu_extra = sorted({k for s in scales for kind in kinds
                        for k in s.get(kind, {}).get("cpu_by_stage", {}) if k not in STAGE_ROWS})
    for stage in (*STAGE_ROWS, *cpu_extra):
        row = [stage]
        for s in scales:
            for kind in kinds:
                part = s.get(kind, {}).get("cpu_by_stage", {}).get(stage)
                row.append("n/a" if part is None else f"{part['cpu']:,.1f} ({_s(_div(part['cpu'], part['wall']), 2)})")
        cpu_rows.append(row)
    out += _table(["stage: CPU s (cores busy)"] + run_columns, cpu_rows)
    slow = scales[-1].get("bare_dbt", {}).get("slowest") if scales else None
    if slow:
        out += ["", f"Slowest dbt nodes of the bare build at {names[-1]} beneficiaries (dbt's run_results.json):", ""]
        out += _table(["node", "seconds"], [[n["unique_id"], _s(n["seconds"], 2)] for n in slow])
    out += ["", "## Scale (DuckDB)", "",
            "The whole refresh on one machine with DuckDB, per number of registered beneficiaries:", ""]
    out += _table(["beneficiaries", "delivered rows", "data (MB)", "full refresh (s)", "peak RSS (MiB)",
                   "incremental (s)", "rows per second"],
                  [[n, c["Delivered rows"], c["Delivered data (MB)"], c["Full refresh: wall (s)"],
                    c["Full refresh: peak RSS of the process tree (MiB)"], c["Incremental refresh: wall (s)"],
                    c["Full refresh: delivered rows per second"]] for n, c in zip(names, cells)])
    shares = published_table(scales)
    if shares:
        out += ["", "## Published cells (disclosure control)", "",
                "Share of each disclosure-controlled table's cells whose figures the serving warehouse "
                "publishes after the incremental refresh (the rest are suppressed: fewer than k people, "
                "or hidden so that those cannot be recomputed):", ""]
        out += _table(["table", *names], shares)
    if ratios.get("wall_growth"):
        out += ["", f"Wall time grows {ratios['wall_growth']:.2f}x and peak memory {ratios['rss_growth']:.2f}x "
                    f"for {ratios['data_growth']:.0f}x the beneficiaries."]
    out += ["", "## How to run", "",
            "`make bench` (or `jisr bench`; `--scales 100000,1000000` by default, `--months 12`, "
            "`--workdir`, `--keep`). Raw figures of the run: `bench/results.json`. It takes about 7 "
            "minutes on 2 cores and about 6 GB of free disk at 1,000,000 beneficiaries. "
            "`python -m bench.profile [--incremental]` profiles one refresh with pyinstrument; "
            "`python -m bench.hierarchical` measures what each protected table would publish with "
            "its marginals protected in the same system (on a kept scale: `JISR_HOME=<workdir>/scale-<n>/home`).",
            "", END]
    return "\n".join(out) + "\n"


def write_report(path: Path, text: str) -> None:
    """Replace the text between the markers; keep everything outside them."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        before, rest = old.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        new = before + text.rstrip("\n") + after
    elif old.strip():
        new = text + "\n" + old
    else:
        new = text
    path.write_text(new)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
