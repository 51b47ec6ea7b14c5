"""One refresh through the real Dagster job, run as its own process by the benchmark.

``python -m bench.refresh_child OUT_JSON [--full-refresh]`` runs ``jisr.refresh.run_refresh``
with the environment's JISR_HOME and DAGSTER_HOME, then writes to OUT_JSON the result, the
moment the refresh finished (``finished_at``, before the step timings are read back) and
the step timings of the run read from the Dagster instance's event log.
"""

from __future__ import annotations

import json
import re
import sys
import time

STARTED_AT = time.time()

STEP_EVENTS = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED")
RUN_EVENTS = ("PIPELINE_START", "PIPELINE_SUCCESS", "PIPELINE_FAILURE", "RUN_START", "RUN_SUCCESS", "RUN_FAILURE")
DBT_FINISHED = re.compile(r"Finished dbt command: `[^`]*?\b(build|run|test|seed|docs generate)\b")


def run_timings(run_id: str) -> dict:
    """Step start/end times of a run, and the end of each dbt command inside a step."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        records = instance.get_records_for_run(run_id, limit=1_000_000).records
    steps: dict[str, dict] = {}
    run: dict[str, float] = {}
    dbt_commands: list[dict] = []
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            found = DBT_FINISHED.search(entry.user_message or "")
            if found:
                dbt_commands.append({"step": entry.step_key, "command": found.group(1), "finished": entry.timestamp})
            continue
        kind = event.event_type_value
        if kind in RUN_EVENTS:
            run["start" if kind.endswith("START") else "end"] = entry.timestamp
        elif kind in STEP_EVENTS and entry.step_key:
            step = steps.setdefault(entry.step_key, {})
            if kind == "STEP_START":
                step["start"] = entry.timestamp
            else:
                step["end"] = entry.timestamp
                step["status"] = kind.removeprefix("STEP_").lower()
    return {"run": run, "steps": steps, "dbt_commands": dbt_commands}


def validation_seconds(store_path, run_id: str) -> float | None:
    """Seconds the Great Expectations suites took in this run's ingestion (``quality.gx_results``
    holds each validated batch's time on every expectation row of it)."""
    import duckdb

    con = duckdb.connect(str(store_path), read_only=True)
    try:
        if not con.execute("select count(*) from information_schema.tables where table_schema = 'quality' "
                           "and table_name = 'gx_results'").fetchone()[0]:
            return None
        return con.execute("select coalesce(sum(seconds), 0) from (select distinct source, batch, seconds "
                           "from quality.gx_results where run_id = ?)", [run_id]).fetchone()[0]
    finally:
        con.close()


def main(argv: list[str]) -> int:
    out = argv[0]
    full_refresh = "--full-refresh" in argv[1:]
    from jisr.refresh import run_refresh
    from jisr.settings import get_settings

    imported_at = time.time()
    result = run_refresh(get_settings(), full_refresh=full_refresh)
    finished_at = time.time()
    payload = {"success": result.success, "run_id": result.run_id, "failures": result.failures,
               "started_at": STARTED_AT, "imported_at": imported_at, "finished_at": finished_at}
    try:
        payload.update(run_timings(result.run_id))
        payload["validation_seconds"] = validation_seconds(get_settings().store_path, result.run_id)
    except Exception as exc:  # the timings are a report detail; the refresh itself is done
        payload["timings_error"] = f"{type(exc).__name__}: {exc}"
    with open(out, "w") as fh:
        json.dump(payload, fh)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
