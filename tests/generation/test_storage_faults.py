"""Media storage that fails while tasks finish: the images are stored once it is back.

A real qcluster (its own, with its own media folder and short pumps, so hand-overs
happen while images wait to be stored) runs tasks on the demo engine. The storage is
broken as a full or unmounted disk breaks it: a path it must write under is a regular
file, so every write there raises (the tests run as root, where permissions stop nothing).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from django.urls import reverse

from generation.models import ACTIVE_STATUSES, GeneratedImage, GenerationTask, TaskStatus
from tests.conftest import Cluster, api_create, cluster_env, tasks_finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

RETRYING = "could not be saved yet"


@pytest.fixture(scope="module")
def _storage_cluster(django_db_setup, django_db_blocker, tmp_path_factory):
    media = tmp_path_factory.mktemp("storage-faults-media")
    with django_db_blocker.unblock():
        # A pump hands over every 3 s: a runner waiting for the storage must let go
        # and its successor finish the same set.
        cluster = Cluster({**cluster_env(), "MEDIA_ROOT": str(media), "EASEL_PUMP_SECONDS": "3"})
        cluster.start()
    yield cluster, media
    cluster.stop()


@pytest.fixture
def studio(_storage_cluster, engine_catalog, settings, django_db_blocker):
    """The demo engine running six prompts at once, this module's cluster (and no other)
    following them, media in the cluster's folder."""
    from generation.fleet.pump import pumps_ensure
    from models_catalog.models import ComfyBackend

    cluster, media = _storage_cluster
    for other in list(Cluster.running):
        if other is not cluster:
            other.stop()  # the session's cluster would store into another folder
    if cluster.proc is None or cluster.proc.poll() is not None:
        cluster.start()
    settings.MEDIA_ROOT = str(media)
    for folder in media.iterdir():  # an earlier test's files
        shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
    ComfyBackend.objects.update(max_in_flight=6)
    pumps_ensure()  # the flush before this test took the pumps' rows and the queue
    yield {"media": media, "engine": engine_catalog["engine"], "cluster": cluster}
    # As for the session's cluster: let the runners go idle before the flush.
    GenerationTask.objects.filter(status__in=ACTIVE_STATUSES).update(
        status=TaskStatus.CANCELLED, lease_owner="", lease_until=None)
    time.sleep(1.5)


@pytest.fixture
def owner(make_user):
    return make_user("keeper", max_concurrent_tasks=50, daily_image_quota=1000)


@pytest.fixture
def client(owner, api_client_for):
    return api_client_for(owner)


class BrokenFolder:
    """`media/<name>` replaced by a regular file: every write under it fails."""

    def __init__(self, media: Path, name: str):
        self.path = media / name
        self.aside = media / f"{name}.aside"

    def __enter__(self):
        if self.path.exists():
            self.path.rename(self.aside)
        self.path.write_text("not a folder")
        return self

    def restore(self):
        if self.path.is_file():
            self.path.unlink()
            if self.aside.exists():
                self.aside.rename(self.path)

    def __exit__(self, *exc):
        self.restore()


def create(client, n: int, **extra) -> list[int]:
    return api_create(client, n, **extra)


def finished(ids, timeout=60) -> dict[int, GenerationTask]:
    return tasks_finished(ids, timeout=timeout, interval=0.2)


def files_under(media: Path, folder: str) -> list[Path]:
    return sorted(p for p in (media / folder).rglob("*") if p.is_file()) if (media / folder).is_dir() else []


def test_images_finished_while_the_storage_is_away_are_stored_once_it_is_back(studio, client):
    """The thumbnails' folder cannot be written for 5 s while six two-image tasks finish
    (each picture is written before its thumbnail fails, so a half-stored picture must
    go again). Every task completes once with its two images: none fails, none has a
    picture twice, no file is left over. Meanwhile the task says why it waits."""
    media = studio["media"]
    with BrokenFolder(media, "thumbs") as broken:
        began = time.monotonic()
        ids = create(client, 6, batch_size=2)
        waiting: set[int] = set()
        while time.monotonic() - began < 5:
            waiting |= set(GenerationTask.objects.filter(
                pk__in=ids, status="processing", status_message__contains=RETRYING).values_list("pk", flat=True))
            time.sleep(0.1)
        broken.restore()
    rows = finished(ids)
    assert {t.status for t in rows.values()} == {"completed"}, {t.pk: t.error_message for t in rows.values()}
    # At least some of them finished their prompt during the outage and waited for the storage.
    assert len(waiting) >= 2, waiting
    assert all(t.status_message == "" for t in rows.values())
    images = list(GeneratedImage.objects.filter(task_id__in=ids).order_by("task_id", "index"))
    by_task = {pk: [i.index for i in images if i.task_id == pk] for pk in ids}
    assert by_task == {pk: [0, 1] for pk in ids}
    # One picture and one thumbnail a row, each a real file, and no other file.
    assert files_under(media, "results") == sorted(media / i.file.name for i in images)
    assert files_under(media, "thumbs") == sorted(media / i.thumbnail.name for i in images)


def test_a_storage_that_stays_broken_fails_the_task_with_a_storage_error(studio, client, owner):
    """With the storage still broken at the task's execution timeout (3 s, counted from
    its start), the task fails as a storage failure, in the reader's language: not as an
    internal error, and not only when the pump's hour is up."""
    from django.test import Client

    from models_catalog.models import WorkflowTemplate

    WorkflowTemplate.objects.filter(slug="txt2img-basic").update(execution_timeout=3)
    media = studio["media"]
    with BrokenFolder(media, "results"):
        began = time.monotonic()
        [task_id] = create(client, 1)
        rows = finished([task_id], timeout=30)
    task = rows[task_id]
    assert (task.status, task.error_code) == ("failed", "storage_error"), (task.status, task.error_code,
                                                                          task.error_message)
    assert time.monotonic() - began < 20
    assert task.error_message.startswith("Storage failed: the finished images could not be saved")
    assert not GeneratedImage.objects.filter(task_id=task_id).exists()
    assert files_under(media, "results") == [] and files_under(media, "thumbs") == []

    body = client.get(f"/api/v1/generation/status/{task_id}").json()
    assert body["error_code"] == "storage_error" and body["error_message"] == task.error_message
    page = Client()
    page.force_login(owner)
    chinese = page.get(reverse("generation:task", args=[task_id]), HTTP_ACCEPT_LANGUAGE="zh-Hans").content.decode()
    assert "存储失败" in chinese


def test_a_task_cancelled_while_waiting_for_the_storage_stops_waiting(studio, client):
    """Cancelled while its images wait for the storage: its runner stops trying (the
    cluster's log shows no further attempt), the task stays cancelled, and nothing is
    stored for it when the storage comes back."""
    media, cluster = studio["media"], studio["cluster"]

    def attempts(task_id) -> int:
        return sum(1 for line in cluster.output().splitlines()
                   if "could not store output" in line and f"[task_id={task_id} " in line)

    with BrokenFolder(media, "results") as broken:
        [task_id] = create(client, 1)
        wait_for(lambda: GenerationTask.objects.filter(pk=task_id, status_message__contains=RETRYING).exists(),
                 timeout=30, message="the task to wait for the storage")
        response = client.post(f"/api/v1/generation/{task_id}/cancel")
        assert response.status_code in (200, 202), response.content
        time.sleep(1.5)  # the runner sees the cancel at its next heartbeat (about 1 s)
        tried = attempts(task_id)
        assert tried >= 1
        # Its next attempts would have come 2 s and 4 s later (the backoff doubles).
        time.sleep(4.5)
        assert attempts(task_id) == tried
        broken.restore()
        time.sleep(1.5)
    task = GenerationTask.objects.get(pk=task_id)
    assert task.status == "cancelled"
    assert not GeneratedImage.objects.filter(task_id=task_id).exists()
    assert files_under(media, "results") == []
