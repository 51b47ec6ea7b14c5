"""A sensor on the landing area: a new or changed partner file starts a refresh."""


import hashlib
import json

import dagster as dg

from ingestion.contracts import not_a_delivery
from jisr.settings import get_settings


def landing_state(landing_dir) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns]} of every file in the landing area."""
    state = {}
    if landing_dir.exists():
        for path in sorted(landing_dir.glob("*/*")):
            if path.is_file() and not not_a_delivery(path.name):
                st = path.stat()
                state[str(path.relative_to(landing_dir))] = [st.st_size, st.st_mtime_ns]
    return state


def build_landing_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(job=job, name="landing_sensor", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Starts a refresh when partner files appear or change in the landing area.")
    def landing_sensor(context: dg.SensorEvaluationContext):
        settings = get_settings()
        state = landing_state(settings.landing_dir)
        previous = json.loads(context.cursor) if context.cursor else {}
        new = sorted(p for p, v in state.items() if previous.get(p) != v)
        if not new:
            return dg.SkipReason("no new file in the landing area")
        context.update_cursor(json.dumps(state))
        run_key = hashlib.sha256(json.dumps({p: state[p] for p in new}).encode()).hexdigest()[:16]
        return dg.RunRequest(run_key=run_key, tags={"jisr/trigger": "landing_sensor", "jisr/files": str(len(new))})

    return landing_sensor
