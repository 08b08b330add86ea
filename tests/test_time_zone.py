"""Every date on the pages follows the studio's time zone (settings.TIME_ZONE).

The studio here is in Shanghai (UTC+8): a task made at 20:30 UTC on New Year's Day
was made at 04:30 on 2 January for everyone who reads its pages.
"""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

import pytest
from django.urls import include, path

from config.urls import urlpatterns as site_urlpatterns
from generation.models import GenerationTask, TaskStatus

# The project's URLs with the dashboard's in front, as config/urls.py includes them.
urlpatterns = [path("admin/", include("generation.ops.admin_urls")), *site_urlpatterns]
pytestmark = pytest.mark.urls(__name__)

MADE = datetime(2026, 1, 1, 20, 30, tzinfo=dt_timezone.utc)
SHANGHAI_TEXT = "Jan 2, 2026, 04:30"
SHANGHAI_ISO = "2026-01-02T04:30:00+08:00"


@pytest.fixture(autouse=True)
def shanghai(settings):
    settings.TIME_ZONE = "Asia/Shanghai"


@pytest.fixture
def task(make_user):
    owner = make_user("mei")
    made = GenerationTask.objects.create(
        user=owner, prompt="lanterns", model_name="demo-sd15", width=64, height=64, steps=4, cfg=7.0,
        sampler="euler", scheduler="normal", seed=1, status=TaskStatus.COMPLETED,
    )
    GenerationTask.objects.filter(pk=made.pk).update(created_at=MADE, started_at=MADE, completed_at=MADE)
    made.refresh_from_db()
    return made


def test_the_task_page_and_history_show_shanghai_time(client, task):
    client.force_login(task.user)
    page = client.get(f"/tasks/{task.pk}/").content.decode()
    assert f'<time datetime="{SHANGHAI_ISO}">{SHANGHAI_TEXT}</time>' in page
    assert "20:30" not in page
    history = client.get("/history/").content.decode()
    assert f'<time datetime="{SHANGHAI_ISO}" title="{SHANGHAI_TEXT}" data-when>{SHANGHAI_TEXT}</time>' in history

    # The history's day filter counts days in Shanghai too: this task is of 2 January.
    def ids(query):
        return [t.pk for t in client.get("/history/" + query).context["page"].object_list]

    assert ids("?date_from=2026-01-02&date_to=2026-01-02") == [task.pk]
    assert ids("?date_to=2026-01-01") == []


def test_the_account_page_shows_token_times_in_shanghai(client, task):
    from accounts.models import ApiToken
    from accounts.services import token_create

    token, _clear = token_create(user=task.user, name="phone")
    ApiToken.objects.filter(pk=token.pk).update(created=MADE)
    client.force_login(task.user)
    page = client.get("/accounts/me/").content.decode()
    assert f'<time datetime="{SHANGHAI_ISO}" title="{SHANGHAI_TEXT}" data-when>{SHANGHAI_TEXT}</time>' in page


def test_the_admin_and_its_dashboard_show_shanghai_time(client, task, make_user, monkeypatch):
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    listing = client.get("/admin/generation/generationtask/").content.decode()
    assert SHANGHAI_TEXT in listing
    change = client.get(f"/admin/generation/generationtask/{task.pk}/change/").content.decode()
    assert "Jan. 2, 2026, 4:30 a.m." in change

    # A worker that started at 20:30 UTC started at 04:30 in the studio.
    monkeypatch.setattr("generation.ops.stats.worker_status", lambda: {"alive": True, "clusters": [
        {"id": "c1", "host": "gpu-box", "status": "Idle", "workers": 4, "started_at": MADE.isoformat()}]})
    dashboard = client.get("/admin/dashboard/").content.decode()
    workers = dashboard[dashboard.index('id="workers"'):]
    assert "2026-01-02 04:30:00" in workers
    assert "2026-01-01T20:30" not in workers
