"""Run the refresh job exactly as the Dagster UI does, recorded in the Dagster instance."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from jisr.settings import Settings, export_environment


@dataclass
class RefreshResult:
    success: bool
    run_id: str
    settings: Settings
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # failed checks of severity warn: reported, not blocking
    tool_log: Path | None = None  # where dbt's own output went, when not to the terminal
    # (partner/file, reason) of the landing files not loaded, as they repeat a rejected delivery
    not_loaded: list[tuple[str, str]] = field(default_factory=list)
    # the messages naming the landing files skipped (gone before being read, or outside the partner folders)
    skipped: list[str] = field(default_factory=list)

    def report(self) -> str:
        from jisr.status import run_report

        lines = [run_report(self.settings, self.run_id, not_loaded=self.not_loaded, skipped=self.skipped,
                            failed=not self.success)]
        if self.warnings:
            lines.append("\nWarnings (failed checks of severity warn, config/quality.yml; they do not stop "
                         "publication):")
            lines += [f"  - {w}" for w in self.warnings]
        if self.failures:
            lines.append("\nThe refresh FAILED:")
            lines += [f"  - {f}" for f in self.failures]
            lines.append("The serving warehouse was not changed.")
        lines.append("")
        if self.tool_log is not None and self.tool_log.exists() and self.tool_log.stat().st_size:
            lines.append(f"dbt's output (every model and test): {self.tool_log}")
        lines.append(f"Dagster run {self.run_id}: `make dev` opens the UI with this run in its history.")
        return "\n".join(lines)


def prepare_dagster_home(settings: Settings) -> None:
    """Point Dagster at the project-local instance and give it the project's settings."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(settings.project_dir / "orchestration" / "dagster.yaml", home / "dagster.yaml")
    export_environment(settings)


def tool_log_path(settings: Settings) -> Path:
    """A new file for the output of the tools a refresh runs (dbt prints every model and test)."""
    from datetime import datetime, timezone

    folder = settings.home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"refresh-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.log"


DBT_NODE_KINDS = ("model.", "seed.", "snapshot.", "test.", "source.")


def _failure_message(err) -> str:
    """A failed step's message; dagster-dbt's KeyError on a dbt node its manifest lacks (the
    dbt project changed after the definitions were loaded) in words that say what to do."""
    if err is None:
        return "failed"
    message = err.message.strip()
    node = message.partition(": ")[2].strip("'\"")
    if err.cls_name == "KeyError" and node.startswith(DBT_NODE_KINDS):
        return (f"the dbt project changed after the Dagster definitions were loaded ({node} is not in their "
                "dbt manifest): reload the code location (UI: Deployment > Reload) or run the command again")
    if err.cls_name == "Failure":  # raised by the project's own steps: its description says it all
        return message.removeprefix("dagster._core.definitions.events.Failure: ")
    return message


def run_outcome(events) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """What the report of a refresh tells from the run's events: (failures, not loaded,
    warnings). Failures: the failed steps (with the user's message, not Dagster's wrapper)
    and blocking checks; not loaded: (partner/file, reason) of the landing files the
    ingestion did not load as they repeat a rejected delivery; warnings: the failed checks
    of severity warn, with what they found."""
    failures, not_loaded, warnings = [], [], []
    for event in events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            while err is not None and err.cause is not None:
                err = err.cause  # the user's exception, not Dagster's wrapper
            failures.append(f"step {event.step_key}: {_failure_message(err)}")
        elif event.event_type_value == "RESOURCE_INIT_FAILURE":  # e.g. another refresh holds the lock
            err = getattr(event.event_specific_data, "error", None)
            while err is not None and err.cause is not None:
                err = err.cause
            failures.append(f"run not started: {err.message.strip() if err else event.message}")
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            files = event.event_specific_data.materialization.metadata.get("files_not_loaded")
            not_loaded += [(f["file"], f["reason"]) for f in (files.data if files is not None else [])]
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if data.passed:
                continue
            if data.severity.value == "ERROR":
                failures.append(f"check {data.check_name} on {data.asset_key.to_user_string()} failed")
            else:
                found = " ".join((data.description or "failed").split())
                warnings.append(f"check {data.check_name} on {data.asset_key.to_user_string()}: "
                                f"{found if len(found) <= 300 else found[:297] + '...'}")
    return failures, sorted(not_loaded), warnings


def run_skipped(events) -> list[str]:
    """The messages naming the landing files the ingestion skipped, as they left the landing
    area (deleted, renamed, or replaced) before they were read, or are outside the partner
    folders, where nothing reads them: nothing of them was loaded or recorded. Every materialization of the ingestion step carries the pass's list (a file
    skipped may have no contract); each message is kept once."""
    skipped = set()
    for event in events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            files = event.event_specific_data.materialization.metadata.get("files_skipped")
            skipped.update(files.data if files is not None else [])
    return sorted(skipped)


def run_refresh(settings: Settings, full_refresh: bool = False, tool_log: Path | None = None) -> RefreshResult:
    """Run refresh_job in process. ``tool_log``: write what the tools print on standard output
    (dbt's line per model and test) to that file instead of the terminal; Dagster's own
    step log (standard error) and the run's events in the instance are unchanged."""
    prepare_dagster_home(settings)
    import dagster as dg

    from orchestration.definitions import defs, refresh_run_config

    job = defs.resolve_job_def("refresh_job")
    with dg.DagsterInstance.get() as instance, contextlib.ExitStack() as stack:
        if tool_log is not None:
            stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(tool_log, "w", encoding="utf-8"))))
        result = job.execute_in_process(
            instance=instance, run_config=refresh_run_config(full_refresh=full_refresh),
            raise_on_error=False, tags={"jisr/trigger": "cli"},
        )
        failures, not_loaded, warnings = run_outcome(result.all_events)
        skipped = run_skipped(result.all_events)
    return RefreshResult(success=result.success and not failures, run_id=result.run_id, settings=settings,
                         failures=failures, warnings=warnings, tool_log=tool_log, not_loaded=not_loaded,
                         skipped=skipped)
