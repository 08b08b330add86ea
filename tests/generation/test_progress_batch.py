"""A pump writes the progress of every prompt it follows at once every interval (one
statement compiled once, run for each prompt in one call), and only where the runner
that reported it still holds an unfinished task."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation.fleet.progress import ProgressBatch
from generation.models import GenerationTask, TaskStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks(make_user, catalog):
    user = make_user()

    def make(owner: str, status: str = TaskStatus.PROCESSING) -> GenerationTask:
        return GenerationTask.objects.create(
            user=user, prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
            backend=catalog["backend"], width=64, height=64, steps=20, cfg=7, sampler="euler", scheduler="normal",
            seed=1, status=status, lease_owner=owner, progress_max=20)

    return make


def progress(row: GenerationTask) -> tuple:
    row.refresh_from_db()
    return row.progress_value, row.progress_max, row.progress_node


def test_one_statement_writes_every_runner_s_latest_progress(tasks, django_capture_on_commit_callbacks):
    first, second, idle = tasks("pump1:a"), tasks("pump1:b"), tasks("pump1:c")
    batch = ProgressBatch()
    batch.put(first.pk, "pump1:a", {"progress_value": 3, "progress_max": 20, "progress_node": "KSampler"})
    batch.put(first.pk, "pump1:a", {"progress_value": 5, "progress_max": 20, "progress_node": "KSampler"})
    batch.put(second.pk, "pump1:b", {"progress_value": 9, "progress_max": 30, "progress_node": "VAE Decode"})
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
        assert batch.flush() == 2
    # One UPDATE run for each task in one call (Django logs it as "2 times: UPDATE ...");
    # beside it the owners' events (generation.events): one read and one insert for all
    # of them, and a NOTIFY on PostgreSQL once committed.
    statements = [q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))]
    assert statements[0].startswith("2 times: UPDATE"), statements
    assert [s.split()[0] for s in statements[1:]] == ["SELECT", "INSERT"] + (
        ["SELECT"] if connection.vendor == "postgresql" else []), statements
    assert progress(first) == (5, 20, "KSampler")  # the latest report, not each one
    assert progress(second) == (9, 30, "VAE Decode")
    assert progress(idle) == (0, 20, "")  # nothing reported: untouched
    with CaptureQueriesContext(connection) as queries:
        assert batch.flush() == 0  # written once
    assert len(queries) == 0


def test_a_late_report_touches_no_task_its_runner_no_longer_holds(tasks):
    taken_over, finished = tasks("pump2:a"), tasks("pump1:b", status=TaskStatus.COMPLETED)
    batch = ProgressBatch()
    batch.put(taken_over.pk, "pump1:a", {"progress_value": 7, "progress_max": 20, "progress_node": "KSampler"})
    batch.put(finished.pk, "pump1:b", {"progress_value": 7, "progress_max": 20, "progress_node": "KSampler"})
    assert batch.flush() == 0
    assert progress(taken_over) == (0, 20, "")
    assert progress(finished) == (0, 20, "")


def test_a_runner_that_ended_leaves_nothing_to_write(tasks):
    """A runner forgets its unwritten progress when it ends: a batch of tasks that all
    ended within the interval costs no statement. Another runner's report stays."""
    ended, other = tasks("pump1:a", status=TaskStatus.COMPLETED), tasks("pump1:b")
    batch = ProgressBatch()
    batch.put(ended.pk, "pump1:a", {"progress_value": 20, "progress_max": 20, "progress_node": "KSampler"})
    batch.discard(ended.pk, "pump1:a")
    with CaptureQueriesContext(connection) as queries:
        assert batch.flush() == 0
    assert len(queries) == 0
    batch.put(other.pk, "pump1:b", {"progress_value": 4, "progress_max": 20, "progress_node": "KSampler"})
    batch.discard(other.pk, "pump9:b")  # not its report: kept
    assert batch.flush() == 1
    assert progress(other) == (4, 20, "KSampler")
