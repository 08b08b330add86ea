"""Statements whose SQL is compiled once and run again with new values: reads for the
calls clients make many times a second (the status poll, its token check), and the
writes every task makes on its way through the pump (`PreparedUpdate`, `PreparedInsert`)
and the create of a task (`PreparedCreate`).

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

from datetime import datetime, timezone
from typing import Any, Callable, Hashable

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model, QuerySet, signals
from django.db.models.fields import NOT_PROVIDED, AutoFieldMixin
from django.db.models.sql import DeleteQuery, UpdateQuery


class _Argument:
    """Where the n-th argument goes in the compiled statement's parameters."""

    __slots__ = ("n",)

    def __init__(self, n: int):
        self.n = n


# Values no real argument takes, to find each argument among the compiled parameters
# (within a 32-bit column's range: the ORM answers a lookup outside it without the database).
_MARKER_BASE = 2_013_265_921


def datetime_markers(count: int) -> tuple[datetime, ...]:
    """Markers for datetime arguments (moments in 1901 no task ever has)."""
    return tuple(datetime(1901, 1, 1, 0, 0, n, tzinfo=timezone.utc) for n in range(count))


def _markers(arguments: int, markers: tuple | None) -> tuple:
    markers = markers or (None,) * arguments
    if len(markers) != arguments:
        raise ValueError("one marker per argument")
    return tuple(_MARKER_BASE - n if marker is None else marker for n, marker in enumerate(markers))


class JsonMarker(dict):
    """The marker of a JSON argument (see `json_marker`)."""


def json_marker(n: int = 0) -> JsonMarker:
    """A marker for a JSON argument, written as the ORM writes a JSONField without an
    encoder of its own (None is SQL NULL)."""
    return JsonMarker({"<easel json marker>": n})


def _adapt(value, marker, connection):
    # What the ORM sends for a datetime (SQLite: text in UTC; PostgreSQL: the value) and
    # for JSON (SQLite: the text; PostgreSQL: psycopg's Jsonb); integers and text go as
    # they are. The marker says which.
    if isinstance(marker, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    if isinstance(marker, JsonMarker):
        return None if value is None else connection.ops.adapt_json_value(value, None)
    return value


def _is_marker(param, marker, connection) -> bool:
    if isinstance(param, bool):
        return False
    if isinstance(marker, JsonMarker):
        # PostgreSQL's Jsonb compares as an object: its `obj` is what it wraps.
        return getattr(param, "obj", None) == marker or param == _adapt(marker, marker, connection)
    return param == _adapt(marker, marker, connection)


def _template(params, markers: tuple, connection) -> tuple:
    """The compiled parameters with each marker's place taken by its argument's number."""
    template: list[Any] = []
    found = set()
    for param in params:
        n = next((n for n, marker in enumerate(markers) if _is_marker(param, marker, connection)), None)
        if n is None:
            template.append(param)
        else:
            template.append(_Argument(n))
            found.add(n)
    if len(found) != len(markers):
        raise ValueError("an argument is not a parameter of the statement")
    return tuple(template)


def _params(template: tuple, arguments: tuple, markers: tuple, connection) -> list:
    return [_adapt(arguments[p.n], markers[p.n], connection) if isinstance(p, _Argument) else p for p in template]


class Prepared:
    def __init__(self, build: Callable[..., QuerySet], *, arguments: int, markers: tuple | None = None):
        """`build(*markers)` returns the queryset, a `values_list()`, with the markers
        where the arguments go. The default markers are integers; give `markers` for
        text arguments (distinct values that no constant of the query equals; None
        where an integer goes)."""
        self._build = build
        self._markers = _markers(arguments, markers)
        # Database alias → (SQL, parameter template, column converters).
        self._kept: dict[str, tuple] = {}

    def _compiled(self, using: str):
        connection = connections[using]
        entry = self._kept.get(using)
        if entry is None:
            compiler = self._build(*self._markers).query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            template = _template(params, self._markers, connection)
            fields = [s[0] for s in compiler.select[0: compiler.col_count]]
            converters = tuple(compiler.get_converters(fields).items())
            # Two threads may both compile it first: the same entry, either one kept.
            entry = self._kept[using] = (sql, template, converters)
        return connection, entry

    def rows(self, *arguments, using: str = DEFAULT_DB_ALIAS) -> list[tuple]:
        connection, (sql, template, converters) = self._compiled(using)
        params = _params(template, arguments, self._markers, connection)
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


class PreparedGet:
    """One row of `model` by its id, as the model instance the ORM would make (`from_db`),
    its SELECT of every column compiled once: a `Prepared` read. Related rows are not
    read with it (assign them, or let their descriptors read them when asked)."""

    def __init__(self, model: type[Model]):
        self._model = model
        self._names = tuple(field.attname for field in model._meta.concrete_fields)
        self._read = Prepared(lambda pk: model._base_manager.filter(pk=pk).values_list(*self._names), arguments=1)

    def get(self, pk: int, using: str = DEFAULT_DB_ALIAS) -> Model | None:
        row = self._read.first(pk, using=using)
        return None if row is None else self._model.from_db(using, self._names, row)


class PreparedUpdate:
    """An UPDATE (or a DELETE) compiled once, like a `Prepared` read: its SQL and
    parameters are kept and run again with the arguments in the markers' places.

    `build(*markers)` returns `(queryset, values)`: the rows to change, filtered on one
    table (no joins), and the values to set as `update()` takes them (constants and
    expressions such as `F()` or `Now()` are compiled in); or `(queryset, None)` for a
    DELETE of rows no other row depends on (no cascade, no signal: what the ORM deletes
    with one statement anyway). Arguments are integers, text, aware datetimes or JSON
    (give `markers` for all but integers: `datetime_markers()`, `json_marker()`); `run()`
    answers how many rows changed, as `update()` does."""

    def __init__(self, build: Callable[..., tuple[QuerySet, dict | None]], *, arguments: int,
                 markers: tuple | None = None, variant: Callable[[], Hashable] | None = None):
        """`markers`: None where an integer goes. `variant`: what else the statement is
        built from (a setting compiled into it); each value gets a statement of its own."""
        self._build = build
        self._markers = _markers(arguments, markers)
        self._variant = variant
        self._kept: dict[tuple, tuple] = {}

    def _compiled(self, using: str):
        connection = connections[using]
        key = (using, self._variant() if self._variant else None)
        entry = self._kept.get(key)
        if entry is None:
            queryset, values = self._build(*self._markers)
            if values is None:
                query = queryset.query.chain(DeleteQuery)
            else:
                query = queryset.query.chain(UpdateQuery)
                query.add_update_values(values)
            compiler = query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            if len([alias for alias, count in query.alias_refcount.items() if count]) > 1:
                raise ValueError("a prepared write changes the rows of one table, filtered on it alone")
            entry = self._kept[key] = (sql, _template(params, self._markers, connection))
        return connection, entry

    def run(self, *arguments, using: str = DEFAULT_DB_ALIAS) -> int:
        connection, (sql, template) = self._compiled(using)
        # As the ORM's update(): an error inside a transaction marks it for rollback.
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.execute(sql, _params(template, arguments, self._markers, connection))
            return cursor.rowcount

    def run_many(self, rows: list[tuple], using: str = DEFAULT_DB_ALIAS) -> int:
        """`run` for each row of arguments, in one call to the driver (SQLite steps one
        statement; psycopg sends them in a pipeline); the rows changed in all."""
        if not rows:
            return 0
        connection, (sql, template) = self._compiled(using)
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.executemany(sql, [_params(template, arguments, self._markers, connection) for arguments in rows])
            return cursor.rowcount


class _KeptPerDatabase:
    """A statement written once per database alias (`_compile(connection)`), then kept."""

    _kept: dict[str, tuple]

    def _compiled(self, using: str):
        connection = connections[using]
        entry = self._kept.get(using)
        if entry is None:
            entry = self._kept[using] = self._compile(connection)
        return connection, entry

    def _compile(self, connection) -> tuple:
        raise NotImplementedError


class PreparedInsert(_KeptPerDatabase):
    """An INSERT of rows of `model` with the values of `fields` (in that order), written
    once per database: each value goes through its field as `save()` would send it (a
    JSON field's object, a datetime), without building model instances. Nothing is read
    back (no ids): for rows written and not looked at again by the writer."""

    def __init__(self, model: type[Model], fields: tuple[str, ...]):
        self._model = model
        self._names = fields
        self._kept: dict[str, tuple] = {}

    def _compile(self, connection) -> tuple:
        meta = self._model._meta
        fields = tuple(meta.get_field(name) for name in self._names)
        left_out = {f.name for f in meta.concrete_fields if not f.primary_key} - {f.name for f in fields}
        if left_out:
            # The database has no defaults of Django's: a column left out would be NULL.
            raise ValueError(f"every column but the id is written; left out: {sorted(left_out)}")
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ", row, fields

    def run(self, rows: list[tuple], using: str = DEFAULT_DB_ALIAS) -> None:
        if not rows:
            return
        connection, (head, row, fields) = self._compiled(using)
        params = [field.get_db_prep_save(value, connection) for values in rows for field, value in zip(fields, values)]
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.execute(head + ", ".join([row] * len(rows)), params)


class PreparedCreate(_KeptPerDatabase):
    """`Model.save()` of a new row of `model`, its INSERT written once per database: every
    column but the id, each value prepared as `save()` prepares it (`pre_save`: the
    `auto_now` times; then the field's own conversion), the new id read back onto the
    instance. An ORM create compiles its INSERT anew every time: 1.1 ms of a create
    request's 8.9 ms of CPU in a profile of bench/capacity.py.

    No `pre_save`/`post_save` signal is sent, so a model with receivers is refused, as is
    one whose id the database does not make (a default in Python, or a parent model) and
    one with a column the database fills (`db_default`, a generated field)."""

    def __init__(self, model: type[Model]):
        self._model = model
        self._kept: dict[str, tuple] = {}

    def _compile(self, connection) -> tuple:
        meta = self._model._meta
        if signals.pre_save.has_listeners(self._model) or signals.post_save.has_listeners(self._model):
            raise ValueError(f"{meta.label} has save signal receivers, which a prepared create would skip")
        if not isinstance(meta.pk, AutoFieldMixin) or meta.parents:
            raise ValueError(f"{meta.label}: only a model whose database makes its id")
        fields = tuple(f for f in meta.concrete_fields if not f.primary_key)
        if any(f.generated or f.db_default is not NOT_PROVIDED for f in fields):
            raise ValueError(f"{meta.label}: a column the database fills is written by save() only")
        quote = connection.ops.quote_name
        sql = (f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
               f"VALUES ({', '.join(['%s'] * len(fields))})")
        returning = connection.features.can_return_columns_from_insert
        if returning:
            sql += f" RETURNING {quote(meta.pk.column)}"
        return sql, fields, returning

    def create(self, instance: Model, using: str = DEFAULT_DB_ALIAS) -> Model:
        connection, (sql, fields, returning) = self._compiled(using)
        params = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
        with transaction.mark_for_rollback_on_error(using), connection.cursor() as cursor:
            cursor.execute(sql, params)
            instance.pk = cursor.fetchone()[0] if returning else cursor.lastrowid
        instance._state.adding = False
        instance._state.db = using
        return instance
