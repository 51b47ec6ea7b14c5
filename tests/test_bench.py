"""The performance benchmark (``make bench``): its measurements, ratios, targets and report.

The fast tests check each part on hand-made inputs; ``test_bench_smoke_run_writes_every_row``
runs the whole benchmark (generator, floors, the real Dagster refresh, bare dbt build,
incremental refresh) at a tiny scale so the harness cannot rot. It takes several minutes
(three refreshes through the real dbt project), so it is marked slow (``make test-slow``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import floor, report
from bench.measure import run_measured
from bench.run import new_files
from tests.conftest import PROGRAMME, payment, person, write_delivery


# -- floors ------------------------------------------------------------------------------
def test_floor_load_and_count_read_every_row_of_each_format(tmp_path, contracts):
    landing = tmp_path / "landing"
    programme = dict(PROGRAMME, budget_mad="1500000,50")  # the floor reads numbers natively (no digit groups)
    write_delivery(landing, contracts["programmes"], "programmes_2025-01.csv",
                   [programme, dict(programme, programme_code="DSD-02", name_fr="Aide – forfaitaire")])
    write_delivery(landing, contracts["beneficiaries"], "registre_2025-01.csv", [person(i) for i in range(7)])
    write_delivery(landing, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(5)])
    loans = [{"loan_id": f"L{i}", "borrower_cin": f"AB{100000 + i}", "programme_code": "DSD-01",
              "product": "solidarity_group", "principal_mad": 1000 + i, "term_months": 12, "annual_rate_pct": 20.5,
              "disbursement_date": "2024-03-01", "status": "active"} for i in range(4)]
    write_delivery(landing, contracts["loans"], "loans_2025-01.jsonl", loans)
    ventures = [{c.name: None for c in contracts["ventures"].columns} for _ in range(3)]
    for i, v in enumerate(ventures):
        v.update(venture_id=f"V{i}", promoter_cin=f"AB{100000 + i}", programme_code="DSD-01")
    write_delivery(landing, contracts["ventures"], "ventures_2025-01.xlsx", ventures)
    (landing / "msisf" / "notes.txt").write_text("not a delivery")

    loaded = floor.floor_load(landing, tmp_path / "floor.duckdb", contracts)
    counted = floor.floor_count(landing, contracts, tmp_path)

    assert loaded["files"] == counted["files"] == 5
    assert loaded["rows"] == counted["rows"] == 2 + 7 + 5 + 4 + 3
    assert loaded["seconds"] > 0 and counted["seconds"] > 0


def test_floor_load_types_columns_by_contract(tmp_path, contracts):
    import duckdb

    landing = tmp_path / "landing"
    write_delivery(landing, contracts["payments"], "paiements_2025-01.csv", [payment(i) for i in range(3)])
    floor.floor_load(landing, tmp_path / "floor.duckdb", contracts)
    con = duckdb.connect(str(tmp_path / "floor.duckdb"), read_only=True)
    types = dict((name, typ) for name, typ, *_ in con.execute("describe f0000").fetchall())
    total = con.execute("select sum(montant_mad) from f0000").fetchone()[0]
    assert types["montant_mad"] == contracts["payments"].column("amount_mad").sql_type
    assert types["date_paiement"] == "DATE"
    assert float(total) == pytest.approx(3 * float(payment(0)["amount_mad"].replace(",", ".")))


# -- measurements ------------------------------------------------------------------------
def test_run_measured_peak_rss_includes_child_processes(tmp_path):
    size = 150 * 2**20
    grandchild = f"b = bytearray({size}); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(1.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {grandchild!r}], check=True)"
    m = run_measured([sys.executable, "-c", parent], env={}, cwd=tmp_path, log_path=tmp_path / "log.txt")
    assert m.returncode == 0
    assert m.peak_rss >= size
    assert m.wall_seconds >= 1.5


def test_run_measured_counts_the_cpu_time_of_the_whole_tree(tmp_path):
    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(0.3)"
    # the parent lives on after reaping the grandchild: a sampler also counting a process's
    # waited children (psutil's children_user) would count the loop twice
    parent = (f"import subprocess, sys, time; time.sleep(0.3); subprocess.run([sys.executable, '-c', {burn!r}], "
              "check=True); time.sleep(0.3)")
    m = run_measured([sys.executable, "-c", parent], env={}, cwd=tmp_path, log_path=tmp_path / "log.txt")
    assert m.returncode == 0
    assert m.cpu_seconds >= 0.6  # the grandchild's loop, as the operating system counts it
    assert m.cpu_seconds < m.wall_seconds  # two sleeps of 0.3 s use no CPU
    sampled = m.cpu_timeline[-1][1]
    assert 0.4 <= sampled <= m.cpu_seconds + 0.05  # seen by the sampler, at most what the OS counted
    assert m.cpu_between(m.started_at, m.started_at + 0.2) < 0.3  # the parent's sleep, before the loop


def test_cpu_by_stage_takes_the_cpu_used_inside_each_stage():
    from bench.measure import Measured

    child = _child(1000.0, {"ingest_landing": 10.0, "warehouse_dbt": 10.0})
    ingest, dbt = child["steps"]["ingest_landing"], child["steps"]["warehouse_dbt"]
    child["finished_at"] = dbt["end"] + 1.0
    cpu = [(1000.5, 0.5), (ingest["start"], 1.0), (ingest["end"], 19.0), (dbt["start"], 19.5), (dbt["end"], 31.5),
           (dbt["end"] + 0.9, 32.0)]
    measured = Measured([], 0, 30.0, 900, len(cpu), 1000.0, (0, 0, 0), "", [], 33.0, cpu)
    stages = report.cpu_by_stage(child, measured)
    assert stages["ingestion"] == {"cpu": pytest.approx(18.0), "wall": pytest.approx(10.0)}
    assert stages["dbt"] == {"cpu": pytest.approx(12.0), "wall": pytest.approx(10.0)}
    # the rest up to the end of the refresh: 32 s sampled by then, 30 of them in the stages
    assert stages["start-up and bookkeeping"]["cpu"] == pytest.approx(2.0)
    assert stages["start-up and bookkeeping"]["wall"] == pytest.approx(child["finished_at"] - 1000.0 - 20.0)
    assert measured.cpu_between(ingest["start"] + 1, ingest["end"] - 1) == 0.0  # no sample in between: nothing seen


def test_new_files_are_the_added_and_changed_ones(tmp_path):
    landing, later = tmp_path / "landing", tmp_path / "later"
    for root in (landing, later):
        (root / "p").mkdir(parents=True)
        (root / "p" / "same.csv").write_text("a\n1\n")
    (landing / "p" / "changed.csv").write_text("a\n1\n")
    (later / "p" / "changed.csv").write_text("a\n2\n")
    (later / "p" / "added.csv").write_text("a\n3\n")
    assert [p.name for p in new_files(landing, later)] == ["added.csv", "changed.csv"]


# -- figures, ratios and the report ------------------------------------------------------
def _child(started: float, steps: dict[str, float], dbt_build: float | None = None) -> dict:
    out, t = {}, started + 3.0
    for key, seconds in steps.items():
        out[key] = {"start": t, "end": t + seconds, "status": "success"}
        t += seconds + 0.5
    child = {"started_at": started, "run": {"start": started + 2.5, "end": t}, "steps": out, "dbt_commands": []}
    if dbt_build is not None:
        start = out["warehouse_dbt"]["start"]
        child["dbt_commands"] = [{"step": "warehouse_dbt", "command": "build", "finished": start + dbt_build},
                                 {"step": "warehouse_dbt", "command": "docs generate", "finished": out["warehouse_dbt"]["end"]}]
    return child


def test_breakdown_sums_steps_by_stage_and_keeps_the_rest_as_start_up():
    steps = {"ingest_landing": 10.0, "delivery_checks": 2.0, "warehouse_dbt": 30.0, "warehouse_checks": 1.0,
             "impact_stage": 5.0, "serving__candidate": 3.0, "candidate_checks": 1.5, "serving__warehouse": 2.0}
    child = _child(1000.0, steps, dbt_build=24.0)
    wall = 70.0
    stages = report.breakdown(child, wall)
    assert stages["ingestion"] == pytest.approx(10.0)
    assert stages["quality"] == pytest.approx(2.0 + 1.0 + 1.5)
    assert stages["dbt"] == pytest.approx(30.0)
    assert stages["impact"] == pytest.approx(5.0)
    assert stages["publish"] == pytest.approx(3.0 + 2.0)
    assert stages["start-up and bookkeeping"] == pytest.approx(wall - sum(steps.values()))
    assert stages[report.BUILD_PART] == pytest.approx(24.0)
    assert stages[report.DOCS_PART] == pytest.approx(6.0)
    assert stages[report.PRE_RUN_PART] == pytest.approx(2.5)
    assert "other steps" not in stages


def test_breakdown_counts_the_suites_inside_ingestion_as_quality():
    child = _child(1000.0, {"ingest_landing": 10.0, "delivery_checks": 2.0})
    child["validation_seconds"] = 4.0
    stages = report.breakdown(child, 20.0)
    assert stages["ingestion"] == pytest.approx(6.0)
    assert stages["quality"] == pytest.approx(6.0)
    assert stages["start-up and bookkeeping"] == pytest.approx(20.0 - 12.0)
    assert stages[report.GE_PART] == pytest.approx(4.0)


def _scale(n: int, wall: float, rss: int, floor_s: float, incremental: float, data_bytes: int) -> dict:
    return {"beneficiaries": n, "months": 12,
            "data": {"files": 100, "rows": n * 8, "bytes": data_bytes, "generate_seconds": 1.0},
            "floor_count": {"seconds": floor_s / 3}, "floor_load": {"seconds": floor_s, "cpu_seconds": floor_s * 1.5},
            "full": {"wall": wall, "peak_rss": rss, "success": True, "load_average": (1.0, 1.0, 1.0),
                     "stages": {"dbt": wall / 2}, "cpu_seconds": wall * 1.6,
                     "cpu_by_stage": {"dbt": {"cpu": wall * 0.7, "wall": wall / 2}}},
            "bare_dbt": {"wall": wall / 4, "peak_rss": rss // 2, "returncode": 0, "cpu_seconds": wall / 3,
                         "slowest": [{"unique_id": "model.jisr.fct_payments", "seconds": 2.0}]},
            "increment": {"files": 5, "rows": n // 2, "bytes": data_bytes // 12},
            "incremental": {"wall": incremental, "peak_rss": rss, "success": True, "stages": {}},
            "unchanged": {"wall": incremental / 2, "peak_rss": rss, "success": True, "stages": {}}}


def _run(scales: list[dict], definitions: float = 2.0) -> dict:
    defs = {"first": definitions, "runs": [definitions], "median": definitions, "interpreter": 0.02}
    ratios = report.compute_ratios(scales, defs)
    return {"command": "make bench", "date": "2025-01-01 00:00 UTC", "commit": "abc", "months": 12,
            "machine": {"cpu": "test cpu", "cores": 2, "ram_bytes": 8 * 2**30, "load_average": (2.0, 1.5, 1.0),
                        "python": "3.11", "duckdb": "2", "dagster": "1", "dbt": "1"},
            "definitions": defs, "scales": scales, "ratios": ratios}


def test_targets_are_judged_at_the_largest_scale_from_the_same_run():
    small = _scale(100_000, wall=60.0, rss=1 * 2**30, floor_s=5.0, incremental=20.0, data_bytes=90_000_000)
    large = _scale(1_000_000, wall=500.0, rss=int(2.5 * 2**30), floor_s=50.0, incremental=100.0, data_bytes=900_000_000)
    run = _run([small, large], definitions=6.0)
    verdicts = {t["key"]: (t["value"], t["passed"]) for t in report.targets(run["ratios"])}

    assert verdicts["full_over_floor"] == (pytest.approx(500.0 / 50.0), False)
    assert verdicts["incremental_over_full"] == (pytest.approx(100.0 / 500.0), False)
    assert verdicts["peak_rss"] == (int(2.5 * 2**30), True)
    assert verdicts["rss_growth"] == (pytest.approx(2.5), True)
    assert verdicts["wall_growth"] == (pytest.approx(500.0 / 60.0), True)
    assert verdicts["definitions_load"] == (6.0, False)


def test_growth_targets_are_not_judged_with_one_scale():
    run = _run([_scale(300, wall=60.0, rss=2**29, floor_s=1.0, incremental=5.0, data_bytes=5_000_000)])
    verdicts = {t["key"]: t["passed"] for t in report.targets(run["ratios"])}
    assert verdicts["rss_growth"] is None and verdicts["wall_growth"] is None
    assert verdicts["incremental_over_full"] is True


def test_report_has_every_row_and_keeps_text_outside_its_markers(tmp_path):
    small = _scale(100_000, wall=60.0, rss=2**30, floor_s=5.0, incremental=6.0, data_bytes=90_000_000)
    large = _scale(1_000_000, wall=400.0, rss=2**31, floor_s=90.0, incremental=30.0, data_bytes=900_000_000)
    path = tmp_path / "BENCHMARKS.md"
    report.write_report(path, report.render(_run([small, large])))
    path.write_text(path.read_text() + "\n## Scale (Spark)\n\nSpark figure: 123 s\n")

    report.write_report(path, report.render(_run([small, _scale(1_000_000, 401.0, 2**31, 90.0, 30.0, 900_000_000)])))
    text = path.read_text()

    assert text.count(report.BEGIN) == 1 and text.count("# Benchmarks") == 1
    assert "Spark figure: 123 s" in text and text.index("Spark figure") > text.index(report.END)
    for label in (*report.RESULT_ROWS, *(t[1] for t in report.TARGETS), "## Scale (DuckDB)"):
        assert label in text, label
    assert "401.0" in text and "400.0" not in text.split("## Targets")[1]
    assert "| 100,000 | 1,000,000 |" in text
    assert "| Full refresh CPU time / floor (a) CPU time | 12.80x | 4.75x |" in text  # 60*1.6 / (5*1.5); 401*1.6 / 135
    assert "| dbt | 42.0 (1.40) | n/a | n/a | 280.7 (1.40) | n/a | n/a |" in text  # CPU s (cores busy)
    assert "| stage | 100,000 full | 100,000 incremental | 100,000 no new delivery | 1,000,000 full |" in text


def test_results_of_a_run_without_the_refresh_with_no_new_delivery_still_render():
    """bench/results.json of an earlier commit: no such refresh, no such columns."""
    scales = [_scale(100_000, wall=60.0, rss=2**30, floor_s=5.0, incremental=6.0, data_bytes=90_000_000)]
    del scales[0]["unchanged"]
    text = report.render(_run(scales))
    assert "| Refresh with no new delivery / full refresh | n/a |" in text
    assert "| stage | 100,000 full | 100,000 incremental |" in text and "no new delivery |" not in text.split("## Where")[1]


def test_report_shows_the_share_of_published_cells_per_table_and_scale():
    small = _scale(100_000, wall=60.0, rss=2**30, floor_s=5.0, incremental=6.0, data_bytes=90_000_000)
    large = _scale(1_000_000, wall=400.0, rss=2**31, floor_s=90.0, incremental=30.0, data_bytes=900_000_000)
    small["published_cells"] = [{"table": "marts.a", "cells": 200, "published": 50}]
    large["published_cells"] = [{"table": "marts.a", "cells": 2000, "published": 1480},
                                {"table": "marts.b", "cells": 0, "published": 0}]
    text = report.render(_run([small, large]))
    assert "| marts.a | 25% of 200 | 74% of 2,000 |" in text
    assert "| marts.b | n/a | no cells |" in text


# -- the whole benchmark at a tiny scale --------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bench_smoke_run_writes_every_row(tmp_path):
    out, results = tmp_path / "BENCHMARKS.md", tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--scales", "300", "--months", "2",
                           "--workdir", str(tmp_path / "work"), "--out", str(out), "--results", str(results)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    figures = json.loads(results.read_text())
    scale = figures["scales"][0]
    assert scale["full"]["success"] and scale["incremental"]["success"] and scale["bare_dbt"]["returncode"] == 0
    assert scale["unchanged"]["success"] and all(scale["unchanged"]["stages"][s] > 0 for s in ("dbt", "publish"))
    assert scale["floor_load"]["rows"] <= scale["floor_count"]["rows"] == scale["data"]["rows"]
    assert scale["increment"]["files"] > 0
    assert all(scale["full"]["stages"][s] > 0 for s in report.STAGES)
    assert scale["full"]["peak_rss"] > scale["floor_load"]["peak_rss"] > 0
    assert scale["full"]["cpu_seconds"] > scale["floor_load"]["cpu_seconds"] > 0
    assert all(scale["full"]["cpu_by_stage"][s]["cpu"] > 0 for s in ("ingestion", "dbt", "impact", "publish"))

    text = out.read_text()
    table = text.split("## Results")[1].split("\n\n")[1]
    for label in report.RESULT_ROWS:
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert "n/a" not in row, row
    for _, label, *_ in report.TARGETS:
        assert label in text
    assert not (tmp_path / "work" / "scale-300" / "home").exists()  # scratch data removed
    shares = {t["table"]: t for t in scale["published_cells"]}
    assert "marts.mart_coverage_targeting" in shares
    assert all(0 <= t["published"] <= t["cells"] for t in shares.values())
    assert "## Published cells (disclosure control)" in text


def test_peak_by_stage_takes_the_samples_inside_each_stage(tmp_path):
    from bench.measure import Measured

    child = _child(1000.0, {"ingest_landing": 10.0, "warehouse_dbt": 10.0})
    ingest, dbt = child["steps"]["ingest_landing"], child["steps"]["warehouse_dbt"]
    timeline = [(1001.0, 100), (ingest["start"] + 1, 500), (ingest["end"] + 0.2, 900), (dbt["start"] + 2, 700)]
    measured = Measured([], 0, 30.0, 900, len(timeline), 1000.0, (0, 0, 0), "", timeline)
    peaks = report.peak_by_stage(child, measured)
    assert peaks == {"ingestion": 500, "dbt": 700, "start-up and bookkeeping": 100}


def test_the_report_shows_how_far_each_ratio_target_is_from_what_the_work_allows():
    """Bounds beside the targets: the incremental refresh's dbt step alone, a refresh with no
    new delivery, and the full refresh's CPU time against the most 5x the floor leaves on
    every core."""
    scale = _scale(1_000_000, wall=80.0, rss=2**31, floor_s=10.0, incremental=30.0, data_bytes=900_000_000)
    scale["full"]["cpu_seconds"] = 132.0
    scale["incremental"]["stages"] = {"dbt": 16.0}
    scale["unchanged"]["wall"] = 20.0
    defs = {"first": 2.0, "runs": [2.0], "median": 2.0, "interpreter": 0.02}
    report.compute_ratios([scale], defs, cores=2)
    assert scale["ratios"]["incremental_dbt_over_full"] == pytest.approx(16.0 / 80.0)
    assert scale["ratios"]["unchanged_over_full"] == pytest.approx(20.0 / 80.0)
    assert scale["ratios"]["full_cpu_over_target_cpu"] == pytest.approx(132.0 / (5 * 10.0 * 2))
    cells = report.result_cells(scale)
    assert cells["Incremental refresh's dbt step alone / full refresh"] == "20.0%"
    assert cells["Refresh with no new delivery / full refresh"] == "25.0%"
    assert cells["Full refresh CPU time / the most the 5x target allows (5 x floor (a) wall x cores)"] == "1.32x"
    report.compute_ratios([scale], defs)  # cores unknown: not guessed
    assert scale["ratios"]["full_cpu_over_target_cpu"] is None


def test_usable_cores_follow_the_cgroup_quota(tmp_path):
    """The 'cores' of the CPU bound are those the run may use: a container's CPU quota
    (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us) caps the machine's cores, and no quota
    leaves the affinity's."""
    from bench.run import usable_cores

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("max 100000\n")
    assert usable_cores(v2) == affinity
    (v2 / "cpu.max").write_text("50000 100000\n")
    assert usable_cores(v2) == 0.5
    (v2 / "cpu.max").write_text(f"{100000 * (affinity + 4)} 100000\n")  # a quota above the affinity adds no core
    assert usable_cores(v2) == affinity
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cores(v1.parent) == affinity
    (v1 / "cpu.cfs_quota_us").write_text("150000\n")
    assert usable_cores(v1.parent) == min(affinity, 1.5)
    assert usable_cores(tmp_path / "absent") == affinity


def test_hierarchical_names_the_configured_tables_when_given_another(capsys):
    """A table name that config/disclosure.yml does not configure (say, without its schema)
    is a usage error naming the configured tables, not a KeyError traceback."""
    from bench.hierarchical import main

    with pytest.raises(SystemExit) as exit_:
        main(["mart_transfers_monthly"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "not a table of config/disclosure.yml: mart_transfers_monthly" in err
    assert "marts.mart_transfers_monthly" in err


def test_hierarchical_measure_publishes_the_marginals_and_protects_a_small_cell_with_them():
    """bench.hierarchical adds every marginal as a total row and protects them with the cells:
    a small cell (3 people) and the cells that hide it are suppressed, the totals published."""
    import duckdb

    from bench.hierarchical import measure
    from quality.disclosure import parse_config

    con = duckdb.connect()
    con.execute("create schema marts")
    con.execute("create table marts.m (month varchar, region_code varchar, sex varchar, people bigint)")
    counts = {("01", "F"): 3, ("01", "M"): 52, ("02", "F"): 41, ("02", "M"): 47, ("03", "F"): 60, ("03", "M"): 75}
    con.executemany("insert into marts.m values ('2025-01', ?, ?, ?)", [(r, s, n) for (r, s), n in counts.items()])
    rule = parse_config({"tables": [{"table": "marts.m", "by": ["month"], "dimensions": ["region_code", "sex"],
                                     "count_columns": ["people"]}]}).tables[0]
    m = measure(con, rule)
    levels = {level: (n, published) for level, n, published in m["levels"]}
    assert m["cells"] == 6 + 3 + 2 + 1
    # every total published; 01-F hidden in a rectangle of four cells (two regions x two sexes),
    # which no line or combination of lines gives back
    assert levels[()] == (1, 1) and levels[("sex",)] == (2, 2) and levels[("region_code",)] == (3, 3)
    assert levels[("region_code", "sex")] == (6, 2)
    assert m["published"] == 12 - 4


def test_republication_counts_the_small_cells_an_earlier_file_gives_back():
    """A complement published by the earlier file with the same count is known: the small
    cell it hid in its line comes back (line totals known, as the protection assumes)."""
    import duckdb

    from bench.republication import measure
    from quality.disclosure import parse_config

    counts = {("01", "F"): 3, ("01", "M"): 52, ("02", "F"): 41, ("02", "M"): 47, ("03", "F"): 60, ("03", "M"): 75}

    def warehouse(hidden=None):
        con = duckdb.connect()
        con.execute("create schema marts")
        con.execute("create table marts.m (region_code varchar, sex varchar, people bigint, is_suppressed boolean)")
        con.executemany("insert into marts.m values (?, ?, ?, ?)",
                        [(r, s, n, hidden is not None and (r, s) in hidden) for (r, s), n in counts.items()])
        return con

    rule = parse_config({"tables": [{"table": "marts.m", "dimensions": ["region_code", "sex"],
                                     "count_columns": ["people"]}]}).tables[0]
    rectangle = {("01", "F"), ("01", "M"), ("02", "F"), ("02", "M")}
    now = warehouse(hidden=rectangle)
    assert measure(warehouse(), warehouse(hidden=rectangle), now, rule) == {
        "suppressed": 4, "known_before": 0, "given_back_now": 0, "given_back_before_only": 0}
    # the earlier file hid 01-F with regions 01 and 03, so published 02-F and 02-M (unchanged):
    # with them, the sex lines give back 01-F (3 people)
    before = warehouse(hidden={("01", "F"), ("01", "M"), ("03", "F"), ("03", "M")})
    assert measure(warehouse(), before, now, rule) == {
        "suppressed": 4, "known_before": 2, "given_back_now": 1, "given_back_before_only": 0}
    # with the earlier file's counts before suppression, the same (its 01-F is this one's)
    assert measure(warehouse(), before, now, rule, previous_counts=warehouse()) == {
        "suppressed": 4, "known_before": 2, "given_back_now": 1, "given_back_before_only": 0}
    # a cell of the earlier file only (region 04, gone now): the two files' F lines, whose other
    # cells are the same, differ by it (4 people)
    def earlier(hidden):
        con = warehouse(hidden=hidden)
        con.executemany("insert into marts.m values (?, ?, ?, ?)", [("04", "F", 4, True), ("04", "M", 30, True)])
        return con
    gone = earlier({("01", "F"), ("01", "M"), ("02", "F"), ("02", "M")})
    assert measure(warehouse(), gone, warehouse(hidden=rectangle | {("03", "F"), ("03", "M")}), rule,
                   previous_counts=earlier(set()))["given_back_before_only"] == 1


def test_kept_publications_name_what_only_files_further_apart_give_back():
    """Three monthly files, each safe alone and with the one before it: the first and the
    third together give back a small cell (each published the other's complements)."""
    import duckdb

    from bench.republication import across, publication
    from quality.disclosure import parse_config

    counts = {("01", "F"): 3, ("01", "M"): 52, ("02", "F"): 41, ("02", "M"): 47, ("03", "F"): 60, ("03", "M"): 75}

    def served(hidden):
        con = duckdb.connect()
        con.execute("create schema marts")
        con.execute("create table marts.m (region_code varchar, sex varchar, people bigint, is_suppressed boolean)")
        con.executemany("insert into marts.m values (?, ?, ?, ?)", [(r, s, n, (r, s) in hidden) for (r, s), n in counts.items()])
        return con

    rule = parse_config({"tables": [{"table": "marts.m", "dimensions": ["region_code", "sex"],
                                     "count_columns": ["people"]}]}).tables[0]
    first = publication(served({("01", "F"), ("01", "M"), ("02", "F"), ("02", "M")}), served(set()), rule)
    everything = publication(served(set(counts)), served(set()), rule)  # hides every cell
    third = publication(served({("01", "F"), ("01", "M"), ("03", "F"), ("03", "M")}), served(set()), rule)
    assert across([first, everything, third]) == {"publications": 3, "alone": 0, "consecutive": 0, "apart": 1,
                                                  "three_or_more": 0, "newest": 1}
    assert across([first, third]) == {"publications": 2, "alone": 0, "consecutive": 1, "apart": 0, "three_or_more": 0,
                                      "newest": 1}
    # the third published again after them: it adds nothing the others do not give
    assert across([first, everything, third, third])["newest"] == 0


def test_republication_names_one_publication_in_the_singular():
    from bench.republication import _publications

    assert (_publications(1), _publications(2)) == ("1 publication", "2 publications")
