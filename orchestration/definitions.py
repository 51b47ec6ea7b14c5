"""The Dagster code location: assembles assets, checks, jobs, schedules and sensors.

Policy only: the logic lives in ``ingestion/``, ``quality/`` and ``impact/``.
"""

from __future__ import annotations

import dagster as dg

from orchestration.assets.impact import impact_stage
from orchestration.assets.ingest import CONTRACTS, ingest_landing
from orchestration.assets.publish import build_publish_assets, published_upstream
from orchestration.assets.warehouse import WarehouseConfig, dbt_resource, warehouse_dbt
from orchestration.checks import build_quality_checks
from orchestration.runlock import RefreshLock
from orchestration.sensors import build_landing_sensor

# Write-audit-publish: serving/candidate and serving/warehouse downstream of every published
# mart and impact table and of every internal person-level model (detail: its dbt tests gate
# publication too); quality checks (blocking per config/quality.yml) on the way.
publish_assets = build_publish_assets(
    published_upstream([*warehouse_dbt.keys, *impact_stage.keys]))
quality_checks = build_quality_checks(CONTRACTS, [warehouse_dbt])

refresh_job = dg.define_asset_job(
    name="refresh_job",
    selection=dg.AssetSelection.all(),
    description="Full refresh: ingest new deliveries, build the warehouse, check it and publish it.",
    executor_def=dg.in_process_executor,
    tags={"jisr/warehouse": "default"},
)

refresh_schedule = dg.ScheduleDefinition(
    name="refresh_schedule",
    job=refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone="Africa/Casablanca",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly refresh at 02:00 (Casablanca time).",
)

defs = dg.Definitions(
    assets=[ingest_landing, warehouse_dbt, impact_stage, *publish_assets],
    asset_checks=quality_checks,
    resources={"dbt": dbt_resource(), "refresh_lock": RefreshLock()},
    # Every job runs in one process: the refresh lock (orchestration/runlock.py) is then held
    # for the whole run, also by the runs of a selection materialised from the UI.
    executor=dg.in_process_executor,
    jobs=[refresh_job],
    schedules=[refresh_schedule],
    sensors=[build_landing_sensor(refresh_job)],
)


def refresh_run_config(full_refresh: bool = False) -> dict:
    """Run config of refresh_job (the same switches the UI's launchpad offers)."""
    return {
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
        "ops": {"warehouse_dbt": {"config": WarehouseConfig(full_refresh=full_refresh).model_dump()}},
    }
