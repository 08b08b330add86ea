"""Cross-process locks for work that must run once at a time (dispatch, the stats rollup)."""
from __future__ import annotations

from django.db import connection

# PostgreSQL advisory lock keys, one per kind of work ("EASL", "ESTA", "EPUM").
DISPATCH = 0x4541534C
STATS_ROLLUP = 0x45535441
PUMPS = 0x4550554D  # "EPUM": queueing pumps


def transaction_lock(key: int) -> None:
    """Hold `key` until the current transaction ends (call inside `transaction.atomic`).

    PostgreSQL: a transaction-level advisory lock, so two hosts serialize too. SQLite:
    every transaction is already IMMEDIATE (settings), which takes the database write
    lock up front, so there is nothing more to take.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def transaction_try_lock(key: int) -> bool:
    """`transaction_lock` without waiting: False when another transaction holds `key`.

    SQLite has no such lock: its IMMEDIATE transactions already run one at a time, so
    this takes the turn (True) once the write lock is had.
    """
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [key])
        return bool(cursor.fetchone()[0])
