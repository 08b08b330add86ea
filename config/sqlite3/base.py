"""Django's SQLite backend, with the writers of every process queued on one file lock.

SQLite lets one writer in at a time. A writer that finds the database locked waits in
SQLite's busy handler, which sleeps and tries again (1, 2, 5, 10, ... up to 100 ms a
sleep): the lock is usually free again within a millisecond, but the waiter sleeps on.
The web server, the pump and the other qcluster workers all write to one file, so under
load most of a write's time went to those sleeps (the pump's runner threads spent half
their samples inside SQLite's `execute`, waiting).

Here each write transaction (Easel's are IMMEDIATE: they take the write lock at BEGIN) and
each write statement outside a transaction first takes an exclusive `flock` on a file
beside the database: the kernel hands it to the next waiter the moment it is let go. In a
process one thread at a time holds or waits for that lock; its other threads wait on a
lock of the process, for SQLite's own busy timeout at most (then "database is locked", as
before). A process that dies lets go of its lock with its file descriptors. Measured with
bench/capacity.py at K=8 (500 tasks, 10 users): 31-32 -> 36 tasks/s, create p95 437-525 ->
318-344 ms; a burst of 1,000 creates from 50 users: 26 -> 34 tasks/s.

Readers are not concerned (WAL), nor is an in-memory database (one process). Imports no app.
"""
from __future__ import annotations

import fcntl
import os
import threading

from django.db.backends.sqlite3 import base

# What a statement that writes begins with (Django writes no `WITH ... INSERT`).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


class WriteLock:
    """The write lock of one database file in this process (see the module's docstring)."""

    def __init__(self, path: str):
        self.path = path
        self._fresh()
        # A forked child (django-q2's workers) starts with none of its parent's holds.
        os.register_at_fork(after_in_child=self._fresh)

    def _fresh(self) -> None:
        inherited = getattr(self, "fd", None)
        if inherited is not None:
            os.close(inherited)  # a copy: closing it leaves the parent's flock alone
        self.fd: int | None = None
        self.mutex = threading.Lock()
        self.held = threading.local()

    def acquire(self, timeout: float) -> None:
        depth = getattr(self.held, "depth", 0)
        if depth == 0:
            if not self.mutex.acquire(timeout=timeout):
                raise base.Database.OperationalError("database is locked")
            try:
                if self.fd is None:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            except BaseException:
                self.mutex.release()
                raise
        self.held.depth = depth + 1

    def release(self) -> None:
        depth = getattr(self.held, "depth", 0)
        if depth <= 0:
            return
        self.held.depth = depth - 1
        if depth == 1:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                self.mutex.release()


_locks: dict[str, WriteLock] = {}
_locks_lock = threading.Lock()


def write_lock(database: str) -> WriteLock:
    path = os.path.abspath(database) + ".writelock"
    with _locks_lock:
        if path not in _locks:
            _locks[path] = WriteLock(path)
        return _locks[path]


class CursorWrapper(base.SQLiteCursorWrapper):
    # Set by the connection that makes the cursor: its lock and how long to wait for it.
    writes: WriteLock | None = None
    timeout = 5.0

    def execute(self, query, params=None):
        if self._locks(query):
            self.writes.acquire(self.timeout)
            try:
                return super().execute(query, params)
            finally:
                self.writes.release()
        return super().execute(query, params)

    def executemany(self, query, param_list):
        if self._locks(query):
            self.writes.acquire(self.timeout)
            try:
                return super().executemany(query, param_list)
            finally:
                self.writes.release()
        return super().executemany(query, param_list)

    def _locks(self, query: str) -> bool:
        # Inside a transaction its BEGIN took the lock already.
        return (self.writes is not None and not self.connection.in_transaction
                and query.lstrip()[:7].upper().startswith(_WRITES))


class DatabaseWrapper(base.DatabaseWrapper):
    writes: WriteLock | None = None
    holds_write_lock = False

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        # Here, not at __init__: the test runner renames the database after that.
        self.writes = None if self.is_in_memory_db() else write_lock(str(self.settings_dict["NAME"]))
        return connection

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=CursorWrapper)
        cursor.writes = self.writes
        cursor.timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5.0))
        return cursor

    def _start_transaction_under_autocommit(self):
        if self.writes is not None and not self.holds_write_lock:
            self.writes.acquire(float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5.0)))
            self.holds_write_lock = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._let_go()
            raise

    def _let_go(self) -> None:
        if self.holds_write_lock:
            self.holds_write_lock = False
            self.writes.release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._let_go()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._let_go()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._let_go()
