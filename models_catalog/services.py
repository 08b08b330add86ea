"""Writes on the catalog: registering backends, health checks, checkpoint and model file sync."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django.utils.text import slugify

from generation.comfy import ComfyClient, ComfyError, ComfyUnreachable
from generation.volcengine.catalog import MODELS as VOLC_MODELS
from generation.volcengine.client import VolcClient, VolcError

from . import files
from .builtin import DEMO_DESCRIPTION, DEMO_FILE_DESCRIPTION
from .models import Checkpoint, ComfyBackend, ModelFile

logger = logging.getLogger(__name__)

# How the demo engine names its only device in /system_stats (generation/demo_engine/system.py).
DEMO_DEVICE = "Easel demo engine"


def comfy_client(backend: ComfyBackend) -> ComfyClient:
    return ComfyClient(backend.base_url, timeout=settings.COMFYUI_HTTP_TIMEOUT)


def volc_client(backend: ComfyBackend, *, timeout: float | None = None) -> VolcClient:
    """The client of a VolcEngine backend: its endpoint, region and key pair (its own, or the environment's)."""
    endpoint = urlsplit(backend.base_url)
    return VolcClient(
        access_key_id=backend.access_key_id or settings.EASEL_VOLCENGINE_ACCESS_KEY_ID,
        secret_access_key=backend.secret_access_key or settings.EASEL_VOLCENGINE_SECRET_ACCESS_KEY,
        host=endpoint.netloc, scheme=endpoint.scheme or "https", region=backend.region or "cn-north-1",
        timeout=timeout or settings.EASEL_VOLCENGINE_HTTP_TIMEOUT,
    )


def backend_ensure(*, name: str, base_url: str, is_demo: bool | None = None) -> ComfyBackend:
    """Register a backend by URL (idempotent: the run command calls it at every start).

    `is_demo` None leaves it to the health check, which recognises the demo engine."""
    base_url = base_url.rstrip("/")
    backend = ComfyBackend.objects.filter(base_url=base_url).first()
    if backend is None:
        # Another backend may already own the name; keep both by suffixing.
        unique, n = name, 2
        while ComfyBackend.objects.filter(name=unique).exists():
            unique, n = f"{name}-{n}", n + 1
        backend = ComfyBackend.objects.create(name=unique, base_url=base_url, is_demo=bool(is_demo))
    elif is_demo is not None and backend.is_demo != is_demo:
        backend.is_demo = is_demo
        backend.save(update_fields=["is_demo"])
    return backend


def backends_from_settings() -> list[ComfyBackend]:
    """Register every `COMFYUI_URLS` entry (`url` or `name=url`)."""
    out = []
    for i, entry in enumerate(settings.COMFYUI_URLS, start=1):
        name, _, url = entry.rpartition("=") if "=" in entry.split("://")[0] else ("", "", entry)
        out.append(backend_ensure(name=name or f"comfyui-{i}", base_url=url))
    return out


def backend_check(*, backend: ComfyBackend, timeout: float | None = None) -> bool:
    """Ask the backend for /system_stats and its queue, and record what it said.

    When a backend comes back, prompts Easel moved away from it meanwhile are taken
    off it and its checkpoints and other model files are read again.
    """
    if backend.is_volcengine:
        return _volc_check(backend=backend, timeout=timeout)
    now = timezone.now()
    client = ComfyClient(backend.base_url, timeout=timeout or settings.COMFYUI_HTTP_TIMEOUT)
    was_online = backend.is_online
    try:
        stats = client.system_stats()
        # Prompts Easel moved away while it was away go before anything else: a backend
        # that resumes must not run them on for nothing.
        backend_release_abandoned(backend=backend, client=client)
        queue = client.queue()
    except ComfyError as exc:
        ComfyBackend.objects.filter(pk=backend.pk).update(
            is_online=False, last_checked_at=now, last_error=str(exc)[:2000]
        )
        backend.is_online, backend.last_error, backend.last_checked_at = False, str(exc), now
        return False
    version = str(stats.get("system", {}).get("comfyui_version", ""))[:50]
    devices = [
        {k: d.get(k) for k in ("name", "type", "vram_total", "vram_free")}
        for d in stats.get("devices", []) if isinstance(d, dict)
    ]
    waiting = len(queue.get("queue_running", [])) + len(queue.get("queue_pending", []))
    # Easel's demo engine says what it is in its device list; a real ComfyUI never does.
    is_demo = any(DEMO_DEVICE in str(d.get("name") or "") for d in devices)
    ComfyBackend.objects.filter(pk=backend.pk).update(
        is_online=True, last_checked_at=now, last_seen_at=now, last_error="", comfyui_version=version,
        devices=devices, queue_remaining=waiting, is_demo=is_demo,
    )
    backend.is_online, backend.last_error, backend.comfyui_version, backend.is_demo = True, "", version, is_demo
    backend.devices, backend.queue_remaining, backend.last_checked_at = devices, waiting, now
    if not was_online:
        logger.info("backend %s is back online", backend.name)
        catalog_sync(backends=[backend])
    return True


# Asked about by the health check: no task has this id, so a working account answers "not_found".
_HEALTH_TASK_ID = "0"


def _volc_check(*, backend: ComfyBackend, timeout: float | None) -> bool:
    """A VolcEngine account has no status call: poll a task that does not exist. The gateway checks the key pair
    first, so an answer means the endpoint is reachable and the keys are good (and it costs no generation)."""
    now = timezone.now()
    was_online = backend.is_online
    req_key = next(iter(backend.offered_models or []), None) or next(iter(VOLC_MODELS))
    try:
        volc_client(backend, timeout=timeout).result(req_key, _HEALTH_TASK_ID)
    except VolcError as exc:
        ComfyBackend.objects.filter(pk=backend.pk).update(
            is_online=False, last_checked_at=now, last_error=str(exc)[:2000])
        backend.is_online, backend.last_error, backend.last_checked_at = False, str(exc), now
        return False
    ComfyBackend.objects.filter(pk=backend.pk).update(
        is_online=True, last_checked_at=now, last_seen_at=now, last_error="")
    backend.is_online, backend.last_error, backend.last_checked_at = True, "", now
    if not was_online:
        logger.info("backend %s is back online", backend.name)
        catalog_sync(backends=[backend])
    return True


def volc_models_apply(*, backend: ComfyBackend, summary: SyncSummary | None = None) -> None:
    """A VolcEngine backend's models as checkpoints (file name: the req_key), offered at once: staff chose them
    on the backend. A model no longer offered leaves this backend's list."""
    summary = summary if summary is not None else SyncSummary()
    names = [key for key in backend.offered_models or [] if key in VOLC_MODELS]
    with transaction.atomic():
        before = set(backend.checkpoints.values_list("ckpt_name", flat=True))
        current = []
        for req_key in names:
            model = VOLC_MODELS[req_key]
            checkpoint = Checkpoint.objects.filter(ckpt_name=req_key).first()
            if checkpoint is None:
                checkpoint = Checkpoint.objects.create(
                    ckpt_name=req_key, name=_checkpoint_name(req_key), display_name=model.display_name,
                    default_width=model.default_side, default_height=model.default_side)
                summary.added.append(req_key)
            current.append(checkpoint)
        backend.checkpoints.set(current)
    summary.now_available += sorted(set(names) - before)
    summary.no_longer_available += sorted(before - set(names))


def backends_health_check(*, only_offline: bool = False, min_interval: float = 0.0) -> list[ComfyBackend]:
    """Check every enabled backend (or only the offline ones not checked for a while)."""
    qs = ComfyBackend.objects.filter(enabled=True)
    if only_offline:
        qs = qs.filter(is_online=False)
    if min_interval:
        cutoff = timezone.now() - timedelta(seconds=min_interval)
        qs = qs.filter(models.Q(last_checked_at__isnull=True) | models.Q(last_checked_at__lt=cutoff))
    checked = list(qs)
    for backend in checked:
        # Short timeout: a dead host must not stall dispatch or the schedule.
        backend_check(backend=backend, timeout=min(3.0, settings.COMFYUI_HTTP_TIMEOUT))
    return checked


def backend_abandon_prompt(*, backend_id: int, prompt_id: str) -> None:
    """Remember to take this prompt off the backend once it answers again."""
    with transaction.atomic():
        backend = ComfyBackend.objects.select_for_update().filter(pk=backend_id).first()
        if backend is None:
            return
        if prompt_id not in backend.abandoned_prompts:
            backend.abandoned_prompts = [*backend.abandoned_prompts, prompt_id][-500:]
            backend.save(update_fields=["abandoned_prompts"])


def prompt_abandon(*, backend_id: int, prompt_id: str) -> None:
    """Take a prompt off its backend: out of the queue if waiting, else interrupt only it.

    The one way Easel abandons a prompt (cancel, delete, fail-over, timeout all end
    here or in `ComfyClient.abandon`). A backend that cannot be reached now does it as
    soon as it answers again (`backend_release_abandoned`).
    """
    backend = ComfyBackend.objects.filter(pk=backend_id).first()
    if backend is None:
        return
    if backend.is_volcengine:
        # The visual API has no cancel for these models: the provider's task runs out, its pictures unfetched.
        return
    try:
        comfy_client(backend).abandon(prompt_id)
    except ComfyError:
        logger.warning("could not abandon prompt %s on %s now; will when it answers", prompt_id, backend.name,
                       exc_info=True)
        backend_abandon_prompt(backend_id=backend_id, prompt_id=prompt_id)


def backend_release_abandoned(*, backend: ComfyBackend, client: ComfyClient) -> None:
    pending = list(ComfyBackend.objects.filter(pk=backend.pk).values_list("abandoned_prompts", flat=True))
    prompts = pending[0] if pending else []
    if not prompts:
        return
    for prompt_id in prompts:
        try:
            client.abandon(prompt_id)
        except ComfyError:
            return  # gone again: try next time
    with transaction.atomic():
        row = ComfyBackend.objects.select_for_update().get(pk=backend.pk)
        row.abandoned_prompts = [p for p in row.abandoned_prompts if p not in prompts]
        row.save(update_fields=["abandoned_prompts"])
    logger.info("backend %s: took %d abandoned prompt(s) off its queue", backend.name, len(prompts))


def backend_mark(*, backend_id: int, online: bool, error: str = "") -> None:
    """Record what a job learned about a backend while talking to it."""
    now = timezone.now()
    values = {"is_online": online, "last_checked_at": now, "last_error": error[:2000]}
    if online:
        values["last_seen_at"] = now
    ComfyBackend.objects.filter(pk=backend_id).update(**values)


@dataclass
class SyncSummary:
    added: list[str] = field(default_factory=list)
    now_available: list[str] = field(default_factory=list)
    no_longer_available: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [
            f"added {len(self.added)}",
            f"became available {len(self.now_available)}",
            f"no longer available {len(self.no_longer_available)}",
        ]
        if self.errors:
            parts.append("errors: " + "; ".join(f"{k}: {v}" for k, v in self.errors.items()))
        return ", ".join(parts)


def _checkpoint_name(ckpt_name: str) -> str:
    stem = Path(ckpt_name).stem if "." in Path(ckpt_name).name else ckpt_name
    base = slugify(stem.replace("/", "-").replace("\\", "-")) or "model"
    name, n = base, 2
    while Checkpoint.objects.filter(name=name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


def checkpoint_make_default(*, checkpoint: Checkpoint, save: bool = False) -> None:
    """Make this the model of tasks that name none (and enable it); the old default stops being one."""
    with transaction.atomic():
        Checkpoint.objects.filter(is_default=True).exclude(pk=checkpoint.pk).update(is_default=False)
        checkpoint.is_default = checkpoint.enabled = True
        if save:
            checkpoint.save()
        else:
            Checkpoint.objects.filter(pk=checkpoint.pk).update(is_default=True, enabled=True)


def _checkpoints_apply(*, backend: ComfyBackend, names: list[str], summary: SyncSummary, first_start: bool) -> None:
    with transaction.atomic():
        before = set(backend.checkpoints.values_list("ckpt_name", flat=True))
        current = []
        for ckpt_name in names:
            checkpoint = Checkpoint.objects.filter(ckpt_name=ckpt_name).first()
            if checkpoint is None:
                checkpoint = Checkpoint.objects.create(
                    ckpt_name=ckpt_name,
                    name=_checkpoint_name(ckpt_name),
                    display_name=Path(ckpt_name).stem,
                    # Say plainly what a demo "model" is, so nobody mistakes it for AI.
                    # Stored in English, whoever runs the sync; shown translated
                    # (Checkpoint.shown_description).
                    description=DEMO_DESCRIPTION if backend.is_demo else "",
                    enabled=first_start,
                    is_default=first_start and not summary.added,
                )
                summary.added.append(ckpt_name)
            current.append(checkpoint)
        backend.checkpoints.set(current)
    after = set(names)
    summary.now_available += sorted(after - before)
    summary.no_longer_available += sorted(before - after)


def checkpoints_sync(*, backends=None) -> SyncSummary:
    """Read CheckpointLoaderSimple's choices from each backend's /object_info.

    New checkpoints are added with the file name as display name, disabled: a file that
    appears on a backend waits for staff to enable it, so nobody is offered a model by
    accident. Only on a studio's first start (an empty catalog) are they enabled at
    once, and the first becomes the default model, so a new studio works out of the box.
    The per-backend availability is replaced by what each reachable backend reports; an
    unreachable backend keeps its previous list: a restart must not empty the catalog.

    Checkpoints only; `catalog_sync` reads the other files too, the same way (per loader class).
    """
    summary = SyncSummary()
    first_start = not Checkpoint.objects.exists()
    for backend in _sync_targets(backends):
        if backend.is_volcengine:
            volc_models_apply(backend=backend, summary=summary)
            continue
        try:
            names = comfy_client(backend).checkpoints()
        except ComfyError as exc:
            summary.errors[backend.name] = str(exc)
            backend_mark(backend_id=backend.pk, online=False, error=str(exc))
            continue
        backend_mark(backend_id=backend.pk, online=True)
        _checkpoints_apply(backend=backend, names=names, summary=summary, first_start=first_start)
    logger.info("checkpoint sync: %s", summary)
    return summary


def _sync_targets(backends) -> list[ComfyBackend]:
    return list(backends) if backends is not None else list(ComfyBackend.objects.filter(enabled=True))


@dataclass
class CatalogSyncSummary:
    """What a catalog sync changed: checkpoints, then each kind of model file."""

    checkpoints: SyncSummary = field(default_factory=SyncSummary)
    files: dict[str, SyncSummary] = field(default_factory=lambda: {k: SyncSummary() for k in files.MODEL_FILE_KINDS})
    # Backend name → why it could not be read (it kept its previous lists).
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def files_added(self) -> dict[str, list[str]]:
        return {kind: s.added for kind, s in self.files.items() if s.added}

    def __str__(self) -> str:
        def counts(s: SyncSummary) -> str:
            return (f"added {len(s.added)}, became available {len(s.now_available)}, "
                    f"no longer available {len(s.no_longer_available)}")

        parts = [f"checkpoints: {counts(self.checkpoints)}"]
        parts += [f"{kind}: {counts(s)}" for kind, s in self.files.items()
                  if s.added or s.now_available or s.no_longer_available]
        if self.errors:
            parts.append("errors: " + "; ".join(f"{k}: {v}" for k, v in self.errors.items()))
        return "; ".join(parts)


def _model_files_apply(*, backend: ComfyBackend, kind: str, names: list[str], summary: SyncSummary,
                       first_start: bool) -> None:
    """Make this backend's list of `kind` files exactly `names`, adding rows for new files.

    A few queries per kind whatever the count: a real server may hold hundreds of LoRAs."""
    names = list(dict.fromkeys(names))
    with transaction.atomic():
        known = set(ModelFile.objects.filter(kind=kind, file_name__in=names).values_list("file_name", flat=True))
        new = [name for name in names if name not in known]
        if new:
            # Conflicts ignored: another sync (a worker's tick, an admin action) may add the same file now.
            ModelFile.objects.bulk_create(
                [
                    ModelFile(
                        kind=kind, file_name=name, display_name=_file_stem(name)[:200],
                        # Stored in English, shown in the reader's language (ModelFile.shown_description).
                        description=DEMO_FILE_DESCRIPTION if backend.is_demo else "",
                        enabled=first_start,
                    )
                    for name in new
                ],
                ignore_conflicts=True,
            )
            summary.added += new
        rows = dict(ModelFile.objects.filter(kind=kind, file_name__in=names).values_list("file_name", "pk"))
        held = dict(backend.model_files.filter(kind=kind).values_list("file_name", "pk"))
        gone = [pk for name, pk in held.items() if name not in rows]
        if gone:
            backend.model_files.remove(*gone)
        came = [pk for name, pk in rows.items() if name not in held]
        if came:
            backend.model_files.add(*came)
    summary.now_available += sorted(set(rows) - set(held))
    summary.no_longer_available += sorted(set(held) - set(rows))


def _file_stem(file_name: str) -> str:
    # "loras/style/ink.safetensors" → "ink": the folder is ComfyUI's business, the name the reader's.
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    return Path(name).stem if "." in name else name


def _catalog_sync(*, backends, checkpoints: bool) -> CatalogSyncSummary:
    summary = CatalogSyncSummary()
    # First start is judged per kind, once, before any backend adds a row.
    checkpoints_first = not Checkpoint.objects.exists()
    files_first = {kind: not ModelFile.objects.filter(kind=kind).exists() for kind in files.MODEL_FILE_KINDS}
    kinds = ((files.CHECKPOINT,) if checkpoints else ()) + files.MODEL_FILE_KINDS
    for backend in _sync_targets(backends):
        if backend.is_volcengine:
            # Its models are what staff chose on it, not files read from a server.
            if checkpoints:
                volc_models_apply(backend=backend, summary=summary.checkpoints)
            continue
        lists, problems, unreachable = _listings_read(backend, kinds)
        if unreachable is not None:
            summary.errors[backend.name] = str(unreachable)
            backend_mark(backend_id=backend.pk, online=False, error=str(unreachable))
            continue
        backend_mark(backend_id=backend.pk, online=True)
        for kind, names in lists.items():
            if kind == files.CHECKPOINT:
                _checkpoints_apply(backend=backend, names=names, summary=summary.checkpoints,
                                   first_start=checkpoints_first)
            else:
                _model_files_apply(backend=backend, kind=kind, names=names, summary=summary.files[kind],
                                   first_start=files_first[kind])
        if problems:
            # Each unread kind keeps its previous list on this backend.
            summary.errors[backend.name] = "unreadable lists in /object_info: " + ", ".join(
                f"{kind} ({problem})" for kind, problem in problems.items()
            )
    return summary


def _listings_read(backend: ComfyBackend, kinds) -> tuple[dict[str, list[str]], dict[str, str], ComfyError | None]:
    """(kind → file names, kind → why it was not read, the error when the backend answered nothing).

    One `GET /object_info/{class}` per loader (`files.LISTINGS`): a few KB each, where the
    full /object_info of a real ComfyUI 0.3.64 is about 500 KB (docs/comfyui.md has the
    figures), and this runs every minute from the workers' tick. A class the server does not have answers 200 {} (ComfyUI's
    own behaviour): it holds no such file. A class whose answer is an error, or a shape
    Easel cannot read, is left out, so that kind keeps its previous list. An unreachable
    backend stops the round at its first request (not one timeout per class), and one
    that answered no class at all is treated as before: its lists stay, it is marked down."""
    client = comfy_client(backend)
    lists: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    first_error: ComfyError | None = None
    answered = False
    for kind in kinds:
        class_type = files.LISTINGS[kind][0]
        try:
            info = client.object_info(class_type)
        except ComfyError as exc:
            first_error = first_error or exc
            if isinstance(exc, ComfyUnreachable) and not answered:
                return {}, {}, exc
            problems[kind] = str(exc)
            continue
        answered = True
        names = files.listing(info, kind)
        if names is None:
            problems[kind] = "unexpected spec"  # a protocol surprise
        else:
            lists[kind] = names
    if not answered:
        return {}, {}, first_error
    return lists, problems, None


def model_files_sync(*, backends=None) -> CatalogSyncSummary:
    """Read each backend's LoRAs, VAEs, upscale models and ControlNets (one small /object_info/{class} each).

    The rules of `checkpoints_sync`: a new file is added disabled (it waits for staff),
    except while the catalog holds no file of its kind (a new studio works out of the
    box); each reachable backend's list per kind is replaced by what it reports; an
    unreachable one keeps its list.
    """
    summary = _catalog_sync(backends=backends, checkpoints=False)
    logger.info("model file sync: %s", summary)
    return summary


def catalog_sync(*, backends=None) -> CatalogSyncSummary:
    """Checkpoints and every other model file, from each loader's /object_info/{class} per backend.

    What the run command, setup, the workers' tick, the admin and `sync_checkpoints` call."""
    summary = _catalog_sync(backends=backends, checkpoints=True)
    logger.info("catalog sync: %s", summary)
    return summary
