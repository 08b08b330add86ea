"""Writes compiled once (config.prepared): the same rows change as with the ORM's own
update(), delete() and create(), on SQLite and PostgreSQL alike."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone as tz

import pytest
from django.db import transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.db import connection

from config.prepared import PreparedCreate, PreparedGet, PreparedInsert, PreparedUpdate, datetime_markers, json_marker
from generation.models import GenerationTask, TaskEvent

pytestmark = pytest.mark.django_db

_KIND = "<kind marker>"
_AT, = datetime_markers(1)


def _event(user_id: int, task_id: int, kind: str = "created") -> TaskEvent:
    return TaskEvent.objects.create(user_id=user_id, task_id=task_id, kind=kind, data={"n": task_id})


def test_an_update_is_built_once_and_changes_the_rows_its_arguments_name():
    builds = []

    def build(task_id, kind, at):
        builds.append(task_id)
        return TaskEvent.objects.filter(task_id=task_id), {"kind": kind, "created_at": at, "user_id": F("user_id") + 1}

    update = PreparedUpdate(build, arguments=3, markers=(None, _KIND, _AT))
    first, second, other = _event(1, 10), _event(1, 10), _event(1, 11)
    moment = datetime(2026, 11, 30, 12, 34, 56, 789000, tzinfo=tz.utc)
    assert update.run(10, "started", moment) == 2
    assert update.run(12, "started", moment) == 0
    assert update.run(11, "failed", moment + timedelta(days=1)) == 1
    assert len(builds) == 1
    rows = {e.pk: e for e in TaskEvent.objects.all()}
    for event in (first, second):
        assert (rows[event.pk].kind, rows[event.pk].created_at, rows[event.pk].user_id) == ("started", moment, 2)
    assert (rows[other.pk].kind, rows[other.pk].created_at) == ("failed", moment + timedelta(days=1))


def test_a_json_argument_is_written_as_the_orm_writes_it():
    update = PreparedUpdate(lambda task_id, data: (TaskEvent.objects.filter(task_id=task_id), {"data": data}),
                            arguments=2, markers=(None, json_marker()))
    event, other = _event(1, 10), _event(1, 11)
    graph = {"sampler": {"class_type": "KSampler", "inputs": {"seed": 2**53, "text": "un chat « noir »"}}}
    assert update.run(10, graph) == 1
    assert update.run(11, [1, "two", None]) == 1
    event.refresh_from_db(), other.refresh_from_db()
    assert event.data == graph and other.data == [1, "two", None]
    # The ORM's own reads find it as they find what they wrote themselves.
    assert TaskEvent.objects.filter(data__sampler__class_type="KSampler").get() == event


def test_a_setting_compiled_into_the_statement_gets_a_statement_of_its_own():
    seconds = {"now": 5}
    update = PreparedUpdate(
        lambda task_id: (TaskEvent.objects.filter(task_id=task_id), {"user_id": seconds["now"]}),
        arguments=1, variant=lambda: seconds["now"],
    )
    event = _event(1, 10)
    update.run(10)
    seconds["now"] = 7
    update.run(10)
    event.refresh_from_db()
    assert event.user_id == 7


def test_a_prepared_delete_removes_only_the_rows_named():
    delete = PreparedUpdate(lambda task_id: (TaskEvent.objects.filter(task_id=task_id), None), arguments=1)
    _event(1, 10), _event(1, 10), _event(1, 11)
    with CaptureQueriesContext(connection) as queries:
        assert delete.run(10) == 2
    assert len(queries) == 1 and queries[0]["sql"].startswith("DELETE")
    assert list(TaskEvent.objects.values_list("task_id", flat=True)) == [11]


def test_a_write_on_a_join_is_refused():
    update = PreparedUpdate(lambda user_id: (TaskEvent.objects.filter(user_id=user_id, task_id__in=TaskEvent.objects.filter(
        kind="x").values("task_id")), {"kind": "y"}), arguments=1)
    update.run(1)  # a subquery is no join
    from generation.models import TaskRun

    joined = PreparedUpdate(lambda number: (TaskRun.objects.filter(task__steps=number), {"number": 1}), arguments=1)
    with pytest.raises(ValueError, match="one table"):
        joined.run(3)


def test_an_insert_writes_json_and_moments_as_create_would():
    insert = PreparedInsert(TaskEvent, ("user_id", "task_id", "kind", "data", "created_at"))
    moment = datetime(2026, 11, 30, 1, 2, 3, tzinfo=tz.utc)
    insert.run([(4, 40, "created", {"prompt": "a 'quoted' cat", "n": [1, 2]}, moment),
                (4, 41, "queued", {}, moment)])
    insert.run([])
    rows = list(TaskEvent.objects.order_by("task_id").values_list("user_id", "task_id", "kind", "data", "created_at"))
    assert rows == [(4, 40, "created", {"prompt": "a 'quoted' cat", "n": [1, 2]}, moment),
                    (4, 41, "queued", {}, moment)]


def test_an_insert_must_write_every_column():
    insert = PreparedInsert(TaskEvent, ("user_id", "task_id", "kind", "data"))
    with pytest.raises(ValueError, match="created_at"):
        insert.run([(1, 2, "created", {})])


@pytest.mark.django_db(transaction=True)
def test_a_failed_write_inside_a_transaction_rolls_it_back():
    insert = PreparedInsert(TaskEvent, ("user_id", "task_id", "kind", "data", "created_at"))
    with pytest.raises(Exception):
        with transaction.atomic():
            _event(1, 10)
            insert.run([(None, 11, "created", {}, datetime.now(tz.utc))])  # user_id is NOT NULL
    assert not TaskEvent.objects.exists()


def _columns(task: GenerationTask, *, moments: bool) -> dict:
    fields = [f for f in GenerationTask._meta.concrete_fields if not f.primary_key]
    return {f.attname: getattr(task, f.attname) for f in fields
            if moments or f.attname not in ("created_at", "queued_at", "updated_at", "prompt_id", "client_id")}


def test_a_prepared_create_stores_the_row_create_would(make_user):
    user = make_user()
    values = dict(prompt="a 'quoted' fox", model_name="demo-model", width=512, height=640, steps=20, cfg=7.5,
                  sampler="euler", scheduler="normal", seed=42, inputs={"strength": 0.4, "tags": ["a", "b"]})
    create = PreparedCreate(GenerationTask)
    made = create.create(GenerationTask(user=user, **values))
    again = create.create(GenerationTask(user=user, **values))
    by_orm = GenerationTask.objects.create(user=user, **values)
    assert made.pk and again.pk == made.pk + 1 and not made._state.adding
    stored = GenerationTask.objects.get(pk=made.pk)
    # Every column as the ORM's own create writes it (the moments and the random ids aside)...
    assert _columns(stored, moments=False) == _columns(GenerationTask.objects.get(pk=by_orm.pk), moments=False)
    # ...and as the instance holds it: the auto_now times were set on it, as save() sets them.
    assert _columns(stored, moments=True) == _columns(made, moments=True)
    assert stored.created_at is not None and stored.prompt_id == made.prompt_id


def test_a_prepared_create_is_refused_for_a_model_with_save_signals():
    from django.db.models.signals import post_save

    def receiver(**kwargs):
        pass

    post_save.connect(receiver, sender=TaskEvent)
    try:
        with pytest.raises(ValueError, match="signal"):
            PreparedCreate(TaskEvent).create(TaskEvent(user_id=1, task_id=1, kind="created", data={}))
    finally:
        post_save.disconnect(receiver, sender=TaskEvent)
    assert not TaskEvent.objects.exists()


def test_a_prepared_get_makes_the_instance_the_orm_makes(make_user):
    user = make_user()
    task = GenerationTask.objects.create(user=user, prompt="a fox", model_name="m", width=64, height=64, steps=2,
                                         cfg=7, sampler="euler", scheduler="normal", seed=1, inputs={"a": [1]})
    read = PreparedGet(GenerationTask)
    got = read.get(task.pk)
    assert _columns(got, moments=True) == _columns(GenerationTask.objects.get(pk=task.pk), moments=True)
    assert got.pk == task.pk and not got._state.adding and got.user == user
    assert read.get(task.pk + 1000) is None
