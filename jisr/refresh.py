"""Run the refresh job exactly as the Dagster UI does, recorded in the Dagster instance."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from jisr.settings import Settings, export_environment


@dataclass
class RefreshResult:
    success: bool
    run_id: str
    settings: Settings
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        from jisr.status import run_report

        lines = [run_report(self.settings, self.run_id)]
        if self.failures:
            lines.append("\nThe refresh FAILED:")
            lines += [f"  - {f}" for f in self.failures]
            lines.append("The serving warehouse was not changed.")
        lines.append(f"\nDagster run {self.run_id}: `make dev` opens the UI with this run in its history.")
        return "\n".join(lines)


def prepare_dagster_home(settings: Settings) -> None:
    """Point Dagster at the project-local instance and give it the project's settings."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(settings.project_dir / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    export_environment(settings)


def run_refresh(settings: Settings, full_refresh: bool = False) -> RefreshResult:
    prepare_dagster_home(settings)
    import dagster as dg

    from orchestration.definitions import defs, refresh_run_config

    job = defs.resolve_job_def("refresh_job")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, run_config=refresh_run_config(full_refresh=full_refresh),
            raise_on_error=False, tags={"jisr/trigger": "cli"},
        )
        failures = []
        for event in result.all_events:
            if event.is_step_failure:
                err = event.step_failure_data.error
                while err is not None and err.cause is not None:
                    err = err.cause  # the user's exception, not Dagster's wrapper
                failures.append(f"step {event.step_key}: {err.message.strip() if err else 'failed'}")
            elif event.event_type_value == "ASSET_CHECK_EVALUATION":
                data = event.event_specific_data
                if not data.passed and data.severity.value == "ERROR":
                    failures.append(f"check {data.check_name} on {data.asset_key.to_user_string()} failed")
    return RefreshResult(success=result.success and not failures, run_id=result.run_id,
                         settings=settings, failures=failures)
