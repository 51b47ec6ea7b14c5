"""One refresh at a time per warehouse, whoever starts it.

Every asset that writes (ingestion, the dbt build, the impact stage, the candidate and the
publication) requires the ``refresh_lock`` resource: it holds ``jisr.lock.refresh_lock`` (a
file lock under ``$JISR_HOME``, the one ``jisr refresh`` takes) for as long as the run
executes, since every job runs in one process (``in_process_executor``, set for the whole
code location in ``orchestration/definitions.py``). A run from the UI, the schedule, the
sensor or ``jisr refresh`` started while another refresh runs therefore refuses at once
(or waits ``publish.lock_timeout_seconds`` of ``config/quality.yml``) with a message naming
the running one, instead of racing it for DuckDB's file locks or deleting its candidate
warehouse. The run queue (``orchestration/dagster.yaml``) still queues the runs of the code
location one behind the other (``refresh_job`` and a selection materialised from the UI
alike); the lock also covers runs the queue does not see (``jisr refresh``).

A run holding the lock records its process in the run's tags (``jisr/process``: run id, pid
and the process's start time, so that a run re-executed with its parent's tags, or a pid
used again by another process, is not taken for it). A refresh
whose process was killed outright (SIGKILL, the out-of-memory killer) stays "started" in
the instance and would hold the queue's slot for ever: the next run that takes the lock,
and the landing sensor at each tick, mark such runs failed (:func:`fail_dead_refreshes`).
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg

# "<run id> <pid> <process start time>": whose process runs the run. The run id: a run
# re-executed from the UI inherits its parent's tags, which describe another process.
PID_TAG = "jisr/process"
HOST_TAG = "jisr/host"


def _started(pid: int) -> str | None:
    """When the process ``pid`` started (clock ticks since boot, Linux), or None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_tag(run_id: str, pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{run_id} {pid} {_started(pid) or '-'}"


def _gone(tag: str, run_id: str) -> int | None:
    """The pid of the process the tag names, if that process is gone (None: alive, unknown,
    or the tag is about another run)."""
    parts = tag.split()
    if len(parts) != 3 or parts[0] != run_id or not parts[1].isdigit():
        return None
    pid = int(parts[1])
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except PermissionError:
        pass  # another user's process of that pid: compare start times below
    started = _started(pid)
    return pid if parts[2] != "-" and started is not None and started != parts[2] else None  # pid reused


def fail_dead_refreshes(instance: dg.DagsterInstance, except_run: str | None = None, by: str = "a later run") -> list[str]:
    """Mark failed the runs still "started" whose process (tagged by the run itself, on this
    machine) is gone; return their ids."""
    host = os.uname().nodename
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                             dg.DagsterRunStatus.STARTING]))
    dead = []
    for run in runs:
        tag = run.tags.get(PID_TAG)
        if run.run_id == except_run or not tag or run.tags.get(HOST_TAG) != host:
            continue
        pid = _gone(tag, run.run_id)
        if pid is not None:
            instance.report_run_failed(run, f"the process running it (pid {pid}) ended without finishing the run "
                                            f"(killed?): marked failed by {by}")
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
                instance.add_run_tags(run_id, {PID_TAG: process_tag(run_id), HOST_TAG: os.uname().nodename})
                fail_dead_refreshes(instance, except_run=run_id, by=f"run {run_id}, which took the refresh lock")
            yield self
