"""The daily image quota: exact under concurrency, counted on the day a task is queued,
in the studio's time zone, and its refusal says what is left."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from generation.errors import QuotaExceeded
from generation.models import GenerationTask, TaskStatus
from generation.quota import quota_day_start, quota_resets_at, quota_usage
from generation.services import generation_cancel, generation_create, generation_retry


@pytest.fixture
def painter(make_user, catalog):
    user = make_user("painter")
    user.daily_image_quota = 10
    user.max_concurrent_tasks = 100
    user.save()
    return user


def create(user, **values):
    return generation_create(user=user, prompt="a lighthouse", model_name="demo-sd15", **values)


@pytest.mark.django_db(transaction=True)
def test_thirty_parallel_creates_never_pass_a_quota_of_ten(painter):
    """Each request runs in its own thread with its own database connection, as in a web server."""
    accepted, refused, errors = [], [], []
    start = threading.Barrier(30)

    def one():
        try:
            start.wait()
            accepted.append(create(painter).pk)
        except QuotaExceeded:
            refused.append(1)
        except Exception as exc:  # anything else is a failure of the test, reported below
            errors.append(repr(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(accepted) == 10 and len(refused) == 20
    assert GenerationTask.objects.filter(user=painter).count() == 10


@pytest.mark.django_db
def test_a_task_retried_today_counts_today_however_old_it_is(painter):
    """Cancelled tasks cannot be stock-piled on earlier days and retried later for free."""
    painter.daily_image_quota = 4
    painter.save()
    stock = []
    for days_ago in (1, 2):
        task = create(painter, batch_size=4)
        generation_cancel(task=task)
        earlier = timezone.now() - timedelta(days=days_ago)
        GenerationTask.objects.filter(pk=task.pk).update(created_at=earlier, queued_at=earlier)
        stock.append(task)
    assert quota_usage(user=painter)["used"] == 0
    create(painter, batch_size=4)  # today's four
    for task in stock:
        task.refresh_from_db()
        with pytest.raises(QuotaExceeded):
            generation_retry(task=task)
    assert GenerationTask.objects.filter(status=TaskStatus.CANCELLED).count() == 2

    GenerationTask.objects.filter(status=TaskStatus.PENDING).update(status=TaskStatus.FAILED)
    retried = generation_retry(task=stock[0])  # room again: the retry counts today
    assert retried.status == TaskStatus.PENDING and retried.queued_at >= quota_day_start()
    assert quota_usage(user=painter)["used"] == 4


@pytest.mark.django_db
def test_the_refusal_says_what_is_left(painter):
    painter.daily_image_quota = 3
    painter.save()
    create(painter, batch_size=1)
    with pytest.raises(QuotaExceeded) as refused:
        create(painter, batch_size=4)
    assert refused.value.message.startswith("2 images left today; this request needs 4. It resets at ")
    create(painter, batch_size=2)
    with pytest.raises(QuotaExceeded) as refused:
        create(painter, batch_size=1)
    assert refused.value.message.startswith("Today's image quota (3) is used up. It resets at ")


@pytest.mark.django_db
def test_the_refusal_in_chinese(painter, api_client_for):
    painter.daily_image_quota = 1
    painter.save()
    client = api_client_for(painter)
    response = client.post("/api/v1/generation/create-async", {"prompt": "p", "batch_size": 2}, format="json",
                           HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 429
    message = response.json()["error"]["message"]
    assert "今天还剩 1 张图片" in message and "需要 2 张" in message


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/New_York"])
def test_quota_days_follow_the_studios_time_zone(painter, settings, zone):
    settings.TIME_ZONE = zone
    start = quota_day_start()
    local = timezone.localtime(start)
    assert (local.hour, local.minute) == (0, 0) and str(local.tzinfo) == zone
    assert timezone.localtime(quota_resets_at()).date() == local.date() + timedelta(days=1)
    task = create(painter, batch_size=2)
    GenerationTask.objects.filter(pk=task.pk).update(queued_at=start + timedelta(minutes=1))
    assert quota_usage(user=painter)["used"] == 2
    GenerationTask.objects.filter(pk=task.pk).update(queued_at=start - timedelta(minutes=1))
    assert quota_usage(user=painter)["used"] == 0  # yesterday, in the studio's time zone


@pytest.mark.django_db
def test_the_admin_shows_the_same_count_as_the_quota(painter, client, make_user):
    create(painter, batch_size=3)
    staff = make_user("boss", is_staff=True, is_superuser=True)
    client.force_login(staff)
    page = client.get("/admin/accounts/user/").content.decode()
    assert f"3 / {painter.daily_image_quota}" in page



@pytest.mark.django_db
def test_a_new_day_gives_the_quota_back_in_a_running_process(painter, monkeypatch):
    """The sum is compiled once a day with the day's start in it: the next day, the same
    process counts from the new midnight."""
    from generation import quota

    create(painter, batch_size=2)
    assert quota_usage(user=painter)["used"] == 2
    tomorrow = quota_resets_at()
    monkeypatch.setattr(quota, "quota_day_start", lambda now=None: tomorrow)
    assert quota_usage(user=painter)["used"] == 0
    monkeypatch.undo()
    assert quota_usage(user=painter)["used"] == 2
