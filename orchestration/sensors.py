"""A sensor on the landing area: a new or changed partner file starts a refresh.

The cursor keeps the state of every landing file (size, modification and change times,
inode) and the last run the sensor requested. A file is new when its path was not in the
landing area at the last tick, or its state changed: a file moved back (e.g. a rejected file,
after its contract was fixed) has a new change time, and a path that left the landing area
is dropped from the cursor. The run key is the state of the new files, so a file back
in the landing area gets a run of its own. A run the sensor started that failed (say, no
key in the daemon's environment) is requested again while the files it was started for are
still in the landing area as they were, after 15 min, then 30, 60, 120 and 240 min; after
that the sensor waits for a change in the landing area.
"""


import hashlib
import json
import time

import dagster as dg

from ingestion.contracts import not_a_delivery
from jisr.settings import get_settings
from orchestration.runlock import fail_dead_refreshes

RETRY_DELAYS_SECONDS = (900, 1800, 3600, 7200, 14400)  # after a failed run: then wait for a change


def landing_state(landing_dir) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns, ctime_ns, inode]} of every file in the landing area."""
    state = {}
    if landing_dir.exists():
        for path in sorted(landing_dir.glob("*/*")):
            if path.is_file() and not not_a_delivery(path.name):
                st = path.stat()
                state[str(path.relative_to(landing_dir))] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return state


def _read_cursor(cursor: str | None) -> dict:
    saved = json.loads(cursor) if cursor else {}
    if "files" not in saved:  # a cursor of an earlier version: {path: [size, mtime_ns]}
        saved = {"files": saved}
    return saved


def _unchanged(before: list[int] | None, now: list[int]) -> bool:
    """An earlier cursor has fewer attributes per file: those it has are compared."""
    return before is not None and before == now[:len(before)]


def _failed_at(context: dg.SensorEvaluationContext, run_key: str) -> float | None:
    """When the run the sensor requested under ``run_key`` failed (epoch seconds); None if
    it did not fail (or is not over, or was never launched)."""
    records = context.instance.get_run_records(
        dg.RunsFilter(tags={"dagster/sensor_name": "landing_sensor", "dagster/run_key": run_key}), limit=1)
    if not records or records[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return None
    return records[0].end_time or records[0].update_timestamp.timestamp()


def _retry(context: dg.SensorEvaluationContext, saved: dict, state: dict) -> dg.RunRequest | str | None:
    """The sensor's last run again if it failed and the files it was started for are all
    still in the landing area as they were, once its delay is over; else why not (None:
    nothing to say). A retry that fails is retried after the next delay."""
    last = saved.get("last_run")
    if not last or any(state.get(p) != v for p, v in last["files"].items()):
        return None
    retries = last.get("retries", 0)
    if retries >= len(RETRY_DELAYS_SECONDS):
        return None
    try:
        failed_at = _failed_at(context, last["run_key"])
    except dg.DagsterInvariantViolationError:  # evaluated without an instance
        return None
    if failed_at is None:
        return None
    due = failed_at + RETRY_DELAYS_SECONDS[retries]
    if time.time() < due:
        return (f"the run it started for {len(last['files'])} file(s) failed: it starts it again at "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(due))} unless the landing area changes")
    last.update(retries=retries + 1, run_key=f"{last['base_key']}-retry{retries + 1}")
    return dg.RunRequest(run_key=last["run_key"], tags={"jisr/trigger": "landing_sensor",
                                                         "jisr/files": str(len(last["files"])),
                                                         "jisr/retry": str(retries + 1)})


def build_landing_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(job=job, name="landing_sensor", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Starts a refresh when partner files appear or change in the landing area, once "
                           "they have stopped changing (the same at two ticks, a minute apart), and again "
                           "(with a growing delay) after a run it started failed.")
    def landing_sensor(context: dg.SensorEvaluationContext):
        settings = get_settings()
        # a refresh killed outright stays "started" and holds the run queue: marked failed here
        for run_id in fail_dead_refreshes(context.instance, by="the landing sensor"):
            context.log.warning(f"run {run_id}: its process is gone; marked failed")
        state = landing_state(settings.landing_dir)
        saved = _read_cursor(context.cursor)
        changed = {p: v for p, v in state.items() if not _unchanged(saved["files"].get(p), v)}
        # A file new or changed since the last tick may still be being written (an upload
        # tool writing it in place, a copy under way): it is read once it is the same at the
        # next tick. Files waiting so are kept in the cursor with the state they had.
        waiting = {p: v for p, v in saved.get("waiting", {}).items() if p in state and p not in changed}
        new = sorted(p for p, v in waiting.items() if state[p] == v)
        saved["waiting"] = dict(sorted(changed.items()))
        saved["files"] = state  # paths no longer in the landing area are forgotten
        if new:
            files = {p: state[p] for p in new}
            run_key = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
            saved["last_run"] = {"run_key": run_key, "base_key": run_key, "files": files}
            request = dg.RunRequest(run_key=run_key, tags={"jisr/trigger": "landing_sensor",
                                                           "jisr/files": str(len(new))})
        else:
            request = _retry(context, saved, state)
        if json.dumps(saved) != context.cursor:
            context.update_cursor(json.dumps(saved))
        if isinstance(request, dg.RunRequest):
            return request
        if changed:
            shown = ", ".join(list(changed)[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            return dg.SkipReason(f"{len(changed)} new or changed file(s) in the landing area, read once they have "
                                 f"not changed for a tick (still being written?): {shown}"
                                 + (f"; {request}" if request else ""))
        return dg.SkipReason("no new file in the landing area" + (f"; {request}" if request else ""))

    return landing_sensor
