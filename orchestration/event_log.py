"""Dagster's SQLite event log, with one connection pool per database file.

The local instance (orchestration/dagster.yaml) records every event of a run (step outputs,
asset materializations, asset check evaluations: about 960 for a refresh) in SQLite files
under ``$DAGSTER_HOME/history/runs``: one file per run, and an index file that mirrors the
asset and check events. Dagster's ``SqliteEventLogStorage`` creates a new SQLAlchemy engine and
opens a new connection for every write, asks the index file whether a table exists for every
asset check event, and syncs every commit to disk. In a profile of a refresh of one new month
at 1,000,000 beneficiaries, storing events took 15 s of 42 s; with this storage, a refresh
that finds no new delivery takes 22.6 / 22.4 s instead of 25.8 / 24.7 s (BENCHMARKS.md).

This storage writes the same files, with the same schema, through the same code, except that:

- each file keeps one engine (with SQLAlchemy's connection pool) for the life of the process,
  at most ``max_open_files`` of them (least recently used are closed);
- a table, once found in the index file, is not looked up again (tables are never dropped
  while the process runs, except by ``wipe``, which forgets what was found);
- commits are not synced to disk one by one: ``PRAGMA synchronous=NORMAL`` in the WAL mode
  Dagster already sets on these files (SQLite's recommended setting for WAL: the database
  cannot be corrupted; a power cut can lose the last events written, never a crash of the
  process);
- after each event, the run file's modification time is set: the Dagster UI follows a
  running run by watching that file, which closing the last connection used to change
  (SQLite checkpoints the write-ahead log then).

Files written by this storage are plain Dagster event logs: removing it from dagster.yaml
loses nothing. Production instances keep their events in PostgreSQL (deploy/dagster.yaml)
and do not use it.
"""

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as db
from dagster import Field, StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy.engine import Connection, Engine


def _default_base_dir() -> str:
    """Where Dagster's default SQLite storage keeps the event logs: ``$DAGSTER_HOME/history/runs``."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise ValueError("PooledSqliteEventLogStorage needs base_dir, or DAGSTER_HOME set")
    return os.path.join(os.path.abspath(os.path.expanduser(home)), "history", "runs", "")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` that reuses one engine per file (see the module docstring)."""

    def __init__(self, base_dir: str, inst_data=None, max_open_files: int = 16):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._max_open_files = max(2, int(max_open_files))
        self._known_tables: set[str] = set()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls):
        return {
            "base_dir": Field(StringSource, is_required=False,
                              description="Folder of the event log files (default: $DAGSTER_HOME/history/runs)."),
            "max_open_files": Field(int, is_required=False, default_value=16,
                                    description="Event log files kept open at once (least recently used are closed)."),
        }

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        config = dict(config_value)
        return cls(base_dir=config.get("base_dir") or _default_base_dir(), inst_data=inst_data,
                   max_open_files=config.get("max_open_files", 16))

    def _engine(self, shard: str) -> Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = db.create_engine(self.conn_string_for_shard(shard),
                                      connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            db.event.listen(engine, "connect", _no_sync_per_commit)
            self._engines[shard] = engine
            while len(self._engines) > self._max_open_files:
                _, old = self._engines.popitem(last=False)
                old.dispose()
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def store_event(self, event) -> None:
        super().store_event(event)
        self._touch(event.run_id)

    def _touch(self, shard: str) -> None:
        """Tell the watchers of a run that it has a new event.

        The Dagster UI follows a running run by watching its ``<run_id>.db`` for changes
        (``SqliteEventLogStorageWatchdog``). In WAL mode an insert only writes the ``-wal``
        file; Dagster's storage got the main file changed by the checkpoint SQLite runs
        when the last connection closes, which a kept connection never does (and a
        checkpoint copies nothing while a reader holds an older snapshot). Setting the
        file's modification time after the commit notifies the watchers every time; they
        then read the new event from the log like any reader.
        """
        try:
            os.utime(self.path_for_shard(shard))
        except FileNotFoundError:  # wiped meanwhile
            pass

    def has_table(self, table_name: str) -> bool:
        if table_name in self._known_tables:
            return True
        found = super().has_table(table_name)
        if found:
            self._known_tables.add(table_name)
        return found

    def _close_engines(self) -> None:
        with self._db_lock, self._engines_lock:  # not while another thread uses a connection
            engines, self._engines = list(self._engines.values()), OrderedDict()
            for engine in engines:
                engine.dispose()

    def wipe(self) -> None:
        self._close_engines()  # before the files are deleted
        self._known_tables = set()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()  # stops the watchers first: a late callback would open an engine again
        self._close_engines()


def _no_sync_per_commit(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
