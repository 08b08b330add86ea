"""Reads whose SQL is compiled once and run again with new values: for the calls clients
make many times a second (the status poll, its token check).

Building a queryset's SQL is most of what a small read costs in Django: for a row of
some forty columns the compiler spends about ten times as long writing the statement as
the database spends answering it, on every call. A `Prepared` read builds its queryset
once per database connection, with marker values where the arguments go, keeps the SQL
and the compiler (for the column converters: dates from SQLite's text, JSON, decimals),
and afterwards only executes the statement with the arguments in the markers' places.

Only for `values_list()` querysets (rows come back as tuples, converted like the ORM's
own) whose arguments are plain parameters (`pk=`, `user_id=`, `token_key=`...). The
statement goes through the connection's cursor wrapper like any query: it is logged,
counted by `CaptureQueriesContext` and seen by `execute_wrapper`s. Imports no app.

The compiled statement is kept once per process and database alias, not per connection:
under the ASGI server each request runs in a thread of its own with a connection object
of its own, so a per-connection copy was compiled anew on every request (a fifth of a
create's CPU). What is shared is read-only (the SQL, the parameter template, the column
converters); the converters run with the calling thread's own connection.
"""
from __future__ import annotations

from typing import Any, Callable

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet


class _Argument:
    """Where the n-th argument goes in the compiled statement's parameters."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


# Values no real argument takes, to find each argument among the compiled parameters.
_MARKER_BASE = -7_300_000_017


class Prepared:
    def __init__(self, build: Callable[..., QuerySet], *, arguments: int, markers: tuple | None = None):
        """`build(*markers)` returns the queryset, a `values_list()`, with the markers
        where the arguments go. The default markers are integers; give `markers` for
        text arguments (distinct values that no constant of the query equals)."""
        self._build = build
        self._markers = markers or tuple(_MARKER_BASE - n for n in range(arguments))
        if len(self._markers) != arguments:
            raise ValueError("one marker per argument")
        # Database alias → (SQL, parameter template, column converters).
        self._kept: dict[str, tuple] = {}

    def _compiled(self, using: str):
        connection = connections[using]
        entry = self._kept.get(using)
        if entry is None:
            compiler = self._build(*self._markers).query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            template: list[Any] = []
            found = set()
            for param in params:
                if param in self._markers and not isinstance(param, bool):
                    n = self._markers.index(param)
                    template.append(_Argument(n))
                    found.add(n)
                else:
                    template.append(param)
            if len(found) != len(self._markers):
                raise ValueError("an argument is not a parameter of the statement")
            fields = [s[0] for s in compiler.select[0: compiler.col_count]]
            converters = tuple(compiler.get_converters(fields).items())
            # Two threads may both compile it first: the same entry, either one kept.
            entry = self._kept[using] = (sql, tuple(template), converters)
        return connection, entry

    def rows(self, *arguments, using: str = DEFAULT_DB_ALIAS) -> list[tuple]:
        connection, (sql, template, converters) = self._compiled(using)
        params = [arguments[p.n] if isinstance(p, _Argument) else p for p in template]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not converters or not rows:
            return rows
        # The ORM's own conversion (SQLCompiler.apply_converters), with this thread's connection.
        converted = []
        for row in rows:
            row = list(row)
            for position, (functions, expression) in converters:
                value = row[position]
                for function in functions:
                    value = function(value, expression, connection)
                row[position] = value
            converted.append(tuple(row))
        return converted

    def first(self, *arguments, using: str = DEFAULT_DB_ALIAS) -> tuple | None:
        rows = self.rows(*arguments, using=using)
        return rows[0] if rows else None
