"""Catalog sync against the demo engine on a real port, and backend registration."""
import pytest

from models_catalog.models import Checkpoint, ComfyBackend
from models_catalog.selectors import checkpoint_list_usable
from models_catalog.services import backend_check, backend_ensure, backends_from_settings, checkpoints_sync
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def test_sync_reads_checkpoints_from_object_info(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url + "/", is_demo=True)
    assert backend.base_url == demo_engine.url  # trailing slash dropped
    summary = checkpoints_sync(backends=[backend])
    assert sorted(summary.added) == ["demo-sd15.safetensors", "demo-sdxl.safetensors"]
    assert not summary.errors
    assert sorted(c.name for c in checkpoint_list_usable()) == ["demo-sd15", "demo-sdxl"]
    assert "placeholder" in Checkpoint.objects.get(name="demo-sd15").description
    backend.refresh_from_db()
    assert backend.is_online and backend.last_seen_at
    again = checkpoints_sync(backends=[backend])
    assert again.added == [] and again.no_longer_available == []


def test_unreachable_backend_keeps_its_list_and_records_the_error(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    checkpoints_sync(backends=[backend])
    demo_engine.stop()
    summary = checkpoints_sync(backends=[backend])
    assert "demo" in summary.errors
    backend.refresh_from_db()
    assert not backend.is_online and backend.last_error
    assert backend.checkpoints.count() == 2  # a restart must not empty the catalog


def test_health_check_records_version_or_error(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    assert backend_check(backend=backend) is True
    backend.refresh_from_db()
    assert backend.comfyui_version
    down = backend_ensure(name="down", base_url=f"http://127.0.0.1:{free_port()}")
    assert backend_check(backend=down) is False
    down.refresh_from_db()
    assert down.last_error and not down.is_online


def test_backends_from_settings_accepts_names_and_bare_urls(settings):
    settings.COMFYUI_URLS = ["http://gpu1:8188", "big=http://gpu2:8188/"]
    backends_from_settings()
    backends_from_settings()  # idempotent
    assert sorted(ComfyBackend.objects.values_list("name", "base_url")) == [
        ("big", "http://gpu2:8188"), ("comfyui-1", "http://gpu1:8188"),
    ]


def test_sync_checkpoints_command(demo_engine, capsys):
    from django.core.management import call_command

    backend_ensure(name="demo", base_url=demo_engine.url)
    call_command("sync_checkpoints")
    assert "added 2" in capsys.readouterr().out
