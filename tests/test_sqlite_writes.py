"""On SQLite, writers queue on a file lock beside the database (config/sqlite3/base.py):
held for a whole write transaction and for a write outside one, free for readers, let go
by a forked child's copy, and never waited on for ever inside one process."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading

import pytest
from django.db import OperationalError, connection, connections, transaction

from config.sqlite3.base import DatabaseWrapper, write_lock

from .conftest import ROOT

pytestmark = [
    pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite backend's own lock"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def table():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE easel_test_writes (id INTEGER PRIMARY KEY, who TEXT)")
    yield "easel_test_writes"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE easel_test_writes")


def _lock_taken_elsewhere() -> bool:
    """Is the database's write lock held now? (asked from a file descriptor of our own)"""
    fd = os.open(write_lock(connection.settings_dict["NAME"]).path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT who FROM {table} ORDER BY id")
        return cursor.fetchall()


def test_a_write_transaction_holds_the_lock_from_its_start_to_its_end(table):
    assert not _lock_taken_elsewhere()
    with transaction.atomic():
        assert _lock_taken_elsewhere()  # taken at BEGIN, before any write
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} (who) VALUES ('here')")
        assert _lock_taken_elsewhere()
    assert not _lock_taken_elsewhere()
    with pytest.raises(OperationalError):
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO no_such_table VALUES (1)")
    assert not _lock_taken_elsewhere()  # a rolled-back transaction lets go too


def test_another_process_writes_once_the_transaction_ends_and_reads_meanwhile(table):
    name = connection.settings_dict["NAME"]
    code = (
        "import django, sys\n"
        "django.setup()\n"
        "from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        f"    cursor.execute('SELECT COUNT(*) FROM {table}')\n"
        "    print('read', cursor.fetchone()[0], flush=True)\n"
        f"    cursor.execute(\"INSERT INTO {table} (who) VALUES ('other')\")\n"
        "print('wrote', flush=True)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": f"sqlite:///{name}"}
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} (who) VALUES ('first')")
        other = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        # It reads beside the open transaction (WAL), then waits on the lock to write.
        assert other.stdout.readline().split() == ["read", "0"]
        with pytest.raises(subprocess.TimeoutExpired):
            other.wait(timeout=1.0)
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and out.split() == ["wrote"]
    assert _rows(table) == [("first",), ("other",)]


def test_a_forked_child_does_not_inherit_its_parent_s_hold(table):
    # (Not inside a SQLite transaction: SQLite itself forbids using its locks across a fork.)
    held = write_lock(connection.settings_dict["NAME"])
    held.acquire(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: its own connection, waiting for the parent to let go
            code = 1
            try:
                child = DatabaseWrapper(connection.settings_dict, "child")
                with child.cursor() as cursor:
                    cursor.execute(f"INSERT INTO {table} (who) VALUES ('child')")
                child.close()
                code = 0
            except BaseException as exc:
                os.write(2, f"child: {exc!r}\n".encode())
            finally:
                os._exit(code)
        with pytest.raises(subprocess.TimeoutExpired):
            subprocess.run(["sleep", "5"], timeout=0.5)
        # Still waiting: the hold it was forked with is its parent's, not its own.
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)
    finally:
        held.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _rows(table) == [("child",)]


def test_inside_one_process_a_writer_waits_no_longer_than_the_busy_timeout(table, monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {**connection.settings_dict["OPTIONS"], "timeout": 0.3})
    failed: list[Exception] = []

    def write():
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute(f"INSERT INTO {table} (who) VALUES ('late')")
        except OperationalError as exc:
            failed.append(exc)
        finally:
            connections["default"].close()

    with transaction.atomic():
        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=30)
        assert not writer.is_alive()
    assert len(failed) == 1 and "locked" in str(failed[0])
    assert _rows(table) == []
