"""Exclusive locks between Jisr processes (``fcntl.flock`` on files under ``$JISR_HOME``).

``refresh_lock`` is taken around a whole refresh: a second refresh started while one runs
refuses at once with a message naming the running one (or waits up to ``timeout`` seconds).
``publish_lock`` is taken by the publish step and by ``jisr rollback`` so that the serving
file is never replaced by two processes at once. The operating system releases a lock when
its process ends, even on SIGKILL, so a crashed refresh never leaves a stale lock behind.

Locks are re-entrant within a process (taking a held lock again nests). ``jisr refresh``
takes the refresh lock, and so does every Dagster run that writes, for as long as it runs
(``orchestration/runlock.py``): the refresh that ``jisr refresh`` runs in its own process
nests in it, any other refresh refuses.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator


class LockBusy(RuntimeError):
    """Another process holds the lock."""

    def __init__(self, what: str, path: Path, holder: dict | None, waited: float):
        self.path = path
        self.holder = holder or {}
        who = ""
        if self.holder:
            who = (f" (pid {self.holder.get('pid', '?')}"
                   + (f", run {self.holder['run_id']}" if self.holder.get("run_id") else "")
                   + (f", started {self.holder['since']} UTC" if self.holder.get("since") else "") + ")")
        wait = f" after waiting {waited:.0f} s" if waited >= 1 else ""
        super().__init__(f"another {what} is running{who}{wait}; wait for it to finish and try again "
                         f"(lock file {path})")


def _read_holder(fh) -> dict | None:
    try:
        fh.seek(0)
        text = fh.read()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


_HELD: dict[Path, int] = {}  # locks this process holds, with their nesting depth


@contextmanager
def file_lock(path: Path, what: str, timeout: float = 0.0, run_id: str | None = None,
              poll: float = 0.2) -> Iterator[Path]:
    """Hold an exclusive lock on ``path``; raise :class:`LockBusy` if it is not free within
    ``timeout`` seconds (0: do not wait). Re-entrant within a process: taking a lock this
    process already holds just nests."""
    path = Path(path).resolve()
    if _HELD.get(path):
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")
    start = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise LockBusy(what, path, _read_holder(fh), waited) from None
                time.sleep(min(poll, max(timeout - waited, 0.01)))
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "run_id": run_id,
                             "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}))
        fh.flush()
        _HELD[path] = 1
        try:
            yield path
        finally:
            _HELD.pop(path, None)
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def refresh_lock(settings, timeout: float | None = None, run_id: str | None = None):
    """The lock around a whole refresh (``$JISR_HOME/refresh.lock``).

    ``timeout`` defaults to ``publish.lock_timeout_seconds`` of config/quality.yml (0: a
    second refresh refuses at once). Usage::

        try:
            with refresh_lock(settings):
                ...run the refresh...
        except LockBusy as exc:
            print(exc)  # "another refresh is running (pid 123, started ... UTC); wait for it ..."
    """
    if timeout is None:
        from quality.config import config_for

        timeout = config_for(settings).lock_timeout_seconds
    return file_lock(Path(settings.home) / "refresh.lock", "refresh", timeout=timeout, run_id=run_id)


def publish_lock(settings, timeout: float = 600.0, run_id: str | None = None):
    """The lock around replacing the serving warehouse (``$JISR_HOME/publish.lock``)."""
    return file_lock(Path(settings.home) / "publish.lock", "publish or rollback", timeout=timeout, run_id=run_id)
