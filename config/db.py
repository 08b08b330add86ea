"""A database connection that died under a request or a job (PostgreSQL restarted, a
failover, `pg_terminate_backend`, a proxy's idle timeout).

Django keeps a persistent connection (CONN_MAX_AGE) across requests and a worker keeps
one across jobs; once the server has dropped it, every query on it fails until it is
closed. These helpers tell such a loss apart from other database errors and close the
dead connection so the next query opens a fresh one. Used by the web middleware and the
API's exception handler (a 503 with Retry-After, or one retry of a read), and by the
jobs and the pump (a step run again, or at the next beat). Imports no app.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a client is told to wait before trying again: a fresh connection is usually
# there at once; a restarting server takes a few seconds.
RETRY_AFTER_SECONDS = 2


def connection_lost(exc: BaseException | None, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Did `exc` come from this thread's connection having died (or never opening)?

    Not for other operational errors (a lock timeout, SQLite's "database is locked",
    a deadlock): those leave the connection open and are not answered as an outage.
    """
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    cause = exc.__cause__
    # The server said it is ending the session (shutdown, pg_terminate_backend) or cannot
    # take one now, or the driver found the connection broken (psycopg 3, psycopg2).
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None) or ""
    if sqlstate.startswith("08") or sqlstate in _SESSION_ENDED:
        return True
    pgconn = getattr(cause, "pgconn", None)
    if pgconn is not None and getattr(pgconn, "status", 0) == _CONNECTION_BAD:
        return True
    raw = connections[using].connection
    # psycopg sets `closed` once the server has ended the session; None: connecting failed.
    return raw is None or bool(getattr(raw, "closed", False))


# admin_shutdown, crash_shutdown, cannot_connect_now (class 08 is "connection exception").
_SESSION_ENDED = {"57P01", "57P02", "57P03"}
_CONNECTION_BAD = 1  # libpq's CONNECTION_BAD


def close_lost_connection(using: str = DEFAULT_DB_ALIAS) -> None:
    """Drop this thread's dead connection: the next query connects again. Inside an
    atomic block Django only marks it for rollback; the block's end then raises."""
    try:
        connections[using].close()
    except Exception:  # closing a dead socket may itself complain
        logger.debug("closing a lost database connection failed", exc_info=True)


def retry_once_if_lost(fn: Callable[[], T], *, what: str = "") -> T:
    """Run `fn`; when the connection died under it, close it and run `fn` once more.

    Only for work that is safe to repeat (idempotent, or a single statement that the
    dead connection never committed), and outside any atomic block.
    """
    try:
        return fn()
    except (OperationalError, InterfaceError) as exc:
        if not connection_lost(exc) or connections[DEFAULT_DB_ALIAS].in_atomic_block:
            raise
        logger.warning("database connection lost%s; retrying once on a new one", f" ({what})" if what else "")
        close_lost_connection()
        return fn()
