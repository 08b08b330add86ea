"""Retention: history and storage limits and the orphan sweep, on local storage."""
from __future__ import annotations

import importlib
import json
import os
import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from generation.gallery.retention import GB, retention_run
from generation.models import GeneratedImage, GenerationTask, SourceImage

pytestmark = pytest.mark.django_db(transaction=True)  # files are deleted on commit


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """A media folder of this test's own: the sweep must not see other tests' files."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.EASEL_MAX_HISTORY_DAYS = 0
    settings.EASEL_MAX_STORAGE_GB = 0
    return tmp_path / "media"


@pytest.fixture
def make_task(make_user):
    owner = make_user("keeper")

    def make(*, status="completed", finished_days_ago: float = 0, images: int = 1, size: int = 1000,
             shared: bool = False) -> GenerationTask:
        finished = timezone.now() - timedelta(days=finished_days_ago)
        task = GenerationTask.objects.create(
            user=owner, prompt="a lighthouse", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7,
            sampler="euler", scheduler="normal", seed=1, status=status,
            completed_at=finished if status in ("completed", "failed", "cancelled") else None,
            share_token=f"share-{time.monotonic_ns()}" if shared else None,
        )
        GenerationTask.objects.filter(pk=task.pk).update(created_at=finished - timedelta(minutes=1))
        task.refresh_from_db()
        for index in range(images):
            image = GeneratedImage(task=task, index=index, width=64, height=64, seed=1, size_bytes=size)
            image.file.save("picture.png", ContentFile(b"png-bytes"), save=False)
            image.thumbnail.save("thumb.webp", ContentFile(b"webp-bytes"), save=False)
            image.save()
        return task

    return make


def stored_names(task_images: list[GeneratedImage]) -> list[str]:
    return [name for image in task_images for name in (image.file.name, image.thumbnail.name)]


def assert_removed(task: GenerationTask, names: list[str]) -> None:
    task.refresh_from_db()
    assert task.files_removed_at is not None
    assert not GeneratedImage.objects.filter(task=task).exists()
    assert not any(default_storage.exists(name) for name in names), names


def assert_kept(task: GenerationTask, names: list[str]) -> None:
    task.refresh_from_db()
    assert task.files_removed_at is None
    assert GeneratedImage.objects.filter(task=task).count() * 2 == len(names)
    assert all(default_storage.exists(name) for name in names), names


def test_history_limit_removes_old_finished_tasks_files_and_keeps_the_row(make_task, settings):
    settings.EASEL_MAX_HISTORY_DAYS = 30
    old = make_task(finished_days_ago=31, images=2)
    recent = make_task(finished_days_ago=29)
    old_names, recent_names = stored_names(list(old.images.all())), stored_names(list(recent.images.all()))

    summary = retention_run()

    assert summary["expired_tasks"] == 1 and summary["images_removed"] == 2 and summary["bytes_removed"] == 2000
    assert_removed(old, old_names)
    assert GenerationTask.objects.filter(pk=old.pk).exists()  # history still lists it
    assert_kept(recent, recent_names)
    # Idempotent: a second run finds nothing more to do.
    assert retention_run()["expired_tasks"] == 0


def test_history_limit_never_touches_running_tasks(make_task, settings):
    settings.EASEL_MAX_HISTORY_DAYS = 1
    # Images of an earlier attempt may exist while a task runs again.
    running = [make_task(status=status, finished_days_ago=10) for status in ("pending", "processing")]
    names = [stored_names(list(task.images.all())) for task in running]
    retention_run()
    for task, task_names in zip(running, names):
        assert_kept(task, task_names)


def test_shared_task_is_kept_until_its_share_is_revoked(make_task, settings):
    settings.EASEL_MAX_HISTORY_DAYS = 1
    shared = make_task(finished_days_ago=10, shared=True)
    names = stored_names(list(shared.images.all()))
    assert retention_run()["expired_tasks"] == 0
    assert_kept(shared, names)

    GenerationTask.objects.filter(pk=shared.pk).update(share_token=None, shared_at=None)  # share revoked
    assert retention_run()["expired_tasks"] == 1
    assert_removed(shared, names)


def test_failed_task_without_images_is_not_marked(make_task, settings):
    settings.EASEL_MAX_HISTORY_DAYS = 1
    failed = make_task(status="failed", finished_days_ago=10, images=0)
    retention_run()
    failed.refresh_from_db()
    assert failed.files_removed_at is None  # nothing was removed from it


def test_storage_limit_removes_oldest_finished_first_until_under_the_limit(make_task, settings):
    settings.EASEL_MAX_STORAGE_GB = 1
    oldest = make_task(finished_days_ago=3, size=400 * 1000**2)
    middle = make_task(finished_days_ago=2, size=400 * 1000**2)
    newest = make_task(finished_days_ago=1, size=400 * 1000**2)
    running = make_task(status="processing", finished_days_ago=5, size=100 * 1000**2)
    names = {t.pk: stored_names(list(t.images.all())) for t in (oldest, middle, newest, running)}

    summary = retention_run()

    # 1.3 GB stored: removing the oldest finished task (0.4 GB) brings it to 0.9 GB.
    assert summary["storage_tasks"] == 1 and summary["stored_bytes"] == 900 * 1000**2
    assert summary["over_limit"] is False
    assert_removed(oldest, names[oldest.pk])
    for task in (middle, newest, running):
        assert_kept(task, names[task.pk])


def test_storage_limit_skips_shared_and_running_tasks_and_says_when_it_cannot_reach_the_limit(make_task, settings):
    settings.EASEL_MAX_STORAGE_GB = 0.5
    shared = make_task(finished_days_ago=9, size=int(0.4 * GB), shared=True)
    running = make_task(status="processing", finished_days_ago=8, size=int(0.3 * GB))
    finished = make_task(finished_days_ago=1, size=int(0.1 * GB))
    names = {t.pk: stored_names(list(t.images.all())) for t in (shared, running, finished)}

    summary = retention_run()

    assert summary["storage_tasks"] == 1 and summary["over_limit"] is True
    assert summary["stored_bytes"] == int(0.7 * GB)
    assert_removed(finished, names[finished.pk])
    assert_kept(shared, names[shared.pk])
    assert_kept(running, names[running.pk])


def _age(media, name: str, hours: float) -> None:
    past = time.time() - hours * 3600
    os.utime(media / name, (past, past))


def test_orphan_sweep_removes_old_unreferenced_files_only(make_task, make_user, media):
    task = make_task()
    kept = stored_names(list(task.images.all()))
    upload = SourceImage(user=task.user, content_type="image/png", width=8, height=8, size_bytes=3, sha256="ab" * 32)
    upload.file.save("x.png", ContentFile(b"src"), save=False)
    upload.save()
    kept.append(upload.file.name)
    orphans = [
        default_storage.save("results/1/2025/01/999-0-dead.png", ContentFile(b"x")),
        default_storage.save("thumbs/1/2025/01/999-0.webp", ContentFile(b"x")),
        default_storage.save("uploads/1/ab/abandoned.png", ContentFile(b"x")),
    ]
    young = default_storage.save("results/1/2025/01/1000-0-being-stored.png", ContentFile(b"x"))
    elsewhere = default_storage.save("exports/old.zip", ContentFile(b"x"))
    for name in [*kept, *orphans, elsewhere]:
        _age(media, name, hours=5)

    summary = retention_run()

    assert summary["orphans_removed"] == 3
    assert not any(default_storage.exists(name) for name in orphans)
    assert all(default_storage.exists(name) for name in [*kept, young, elsewhere])


def test_orphan_sweep_with_no_media_folder_yet(media):
    assert not media.exists()
    assert retention_run()["orphans_removed"] == 0


def test_run_is_logged_on_one_line(make_task, settings, caplog):
    settings.EASEL_MAX_HISTORY_DAYS = 1
    make_task(finished_days_ago=2)
    with caplog.at_level("INFO", logger="generation.gallery.retention"):
        retention_run()
    (record,) = [r for r in caplog.records if r.name == "generation.gallery.retention"]
    assert "\n" not in record.getMessage()
    assert "removed the files of 1 expired" in record.getMessage()
    assert record.retention["expired_tasks"] == 1


def test_management_command_prints_what_it_removed(make_task, settings):
    settings.EASEL_MAX_HISTORY_DAYS = 1
    make_task(finished_days_ago=2)
    out = StringIO()
    call_command("retention", stdout=out)
    assert json.loads(out.getvalue())["expired_tasks"] == 1


def test_migration_schedules_retention_hourly_once():
    from django.apps import apps
    from django_q.models import Schedule

    migration = importlib.import_module("generation.migrations.0006_retention_schedule")
    migration.forwards(apps, None)
    migration.forwards(apps, None)  # idempotent: every host may migrate
    # Then the schedule is moved to the job's stable name (generation.jobs).
    importlib.import_module("generation.migrations.0010_jobs_by_stable_names").forwards(apps, None)
    (schedule,) = Schedule.objects.filter(name="easel-retention")
    assert schedule.func == "generation.jobs.retention_run"
    assert schedule.schedule_type == Schedule.HOURLY and schedule.repeats == -1
    # The function the schedule names is importable as django-q2 will import it.
    module, func = schedule.func.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), func))
