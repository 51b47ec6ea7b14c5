"""One refresh at a time per warehouse, whoever starts it.

Every asset that writes (ingestion, the dbt build, the impact stage, the candidate and the
publication) requires the ``refresh_lock`` resource: it holds ``jisr.lock.refresh_lock`` (a
file lock under ``$JISR_HOME``, the one ``jisr refresh`` takes) for as long as the run
executes, since every job runs in one process (``in_process_executor``, set for the whole
code location in ``orchestration/definitions.py``). A run from the UI, the schedule, the
sensor or ``jisr refresh`` started while another refresh runs therefore refuses at once
(or waits ``publish.lock_timeout_seconds`` of ``config/quality.yml``) with a message naming
the running one, instead of racing it for DuckDB's file locks or deleting its candidate
warehouse. The run queue (``orchestration/dagster.yaml``) still queues ``refresh_job`` runs
one behind the other; the lock also covers runs the queue does not see (``jisr refresh``,
a selection materialised from the UI).

A run holding the lock records its process id in the run's tags (``jisr/pid``). A refresh
whose process was killed outright (SIGKILL, the out-of-memory killer) stays "started" in
the instance and would hold the queue's slot for ever: the next run that takes the lock,
and the landing sensor at each tick, mark such runs failed (:func:`fail_dead_refreshes`).
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager

import dagster as dg

PID_TAG = "jisr/pid"
HOST_TAG = "jisr/host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_dead_refreshes(instance: dg.DagsterInstance, except_run: str | None = None) -> list[str]:
    """Mark failed the runs still "started" whose process (``jisr/pid`` on this machine) is
    gone; return their ids."""
    host = os.uname().nodename
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                             dg.DagsterRunStatus.STARTING]))
    dead = []
    for run in runs:
        pid = run.tags.get(PID_TAG)
        if run.run_id == except_run or not pid or run.tags.get(HOST_TAG, host) != host:
            continue
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            instance.report_run_failed(run, f"the process running it (pid {pid}) ended without finishing the run "
                                            "(killed?): marked failed by a later refresh")
            dead.append(run.run_id)
    return dead


class RefreshLock(dg.ConfigurableResource):
    """Holds the warehouse's refresh lock while a run executes (see the module docstring)."""

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext):
        from jisr.lock import refresh_lock
        from jisr.settings import get_settings

        run_id = context.run_id
        with ExitStack() as stack:
            stack.enter_context(refresh_lock(get_settings(), run_id=run_id))
            instance = context.instance
            if instance is not None and run_id is not None:
                instance.add_run_tags(run_id, {PID_TAG: str(os.getpid()), HOST_TAG: os.uname().nodename})
                fail_dead_refreshes(instance, except_run=run_id)
            yield self
