"""`manage.py doctor`: each check, its exit code and its JSON output."""
from __future__ import annotations

import io
import json
import os
from datetime import timedelta
from types import SimpleNamespace

from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from generation.ops import doctor
from tests.conftest import wait_for


def run(*args) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("doctor", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_healthy_studio_exits_zero(engine_catalog, qcluster, settings):
    from generation.fleet.holdings import backends_held

    # The cluster's pump takes the new backend at its next beat (2 s): until then the
    # doctor rightly warns that no pump holds it.
    wait_for(lambda: any("demo" in names for names in backends_held().values()), timeout=30,
             message="a pump holding the demo backend")
    code, out = run("--json")
    report = json.loads(out)
    levels = {c["name"]: c["level"] for c in report["checks"]}
    assert code == 0, out
    assert report["ok"] is True
    assert levels["migrations"] == levels["workers"] == levels["backends"] == levels["media"] == "ok"
    assert levels["backend:demo"] == "ok"
    assert levels["clock"] == "ok"  # a worker on this host shares its clock


def test_no_backend_online_exits_non_zero_with_a_fix(catalog):
    code, out = run()
    assert code == 1
    assert "ERROR" in out and "No backend is online" in out
    assert "fix:" in out
    code, out = run("--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1
    assert checks["backends"]["level"] == "error" and checks["backends"]["fix"]
    assert checks["backend:offline"]["level"] == "error"
    assert checks["workers"]["level"] == "error"  # no qcluster in this test


def test_backend_without_any_enabled_checkpoint_is_a_warning(db):
    from models_catalog.models import Checkpoint, ComfyBackend

    backend = ComfyBackend.objects.create(name="gpu", base_url="http://10.0.0.1:8188", is_online=True)
    Checkpoint.objects.create(name="off", ckpt_name="off.safetensors", enabled=False).backends.add(backend)
    checks = by_name(doctor.check_backends(probe=False))
    assert checks["backends"].level == "ok"
    assert checks["backend:gpu"].level == "warning"
    assert "none of the enabled checkpoints" in checks["backend:gpu"].message


def test_unwritable_media_is_an_error(db, settings, tmp_path):
    readonly = tmp_path / "media"
    readonly.mkdir()
    readonly.chmod(0o500)
    settings.MEDIA_ROOT = str(readonly)
    if os.geteuid() == 0:  # root writes anywhere: make the folder a file's child instead
        (tmp_path / "file").write_text("x")
        settings.MEDIA_ROOT = str(tmp_path / "file" / "media")
    try:
        check = doctor.check_media()
    finally:
        readonly.chmod(0o700)
    assert check.level == "error"
    assert "not writable" in check.message and check.fix
    assert run("--no-probe")[0] == 1


def test_writable_media_leaves_no_probe_file(db, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    assert doctor.check_media().level == "ok"
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_unsafe_settings_are_errors_in_production_and_warnings_on_a_laptop(settings):
    settings.SECRET_KEY = "django-insecure-short"
    settings.ALLOWED_HOSTS = ["*"]
    settings.DEBUG = True
    settings.PRODUCTION = True
    [check] = doctor.check_security()
    assert check.level == "error"
    assert "SECRET_KEY" in check.message and "'*'" in check.message and "DEBUG" in check.message
    settings.PRODUCTION = False
    assert doctor.check_security()[0].level == "warning"
    settings.SECRET_KEY = "k" + "x7Qp2Lr9Zs4Wd1Fv8Hb3Nj6Mc0Kt5Gy" * 2
    settings.ALLOWED_HOSTS = ["easel.example.com"]
    settings.DEBUG = False
    assert doctor.check_security()[0].level == "ok"


def test_a_cache_per_worker_is_a_warning_in_production(settings):
    from config.cache_url import cache_from_url

    settings.PRODUCTION = True
    settings.CACHES = {**settings.CACHES, "default": cache_from_url("locmem://")}
    check = doctor.check_shared_cache()
    assert check.level == "warning" and "CACHE_URL" in check.message and "CACHE_URL" in check.fix
    settings.PRODUCTION = False
    assert doctor.check_shared_cache().level == "ok"
    settings.PRODUCTION = True
    settings.CACHES = {**settings.CACHES, "default": cache_from_url("redis://127.0.0.1:6379/13")}
    check = doctor.check_shared_cache()
    assert check.level == "ok" and "RedisCache" in check.message


def test_unapplied_migrations_are_reported_and_stop_the_other_checks(db):
    from django.db.migrations.loader import MigrationLoader

    # The app's latest migration, as after deploying new code without migrating.
    (app, name), = MigrationLoader(connection).graph.leaf_nodes("accounts")
    MigrationRecorder(connection).record_unapplied(app, name)
    checks = doctor.run_checks(probe=False)
    assert [c.name for c in checks] == ["migrations"]
    assert checks[0].level == "error"
    assert f"accounts.{name}" in checks[0].message
    assert "migrate" in checks[0].fix


def test_clock_skew_from_worker_heartbeats(db, monkeypatch):
    from django_q.status import Stat

    now = timezone.now()
    monkeypatch.setattr(Stat, "get_all", staticmethod(lambda broker=None: []))
    assert doctor.check_clock_skew(now=now).level == "ok"  # nothing to compare: skipped
    beat = SimpleNamespace(host="worker-1", timestamp=now - timedelta(seconds=2))
    monkeypatch.setattr(Stat, "get_all", staticmethod(lambda broker=None: [beat]))
    assert doctor.check_clock_skew(now=now).level == "ok"
    beat.timestamp = now + timedelta(minutes=5)
    check = doctor.check_clock_skew(now=now)
    assert check.level == "warning"
    assert "worker-1" in check.message and "+300" in check.message


def test_strict_makes_warnings_fail(db, monkeypatch):
    ok = doctor.Check("x", doctor.OK, "fine")
    warn = doctor.Check("y", doctor.WARNING, "hmm", "do this")
    monkeypatch.setattr("generation.management.commands.doctor.run_checks", lambda probe: [ok, warn])
    assert run()[0] == 0
    assert run("--strict")[0] == 1


def test_too_few_workers_for_the_pumps_is_a_warning_whatever_the_fleet(db, monkeypatch, settings):
    """A pump follows many prompts: the workers needed are one per pump plus one, not one
    per backend slot as when each prompt held a worker."""
    from models_catalog.models import ComfyBackend

    cluster = {"id": "c1", "host": "w1", "status": "Idle", "workers": 2, "started_at": None}
    monkeypatch.setattr("generation.ops.doctor.worker_status", lambda: {"alive": True, "clusters": [cluster]})
    for n in range(10):
        ComfyBackend.objects.create(name=f"gpu-{n}", base_url=f"http://10.0.0.{n}:8188", max_in_flight=2)
    assert doctor.check_workers().level == "ok"  # 2 workers for 1 pump + 1, twenty slots or not
    settings.EASEL_PUMPS = 2
    check = doctor.check_workers()
    assert check.level == "warning"
    assert "2 worker(s) for 2 pump(s)" in check.message and "Q_WORKERS to at least 3" in check.fix


def test_the_pumps_check_says_whether_one_runs(db):
    from django.utils import timezone

    from generation.models import Pump

    assert doctor.check_pumps().level == "error"
    queued = Pump.objects.create(heartbeat_at=timezone.now())
    assert doctor.check_pumps().level == "warning"
    Pump.objects.filter(pk=queued.pk).update(started_at=timezone.now(), host="w1", pid=42, running=3)
    check = doctor.check_pumps()
    assert check.level == "ok" and "following 3 prompt(s), on w1" in check.message


def test_the_pumps_check_names_the_backends_held_and_warns_of_tasks_nobody_follows(db, catalog, make_user):
    from django.utils import timezone

    from generation.models import BackendLease, GenerationTask, Pump

    pump = Pump.objects.create(heartbeat_at=timezone.now(), started_at=timezone.now(), host="w1", pid=42, running=1)
    # No pump holds the backend yet: what is assigned there does not start.
    check = doctor.check_pumps()
    assert check.level == "warning" and f"No pump holds {catalog['backend'].name}" in check.message and check.fix
    BackendLease.objects.create(backend=catalog["backend"], owner=f"pump{pump.pk}-w1-42-abcdef", pump=pump,
                                until=timezone.now() + timedelta(seconds=60))
    task = GenerationTask.objects.create(
        user=make_user(), prompt="a lighthouse", model_name="demo-sd15", checkpoint=catalog["checkpoint"],
        width=64, height=64, steps=4, cfg=7, sampler="euler", scheduler="normal", seed=1, status="processing",
        backend=catalog["backend"], assigned_at=timezone.now(),
        lease_owner=f"pump{pump.pk}-w1-42-abcdef:1", lease_until=timezone.now() + timedelta(seconds=60))
    check = doctor.check_pumps()
    assert check.level == "ok" and f"Backends held: {catalog['backend'].name}." in check.message
    # Its pump died a minute ago: the lease lapsed and nobody took the task over yet.
    GenerationTask.objects.filter(pk=task.pk).update(lease_until=timezone.now() - timedelta(seconds=45))
    check = doctor.check_pumps()
    assert check.level == "warning" and "1 assigned task(s) are not followed" in check.message and check.fix
