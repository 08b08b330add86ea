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


# --- new files wait for staff; the default model is staff's choice ---------------------------------


def test_on_first_start_the_synced_checkpoints_are_enabled_and_the_first_is_the_default(demo_engine):
    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    checkpoints_sync(backends=[backend])
    assert set(Checkpoint.objects.values_list("enabled", flat=True)) == {True}
    assert Checkpoint.objects.get(is_default=True).ckpt_name == "demo-sd15.safetensors"


def test_a_checkpoint_that_appears_later_waits_for_staff_and_takes_no_tasks(demo_engine, make_engine, make_user):
    from generation.services import generation_create
    from models_catalog.selectors import checkpoint_default

    first = backend_ensure(name="demo", base_url=demo_engine.url)
    checkpoints_sync(backends=[first])
    # A second server with a file whose name sorts before every other (and its own copy
    # of the default): it is not offered, and tasks without a model stay on the default.
    other = make_engine("--checkpoints", "aaa-new.safetensors,demo-sd15.safetensors")
    second = backend_ensure(name="gpu2", base_url=other.url)
    summary = checkpoints_sync(backends=[second])
    assert summary.added == ["aaa-new.safetensors"]
    new = Checkpoint.objects.get(ckpt_name="aaa-new.safetensors")
    assert not new.enabled
    assert "aaa-new" not in [c.name for c in checkpoint_list_usable()]
    assert checkpoint_default().name == "demo-sd15"
    task = generation_create(user=make_user(), prompt="a lighthouse")
    assert task.model_name == "demo-sd15"


def test_staff_choose_the_default_model(demo_engine, make_user):
    from models_catalog.selectors import checkpoint_default
    from models_catalog.services import checkpoint_make_default

    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    checkpoints_sync(backends=[backend])
    sdxl = Checkpoint.objects.get(name="demo-sdxl")
    checkpoint_make_default(checkpoint=sdxl)
    assert checkpoint_default() == sdxl
    assert list(Checkpoint.objects.filter(is_default=True)) == [sdxl]  # one at a time
    assert checkpoint_list_usable().first() == sdxl  # forms start on it
    Checkpoint.objects.filter(pk=sdxl.pk).update(enabled=False)
    assert checkpoint_default().name == "demo-sd15"  # while it is off: the oldest usable one


def test_the_admin_makes_a_checkpoint_the_default(demo_engine, client, make_user):
    backend = backend_ensure(name="demo", base_url=demo_engine.url)
    checkpoints_sync(backends=[backend])
    sdxl = Checkpoint.objects.get(name="demo-sdxl")
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    response = client.post("/admin/models_catalog/checkpoint/", {
        "action": "make_default", "_selected_action": [sdxl.pk]}, follow=True)
    assert response.status_code == 200
    assert Checkpoint.objects.get(is_default=True) == sdxl


def test_the_health_check_recognises_the_demo_engine(demo_engine):
    backend = backend_ensure(name="gpu", base_url=demo_engine.url)
    assert not backend.is_demo
    backend_check(backend=backend)
    backend.refresh_from_db()
    assert backend.is_demo


# --- COMFYUI_URLS are registered by whatever starts first ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_migrate_registers_the_backends_of_comfyui_urls(settings):
    from django.core.management import call_command

    settings.COMFYUI_URLS = [f"gpu1=http://127.0.0.1:{free_port()}"]
    call_command("migrate", verbosity=0)
    assert list(ComfyBackend.objects.values_list("name", flat=True)) == ["gpu1"]


def test_the_workers_tick_registers_and_checks_them(settings, demo_engine):
    from generation.jobs import studio_tick

    settings.COMFYUI_URLS = [f"gpu1={demo_engine.url}"]
    studio_tick()
    backend = ComfyBackend.objects.get(name="gpu1")
    assert backend.is_online and backend.checkpoints.count() == 2  # checked, then synced as it came online


def test_the_setup_command_registers_and_syncs_them(settings, demo_engine, capsys):
    from django.core.management import call_command

    settings.COMFYUI_URLS = [f"gpu1={demo_engine.url}"]
    call_command("setup")
    out = capsys.readouterr().out
    assert "Backends from COMFYUI_URLS: gpu1" in out
    assert "gpu1: online; checkpoints: demo-sd15, demo-sdxl" in out
    backend = ComfyBackend.objects.get(name="gpu1")
    assert backend.is_demo and backend.checkpoints.count() == 2
    assert Checkpoint.objects.filter(is_default=True).count() == 1
